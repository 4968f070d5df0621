# Twisted's endpoints and Failure are not fully annotated.
# mypy: disallow-untyped-calls=False
"""
``unix``: a Digital Spring transport over Unix domain sockets, for nodes on
one machine (addresses are socket paths; the file's permissions say who may
connect).  The example of ``docs/howto-transport-plugin.rst``.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import UNIXClientEndpoint, UNIXServerEndpoint
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort, IProtocol, IProtocolFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from digitalspring.transport import (
    InvalidAddress,
    ITransport,
    ITransportPlugin,
    TransportContext,
)

#: The longest socket path Linux takes (``sun_path`` is 108 bytes, with
#: its terminating NUL).
MAX_PATH = 107


def check_path(path: str) -> str:
    """
    ``path`` if it can be a socket's address: absolute, and short enough.

    :raises InvalidAddress: otherwise.
    """
    if not path.startswith("/") or "\0" in path:
        raise InvalidAddress(f"a unix address is an absolute socket path, not {path!r}")
    if len(os.fsencode(path)) > MAX_PATH:
        raise InvalidAddress(f"the socket path {path!r} is longer than {MAX_PATH} bytes")
    return path


def _refused(failure: Failure) -> Failure:
    """
    A socket file that is not there is nobody listening, as ITransport
    says it: ``ConnectionRefusedError`` (a node that stopped removed it).
    """
    error = failure.value
    if isinstance(error, ConnectError) and error.osError == errno.ENOENT:
        return Failure(ConnectionRefusedError(string=f"no socket at {error}"))
    return failure


@implementer(IListeningPort)
class _PublishedPort:
    """
    A listening socket whose path leaves the transport's published
    addresses when it stops listening.
    """

    def __init__(self, transport: UnixTransport, port: IListeningPort, path: str) -> None:
        self._transport = transport
        self._port = port
        self.path = path

    def startListening(self) -> None:
        self._port.startListening()
        self._transport._ports.append(self)

    def stopListening(self) -> Deferred[None] | None:
        if self in self._transport._ports:
            self._transport._ports.remove(self)
        result: Deferred[None] | None = self._port.stopListening()
        return result

    def getHost(self) -> Any:
        return self._port.getHost()


@implementer(ITransport)
class UnixTransport:
    """
    Unix domain stream sockets: ``listen("/run/dspring/node.sock", f)``,
    ``connect("/run/dspring/node.sock", f)``.
    """

    name = "unix"

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._ports: list[_PublishedPort] = []

    def listen(self, description: str, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen on the socket file ``description`` (mode 0600: only this
        user may connect); a stale file left by a killed node is replaced.
        """
        try:
            path = check_path(description)
        except InvalidAddress as e:
            return fail(e)
        endpoint = UNIXServerEndpoint(self._reactor, path, mode=0o600, wantPID=False)

        def published(port: IListeningPort) -> IListeningPort:
            wrapped = _PublishedPort(self, port, path)
            self._ports.append(wrapped)
            return wrapped

        listening: Deferred[IListeningPort] = endpoint.listen(factory)
        return listening.addCallback(published)

    def connect(self, address: str, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect to the socket file ``address``.
        """
        try:
            path = check_path(address)
        except InvalidAddress as e:
            return fail(e)
        connecting: Deferred[IProtocol] = UNIXClientEndpoint(
            self._reactor, path, timeout=30
        ).connect(factory)
        return connecting.addErrback(_refused)

    def published_addresses(self) -> list[str]:
        return [port.path for port in self._ports]


@implementer(ITransportPlugin)
class UnixTransportPlugin:
    """
    The ``unix`` transport, as a plugin: it takes no options.
    """

    name = "unix"
    description = "Unix domain sockets, for nodes on one machine."

    def make_transport(self, context: TransportContext) -> UnixTransport:
        return UnixTransport(context.reactor)
