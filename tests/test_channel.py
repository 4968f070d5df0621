"""
Tests for the secure channel: Noise as a protocol wrapper, on a fake
transport and a fake clock.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from digitalspring.channel import (
    MAX_FRAME,
    BadFrame,
    ChannelError,
    ChannelSettings,
    FrameTimeout,
    HandshakeFailed,
    HandshakeTimeout,
    ISecureChannel,
    NotAChannel,
    PeerMismatch,
    ReplayedHandshake,
    SecureChannelFactory,
    SecureChannelProtocol,
    Truncated,
    VersionMismatch,
    WriteStalled,
    _secure,
)
from digitalspring.identity import Identity

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)


class Recorder(Protocol):
    """
    A protocol that records what reaches it inside the channel.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.connected_peer: Any = None
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.connected_peer = self.transport.peer_id  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason


class WireTransport(FakeTransport):
    """
    A fake transport that also keeps every write as it was made.
    """

    def __init__(self, protocol: Any, isServer: bool) -> None:
        super().__init__(protocol, isServer)
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        self.write(b"".join(iovec))


class Pair:
    """
    A dialling and an accepting channel connected through fake transports.
    """

    def __init__(
        self,
        dialler: Identity = ALICE,
        listener: Identity = BOB,
        expected: Identity | None = BOB,
        pattern: str | None = None,
        clock: Clock | None = None,
        channel_settings: ChannelSettings | None = None,
        server_factory: SecureChannelFactory | None = None,
        greet: bool = True,
    ) -> None:
        self.clock = clock or Clock()
        self.client_factory = SecureChannelFactory(
            dialler,
            Factory.forProtocol(Recorder),
            self.clock,
            initiator=True,
            expected_peer=expected.peer_id if expected else None,
            pattern=pattern,
            settings=channel_settings,
        )
        self.server_factory = server_factory or SecureChannelFactory(
            listener,
            Factory.forProtocol(Recorder),
            self.clock,
            initiator=False,
            settings=channel_settings,
        )
        self.client = self.client_factory.buildProtocol(None)  # type: ignore[arg-type]
        self.server = self.server_factory.buildProtocol(None)  # type: ignore[arg-type]
        assert self.client is not None and self.server is not None
        self.client_results: list[IProtocol | Failure] = []
        self.server_results: list[IProtocol | Failure] = []
        self.client_wire = WireTransport(self.client, isServer=False)
        self.server_wire = WireTransport(self.server, isServer=True)
        self.pump: IOPump = connect(
            self.server, self.server_wire, self.client, self.client_wire, greet=False,
            clock=self.clock,
        )
        self.client.when_secured().addBoth(self.client_results.append)
        self.server.when_secured().addBoth(self.server_results.append)
        if greet:
            self.pump.flush()

    @property
    def client_app(self) -> Recorder:
        return self.client.wrappedProtocol  # type: ignore[return-value]

    @property
    def server_app(self) -> Recorder:
        return self.server.wrappedProtocol  # type: ignore[return-value]


def _error(results: list[Any]) -> type[BaseException] | None:
    if results and isinstance(results[0], Failure):
        return type(results[0].value)
    return None


