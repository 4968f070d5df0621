"""
Tests for the ``tor`` transport that need no tor: onion addresses and keys,
the plugin's options, ``twistd dspring``'s tor options, and the transport
itself over the fake tor control (which passes the conformance suite).

The same transport over a real tor, on a private Tor network, is tested in
``tests.test_tor_network``.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp
from nacl.signing import SigningKey
from twisted.application.service import IService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txtorcon import TorProtocolError
from txtorcon.socks import SocksError
from zope.interface.verify import verifyObject

from digitalspring.identity import encode_onion
from digitalspring.tap import Options, build_transports
from digitalspring.testing import (
    FakeOnionNetwork,
    FakeOnionService,
    FakeTorControl,
    TorControlContractMixin,
    TransportConformanceMixin,
)
from digitalspring.transport import (
    InvalidAddress,
    IOnionService,
    ITorControl,
    ITransport,
    ITransportPlugin,
    ListenDescription,
    OnionAddress,
    OnionServiceUnreachable,
    TorClientAddress,
    TorStreamTimeout,
    TorTransport,
    TorTransportPlugin,
    TransportConfigError,
    TransportContext,
    TransportError,
    TxtorconControl,
    onion_host,
    parse_onion_address,
)
from digitalspring.transport._tor import _AddressingFactory
from digitalspring.transport._torcontrol import (
    PUBLISH_PATIENCE,
    REFETCH_PATIENCE,
    _connect_failure,
    _socks_endpoint,
    launch_torrc,
    stuck_rendezvous,
)
from digitalspring.transport._torkey import (
    expanded_secret_key,
    load_or_create_seed,
    tor_private_key,
)
from digitalspring.transport._toronion import (
    DEFAULT_DEFENCES,
    DescriptorUploads,
    OnionDefences,
    add_onion_command,
    service_id,
)

#: The onion address of tor's own website, as published.
_TORPROJECT = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class OnionAddressTests(SynchronousTestCase):
    """
    ``tor`` addresses are ``ONION.onion:PORT``, version 3 only, checked
    before anything is dialled.
    """

    def test_valid(self) -> None:
        """
        A v3 onion address with a port parses; upper case is folded.
        """
        self.assertEqual(parse_onion_address(f"{_TORPROJECT}:80"), (_TORPROJECT, 80))
        self.assertEqual(parse_onion_address(f"{_TORPROJECT.upper()}:1"), (_TORPROJECT, 1))

    def test_bad_checksum(self) -> None:
        """
        One changed character breaks the checksum, which is reported.
        """
        typo = ("a" if _TORPROJECT[0] != "a" else "b") + _TORPROJECT[1:]
        with self.assertRaises(InvalidAddress) as caught:
            parse_onion_address(f"{typo}:80")
        self.assertIn("checksum", str(caught.exception))

    def test_v2_refused(self) -> None:
        """
        A 16-character (version 2) onion address is refused, saying so.
        """
        with self.assertRaises(InvalidAddress) as caught:
            parse_onion_address("expyuzz4wqqyqhjn.onion:80")
        self.assertIn("version 2", str(caught.exception))

    def test_malformed(self) -> None:
        """
        Missing ports, bad ports, other hosts, wrong lengths, subdomains and
        non-base32 characters are all refused.
        """
        for bad in [
            "",
            _TORPROJECT,
            f"{_TORPROJECT}:",
            f"{_TORPROJECT}:0",
            f"{_TORPROJECT}:65536",
            f"{_TORPROJECT}:http",
            ":80",
            "127.0.0.1:80",
            "example.org:443",
            f"www.{_TORPROJECT}:80",
            f"{_TORPROJECT[:-7]}.onion:80",
            f"{_TORPROJECT[:55]}1.onion:80",
            f"{_TORPROJECT[:-6]}:80",
        ]:
            with self.assertRaises(InvalidAddress, msg=bad):
                parse_onion_address(bad)

    @given(st.binary(min_size=32, max_size=32), st.integers(1, 65535))
    def test_round_trip(self, key: bytes, port: int) -> None:
        """
        Any Ed25519 public key's onion address parses back to itself.
        """
        host = encode_onion(key) + ".onion"
        self.assertEqual(parse_onion_address(f"{host}:{port}"), (host, port))

    @given(st.text(max_size=80))
    def test_arbitrary_text(self, text: str) -> None:
        """
        Arbitrary text either parses or raises ``InvalidAddress``, nothing
        else.
        """
        try:
            parse_onion_address(text)
        except InvalidAddress:
            pass


class OnionKeyTests(SynchronousTestCase):
    """
    Onion service keys: what tor is given, and how they are kept.
    """

    @given(st.binary(min_size=32, max_size=32))
    def test_expanded_key_matches_public_key(self, seed: bytes) -> None:
        """
        The expanded secret key given to tor holds the scalar of the seed's
        public key, so the address tor publishes is :func:`onion_host`.
        """
        expanded = expanded_secret_key(seed)
        public = bytes(SigningKey(seed).verify_key)
        self.assertEqual(crypto_scalarmult_ed25519_base_noclamp(expanded[:32]), public)
        self.assertEqual(onion_host(seed), encode_onion(public) + ".onion")
        self.assertTrue(tor_private_key(seed).startswith("ED25519-V3:"))

    def test_seed_kept(self) -> None:
        """
        The seed is created once, readable by its owner only, and read back
        unchanged.
        """
        path = FilePath(self.mktemp()).child("tor").child("onion-default.key")
        seed = load_or_create_seed(path)
        self.assertEqual(len(seed), 32)
        self.assertEqual(stat.S_IMODE(os.stat(path.path).st_mode), 0o600)
        self.assertEqual(load_or_create_seed(path), seed)

    def test_bad_key_file(self) -> None:
        """
        A key file of the wrong size is refused with a message naming it,
        not replaced.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"short")
        with self.assertRaises(TransportConfigError) as caught:
            load_or_create_seed(path)
        self.assertIn(path.path, str(caught.exception))
        self.assertEqual(path.getContent(), b"short")


