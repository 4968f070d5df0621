"""
Tests for the connection pool and AMP above the secure channel, on the
memory network and a simulated clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from digitalspring.channel import (
    BackingOff,
    ConnectionLimits,
    ConnectionPool,
    PeerConnection,
    PeerUnreachable,
    Ping,
)
from digitalspring.channel._pool import DUPLICATE_GRACE
from digitalspring.directory import IPeerDirectory, UnknownPeer
from digitalspring.identity import Identity, PeerID
from digitalspring.transport import MemoryNetwork, SimulatedClock


@implementer(IPeerDirectory)
class Directory:
    """
    A directory held in a dict.
    """

    def __init__(self) -> None:
        self.addresses: dict[PeerID, list[str]] = {}

    def resolve(self, peer_id: PeerID) -> Deferred[list[str]]:
        if peer_id not in self.addresses:
            return fail(UnknownPeer(str(peer_id)))
        return succeed(self.addresses[peer_id])


class Echo(amp.Command):
    """
    A command other than Ping: what a layer's traffic looks like.
    """

    arguments = [(b"data", amp.String())]
    response = [(b"data", amp.String())]


class EchoLocator(amp.CommandLocator):
    @Echo.responder
    def echo(self, data: bytes) -> dict[str, bytes]:
        return {"data": data}


class Network:
    """
    Nodes with connection pools on one memory network; each answers
    :class:`Echo`.
    """

    def __init__(
        self,
        latency: float = 0.01,
        idle_timeout: float = 300.0,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.clock = SimulatedClock()
        self.network = MemoryNetwork(self.clock, latency=latency, seed=1)
        self.directory = Directory()
        self.idle_timeout = idle_timeout
        self.limits = limits

    def node(self, name: str, seed: bytes | None = None) -> ConnectionPool:
        self.network.add_host(name)
        transport = self.network.transport(name)
        identity = Identity.from_seed(seed) if seed else Identity.generate()
        pool = ConnectionPool(
            identity,
            self.clock,
            {"memory": transport},
            self.directory,
            idle_timeout=self.idle_timeout,
            limits=self.limits,
        )
        pool.locators.append(lambda connection: EchoLocator())
        transport.listen("1", pool.server_factory)
        self.directory.addresses[identity.peer_id] = [f"memory:{name}:1"]
        pool.startService()
        return pool

    def result(self, d: Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        self.clock.run_until(lambda: bool(results), limit=120)
        self.assertTrue(results)
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def assertTrue(self, value: object) -> None:
        assert value, "nothing happened in time"


class PoolTests(SynchronousTestCase):
    def test_interface(self) -> None:
        """
        The test directory is a verified IPeerDirectory.
        """
        verifyObject(IPeerDirectory, Directory())

    def test_connect_and_ping(self) -> None:
        """
        connect() dials a peer by ID and gives an AMP connection whose
        Ping echoes; the peer sees a connection from the dialler's ID.
        """
        net = Network()
        alice, bob = net.node("alice"), net.node("bob")
        connection = net.result(alice.connect(bob.identity.peer_id))
        self.assertIsInstance(connection, PeerConnection)
        self.assertEqual(connection.peer_id, bob.identity.peer_id)
        answer = net.result(connection.callRemote(Ping, data=b"hello"))
        self.assertEqual(answer, {"data": b"hello"})
        self.assertEqual(list(bob.connections()), [alice.identity.peer_id])

    def test_reuse(self) -> None:
        """
        A second connect() reuses the live connection, and so does a dial
        back from the other side.
        """
        net = Network()
        alice, bob = net.node("alice"), net.node("bob")
        first = net.result(alice.connect(bob.identity.peer_id))
        self.assertIs(net.result(alice.connect(bob.identity.peer_id)), first)
        back = net.result(bob.connect(alice.identity.peer_id))
        self.assertEqual(back.peer_id, alice.identity.peer_id)
        self.assertEqual(len(alice.connections()), 1)
        self.assertEqual(len(bob.connections()), 1)

    def test_concurrent_connects_share_one_dial(self) -> None:
        """
        connect() calls made while a dial is under way wait for that dial.
        """
        net = Network()
        alice, bob = net.node("alice"), net.node("bob")
        ds = [alice.connect(bob.identity.peer_id) for _ in range(5)]
        connections = [net.result(d) for d in ds]
        self.assertTrue(all(c is connections[0] for c in connections))

    def test_simultaneous_dial(self) -> None:
        """
        When two peers dial each other at once, both end with the same one
        connection: the one dialled by the smaller peer ID.
        """
        net = Network(latency=0.05)
        alice, bob = net.node("alice", b"1" * 32), net.node("bob", b"2" * 32)
        from_alice = alice.connect(bob.identity.peer_id)
        from_bob = bob.connect(alice.identity.peer_id)
        a, b = net.result(from_alice), net.result(from_bob)
        net.clock.advance(1)
        self.assertEqual(len(alice.connections()), 1)
        self.assertEqual(len(bob.connections()), 1)
        alice_side = alice.connections()[bob.identity.peer_id]
        bob_side = bob.connections()[alice.identity.peer_id]
        smaller_dialled = alice.identity.peer_id.public_key < bob.identity.peer_id.public_key
        self.assertEqual(alice_side.initiator, smaller_dialled)
        self.assertEqual(bob_side.initiator, not smaller_dialled)
        self.assertEqual(
            net.result(alice_side.callRemote(Ping, data=b"x")), {"data": b"x"}
        )
        del a, b

    def test_duplicate_drains(self) -> None:
        """
        A request sent on the connection that the simultaneous-dial rule
        drops is still answered on it; the pool gives the kept connection to
        new callers at once, and closes the dropped one after
        ``DUPLICATE_GRACE`` seconds.
        """
        net = Network(latency=0.05)
        alice, bob = net.node("alice", b"1" * 32), net.node("bob", b"2" * 32)
        if alice.identity.peer_id.public_key < bob.identity.peer_id.public_key:
            alice, bob = bob, alice
        # alice has the larger ID: the connection she dials is the one dropped.
        dialled: list[PeerConnection] = []
        alice.connect(bob.identity.peer_id).addCallback(dialled.append)
        bob.connect(alice.identity.peer_id)
        net.clock.run_until(lambda: bool(dialled), limit=10)
        [dropped] = dialled
        self.assertTrue(dropped.initiator)
        direct = dropped.callRemote(Ping, data=b"direct")
        through_pool = alice.call(bob.identity.peer_id, Ping, data=b"pool")
        self.assertEqual(net.result(Deferred.fromCoroutine(through_pool)), {"data": b"pool"})
        self.assertEqual(net.result(direct), {"data": b"direct"})
        kept = alice.connections()[bob.identity.peer_id]
        self.assertIsNot(kept, dropped)
        lost: list[object] = []
        dropped.transport.wrappedProtocol.connectionLost = lost.append  # type: ignore[union-attr]
        net.clock.advance(DUPLICATE_GRACE - 1)
        self.assertEqual(lost, [])
        net.clock.advance(2)
        self.assertEqual(len(lost), 1)
        self.assertIs(alice.connections()[bob.identity.peer_id], kept)

    def test_call_sends_again_when_its_connection_is_lost(self) -> None:
        """
        A request whose connection is lost under it (here: closed by the
        peer at once) is sent once more, on a new connection.
        """
        net = Network(latency=0.05)
        alice, bob = net.node("alice"), net.node("bob")
        first = net.result(alice.connect(bob.identity.peer_id))
        call = Deferred.fromCoroutine(alice.call(bob.identity.peer_id, Ping, data=b"again"))
        first.transport.loseConnection()  # type: ignore[union-attr]
        self.assertEqual(net.result(call), {"data": b"again"})
        self.assertIsNot(alice.connections()[bob.identity.peer_id], first)

    def test_idle_close(self) -> None:
        """
        A connection without traffic for the idle timeout closes on both
        sides; traffic keeps it open.
        """
        net = Network(idle_timeout=10)
        alice, bob = net.node("alice"), net.node("bob")
        connection = net.result(alice.connect(bob.identity.peer_id))
        for _ in range(5):
            net.clock.advance(6)
            net.result(connection.callRemote(Echo, data=b""))
        self.assertEqual(len(alice.connections()), 1)
        self.assertEqual(len(bob.connections()), 1)
        net.clock.advance(11)
        net.clock.run_until_idle(limit=5)
        self.assertEqual(alice.connections(), {})
        self.assertEqual(bob.connections(), {})

    def test_pings_do_not_keep_a_connection_open(self) -> None:
        """
        The attack: a peer holds a connection slot forever by sending a Ping
        just before each idle timeout.  The listener closes the connection
        one idle timeout after its last other use, however often the peer
        pings.
        """
        net = Network(idle_timeout=10)
        alice, bob = net.node("alice"), net.node("bob")
        connection = net.result(alice.connect(bob.identity.peer_id))
        net.result(connection.callRemote(Echo, data=b"last use"))
        used = net.clock.seconds()
        while alice.connections():
            net.clock.advance(9)
            if connection.transport is not None:
                connection.callRemote(Ping, data=b"")
            net.clock.run_until_idle(limit=5)
            self.assertLess(net.clock.seconds() - used, 20, "the pings kept it open")
        self.assertEqual(bob.connections(), {})
        self.assertLessEqual(net.clock.seconds() - used, 10 + 9)

    def test_unknown_peer(self) -> None:
        """
        A peer the directory does not know fails with UnknownPeer.
        """
        net = Network()
        alice = net.node("alice")
        self.assertRaises(
            UnknownPeer, net.result, alice.connect(Identity.generate().peer_id)
        )

    def test_backoff(self) -> None:
        """
        After a failed dial, the peer is not dialled again until its backoff
        delay has passed, and the delay doubles.
        """
        net = Network()
        alice = net.node("alice")
        ghost = Identity.generate().peer_id
        net.directory.addresses[ghost] = ["memory:alice:9"]
        self.assertRaises(PeerUnreachable, net.result, alice.connect(ghost))
        e = self.assertRaises(BackingOff, net.result, alice.connect(ghost))
        self.assertIn("next try", str(e))
        net.clock.advance(1.1)
        self.assertRaises(PeerUnreachable, net.result, alice.connect(ghost))
        net.clock.advance(1.1)
        self.assertRaises(BackingOff, net.result, alice.connect(ghost))
        net.clock.advance(1.0)
        failure = self.assertRaises(PeerUnreachable, net.result, alice.connect(ghost))
        self.assertNotIsInstance(failure, BackingOff)

    def test_forget_failures(self) -> None:
        """
        ``forget_failures`` lets the next call dial a peer still in its
        backoff delay.
        """
        net = Network()
        alice = net.node("alice")
        ghost = Identity.generate().peer_id
        net.directory.addresses[ghost] = ["memory:alice:9"]
        self.assertRaises(PeerUnreachable, net.result, alice.connect(ghost))
        self.assertRaises(BackingOff, net.result, alice.connect(ghost))
        alice.forget_failures(ghost)
        failure = self.assertRaises(PeerUnreachable, net.result, alice.connect(ghost))
        self.assertNotIsInstance(failure, BackingOff)

    def test_wrong_peer_at_address(self) -> None:
        """
        An address that leads to another peer fails the dial; the other
        addresses of the peer are tried next.
        """
        net = Network()
        alice, bob, carol = net.node("alice"), net.node("bob"), net.node("carol")
        net.directory.addresses[bob.identity.peer_id] = ["memory:carol:1", "memory:bob:1"]
        connection = net.result(alice.connect(bob.identity.peer_id))
        self.assertEqual(connection.peer_id, bob.identity.peer_id)
        self.assertEqual(carol.connections(), {})

    def test_ping_limit(self) -> None:
        """
        A Ping over AMP's limits fails locally with TooLong, and the
        connection stays usable.
        """
        net = Network()
        alice, bob = net.node("alice"), net.node("bob")
        connection = net.result(alice.connect(bob.identity.peer_id))
        self.assertRaises(amp.TooLong, connection.callRemote, Ping, data=b"x" * 2000)
        self.assertEqual(net.result(connection.callRemote(Ping, data=b"y")), {"data": b"y"})

    def test_no_self_dial(self) -> None:
        """
        A node refuses to dial itself.
        """
        net = Network()
        alice = net.node("alice")
        self.assertRaises(PeerUnreachable, net.result, alice.connect(alice.identity.peer_id))

    def test_stop_closes_all(self) -> None:
        """
        Stopping the pool closes every connection and fires when they are
        closed.
        """
        net = Network()
        alice, bob, carol = net.node("alice"), net.node("bob"), net.node("carol")
        net.result(alice.connect(bob.identity.peer_id))
        net.result(carol.connect(alice.identity.peer_id))
        net.result(alice.stopService())
        self.assertEqual(alice.connections(), {})
        net.clock.run_until_idle(limit=5)
        self.assertEqual(bob.connections(), {})
        self.assertEqual(carol.connections(), {})