class HandshakeTests(SynchronousTestCase):
    def test_ik(self) -> None:
        """
        Dialling a known peer uses IK; both sides learn each other's proven
        peer ID and the same handshake hash, and data flows both ways.
        """
        pair = Pair()
        self.assertEqual(pair.client.pattern, "IK")
        self.assertEqual(pair.server.pattern, "IK")
        self.assertEqual(pair.client_results, [pair.client_app])
        self.assertEqual(pair.server_results, [pair.server_app])
        self.assertEqual(pair.client_app.connected_peer, BOB.peer_id)
        self.assertEqual(pair.server_app.connected_peer, ALICE.peer_id)
        self.assertEqual(pair.client.handshake_hash, pair.server.handshake_hash)
        self.assertEqual(len(pair.client.handshake_hash), 64)
        pair.client.write(b"hello bob")
        pair.server.write(b"hello alice")
        pair.pump.flush()
        self.assertEqual(pair.server_app.received, b"hello bob")
        self.assertEqual(pair.client_app.received, b"hello alice")

    def test_xx(self) -> None:
        """
        Dialling an address alone uses XX and still proves both peer IDs.
        """
        pair = Pair(expected=None)
        self.assertEqual(pair.client.pattern, "XX")
        self.assertEqual(pair.client_app.connected_peer, BOB.peer_id)
        self.assertEqual(pair.server_app.connected_peer, ALICE.peer_id)

    def test_interfaces(self) -> None:
        """
        The wrapped protocol's transport provides ISecureChannel.
        """
        pair = Pair()
        verifyObject(ISecureChannel, pair.client)
        self.assertTrue(pair.client.initiator)
        self.assertFalse(pair.server.initiator)

    def test_peer_mismatch_xx(self) -> None:
        """
        A peer that proves another identity than the one dialled is dropped
        with PeerMismatch.
        """
        pair = Pair(listener=CAROL, expected=BOB, pattern="XX")
        self.assertEqual(_error(pair.client_results), PeerMismatch)
        self.assertIsNone(pair.client_app.connected_peer)
        self.assertTrue(pair.client_wire.disconnecting)

    def test_ik_to_wrong_peer(self) -> None:
        """
        An IK dial that reaches another peer fails on both sides: that peer
        cannot read the first message.
        """
        pair = Pair(listener=CAROL, expected=BOB)
        self.assertEqual(_error(pair.server_results), HandshakeFailed)
        self.assertEqual(_error(pair.client_results), HandshakeFailed)
        self.assertIsNone(pair.server_app.connected_peer)

    def test_timeout(self) -> None:
        """
        A peer that never answers is dropped with HandshakeTimeout.
        """
        pair = Pair(greet=False)
        pair.clock.advance(31)
        self.assertEqual(_error(pair.client_results), HandshakeTimeout)
        self.assertEqual(_error(pair.server_results), HandshakeTimeout)

    def test_version_mismatch(self) -> None:
        """
        A peer of another channel version is refused with VersionMismatch.
        """
        pair = Pair(greet=False)
        wire = pair.client_wire.getOutBuffer()
        pair.server.dataReceived(b"DSPRING\x01" + wire[8:])
        self.assertEqual(_error(pair.server_results), VersionMismatch)
        self.assertIn("version 1", str(pair.server_results[0].value))  # type: ignore[union-attr]

    def test_prologue_binds_preamble(self) -> None:
        """
        Changing the pattern byte of the preamble in flight fails the
        handshake: the preamble is part of the prologue.
        """
        pair = Pair(greet=False, expected=None)
        wire = pair.client_wire.getOutBuffer()
        pair.server.dataReceived(wire[:8] + b"\x01" + wire[9:])
        pair.pump.flush()
        self.assertIsInstance(pair.server_results[0], Failure)

    def test_replayed_ik_first_message(self) -> None:
        """
        A replayed IK first message is refused with ReplayedHandshake by a
        node that saw it; a node that did not still never connects the
        wrapped protocol, because the replayer cannot confirm the keys.
        """
        pair = Pair(greet=False)
        first = pair.client_wire.getOutBuffer()
        pair.server.dataReceived(first)
        pair.pump.flush()
        self.assertEqual(pair.server_results, [pair.server_app])

        replay = Pair(greet=False, server_factory=pair.server_factory)
        replay.client_wire.getOutBuffer()
        replay.server.dataReceived(first)
        self.assertEqual(_error(replay.server_results), ReplayedHandshake)

        fresh = Pair(greet=False)
        fresh.client_wire.getOutBuffer()
        fresh.server.dataReceived(first)
        fresh.clock.advance(31)
        self.assertIsNone(fresh.server_app.connected_peer)
        self.assertEqual(_error(fresh.server_results), HandshakeTimeout)

    def test_sign_flipped_identity_refused(self) -> None:
        """
        The holder of P who claims -P (the same X25519 static key, so the
        handshake itself succeeds) is refused with HandshakeFailed: one key
        pair proves one peer ID.  Finding 7 of issue 8.
        """
        flipped = ALICE.peer_id.public_key[:31] + bytes([ALICE.peer_id.public_key[31] ^ 0x80])
        honest = _secure._payload
        self.patch(
            _secure,
            "_payload",
            lambda identity: flipped if identity is ALICE else honest(identity),
        )
        for pattern in ("IK", "XX"):
            pair = Pair(pattern=pattern)
            self.assertEqual(_error(pair.server_results), HandshakeFailed, pattern)
            self.assertIn("sign bit", str(pair.server_results[0].value))  # type: ignore[union-attr]
            self.assertIsNone(pair.server_app.connected_peer)

    def test_low_order_ephemeral(self) -> None:
        """
        Handshakes whose ephemeral key is 0, 1 or a low-order point are
        refused with a typed error, not libsodium's RuntimeError.
        """
        low_order = [
            bytes(32),
            b"\x01" + bytes(31),
            bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
            bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
            b"\xec" + b"\xff" * 30 + b"\x7f",
        ]
        for key in low_order:
            pair = Pair(greet=False, expected=None)
            wire = pair.client_wire.getOutBuffer()
            # XX's first message: preamble, length, then e in clear.
            pair.server.dataReceived(wire[:11] + key + wire[43:])
            self.assertIsInstance(pair.server_results[0], Failure, key.hex())
            self.assertIsInstance(pair.server_results[0].value, ChannelError)  # type: ignore[union-attr]

    @settings(max_examples=80, deadline=None)
    @given(st.data())
    def test_flipped_bit_in_handshake(self, data: st.DataObject) -> None:
        """
        A flipped bit anywhere in any handshake message (preamble and length
        prefixes included) fails the channel with a ChannelError on a side
        that reads it, at once or at the handshake timeout, and the other
        side does not stay open.
        """
        pattern = data.draw(st.sampled_from(["IK", "XX"]))
        pair = Pair(greet=False, expected=BOB, pattern=pattern)
        target = data.draw(st.integers(0, 2 if pattern == "XX" else 1))
        for index in range(target + 1):
            sender, receiver = (
                (pair.client_wire, pair.server)
                if index % 2 == 0
                else (pair.server_wire, pair.client)
            )
            wire = bytearray(sender.getOutBuffer() or b"")
            if index == target:
                bit = data.draw(st.integers(0, len(wire) * 8 - 1))
                wire[bit // 8] ^= 1 << (bit % 8)
            receiver.dataReceived(bytes(wire))
        pair.pump.flush()
        pair.clock.advance(31)
        pair.pump.flush()
        receiver_results = pair.server_results if target % 2 == 0 else pair.client_results
        self.assertIsInstance(receiver_results[0], Failure)
        self.assertIsInstance(receiver_results[0].value, ChannelError)  # type: ignore[union-attr]
        for results, app in (
            (pair.client_results, pair.client_app),
            (pair.server_results, pair.server_app),
        ):
            if not isinstance(results[0], Failure):
                # XX's dialler opens after sending the last message; the
                # responder's refusal closes it.
                self.assertIsNotNone(app.lost)


class FramingTests(SynchronousTestCase):
    def _frames(self, wire: bytes) -> list[int]:
        sizes = []
        while wire:
            length = int.from_bytes(wire[:2], "big")
            sizes.append(length)
            wire = wire[2 + length :]
        return sizes

    def test_large_write_split(self) -> None:
        """
        A write larger than a frame is split into frames of at most 65535
        bytes of ciphertext and arrives whole.
        """
        pair = Pair()
        payload = bytes(range(256)) * 1000
        pair.client_wire.writes.clear()
        pair.client.write(payload)
        frames = self._frames(b"".join(pair.client_wire.writes))
        self.assertEqual(len(frames), 4)
        self.assertTrue(all(f <= MAX_FRAME for f in frames))
        pair.pump.flush()
        self.assertEqual(pair.server_app.received, payload)

    def test_flush_is_one_transport_write(self) -> None:
        """
        All the frames of one flush reach the transport in a single write,
        not a write or two per frame.
        """
        pair = Pair()
        pair.client_wire.writes.clear()
        pair.client.write(b"z" * 200000)
        self.assertEqual(len(pair.client_wire.writes), 1)
        self.assertEqual(len(self._frames(pair.client_wire.writes[0])), 4)

    def test_one_frame_per_turn(self) -> None:
        """
        Many small writes in one reactor turn leave as one frame, flushed
        at the end of the turn.
        """
        pair = Pair()
        pair.client_wire.writes.clear()
        for i in range(100):
            pair.client.write(b"%03d" % i)
        self.assertEqual(pair.client_wire.writes, [])
        pair.clock.advance(0)
        self.assertEqual(len(self._frames(b"".join(pair.client_wire.writes))), 1)
        pair.pump.flush()
        self.assertEqual(pair.server_app.received, b"".join(b"%03d" % i for i in range(100)))

    def test_replies_in_receive_flush_together(self) -> None:
        """
        Writes made while handling received data leave as one frame when
        that data has been handled, without waiting for a timer.
        """
        pair = Pair()

        def echo_twice(data: bytes) -> None:
            pair.server.write(data)
            pair.server.write(data)

        pair.server_app.dataReceived = echo_twice  # type: ignore[method-assign]
        pair.server_wire.writes.clear()
        pair.client.write(b"ping")
        pair.clock.advance(0)
        pair.server.dataReceived(pair.client_wire.getOutBuffer())
        self.assertEqual(len(pair.server_wire.writes), 1)

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.binary(min_size=1, max_size=70000), min_size=1, max_size=5), st.data())
    def test_any_chunking(self, chunks: list[bytes], data: st.DataObject) -> None:
        """
        Whatever the writes and however the wire splits them, the bytes
        arrive in order and complete.
        """
        pair = Pair()
        for chunk in chunks:
            pair.client.write(chunk)
        pair.clock.advance(0)
        wire = pair.client_wire.getOutBuffer()
        cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
        start = 0
        for cut in [*cuts, len(wire)]:
            pair.server.dataReceived(wire[start:cut])
            start = cut
        self.assertEqual(bytes(pair.server_app.received), b"".join(chunks))


