"""
What a network observer of a channel learns, and what a later leak of both
peers' identity keys opens of a recorded channel: the properties
``docs/threat-model.rst`` cites for the channel, on a fake wire.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from digitalspring.channel import DecryptError, HandshakeState, KeyPair, NoiseProtocol
from digitalspring.channel._secure import PREAMBLE_LENGTH, PROLOGUE_PREFIX
from tests.test_channel import ALICE, BOB, Pair

SECRET_UP = b"the golden jubilee is on the 12th"
SECRET_DOWN = b"I will bring the cake"


def _frames(stream: bytes) -> list[bytes]:
    """
    The Noise messages of one direction of a channel, its preamble cut off.
    """
    out = []
    offset = 0
    while offset < len(stream):
        length = int.from_bytes(stream[offset : offset + 2], "big")
        out.append(stream[offset + 2 : offset + 2 + length])
        offset += 2 + length
    return out


class Transcript:
    """
    A channel between Alice (dialling) and Bob, run on a fake wire that
    keeps every byte, with the ephemeral key pairs both sides made.
    """

    def __init__(self, case: SynchronousTestCase, pattern: str) -> None:
        made: list[KeyPair] = []
        real = KeyPair.generate

        def recording() -> KeyPair:
            pair = real()
            made.append(pair)
            return pair

        case.patch(KeyPair, "generate", recording)
        pair = Pair(expected=BOB if pattern == "IK" else None)
        pair.client.write(SECRET_UP)
        pair.server.write(SECRET_DOWN)
        pair.pump.flush()
        case.assertEqual(pair.server_app.received, SECRET_UP)
        case.assertEqual(pair.client_app.received, SECRET_DOWN)
        self.pattern = pattern
        self.preamble = b"".join(pair.client_wire.writes)[:PREAMBLE_LENGTH]
        self.up = b"".join(pair.client_wire.writes)
        self.down = b"".join(pair.server_wire.writes)
        self.up_frames = _frames(self.up[PREAMBLE_LENGTH:])
        self.down_frames = _frames(self.down)
        by_public = {p.public: p for p in made}
        self.listener_ephemeral = by_public[self.down_frames[0][:32]]

    def _listener(self, ephemeral: KeyPair | None) -> HandshakeState:
        protocol = NoiseProtocol.from_name(f"Noise_{self.pattern}_25519_ChaChaPoly_BLAKE2b")
        return HandshakeState(
            protocol,
            False,
            prologue=PROLOGUE_PREFIX + self.preamble,
            s=BOB.x25519_private_key,
            e=ephemeral,
        )

    def first_payload(self) -> bytes:
        """
        What Bob's identity key alone reads of Alice's first handshake
        message.
        """
        return self._listener(None).read_message(self.up_frames[0])

    def listener_replay(self, ephemeral: KeyPair | None) -> bytes:
        """
        What an attacker holding Bob's identity key reads of Alice's side
        of the recorded session, by running Bob's side of the handshake
        again on the recorded messages with ``ephemeral`` (the recorded
        one, or ``None`` for a fresh one, all that is left once Bob's node
        deleted it).

        :raises DecryptError: when the keys it derives do not open Alice's
            frames.
        """
        bob = self._listener(ephemeral)
        bob.read_message(self.up_frames[0])
        bob.write_message(BOB.peer_id.public_key)
        rest = self.up_frames[1:]
        if self.pattern == "XX":
            bob.read_message(rest[0])
            rest = rest[1:]
        _, receive = bob.split()
        return b"".join(receive.decrypt_with_ad(b"", frame) for frame in rest)


class ObserverTests(SynchronousTestCase):
    """
    A network observer sees the preamble, frame lengths and timing, and
    neither peer's identity nor anything they say.
    """

    def _check(self, pattern: str) -> None:
        transcript = Transcript(self, pattern)
        wire = transcript.up + transcript.down
        self.assertTrue(transcript.up.startswith(b"DSPRING\x02"))
        for identity in (ALICE, BOB):
            self.assertNotIn(identity.peer_id.public_key, wire)
            self.assertNotIn(identity.peer_id.x25519_public_key, wire)
        for secret in (SECRET_UP, SECRET_DOWN):
            self.assertNotIn(secret, wire)
        # The secrets did cross this wire, encrypted: the session's own keys
        # find them there.
        self.assertIn(SECRET_UP, transcript.listener_replay(transcript.listener_ephemeral))

    def test_ik_shows_no_identity_or_content(self) -> None:
        """
        IK (the dialler knows the peer): neither Ed25519 identity, nor its
        X25519 static key, nor the data appears on the wire.
        """
        self._check("IK")

    def test_xx_shows_no_identity_or_content(self) -> None:
        """
        XX (the dialler has only an address): the same.
        """
        self._check("XX")


class ChannelForwardSecrecyTests(SynchronousTestCase):
    """
    A recorded channel stays closed to whoever later holds both identity
    keys, once the ephemeral keys are gone.
    """

    def _check(self, pattern: str) -> None:
        transcript = Transcript(self, pattern)
        # With the ephemeral key the node deleted, the replay opens
        # Alice's frames: the attack is the right one.
        opened = transcript.listener_replay(transcript.listener_ephemeral)
        self.assertIn(SECRET_UP, opened)
        # With both identity keys and a fresh ephemeral, it does not.
        self.assertRaises(DecryptError, transcript.listener_replay, None)
        for leaked in (ALICE, BOB):
            as_ephemeral = KeyPair.from_private(leaked.x25519_private_key)
            self.assertRaises(DecryptError, transcript.listener_replay, as_ephemeral)

    def test_ik_leaked_identities_open_nothing(self) -> None:
        """
        IK: the leaked keys derive no transport key.  Bob's identity key
        does read Alice's first handshake message, which is sealed to it:
        it names Alice, so a leak of a listener's key tells who dialled it
        in sessions recorded before.
        """
        self._check("IK")
        self.assertEqual(Transcript(self, "IK").first_payload(), ALICE.peer_id.public_key)

    def test_xx_leaked_identities_open_nothing(self) -> None:
        """
        XX: the same, and the first message names nobody.
        """
        self._check("XX")
        self.assertEqual(Transcript(self, "XX").first_payload(), b"")
