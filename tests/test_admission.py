"""
Tests for admission control and the pool's connection bounds
(:mod:`digitalspring.channel._admission`, :class:`ConnectionPool`): each
attack of a hostile peer on the number and rate of connections, and the
bound that holds it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IAddress, IReactorTCP
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.channel import (
    Admission,
    AdmissionFactory,
    ConnectionLimits,
    ConnectionPool,
    Ping,
    SecureChannelProtocol,
    TokenBucket,
    source_key,
)
from digitalspring.channel._admission import KeyedBuckets
from digitalspring.channel._secure import MAGIC, PATTERN_IK, VERSION
from digitalspring.identity import Identity
from digitalspring.tap import Options, build_transports
from digitalspring.transport import (
    MemoryAddress,
    TCPTransport,
    TorClientAddress,
    TransportConfigError,
    TransportContext,
    get_transport_plugin,
)

from ._nodes import NodeProcess, loopback_address
from .test_pool import Directory, Echo, Network

#: What a dialler sends first: a handshake has begun.
PREAMBLE = MAGIC + bytes([VERSION, PATTERN_IK])

#: Small limits, so that a test reaches each one with a few connections.
SMALL = ConnectionLimits(
    address_connections=4,
    address_rate=0.5,
    address_burst=6,
    inbound_connections=20,
    handshakes=10,
    handshake_rate=100.0,
    handshake_burst=200,
    peer_rate=0.1,
    peer_burst=3,
    max_connections=8,
    high_water=6,
    low_water=4,
    grace_period=30.0,
)


class TokenBucketTests(SynchronousTestCase):
    """
    :class:`TokenBucket` and :class:`KeyedBuckets`, on a clock.
    """

    def test_burst_then_rate(self) -> None:
        """
        A full bucket gives ``burst`` tokens at once, then one per
        ``1 / rate`` seconds, and never more than ``burst`` after a pause.
        """
        clock = Clock()
        bucket = TokenBucket.full(rate=2.0, burst=5, now=clock.seconds())
        self.assertEqual(sum(bucket.take(clock.seconds()) for _ in range(100)), 5)
        clock.advance(0.5)
        self.assertEqual(sum(bucket.take(clock.seconds()) for _ in range(100)), 1)
        clock.advance(3600)
        self.assertEqual(sum(bucket.take(clock.seconds()) for _ in range(100)), 5)

    def test_keys_are_separate(self) -> None:
        """
        Each key has its own bucket: one key's flood leaves another's
        tokens alone.
        """
        buckets = KeyedBuckets(rate=1.0, burst=2, size=10)
        self.assertEqual(sum(buckets.take("a", 0.0) for _ in range(10)), 2)
        self.assertEqual(sum(buckets.take("b", 0.0) for _ in range(10)), 2)

    def test_bounded(self) -> None:
        """
        A flood of new keys keeps at most ``size`` buckets; the one seen
        least recently is forgotten first.
        """
        buckets = KeyedBuckets(rate=1.0, burst=1, size=3)
        buckets.take("kept", 0.0)
        for n in range(1000):
            buckets.take("kept", 0.0)
            buckets.take(n, 0.0)
        self.assertEqual(len(buckets), 3)
        self.assertFalse(buckets.take("kept", 0.0), "a key in use was forgotten")

    def test_full_buckets_forgotten(self) -> None:
        """
        A bucket that has filled up again is forgotten (it is the same as a
        new one): after 1,000 keys once each and the refill time, a key
        taking a token a second keeps the map at a few buckets, not 1,000,
        and a key that spent its burst is still refused.
        """
        buckets = KeyedBuckets(rate=1.0, burst=5, size=4096)
        for n in range(1000):
            buckets.take(n, 0.0)
        for second in range(10, 1010):
            buckets.take("steady", float(second))
        self.assertLessEqual(len(buckets), 3)
        self.assertEqual(sum(buckets.take("greedy", 2000.0) for _ in range(10)), 5)


class SourceKeyTests(SynchronousTestCase):
    """
    :func:`source_key`: what a connection counts against.
    """

    def test_ipv4(self) -> None:
        """
        An IPv4 connection counts against its address, whatever its port.
        """
        self.assertEqual(source_key(IPv4Address("TCP", "127.0.0.2", 1)), "127.0.0.2")
        self.assertEqual(
            source_key(IPv4Address("TCP", "127.0.0.2", 1)),
            source_key(IPv4Address("TCP", "127.0.0.2", 2)),
        )

    def test_ipv6_by_64(self) -> None:
        """
        IPv6 connections count against their /64, which one subscriber
        holds whole; an IPv4-mapped address counts as IPv4.
        """
        a = source_key(IPv6Address("TCP", "2001:db8:1:2::1", 1))
        b = source_key(IPv6Address("TCP", "2001:db8:1:2:ffff::9%eth0", 1))
        c = source_key(IPv6Address("TCP", "2001:db8:1:3::1", 1))
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)
        self.assertEqual(source_key(IPv6Address("TCP", "::ffff:10.0.0.1", 1)), "10.0.0.1")

    def test_other_addresses(self) -> None:
        """
        A memory address counts against its host.  An address that names
        no source host (a UNIX socket, a tor client) counts against none:
        only the totals hold it.
        """
        self.assertEqual(source_key(MemoryAddress("mallory", 7)), "mallory")
        self.assertIsNone(source_key(UNIXAddress(b"/tmp/x")))
        self.assertIsNone(source_key(TorClientAddress()))
        self.assertIsNone(source_key(None))


class AdmissionTests(SynchronousTestCase):
    """
    :class:`Admission`: the decision, with no I/O.
    """

    def test_address_connections(self) -> None:
        """
        One address gets ``address_connections`` connections at once; a
        closed one makes room; another address is not affected.
        """
        admission = Admission(SMALL, 0.0)
        results = [admission.admit("a", 0.0) for _ in range(6)]
        self.assertEqual(results, [None] * 4 + ["address-connections"] * 2)
        self.assertIsNone(admission.admit("b", 0.0))
        admission.handshake_over()
        admission.closed("a")
        self.assertIsNone(admission.admit("a", 0.0))
        self.assertEqual(admission.refused, {"address-connections": 2})

    def test_address_rate(self) -> None:
        """
        One address opens ``address_burst`` connections at once, then one
        per ``1 / address_rate`` seconds, even when each closes at once.
        """
        admission = Admission(SMALL, 0.0)

        def attempt(now: float) -> str | None:
            reason = admission.admit("a", now)
            if reason is None:
                admission.handshake_over()
                admission.closed("a")
            return reason

        self.assertEqual([attempt(0.0) for _ in range(10)].count(None), 6)
        self.assertEqual([attempt(2.0) for _ in range(10)].count(None), 1)
        self.assertEqual(admission.refused, {"address-rate": 13})
        self.assertEqual((admission.inbound, admission.handshaking), (0, 0))

    def test_totals(self) -> None:
        """
        Across many addresses, handshakes under way stop at ``handshakes``,
        and connections at ``inbound_connections``.
        """
        admission = Admission(SMALL, 0.0)
        first = [admission.admit(f"10.0.0.{n}", 0.0) for n in range(12)]
        self.assertEqual(first, [None] * 10 + ["handshakes"] * 2)
        for _ in range(10):
            admission.handshake_over()
        second = [admission.admit(f"10.0.1.{n}", 0.0) for n in range(12)]
        self.assertEqual(second, [None] * 10 + ["inbound-connections"] * 2)

    def test_total_rate(self) -> None:
        """
        New connections from all addresses together stop at
        ``handshake_burst``, then pass at ``handshake_rate``.
        """
        limits = ConnectionLimits(handshake_rate=10.0, handshake_burst=20)
        admission = Admission(limits, 0.0)
        results = []
        for n in range(30):
            results.append(admission.admit(f"10.0.0.{n}", 0.0))
            admission.handshake_over()
            admission.closed(f"10.0.0.{n}")
        self.assertEqual(results, [None] * 20 + ["handshake-rate"] * 10)
        self.assertIsNone(admission.admit("10.0.1.1", 0.1))

    def test_shared_source_exempt(self) -> None:
        """
        Connections of a transport that shares one source address (``None``)
        are held only by the total bounds.
        """
        admission = Admission(SMALL, 0.0)
        results = [admission.admit(None, 0.0) for _ in range(12)]
        self.assertEqual(results, [None] * 10 + ["handshakes"] * 2)


class Stall(amp.Command):
    """
    A request that stays in flight until the test answers it.
    """

    arguments: list[tuple[bytes, amp.Argument]] = []
    response: list[tuple[bytes, amp.Argument]] = []


class StallLocator(amp.CommandLocator):
    def __init__(self, answer: Deferred[dict[str, bytes]]) -> None:
        self.answer = answer

    @Stall.responder
    def stall(self) -> Deferred[dict[str, bytes]]:
        return self.answer


class _Counting(Protocol):
    """
    An attacker's connection: notes whether the listener dropped it.
    """

    def __init__(self, events: list[str], send: bytes) -> None:
        self.events = events
        self.send = send

    def connectionMade(self) -> None:
        self.events.append("made")
        if self.send:
            self.transport.write(self.send)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.events.append("lost")


class _Attacker(ClientFactory):
    noisy = False

    def __init__(self, send: bytes = b"") -> None:
        self.events: list[str] = []
        self.send = send
        self.protocols: list[_Counting] = []

    def buildProtocol(self, addr: IAddress) -> _Counting:
        protocol = _Counting(self.events, self.send)
        self.protocols.append(protocol)
        return protocol


def _count_channels(test: SynchronousTestCase, pool: ConnectionPool) -> list[Any]:
    """
    Count the secure channels the pool's listener builds: each is a
    handshake, with its Diffie-Hellman operations, to come.
    """
    built: list[Any] = []
    build = pool.channel_factory.buildProtocol

    def counting(addr: IAddress) -> SecureChannelProtocol | None:
        channel = build(addr)
        built.append(channel)
        return channel

    test.patch(pool.channel_factory, "buildProtocol", counting)
    return built


class MemoryFloodTests(SynchronousTestCase):
    """
    Attacks on a pool over the memory network, on its simulated clock.
    """

    def network(self, limits: ConnectionLimits = SMALL) -> Network:
        return Network(limits=limits)

    def connect(self, net: Network, source: str, attacker: _Attacker, port: int = 1) -> None:
        """
        Connect from host ``source`` to bob; a refusal is what the attacker
        expects.
        """
        if source not in net.network.hosts:
            net.network.add_host(source)
        d = net.network.transport(source).connect(f"bob:{port}", attacker)
        d.addErrback(lambda failure: failure.trap(ConnectionRefusedError))

    def flood(self, net: Network, source: str, count: int, send: bytes = b"") -> _Attacker:
        attacker = _Attacker(send)
        for _ in range(count):
            self.connect(net, source, attacker)
        net.clock.advance(0.1)
        return attacker

    def test_flood_from_one_address(self) -> None:
        """
        The attack: one address opens 200 connections at once and sends a
        channel preamble on each.  The listener builds secure channels (and
        so may do Diffie-Hellman) for ``address_connections`` of them only,
        refuses the rest, counts them by reason, and a peer at another
        address still connects.
        """
        net = self.network()
        bob = net.node("bob")
        built = _count_channels(self, bob)
        attacker = self.flood(net, "mallory", 200, send=PREAMBLE)
        self.assertEqual(len(built), SMALL.address_connections)
        self.assertEqual(attacker.events.count("made"), SMALL.address_connections)
        self.assertEqual(bob.admission.refused, {"address-connections": 196})
        alice = net.node("alice")
        connection = net.result(alice.connect(bob.identity.peer_id))
        self.assertEqual(net.result(connection.callRemote(Ping, data=b"x")), {"data": b"x"})
        self.assertEqual((bob.admission.inbound, bob.admission.handshaking), (5, 4))
        for protocol in attacker.protocols:
            if protocol.transport is not None:
                protocol.transport.loseConnection()
        net.clock.advance(1)
        self.assertEqual((bob.admission.inbound, bob.admission.handshaking), (1, 0))

    def test_reconnect_flood_from_one_address(self) -> None:
        """
        The attack: one address connects and hangs up as fast as it can.
        After ``address_burst`` connections it gets one per
        ``1 / address_rate`` seconds.
        """
        net = self.network()
        bob = net.node("bob")
        built = _count_channels(self, bob)
        attacker = _Attacker()
        start = net.clock.seconds()
        for _ in range(100):
            self.connect(net, "mallory", attacker)
            last = net.clock.seconds()
            net.clock.advance(0.05)
            for protocol in attacker.protocols:
                if protocol.transport is not None:
                    protocol.transport.loseConnection()
            net.clock.advance(0.05)
        refill = int(SMALL.address_rate * (last - start))
        self.assertEqual(len(built), SMALL.address_burst + refill)
        self.assertEqual(bob.admission.refused, {"address-rate": 100 - len(built)})

    def test_peer_reconnects(self) -> None:
        """
        The attack: one peer ID reconnects again and again (each new
        connection replaces the last).  After ``peer_burst`` connections,
        the pool closes the new ones at once and keeps the live one.
        """
        net = self.network(ConnectionLimits(peer_burst=3, peer_rate=0.01))
        bob = net.node("bob")
        mallory_id = Identity.generate()
        accepted = []
        for n in range(6):
            host = f"mallory{n}"
            net.network.add_host(host)
            mallory = ConnectionPool(
                mallory_id, net.clock, {"memory": net.network.transport(host)}, net.directory
            )
            mallory.startService()
            try:
                connection = net.result(mallory.connect(bob.identity.peer_id))
                net.clock.advance(0.1)
                accepted.append(connection.transport is not None)
            finally:
                mallory.stopService()
        self.assertEqual(accepted, [True] * 3 + [False] * 3)
        self.assertEqual(bob.admission.refused, {"peer-rate": 3})

    def test_total_cap_and_trimming(self) -> None:
        """
        The attack: many peers at many addresses connect and sit idle.
        Above ``high_water`` the pool closes the inbound connections idle
        longest (never one with a request in flight or in its grace
        period) down to ``low_water``, and refuses inbound connections
        beyond ``max_connections``.
        """
        net = self.network()
        bob = net.node("bob")
        stalled: Deferred[dict[str, bytes]] = Deferred()
        bob.locators.append(lambda connection: StallLocator(stalled))
        peers = [net.node(f"peer{n}") for n in range(14)]
        connections = []
        for peer in peers[:6]:
            connections.append(net.result(peer.connect(bob.identity.peer_id)))
            net.clock.advance(1)
        # peer0 keeps a request in flight; peer2 uses its connection late.
        answered = connections[0].callRemote(Stall)
        net.clock.advance(60)
        net.result(connections[2].callRemote(Echo, data=b"used"))
        # Over high water (6): the idle ones past their grace period go,
        # least recently used first, down to low water (4).
        net.result(peers[6].connect(bob.identity.peer_id))
        net.clock.advance(0.1)
        live = set(bob.connections())
        self.assertEqual(len(live), SMALL.low_water)
        self.assertEqual(bob.trimmed, 3)
        self.assertIn(peers[0].identity.peer_id, live, "trimmed one with a request in flight")
        self.assertIn(peers[2].identity.peer_id, live, "trimmed one used more recently")
        self.assertIn(peers[6].identity.peer_id, live, "trimmed one in its grace period")
        self.assertEqual(len(peers[1].connections()), 0, "the trimmed peer still has it")
        # peer2 and peer5 are trimmed next; then all are in their grace
        # period or busy, and the cap holds.
        for peer in peers[7:]:
            net.result(peer.connect(bob.identity.peer_id))
            net.clock.advance(0.1)
        self.assertEqual(len(bob.connections()), SMALL.max_connections)
        self.assertEqual(bob.trimmed, 5)
        self.assertEqual(bob.admission.refused, {"connections": 1})
        self.assertNotIn(peers[13].identity.peer_id, bob.connections())
        stalled.callback({})
        net.result(answered)

    def test_shared_source_listener(self) -> None:
        """
        A transport that declares ``shares_source_address`` (tor's onion
        services: all their connections come from the local tor) gets a
        listening factory without per-address limits, sharing the totals.
        """
        net = self.network()
        bob = net.node("bob")

        class Onion:
            shares_source_address = True

        class Plain:
            pass

        plain = bob.listening_factory(Plain())  # type: ignore[arg-type]
        onion = bob.listening_factory(Onion())  # type: ignore[arg-type]
        self.assertIs(plain, bob.server_factory)
        assert isinstance(onion, AdmissionFactory)
        self.assertFalse(onion.per_address)
        self.assertIs(onion.admission, bob.admission)
        net.network.transport("bob").listen("2", onion)
        attacker = _Attacker()
        for _ in range(12):
            self.connect(net, "tor", attacker, port=2)
        net.clock.advance(0.1)
        self.assertEqual(attacker.events.count("made"), SMALL.handshakes)
        self.assertEqual(bob.admission.refused, {"handshakes": 2})

    def test_refusals_logged_at_a_bounded_rate(self) -> None:
        """
        The attack: 5,000 connections from one address, to fill the log.
        The listener writes a bounded number of lines, the last saying how
        many more it held back, whatever the number of connections.
        """
        net = self.network()
        bob = net.node("bob")
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.flood(net, "mallory", 5000, send=b"GET / HTTP/1.0\r\n\r\n")
        net.clock.advance(120)
        self.flood(net, "mallory", 5000, send=b"GET / HTTP/1.0\r\n\r\n")
        ours = [e for e in events if e.get("log_namespace", "").startswith("digitalspring")]
        # A burst of 10, one each 5 s after it, from each kind of line.
        self.assertLess(len(ours), 60, [e.get("log_format") for e in ours])
        self.assertEqual(sum(bob.admission.refused.values()), 10_000 - 8)
        held = [e for e in ours if e.get("held_back")]
        self.assertTrue(held, "no line says how many were held back")

    def test_status_counts(self) -> None:
        """
        The pool's status counts live connections each way, handshakes
        under way, refusals by reason, failed channels by error and the
        bytes its channels sent and received, for ``dspring status``.
        """
        net = self.network()
        bob, alice, carol = net.node("bob"), net.node("alice"), net.node("carol")
        net.result(alice.connect(bob.identity.peer_id))
        net.result(bob.connect(carol.identity.peer_id))
        self.flood(net, "mallory", 6)
        status = bob.status()
        self.assertEqual(
            {key: status[key] for key in ("inbound", "outbound", "handshaking", "refused")},
            {
                "inbound": 1,
                "outbound": 1,
                "handshaking": 4,
                "refused": {"address-connections": 2},
            },
        )
        self.assertEqual(status["trimmed"], 0)
        self.assertEqual(status["channel_failures"], {})
        traffic = bob.channel_factory.traffic
        self.assertEqual(
            (status["bytes_sent"], status["bytes_received"]), (traffic.sent, traffic.received)
        )
        self.assertGreater(traffic.sent, 0)
        self.flood(net, "eve", 1, send=b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(bob.status()["channel_failures"], {"NotAChannel": 1})


class SourceAddressTests(SynchronousTestCase):
    """
    ``--source-address``: the address a node dials from, which peers count
    its connections against.
    """

    def test_option(self) -> None:
        """
        ``--source-address`` reaches the tcp transport, which does not
        declare a shared source address.
        """
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--source-address", "127.0.3.4"])
        tcp = build_transports(options, Clock())["tcp"]
        assert isinstance(tcp, TCPTransport)
        self.assertEqual(tcp._source, "127.0.3.4")
        self.assertFalse(tcp.shares_source_address)

    def test_not_an_ip_address(self) -> None:
        """
        A source that is not an IP address is a configuration error.
        """
        plugin = get_transport_plugin("tcp")
        context = TransportContext(Clock(), None, {"source": "example.org"})
        self.assertRaises(TransportConfigError, plugin.make_transport, context)

    def test_onion_only(self) -> None:
        """
        An onion-only node has no tcp, so no tcp source address.
        """
        options = Options()
        self.assertRaises(
            usage.UsageError,
            options.parseOptions,
            ["--onion-only", "--source-address", "127.0.3.4"],
        )


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """
    Wait on the real reactor until ``condition()`` holds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await deferLater(global_reactor, 0.01, lambda: None)