class BadInputTests(SynchronousTestCase):
    def _lost(self, pair: Pair, side: str = "server") -> type[BaseException]:
        app = pair.server_app if side == "server" else pair.client_app
        self.assertIsNotNone(app.lost)
        assert app.lost is not None
        return type(app.lost.value)

    def test_garbage_before_handshake(self) -> None:
        """
        Bytes that are not the preamble end the connection with NotAChannel.
        """
        pair = Pair(greet=False)
        pair.client_wire.getOutBuffer()
        pair.server.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(_error(pair.server_results), NotAChannel)
        self.assertTrue(pair.server_wire.disconnecting)

    def test_garbage_during_handshake(self) -> None:
        """
        Garbage in place of a handshake message fails the handshake.
        """
        pair = Pair(greet=False)
        wire = pair.client_wire.getOutBuffer()
        pair.server.dataReceived(wire[:9] + b"\x00\x60" + b"\x55" * 0x60)
        self.assertEqual(_error(pair.server_results), HandshakeFailed)

    def test_garbage_after_handshake(self) -> None:
        """
        Garbage after the handshake ends the open channel with BadFrame,
        and the wrapped protocol learns it through connectionLost.
        """
        pair = Pair()
        pair.server.dataReceived(b"\x00\x20" + b"\x42" * 0x20)
        self.assertEqual(self._lost(pair), BadFrame)
        self.assertTrue(pair.server_wire.disconnecting)

    def test_flipped_bit_in_transport_message(self) -> None:
        """
        A flipped bit in a transport frame ends the channel with BadFrame
        and delivers nothing of that frame.
        """
        pair = Pair()
        pair.client.write(b"secret message")
        pair.clock.advance(0)
        wire = bytearray(pair.client_wire.getOutBuffer())
        wire[5] ^= 0x10
        pair.server.dataReceived(bytes(wire))
        self.assertEqual(self._lost(pair), BadFrame)
        self.assertEqual(pair.server_app.received, b"")

    def test_oversize_handshake_frame(self) -> None:
        """
        A handshake frame that announces more than a handshake can be is
        refused at once, before its bytes arrive.
        """
        pair = Pair(greet=False)
        wire = pair.client_wire.getOutBuffer()
        pair.server.dataReceived(wire[:9] + b"\xff\xff")
        self.assertEqual(_error(pair.server_results), BadFrame)

    def test_short_frame(self) -> None:
        """
        A transport frame shorter than a Noise tag is refused.
        """
        pair = Pair()
        pair.server.dataReceived(b"\x00\x05hello")
        self.assertEqual(self._lost(pair), BadFrame)

    def test_lying_length_bounded(self) -> None:
        """
        A frame that announces 65535 bytes and sends fewer keeps at most one
        frame in memory, and is dropped with FrameTimeout when the rest
        never comes.
        """
        pair = Pair()
        pair.server.dataReceived(b"\xff\xff" + b"x" * 60000)
        self.assertLessEqual(len(pair.server._inbox), MAX_FRAME + 2)
        pair.clock.advance(61)
        self.assertEqual(self._lost(pair), FrameTimeout)

    def test_slow_partial_frames(self) -> None:
        """
        A frame trickled a byte at a time, slower than the frame timeout,
        is dropped even though bytes keep coming.
        """
        pair = Pair()
        pair.server.dataReceived(b"\x00\x40")
        for _ in range(70):
            pair.clock.advance(1)
            if pair.server_app.lost is None:
                pair.server.dataReceived(b"x")
        self.assertEqual(self._lost(pair), FrameTimeout)

    def test_frames_straddling_reads_keep_flowing(self) -> None:
        """
        A long stream in which every read ends inside a frame is not
        dropped: each frame has the frame timeout from when it began, not
        from when the inbox was last empty.
        """
        pair = Pair()
        pair.client_wire.writes.clear()
        for i in range(20):
            pair.client.write(b"%02d" % i * 50)
            pair.clock.advance(0)
        wire = pair.client_wire.getOutBuffer()
        frame = len(wire) // 20
        cuts = [0, *range(frame // 2, len(wire), frame), len(wire)]
        for start, stop in pairwise(cuts):
            pair.server.dataReceived(wire[start:stop])
            self.assertTrue(pair.server._inbox or stop == len(wire))
            pair.clock.advance(10)
        self.assertIsNone(pair.server_app.lost)
        self.assertEqual(
            bytes(pair.server_app.received), b"".join(b"%02d" % i * 50 for i in range(20))
        )

    def test_truncated_handshake(self) -> None:
        """
        A connection that closes in the middle of a handshake message
        reports HandshakeFailed.
        """
        pair = Pair(greet=False)
        wire = pair.client_wire.getOutBuffer()
        pair.server.dataReceived(wire[:20])
        pair.server.connectionLost(Failure(Exception("gone")))
        self.assertEqual(_error(pair.server_results), HandshakeFailed)

    def test_nonce_exhaustion(self) -> None:
        """
        A channel whose nonces run out closes with a typed error instead of
        reusing a nonce.
        """
        pair = Pair()
        send, _ = pair.client.cipher_states_for_testing()
        assert send is not None
        send.set_nonce_for_testing(2**64 - 2)
        pair.client.write(b"last")
        pair.clock.advance(0)
        pair.client.write(b"one too many")
        pair.clock.advance(0)
        self.assertEqual(self._lost(pair, "client"), BadFrame)
        self.assertIn("nonce", str(pair.client_app.lost.value))  # type: ignore[union-attr]


class RekeyTests(SynchronousTestCase):
    def test_rekey_after_budget(self) -> None:
        """
        After the frame budget both sides rekey at the same frame: the key
        changes and data keeps flowing.
        """
        pair = Pair(channel_settings=ChannelSettings(rekey_frames=3))
        send, _ = pair.client.cipher_states_for_testing()
        assert send is not None
        keys = set()
        for i in range(10):
            keys.add(send._k)
            pair.client.write(b"%d," % i)
            pair.pump.flush()
        self.assertEqual(pair.server_app.received, b"".join(b"%d," % i for i in range(10)))
        self.assertGreaterEqual(len(keys), 3)

    def test_rekey_after_bytes(self) -> None:
        """
        The byte budget rekeys too.
        """
        pair = Pair(channel_settings=ChannelSettings(rekey_bytes=1000))
        send, _ = pair.client.cipher_states_for_testing()
        assert send is not None
        before = send._k
        pair.client.write(b"x" * 5000)
        pair.pump.flush()
        self.assertNotEqual(send._k, before)
        pair.client.write(b"y" * 10)
        pair.pump.flush()
        self.assertEqual(pair.server_app.received, b"x" * 5000 + b"y" * 10)


class LifecycleTests(SynchronousTestCase):
    def test_close_delivers_pending(self) -> None:
        """
        loseConnection sends what was written before it, then the
        authenticated end of stream (an empty transport frame), then closes;
        both wrapped protocols see a clean close.
        """
        pair = Pair()
        pair.client_wire.writes.clear()
        pair.client.write(b"bye")
        pair.client.loseConnection()
        self.assertEqual(
            [len(w) for w in pair.client_wire.writes],
            [2 + 3 + _secure.TAG_LENGTH, 2 + _secure.TAG_LENGTH],
        )
        pair.pump.flush()
        self.assertEqual(pair.server_app.received, b"bye")
        assert pair.server_app.lost is not None and pair.client_app.lost is not None
        self.assertIsInstance(pair.server_app.lost.value, ConnectionDone)
        self.assertIsInstance(pair.client_app.lost.value, ConnectionDone)

    def test_fin_at_frame_boundary_is_truncation(self) -> None:
        """
        A stream cut at a frame boundary (the transport closes, no end of
        stream) reaches the wrapped protocol as Truncated, after the data
        that did arrive, and is counted.  Finding 6 of issue 8.
        """
        pair = Pair()
        pair.client.write(b"the first half")
        pair.pump.flush()
        pair.client_wire.loseConnection()
        pair.pump.flush()
        self.assertEqual(pair.server_app.received, b"the first half")
        assert pair.server_app.lost is not None
        self.assertIsInstance(pair.server_app.lost.value, Truncated)
        self.assertEqual(pair.server_factory.failures["Truncated"], 1)

    def test_connection_lost_without_end_is_truncation(self) -> None:
        """
        A connection that is lost (reset, aborted) without the end of
        stream is Truncated too, and the message keeps the transport's
        reason.
        """
        pair = Pair()
        pair.server.connectionLost(Failure(ConnectionLost("reset by peer")))
        assert pair.server_app.lost is not None
        self.assertIsInstance(pair.server_app.lost.value, Truncated)
        self.assertIn("reset by peer", str(pair.server_app.lost.value))

    def test_data_after_end_refused(self) -> None:
        """
        Frames after the peer's end of stream are refused with BadFrame,
        not delivered.
        """
        pair = Pair()
        send, _ = pair.client.cipher_states_for_testing()
        assert send is not None
        end = send.encrypt_with_ad(b"", b"")
        more = send.encrypt_with_ad(b"", b"smuggled")
        pair.server.dataReceived(
            len(end).to_bytes(2, "big") + end + len(more).to_bytes(2, "big") + more
        )
        self.assertEqual(pair.server_app.received, b"")
        assert pair.server_app.lost is not None
        self.assertIsInstance(pair.server_app.lost.value, BadFrame)

    def test_close_that_never_leaves_is_cut_off(self) -> None:
        """
        A closing channel whose last bytes the peer never takes is aborted
        after the write stall timeout instead of lingering.
        """
        pair = Pair()
        pair.client.loseConnection()
        pair.clock.advance(61)
        assert pair.client_app.lost is not None
        self.assertIsInstance(pair.client_app.lost.value, WriteStalled)

    def test_factory_returns_channel(self) -> None:
        """
        The factory builds SecureChannelProtocol wrapping the inner
        factory's protocol, and shares its replay cache with dialling
        copies.
        """
        factory = SecureChannelFactory(BOB, Factory.forProtocol(Recorder), Clock(), False)
        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        self.assertIsInstance(protocol, SecureChannelProtocol)
        dialling = factory.for_dialling(ALICE.peer_id)
        self.assertIs(dialling.replay_cache, factory.replay_cache)
        self.assertIs(dialling.failures, factory.failures)
        self.assertIs(dialling.failure_log, factory.failure_log)
        self.assertIs(dialling.traffic, factory.traffic)


class TrafficTests(SynchronousTestCase):
    def test_counts_every_byte_on_the_wire(self) -> None:
        """
        Each factory counts the bytes its channels wrote to their transport
        (preamble, handshake, frames with headers and tags, the end of
        stream) and read from it: what each wire carried each way.
        """
        pair = Pair()
        pair.client.write(b"x" * 200_000)
        pair.server.write(b"y" * 10)
        pair.pump.flush()
        pair.client.loseConnection()
        pair.pump.flush()
        sent_by_client = sum(len(w) for w in pair.client_wire.writes)
        sent_by_server = sum(len(w) for w in pair.server_wire.writes)
        self.assertGreater(sent_by_client, 200_000)
        self.assertEqual(
            (pair.client_factory.traffic.sent, pair.client_factory.traffic.received),
            (sent_by_client, sent_by_server),
        )
        self.assertEqual(
            (pair.server_factory.traffic.sent, pair.server_factory.traffic.received),
            (sent_by_server, sent_by_client),
        )


class FailureLogTests(SynchronousTestCase):
    def test_failures_counted_and_logged_at_a_bounded_rate(self) -> None:
        """
        Every failed channel is counted by error class in the factory's
        ``failures`` (shared with its dialling copies), but a flood of them
        logs a bounded number of warnings.  Finding 9 of issue 8.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        server_factory = SecureChannelFactory(
            BOB, Factory.forProtocol(Recorder), clock, initiator=False
        )
        dialling = server_factory.for_dialling(CAROL.peer_id)
        for _ in range(3):
            dial = dialling.buildProtocol(None)  # type: ignore[arg-type]
            assert dial is not None
            dial.makeConnection(FakeTransport(dial, isServer=False))
        clock.advance(31)
        self.assertEqual(server_factory.failures["HandshakeTimeout"], 3)
        for _ in range(500):
            pair = Pair(greet=False, clock=clock, server_factory=server_factory)
            pair.client_wire.getOutBuffer()
            pair.server.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(server_factory.failures["NotAChannel"], 500)
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 3 + 10)  # each kind's burst, no more

    def test_open_is_logged_at_debug(self) -> None:
        """
        An opening channel logs nothing louder than debug.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pair = Pair()
        pair.client.loseConnection()
        pair.pump.flush()
        self.assertEqual(
            [e for e in events if e.get("log_level", LogLevel.debug) > LogLevel.debug], []
        )

