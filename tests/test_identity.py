"""
Tests for peer IDs and identities.
"""

import base64
import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.dht import MalformedRecord, PeerRecord, encode_record, verify_record
from digitalspring.dht._record import RECORD_DOMAIN
from digitalspring.identity import (
    PEER_ID_LENGTH,
    BadSignature,
    Identity,
    InvalidPeerID,
    KeyFileError,
    NonCanonicalPeerID,
    PeerID,
    decode_onion,
    encode_onion,
    load_identity,
)
from digitalspring.identity._keyfile import MAGIC, _checksum

_KEY = Identity.from_seed(b"k" * 32).peer_id.public_key
_P = 2**255 - 19
#: The eight points of small order (Ed25519's torsion group), encoded.
_TORSION = [
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    )
]
seeds = st.binary(min_size=32, max_size=32)


def _negate(public_key: bytes) -> bytes:
    """
    The encoding of ``-P``: the same y, the other sign of x.
    """
    return public_key[:31] + bytes([public_key[31] ^ 0x80])


def _sign_as_negation(seed: bytes, message: bytes) -> tuple[bytes, bytes]:
    """
    What the holder of ``seed`` can do without any library's help: sign
    ``message`` under ``-P`` with the secret scalar ``-a`` (RFC 8032's
    signing, with the negated scalar).

    :returns: ``-P`` and the signature.
    """
    digest = hashlib.sha512(seed).digest()
    clamped = bytearray(digest[:32])
    clamped[0] &= 248
    clamped[31] &= 127
    clamped[31] |= 64
    scalar = bindings.crypto_core_ed25519_scalar_reduce(bytes(clamped) + bytes(32))
    negated = bindings.crypto_core_ed25519_scalar_negate(scalar)
    public = _negate(bytes(SigningKey(seed).verify_key))
    nonce = bindings.crypto_core_ed25519_scalar_reduce(
        hashlib.sha512(digest[32:] + message).digest()
    )
    r = bindings.crypto_scalarmult_ed25519_base_noclamp(nonce)
    k = bindings.crypto_core_ed25519_scalar_reduce(hashlib.sha512(r + public + message).digest())
    s = bindings.crypto_core_ed25519_scalar_add(
        nonce, bindings.crypto_core_ed25519_scalar_mul(k, negated)
    )
    return public, r + s


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
        Decoding the text form of any key gives that key back, in either
        case.
        """
        text = encode_onion(key)
        self.assertEqual(decode_onion(text), key)
        self.assertEqual(decode_onion(text.upper()), key)

    @given(seeds)
    def test_parse_round_trip(self, seed: bytes) -> None:
        """
        Parsing the text form of any identity's peer ID gives it back, in
        either case.
        """
        peer_id = Identity.from_seed(seed).peer_id
        self.assertEqual(PeerID.parse(str(peer_id)), peer_id)
        self.assertEqual(PeerID.parse(str(peer_id).upper()), peer_id)

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


class OnePeerIDPerKeyTests(SynchronousTestCase):
    """
    Finding 7 of issue 8: a key pair must prove exactly one peer ID.
    """

    def test_negated_key_refused(self) -> None:
        """
        The holder of P can sign under -P (a valid Ed25519 key with the
        same X25519 form), but -P is no peer ID: neither as bytes nor as
        text, and the error says what to do.
        """
        seed = b"n" * 32
        identity = Identity.from_seed(seed)
        public, signature = _sign_as_negation(identity.signing_key.encode(), b"hello")
        self.assertEqual(public, _negate(identity.peer_id.public_key))
        VerifyKey(public).verify(b"hello", signature)  # the attack works on the key
        self.assertEqual(
            bindings.crypto_sign_ed25519_pk_to_curve25519(public),
            identity.peer_id.x25519_public_key,
        )
        e = self.assertRaises(NonCanonicalPeerID, PeerID, public)
        self.assertIn("sign bit", str(e))
        self.assertIn("dspring init", str(e))
        self.assertRaises(NonCanonicalPeerID, PeerID.parse, encode_onion(public))

    def test_negated_record_refused(self) -> None:
        """
        A peer record of -P, correctly signed with -a, is refused as
        malformed: -P cannot publish records of its own.
        """
        identity = Identity.from_seed(b"r" * 32)
        body = bytearray(
            encode_record(
                PeerRecord(identity.peer_id, 1, 1_700_000_000, 1_700_003_600, ("tcp:1.2.3.4:5",))
            )
        )
        body[1:33] = _negate(identity.peer_id.public_key)
        public, signature = _sign_as_negation(
            identity.signing_key.encode(), RECORD_DOMAIN + bytes(body)
        )
        VerifyKey(public).verify(RECORD_DOMAIN + bytes(body), signature)
        self.assertRaises(
            MalformedRecord, verify_record, bytes(body) + signature, now=1_700_000_000
        )

    def test_generated_identities_canonical(self) -> None:
        """
        Every generated identity's key has the sign bit clear and makes a
        valid peer ID.
        """
        for _ in range(64):
            public = Identity.generate().peer_id.public_key
            self.assertFalse(public[31] & 0x80)
            PeerID(public)

    @given(seeds)
    def test_every_seed_makes_one_canonical_identity(self, seed: bytes) -> None:
        """
        Any seed makes an identity, always the same; its key is the seed's
        own Ed25519 key when that is canonical (so half of all seeds keep
        their key), and signatures verify under its peer ID.
        """
        identity = Identity.from_seed(seed)
        self.assertEqual(Identity.from_seed(seed).peer_id, identity.peer_id)
        self.assertEqual(identity.seed, seed)
        own = bytes(SigningKey(seed).verify_key)
        if not own[31] & 0x80:
            self.assertEqual(identity.peer_id.public_key, own)
        identity.peer_id.verify(b"m", identity.sign(b"m"))
        self.assertEqual(
            bindings.crypto_scalarmult_base(identity.x25519_private_key),
            identity.peer_id.x25519_public_key,
        )

    @settings(max_examples=50)
    @given(seeds)
    def test_no_other_encoding_of_the_static_key(self, seed: bytes) -> None:
        """
        Of the keys that share P's X25519 form or differ from it by a small
        order point (+-P + T for each of the 8 torsion points T), P alone is
        a peer ID.
        """
        peer_id = Identity.from_seed(seed).peer_id
        for sign in (False, True):
            base = _negate(peer_id.public_key) if sign else peer_id.public_key
            for torsion in _TORSION:
                variant = bindings.crypto_core_ed25519_add(base, torsion)
                if variant == peer_id.public_key:
                    continue
                self.assertRaises(NonCanonicalPeerID, PeerID, variant)

    def test_unreduced_y_refused(self) -> None:
        """
        Encodings of y at or above 2**255 - 19 (which libsodium would reduce)
        are refused, with either sign.
        """
        for y in range(_P, 2**255):
            for sign in (0, 0x80):
                key = bytearray(y.to_bytes(32, "little"))
                key[31] |= sign
                self.assertRaises(NonCanonicalPeerID, PeerID, bytes(key))

    @given(st.binary(min_size=32, max_size=32))
    def test_any_bytes(self, key: bytes) -> None:
        """
        Any 32 bytes make a peer ID exactly when the sign bit is clear, y is
        reduced, and libsodium takes the key as a point of the prime-order
        group; otherwise the error is NonCanonicalPeerID.
        """
        try:
            bindings.crypto_sign_ed25519_pk_to_curve25519(key)
            group = True
        except CryptoError:
            group = False
        valid = not key[31] & 0x80 and int.from_bytes(key, "little") < _P and group
        try:
            PeerID(key)
        except NonCanonicalPeerID:
            self.assertFalse(valid)
        else:
            self.assertTrue(valid)

    def test_old_key_file_says_what_to_do(self) -> None:
        """
        A key file of an identity whose key has the sign bit set (made before
        this rule) is refused with a message that says to make a new
        identity.
        """
        seed = next(
            bytes([i]) * 32
            for i in range(256)
            if bytes(SigningKey(bytes([i]) * 32).verify_key)[31] & 0x80
        )
        fields = {
            "version": 1,
            "peer_id": encode_onion(bytes(SigningKey(seed).verify_key)),
            "encryption": "none",
            "seed": base64.b64encode(seed).decode(),
        }
        fields["checksum"] = _checksum(fields)
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        data_dir.child("identity.key").setContent(MAGIC + json.dumps(fields).encode())
        e = self.assertRaises(KeyFileError, load_identity, data_dir, None)
        self.assertIn("dspring init", str(e))


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
