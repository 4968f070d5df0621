"""
Interoperability of our Noise with the ``noiseprotocol`` package: in process
for every pattern and hash (which covers patterns the published vectors do
not), and over real TCP on 127.0.0.1 for the two protocols the secure channel
uses, each side playing each role.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Protocol

from noise.connection import Keypair, NoiseConnection
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.channel import (
    PATTERNS,
    CipherState,
    HandshakePattern,
    HandshakeState,
    KeyPair,
    NoiseProtocol,
)

XX = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
IK = "Noise_IK_25519_ChaChaPoly_BLAKE2b"


class Side(Protocol):
    """
    One end of a Noise session, whichever library implements it.
    """

    complete: bool

    def writes_next(self) -> bool: ...
    def write(self, payload: bytes) -> bytes: ...
    def read(self, message: bytes) -> bytes: ...
    def encrypt(self, plaintext: bytes) -> bytes: ...
    def decrypt(self, ciphertext: bytes) -> bytes: ...
    def handshake_hash(self) -> bytes: ...
    def rekey(self) -> None: ...


class Ours:
    """
    Our :class:`HandshakeState`, then its split cipher states.
    """

    def __init__(self, handshake: HandshakeState) -> None:
        self._handshake = handshake
        self.complete = False
        self._send: CipherState | None = None
        self._receive: CipherState | None = None

    def writes_next(self) -> bool:
        return self._handshake.writes_next

    def _after(self) -> None:
        if self._handshake.complete:
            self.complete = True
            self._send, self._receive = self._handshake.split()

    def write(self, payload: bytes) -> bytes:
        message = self._handshake.write_message(payload)
        self._after()
        return message

    def read(self, message: bytes) -> bytes:
        payload = self._handshake.read_message(message)
        self._after()
        return payload

    def encrypt(self, plaintext: bytes) -> bytes:
        assert self._send is not None
        return self._send.encrypt_with_ad(b"", plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        assert self._receive is not None
        return self._receive.decrypt_with_ad(b"", ciphertext)

    def handshake_hash(self) -> bytes:
        return self._handshake.handshake_hash

    def rekey(self) -> None:
        assert self._send is not None and self._receive is not None
        self._send.rekey()
        self._receive.rekey()


class Theirs:
    """
    A ``noiseprotocol`` connection. It does not say whose turn it is, so
    this counts messages against the pattern.
    """

    def __init__(self, connection: NoiseConnection, initiator: bool, messages: int) -> None:
        self._connection = connection
        self._initiator = initiator
        self._messages = messages
        self._index = 0
        self.complete = False

    def writes_next(self) -> bool:
        return not self.complete and (self._index % 2 == 0) == self._initiator

    def _after(self) -> None:
        self._index += 1
        self.complete = self._index == self._messages
        assert self.complete == self._connection.handshake_finished

    def write(self, payload: bytes) -> bytes:
        message = bytes(self._connection.write_message(payload))
        self._after()
        return message

    def read(self, message: bytes) -> bytes:
        payload = bytes(self._connection.read_message(message))
        self._after()
        return payload

    def encrypt(self, plaintext: bytes) -> bytes:
        return bytes(self._connection.encrypt(plaintext))

    def decrypt(self, ciphertext: bytes) -> bytes:
        return bytes(self._connection.decrypt(ciphertext))

    def handshake_hash(self) -> bytes:
        return bytes(self._connection.get_handshake_hash())

    def rekey(self) -> None:
        self._connection.rekey_outbound_cipher()
        self._connection.rekey_inbound_cipher()


def make_sides(
    name: str, ours_initiates: bool, prologue: bytes = b"digitalspring interop"
) -> tuple[Side, Side, bytes, bytes]:
    """
    An initiator and a responder for ``name``, one ours and one theirs.

    :returns: ``(initiator, responder, initiator static public key,
        responder static public key)``.
    """
    noise_protocol = NoiseProtocol.from_name(name)
    psks = [os.urandom(32) for _ in range(noise_protocol.pattern.psk_count)]
    keys = {True: KeyPair.generate(), False: KeyPair.generate()}
    sides: dict[bool, Side] = {}
    for initiator in (True, False):
        role = noise_protocol._roles[initiator]
        mine, peer = keys[initiator], keys[not initiator]
        if initiator == ours_initiates:
            sides[initiator] = Ours(
                HandshakeState(
                    noise_protocol,
                    initiator,
                    prologue,
                    s=mine if role.needs_s else None,
                    rs=peer.public if role.needs_rs else None,
                    psks=psks,
                )
            )
        else:
            connection = NoiseConnection.from_name(name.encode("ascii"))
            if initiator:
                connection.set_as_initiator()
            else:
                connection.set_as_responder()
            connection.set_prologue(prologue)
            if role.needs_s:
                connection.set_keypair_from_private_bytes(Keypair.STATIC, mine.private)
            if role.needs_rs:
                connection.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, peer.public)
            if psks:
                connection.set_psks(psks=psks)
            connection.start_handshake()
            sides[initiator] = Theirs(connection, initiator, len(noise_protocol.pattern.messages))
    return sides[True], sides[False], keys[True].public, keys[False].public


def _names() -> list[str]:
    names = []
    for pattern in PATTERNS:
        messages = len(HandshakePattern.from_name(pattern).messages)
        for modifier in ["", *(f"psk{i}" for i in range(messages + 1))]:
            names.append(f"Noise_{pattern}{modifier}_25519_ChaChaPoly_BLAKE2b")
    for hash_name in ("BLAKE2s", "SHA256", "SHA512"):
        names.extend(f"Noise_{pattern}_25519_ChaChaPoly_{hash_name}" for pattern in PATTERNS)
    return names


class InProcessInteropTests(SynchronousTestCase):
    """
    Both libraries in one process, messages passed by hand.
    """

    def test_every_protocol_both_roles(self) -> None:
        """
        For every pattern (plain and with a psk at every position) and every
        hash, our initiator completes a handshake with a ``noiseprotocol``
        responder and the reverse: payloads and handshake hashes agree, and
        transport messages flow both ways before and after a rekey.
        """
        names = _names()
        self.assertGreater(len(names), 60)
        for name in names:
            for ours_initiates in (True, False):
                initiator, responder, _, _ = make_sides(name, ours_initiates)
                index = 0
                while not (initiator.complete and responder.complete):
                    writer, reader = (
                        (initiator, responder)
                        if initiator.writes_next()
                        else (responder, initiator)
                    )
                    payload = b"handshake payload %d" % index
                    self.assertEqual(reader.read(writer.write(payload)), payload, name)
                    index += 1
                self.assertEqual(initiator.handshake_hash(), responder.handshake_hash(), name)
                for _ in range(2):
                    for a, b in ((initiator, responder), (responder, initiator)):
                        self.assertEqual(b.decrypt(a.encrypt(b"transport")), b"transport")
                    initiator.rekey()
                    responder.rekey()


class FramedNoise(protocol.Protocol):
    """
    Runs one side of a Noise session over a stream, each message framed by
    a 2-byte big-endian length: the handshake, then ``rounds`` transport
    messages from the initiator, each answered by the responder.
    """

    def __init__(self, side: Side, initiator: bool, rounds: int) -> None:
        self.side = side
        self.initiator = initiator
        self.rounds = rounds
        self.handshake_payloads: list[bytes] = []
        self.received: list[bytes] = []
        self.done: defer.Deferred[FramedNoise] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""
        self._pinged = 0

    def _send(self, message: bytes) -> None:
        self.transport.write(struct.pack(">H", len(message)) + message)

    def _ping(self) -> None:
        self._pinged += 1
        self._send(self.side.encrypt(b"ping %d" % self._pinged))

    def _advance(self) -> None:
        while not self.side.complete and self.side.writes_next():
            self._send(self.side.write(b"hello from the %s" % self._role()))
        if self.side.complete and self.initiator and self._pinged == 0:
            self._ping()

    def _role(self) -> bytes:
        return b"initiator" if self.initiator else b"responder"

    def connectionMade(self) -> None:
        self._run(self._advance)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 2:
            (length,) = struct.unpack(">H", self._buffer[:2])
            if len(self._buffer) < 2 + length:
                return
            frame, self._buffer = self._buffer[2 : 2 + length], self._buffer[2 + length :]
            self._run(lambda frame=frame: self._frame(frame))

    def _frame(self, frame: bytes) -> None:
        if not self.side.complete:
            self.handshake_payloads.append(self.side.read(frame))
            self._advance()
            return
        message = self.side.decrypt(frame)
        self.received.append(message)
        if not self.initiator:
            self._send(self.side.encrypt(b"pong to " + message))
        elif self._pinged < self.rounds:
            self._ping()
        else:
            self.done.callback(self)
            self.transport.loseConnection()

    def _run(self, step: Any) -> None:
        try:
            step()
        except Exception:
            if not self.done.called:
                self.done.errback()
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            if self.initiator:
                self.done.errback(reason)
            else:
                self.done.callback(self)
        self.lost.callback(None)


class TCPInteropTests(TestCase):
    """
    Our Noise against ``noiseprotocol`` over real TCP on 127.0.0.1.
    """

    ROUNDS = 4

    @defer.inlineCallbacks
    def _session(self, name: str, ours_initiates: bool) -> Any:
        from twisted.internet import reactor

        initiator_side, responder_side, initiator_key, responder_key = make_sides(
            name, ours_initiates
        )
        server = FramedNoise(responder_side, False, self.ROUNDS)
        client = FramedNoise(initiator_side, True, self.ROUNDS)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(lambda: server)
        )
        self.addCleanup(port.stopListening)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            protocol.Factory.forProtocol(lambda: client)
        )
        try:
            yield defer.gatherResults([client.done, server.done], consumeErrors=True)
        finally:
            client.transport.loseConnection()
            yield defer.gatherResults([client.lost, server.lost])
        messages = len(NoiseProtocol.from_name(name).pattern.messages)
        self.assertEqual(len(client.handshake_payloads) + len(server.handshake_payloads), messages)
        self.assertTrue(all(p.startswith(b"hello from the ") for p in client.handshake_payloads))
        self.assertEqual(server.received, [b"ping %d" % i for i in range(1, self.ROUNDS + 1)])
        self.assertEqual(
            client.received, [b"pong to ping %d" % i for i in range(1, self.ROUNDS + 1)]
        )
        self.assertEqual(initiator_side.handshake_hash(), responder_side.handshake_hash())
        ours = initiator_side if ours_initiates else responder_side
        assert isinstance(ours, Ours)
        expected = responder_key if ours_initiates else initiator_key
        self.assertEqual(ours._handshake.remote_static, expected)

    def test_xx_ours_initiates(self) -> None:
        """
        Noise_XX_25519_ChaChaPoly_BLAKE2b: our initiator and a noiseprotocol
        responder over TCP complete the handshake, learn each other's static
        key and exchange transport messages both ways.
        """
        return self._session(XX, True)

    def test_xx_theirs_initiates(self) -> None:
        """
        Noise_XX_25519_ChaChaPoly_BLAKE2b: a noiseprotocol initiator and our
        responder over TCP complete the handshake and exchange transport
        messages both ways.
        """
        return self._session(XX, False)

    def test_ik_ours_initiates(self) -> None:
        """
        Noise_IK_25519_ChaChaPoly_BLAKE2b: our initiator, knowing the
        noiseprotocol responder's key, completes the handshake over TCP and
        exchanges transport messages both ways.
        """
        return self._session(IK, True)

    def test_ik_theirs_initiates(self) -> None:
        """
        Noise_IK_25519_ChaChaPoly_BLAKE2b: a noiseprotocol initiator reaches
        our responder over TCP, which learns its static key; transport
        messages flow both ways.
        """
        return self._session(IK, False)