class ListenDescriptionTests(SynchronousTestCase):
    """
    ``tor`` listening descriptions: ``PORT[:key=NAME]``.
    """

    def test_parse(self) -> None:
        """
        A port, optionally with a key name.
        """
        self.assertEqual(ListenDescription.parse("80"), ListenDescription(80, "default"))
        self.assertEqual(ListenDescription.parse("7655:key=chat"), ListenDescription(7655, "chat"))

    def test_bad(self) -> None:
        """
        Port 0, bad ports and unknown or malformed parameters are refused.
        """
        for bad in ["", "0", "-1", "70000", "80:nokey", "80:port=1", "80:key=a/b", "80:key="]:
            with self.assertRaises(InvalidAddress, msg=bad):
                ListenDescription.parse(bad)


class SocksErrorTests(SynchronousTestCase):
    """
    What a failed SOCKS connect through tor becomes.
    """

    def test_mapping(self) -> None:
        """
        Refused, unreachable and onion-not-found replies are
        ``OnionServiceUnreachable`` (a ``ConnectionRefusedError``); the
        TTL and introduction timeouts are ``TimeoutError``; others a plain
        ``ConnectError``; all of them ``TransportError``\\ s.
        """
        from twisted.internet.error import ConnectError
        from twisted.internet.error import TimeoutError as ConnectTimeout
        from txtorcon.socks import SocksError

        for code in (0x04, 0x05, 0xF0, 0xF2):
            error = _connect_failure(SocksError(code=code), "x.onion", 1)
            self.assertIsInstance(error, ConnectionRefusedError)
            assert isinstance(error, OnionServiceUnreachable)
            self.assertEqual(error.service_found, code == 0x05)
        for code in (0x06, 0xF7):
            self.assertIsInstance(
                _connect_failure(SocksError(code=code), "x.onion", 1), ConnectTimeout
            )
        for code in (0x01, 0xF3, 0x77):
            error = _connect_failure(SocksError(code=code), "x.onion", 1)
            self.assertIsInstance(error, ConnectError)
            self.assertNotIsInstance(error, ConnectionRefusedError)
            self.assertIsInstance(error, TransportError)
        socks_port_refused = _connect_failure(ConnectionRefusedError(), "x.onion", 1)
        self.assertNotIsInstance(socks_port_refused, ConnectionRefusedError)
        self.assertIn("SOCKS port", str(socks_port_refused))


class SocksListenerTests(SynchronousTestCase):
    """
    Tor's SOCKS port, from its ``net/listeners/socks``.
    """

    def test_listeners(self) -> None:
        """
        The first listener is used: IPv4, IPv6 or a UNIX socket; none, and
        tor is asked to add one.
        """
        first = _socks_endpoint(Clock(), '"127.0.0.1:40123" "unix:/run/tor/socks"')
        assert isinstance(first, TCP4ClientEndpoint)
        self.assertEqual((first._host, first._port), ("127.0.0.1", 40123))
        ipv6 = _socks_endpoint(Clock(), '"[::1]:9050"')
        assert isinstance(ipv6, TCP6ClientEndpoint)
        self.assertEqual((ipv6._host, ipv6._port), ("::1", 9050))
        unix = _socks_endpoint(Clock(), '"unix:/run/tor/socks"')
        assert isinstance(unix, UNIXClientEndpoint)
        self.assertEqual(unix._path, "/run/tor/socks")
        self.assertIsNone(_socks_endpoint(Clock(), ""))


class AddressingFactoryTests(SynchronousTestCase):
    """
    The factory that names tor connections by onion and tor-client
    addresses.
    """

    def test_refused_connection(self) -> None:
        """
        When the wrapped factory refuses a connection (the node's admission
        control at its total limits returns ``None``), no protocol is built,
        so the port closes the socket, rather than a wrapper around nothing
        raising for every connection.
        """

        class Refusing(Factory):
            def buildProtocol(self, addr: Any) -> None:
                self.seen = addr

        refusing = Refusing()
        factory = _AddressingFactory(refusing, TorClientAddress(), TorClientAddress())
        self.assertIsNone(factory.buildProtocol(None))
        self.assertIsInstance(refusing.seen, TorClientAddress)

    def test_accepted_connection(self) -> None:
        """
        An accepted connection is named by the addresses the factory was
        given, and the wrapped protocol is kept as ``inner``.
        """
        host, peer = OnionAddress(_TORPROJECT, 80), TorClientAddress()
        factory = _AddressingFactory(Factory.forProtocol(Protocol), host, peer)
        wrapper = factory.buildProtocol(None)
        assert wrapper is not None
        self.assertIs(factory.inner, wrapper.wrappedProtocol)
        self.assertEqual((wrapper.getHost(), wrapper.getPeer()), (host, peer))


