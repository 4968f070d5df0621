"""
The ``tor`` transport over real tors, on the run's private Tor network
(``digitalspring.testing.shared_tor_network``): the transport conformance
suite, a node's own launched tor, and two onion-only nodes that find and
ping each other by peer ID.

These tests need ``tor`` (``apt-get install tor``) and skip without it; as
root they run inside a network namespace that has nothing but ``lo``.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from zope.interface import directlyProvides, providedBy

from digitalspring.identity import PeerID, load_or_create_identity
from digitalspring.node import Node
from digitalspring.tap import Options, _make_node
from digitalspring.testing import (
    PrivateTorNetwork,
    RecordingProtocol,
    TorClient,
    TorControlContractMixin,
    TransportConformanceMixin,
    echo_factory,
    enter_shared_tor_network,
    measure_echo,
    scenario,
)
from digitalspring.transport import (
    ITorControl,
    ITransport,
    TorTransport,
    TorTransportPlugin,
    TransportContext,
    attach_tor,
    onion_host,
    parse_onion_address,
)
from digitalspring.transport._torkey import load_or_create_seed, new_seed
from digitalspring.transport._toronion import DEFAULT_DEFENCES


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _client(network: PrivateTorNetwork, name: str) -> TorClient:
    """
    The network's client tor called ``name``, started on first use and
    shared by the tests after.
    """
    if name == "client0":
        return network.client
    existing = network.clients.get(name)
    if existing is not None and existing.process.running:
        return existing
    return await network.add_client(name)


def _attached(reactor: Any, client: TorClient, data_dir: FilePath[str] | None = None,
              **options: Any) -> TorTransport:
    context = TransportContext(
        reactor, data_dir, {"control": f"tcp:127.0.0.1:{client.control_port}", **options}
    )
    return TorTransportPlugin().make_transport(context)


class TorConformanceTests(TransportConformanceMixin, TestCase):
    """
    The ``tor`` transport, attached to two client tors of the private
    network, passes the transport conformance suite.  Servers publish
    onion services through one tor and clients dial through the other, so
    every connection crosses the network: SOCKS, descriptor fetch,
    introduction and rendezvous.
    """

    listen_description = "80"
    # Tor carries 1-5 MB/s here; half a megabyte each way keeps the test
    # short and still checks every byte.
    bulk_size = 512 * 1024
    settle_time = 1.0
    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        self.reactor = _reactor()
        self.network = await enter_shared_tor_network(self, self.reactor)
        self.tors = [self.network.client, await _client(self.network, "conform")]
        self.made = 0

    @property
    def clock(self) -> IReactorTime:
        return self.reactor  # type: ignore[no-any-return]

    def make_transport(self) -> ITransport:
        client = self.tors[self.made % 2]
        self.made += 1
        transport = _attached(self.reactor, client)
        self.addCleanup(transport.close)
        return transport

    def run_scenario(self, scenario: Deferred[None]) -> Deferred[None]:
        return scenario

    # Two tests say what tor can promise instead of what TCP does.

    @scenario
    async def test_abort(self) -> None:
        """
        ``abortConnection`` ends the connection at once: the aborting end
        sees ``ConnectionAborted`` and the other end loses the connection.
        (Over tor the other end sees a clean close: the service's tor closes
        its local socket the same way whatever ended the stream, which is
        why the secure channel above frames its own end.)
        """
        client, server = await self.connected_pair()
        client.connection.write(b"x" * 100_000)
        client.connection.abortConnection()
        await self.assert_lost(client, ConnectionAborted)
        await self.assert_lost(server, ConnectionDone, ConnectionLost)

    @scenario
    async def test_connection_refused(self) -> None:
        """
        Dialling where nobody listens fails with ``ConnectionRefusedError``:
        a port of a live onion service that it does not publish, and an
        onion address that was never published.  (A client that dials a
        service removed a moment ago keeps trying its introduction points
        until tor's own timeouts; see ``docs/tor.rst``.)
        """
        server_transport = self.make_transport()
        await self.listen(server_transport)
        [address] = server_transport.published_addresses()
        host, port = parse_onion_address(address)
        client_transport = self.make_transport()
        for target in (f"{host}:{port + 1}", f"{onion_host(new_seed())}:{port}"):
            try:
                await client_transport.connect(
                    target, Factory.forProtocol(lambda: RecordingProtocol(self))
                )
            except ConnectionRefusedError:
                pass
            else:
                self.fail(f"connected to {target}, where nothing listens")


class TxtorconControlContractTests(TorControlContractMixin, TestCase):
    """
    The real tor control, attached to a client tor of the private network,
    keeps the contract the fake keeps (``tests.test_tor``).
    """

    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        self.reactor = _reactor()
        self.network = await enter_shared_tor_network(self, self.reactor)

    async def make_control(self) -> ITorControl:
        port = self.network.client.control_port
        control = await attach_tor(
            self.reactor, TCP4ClientEndpoint(self.reactor, "127.0.0.1", port), f"port {port}"
        )
        self.addCleanup(control.close)
        return control

    async def test_defences_accepted(self) -> None:
        """
        This tor (0.4.9) takes the onion service defences we ask for in
        ``ADD_ONION`` -- proof of work with our queue rate and burst, and
        the per-client stream limit -- rather than refusing them (as a tor
        without proof of work does, and we would publish without it); the
        service is reachable with them on.
        """
        control = await self.make_control()
        served: list[_Closing] = []
        local = self.reactor.listenTCP(
            0, Factory.forProtocol(lambda: served.append(_Closing()) or served[-1]),
            interface="127.0.0.1",
        )
        self.addCleanup(local.stopListening)
        service = await control.publish_onion(80, local.getHost().port, new_seed())
        self.assertEqual(service.defences, DEFAULT_DEFENCES)  # type: ignore[attr-defined]
        self.assertTrue(DEFAULT_DEFENCES.pow and DEFAULT_DEFENCES.max_streams)
        client = _Closing()
        await control.onion_endpoint(service.hostname, 80).connect(
            Factory.forProtocol(lambda: client)
        )
        await client.lost
        for protocol in served:
            await protocol.lost
        await service.remove()

    async def test_cancel_after_socks_connected(self) -> None:
        """
        A dial cancelled while tor looks for the service (after the SOCKS
        connection is up) fails with ``CancelledError`` and closes the SOCKS
        connection: trial would fail the test on the open socket.
        """
        control = await self.make_control()
        dialling = control.onion_endpoint(onion_host(new_seed()), 80).connect(
            Factory.forProtocol(Protocol)
        )
        # Tor takes ~0.5 s to find no descriptor; the SOCKS handshake, ~1 ms.
        await deferLater(self.reactor, 0.1, lambda: None)
        dialling.cancel()
        with self.assertRaises(CancelledError):
            await dialling


class _Closing(Protocol):
    """
    Closes its connection as soon as it is made; ``lost`` fires once it is
    gone.
    """

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)


class LaunchedTorTests(TestCase):
    """
    A transport that launches its own tor, joining the private network
    through ``--tor-option`` lines.
    """

    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        self.reactor = _reactor()
        self.network = await enter_shared_tor_network(self, self.reactor)

    def _launching(self, data_dir: FilePath[str]) -> TorTransport:
        context = TransportContext(
            self.reactor, data_dir, {"torrc": self.network.client_torrc_options()}
        )
        transport = TorTransportPlugin().make_transport(context)
        self.addCleanup(transport.close)
        return transport

    async def test_launch_publish_restart(self) -> None:
        """
        The transport launches tor with its data in ``DATA_DIR/tor`` and
        publishes an onion service that another tor reaches (echoing ~100 kB
        intact).  Closed, its tor exits; launched again on the same data
        directory it publishes the same onion address, reachable again.
        """
        data_dir = FilePath(self.mktemp())
        client_transport = _attached(self.reactor, self.network.client)
        self.addCleanup(client_transport.close)
        addresses = []
        for _ in range(2):
            transport = self._launching(data_dir)
            await transport.listen("8080", echo_factory())
            [address] = transport.published_addresses()
            addresses.append(address)
            control = transport._control
            launched = control.launched  # type: ignore[union-attr]
            self.assertTrue(launched.running)
            self.assertTrue(data_dir.child("tor").child("data").child("cached-certs").exists())
            measured = await measure_echo(
                self.reactor, _TransportEndpoint(client_transport, address), 5, 100_000
            )
            self.assertTrue(measured.intact)
            await transport.close()
            self.assertFalse(launched.running)
            with self.assertRaises(ProcessLookupError):
                os.kill(launched.pid, 0)
        self.assertEqual(addresses[0], addresses[1])
        seed = data_dir.child("tor").child("onion-default.key").getContent()
        self.assertEqual(addresses[0], f"{onion_host(seed)}:8080")


class _TransportEndpoint:
    """
    A client endpoint that connects through a transport to an address.
    """

    def __init__(self, transport: ITransport, address: str) -> None:
        self._transport = transport
        self._address = address

    def connect(self, factory: Any) -> Deferred[Any]:
        return self._transport.connect(self._address, factory)


class RecordingReactor:
    """
    The real reactor, recording every outgoing connection and every
    listening socket asked of it.

    :ivar connects: ``(kind, host, port)`` of each connect.
    :ivar listens: ``(port, interface)`` of each TCP listen.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.connects: list[tuple[str, str, int]] = []
        self.listens: list[tuple[int, str]] = []
        directlyProvides(self, providedBy(reactor))

    def connectTCP(self, host: str, port: int, factory: Any, *args: Any, **kw: Any) -> Any:
        self.connects.append(("tcp", host, port))
        return self._reactor.connectTCP(host, port, factory, *args, **kw)

    def connectSSL(self, host: str, port: int, *args: Any, **kw: Any) -> Any:
        self.connects.append(("ssl", host, port))
        return self._reactor.connectSSL(host, port, *args, **kw)

    def connectUNIX(self, address: str, *args: Any, **kw: Any) -> Any:
        self.connects.append(("unix", address, 0))
        return self._reactor.connectUNIX(address, *args, **kw)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        self.listens.append((port, interface))
        return self._reactor.listenTCP(port, factory, backlog, interface)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def _on_this_machine(kind: str, host: str) -> bool:
    if kind == "unix":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it could resolve anywhere


class OnionOnlyNodesTests(TestCase):
    """
    Two nodes in onion-only mode, each attached to its own client tor,
    built as ``twistd dspring`` builds them.
    """

    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        self.reactor = _reactor()
        self.network = await enter_shared_tor_network(self, self.reactor)
        self.recording = RecordingReactor(self.reactor)

    async def _node(self, name: str, client: TorClient, *extra: str) -> Node:
        options = Options()
        options.parseOptions([
            "--data-dir", self.data_dirs[name].path, "--no-passphrase", "--onion-only",
            "--tor-control", f"tcp:127.0.0.1:{client.control_port}", *extra,
        ])
        node = _make_node(options, self.recording)
        node.startService()
        self.addCleanup(node.stopService)
        await node.ready
        return node

    async def test_find_and_ping(self) -> None:
        """
        B bootstraps from A's onion address; then each pings the other by
        peer ID alone (found through the DHT), through the Noise channel
        over onion services.  Neither publishes anything but one onion
        address, and every connection the nodes asked the reactor for went
        to 127.0.0.0/8 (their tors' control and SOCKS ports), every listener
        was on 127.0.0.1: nothing direct left the machine.
        """
        root = FilePath(self.mktemp())
        self.data_dirs = {name: root.child(name) for name in ("a", "b")}
        identity_a, _ = load_or_create_identity(self.data_dirs["a"], None, unencrypted=True)
        seed = load_or_create_seed(self.data_dirs["a"].child("tor").child("onion-default.key"))
        onion_a = f"{onion_host(seed)}:7655"

        a = await self._node("a", self.network.client)
        self.assertEqual(a.addresses(), [f"tor:{onion_a}"])
        b = await self._node(
            "b", await _client(self.network, "conform"),
            "--bootstrap", f"{identity_a.peer_id}@tor:{onion_a}",
        )
        [address_b] = b.addresses()
        self.assertTrue(address_b.startswith("tor:") and address_b.endswith(".onion:7655"))
        for node in (a, b):
            self.assertEqual(sorted(node.transports), ["tor"])

        ping_b_to_a = await self._ping_until_found(b, a.peer_id)
        ping_a_to_b = await self._ping_until_found(a, b.peer_id, fresh=True)
        for result in (ping_b_to_a, ping_a_to_b):
            self.assertGreater(result["rtt_ms"], 0)

        self.assertTrue(self.recording.connects)
        off_machine = [c for c in self.recording.connects if not _on_this_machine(c[0], c[1])]
        self.assertEqual(off_machine, [])
        self.assertTrue(all(interface == "127.0.0.1" for _, interface in self.recording.listens),
                        self.recording.listens)

    async def _ping_until_found(
        self, node: Node, peer: PeerID, fresh: bool = False, within: float = 60.0
    ) -> dict[str, Any]:
        """
        Ping ``peer`` from ``node`` once its DHT knows the peer's record
        (records are published a moment after a node is ready).  With
        ``fresh``, over a connection of its own rather than the one the peer
        dialled.
        """
        deadline = self.reactor.seconds() + within
        while True:
            lookup = await node.dht_lookup(peer)
            if lookup["found"]:
                break
            if self.reactor.seconds() > deadline:
                self.fail(f"{node.peer_id} never found {peer} in the DHT: {lookup}")
            await deferLater(self.reactor, 0.5, lambda: None)
        if fresh:
            for connection in node.pool.connections().values():
                assert connection.transport is not None
                connection.transport.loseConnection()
            while node.pool.connections():
                await deferLater(self.reactor, 0.1, lambda: None)
        return await node.ping(peer)
