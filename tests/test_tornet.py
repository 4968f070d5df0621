"""
Tests for the private Tor test network (``digitalspring.testing._tor*``)
and the network namespace it runs in.

The Tor tests need ``tor`` and ``tor-gencert`` (``apt-get install tor``) and
share one network per run; run as root, they run it in a network namespace
that has nothing but ``lo``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError as RefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from digitalspring.testing._torcontrol import (
    NamespacedEndpoint,
    bootstrap_progress,
    close_control,
    publish_onion_service,
    socks_client_endpoint,
)
from digitalspring.testing._torecho import echo_factory, measure_echo
from digitalspring.testing._torfixture import enter_shared_tor_network
from digitalspring.testing._torkeys import (
    AUTHORITIES,
    DEFAULT_RELAYS,
    load_or_create_template,
)
from digitalspring.testing._tornamespace import (
    NamespaceUnavailable,
    NetworkNamespace,
    WrongThread,
    isolated_namespace_or_none,
)
from digitalspring.testing._tornet import PrivateTorNetwork, consensus_not_ready
from digitalspring.testing._torprocess import tor_binary_or_skip

#: What the Tor tests measured in this run, for benchmarks and the log.
MEASUREMENTS: dict[str, float] = {}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _report(**measured: float) -> None:
    """
    Keep measurements in :data:`MEASUREMENTS` and in
    ``tornet-measurements.json`` (in trial's working directory).
    """
    MEASUREMENTS.update(measured)
    with open("tornet-measurements.json", "w") as f:
        json.dump(MEASUREMENTS, f, indent=1, sort_keys=True)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # The PID exists; it is ours only if it is still a tor.
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() != "tor"
    except FileNotFoundError:
        return True


class NamespaceTests(SynchronousTestCase):
    """
    The loopback-only network namespace the Tor network runs in.
    """

    def setUp(self) -> None:
        try:
            self.namespace = NetworkNamespace.create()
        except NamespaceUnavailable as e:
            raise SkipTest(f"network namespaces need root on Linux: {e}") from e
        self.addCleanup(self.namespace.close)

    def test_only_loopback(self) -> None:
        """
        The namespace has exactly one interface, ``lo``.
        """
        self.assertEqual(self.namespace.interfaces(), ["lo"])

    def test_no_route_off_machine(self) -> None:
        """
        Inside the namespace 127.0.0.1 is routable and the address tor
        probes to guess its own (18.0.0.1) is not, nor is any public
        address: no packet can leave.  (Asked of the routing table with a
        UDP connect, which sends nothing.)
        """
        self.assertTrue(self.namespace.has_route_to("127.0.0.1"))
        for address in ("18.0.0.1", "8.8.8.8", "10.0.0.1", "192.168.1.1"):
            self.assertFalse(self.namespace.has_route_to(address), address)

    def test_enter_and_leave(self) -> None:
        """
        ``create`` leaves the thread where it was; nested ``entered`` blocks
        keep it inside until the outermost ends.
        """
        self.assertFalse(self.namespace.is_entered)
        with self.namespace.entered():
            with self.namespace.entered():
                self.assertTrue(self.namespace.is_entered)
            self.assertTrue(self.namespace.is_entered)
        self.assertFalse(self.namespace.is_entered)

    def test_separate_ports(self) -> None:
        """
        A port listening inside the namespace cannot be reached from the
        original namespace (and so a tor inside cannot be reached from
        outside, nor reach out).
        """
        with self.namespace.entered():
            server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.socket() as outside:
            self.assertRaises(ConnectionRefusedError, outside.connect, server.getsockname())

    def test_other_thread_refused(self) -> None:
        """
        Namespaces belong to threads: entering from another thread than the
        creator's is refused instead of moving the wrong thread.
        """
        errors: list[BaseException] = []

        def enter() -> None:
            try:
                self.namespace.enter()
            except WrongThread as e:
                errors.append(e)

        thread = threading.Thread(target=enter)
        thread.start()
        thread.join()
        self.assertEqual(len(errors), 1)


class NamespacedEndpointTests(TestCase):
    """
    Connections made from inside a namespace, on the real reactor.
    """

    def setUp(self) -> None:
        try:
            self.namespace = NetworkNamespace.create()
        except NamespaceUnavailable as e:
            raise SkipTest(f"network namespaces need root on Linux: {e}") from e
        self.addCleanup(self.namespace.close)
        self.reactor = _reactor()
        with self.namespace.entered():
            self.port = self.reactor.listenTCP(0, Factory.forProtocol(Protocol),
                                               interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def test_interface(self) -> None:
        """
        ``NamespacedEndpoint`` provides ``IStreamClientEndpoint``.
        """
        wrapped = TCP4ClientEndpoint(self.reactor, "127.0.0.1", 1)
        self.assertTrue(verifyObject(IStreamClientEndpoint, NamespacedEndpoint(None, wrapped)))

    async def test_connects_inside(self) -> None:
        """
        Through ``NamespacedEndpoint`` the reactor thread reaches a port
        inside the namespace that a plain endpoint cannot reach, and it is
        back outside afterwards.
        """
        address = self.port.getHost()
        plain = TCP4ClientEndpoint(self.reactor, "127.0.0.1", address.port)
        with self.assertRaises(RefusedError):
            await plain.connect(Factory.forProtocol(Protocol))
        endpoint = NamespacedEndpoint(self.namespace, plain)
        protocol = await endpoint.connect(Factory.forProtocol(Protocol))
        self.assertFalse(self.namespace.is_entered)
        self.assertIsNotNone(protocol.transport)
        protocol.transport.loseConnection()


class FindTorTests(SynchronousTestCase):
    """
    Finding tor, and what happens without it.
    """

    def test_missing_tor_skips(self) -> None:
        """
        Without a tor binary, Tor tests are skipped with a message saying
        how to install it.
        """
        e = self.assertRaises(SkipTest, tor_binary_or_skip, "/nonexistent/tor")
        self.assertIn("apt-get install tor", str(e))

    def test_no_consensus_yet(self) -> None:
        """
        An authority data directory without a consensus is not ready, and
        says why.
        """
        path = self.mktemp()
        os.mkdir(path)
        self.assertEqual(consensus_not_ready(path, 7), "no consensus yet")


class KeyTemplateTests(TestCase):
    """
    The cache of generated authority and relay keys.
    """

    timeout = 120

    async def test_cached_then_repaired(self) -> None:
        """
        A template is generated once and then loaded from the cache; a
        broken one (unreadable manifest) is regenerated cleanly.
        """
        tor_binary_or_skip()
        reactor = _reactor()
        namespace = isolated_namespace_or_none()
        if namespace is not None:
            self.addCleanup(namespace.close)
        cache = os.path.abspath(self.mktemp())
        first = await load_or_create_template(reactor, None, cache, 2, namespace)
        self.assertEqual(len(first.authorities), AUTHORITIES)
        self.assertEqual(len(first.relays), 2)
        self.assertTrue(all(n.v3ident for n in first.authorities))
        again = await load_or_create_template(reactor, None, cache, 2, namespace)
        self.assertEqual(again, first)

        with open(os.path.join(first.path, "manifest.json"), "w") as f:
            f.write("{ broken")
        repaired = await load_or_create_template(reactor, None, cache, 2, namespace)
        self.assertEqual(len(repaired.nodes), AUTHORITIES + 2)
        self.assertNotEqual(repaired.nodes, first.nodes)
        with open(os.path.join(repaired.path, "manifest.json")) as f:
            self.assertEqual(len(json.load(f)["nodes"]), AUTHORITIES + 2)


class SharedNetworkTests(TestCase):
    """
    The run's private Tor network: bootstrap, isolation, onion services.
    """

    timeout = 180

    async def setUp(self) -> None:  # type: ignore[override]
        self.reactor = _reactor()
        self.network = await enter_shared_tor_network(self, self.reactor)
        _report(
            network_start_seconds=self.network.timings.total,
            key_template_seconds=self.network.timings.keys,
            consensus_seconds=self.network.timings.consensus,
            client_bootstrap_seconds=self.network.timings.bootstrap,
        )

    async def _control(self, client: Any) -> Any:
        tor = await client.connect_control()
        self.addCleanup(lambda: Deferred.fromCoroutine(close_control(tor)))
        return tor

    async def test_client_bootstrapped(self) -> None:
        """
        The network's client reports 100 % bootstrap over its control port,
        and every authority holds a consensus listing all routers as HSDirs.
        """
        tor = await self._control(self.network.client)
        self.assertEqual(await bootstrap_progress(tor), 100)
        for authority in self.network.processes[:AUTHORITIES]:
            self.assertEqual(authority.role, "authority")
            self.assertIsNone(
                consensus_not_ready(authority.data_dir, AUTHORITIES + DEFAULT_RELAYS)
            )

    async def test_fixed_circuit_build_timeout(self) -> None:
        """
        The network's client tors build circuits with a fixed 10 s timeout
        instead of one learned on the idle loopback (75-85 ms, which a loaded
        machine exceeds, so that tor abandoned the circuits onion services
        need), and a tor joining through ``client_torrc_options`` is told
        the same.
        """
        tor = await self._control(self.network.client)
        conf = await tor.protocol.get_conf("LearnCircuitBuildTimeout", "CircuitBuildTimeout")
        self.assertEqual(
            (conf["LearnCircuitBuildTimeout"], conf["CircuitBuildTimeout"]), ("0", "10")
        )
        options = self.network.client_torrc_options()
        self.assertIn("LearnCircuitBuildTimeout 0", options)
        self.assertIn("CircuitBuildTimeout 10", options)

    def test_tors_in_namespace(self) -> None:
        """
        Every tor runs, inside the loopback-only namespace: the servers and
        ``client0``, and any client another test of the run added.
        """
        namespace = self.network.namespace
        if namespace is None:
            raise SkipTest("not root: the network runs without a network namespace")
        self.assertGreaterEqual(len(self.network.pids), AUTHORITIES + DEFAULT_RELAYS + 1)
        servers = self.network.processes[: AUTHORITIES + DEFAULT_RELAYS]
        self.assertTrue(all(p.running for p in servers))
        self.assertTrue(self.network.client.process.running)
        for pid in self.network.pids:
            self.assertTrue(namespace.contains_pid(pid), pid)
        self.assertFalse(namespace.has_route_to("18.0.0.1"))

    async def test_onion_service_echo(self) -> None:
        """
        An ephemeral v3 onion service published through one client tor is
        reachable through another tor's SOCKS port: small exchanges come
        back, and ~1 MB comes back unchanged.
        """
        service_client = await self.network.add_client("onionsvc")
        self.addCleanup(service_client.stop)
        service_tor = await self._control(service_client)
        onion = await publish_onion_service(
            self.reactor, service_tor, echo_factory(), 8080, self.network.namespace
        )
        self.addCleanup(lambda: Deferred.fromCoroutine(onion.unpublish()))
        self.assertTrue(onion.host.endswith(".onion"))
        self.assertEqual(len(onion.host), 56 + len(".onion"))

        client = self.network.client
        client_tor = await self._control(client)
        endpoint = socks_client_endpoint(
            self.reactor, client_tor, onion.host, onion.virtual_port, client.socks_port,
            self.network.namespace,
        )
        measured = await measure_echo(self.reactor, endpoint, 20, 1_000_000)
        self.assertTrue(measured.intact)
        self.assertEqual(len(measured.round_trips), 20)
        _report(
            onion_publish_seconds=onion.publish_seconds,
            onion_first_connect_seconds=measured.connect_seconds,
            onion_median_rtt_ms=measured.median_round_trip * 1000,
            onion_echo_MB_per_s=measured.megabytes_per_second,
        )
        print(
            "\n  tornet: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(MEASUREMENTS.items())),
            file=sys.stderr,
        )

    async def test_add_and_stop_client(self) -> None:
        """
        An added client bootstraps; stopping it ends its process, and the
        network no longer lists its PID.
        """
        client = await self.network.add_client("extra")
        self.assertIn(client.pid, self.network.pids)
        tor = await client.connect_control()
        try:
            self.assertEqual(await bootstrap_progress(tor), 100)
        finally:
            await close_control(tor)
        await client.stop()
        self.assertNotIn(client.pid, self.network.pids)
        self.assertTrue(_process_gone(client.pid))


class NetworkLifecycleTests(TestCase):
    """
    Starting and stopping a whole network of its own.
    """

    timeout = 180

    async def test_stop_leaves_no_tor(self) -> None:
        """
        A network started from scratch bootstraps a client, and ``stop``
        ends every tor it started: none of their PIDs is left.
        """
        tor_binary_or_skip()
        reactor = _reactor()
        namespace = isolated_namespace_or_none()
        if namespace is not None:
            self.addCleanup(namespace.close)
        network = PrivateTorNetwork(reactor, self.mktemp(), namespace=namespace)
        self.addCleanup(network.stop)
        await network.start()
        pids = network.pids
        self.assertEqual(len(pids), AUTHORITIES + DEFAULT_RELAYS + 1)
        self.assertTrue(all(not _process_gone(pid) for pid in pids))
        await network.stop()
        self.assertEqual(network.pids, [])
        self.assertEqual([pid for pid in pids if not _process_gone(pid)], [])
