# -*- test-case-name: tests.test_pool -*-
"""
AMP inside the secure channel: the connection every layer's commands use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from ..identity import PeerID
from ._interfaces import ISecureChannel

if TYPE_CHECKING:
    from ._pool import ConnectionPool

#: The most bytes a Ping may carry: well inside AMP's 65535-byte value limit.
MAX_PING_DATA = 1024


class PingData(amp.Argument):
    """
    Bytes of at most :data:`MAX_PING_DATA`, checked on both ends.
    """

    def fromString(self, inString: bytes) -> bytes:
        if len(inString) > MAX_PING_DATA:
            raise amp.TooLong(False, True, inString, None)
        return inString

    def toString(self, inObject: bytes) -> bytes:
        if len(inObject) > MAX_PING_DATA:
            raise amp.TooLong(False, True, inObject, None)
        return inObject


class Ping(amp.Command):
    """
    Echo ``data``: for liveness and round-trip times.
    """

    arguments = [(b"data", PingData())]
    response = [(b"data", PingData())]


class PeerConnection(amp.AMP, TimeoutMixin):
    """
    The AMP connection with one peer, inside a secure channel.

    Layers add their commands as command locators: a callable per layer that
    takes the connection and returns an :class:`amp.CommandLocator` whose
    responders serve it.  The connection closes itself after the pool's idle
    timeout without use (see :attr:`last_active`).
    """

    log = Logger()

    def __init__(
        self, pool: ConnectionPool, locators: Sequence[Callable[[PeerConnection], Any]]
    ) -> None:
        super().__init__()
        self.pool = pool
        self._locator_factories = locators
        self._locators: list[amp.CommandLocator] = []
        # TimeoutMixin schedules through this: the pool's clock, not the reactor.
        self.callLater = pool.clock.callLater  # type: ignore[method-assign]

    #: The peer at the other end, as the channel proved it.
    peer_id: PeerID
    #: Whether this side dialled.
    initiator: bool

    def __repr__(self) -> str:
        return f"<PeerConnection {getattr(self, 'peer_id', None)}>"

    #: When the connection was last in use, in the pool's clock's seconds:
    #: when a command other than the peer's Ping went either way, or an
    #: answer to one of ours came back.  The idle timeout counts from it, so
    #: a peer cannot hold the connection open with Pings alone.
    last_active: float = 0.0

    @property
    def requests_in_flight(self) -> int:
        """
        Requests not answered yet, ours and the peer's.
        """
        return len(self._outstandingRequests) + self._serving

    _serving = 0

    def makeConnection(self, transport: Any) -> None:
        # Not AMP.makeConnection: it logs every connection at info level, and
        # the pool logs each connection once.
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        channel = ISecureChannel(self.transport)
        self.peer_id = channel.peer_id
        self.initiator = channel.initiator
        super().connectionMade()
        self._locators = [make(self) for make in self._locator_factories]
        self.setTimeout(self.pool.idle_timeout)
        self.last_active = self.pool.clock.seconds()
        self.pool._connection_made(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.setTimeout(None)
        # Not AMP.connectionLost, which logs at info level (see makeConnection).
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
        self.pool._connection_lost(self, reason)

    def _active(self) -> None:
        self.last_active = self.pool.clock.seconds()
        self.resetTimeout()

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        command = box.get(amp.COMMAND)
        if command is None:
            if box.get(amp.ANSWER, box.get(amp.ERROR)) in self._outstandingRequests:
                self._active()
        elif command != Ping.commandName:
            self._active()
        super().ampBoxReceived(box)

    def dispatchCommand(self, box: amp.AmpBox) -> Deferred[amp.AmpBox]:
        self._serving += 1
        answer: Deferred[amp.AmpBox] = super().dispatchCommand(box)
        return answer.addBoth(self._served)

    def _served(self, result: Any) -> Any:
        self._serving -= 1
        return result

    def _sendBoxCommand(
        self, command: bytes, box: amp.AmpBox, requiresAnswer: bool = True
    ) -> Deferred[Any] | None:
        self._active()
        return super()._sendBoxCommand(command, box, requiresAnswer)  # type: ignore[no-any-return]

    def timeoutConnection(self) -> None:
        self.log.debug("closing idle connection with {peer}", peer=str(self.peer_id))
        self.transport.loseConnection()  # type: ignore[union-attr]

    def locateResponder(self, name: bytes) -> Any:
        responder = super().locateResponder(name)
        if responder is not None:
            return responder
        for locator in self._locators:
            responder = locator.locateResponder(name)
            if responder is not None:
                return responder
        return None

    @Ping.responder
    def ping(self, data: bytes) -> dict[str, bytes]:
        return {"data": data}
