# -*- test-case-name: tests.test_tor -*-
"""
The ``tor`` transport: inbound through ephemeral v3 onion services, outbound
through tor's SOCKS port, with tor launched by the node or reached through a
control port.  See ``docs/tor.rst``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    clientFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from ._address import parse_port
from ._interfaces import IOnionService, ITorControl, ITransport, ITransportPlugin
from ._plugins import InvalidAddress, TransportConfigError, TransportContext, TransportError
from ._torbootstrap import BOOTSTRAP_WARNING, TorBootstrapWatch
from ._torcontrol import RESERVED_TORRC_KEYS, attach_tor, launch_tor
from ._torerrors import OnionServiceUnreachable, TorStreamTimeout
from ._torkey import load_or_create_seed, new_seed, onion_host, parse_onion_address

#: The name of the onion service key used when a listening description
#: names none.
DEFAULT_KEY = "default"

_KEY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_TORRC_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# -- Addresses -----------------------------------------------------------------


@implementer(IAddress)
@frozen
class OnionAddress:
    """
    A port of an onion service: what a tor connection's client sees as its
    peer, and its server as its host.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@implementer(IAddress)
@frozen
class TorClientAddress:
    """
    The other end of a connection to an onion service, as the service sees
    it: anonymous, so all such addresses are equal.  It is also what a
    client calls its own end, since nobody sees where it connects from.

    An inbound onion connection's factory gets it as ``buildProtocol``'s
    address, and its transport's ``getPeer()`` returns it: limits per
    source address exempt it (every onion client reaches us from tor on
    127.0.0.1), while tor itself limits streams per client
    (:class:`~._toronion.OnionDefences`).
    """

    def __str__(self) -> str:
        return "(tor client)"


class _AddressedProtocol(ProtocolWrapper):
    """
    A tor connection, whose ends are named by :class:`OnionAddress` and
    :class:`TorClientAddress` rather than the loopback addresses of the
    local sockets to and from tor.
    """

    def __init__(self, factory: _AddressingFactory, wrapped: IProtocol) -> None:
        super().__init__(factory, wrapped)
        self._host: IAddress = factory.host
        self._peer: IAddress = factory.peer

    def getHost(self) -> IAddress:
        return self._host

    def getPeer(self) -> IAddress:
        return self._peer


class _AddressingFactory(WrappingFactory[_AddressedProtocol]):
    protocol = _AddressedProtocol

    def __init__(self, wrapped: IProtocolFactory, host: IAddress, peer: IAddress) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.host = host
        self.peer = peer
        self.inner: IProtocol | None = None

    def buildProtocol(self, addr: Any) -> _AddressedProtocol | None:  # type: ignore[override]
        # The wrapped factory is told who connected as the connection
        # itself says: for an inbound onion connection a TorClientAddress,
        # not the 127.0.0.1 of tor's local socket, so that per-address
        # limits above leave onion connections alone (they all share tor's
        # address; tor limits them per client, see docs/tor.rst).
        inner = self.wrappedFactory.buildProtocol(self.peer)
        if inner is None:
            # Refused (the node is at its total limits): no protocol, so the
            # port closes the socket at once.
            return None
        self.inner = inner
        return self.protocol(self, inner)


# -- Listening -----------------------------------------------------------------


@frozen
class ListenDescription:
    """
    A ``tor`` listening description, ``PORT[:key=NAME]``: the onion
    service's (virtual) port and the name of its key in the data directory.
    """

    port: int
    key: str = DEFAULT_KEY

    @classmethod
    def parse(cls, description: str) -> ListenDescription:
        """
        :raises InvalidAddress: when it is malformed.
        """
        port_text, *params = description.split(":")
        key = DEFAULT_KEY
        for param in params:
            name, sep, value = param.partition("=")
            if name != "key" or not sep or not _KEY_NAME.match(value):
                raise InvalidAddress(
                    f"bad tor listening description {description!r}: expected PORT or "
                    "PORT:key=NAME (NAME: letters, digits, _ and -)"
                )
            key = value
        try:
            port = parse_port(port_text)
        except InvalidAddress as e:
            raise InvalidAddress(f"bad tor listening description {description!r}: {e}") from None
        return cls(port, key)


