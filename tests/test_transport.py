"""
Tests for :mod:`digitalspring.transport`: the plugin registry, address
syntax, and the ``tcp`` and ``memory`` transports through the conformance
suite.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from digitalspring.testing import TransportConformanceMixin, drive
from digitalspring.transport import (
    InvalidAddress,
    ITransport,
    ITransportPlugin,
    MemoryNetwork,
    MemoryTransportPlugin,
    SimulatedClock,
    TCPTransport,
    TCPTransportPlugin,
    TransportConfigError,
    TransportContext,
    UnknownTransport,
    get_transport_plugin,
    transport_plugins,
)
from digitalspring.transport._address import (
    format_tcp_address,
    parse_memory_address,
    parse_tcp_address,
)


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class PluginDiscoveryTests(SynchronousTestCase):
    """
    Transports are found as Twisted plugins.
    """

    def test_built_in_plugins_found(self) -> None:
        """
        ``getPlugins`` finds the ``tcp`` and ``memory`` plugins of the
        installed package, and each provides ``ITransportPlugin``.
        """
        found = {plugin.name: plugin for plugin in getPlugins(ITransportPlugin)}
        self.assertIn("tcp", found)
        self.assertIn("memory", found)
        for plugin in found.values():
            self.assertTrue(verifyObject(ITransportPlugin, plugin))
        self.assertIsInstance(found["tcp"], TCPTransportPlugin)
        self.assertIsInstance(found["memory"], MemoryTransportPlugin)

    def test_get_by_name(self) -> None:
        """
        ``get_transport_plugin`` returns the plugin with that name.
        """
        self.assertEqual(get_transport_plugin("tcp").name, "tcp")
        self.assertEqual(get_transport_plugin("memory").name, "memory")
        self.assertEqual(set(transport_plugins()) >= {"tcp", "memory"}, True)

    def test_unknown_transport(self) -> None:
        """
        An unknown name raises ``UnknownTransport`` whose message names the
        installed transports.
        """
        with self.assertRaises(UnknownTransport) as caught:
            get_transport_plugin("nope")
        message = str(caught.exception)
        self.assertIn("'nope'", message)
        self.assertIn("memory", message)
        self.assertIn("tcp", message)
        self.assertEqual(caught.exception.name, "nope")
        self.assertIn("tcp", caught.exception.installed)


class TCPPluginTests(SynchronousTestCase):
    """
    The ``tcp`` plugin makes transports from its options.
    """

    def test_make_transport(self) -> None:
        """
        With no options the plugin makes a ``TCPTransport``.
        """
        transport = TCPTransportPlugin().make_transport(TransportContext(reactor=Clock()))
        self.assertIsInstance(transport, TCPTransport)
        self.assertTrue(verifyObject(ITransport, transport))

    def test_bad_options(self) -> None:
        """
        An ``advertise`` that is no host, or a non-positive timeout, raises
        ``TransportConfigError``.
        """
        plugin = TCPTransportPlugin()
        for options in [
            {"advertise": "not a host"},
            {"advertise": 7},
            {"connect_timeout": 0},
            {"connect_timeout": "10"},
        ]:
            with self.assertRaises(TransportConfigError, msg=repr(options)):
                plugin.make_transport(TransportContext(reactor=Clock(), options=options))


class MemoryPluginTests(SynchronousTestCase):
    """
    The ``memory`` plugin needs a network and a host on it.
    """

    def test_make_transport(self) -> None:
        """
        Given a network and a host name, the plugin makes that host's
        transport, which listens and connects on the network's clock.
        """
        network = MemoryNetwork(SimulatedClock())
        network.add_host("alice")
        transport = MemoryTransportPlugin().make_transport(
            TransportContext(reactor=Clock(), options={"network": network, "host": "alice"})
        )
        self.assertTrue(verifyObject(ITransport, transport))
        self.assertEqual(transport.host.name, "alice")
        self.assertIs(transport.network, network)

    def test_missing_options(self) -> None:
        """
        Without a ``network``, a ``host``, or with a host the network lacks,
        the plugin raises ``TransportConfigError``.
        """
        network = MemoryNetwork(SimulatedClock())
        network.add_host("alice")
        plugin = MemoryTransportPlugin()
        for options in [
            {},
            {"host": "alice"},
            {"network": network},
            {"network": "network", "host": "alice"},
            {"network": network, "host": "bob"},
            {"network": network, "host": "alice", "connect_timeout": -1},
        ]:
            with self.assertRaises(TransportConfigError, msg=repr(options)):
                plugin.make_transport(TransportContext(reactor=Clock(), options=options))


# Address syntax.

_ports = st.integers(min_value=1, max_value=65535)
_label = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z]\Z")
_hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join)


class TCPListenDescriptionTests(SynchronousTestCase):
    """
    A bad ``tcp`` listening description fails with words about the port.
    """

    def test_port_not_a_number(self) -> None:
        """
        ``77o1`` (a letter o for a zero) fails as "not a port number" with
        ``InvalidAddress``, before Twisted's parser says only "invalid
        literal for int()"; so do an empty port and one out of range.
        """
        transport = TCPTransport(Clock())
        for description, words in [
            ("77o1", "'77o1' is not a port number"),
            (":interface=127.0.0.1", "'' is not a port number"),
            ("70000", "port 70000 is out of range"),
        ]:
            failure = self.failureResultOf(
                transport.listen(description, Factory.forProtocol(Protocol)), InvalidAddress
            )
            self.assertIn(words, str(failure.value))
            self.assertNotIn("literal", str(failure.value))


class TCPAddressTests(SynchronousTestCase):
    """
    ``tcp`` addresses are ``HOST:PORT``, IPv6 in brackets.
    """

    def test_examples(self) -> None:
        """
        IPv4, IPv6 and DNS names parse; anything ambiguous or out of range
        is refused.
        """
        self.assertEqual(parse_tcp_address("127.0.0.1:7000"), ("127.0.0.1", 7000))
        self.assertEqual(parse_tcp_address("[::1]:7000"), ("::1", 7000))
        self.assertEqual(parse_tcp_address("example.org:443"), ("example.org", 443))
        for bad in [
            "::1:7000",
            "[::1]7000",
            "[127.0.0.1]:1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:+1",
            "127.0.0.1: 1",
            "1.2.3:1",
            "host_name:1",
            "-host:1",
            "[fe80::1%eth0]:1",
            "",
            ":",
        ]:
            with self.assertRaises(InvalidAddress, msg=bad):
                parse_tcp_address(bad)

    @given(st.ip_addresses(), _ports)
    def test_ip_round_trip(self, address: Any, port: int) -> None:
        """
        Formatting any IP address and port and parsing the result gives
        them back.
        """
        host = str(address)
        self.assertEqual(parse_tcp_address(format_tcp_address(host, port)), (host, port))

    @given(_hostnames, _ports)
    def test_hostname_round_trip(self, host: str, port: int) -> None:
        """
        Formatting a DNS name and port and parsing the result gives them
        back.
        """
        self.assertEqual(parse_tcp_address(format_tcp_address(host, port)), (host, port))

    @given(st.text(max_size=60))
    def test_arbitrary_text(self, text: str) -> None:
        """
        Any text parses to a valid host and port or raises
        ``InvalidAddress``, never anything else.
        """
        try:
            host, port = parse_tcp_address(text)
        except InvalidAddress:
            return
        self.assertTrue(1 <= port <= 65535)
        self.assertEqual(parse_tcp_address(format_tcp_address(host, port)), (host, port))
        if ":" in host:
            ipaddress.IPv6Address(host)


class MemoryAddressTests(SynchronousTestCase):
    """
    ``memory`` addresses are ``HOST:PORT`` with a simple host name.
    """

    @given(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,30}\Z"), _ports)
    def test_round_trip(self, host: str, port: int) -> None:
        """
        Any valid host name and port survive formatting and parsing.
        """
        self.assertEqual(parse_memory_address(f"{host}:{port}"), (host, port))

    @given(st.text(max_size=40))
    def test_arbitrary_text(self, text: str) -> None:
        """
        Any text parses or raises ``InvalidAddress``, never anything else.
        """
        try:
            host, port = parse_memory_address(text)
        except InvalidAddress:
            return
        self.assertEqual(f"{host}:{port}", text)


# The conformance suite on each transport.


class TCPConformanceTests(TransportConformanceMixin, TestCase):
    """
    The ``tcp`` transport on loopback, with the real reactor.
    """

    listen_description = "0:interface=127.0.0.1"
    timeout = 60

    @property
    def clock(self) -> IReactorTime:
        return _reactor()  # type: ignore[no-any-return]

    def make_transport(self) -> ITransport:
        return TCPTransport(_reactor())

    def run_scenario(self, scenario: Deferred[None]) -> Deferred[None]:
        return scenario


class TCPPublishedAddressTests(TestCase):
    """
    What ``tcp`` publishes for ports bound to every interface.
    """

    async def _published(self, transport: TCPTransport) -> tuple[str, int]:
        port = await transport.listen("0:interface=0.0.0.0", Factory.forProtocol(Protocol))
        try:
            [published] = transport.published_addresses()
            return published, port.getHost().port  # type: ignore[attr-defined]
        finally:
            await port.stopListening()

    def test_wildcard_publishes_loopback(self) -> None:
        """
        A port bound to ``0.0.0.0`` is published as ``127.0.0.1:PORT``.
        """

        async def check() -> None:
            published, port = await self._published(TCPTransport(_reactor()))
            self.assertEqual(published, f"127.0.0.1:{port}")

        return Deferred.fromCoroutine(check())  # type: ignore[return-value]

    def test_wildcard_publishes_advertised_host(self) -> None:
        """
        With the ``advertise`` option, wildcard ports are published under
        that host, IPv6 in brackets.
        """

        async def check() -> None:
            for advertise, expected in [
                ("example.org", "example.org"),
                ("2001:db8::1", "[2001:db8::1]"),
            ]:
                transport = TCPTransportPlugin().make_transport(
                    TransportContext(reactor=_reactor(), options={"advertise": advertise})
                )
                published, port = await self._published(transport)
                self.assertEqual(published, f"{expected}:{port}")

        return Deferred.fromCoroutine(check())  # type: ignore[return-value]


class _MemoryConformance(TransportConformanceMixin):
    """
    Runs the conformance suite on a memory network; subclasses choose the
    clock and the network's conditions.
    """

    bulk_size = 4 * 1024 * 1024
    network_options: dict[str, Any] = {}
    host_options: dict[str, Any] = {}

    def make_clock(self) -> Any:
        return SimulatedClock()

    def setUp(self) -> None:
        self._clock = self.make_clock()
        self.network = MemoryNetwork(self._clock, seed=self.id(), **self.network_options)

    @property
    def clock(self) -> IReactorTime:
        return self._clock  # type: ignore[no-any-return]

    def make_transport(self) -> ITransport:
        name = f"host{len(self.network.hosts)}"
        self.network.add_host(name, **self.host_options)
        return self.network.transport(name)

    def run_scenario(self, scenario: Deferred[None]) -> None:
        drive(self._clock, scenario, limit=3600)
        self.successResultOf(scenario)
        self.assertTrue(drive(self._clock, limit=600), "the network never went idle")
        self.assertEqual(
            [c for c in self._clock.getDelayedCalls() if c.active()],
            [],
            "calls left pending on the clock",
        )


class MemoryConformanceTests(_MemoryConformance, SynchronousTestCase):
    """
    The ``memory`` transport on an ideal network (no latency, unlimited
    bandwidth) and the simulated clock.
    """


class ConstrainedMemoryConformanceTests(_MemoryConformance, SynchronousTestCase):
    """
    The ``memory`` transport with latency, limited bandwidth and loss.
    """

    network_options = {"latency": 0.03, "loss": 0.02}
    host_options = {"upload_bps": 40_000_000, "download_bps": 20_000_000}


class TaskClockMemoryConformanceTests(_MemoryConformance, SynchronousTestCase):
    """
    The ``memory`` transport on Twisted's own ``task.Clock``.
    """

    bulk_size = 1024 * 1024
    network_options = {"latency": 0.01}
    host_options = {"upload_bps": 80_000_000}

    def make_clock(self) -> Any:
        return Clock()
