# -*- test-case-name: tests.test_tornet -*-
"""
The few txtorcon calls the Tor test network (and later the Tor transport)
needs, behind small functions so the rest of our code does not depend on
txtorcon's API directly.
"""

from __future__ import annotations

import re
from typing import Any, cast

import txtorcon
from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from digitalspring.testing._tornamespace import NetworkNamespace, inside

log = Logger()

#: What the reactor parameters here must provide: IReactorTCP and IReactorTime.
Reactor = Any

_PROGRESS = re.compile(r"\bPROGRESS=(\d+)")


@implementer(IStreamClientEndpoint)
class NamespacedEndpoint:
    """
    A client endpoint whose connections are made from inside a network
    namespace (the socket is created in the namespace of the thread that
    creates it, and stays there).

    :param namespace: where to connect from; ``None`` means where we are.
    :param wrapped: the endpoint that does the work.
    """

    def __init__(self, namespace: NetworkNamespace | None, wrapped: IStreamClientEndpoint):
        self._namespace = namespace
        self._wrapped = wrapped

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect ``protocolFactory`` through the wrapped endpoint, from inside
        the namespace.
        """
        if self._namespace is None:
            return self._wrapped.connect(protocolFactory)
        with self._namespace.entered():
            return self._wrapped.connect(protocolFactory)


def loopback_endpoint(
    reactor: Reactor, port: int, namespace: NetworkNamespace | None
) -> IStreamClientEndpoint:
    """
    An endpoint for TCP port ``port`` on 127.0.0.1 in ``namespace``.
    """
    return NamespacedEndpoint(namespace, TCP4ClientEndpoint(reactor, "127.0.0.1", port))


async def connect_control(
    reactor: Reactor,
    control_port: int,
    namespace: NetworkNamespace | None = None,
    timeout: float = 30.0,
) -> Any:
    """
    Connect to a tor's control port on 127.0.0.1, retrying while tor is
    still opening it, and authenticate (tor's cookie file).

    :returns: a ``txtorcon.Tor``.
    :raises ConnectError: if the port still refuses after ``timeout`` seconds.
    """
    deadline = reactor.seconds() + timeout
    while True:
        endpoint = loopback_endpoint(reactor, control_port, namespace)
        try:
            return await txtorcon.connect(reactor, endpoint)
        except ConnectError:
            if reactor.seconds() > deadline:
                raise
        await deferLater(reactor, 0.1, lambda: None)


async def close_control(tor: Any) -> None:
    """
    Close a control connection made by :func:`connect_control` and wait until
    it is closed (so trial sees a clean reactor).  The tor keeps running.
    """
    protocol = tor.protocol
    disconnected = protocol.when_disconnected()
    protocol.transport.loseConnection()
    try:
        await disconnected
    except Exception as e:
        # txtorcon reports even the hang-up we asked for as an error.
        log.debug("control connection closed: {error}", error=str(e))


async def bootstrap_progress(tor: Any) -> int:
    """
    How far (in percent) a tor has bootstrapped, from
    ``GETINFO status/bootstrap-phase``.
    """
    info = await tor.protocol.get_info("status/bootstrap-phase")
    match = _PROGRESS.search(str(info.get("status/bootstrap-phase", "")))
    return int(match.group(1)) if match else 0


def socks_client_endpoint(
    reactor: Reactor,
    tor: Any,
    host: str,
    port: int,
    socks_port: int,
    namespace: NetworkNamespace | None = None,
) -> IStreamClientEndpoint:
    """
    An endpoint that reaches ``host:port`` (an onion address, usually)
    through the SOCKS port ``socks_port`` of ``tor``.
    """
    endpoint: IStreamClientEndpoint = tor.stream_via(
        host, port, socks_endpoint=loopback_endpoint(reactor, socks_port, namespace)
    )
    return endpoint


@frozen
class PublishedOnion:
    """
    An ephemeral v3 onion service, forwarding to a local listening port.

    :ivar host: its ``.onion`` host name.
    :ivar virtual_port: the port clients connect to on ``host``.
    :ivar listening_port: where its connections arrive, on 127.0.0.1.
    :ivar publish_seconds: from asking tor to a first descriptor upload.
    """

    host: str
    virtual_port: int
    listening_port: IListeningPort
    publish_seconds: float
    _service: Any

    async def unpublish(self) -> None:
        """
        Remove the service from tor (if the control connection is still
        open) and stop listening.
        """
        try:
            await self._service.remove()
        except Exception as e:
            # Already gone with its control connection.
            log.debug("onion service {host} not removed: {error}", host=self.host, error=str(e))
        await maybeDeferred(self.listening_port.stopListening)


async def publish_onion_service(
    reactor: Reactor,
    tor: Any,
    factory: IProtocolFactory,
    virtual_port: int = 80,
    namespace: NetworkNamespace | None = None,
) -> PublishedOnion:
    """
    Listen on a free port of 127.0.0.1 (in ``namespace``, where the tor is)
    and publish it as a new ephemeral v3 onion service through ``tor``.
    The service lives as long as the control connection (or until
    :meth:`PublishedOnion.unpublish`).

    :param tor: a ``txtorcon.Tor`` from :func:`connect_control`.
    :returns: once tor has uploaded the descriptor at least once.
    """
    with inside(namespace):
        listening: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
    local_port = cast(IPv4Address, listening.getHost()).port
    began = reactor.seconds()
    try:
        service = await tor.create_onion_service(
            ports=[(virtual_port, f"127.0.0.1:{local_port}")],
            version=3,
            await_all_uploads=False,
        )
    except BaseException:
        await maybeDeferred(listening.stopListening)
        raise
    return PublishedOnion(
        str(service.hostname), virtual_port, listening, reactor.seconds() - began, service
    )
