# -*- test-case-name: tests.test_pool -*-
"""
AMP inside the secure channel: the connection every layer's commands use.

Twisted's box parser bounds keys (255 bytes) and values (65535 bytes) but not
boxes: a peer could send one box that never ends.  A :class:`PeerConnection`
bounds the box being received to :data:`MAX_BOX_KEYS` keys,
:data:`MAX_BOX_BYTES` bytes and :data:`BOX_TIMEOUT` seconds, and the
requests it serves at once to :data:`MAX_REQUESTS_IN_FLIGHT`; past those it
stops reading (requests) or closes the connection (boxes).

One read can bring hundreds of small requests, each answered at once: a
connection serves at most :data:`REQUESTS_PER_TURN` of them in one reactor
turn, and the connections of a pool :data:`POOL_REQUESTS_PER_TURN` in all
(each connection at least one), then holds the next request and stops
reading until the next turn.  The connections that waited share the next
turn's requests first, so a few connections cannot hold the reactor while
the others wait, and a peer that sends one request at a time is served as
it comes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from ..identity import PeerID
from ._interfaces import ISecureChannel
from ._secure import ChannelError

if TYPE_CHECKING:
    from ._pool import ConnectionPool

#: The most bytes a Ping may carry: well inside AMP's 65535-byte value limit.
MAX_PING_DATA = 1024

#: The most keys one box may have.  Commands have a handful of arguments
#: (AMP adds ``_command`` and ``_ask``); 64 leaves room to grow.
MAX_BOX_KEYS = 64
#: The most bytes of keys and values (with their 2-byte lengths) one box may
#: have.  The largest boxes are DHT answers (a record of at most 4 KiB and a
#: contact list in one value of at most 64 KiB) and multicast fragments (at
#: most 65,000 bytes in one value): 256 KiB holds four full values.
MAX_BOX_BYTES = 256 * 1024
#: Seconds a box may take from its first key to its end: 256 KiB at 4.4 KB/s.
BOX_TIMEOUT = 60.0
#: The most requests of the peer served at once (responders whose answer is
#: not sent yet); over it, the connection stops reading until one is done.
MAX_REQUESTS_IN_FLIGHT = 64
#: The most requests of one peer served in one reactor turn.  Answers of
#: up to 4 KB (DHT records) and a few tenths of a millisecond each: a turn
#: spends at most a couple of milliseconds on one connection.
REQUESTS_PER_TURN = 4
#: The most requests served in one reactor turn by all the connections of a
#: pool, but for the first of each connection: about 10 ms of answers.
POOL_REQUESTS_PER_TURN = 32


class BoxTooLarge(ChannelError):
    """
    The peer sent an AMP box with more keys or bytes than any command needs.
    """


class BoxTimeout(ChannelError):
    """
    The peer began an AMP box and did not finish it in time.
    """


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


class _Turns:
    """
    The requests a pool's connections may still serve in this reactor turn,
    and the connections waiting for the next.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        #: Counts reactor turns in which requests were served.
        self.turn = 0
        self.left = POOL_REQUESTS_PER_TURN
        self._waiting: deque[PeerConnection] = deque()
        self._next: IDelayedCall | None = None

    def spend(self) -> None:
        self.left -= 1
        self._call_next_turn()

    def wait(self, connection: PeerConnection) -> None:
        self._waiting.append(connection)
        self._call_next_turn()

    def _call_next_turn(self) -> None:
        if self._next is None:
            self._next = self._clock.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._next = None
        self.turn += 1
        self.left = POOL_REQUESTS_PER_TURN
        waiting, self._waiting = self._waiting, deque()
        if not waiting:
            return
        share = max(1, min(REQUESTS_PER_TURN, POOL_REQUESTS_PER_TURN // len(waiting)))
        for connection in waiting:
            connection._next_turn(share)


_turns: WeakKeyDictionary[ConnectionPool, _Turns] = WeakKeyDictionary()


def _turns_of(pool: ConnectionPool) -> _Turns:
    """
    The turns of ``pool``'s connections: one per pool (one per node; a
    simulation runs many on one clock).
    """
    turns = _turns.get(pool)
    if turns is None:
        turns = _turns[pool] = _Turns(pool.clock)
    return turns


@implementer(IPushProducer)
class PeerConnection(amp.AMP, TimeoutMixin):
    """
    The AMP connection with one peer, inside a secure channel.

    Layers add their commands as command locators: a callable per layer that
    takes the connection and returns an :class:`amp.CommandLocator` whose
    responders serve it.  The connection closes itself after the pool's idle
    timeout without use (see :attr:`last_active`).

    It is its channel's streaming producer: when the channel's transport
    cannot take more (the peer does not read our answers), it stops parsing
    the peer's boxes, so a peer that does not read stops getting answers.
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
        self._turns = _turns_of(pool)

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
    # Requests served in turn number _turn of the pool's _Turns, of the
    # _allowance of this connection in that turn; the request held until
    # the next turn.
    _served_in_turn = 0
    _turn = -1
    _allowance = REQUESTS_PER_TURN
    _held: amp.AmpBox | None = None

    # Why parsing is paused: "output" (the channel's transport is full),
    # "requests" (MAX_REQUESTS_IN_FLIGHT served at once) and "turn" (this
    # reactor turn's requests served).
    _pauses: frozenset[str] = frozenset()
    _parse_call: IDelayedCall | None = None
    _box_keys = 0
    _box_bytes = 0
    _box_timer: IDelayedCall | None = None

    @property
    def buffered_bytes(self) -> int:
        """
        The bytes received and not yet handled: unparsed input and the box
        being received.
        """
        return len(self._unprocessed) + self._box_bytes

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
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.pool._connection_made(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.setTimeout(None)
        self.paused = True
        for call in (self._box_timer, self._parse_call):
            if call is not None and call.active():
                call.cancel()
        self._box_timer = self._parse_call = None
        # The pool forgets this connection before the requests still waiting
        # on it fail, so that a caller that sends again is given another.
        self.pool._connection_lost(self, reason)
        # Not AMP.connectionLost, which logs at info level (see makeConnection).
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None

    def _active(self) -> None:
        self.last_active = self.pool.clock.seconds()
        self.resetTimeout()

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        command = box.get(amp.COMMAND)
        if command is not None and self._turn_over():
            self._held = box
            self._pause("turn")
            self._turns.wait(self)
            return
        if command is None:
            if box.get(amp.ANSWER, box.get(amp.ERROR)) in self._outstandingRequests:
                self._active()
        elif command != Ping.commandName:
            self._active()
        super().ampBoxReceived(box)

    def dispatchCommand(self, box: amp.AmpBox) -> Deferred[amp.AmpBox]:
        self._serving += 1
        answer: Deferred[amp.AmpBox] = super().dispatchCommand(box)
        answer.addBoth(self._served)
        if self._serving >= MAX_REQUESTS_IN_FLIGHT:
            self._pause("requests")
        self._served_in_turn += 1
        self._turns.spend()
        return answer

    def _turn_over(self) -> bool:
        """
        Whether this connection has served what it may in this turn.
        """
        turns = self._turns
        if self._turn != turns.turn:
            self._turn, self._served_in_turn = turns.turn, 0
            self._allowance = REQUESTS_PER_TURN
        served = self._served_in_turn
        return served >= self._allowance or (served > 0 and turns.left <= 0)

    def _next_turn(self, allowance: int) -> None:
        """
        A new reactor turn: serve up to ``allowance`` requests of those that
        waited, now.
        """
        self._turn, self._served_in_turn = self._turns.turn, 0
        self._allowance = allowance
        self._resume("turn", now=True)

    def _served(self, result: Any) -> Any:
        self._serving -= 1
        if self._serving < MAX_REQUESTS_IN_FLIGHT:
            self._resume("requests")
        return result

    # -- bounded boxes ---------------------------------------------------

    def proto_init(self, string: bytes) -> str:
        self._box_timer = self.callLater(BOX_TIMEOUT, self._box_timed_out)
        return super().proto_init(string)  # type: ignore[no-any-return]

    def proto_key(self, string: bytes) -> str:
        if not string:
            # The end of the box.
            self._box_keys = self._box_bytes = 0
            if self._box_timer is not None and self._box_timer.active():
                self._box_timer.cancel()
            self._box_timer = None
        else:
            self._box_keys += 1
            self._box_bytes += 2 + len(string)
            if self._box_keys > MAX_BOX_KEYS:
                return self._refuse(BoxTooLarge(f"an AMP box of over {MAX_BOX_KEYS} keys"))
        return super().proto_key(string)  # type: ignore[no-any-return]

    def proto_value(self, string: bytes) -> str:
        self._box_bytes += 2 + len(string)
        if self._box_bytes > MAX_BOX_BYTES:
            return self._refuse(BoxTooLarge(f"an AMP box of over {MAX_BOX_BYTES} bytes"))
        return super().proto_value(string)  # type: ignore[no-any-return]

    def _box_timed_out(self) -> None:
        self._box_timer = None
        self._refuse(BoxTimeout(f"an AMP box took over {BOX_TIMEOUT} s"))

    def _refuse(self, error: ChannelError) -> str:
        """
        Drop the connection because of ``error``, which ``connectionLost``
        then carries to everyone waiting for an answer.
        """
        self.paused = True  # Parse nothing more.
        self._currentBox = None
        if self.transport is not None:
            ISecureChannel(self.transport).abort_with(error)
        return "init"

    # -- flow control: the channel's producer ------------------------------

    def pauseProducing(self) -> None:
        """
        The channel's transport is full: parse no more of the peer's boxes.
        """
        self._pause("output")

    def resumeProducing(self) -> None:
        self._resume("output")

    def stopProducing(self) -> None:
        # The channel is closing; connectionLost follows.
        self.paused = True

    def _pause(self, reason: str) -> None:
        if not self._pauses:
            self.paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]
            if self._box_timer is not None:
                # A box we stopped reading is not late by the peer's doing.
                self._box_timer.cancel()
                self._box_timer = None
        self._pauses |= {reason}

    def _resume(self, reason: str, now: bool = False) -> None:
        """
        Parse again unless paused for another reason: in the next turn, or
        ``now`` (only from a call of its own, not inside a responder's
        callback or a write).
        """
        if reason not in self._pauses:
            return
        self._pauses -= {reason}
        if self._pauses or self.transport is None:
            return
        self.paused = False
        if self._currentBox is not None and self._box_timer is None:
            self._box_timer = self.callLater(BOX_TIMEOUT, self._box_timed_out)
        self.transport.resumeProducing()  # type: ignore[attr-defined]
        if now:
            self._parse_held()
        elif self._parse_call is None:
            self._parse_call = self.callLater(0, self._parse_held)

    def _parse_held(self) -> None:
        if self._parse_call is not None and self._parse_call.active():
            self._parse_call.cancel()
        self._parse_call = None
        if not self.paused:
            self.dataReceived(b"")

    def dataReceived(self, data: bytes) -> None:
        if self._held is not None and not self.paused:
            # The request held from an earlier turn goes first.
            box, self._held = self._held, None
            self.ampBoxReceived(box)
        super().dataReceived(data)

    def _sendBoxCommand(
        self, command: bytes, box: amp.AmpBox, requiresAnswer: bool = True
    ) -> Deferred[Any] | None:
        self._active()
        return super()._sendBoxCommand(command, box, requiresAnswer)  # type: ignore[no-any-return]

    def timeoutConnection(self) -> None:
        self.log.debug("closing idle connection with {peer}", peer=self.peer_id)
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