class TCPFloodTests(TestCase):
    """
    The attacks over real TCP on loopback: the node listens on
    127.0.0.1, attackers and the legitimate peer each dial from an address
    of their own.
    """

    def pool(
        self, source: str | None = None, directory: Directory | None = None, **kwargs: Any
    ) -> ConnectionPool:
        transport = TCPTransport(global_reactor, source=source)
        pool = ConnectionPool(
            Identity.generate(),
            global_reactor,
            {"tcp": transport},
            directory or Directory(),
            **kwargs,
        )
        pool.startService()
        self.addCleanup(pool.stopService)
        return pool

    async def listen(self, pool: ConnectionPool) -> int:
        transport = pool.transports["tcp"]
        port = await transport.listen("0:interface=127.0.0.1", pool.server_factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[attr-defined,no-any-return]

    def test_flood_from_one_address(self) -> Deferred[None]:
        """
        The attack, on real TCP: 300 connections from one address at once,
        each sending a preamble.  The node builds secure channels for
        ``address_connections`` of them and closes the rest at once; a
        peer dialling from another address connects and pings meanwhile.
        """

        async def attack() -> None:
            bob = self.pool(limits=SMALL)
            built = _count_channels(self, bob)
            port = await self.listen(bob)
            attacker = _Attacker(send=PREAMBLE)
            tcp: IReactorTCP = global_reactor  # type: ignore[assignment]
            mallory = loopback_address()
            for _ in range(300):
                tcp.connectTCP("127.0.0.1", port, attacker, bindAddress=(mallory, 0))
            await _until(lambda: attacker.events.count("lost") >= 300 - 4, timeout=30)
            self.assertEqual(len(built), SMALL.address_connections)
            self.assertEqual(bob.admission.refused, {"address-connections": 296})
            directory = Directory()
            directory.addresses[bob.identity.peer_id] = [f"tcp:127.0.0.1:{port}"]
            alice_host = loopback_address()
            alice = self.pool(source=alice_host, directory=directory)
            connection = await alice.connect(bob.identity.peer_id)
            answer = await connection.callRemote(Ping, data=b"still here")
            self.assertEqual(answer, {"data": b"still here"})
            inbound = bob.connections()[alice.identity.peer_id]
            self.assertEqual(inbound.transport.getPeer().host, alice_host)
            for protocol in attacker.protocols:
                if protocol.transport is not None:
                    protocol.transport.abortConnection()
            await _until(lambda: attacker.events.count("lost") == 300)

        return ensureDeferred(attack())


class NodeProcessTests(SynchronousTestCase):
    """
    A real ``twistd dspring`` process under a connection flood.
    """

    def test_flood_refused_logged_and_counted(self) -> None:
        """
        The attack that wrote 36 MB of logs: 1,000 connections from one
        address that each send junk.  The node writes at most a burst and
        then one line each 5 s for each kind of refusal or failure,
        ``dspring status`` counts the refusals by reason, and another node
        still pings it.
        """
        workdir = FilePath(self.mktemp())
        workdir.makedirs()
        bob = NodeProcess(workdir, "bob")
        self.addCleanup(bob.stop)
        bob.wait_ready()
        alice = NodeProcess(workdir, "alice")
        self.addCleanup(alice.stop)
        alice.wait_ready()
        lines_before = len(bob.log)
        started = time.monotonic()
        host, port = bob.address.removeprefix("tcp:").rsplit(":", 1)
        mallory = loopback_address()
        for _ in range(1000):
            with socket.socket() as s:
                s.bind((mallory, 0))
                s.connect((host, int(port)))
                try:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                except OSError:
                    pass  # refused: closed already
        flooded = time.monotonic()
        added = alice.dspring("contacts", "add", bob.peer_id, bob.address)
        self.assertEqual(added.returncode, 0, added.stderr)
        ping = alice.dspring("ping", "-c", "2", "-i", "0.2", bob.peer_id)
        self.assertIn("2 sent, 2 received", ping.stdout, ping.stdout + ping.stderr)
        status = bob.dspring("status")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertRegex(status.stdout, r"refused: +\d+ \(.*address-rate \d+")
        self.assertIn("connections: 1 (1 inbound, 0 outbound", status.stdout)
        # Once a line's budget has refilled (one each 5 s), the next refusal
        # gets through and says how many were held back; on a quick machine
        # all of the above takes less than that, so flood once more after it.
        time.sleep(max(0.0, flooded + 6.0 - time.monotonic()))
        for _ in range(20):
            with socket.socket() as s:
                s.bind((mallory, 0))
                s.connect((host, int(port)))
        time.sleep(1.0)
        log = "".join(bob.log[lines_before:]) + bob.stop()
        elapsed = time.monotonic() - started
        flood_lines = [line for line in log.splitlines() if f"'{mallory}'" in line]
        # Three kinds: refused for the address's connections, for its rate,
        # and channels that failed (junk is not a channel).
        bound = 3 * (10 + 0.2 * elapsed + 1)
        self.assertLess(len(flood_lines), bound, "\n".join(flood_lines))
        self.assertIn("more like this were not logged", log)