class TorPluginTests(SynchronousTestCase):
    """
    The ``tor`` plugin and its options.
    """

    def _make(self, data_dir: bool = True, **options: Any) -> TorTransport:
        context = TransportContext(
            Clock(), FilePath(self.mktemp()) if data_dir else None, options
        )
        return TorTransportPlugin().make_transport(context)

    def test_discovered(self) -> None:
        """
        ``getPlugins`` finds the ``tor`` plugin, which provides
        ``ITransportPlugin``.
        """
        found = {p.name: p for p in getPlugins(ITransportPlugin)}
        self.assertIsInstance(found["tor"], TorTransportPlugin)
        self.assertTrue(verifyObject(ITransportPlugin, found["tor"]))

    def test_make_transport(self) -> None:
        """
        Launching or attaching, the plugin makes a ``TorTransport``, an
        ``ITransport`` and an ``IService``; nothing happens before it is
        used.
        """
        for transport in [self._make(), self._make(control="tcp:127.0.0.1:9051")]:
            self.assertTrue(verifyObject(ITransport, transport))
            self.assertTrue(IService.providedBy(transport))
            self.assertEqual(transport.published_addresses(), [])

    def test_bad_options(self) -> None:
        """
        Malformed or reserved tor options, tor options with a control
        endpoint, a bad endpoint, a password without an endpoint, a launched
        tor without a data directory, and a bad timeout or connect timeout
        are refused.
        """
        for data_dir, options in [
            (True, {"torrc": ["NoValue"]}),
            (True, {"torrc": ["Bad-Key 1"]}),
            (True, {"torrc": ["SocksPort 1\nControlPort 2"]}),
            (True, {"torrc": ["DataDirectory /tmp"]}),
            (True, {"torrc": ["controlport 9999"]}),
            (True, {"control": "tcp:127.0.0.1:9051", "torrc": ["TestingTorNetwork 1"]}),
            (True, {"control": "tcp:127.0.0.1:9051", "tor_binary": "/usr/sbin/tor"}),
            (True, {"control": "nonsense:1"}),
            (True, {"control_password": "x"}),
            (False, {}),
            (True, {"timeout": 0}),
            (True, {"connect_timeout": 0}),
            (True, {"connect_timeout": "10"}),
        ]:
            with self.assertRaises(TransportConfigError, msg=repr(options)):
                self._make(data_dir, **options)

    def test_onion_only_control(self) -> None:
        """
        In onion-only mode, the control endpoint must be a UNIX socket or a
        loopback IP address: not a host name, nor an address elsewhere.
        """
        for good in ["tcp:127.0.0.1:9051", "tcp:127.5.6.7:9051", "unix:/run/tor/control"]:
            self._make(control=good, onion_only=True)
        for bad in ["tcp:192.0.2.1:9051", "tcp:localhost:9051", "tcp:tor.example:9051"]:
            with self.assertRaises(TransportConfigError, msg=bad):
                self._make(control=bad, onion_only=True)

    def test_launch_torrc(self) -> None:
        """
        A launched tor keeps its data below the node's, listens on 127.0.0.1
        only, caps its sockets' buffers (what it reads ahead of a circuit
        that cannot send, see ``benchmarks/tor_reads.py``), and gets the
        extra lines last.
        """
        tor_dir = FilePath("/data/tor")
        lines = launch_torrc(tor_dir, ["TestingTorNetwork 1"])
        self.assertIn("DataDirectory /data/tor/data", lines)
        self.assertIn("ControlPort 127.0.0.1:auto", lines)
        self.assertIn("SocksPort 127.0.0.1:auto ExtendedErrors", lines)
        self.assertIn("ConstrainedSockets 1", lines)
        self.assertIn("ConstrainedSockSize 65536", lines)
        self.assertEqual(lines[-1], "TestingTorNetwork 1")


