# -*- test-case-name: tests.test_tor -*-
"""
A fake of our :class:`~digitalspring.transport.ITorControl`, for tests that
need no tor: onion services are a table shared by the fakes of one
:class:`FakeOnionNetwork`, and their connections are plain TCP on 127.0.0.1.

It is a verified fake: it keeps the contract of
:class:`~digitalspring.testing.TorControlContractMixin`, which
:class:`~digitalspring.transport.TxtorconControl` keeps on a real tor, and
the ``tor`` transport passes the same conformance tests over it as over a
real tor.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import (
    CannotListenError,
    ConnectingCancelledError,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from ..transport import (
    InvalidAddress,
    IOnionService,
    ITorControl,
    OnionServiceUnreachable,
    TorBootstrap,
    TorStreamFailed,
    TorUnavailable,
    onion_host,
    parse_onion_address,
)


@define
class FakeOnionNetwork:
    """
    The onion services published by the fakes that share it: one tor, as
    far as publishing goes (a key is published once), and the Tor network,
    as far as dialling goes.

    :ivar services: local port by onion host name and virtual port.
    :ivar dialled: every ``(host, port)`` some fake was asked to connect to.
    :ivar unresponsive: onion host names whose dials never finish (until
        cancelled), as tor keeps trying introduction points that no longer
        answer for up to two minutes.
    """

    services: dict[str, dict[int, int]] = field(factory=dict)
    dialled: list[tuple[str, int]] = field(factory=list)
    unresponsive: set[str] = field(factory=set)


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
    """
    Connects as tor would, never synchronously: to the service's local port
    over loopback TCP, failing with the errors the real control gives.
    """

    _reactor: Any
    _network: FakeOnionNetwork
    _host: str
    _port: int

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        self._network.dialled.append((self._host, self._port))
        where = f"{self._host}:{self._port}"
        if self._host in self._network.unresponsive:
            # Cancelling it fails it with CancelledError.
            return Deferred()
        error = self._error(where)
        if error is not None:
            return self._later(error)

        def refused(failure: Failure) -> Failure:
            if failure.check(ConnectingCancelledError):  # type: ignore[no-untyped-call]
                return Failure(CancelledError())  # type: ignore[no-untyped-call]
            failure.trap(ConnectionRefusedError)  # type: ignore[no-untyped-call]
            return Failure(  # type: ignore[no-untyped-call]
                OnionServiceUnreachable(
                    f"no onion service answers at {where} (fake: its local port refused)",
                    service_found=True,
                )
            )

        local = self._network.services[self._host][self._port]
        connecting: Deferred[IProtocol] = TCP4ClientEndpoint(
            self._reactor, "127.0.0.1", local
        ).connect(protocolFactory)
        return connecting.addErrback(refused)

    def _error(self, where: str) -> Exception | None:
        """
        What tor answers for a dial it cannot make, if so.
        """
        try:
            parse_onion_address(where)
        except InvalidAddress:
            # Tor's SOCKS port: "general failure" for a malformed address.
            return TorStreamFailed(f"tor could not reach {where}: general SOCKS server failure")
        ports = self._network.services.get(self._host)
        if ports is None:
            return OnionServiceUnreachable(f"no onion service answers at {where} (fake)")
        if self._port not in ports:
            # The service itself refuses a port it does not forward.
            return OnionServiceUnreachable(
                f"no onion service answers at {where} (fake: port not forwarded)",
                service_found=True,
            )
        return None

    def _later(self, error: Exception) -> Deferred[IProtocol]:
        """
        Fail with ``error`` on the next turn of the reactor, as tor's answer
        arrives; a cancel before then fails with ``CancelledError``.
        """
        failing: Deferred[IProtocol] = Deferred(lambda _: call.cancel())
        call = self._reactor.callLater(0, failing.errback, Failure(error))  # type: ignore[no-untyped-call]
        return failing


@implementer(ITorControl)
class FakeTorControl:
    """
    An :class:`ITorControl` that publishes onion services in ``network``
    and connects to them directly over loopback TCP.

    :ivar closed: whether :meth:`close` was called.
    :ivar bootstrap: what :meth:`bootstrap_phase` reports: a tor that has
        bootstrapped, unless a test sets how far its tor has come.
    """

    def __init__(self, reactor: Any, network: FakeOnionNetwork) -> None:
        self._reactor = reactor
        self._network = network
        self._published: list[FakeOnionService] = []
        self.closed = False
        self.bootstrap = TorBootstrap(100, "done", "Done")

    def bootstrap_phase(self) -> Deferred[TorBootstrap]:
        """
        See :meth:`ITorControl.bootstrap_phase`: :attr:`bootstrap`.
        """
        if self.closed:
            return fail(TorUnavailable("the tor control connection is closed"))
        return succeed(self.bootstrap)

    def publish_onion(self, virtual_port: int, local_port: int, seed: bytes) -> Deferred[Any]:
        """
        See :meth:`ITorControl.publish_onion`.
        """
        if self.closed:
            return fail(
                CannotListenError(  # type: ignore[no-untyped-call]
                    "onion", virtual_port, "the tor control connection is closed"
                )
            )
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