@implementer(IListeningPort)
class OnionListeningPort:
    """
    An onion service and the port on 127.0.0.1 where tor delivers its
    connections.  Stopping it removes the service from tor.
    """

    def __init__(
        self,
        transport: TorTransport,
        service: IOnionService,
        local: IListeningPort,
        address: OnionAddress,
        key: str | None,
    ) -> None:
        self._transport = transport
        self._service = service
        self._local = local
        self.address = address
        self.key = key

    def startListening(self) -> None:
        """
        Not supported: listen on the transport again instead.

        :raises TransportError: always.
        """
        raise TransportError("a stopped onion service is not restarted; listen again")

    def stopListening(self) -> Deferred[None]:
        """
        Remove the onion service from tor and stop listening locally; open
        connections stay.
        """
        self._transport._unpublished(self)

        async def stop() -> None:
            await self._service.remove()
            await maybeDeferred(self._local.stopListening)

        return Deferred.fromCoroutine(stop())

    def getHost(self) -> OnionAddress:
        """
        :returns: the onion service's :class:`OnionAddress`.
        """
        return self.address


# -- The transport -------------------------------------------------------------


@implementer(ITransport)
class TorTransport(Service):
    """
    The ``tor`` transport.

    Listening descriptions are ``PORT[:key=NAME]``: publish an onion service
    on ``PORT``, with the key ``NAME`` (default ``default``) kept in
    ``KEY_DIR/onion-NAME.key`` so its address survives restarts; without a
    key directory every listener gets a fresh key.  Addresses are
    ``ONION.onion:PORT`` (version 3 only).

    It is also a service: it starts reaching tor when started, and
    :meth:`close` (``stopService``) removes its onion services and lets go
    of tor.

    :param reactor: an ``IReactorTCP`` and ``IReactorTime``.
    :param reach_tor: makes the :class:`ITorControl` (launching or
        attaching to tor); called once, on first use.
    :param key_dir: where onion service keys are kept, or ``None``.
    :param retries: how many times to dial an onion service again when tor
        found no descriptor for it or could not introduce us.
    :param retry_delay: seconds between those attempts.
    :param bootstrap: what ``reach_tor`` follows tor's bootstrap with, for
        :meth:`bootstrap_status`; by default one nothing feeds.
    :param connect_timeout: seconds before :meth:`connect` gives up, with
        :class:`TorStreamTimeout` (a ``TimeoutError``), whatever it waits
        for: tor itself, the onion service, or the next attempt.  Tor's own
        timeouts can take two minutes.
    """

    name = "tor"
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        reach_tor: Callable[[], Deferred[ITorControl]],
        key_dir: FilePath[str] | None = None,
        *,
        retries: int = 2,
        retry_delay: float = 1.0,
        connect_timeout: float = 60.0,
        bootstrap: TorBootstrapWatch | None = None,
    ) -> None:
        self._reactor = reactor
        self.bootstrap = TorBootstrapWatch(reactor) if bootstrap is None else bootstrap
        self._connect_timeout = connect_timeout
        self._retries = retries
        self._retry_delay = retry_delay
        self._reach_tor = reach_tor
        self._key_dir = key_dir
        self._control: ITorControl | None = None
        self._reaching: list[Deferred[ITorControl]] | None = None
        self._ports: list[OnionListeningPort] = []
        self._closed = False

    # Reaching tor

    def _tor(self) -> Deferred[ITorControl]:
        """
        Our tor control, once tor is reached; the first call starts reaching
        it, and a failure lets the next call try again.
        """
        if self._closed:
            return Deferred.fromCoroutine(_raise(TransportError("the tor transport is closed")))
        if self._control is not None:
            return Deferred.fromCoroutine(_value(self._control))
        waiter: Deferred[ITorControl] = Deferred()
        if self._reaching is not None:
            self._reaching.append(waiter)
            return waiter
        self._reaching = [waiter]

        def reached(control: ITorControl) -> None:
            waiting, self._reaching = self._reaching or [], None
            if self._closed:
                control.close()
                for w in waiting:
                    w.errback(TransportError("the tor transport is closed"))
                return
            self._control = control
            for w in waiting:
                w.callback(control)

        def failed(failure: Failure) -> None:
            waiting, self._reaching = self._reaching or [], None
            for w in waiting:
                w.errback(failure)

        maybeDeferred(self._reach_tor).addCallbacks(reached, failed)
        return waiter

    def startService(self) -> None:
        """
        Start reaching tor now, so that it is ready when needed.
        """
        super().startService()  # type: ignore[no-untyped-call]

        def failed(failure: Failure) -> None:
            self.log.error("cannot use tor: {reason}", reason=failure.getErrorMessage())

        self._tor().addErrback(failed)

    def reached(self) -> Deferred[None]:
        """
        Fires once tor is reached (launched, or its control port
        connected), or fails with why not: what a node that was told to
        use tor waits for before it says it has started.
        """
        return self._tor().addCallback(lambda control: None)

    def bootstrap_status(self) -> dict[str, Any]:
        """
        How far tor has come, for ``dspring status``: see
        :meth:`TorBootstrapWatch.as_json`.
        """
        return self.bootstrap.as_json(reached=self._control is not None)

    def stopService(self) -> Deferred[None]:
        """
        :meth:`close` the transport.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        return self.close()

    def close(self) -> Deferred[None]:
        """
        Remove every onion service, stop their local listeners and let go
        of tor (stopping it if the transport launched it).

        :returns: a Deferred that fires when all that is done.
        """

        async def close() -> None:
            if self._closed:
                return
            self._closed = True
            for port in list(self._ports):
                await port.stopListening()
            if self._control is not None:
                control, self._control = self._control, None
                await control.close()

        return Deferred.fromCoroutine(close())

    # ITransport

    def listen(self, description: str, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        See :meth:`ITransport.listen`.
        """
        try:
            parsed = ListenDescription.parse(description)
        except InvalidAddress as e:
            return fail(e)
        return Deferred.fromCoroutine(self._listen(parsed, factory))

    async def _listen(
        self, parsed: ListenDescription, factory: IProtocolFactory
    ) -> IListeningPort:
        key: str | None = None
        if self._key_dir is None:
            seed = new_seed()
        else:
            key = parsed.key
            if any(port.key == key for port in self._ports):
                raise CannotListenError(  # type: ignore[no-untyped-call]
                    "onion", parsed.port, f"the onion key {key!r} is in use already"
                )
            seed = load_or_create_seed(self._key_dir.child(f"onion-{key}.key"))
        control = await self._tor()
        address = OnionAddress(onion_host(seed), parsed.port)
        wrapping = _AddressingFactory(factory, address, TorClientAddress())
        local: IListeningPort = self._reactor.listenTCP(0, wrapping, interface="127.0.0.1")
        local_port = local.getHost()
        assert isinstance(local_port, IPv4Address)
        began = self._reactor.seconds()
        try:
            service = await control.publish_onion(parsed.port, local_port.port, seed)
        except BaseException:
            await maybeDeferred(local.stopListening)
            raise
        port = OnionListeningPort(self, service, local, address, key)
        self._ports.append(port)
        self.log.info(
            "onion service {address} published in {seconds:.1f}s",
            address=str(address),
            seconds=self._reactor.seconds() - began,
        )
        return port

    def _unpublished(self, port: OnionListeningPort) -> None:
        if port in self._ports:
            self._ports.remove(port)

    def connect(self, address: str, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        See :meth:`ITransport.connect`.
        """
        try:
            host, port = parse_onion_address(address)
        except InvalidAddress as e:
            return fail(e)
        connecting = Deferred.fromCoroutine(self._connect(host, port, factory))
        timeout = self._connect_timeout

        def timed_out(result: Any, _: float) -> Any:
            if isinstance(result, Failure) and result.check(CancelledError):  # type: ignore[no-untyped-call]
                raise TorStreamTimeout(
                    f"no connection to {address} within {timeout:g} seconds"
                )
            return result

        return connecting.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out)

    async def _connect(self, host: str, port: int, factory: IProtocolFactory) -> IProtocol:
        control = await self._tor()
        attempt = 0
        while True:
            wrapping = _AddressingFactory(factory, TorClientAddress(), OnionAddress(host, port))
            try:
                await control.onion_endpoint(host, port).connect(wrapping)
            except OnionServiceUnreachable as e:
                # A descriptor published a moment ago may not have reached
                # the directory tor asked; tor asks another one next time.
                if e.service_found or attempt >= self._retries:
                    raise
                attempt += 1
                self.log.debug("{address} unreachable ({error}); trying again",
                               address=f"{host}:{port}", error=str(e))
                await deferLater(self._reactor, self._retry_delay, lambda: None)
                continue
            assert wrapping.inner is not None
            return wrapping.inner

    def published_addresses(self) -> list[str]:
        """
        See :meth:`ITransport.published_addresses`.
        """
        return [str(port.address) for port in self._ports]


async def _raise(error: BaseException) -> Any:
    raise error


async def _value(value: Any) -> Any:
    return value


# -- The plugin ----------------------------------------------------------------


def check_torrc_options(lines: Sequence[str]) -> list[str]:
    """
    Check ``--tor-option`` values: ``Key Value`` lines for the torrc of a tor
    the node launches.

    :raises TransportConfigError: for a malformed line or an option the node
        sets itself.
    """
    checked = []
    for line in lines:
        if not isinstance(line, str) or "\n" in line or "\r" in line:
            raise TransportConfigError(f"bad tor option {line!r}: one line, 'Key Value'")
        key, _, value = line.strip().partition(" ")
        if not _TORRC_KEY.match(key) or not value.strip():
            raise TransportConfigError(f"bad tor option {line!r}: expected 'Key Value'")
        if key.lower() in RESERVED_TORRC_KEYS:
            raise TransportConfigError(f"tor option {key} is set by the node itself")
        checked.append(f"{key} {value.strip()}")
    return checked


def is_loopback_endpoint(endpoint: IStreamClientEndpoint) -> bool:
    """
    Whether a client endpoint made by ``clientFromString`` reaches this
    machine only: a UNIX socket, or TCP to an IP address in 127.0.0.0/8 or
    ``::1`` (a host name could resolve anywhere).
    """
    if isinstance(endpoint, UNIXClientEndpoint):
        return True
    if isinstance(endpoint, TCP4ClientEndpoint | TCP6ClientEndpoint):
        host = str(endpoint._host)
        return (host.startswith("127.") and host.count(".") == 3) or host == "::1"
    return False


@implementer(ITransportPlugin)
@frozen
class TorTransportPlugin:
    """
    The ``tor`` transport plugin.  Its options:

    - ``control``: a client endpoint string for a running tor's control
      port (``tcp:127.0.0.1:9051``, ``unix:/run/tor/control``); without it
      the node launches its own tor, with its data in ``DATA_DIR/tor``;
    - ``control_password``: the control port's password (otherwise tor's
      cookie file is used);
    - ``tor_binary``: the tor program to launch (default: ``tor`` on
      ``PATH``);
    - ``torrc``: extra ``Key Value`` lines for a launched tor's torrc;
    - ``onion_only``: refuse a control endpoint that is not on this machine;
    - ``timeout``: seconds for tor to start and bootstrap (default 180);
    - ``bootstrap_warning``: seconds after which a tor that has not
      bootstrapped gets one warning in the log, quoting tor's complaint
      (default 120);
    - ``connect_timeout``: seconds before a connection attempt fails with
      ``TimeoutError`` (default 60).
    """

    name: str = "tor"
    description: str = "Onion services through tor (txtorcon): inbound and outbound."

    def make_transport(self, context: TransportContext) -> TorTransport:
        """
        See :meth:`ITransportPlugin.make_transport`.
        """
        options = context.options
        reactor = context.reactor
        timeout = options.get("timeout", 180.0)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise TransportConfigError(f"bad tor timeout {timeout!r}")
        warning = options.get("bootstrap_warning", BOOTSTRAP_WARNING)
        if not isinstance(warning, int | float) or warning <= 0:
            raise TransportConfigError(f"bad tor bootstrap_warning {warning!r}")
        watch = TorBootstrapWatch(reactor, float(warning))
        connect_timeout = options.get("connect_timeout", 60.0)
        if not isinstance(connect_timeout, int | float) or connect_timeout <= 0:
            raise TransportConfigError(f"bad tor connect_timeout {connect_timeout!r}")
        torrc = check_torrc_options(options.get("torrc", ()))
        control = options.get("control")
        password = options.get("control_password")
        tor_dir = None if context.data_dir is None else context.data_dir.child("tor")
        reach: Callable[[], Deferred[ITorControl]]
        if control is not None:
            if torrc or options.get("tor_binary"):
                raise TransportConfigError(
                    "tor options and a tor binary apply to a tor the node launches, "
                    "not to one reached through its control port"
                )
            try:
                endpoint = clientFromString(reactor, control)  # type: ignore[no-untyped-call]
            except (ValueError, TypeError, KeyError) as e:
                raise TransportConfigError(f"bad tor control endpoint {control!r}: {e}") from None
            if options.get("onion_only") and not is_loopback_endpoint(endpoint):
                raise TransportConfigError(
                    f"in onion-only mode the tor control endpoint must be on this machine "
                    f"(a UNIX socket or an IP address in 127.0.0.0/8), not {control!r}"
                )

            def reach() -> Deferred[ITorControl]:
                return Deferred.fromCoroutine(
                    attach_tor(reactor, endpoint, control, password, float(timeout), watch)
                )

        else:
            if tor_dir is None:
                raise TransportConfigError(
                    "a launched tor needs the node's data directory (or give a control endpoint)"
                )
            if password is not None:
                raise TransportConfigError("a control password needs a control endpoint")
            binary = options.get("tor_binary")
            launch_dir = tor_dir

            def reach() -> Deferred[ITorControl]:
                return Deferred.fromCoroutine(
                    launch_tor(
                        reactor,
                        launch_dir,
                        tor_binary=binary,
                        torrc_options=torrc,
                        timeout=float(timeout),
                        watch=watch,
                    )
                )

        return TorTransport(
            reactor, reach, tor_dir, connect_timeout=float(connect_timeout), bootstrap=watch
        )
