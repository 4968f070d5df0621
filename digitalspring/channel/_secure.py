# -*- test-case-name: tests.test_channel -*-
"""
The secure channel: Noise over any byte stream, as a protocol wrapper.

Like :class:`twisted.protocols.tls.TLSMemoryBIOFactory`, a
:class:`SecureChannelFactory` wraps any protocol factory; the wrapped protocol
is connected once the handshake has proven the peer's identity, and its
transport provides :class:`ISecureChannel`.

The wire format (``docs/channel.rst`` has it in full):

* The dialler first sends a 9-byte preamble in clear: ``b"DSPRING"``, the
  channel version (2) and the handshake pattern (1 = IK, 2 = XX).
* Then both sides send frames: a 2-byte big-endian length and that many bytes
  (at most 65535) of a Noise handshake or transport message.
* The Noise prologue is ``b"Digital Spring channel\\0"`` followed by the
  preamble, so tampering with the preamble fails the handshake.
* Each side's handshake payload is its 32-byte Ed25519 public key, sent
  encrypted in the message that carries (IK: or follows) its static key; the
  peer checks that its X25519 form is the static key the handshake proved.
  XX's first message has an empty payload.
* With IK, the dialler sends an empty transport frame right after the
  handshake, so the responder never trusts a replayed first message.
* Once open, an empty transport frame is the authenticated end of stream:
  :meth:`SecureChannelProtocol.loseConnection` sends it before closing the
  transport, and a connection that ends without it reaches the wrapped
  protocol as :class:`Truncated`.

Flow control: the channel registers with its transport as a streaming
producer.  While the transport's write buffer is full (the peer does not
read), the channel stops reading from the peer and pauses the wrapped
protocol's producer; a peer that reads nothing for ``write_stall_timeout``
seconds is dropped with :class:`WriteStalled`.
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from struct import Struct
from typing import Any

from attrs import define, frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from .._ratelimit import RateLimitedLog
from ..errors import DigitalSpringError
from ..identity import Identity, InvalidPeerID, PeerID
from ._interfaces import ISecureChannel
from ._noise import CipherState, HandshakeState, NoiseProtocol
from ._primitives import KeyPair, NoiseError, NonceExhausted

MAGIC = b"DSPRING"
#: Version 2 added the authenticated end of stream; a version 1 peer would
#: look like one that truncates every connection, so the two do not talk.
VERSION = 2
PATTERN_IK = 1
PATTERN_XX = 2
_PATTERN_NAMES = {PATTERN_IK: "IK", PATTERN_XX: "XX"}
_PROTOCOLS = {
    PATTERN_IK: NoiseProtocol.from_name("Noise_IK_25519_ChaChaPoly_BLAKE2b"),
    PATTERN_XX: NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2b"),
}
PROLOGUE_PREFIX = b"Digital Spring channel\0"
PREAMBLE_LENGTH = len(MAGIC) + 2

MAX_FRAME = 65535
TAG_LENGTH = 16
_frame_header = Struct(">H").pack
#: The most plaintext one transport frame carries.
MAX_PLAINTEXT = MAX_FRAME - TAG_LENGTH
#: Handshake messages are small; anything larger is not a handshake.
MAX_HANDSHAKE_FRAME = 1024

#: Each direction rekeys (Noise's ``Rekey()``) after this many frames or
#: bytes, whichever comes first.  Both sides count the same frames, so they
#: rekey at the same point without any message about it.
REKEY_FRAMES = 1 << 16
REKEY_BYTES = 1 << 30


class ChannelError(DigitalSpringError):
    """
    The secure channel failed.
    """


class NotAChannel(ChannelError):
    """
    The other side does not speak the Digital Spring channel protocol.
    """


class VersionMismatch(ChannelError):
    """
    The other side speaks another version of the channel protocol.
    """


class HandshakeFailed(ChannelError):
    """
    The Noise handshake failed: a message did not authenticate, or the
    connection closed before the handshake was done.
    """


class HandshakeTimeout(ChannelError):
    """
    The handshake did not finish in time.
    """


class PeerMismatch(ChannelError):
    """
    The peer proved another identity than the one that was dialled.

    :ivar expected: the peer that was dialled.
    :ivar actual: the peer that answered.
    """

    def __init__(self, expected: PeerID, actual: PeerID) -> None:
        super().__init__(f"dialled {expected} but the peer is {actual}")
        self.expected = expected
        self.actual = actual


class ReplayedHandshake(ChannelError):
    """
    A first handshake message was seen before: somebody replays it.
    """


class BadFrame(ChannelError):
    """
    A frame is malformed: too large, too small, or does not authenticate.
    """


class FrameTimeout(ChannelError):
    """
    A frame started to arrive and did not finish in time.
    """


class Truncated(ChannelError):
    """
    The connection ended without the peer's authenticated end of stream:
    what arrived may have been cut short, by a fault or by someone on the
    path.
    """


class WriteStalled(ChannelError):
    """
    The peer stopped reading what this node sends, for too long.
    """


@frozen
class ChannelSettings:
    """
    Limits and timeouts of secure channels.

    :ivar handshake_timeout: seconds from connection to a finished handshake.
    :ivar frame_timeout: seconds a frame may take to arrive once started.
    :ivar rekey_frames: frames between rekeys (a protocol constant: both
        sides must agree; changed only in tests).
    :ivar rekey_bytes: ciphertext bytes between rekeys (likewise).
    :ivar replay_window: how many first IK messages are remembered to
        refuse replays.
    :ivar write_stall_timeout: seconds the transport's write buffer may stay
        full (the peer reads nothing), and a closing channel may wait for
        its last bytes to leave, before the connection is dropped.
    """

    handshake_timeout: float = 30.0
    frame_timeout: float = 60.0
    rekey_frames: int = REKEY_FRAMES
    rekey_bytes: int = REKEY_BYTES
    replay_window: int = 65536
    write_stall_timeout: float = 60.0


@define
class Traffic:
    """
    The bytes a node's secure channels wrote to and read from their
    transports, every channel together since the node started: preambles,
    handshakes and frames with their headers and tags, what the node's link
    carried above the transport (TCP/IP headers, or tor's cells, not
    counted).
    """

    sent: int = 0
    received: int = 0


class _ReplayCache:
    """
    The initiator ephemeral keys of recent IK first messages, bounded.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def check_and_add(self, key: bytes) -> bool:
        """
        :returns: whether ``key`` is new (and now remembered).
        """
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


