# -*- test-case-name: tests.test_transport -*-
"""
The ``tcp`` transport: Twisted's TCP endpoints.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._address import format_tcp_address, parse_port, parse_tcp_address
from ._interfaces import ITransport, ITransportPlugin
from ._plugins import InvalidAddress, TransportConfigError, TransportContext

_WILDCARDS = frozenset({"0.0.0.0", "::", "0:0:0:0:0:0:0:0"})  # noqa: S104


def tcp_server_endpoint(reactor: Any, description: str) -> Any:
    """
    The endpoint of a ``tcp`` listening description,
    ``PORT[:interface=IP][:backlog=N]``, read by Twisted's own parser.
    Making it touches no reactor, so options can be checked with it (and
    ``reactor`` ``None``) before one runs.

    :raises InvalidAddress: when the description is malformed.
    """
    try:
        # The port comes first (``7655:interface=127.0.0.1``); Twisted's
        # own parser would only say "invalid literal for int()".
        first = description.split(":", 1)[0]
        if "=" not in first:
            parse_port(first, allow_zero=True)
        return serverFromString(reactor, "tcp:" + description)  # type: ignore[no-untyped-call]
    except (InvalidAddress, ValueError, TypeError, KeyError) as e:
        raise InvalidAddress(f"bad tcp listening description {description!r}: {e}") from None


@implementer(IListeningPort)
class _PublishedPort:
    """
    A listening TCP port that leaves :meth:`TCPTransport.published_addresses`
    when it stops listening.
    """

    def __init__(self, transport: TCPTransport, port: IListeningPort) -> None:
        self._transport = transport
        self._port = port

    def startListening(self) -> None:
        """
        Listen again after :meth:`stopListening`.
        """
        self._port.startListening()
        self._transport._ports.append(self)

    def stopListening(self) -> Deferred[None] | None:
        """
        Stop listening; open connections stay.

        :returns: what the underlying port's ``stopListening`` returns: a
            ``Deferred`` firing once the socket is closed, or ``None``.
        """
        if self in self._transport._ports:
            self._transport._ports.remove(self)
        return self._port.stopListening()

    def getHost(self) -> IAddress:
        """
        :returns: the bound address (``IPv4Address`` or ``IPv6Address``).
        """
        return self._port.getHost()


@implementer(ITransport)
class TCPTransport:
    """
    The ``tcp`` transport.

    Listening descriptions are Twisted server endpoint strings without the
    ``tcp:`` prefix (``"7000:interface=127.0.0.1"``); addresses are
    ``HOST:PORT``, IPv6 in brackets (``"[::1]:7000"``).
    """

    name = "tcp"
    #: Each inbound connection comes from its peer's own address, so the
    #: per-address connection limits apply (see
    #: :meth:`digitalspring.channel.ConnectionPool.listening_factory`).
    shares_source_address = False
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        advertise: str | None = None,
        connect_timeout: float = 30.0,
        source: str | None = None,
    ) -> None:
        """
        :param reactor: an ``IReactorTCP`` and ``IReactorTime``.
        :param advertise: the host to publish for ports bound to every
            interface (``0.0.0.0`` or ``::``); ``127.0.0.1`` when ``None``.
        :param connect_timeout: seconds before a connection attempt fails
            with ``TimeoutError``.
        :param source: the IP address to dial from, for addresses of its
            family; the system's choice when ``None``.  Peers count
            connections by source address, and check a peer's claimed
            address against it.
        """
        self._reactor = reactor
        self._advertise = advertise
        self._connect_timeout = connect_timeout
        self._source = source
        self._ports: list[_PublishedPort] = []

    def listen(self, description: str, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        See :meth:`ITransport.listen`.
        """
        try:
            endpoint = tcp_server_endpoint(self._reactor, description)
        except InvalidAddress as e:
            return fail(e)

        def listening(port: IListeningPort) -> IListeningPort:
            published = _PublishedPort(self, port)
            self._ports.append(published)
            self.log.info("tcp listening on {address}", address=port.getHost())
            return published

        def out_of_range(failure: Failure) -> Failure:
            # bind() is the first to check the port number's range.
            failure.trap(OverflowError)  # type: ignore[no-untyped-call]
            return Failure(  # type: ignore[no-untyped-call]
                InvalidAddress(f"bad tcp listening description {description!r}: {failure.value}")
            )

        listening_port: Deferred[IListeningPort] = endpoint.listen(factory)
        return listening_port.addCallbacks(listening, out_of_range)

    def connect(self, address: str, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        See :meth:`ITransport.connect`.
        """
        try:
            host, port = parse_tcp_address(address)
        except InvalidAddress:
            return fail()
        endpoint: IStreamClientEndpoint
        source = self._source
        if isIPv6Address(host):
            bind = (source, 0) if source is not None and isIPv6Address(source) else None
            endpoint = TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
                self._reactor, host, port, self._connect_timeout, bind
            )
        elif isIPAddress(host):
            bind = (source, 0) if source is not None and isIPAddress(source) else None
            endpoint = TCP4ClientEndpoint(self._reactor, host, port, self._connect_timeout, bind)
        else:
            endpoint = HostnameEndpoint(
                self._reactor,
                host.encode("ascii"),
                port,
                self._connect_timeout,
                None if source is None else (source, 0),
            )
        return endpoint.connect(factory)

    def published_addresses(self) -> list[str]:
        """
        See :meth:`ITransport.published_addresses`.
        """
        addresses = []
        for port in self._ports:
            bound = port.getHost()
            host: str = bound.host  # type: ignore[attr-defined]
            if host in _WILDCARDS:
                host = self._advertise or "127.0.0.1"
            addresses.append(format_tcp_address(host, bound.port))  # type: ignore[attr-defined]
        return addresses


@implementer(ITransportPlugin)
@frozen
class TCPTransportPlugin:
    """
    The ``tcp`` transport plugin.  Its options: ``advertise``, the host
    name or address to publish for wildcard listeners, ``connect_timeout``
    in seconds, and ``source``, the IP address to dial from.
    """

    name: str = "tcp"
    description: str = "TCP through Twisted endpoints."

    def make_transport(self, context: TransportContext) -> TCPTransport:
        """
        See :meth:`ITransportPlugin.make_transport`.
        """
        advertise = context.options.get("advertise")
        if advertise is not None:
            try:
                if not isinstance(advertise, str):
                    raise InvalidAddress(repr(advertise))
                parse_tcp_address(format_tcp_address(advertise, 1))
            except InvalidAddress:
                raise TransportConfigError(
                    f"tcp option 'advertise' must be a host name or IP address, not {advertise!r}"
                ) from None
        timeout = context.options.get("connect_timeout", 30.0)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise TransportConfigError(f"bad tcp connect_timeout {timeout!r}")
        source = context.options.get("source")
        if source is not None and not (
            isinstance(source, str) and (isIPAddress(source) or isIPv6Address(source))
        ):
            raise TransportConfigError(
                f"tcp option 'source' must be an IP address, not {source!r}"
            )
        return TCPTransport(
            context.reactor, advertise=advertise, connect_timeout=float(timeout), source=source
        )