class TapTorOptionsTests(SynchronousTestCase):
    """
    ``twistd dspring``'s tor options.
    """

    def _parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), *argv])
        return options

    def test_onion_only(self) -> None:
        """
        ``--onion-only`` listens on an onion service by default and builds
        no ``tcp`` transport, only ``tor``.
        """
        options = self._parse("--onion-only", "--tor-control", "tcp:127.0.0.1:9051")
        self.assertEqual(options["listen"], ["tor:7655"])
        transports = build_transports(options, Clock())
        self.assertEqual(sorted(transports), ["tor"])

    def test_onion_only_refuses_tcp(self) -> None:
        """
        ``--onion-only`` with a ``tcp`` listener or ``--advertise`` is a
        usage error.
        """
        for extra in (["--listen", "tcp:7000"], ["--advertise", "example.org"]):
            with self.assertRaises(usage.UsageError, msg=extra):
                self._parse("--onion-only", *extra)

    def test_tor_options(self) -> None:
        """
        ``--tor-option`` is repeatable and reaches the tor transport, which
        is built next to ``tcp``.
        """
        options = self._parse(
            "--tor-option", "TestingTorNetwork 1", "--tor-option", "ClientUseIPv6 0",
            "--listen", "tor:80",
        )
        self.assertEqual(options["tor-option"], ["TestingTorNetwork 1", "ClientUseIPv6 0"])
        self.assertEqual(sorted(build_transports(options, Clock())), ["tcp", "tor"])

    def test_password_file(self) -> None:
        """
        The control password is read from ``--tor-control-password-file``.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"s3cret\n")
        options = self._parse(
            "--tor-control", "tcp:127.0.0.1:9051", "--tor-control-password-file", path.path
        )
        from digitalspring.tap import _transport_options

        tor = _transport_options("tor", options)
        self.assertEqual(tor["control_password"], "s3cret")
        self.assertEqual(tor["control"], "tcp:127.0.0.1:9051")


class InterfaceTests(SynchronousTestCase):
    """
    The tor controls and onion services provide our interfaces.
    """

    def test_verify(self) -> None:
        """
        ``TxtorconControl`` and ``FakeTorControl`` provide ``ITorControl``;
        the fake's onion service provides ``IOnionService``.
        """
        self.assertTrue(verifyObject(ITorControl, TxtorconControl(Clock(), object(), None)))
        fake = FakeTorControl(Clock(), FakeOnionNetwork())
        self.assertTrue(verifyObject(ITorControl, fake))
        service = self.successResultOf(fake.publish_onion(80, 1, bytes(32)))
        self.assertIsInstance(service, FakeOnionService)
        self.assertTrue(verifyObject(IOnionService, service))


class FakeTorControlContractTests(TorControlContractMixin, TestCase):
    """
    The fake tor control keeps the contract the real one keeps on the
    private network (``tests.test_tor_network``).
    """

    def setUp(self) -> None:
        self.reactor = _reactor()
        self.network = FakeOnionNetwork()

    async def make_control(self) -> ITorControl:
        control = FakeTorControl(self.reactor, self.network)
        self.addCleanup(control.close)
        return control


class FakeTorConformanceTests(TransportConformanceMixin, TestCase):
    """
    The ``tor`` transport over the fake tor control, on the real reactor.
    """

    listen_description = "80"

    def setUp(self) -> None:
        self.network = FakeOnionNetwork()

    @property
    def clock(self) -> IReactorTime:
        return _reactor()  # type: ignore[no-any-return]

    def make_transport(self) -> ITransport:
        control = FakeTorControl(_reactor(), self.network)
        transport = TorTransport(_reactor(), lambda: succeed(control), retry_delay=0.01)
        self.addCleanup(transport.close)
        return transport

    def run_scenario(self, scenario: Deferred[None]) -> Deferred[None]:
        return scenario


class TorTransportTests(TestCase):
    """
    The ``tor`` transport's own behaviour, over the fake tor control.
    """

    def setUp(self) -> None:
        self.network = FakeOnionNetwork()
        self.reactor = _reactor()
        self.reached = 0

    def _transport(self, key_dir: FilePath[str] | None = None) -> TorTransport:
        control = FakeTorControl(self.reactor, self.network)

        def reach() -> Deferred[ITorControl]:
            self.reached += 1
            return succeed(control)

        transport = TorTransport(self.reactor, reach, key_dir, retry_delay=0.01)
        self.addCleanup(transport.close)
        return transport

    async def test_address_kept_across_restarts(self) -> None:
        """
        With a key directory, a transport made again (a restarted node)
        publishes the same onion address; another key name gives another.
        """
        key_dir = FilePath(self.mktemp())
        first = self._transport(key_dir)
        await first.listen("80", Factory.forProtocol(Protocol))
        [address] = first.published_addresses()
        await first.close()
        self.assertEqual(self.network.services, {})
        again = self._transport(key_dir)
        await again.listen("80", Factory.forProtocol(Protocol))
        self.assertEqual(again.published_addresses(), [address])
        await again.listen("81:key=other", Factory.forProtocol(Protocol))
        self.assertNotEqual(again.published_addresses()[1].split(":")[0], address.split(":")[0])

    async def test_key_in_use(self) -> None:
        """
        Two listeners cannot share one key.
        """
        transport = self._transport(FilePath(self.mktemp()))
        await transport.listen("80", Factory.forProtocol(Protocol))
        with self.assertRaises(CannotListenError):
            await transport.listen("81", Factory.forProtocol(Protocol))

    async def test_bad_address_not_dialled(self) -> None:
        """
        Malformed, bad-checksum and v2 addresses fail with
        ``InvalidAddress`` before tor is even reached.
        """
        transport = self._transport()
        typo = ("a" if _TORPROJECT[0] != "a" else "b") + _TORPROJECT[1:]
        for bad in [f"{typo}:80", "expyuzz4wqqyqhjn.onion:80", "example.org:80", "x"]:
            with self.assertRaises(InvalidAddress, msg=bad):
                await transport.connect(bad, Factory.forProtocol(Protocol))
        self.assertEqual(self.network.dialled, [])
        self.assertEqual(self.reached, 0)

    async def test_addresses(self) -> None:
        """
        The client's peer and the server's host are the onion address; the
        server's peer and the client's host are the anonymous tor client.
        """
        server = self._transport()
        accepted: list[Protocol] = []

        class Accept(Protocol):
            def connectionMade(self) -> None:
                accepted.append(self)

        port = await server.listen("80", Factory.forProtocol(Accept))
        self.assertTrue(verifyObject(IListeningPort, port))
        [address] = server.published_addresses()
        client = await self._transport().connect(address, Factory.forProtocol(Protocol))
        assert client.transport is not None  # type: ignore[attr-defined]
        host, onion_port = parse_onion_address(address)
        self.assertEqual(client.transport.getPeer(), OnionAddress(host, onion_port))  # type: ignore[attr-defined]
        self.assertEqual(client.transport.getHost(), TorClientAddress())  # type: ignore[attr-defined]
        self.assertEqual(port.getHost(), OnionAddress(host, onion_port))
        client.transport.loseConnection()  # type: ignore[attr-defined]
        while not accepted:
            await Deferred.fromCoroutine(_sleep(self.reactor, 0.01))
        self.assertEqual(accepted[0].transport.getPeer(), TorClientAddress())  # type: ignore[union-attr]
        accepted[0].transport.loseConnection()  # type: ignore[union-attr]

    async def test_offline_service(self) -> None:
        """
        Dialling an onion service that is not published fails with
        ``OnionServiceUnreachable``, a ``ConnectionRefusedError``, after
        two more tries.
        """
        transport = self._transport()
        with self.assertRaises(OnionServiceUnreachable):
            await transport.connect(f"{_TORPROJECT}:80", Factory.forProtocol(Protocol))
        # Tried again twice: the descriptor might have been on its way.
        self.assertEqual(self.network.dialled, [(_TORPROJECT, 80)] * 3)

    async def test_closed(self) -> None:
        """
        A closed transport refuses to listen or connect, and its services
        are gone.
        """
        transport = self._transport()
        await transport.listen("80", Factory.forProtocol(Protocol))
        await transport.close()
        self.assertEqual(transport.published_addresses(), [])
        self.assertEqual(self.network.services, {})
        with self.assertRaises(TransportError):
            await transport.listen("80", Factory.forProtocol(Protocol))


class ConnectTimeoutTests(SynchronousTestCase):
    """
    ``connect`` gives up after its own timeout, on a simulated clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeOnionNetwork()
        self.host = onion_host(bytes(32))

    def _transport(self, **kwargs: Any) -> TorTransport:
        control = FakeTorControl(self.clock, self.network)
        return TorTransport(self.clock, lambda: succeed(control), **kwargs)

    def _assert_timed_out(self, connecting: Deferred[Any], seconds: float) -> None:
        self.assertNoResult(connecting)
        self.clock.advance(seconds - 0.1)
        self.assertNoResult(connecting)
        self.clock.advance(0.1)
        error = self.failureResultOf(connecting, TorStreamTimeout).value
        self.assertIsInstance(error, ConnectTimeout)
        self.assertIsInstance(error, TransportError)
        self.assertIn(f"{self.host}:80", str(error))

    def test_default(self) -> None:
        """
        A dial that tor keeps trying fails with ``TorStreamTimeout`` (a
        ``TimeoutError``) after 60 seconds, not tor's two minutes.
        """
        self.network.unresponsive.add(self.host)
        connecting = self._transport().connect(f"{self.host}:80", Factory.forProtocol(Protocol))
        self._assert_timed_out(connecting, 60)

    def test_covers_retries(self) -> None:
        """
        The timeout bounds the whole attempt, waits between retries
        included.
        """
        transport = self._transport(connect_timeout=5, retry_delay=4)
        connecting = transport.connect(f"{self.host}:80", Factory.forProtocol(Protocol))
        self.clock.advance(0)
        self.assertEqual(len(self.network.dialled), 1)
        self._assert_timed_out(connecting, 5)
        self.assertEqual(len(self.network.dialled), 2)

    def test_plugin_option(self) -> None:
        """
        The plugin's ``connect_timeout`` option sets it, and it also bounds
        the wait for tor: here a control port that never answers.
        """
        reactor = MemoryReactorClock()
        self.clock = reactor  # type: ignore[assignment]
        transport = TorTransportPlugin().make_transport(TransportContext(
            reactor, None, {"control": "tcp:127.0.0.1:9051", "connect_timeout": 5}
        ))
        connecting = transport.connect(f"{self.host}:80", Factory.forProtocol(Protocol))
        self._assert_timed_out(connecting, 5)
        self.assertEqual(self.network.dialled, [])


