"""
Tests for peer IDs and identities.
"""

import base64
import hashlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.identity import (
    PEER_ID_LENGTH,
    BadSignature,
    Identity,
    InvalidPeerID,
    PeerID,
    encode_onion,
)

_KEY = bytes(range(32))


def _spec_onion(public_key: bytes, version: int = 3) -> str:
    checksum = hashlib.sha3_256(b".onion checksum" + public_key + bytes([version])).digest()[:2]
    raw = public_key + checksum + bytes([version])
    return base64.b32encode(raw).decode().lower()


class PeerIDTests(SynchronousTestCase):
    def test_text_form(self) -> None:
        """
        The text form is Tor's v3 onion encoding: 56 lowercase base32
        characters with a SHA3-256 checksum and version byte 3.
        """
        text = str(PeerID(_KEY))
        self.assertEqual(text, _spec_onion(_KEY))
        self.assertEqual(len(text), PEER_ID_LENGTH)
        self.assertEqual(text, text.lower())

    @given(st.binary(min_size=32, max_size=32))
    def test_round_trip(self, key: bytes) -> None:
        """
        Parsing the text form of any key gives that key back, in either case.
        """
        text = encode_onion(key)
        self.assertEqual(PeerID.parse(text).public_key, key)
        self.assertEqual(PeerID.parse(text.upper()).public_key, key)

    def test_wrong_length(self) -> None:
        """
        A text of the wrong length is rejected, and the message says so.
        """
        text = str(PeerID(_KEY))
        for bad in (text[:-1], text + "a", ""):
            e = self.assertRaises(InvalidPeerID, PeerID.parse, bad)
            self.assertIn("56 characters", str(e))

    def test_not_base32(self) -> None:
        """
        Characters outside base32 are rejected and named.
        """
        text = str(PeerID(_KEY))
        e = self.assertRaises(InvalidPeerID, PeerID.parse, "1" + text[1:-1] + "8")
        self.assertIn("not base32", str(e))
        self.assertIn("18", str(e))

    def test_bad_checksum(self) -> None:
        """
        A single changed character (a typo) fails the checksum.
        """
        text = str(PeerID(_KEY))
        typo = ("b" if text[0] != "b" else "c") + text[1:]
        e = self.assertRaises(InvalidPeerID, PeerID.parse, typo)
        self.assertIn("checksum", str(e))

    def test_wrong_version(self) -> None:
        """
        A well-formed encoding with another version byte is rejected.
        """
        e = self.assertRaises(InvalidPeerID, PeerID.parse, _spec_onion(_KEY, version=2))
        self.assertIn("version 2", str(e))

    @given(st.text(max_size=80))
    def test_garbage(self, text: str) -> None:
        """
        Any text either parses to a peer ID whose text form is the input, or
        raises InvalidPeerID: nothing else.
        """
        try:
            peer_id = PeerID.parse(text)
        except InvalidPeerID:
            return
        self.assertEqual(str(peer_id), text.strip().lower())

    def test_key_length_checked(self) -> None:
        """
        A PeerID holds exactly 32 bytes.
        """
        self.assertRaises(InvalidPeerID, PeerID, b"x" * 31)


class IdentityTests(SynchronousTestCase):
    def test_sign_verify(self) -> None:
        """
        A signature made by an identity verifies under its peer ID, and not
        under another's or for another message.
        """
        alice, bob = Identity.generate(), Identity.generate()
        signature = alice.sign(b"hello")
        alice.peer_id.verify(b"hello", signature)
        self.assertRaises(BadSignature, bob.peer_id.verify, b"hello", signature)
        self.assertRaises(BadSignature, alice.peer_id.verify, b"hellO", signature)
        self.assertRaises(BadSignature, alice.peer_id.verify, b"hello", b"short")

    def test_seed_round_trip(self) -> None:
        """
        An identity rebuilt from its seed has the same peer ID.
        """
        alice = Identity.generate()
        self.assertEqual(Identity.from_seed(alice.seed).peer_id, alice.peer_id)

    def test_x25519_pair(self) -> None:
        """
        The X25519 private key matches the X25519 form of the peer ID, so a
        Noise handshake with it proves the peer ID.
        """
        from nacl.bindings import crypto_scalarmult_base

        alice = Identity.generate()
        self.assertEqual(
            crypto_scalarmult_base(alice.x25519_private_key), alice.peer_id.x25519_public_key
        )

    def test_repr_hides_secret(self) -> None:
        """
        The repr of an identity shows the peer ID, never the seed.
        """
        alice = Identity.generate()
        self.assertIn(str(alice.peer_id), repr(alice))
        self.assertNotIn(alice.seed.hex(), repr(alice))
