# -*- test-case-name: tests.test_tor -*-
"""
A fake of our :class:`~digitalspring.transport.ITorControl`, for tests that
need no tor: onion services are a table shared by the fakes of one
:class:`FakeOnionNetwork`, and their connections are plain TCP on 127.0.0.1.

It is a verified fake: the ``tor`` transport passes the same conformance
tests over it as over a real tor.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from ..transport import IOnionService, ITorControl, OnionServiceUnreachable, onion_host


@define
class FakeOnionNetwork:
    """
    The onion services published by the fakes that share it.

    :ivar services: local port by onion host name and virtual port.
    :ivar dialled: every ``(host, port)`` some fake was asked to connect to.
    """

    services: dict[str, dict[int, int]] = field(factory=dict)
    dialled: list[tuple[str, int]] = field(factory=list)


@implementer(IOnionService)
@define(eq=False)
class FakeOnionService:
    """
    An onion service in a :class:`FakeOnionNetwork`.
    """

    hostname: str
    _network: FakeOnionNetwork

    def remove(self) -> Deferred[None]:
        """
        See :meth:`IOnionService.remove`.
        """
        self._network.services.pop(self.hostname, None)
        return succeed(None)


@implementer(IStreamClientEndpoint)
@define
class _FakeOnionEndpoint:
    _reactor: Any
    _network: FakeOnionNetwork
    _host: str
    _port: int

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        self._network.dialled.append((self._host, self._port))
        local = self._network.services.get(self._host, {}).get(self._port)
        where = f"{self._host}:{self._port}"
        if local is None:
            return fail(OnionServiceUnreachable(f"no onion service answers at {where} (fake)"))

        def refused(failure: Failure) -> Failure:
            failure.trap(ConnectionRefusedError)  # type: ignore[no-untyped-call]
            return Failure(  # type: ignore[no-untyped-call]
                OnionServiceUnreachable(f"no onion service answers at {where} (fake)")
            )

        connecting: Deferred[IProtocol] = TCP4ClientEndpoint(
            self._reactor, "127.0.0.1", local
        ).connect(protocolFactory)
        return connecting.addErrback(refused)


@implementer(ITorControl)
class FakeTorControl:
    """
    An :class:`ITorControl` that publishes onion services in ``network``
    and connects to them directly over loopback TCP.

    :ivar closed: whether :meth:`close` was called.
    """

    def __init__(self, reactor: Any, network: FakeOnionNetwork) -> None:
        self._reactor = reactor
        self._network = network
        self._published: list[FakeOnionService] = []
        self.closed = False

    def publish_onion(self, virtual_port: int, local_port: int, seed: bytes) -> Deferred[Any]:
        """
        See :meth:`ITorControl.publish_onion`.
        """
        host = onion_host(seed)
        if host in self._network.services:
            return fail(
                CannotListenError(  # type: ignore[no-untyped-call]
                    "onion", virtual_port, "onion address collision"
                )
            )
        self._network.services[host] = {virtual_port: local_port}
        service = FakeOnionService(host, self._network)
        self._published.append(service)
        return succeed(service)

    def onion_endpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        """
        See :meth:`ITorControl.onion_endpoint`.
        """
        return _FakeOnionEndpoint(self._reactor, self._network, host, port)

    def close(self) -> Deferred[None]:
        """
        See :meth:`ITorControl.close`: its services go away.
        """
        self.closed = True
        for service in self._published:
            service.remove()
        self._published = []
        return succeed(None)