class _ChannelSet:
    """
    The connected channels of a factory and its dialling copies, and who
    waits for them all to close.
    """

    def __init__(self) -> None:
        self.protocols: set[SecureChannelProtocol] = set()
        self._waiters: list[Deferred[None]] = []

    def add(self, protocol: SecureChannelProtocol) -> None:
        self.protocols.add(protocol)

    def discard(self, protocol: SecureChannelProtocol) -> None:
        self.protocols.discard(protocol)
        if not self.protocols:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def when_empty(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.protocols:
            self._waiters.append(d)
        else:
            d.callback(None)
        return d


def _pattern_code(pattern: str | None, expected_peer: PeerID | None, initiator: bool) -> int:
    if pattern is None:
        pattern = "IK" if expected_peer is not None else "XX"
    if pattern == "IK" and initiator and expected_peer is None:
        raise ValueError("IK needs the peer's ID")
    return {"IK": PATTERN_IK, "XX": PATTERN_XX}[pattern]


def _preamble(pattern: int) -> bytes:
    return MAGIC + bytes([VERSION, pattern])


def _payload(identity: Identity) -> bytes:
    return identity.peer_id.public_key


def _proven_peer(payload: bytes, remote_static: bytes | None) -> PeerID:
    """
    The peer ID a handshake payload claims, checked against the static key
    the handshake proved.
    """
    if len(payload) < 32 or remote_static is None:
        raise HandshakeFailed("the peer sent no identity in its handshake")
    try:
        peer_id = PeerID(payload[:32])
    except InvalidPeerID as e:
        # Among them the sign-flipped twin of a real key, which has the same
        # static key: one key pair proves one peer ID, never two.
        raise HandshakeFailed(f"the peer claims an invalid identity: {e}") from None
    if peer_id.x25519_public_key != remote_static:
        raise HandshakeFailed("the peer's identity does not match its handshake key")
    return peer_id


@implementer(IPushProducer)
class _OutputGate:
    """
    What a channel registers with its transport as a streaming producer:
    the transport pauses it while its write buffer is full.  A separate
    object, because the channel's own ``pauseProducing`` is the wrapped
    protocol's way to stop reading.
    """

    def __init__(self, channel: SecureChannelProtocol) -> None:
        self._channel = channel

    def pauseProducing(self) -> None:
        self._channel._output_blocked()

    def resumeProducing(self) -> None:
        self._channel._output_drained()

    def stopProducing(self) -> None:
        # The connection is going; connectionLost follows and tidies up.
        pass


# Protocol states.
_PREAMBLE = "awaiting preamble"
_HANDSHAKE = "handshaking"
_CONFIRM = "awaiting confirmation"
_OPEN = "open"
_CLOSED = "closed"


@implementer(ISecureChannel, ITransport, IPushProducer)
class SecureChannelProtocol(Protocol):
    """
    One end of a secure channel, and the transport of the protocol inside it.

    :meth:`when_secured` tells when the channel opens, or why it never did.
    """

    log = Logger()

    # Slots: a node holds two of these per connection, and an instance
    # dictionary of this many attributes takes about 2 KB.
    __slots__ = (
        "_clock",
        "_deliver_call",
        "_end_received",
        "_flush_call",
        "_frame_timer",
        "_gate",
        "_handshake",
        "_inbox",
        "_outbox",
        "_outbox_length",
        "_output_full",
        "_pattern_code",
        "_producer",
        "_read_pauses",
        "_reason",
        "_receiving",
        "_recv",
        "_recv_bytes",
        "_recv_frames",
        "_send",
        "_sent_bytes",
        "_sent_frames",
        "_settings",
        "_stall_timer",
        "_state",
        "_timeout",
        "_waiters",
        "_wrote",
        "disconnecting",
        "expected_peer",
        "factory",
        "handshake_hash",
        "initiator",
        "pattern",
        "peer_id",
        "wrappedProtocol",
    )

    def __init__(
        self,
        factory: SecureChannelFactory,
        wrapped: IProtocol,
        initiator: bool,
        expected_peer: PeerID | None,
        pattern: int,
    ) -> None:
        self.factory = factory
        self.wrappedProtocol = wrapped
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.pattern = _PATTERN_NAMES[pattern]
        self._pattern_code = pattern
        self.peer_id: PeerID | None = None
        self.handshake_hash = b""
        self._waiters: list[Deferred[IProtocol]] = []
        self.disconnecting = False
        self._state = _HANDSHAKE if initiator else _PREAMBLE
        self._handshake: HandshakeState | None = None
        self._wrote = False
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self._inbox = bytearray()
        self._outbox: list[bytes] = []
        self._outbox_length = 0
        self._flush_call: IDelayedCall | None = None
        self._receiving = False
        self._timeout: IDelayedCall | None = None
        self._frame_timer: IDelayedCall | None = None
        self._reason: ChannelError | None = None
        self._sent_frames = self._sent_bytes = 0
        self._recv_frames = self._recv_bytes = 0
        self._settings = factory.settings
        self._clock = factory.clock
        # Why reading from the peer is paused: "wrapped" (the wrapped
        # protocol asked) and "output" (the transport's write buffer is full).
        self._read_pauses: set[str] = set()
        self._deliver_call: IDelayedCall | None = None
        self._stall_timer: IDelayedCall | None = None
        self._gate: _OutputGate | None = None
        self._producer: IPushProducer | None = None
        self._output_full = False
        self._end_received = False

    def __repr__(self) -> str:
        peer = self.peer_id or self.expected_peer
        return f"<SecureChannelProtocol {self.pattern} {self._state} peer={peer}>"

    def when_secured(self) -> Deferred[IProtocol]:
        """
        :returns: a Deferred that fires with the wrapped protocol once the
            handshake is done and the wrapped protocol is connected, or fails
            with a :class:`ChannelError` saying why the channel never opened.
        """
        d: Deferred[IProtocol] = Deferred()
        if self._state is _OPEN:
            d.callback(self.wrappedProtocol)
        elif self._state is _CLOSED:
            d.errback(self._reason or HandshakeFailed("the connection closed"))
        else:
            self._waiters.append(d)
        return d

    def _notify(self, result: IProtocol | ChannelError) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if isinstance(result, ChannelError):
                d.errback(result)
            else:
                d.callback(result)

    # -- the underlying connection --------------------------------------

    def connectionMade(self) -> None:
        self.factory.channels.add(self)
        self._gate = _OutputGate(self)
        self.transport.registerProducer(self._gate, True)  # type: ignore[union-attr]
        self._timeout = self._clock.callLater(
            self._settings.handshake_timeout, self._handshake_timed_out
        )
        if self.initiator:
            self._start_handshake(self._pattern_code)
            self._write(_preamble(self._pattern_code))
            self._write_handshake()

    def _write(self, data: bytes) -> None:
        self.factory.traffic.sent += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    def _write_sequence(self, data: list[bytes]) -> None:
        self.factory.traffic.sent += sum(len(chunk) for chunk in data)
        self.transport.writeSequence(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.factory.traffic.received += len(data)
        if self._state is _CLOSED:
            return
        if self._read_pauses or self._deliver_call is not None:
            # Held while paused (bounded by what one read brings before the
            # transport stops reading), and behind the data held before.
            self._inbox += data
            return
        self._receiving = True
        try:
            if self._state is _PREAMBLE:
                data = self._take_preamble(data)
            if data:
                self._read_frames(data)
        except (ChannelError, NoiseError) as e:
            self._fail(e)
        finally:
            self._receiving = False
        if self._outbox and self._state is _OPEN:
            self._flush()

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        state, self._state = self._state, _CLOSED
        self._cancel_timers()
        self.factory.channels.discard(self)
        self._inbox = bytearray()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        if state is _CLOSED:
            # _fail has told everyone already.
            return
        if state is _OPEN:
            if not (self._end_received or self.disconnecting):
                error = Truncated(
                    "the connection ended without the peer's authenticated end of stream "
                    f"({reason.getErrorMessage()})"
                )
                self._count_failure(error, LogLevel.info)
                reason = Failure(error)  # type: ignore[no-untyped-call]
            self.wrappedProtocol.connectionLost(reason)
        else:
            self._reason = HandshakeFailed(
                f"the connection closed during the handshake: {reason.getErrorMessage()}"
            )
            self._notify(self._reason)

    # -- reading ----------------------------------------------------------

    def _take_preamble(self, data: bytes) -> bytes:
        """
        Collect the preamble and read it once whole.

        :returns: what follows the preamble in the bytes received so far.
        """
        inbox = self._inbox
        inbox += data
        if len(inbox) < PREAMBLE_LENGTH:
            if not MAGIC.startswith(bytes(inbox[: len(MAGIC)])):
                raise NotAChannel("the peer does not speak the Digital Spring channel")
            return b""
        self._read_preamble(bytes(inbox[:PREAMBLE_LENGTH]))
        rest = bytes(inbox[PREAMBLE_LENGTH:])
        inbox.clear()
        return rest

    def _read_frames(self, data: bytes) -> None:
        """
        Handle every frame that ``data`` completes, then keep what is left
        of a frame that has only begun.

        A frame that ``data`` holds whole goes to Noise as a view of it, not
        a copy; one that spans reads is completed in the inbox and goes as a
        view of that.
        Only the unfinished frame at the end waits in the inbox, so the
        inbox never holds more than one frame.
        """
        offset = 0
        completed = False
        if self._inbox:
            offset = self._finish_frame(data)
            if offset < 0:
                return
            completed = True
        end = len(data)
        view = memoryview(data)
        while end - offset >= 2 and self._state is not _CLOSED and not self._read_pauses:
            start = offset + 2
            stop = start + self._frame_length(data[offset], data[offset + 1])
            if stop > end:
                break
            offset = stop
            completed = True
            self._frame(view[start:stop])
        if offset < end and self._state is not _CLOSED:
            self._inbox += view[offset:] if offset else data
        self._watch_partial_frame(completed)

    def _finish_frame(self, data: bytes) -> int:
        """
        Complete the frame begun in the inbox with the start of ``data``,
        and handle it.

        :returns: where the rest of ``data`` starts, or -1 if all of it
            went to the inbox and the frame is still unfinished.
        """
        inbox = self._inbox
        taken = 0
        if len(inbox) < 2:
            taken = 2 - len(inbox)
            inbox += data[:taken]
            if len(inbox) < 2:
                self._watch_partial_frame(False)
                return -1
        missing = 2 + self._frame_length(inbox[0], inbox[1]) - len(inbox)
        stop = taken + missing
        if stop > len(data):
            inbox += memoryview(data)[taken:]
            self._watch_partial_frame(False)
            return -1
        # The frame is completed in place and handed over as a view; the
        # inbox starts afresh, so nothing resizes the buffer under the view.
        inbox += memoryview(data)[taken:stop]
        self._inbox = bytearray()
        with memoryview(inbox) as whole, whole[2:] as frame:
            self._frame(frame)
        return stop

    def _frame_length(self, high: int, low: int) -> int:
        """
        The length of the frame whose 2-byte header is ``high``, ``low``.

        :raises BadFrame: if no frame may be that long in this state.
        """
        length = (high << 8) | low
        if self._state is _HANDSHAKE:
            if not 32 <= length <= MAX_HANDSHAKE_FRAME:
                raise BadFrame(f"a handshake frame of {length} bytes is impossible")
        elif length < TAG_LENGTH:
            raise BadFrame(f"a frame of {length} bytes is too small to be a Noise message")
        return length

    def _watch_partial_frame(self, completed: bool) -> None:
        """
        Give the frame that has begun in the inbox ``frame_timeout`` to
        finish, counted from when it began: from now if a frame completed
        in this read (so a new one began), else from earlier.
        """
        timer = self._frame_timer
        if self._inbox and self._state is _OPEN and not self._read_pauses:
            if timer is None:
                self._frame_timer = self._clock.callLater(
                    self._settings.frame_timeout, self._frame_timed_out
                )
            elif completed:
                timer.reset(self._settings.frame_timeout)
        elif timer is not None:
            timer.cancel()
            self._frame_timer = None

    def _read_preamble(self, preamble: bytes) -> None:
        if not preamble.startswith(MAGIC):
            raise NotAChannel("the peer does not speak the Digital Spring channel")
        version, pattern = preamble[len(MAGIC)], preamble[len(MAGIC) + 1]
        if version != VERSION:
            raise VersionMismatch(
                f"the peer speaks channel version {version}; this node speaks {VERSION}"
            )
        if pattern not in _PROTOCOLS:
            raise NotAChannel(f"the peer asked for an unknown handshake pattern {pattern}")
        self._pattern_code = pattern
        self.pattern = _PATTERN_NAMES[pattern]
        self._start_handshake(pattern)
        self._state = _HANDSHAKE

    def _frame(self, frame: bytes | memoryview) -> None:
        if self._state is _OPEN:
            recv = self._recv
            assert recv is not None
            try:
                plaintext = recv.decrypt_with_ad(b"", frame)
            except NoiseError as e:
                raise BadFrame(f"a frame did not authenticate ({e})") from None
            self._count_received(len(frame))
            if self._end_received:
                raise BadFrame("the peer sent data after its end of stream")
            if plaintext:
                self.wrappedProtocol.dataReceived(plaintext)
            else:
                self._end_received = True
                self.loseConnection()
        elif self._state is _CONFIRM:
            recv = self._recv
            assert recv is not None
            try:
                recv.decrypt_with_ad(b"", frame)
            except NoiseError:
                raise HandshakeFailed(
                    "the dialler did not confirm the handshake (a replayed first message?)"
                ) from None
            self._count_received(len(frame))
            self._open()
        else:
            self._read_handshake(bytes(frame))

    def _count_received(self, length: int) -> None:
        self._recv_frames += 1
        self._recv_bytes += length
        if (
            self._recv_frames >= self._settings.rekey_frames
            or self._recv_bytes >= self._settings.rekey_bytes
        ):
            assert self._recv is not None
            self._recv.rekey()
            self._recv_frames = self._recv_bytes = 0

    # -- the handshake ----------------------------------------------------

    def _start_handshake(self, pattern: int) -> None:
        rs = None
        if self.initiator and pattern == PATTERN_IK:
            assert self.expected_peer is not None
            rs = self.expected_peer.x25519_public_key
        self._handshake = HandshakeState(
            _PROTOCOLS[pattern],
            self.initiator,
            prologue=PROLOGUE_PREFIX + _preamble(pattern),
            s=self.factory.static_key,
            rs=rs,
        )

    def _write_handshake(self) -> None:
        handshake = self._handshake
        assert handshake is not None
        # XX's first message is sent before any key exists: it must not
        # carry the identity, which would then travel in clear.
        first_xx = self._pattern_code == PATTERN_XX and self.initiator and not self._wrote
        self._wrote = True
        message = handshake.write_message(b"" if first_xx else _payload(self.factory.identity))
        self._write(len(message).to_bytes(2, "big") + message)
        if handshake.complete:
            self._handshake_done()

    def _read_handshake(self, frame: bytes) -> None:
        handshake = self._handshake
        assert handshake is not None
        first_ik = not self.initiator and self._pattern_code == PATTERN_IK and (
            handshake.remote_static is None
        )
        try:
            payload = handshake.read_message(frame)
        except NoiseError as e:
            raise HandshakeFailed(f"a handshake message did not authenticate ({e})") from None
        if first_ik and not self.factory.replay_cache.check_and_add(frame[:32]):
            raise ReplayedHandshake("a first handshake message was replayed")
        if payload:
            claimed = _proven_peer(payload, handshake.remote_static)
            if self.expected_peer is not None and claimed != self.expected_peer:
                raise PeerMismatch(self.expected_peer, claimed)
            self.peer_id = claimed
        if handshake.complete:
            self._handshake_done()
        elif handshake.writes_next:
            self._write_handshake()

    def _handshake_done(self) -> None:
        handshake = self._handshake
        assert handshake is not None
        if self.peer_id is None:
            raise HandshakeFailed("the handshake finished without the peer's identity")
        self.handshake_hash = handshake.handshake_hash
        self._send, self._recv = handshake.split()
        self._handshake = None
        if self._pattern_code == PATTERN_IK:
            if self.initiator:
                # Key confirmation: only the real dialler can send this.
                self._send_frames(b"")
                self._open()
            else:
                self._state = _CONFIRM
        else:
            self._open()

    def _open(self) -> None:
        self._state = _OPEN
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        # As many as peers can open: at a bounded rate, like failures.
        self.factory.failure_log.emit(
            LogLevel.debug,
            "open",
            "secure channel with {peer} open ({pattern})",
            peer=self.peer_id,
            pattern=self.pattern,
        )
        self.wrappedProtocol.makeConnection(self)
        if self._state is _OPEN:
            self._notify(self.wrappedProtocol)

    # -- failing ----------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        if self._state is _CLOSED:
            return
        if not isinstance(error, ChannelError):
            error = BadFrame(str(error) or type(error).__name__)
        self._reason = error
        self._count_failure(error, LogLevel.warn)
        self._inbox = bytearray()
        was_open = self._state is _OPEN
        self._state = _CLOSED
        self._cancel_timers()
        if was_open:
            # The wrapped protocol learns why through connectionLost.
            self.wrappedProtocol.connectionLost(Failure(error))  # type: ignore[no-untyped-call]
        else:
            self._notify(error)
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _count_failure(self, error: ChannelError, level: LogLevel) -> None:
        """
        Count ``error`` in the factory's :attr:`~SecureChannelFactory.failures`
        and log it, at a bounded rate per kind of error: a peer can cause
        failures as fast as it can connect.
        """
        kind = type(error).__name__
        self.factory.failures[kind] += 1
        self.factory.failure_log.emit(
            level,
            kind,
            "closing secure channel with {peer}: {reason}",
            peer=str(self.peer_id or self.expected_peer or self.getPeer()),
            reason=str(error),
            error_type=kind,
        )

    def abort_with(self, error: Exception) -> None:
        """
        Close the channel at once because of ``error``: the wrapped
        protocol's ``connectionLost`` carries it, and it is counted and
        logged like the channel's own failures.
        """
        self._fail(error)

    def _handshake_timed_out(self) -> None:
        self._timeout = None
        self._fail(HandshakeTimeout(f"no handshake after {self._settings.handshake_timeout} s"))

    def _frame_timed_out(self) -> None:
        self._frame_timer = None
        self._fail(FrameTimeout(f"a frame took over {self._settings.frame_timeout} s"))

    def _write_stalled(self) -> None:
        self._stall_timer = None
        self._fail(
            WriteStalled(
                f"the peer read nothing for {self._settings.write_stall_timeout} s"
            )
        )

    def _cancel_timers(self) -> None:
        for call in (
            self._timeout,
            self._frame_timer,
            self._flush_call,
            self._deliver_call,
            self._stall_timer,
        ):
            if call is not None and call.active():
                call.cancel()
        self._timeout = self._frame_timer = self._flush_call = None
        self._deliver_call = self._stall_timer = None

    # -- flow control -----------------------------------------------------

    def _pause_reading(self, reason: str) -> None:
        if not self._read_pauses and self._state is not _CLOSED:
            self.transport.pauseProducing()  # type: ignore[union-attr]
            if self._frame_timer is not None:
                # A frame held up by our pause is not the peer's delay.
                self._frame_timer.cancel()
                self._frame_timer = None
        self._read_pauses.add(reason)

    def _resume_reading(self, reason: str) -> None:
        if reason not in self._read_pauses:
            return
        self._read_pauses.discard(reason)
        if self._read_pauses or self._state is _CLOSED or self.disconnecting:
            return
        self.transport.resumeProducing()  # type: ignore[union-attr]
        if self._inbox and self._deliver_call is None:
            # Not now: this may run inside the wrapped protocol's code.
            self._deliver_call = self._clock.callLater(0, self._deliver_held)

    def _deliver_held(self) -> None:
        self._deliver_call = None
        if self._read_pauses or self._state is _CLOSED:
            return
        held, self._inbox = bytes(self._inbox), bytearray()
        self.dataReceived(held)

    def _output_blocked(self) -> None:
        """
        The transport's write buffer is full: stop reading the peer's
        requests and stop the wrapped protocol's producer until it drains.
        """
        if self._output_full or self._state is _CLOSED:
            return
        self._output_full = True
        self._stall_timer = self._clock.callLater(
            self._settings.write_stall_timeout, self._write_stalled
        )
        self._pause_reading("output")
        if self._producer is not None:
            self._producer.pauseProducing()

    def _output_drained(self) -> None:
        if not self._output_full:
            return
        self._output_full = False
        if self._stall_timer is not None and self._stall_timer.active():
            self._stall_timer.cancel()
        self._stall_timer = None
        self._resume_reading("output")
        if self._producer is not None and self._state is _OPEN:
            self._producer.resumeProducing()

    @property
    def buffered_bytes(self) -> int:
        """
        The bytes the channel holds: received and not yet handed on, and
        written by the wrapped protocol and not yet encrypted.
        """
        return len(self._inbox) + self._outbox_length

    # -- writing: ITransport for the wrapped protocol --------------------

    def write(self, data: bytes) -> None:
        if self._state is not _OPEN or self.disconnecting or not data:
            return
        self._outbox.append(data)
        self._outbox_length += len(data)
        if self._outbox_length >= MAX_PLAINTEXT:
            self._flush()
        elif not self._receiving and self._flush_call is None:
            # One flush per reactor turn, whatever the number of writes.
            self._flush_call = self._clock.callLater(0, self._flush)

    def writeSequence(self, data: list[bytes]) -> None:  # type: ignore[override]
        for chunk in data:
            self.write(chunk)

    def _flush(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._outbox or self._state is not _OPEN:
            return
        outbox = self._outbox
        data = b"".join(outbox) if len(outbox) > 1 else outbox[0]
        outbox.clear()
        self._outbox_length = 0
        try:
            self._send_frames(data)
        except NonceExhausted as e:
            self._fail(BadFrame(f"the channel used up its nonces ({e})"))

    def _send_frames(self, data: bytes) -> None:
        """
        Send ``data`` as frames of at most :data:`MAX_PLAINTEXT` bytes of
        plaintext, all in one write to the transport.
        """
        if len(data) <= MAX_PLAINTEXT:
            ciphertext = self._encrypt(data)
            self._write_sequence([_frame_header(len(ciphertext)), ciphertext])
            return
        view = memoryview(data)
        wire: list[bytes] = []
        try:
            for start in range(0, len(data), MAX_PLAINTEXT):
                ciphertext = self._encrypt(view[start : start + MAX_PLAINTEXT])
                wire += (_frame_header(len(ciphertext)), ciphertext)
        finally:
            # Frames encrypted before a failure still leave: they used
            # their nonces.
            if wire:
                self._write_sequence(wire)

    def _encrypt(self, plaintext: bytes | memoryview) -> bytes:
        """
        The next frame's ciphertext, rekeying when the budget is spent.
        """
        send = self._send
        assert send is not None
        ciphertext = send.encrypt_with_ad(b"", plaintext)
        self._sent_frames += 1
        self._sent_bytes += len(ciphertext)
        if (
            self._sent_frames >= self._settings.rekey_frames
            or self._sent_bytes >= self._settings.rekey_bytes
        ):
            send.rekey()
            self._sent_frames = self._sent_bytes = 0
        return ciphertext

    def loseConnection(self) -> None:
        """
        Send what was written, then the authenticated end of stream, then
        close the transport; a peer that does not take the last bytes within
        ``write_stall_timeout`` is cut off.
        """
        if self.disconnecting:
            return
        self._flush()
        if self._state is _OPEN:
            try:
                self._send_frames(b"")
            except NonceExhausted as e:
                self._fail(BadFrame(f"the channel used up its nonces ({e})"))
                return
            self._stall_timer = self._stall_timer or self._clock.callLater(
                self._settings.write_stall_timeout, self._write_stalled
            )
        self.disconnecting = True
        if self._gate is not None:
            # Nothing is read any more; a transport must not wait for a
            # paused producer before it closes.
            self._gate = None
            self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def getPeer(self) -> IAddress:
        return self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        return self.transport.getHost()  # type: ignore[union-attr]

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register the wrapped protocol's producer: paused while the
        transport's write buffer is full, resumed when it drains.

        :raises RuntimeError: when a producer is registered already.
        :raises ValueError: for a pull producer (``streaming`` false): no
            protocol here needs one.
        """
        if self._producer is not None:
            raise RuntimeError(f"{self._producer!r} is registered already")
        if not streaming:
            raise ValueError("the secure channel takes streaming producers only")
        if self._state is _CLOSED:
            producer.stopProducing()
            return
        self._producer = producer
        if self._output_full:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._producer = None

    def pauseProducing(self) -> None:
        """
        Stop handing received data to the wrapped protocol and reading from
        the peer, until :meth:`resumeProducing`.
        """
        self._pause_reading("wrapped")

    def resumeProducing(self) -> None:
        self._resume_reading("wrapped")

    def stopProducing(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

    # -- test hooks -------------------------------------------------------

    def cipher_states_for_testing(self) -> tuple[CipherState | None, CipherState | None]:
        """
        The ``(send, receive)`` cipher states, for tests that must reach
        the end of the nonce space.
        """
        return self._send, self._recv


@implementer(IProtocolFactory)
class SecureChannelFactory(Factory):
    """
    Wraps ``wrapped_factory`` so that its protocols run inside secure
    channels.

    :param identity: this node's identity: its static key proves it.
    :param wrapped_factory: builds the protocol that runs inside each channel.
    :param clock: schedules timeouts and the end-of-turn flush.
    :param initiator: whether this factory dials (``True``) or accepts.
    :param expected_peer: for a dialling factory, the peer that must answer:
        IK is used; ``None`` uses XX and accepts any peer.
    :param pattern: force ``"XX"`` even when the peer is known.
    """

    protocol = SecureChannelProtocol
    # One factory per dial would log "Starting factory" every time.
    noisy = False

    #: Channels that failed, by error class name (``"HandshakeFailed"``,
    #: ``"Truncated"``, ...), shared with the dialling copies.
    failures: Counter[str]
    #: Where failures are logged, at a bounded rate per kind.
    failure_log: RateLimitedLog

    def __init__(
        self,
        identity: Identity,
        wrapped_factory: IProtocolFactory,
        clock: Any,
        initiator: bool,
        expected_peer: PeerID | None = None,
        pattern: str | None = None,
        settings: ChannelSettings | None = None,
        replay_cache: _ReplayCache | None = None,
        channels: _ChannelSet | None = None,
    ) -> None:
        self.identity = identity
        #: The Noise static key pair, derived once: every handshake uses it.
        self.static_key = KeyPair.from_private(identity.x25519_private_key)
        self.wrapped_factory = wrapped_factory
        self.clock = clock
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.settings = settings or ChannelSettings()
        self.replay_cache = replay_cache or _ReplayCache(self.settings.replay_window)
        #: Every connected channel of this factory and its dialling copies,
        #: open or still in its handshake.
        self.channels = _ChannelSet() if channels is None else channels
        self.failures = Counter()
        self.failure_log = RateLimitedLog(SecureChannelProtocol.log, clock)
        #: The bytes every channel of this factory and its dialling copies
        #: wrote and read.
        self.traffic = Traffic()
        self._pattern = _pattern_code(pattern, expected_peer, initiator)

    def buildProtocol(self, addr: IAddress) -> SecureChannelProtocol | None:  # type: ignore[override]
        wrapped = self.wrapped_factory.buildProtocol(addr)
        if wrapped is None:
            return None
        return SecureChannelProtocol(
            self, wrapped, self.initiator, self.expected_peer, self._pattern
        )

    def for_dialling(
        self, expected_peer: PeerID | None, pattern: str | None = None
    ) -> SecureChannelFactory:
        """
        A factory for dialling ``expected_peer`` that shares this one's
        identity, keys, settings, replay cache, set of channels, failure
        counts, log budget and traffic counts.
        """
        dialling = copy.copy(self)
        dialling.initiator = True
        dialling.expected_peer = expected_peer
        dialling._pattern = _pattern_code(pattern, expected_peer, initiator=True)
        return dialling

    def close_all(self) -> Deferred[None]:
        """
        Close every channel, open or handshaking.

        :returns: a Deferred that fires when all are closed.
        """
        d = self.channels.when_empty()
        for protocol in list(self.channels.protocols):
            if protocol._state is _OPEN:
                protocol.loseConnection()
            else:
                protocol.abortConnection()
        return d