async def _sleep(reactor: Any, seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


# -- Publishing: the ADD_ONION command, descriptor uploads, defences ----------


class _RecordingFactory(Factory):
    """
    A factory that remembers the address each ``buildProtocol`` was given.
    """

    protocol = Protocol

    def __init__(self) -> None:
        self.addresses: list[Any] = []

    def buildProtocol(self, addr: Any) -> Protocol | None:
        self.addresses.append(addr)
        return super().buildProtocol(addr)


class OnionSourceAddressTests(TestCase):
    """
    What limits per source address see of onion connections.
    """

    async def test_inbound_onion_peer_is_tor_client(self) -> None:
        """
        The factory behind an onion listener is given a
        ``TorClientAddress`` (not tor's 127.0.0.1) for each inbound
        connection, and the connection's ``getPeer()`` is one too: limits
        per source address can tell onion connections apart, which all
        come from tor on one loopback address.
        """
        reactor = _reactor()
        network = FakeOnionNetwork()
        transports = [
            TorTransport(reactor, lambda: succeed(FakeTorControl(reactor, network)))
            for _ in range(2)
        ]
        for transport in transports:
            self.addCleanup(transport.close)
        factory = _RecordingFactory()
        await transports[0].listen("80", factory)
        [address] = transports[0].published_addresses()
        client = await transports[1].connect(address, Factory.forProtocol(Protocol))
        while not factory.addresses:
            await deferLater(reactor, 0.01)
        self.assertEqual(factory.addresses, [TorClientAddress()])
        assert client.transport is not None
        client.transport.loseConnection()


class AddOnionCommandTests(SynchronousTestCase):
    """
    The ``ADD_ONION`` command carries the defences.
    """

    def test_defences(self) -> None:
        """
        By default the command turns on tor's proof of work with our queue
        rate and burst and closes a client's circuit past 8 streams; each
        can be left out.
        """
        command = add_onion_command("ED25519-V3:KEY", 80, 4321, DEFAULT_DEFENCES)
        self.assertEqual(
            command,
            "ADD_ONION ED25519-V3:KEY Flags=MaxStreamsCloseCircuit MaxStreams=8 "
            "PoWDefensesEnabled=1 PoWQueueRate=25 PoWQueueBurst=250 "
            "Port=80,127.0.0.1:4321",
        )
        bare = add_onion_command("ED25519-V3:KEY", 80, 4321, OnionDefences(pow=False,
                                                                           max_streams=0))
        self.assertEqual(bare, "ADD_ONION ED25519-V3:KEY Port=80,127.0.0.1:4321")

    def test_service_id(self) -> None:
        """
        The service id is read from tor's reply, and nothing from a reply
        without one.
        """
        host = "a" * 56
        self.assertEqual(service_id(f"ServiceID={host}\nOK"), host)
        self.assertIsNone(service_id("OK"))


_HOST = "b" * 56
_CURRENT, _NEXT = "CurrentBlindedKey", "NextBlindedKey"


def _upload(hsdir: str, descriptor: str, host: str = _HOST) -> str:
    return f"UPLOAD {host} UNKNOWN ${hsdir}~relay {descriptor} HSDIR_INDEX=00"


def _uploaded(hsdir: str, host: str = _HOST) -> str:
    return f"UPLOADED {host} UNKNOWN ${hsdir}~relay"


class DescriptorUploadsTests(SynchronousTestCase):
    """
    A published service counts as reachable only once clients can fetch
    the descriptor they look up.
    """

    def test_next_descriptor_first(self) -> None:
        """
        The next time period's descriptor stored first (as happens when
        its introduction circuits open first) is not enough: a client
        looks up the current one.  Both stored, with an upload still in
        flight, is stored but not yet reachable; once it lands, reachable.
        (txtorcon's ``await_all_uploads=False`` fired at the first upload.)
        """
        uploads = DescriptorUploads(_HOST)
        for hsdir in ("A", "B"):
            uploads.event(_upload(hsdir, _NEXT))
        uploads.event(_uploaded("A"))
        self.assertFalse(uploads.stored)
        for hsdir in ("C", "D"):
            uploads.event(_upload(hsdir, _CURRENT))
        uploads.event(_uploaded("B"))
        self.assertFalse(uploads.stored)
        uploads.event(_uploaded("C"))
        self.assertTrue(uploads.stored)
        self.assertFalse(uploads.reachable)
        uploads.event(_uploaded("D"))
        self.assertTrue(uploads.reachable)

    def test_in_flight(self) -> None:
        """
        An upload still in flight keeps the service unreachable; a failed
        upload counts as landed.
        """
        uploads = DescriptorUploads(_HOST)
        for hsdir, descriptor in (("A", _CURRENT), ("B", _NEXT), ("C", _CURRENT)):
            uploads.event(_upload(hsdir, descriptor))
        uploads.event(_uploaded("A"))
        uploads.event(_uploaded("B"))
        self.assertTrue(uploads.stored)
        self.assertFalse(uploads.reachable)
        self.assertEqual(list(uploads.in_flight()), ["C"])
        uploads.event(f"FAILED {_HOST} UNKNOWN $C~relay REASON=UPLOAD_REJECTED")
        self.assertTrue(uploads.reachable)

    def test_other_services_ignored(self) -> None:
        """
        Uploads of another service to the same HSDirs, and fetches, do not
        count (txtorcon matched ``UPLOADED`` events by HSDir alone).
        """
        uploads = DescriptorUploads(_HOST)
        uploads.event(_upload("A", _CURRENT))
        uploads.event(_upload("A", _NEXT))
        other = "c" * 56
        uploads.event(_upload("A", "Other", host=other))
        uploads.event(_uploaded("A", host=other))
        uploads.event(f"RECEIVED {_HOST} NO_AUTH $A~relay {_CURRENT}")
        self.assertFalse(uploads.stored)


class _FakeControlProtocol:
    """
    Tor's control protocol as :class:`TxtorconControl` uses it to publish:
    it records commands, answers ``ADD_ONION`` as ``tor`` would (or refuses
    proof of work, as a tor older than 0.4.8 does) and lets a test send
    ``HS_DESC`` events.
    """

    def __init__(self, knows_pow: bool = True) -> None:
        self.commands: list[str] = []
        self.listeners: list[Any] = []
        self._knows_pow = knows_pow

    def add_event_listener(self, event: str, callback: Any) -> Deferred[None]:
        assert event == "HS_DESC"
        self.listeners.append(callback)
        return succeed(None)

    def remove_event_listener(self, event: str, callback: Any) -> Deferred[None]:
        self.listeners.remove(callback)
        return succeed(None)

    def queue_command(self, command: str) -> Deferred[str]:
        self.commands.append(command)
        if command.startswith("ADD_ONION"):
            if "PoW" in command and not self._knows_pow:
                return Deferred.fromCoroutine(_raise(TorProtocolError(
                    512, 'Bad arguments to ADD_ONION: Unrecognized keyword argument '
                    '"PoWDefensesEnabled"')))
            key = command.split()[1]
            seed = self.seeds[key]
            return succeed(f"ServiceID={onion_host(seed)[:-6]}\nOK")
        return succeed("OK")

    seeds: dict[str, bytes] = {}

    def hs_desc(self, text: str) -> None:
        for listener in list(self.listeners):
            listener(text)


async def _raise(error: Exception) -> Any:
    raise error


class TxtorconPublishTests(SynchronousTestCase):
    """
    :class:`TxtorconControl` publishes with our defences and fires once
    clients can find the service.
    """

    def _publish(self, protocol: _FakeControlProtocol) -> tuple[Clock, Deferred[Any], str]:
        clock = Clock()
        tor = type("Tor", (), {"protocol": protocol})()
        control = TxtorconControl(clock, tor, None)
        seed = bytes(range(32))
        protocol.seeds = {tor_private_key(seed): seed}
        publishing = control.publish_onion(80, 4321, seed)
        return clock, publishing, onion_host(seed)[:-6]

    def test_waits_for_both_descriptors(self) -> None:
        """
        ``ADD_ONION`` carries the proof-of-work and stream limits; the
        publish does not fire on the first upload (the next period's
        descriptor), only once the current one is stored too and nothing
        is in flight; then the service has the defences tor accepted.
        """
        protocol = _FakeControlProtocol()
        clock, publishing, host = self._publish(protocol)
        [command] = protocol.commands
        self.assertIn("PoWDefensesEnabled=1 PoWQueueRate=25 PoWQueueBurst=250", command)
        self.assertIn("Flags=MaxStreamsCloseCircuit MaxStreams=8", command)
        protocol.hs_desc(_upload("A", _NEXT, host))
        protocol.hs_desc(_uploaded("A", host))
        clock.advance(1)
        self.assertNoResult(publishing)
        protocol.hs_desc(_upload("B", _CURRENT, host))
        protocol.hs_desc(_upload("C", _CURRENT, host))
        protocol.hs_desc(_uploaded("B", host))
        clock.advance(1)
        self.assertNoResult(publishing)
        protocol.hs_desc(_uploaded("C", host))
        clock.advance(1)
        service = self.successResultOf(publishing)
        self.assertEqual(service.hostname, host + ".onion")
        self.assertEqual(service.defences, DEFAULT_DEFENCES)
        self.assertEqual(protocol.listeners, [])

    def test_settles(self) -> None:
        """
        An upload still in flight long after both descriptors are stored
        (an HSDir of Tor's network that does not answer) is not waited for.
        """
        protocol = _FakeControlProtocol()
        clock, publishing, host = self._publish(protocol)
        for hsdir, descriptor in (("A", _CURRENT), ("B", _NEXT), ("C", _NEXT)):
            protocol.hs_desc(_upload(hsdir, descriptor, host))
        protocol.hs_desc(_uploaded("A", host))
        protocol.hs_desc(_uploaded("B", host))
        clock.pump([1.0] * 5)
        self.assertNoResult(publishing)
        clock.pump([1.0] * 7)
        self.successResultOf(publishing)

    def test_gives_up_when_no_upload_lands(self) -> None:
        """
        When every upload fails (no HSDir takes the descriptors), the
        publish does not wait forever: after ``PUBLISH_PATIENCE`` seconds
        it fails, naming the HSDirs and their reasons, and the service is
        taken off tor again.
        """
        protocol = _FakeControlProtocol()
        clock, publishing, host = self._publish(protocol)
        for hsdir, descriptor in (("A", _CURRENT), ("B", _NEXT)):
            protocol.hs_desc(_upload(hsdir, descriptor, host))
            protocol.hs_desc(f"FAILED {host} UNKNOWN ${hsdir}~relay REASON=UPLOAD_REJECTED")
        clock.pump([1.0] * int(PUBLISH_PATIENCE - 1))
        self.assertNoResult(publishing)
        clock.pump([0.05] * 60)
        error = self.failureResultOf(publishing, CannotListenError).value
        self.assertIn("A (UPLOAD_REJECTED), B (UPLOAD_REJECTED)", str(error))
        self.assertEqual(protocol.commands[-1], f"DEL_ONION {host}")
        self.assertEqual(protocol.listeners, [])

    def test_tor_without_pow(self) -> None:
        """
        A tor that does not know proof of work is asked again without it
        (the stream limit stays), and the service says so.
        """
        protocol = _FakeControlProtocol(knows_pow=False)
        clock, publishing, host = self._publish(protocol)
        first, second = protocol.commands
        self.assertIn("PoWDefensesEnabled=1", first)
        self.assertNotIn("PoW", second)
        self.assertIn("MaxStreams=8", second)
        for hsdir, descriptor in (("A", _CURRENT), ("B", _NEXT)):
            protocol.hs_desc(_upload(hsdir, descriptor, host))
            protocol.hs_desc(_uploaded(hsdir, host))
        clock.advance(1)
        service = self.successResultOf(publishing)
        self.assertFalse(service.defences.pow)


class StuckRendezvousTests(SynchronousTestCase):
    """
    A dial whose introduction was acknowledged by a service that never
    joins the rendezvous (tor used the cached descriptor of a restarted
    service) gets its rendezvous circuit closed, rather than waiting for
    tor's two-minute ``SocksTimeout``.
    """

    _STATUS = "\n".join([
        f"7 BUILT $A,$B PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_ESTABLISHED_WAITING "
        f"REND_QUERY={_HOST} TIME_CREATED=x",
        f"8 BUILT $A,$B PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED REND_QUERY={_HOST}",
        "9 BUILT $A,$B PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_ESTABLISHED_WAITING "
        f"REND_QUERY={'c' * 56}",
        "10 BUILT $A,$B PURPOSE=GENERAL",
    ])

    def test_parse(self) -> None:
        """
        Only acknowledged-and-waiting rendezvous circuits to that host are
        stuck.
        """
        self.assertEqual(stuck_rendezvous(self._STATUS, _HOST), ["7"])
        self.assertEqual(stuck_rendezvous("", _HOST), [])

    def test_joined_before_the_dial(self) -> None:
        """
        A rendezvous circuit joined before the dial began (tor attached the
        stream to its circuit with the service's previous launch, as seen
        in test_launch_publish_restart) is stuck too; one joined since, or
        with no readable creation time, is not.
        """
        status = "\n".join([
            f"3 BUILT $A,$B PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED REND_QUERY={_HOST} "
            "TIME_CREATED=2026-12-02T02:38:04.188395",
            f"4 BUILT $A,$B PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED REND_QUERY={_HOST} "
            "TIME_CREATED=2026-12-02T02:38:11.000001",
            f"5 BUILT $A,$B PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED REND_QUERY={_HOST} "
            "TIME_CREATED=yesterday",
            "6 BUILT $A,$B PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED "
            f"REND_QUERY={'c' * 56} TIME_CREATED=2026-12-02T02:38:04.188395",
        ])
        dialled_at = datetime(2026, 12, 2, 2, 38, 10)
        self.assertEqual(stuck_rendezvous(status, _HOST, dialled_at), ["3"])
        self.assertEqual(stuck_rendezvous(status, _HOST), [])

    def test_stale_rendezvous_dial_can_be_retried(self) -> None:
        """
        A dial whose stream dies with the stale circuit the watch closed
        (after waiting :data:`REFETCH_PATIENCE` for a descriptor fetch that
        never ends) fails with ``OnionServiceUnreachable``, which the
        transport dials again, not with tor's SOCKS error.
        """
        status = (
            f"3 BUILT $A,$B PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED REND_QUERY={_HOST} "
            "TIME_CREATED=2026-12-02T02:38:04.188395"
        )
        clock, protocol, stream, dialling = _dial_watched(
            status, datetime(2026, 12, 2, 2, 38, 10, tzinfo=UTC).timestamp()
        )
        clock.advance(30)
        self.assertEqual(protocol.commands, ["GETINFO circuit-status", f"HSFETCH {_HOST}"])
        clock.advance(REFETCH_PATIENCE)
        self.assertEqual(protocol.commands[2:], ["CLOSECIRCUIT 3"])
        stream.errback(SocksError(code=0x01))
        failure = self.failureResultOf(dialling, OnionServiceUnreachable)
        self.assertIn("stale", str(failure.value))
        self.assertFalse(failure.value.service_found)

    def test_closed_while_dialling(self) -> None:
        """
        Every 30 s of a dial that has not connected, the service's
        descriptor is fetched again and its stuck rendezvous circuits are
        closed; once the dial ends, nothing more is checked.
        """
        clock, protocol, stream, dialling = _dial_watched(self._STATUS)
        clock.advance(29)
        self.assertEqual(protocol.commands, [])
        clock.advance(1)
        self.assertEqual(protocol.commands, ["GETINFO circuit-status", f"HSFETCH {_HOST}"])
        # Closed once tor has the current descriptor, not before.
        protocol.hs_desc(f"RECEIVED {'c' * 56} NO_AUTH $B")
        self.assertEqual(len(protocol.commands), 2)
        protocol.hs_desc(f"RECEIVED {_HOST} NO_AUTH $A")
        self.assertEqual(protocol.commands[2:], ["CLOSECIRCUIT 7"])
        self.assertEqual(protocol.listeners, [])
        stream.errback(ConnectionRefusedError())
        self.failureResultOf(dialling)
        clock.advance(60)
        self.assertEqual(len(protocol.commands), 3)


def _dial_watched(
    status: str, now: float = 0.0
) -> tuple[Clock, _FakeControlProtocol, Deferred[Any], Deferred[Any]]:
    """
    A dial of ``_HOST`` through a control whose tor reports ``status`` as
    its circuits, at ``now`` on the clock: the clock, the control
    protocol (recording commands), the SOCKS stream (never answered until
    the test says) and the dial.
    """
    clock = Clock()
    clock.advance(now)
    protocol = _FakeControlProtocol()

    def get_info(key: str) -> Deferred[dict[str, str]]:
        protocol.commands.append(f"GETINFO {key}")
        return succeed({key: status})

    protocol.get_info = get_info  # type: ignore[attr-defined]
    stream: Deferred[Any] = Deferred()
    endpoint = type("Endpoint", (), {"connect": lambda self, factory: stream})()
    tor = type("Tor", (), {"protocol": protocol, "stream_via": lambda self, *a, **kw: endpoint})()
    control = TxtorconControl(clock, tor, None)
    dialling = control.onion_endpoint(_HOST + ".onion", 80).connect(Factory.forProtocol(Protocol))
    return clock, protocol, stream, dialling
