"""
Tests for :mod:`digitalspring.channel._noise` and
:mod:`digitalspring.channel._primitives`: the Noise state machines, their
errors, and the crypto functions under them.

Byte-for-byte conformance is in ``tests.test_noise_vectors``; live
interoperability with ``noiseprotocol`` in ``tests.test_noise_interop``.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.channel import (
    PATTERNS,
    CipherState,
    DecryptError,
    HandshakeConfigError,
    HandshakeOutOfOrder,
    HandshakePattern,
    HandshakeState,
    InvalidMessage,
    InvalidPublicKey,
    KeyPair,
    NoiseError,
    NoiseProtocol,
    NonceExhausted,
    UnsupportedProtocol,
)
from digitalspring.channel._primitives import (
    HASHES,
    MAX_NONCE,
    chachapoly_decrypt,
    chachapoly_encrypt,
    chachapoly_nonce,
    rekey,
    x25519,
    x25519_public_key,
)
from digitalspring.errors import DigitalSpringError

BLAKE2B_XX = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
BLAKE2B_IK = "Noise_IK_25519_ChaChaPoly_BLAKE2b"

# X25519 public keys of small order (and their non-canonical encodings), whose
# DH output is all zeros: the list libsodium and the X25519 literature use.
LOW_ORDER_POINTS = [
    bytes.fromhex(h)
    for h in [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ]
]


def _all_protocol_names() -> list[str]:
    """
    Every fundamental pattern, plain and with a pre-shared key at every
    position, over BLAKE2b.
    """
    names = []
    for pattern in PATTERNS:
        messages = len(HandshakePattern.from_name(pattern).messages)
        for modifier in ["", *(f"psk{i}" for i in range(messages + 1))]:
            names.append(f"Noise_{pattern}{modifier}_25519_ChaChaPoly_BLAKE2b")
    names.append("Noise_NNpsk0+psk2_25519_ChaChaPoly_BLAKE2b")
    return names


ALL_NAMES = _all_protocol_names()
keys = st.binary(min_size=32, max_size=32)


def make_pair(
    name: str,
    initiator_static: bytes | None = None,
    responder_static: bytes | None = None,
    prologue: bytes = b"prologue",
    responder_prologue: bytes | None = None,
    psks: list[bytes] | None = None,
) -> tuple[HandshakeState, HandshakeState]:
    """
    An initiator and a responder for ``name``, given each side exactly the
    keys its pattern needs.
    """
    protocol = NoiseProtocol.from_name(name)
    initiator_pair = KeyPair.from_private(initiator_static or os.urandom(32))
    responder_pair = KeyPair.from_private(responder_static or os.urandom(32))
    if psks is None:
        psks = [os.urandom(32) for _ in range(protocol.pattern.psk_count)]
    initiator_role = protocol._roles[True]
    responder_role = protocol._roles[False]
    initiator = HandshakeState(
        protocol,
        True,
        prologue,
        s=initiator_pair if initiator_role.needs_s else None,
        rs=responder_pair.public if initiator_role.needs_rs else None,
        psks=psks,
    )
    responder = HandshakeState(
        protocol,
        False,
        prologue if responder_prologue is None else responder_prologue,
        s=responder_pair if responder_role.needs_s else None,
        rs=initiator_pair.public if responder_role.needs_rs else None,
        psks=psks,
    )
    return initiator, responder


def payload_encrypted(pattern: HandshakePattern, index: int) -> bool:
    """
    Whether the payload of message ``index`` is encrypted: whether a key has
    been mixed in by then (a DH or a psk token, or, in a psk pattern, an
    ephemeral key), per sections 5 and 9.
    """
    tokens = [token for message in pattern.messages[: index + 1] for token in message]
    return any(t not in ("e", "s") for t in tokens) or (pattern.psk_count > 0 and "e" in tokens)


def run_handshake(
    initiator: HandshakeState, responder: HandshakeState, payloads: list[bytes] | None = None
) -> list[bytes]:
    """
    Drive both sides to completion, checking each payload arrives intact.

    :returns: the handshake messages, in order.
    """
    messages = []
    index = 0
    while not (initiator.complete and responder.complete):
        writer, reader = (
            (initiator, responder) if initiator.writes_next else (responder, initiator)
        )
        payload = payloads[index] if payloads else b""
        message = writer.write_message(payload)
        messages.append(message)
        assert reader.read_message(message) == payload
        index += 1
    return messages


class HashFunctionTests(SynchronousTestCase):
    """
    HMAC and HKDF as section 4.3 defines them.
    """

    @given(
        st.sampled_from(sorted(HASHES)),
        st.binary(max_size=300),
        st.binary(max_size=300),
    )
    def test_hmac_is_rfc2104(self, name: str, key: bytes, data: bytes) -> None:
        """
        Our HMAC equals the standard library's RFC 2104 HMAC for every hash,
        including keys longer than a block (which are hashed first).
        """
        ours = HASHES[name].hmac(key, data)
        reference = hmac.new(key, data, getattr(hashlib, name.lower())).digest()
        self.assertEqual(ours, reference)

    @given(st.sampled_from(sorted(HASHES)), st.binary(max_size=100))
    def test_hkdf_is_spec(self, name: str, ikm: bytes) -> None:
        """
        HKDF with two and three outputs follows the spec's definition in
        terms of HMAC, with a HASHLEN chaining key.
        """
        h = HASHES[name]
        ck = os.urandom(h.hashlen)
        temp_key = h.hmac(ck, ikm)
        output1 = h.hmac(temp_key, b"\x01")
        output2 = h.hmac(temp_key, output1 + b"\x02")
        output3 = h.hmac(temp_key, output2 + b"\x03")
        self.assertEqual(h.hkdf2(ck, ikm), (output1, output2))
        self.assertEqual(h.hkdf3(ck, ikm), (output1, output2, output3))

    def test_blake2b_hmac_is_not_keyed_blake2b(self) -> None:
        """
        HMAC-BLAKE2b is the RFC 2104 construction, not BLAKE2b's own keyed
        mode, which would give a different (wrong) result.
        """
        key, data = b"k" * 64, b"data"
        self.assertNotEqual(
            HASHES["BLAKE2b"].hmac(key, data), hashlib.blake2b(data, key=key).digest()
        )


class PrimitiveTests(SynchronousTestCase):
    """
    The libsodium calls agree with :mod:`nacl.bindings` and raise only our
    errors.
    """

    @given(keys, keys)
    def test_x25519_matches_nacl(self, private: bytes, other: bytes) -> None:
        """
        ``x25519`` and ``x25519_public_key`` compute what nacl.bindings
        computes.
        """
        public = bindings.crypto_scalarmult_base(other)
        self.assertEqual(x25519_public_key(private), bindings.crypto_scalarmult_base(private))
        self.assertEqual(x25519(private, public), bindings.crypto_scalarmult(private, public))

    @given(keys, st.integers(0, MAX_NONCE), st.binary(max_size=64), st.binary(max_size=300))
    def test_chachapoly_matches_nacl(
        self, key: bytes, n: int, ad: bytes, plaintext: bytes
    ) -> None:
        """
        ChaChaPoly encryption equals nacl's IETF ChaCha20-Poly1305 with the
        nonce 4 zero bytes then the 64-bit little-endian counter, and
        decrypts back.
        """
        nonce = chachapoly_nonce(n)
        self.assertEqual(nonce, b"\0" * 4 + n.to_bytes(8, "little"))
        ciphertext = chachapoly_encrypt(key, nonce, ad, plaintext)
        self.assertEqual(
            ciphertext,
            bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key),
        )
        self.assertEqual(chachapoly_decrypt(key, nonce, ad, ciphertext), plaintext)

    def test_low_order_points_rejected(self) -> None:
        """
        Every low-order public key gives ``InvalidPublicKey``, not nacl's
        generic error.
        """
        for point in LOW_ORDER_POINTS:
            with self.assertRaises(InvalidPublicKey, msg=point.hex()):
                x25519(os.urandom(32), point)

    def test_wrong_key_length_refused(self) -> None:
        """
        Keys of the wrong length never reach libsodium (which would read past
        them).
        """
        self.assertRaises(ValueError, x25519, os.urandom(31), os.urandom(32))
        self.assertRaises(ValueError, x25519, os.urandom(32), os.urandom(33))
        self.assertRaises(HandshakeConfigError, KeyPair.from_private, os.urandom(31))
        self.assertRaises(ValueError, CipherState, os.urandom(16))

    def test_short_or_forged_ciphertext(self) -> None:
        """
        A ciphertext shorter than a tag, or with a wrong tag, raises
        ``DecryptError``.
        """
        key, nonce = os.urandom(32), chachapoly_nonce(0)
        self.assertRaises(DecryptError, chachapoly_decrypt, key, nonce, b"", b"x" * 15)
        ciphertext = chachapoly_encrypt(key, nonce, b"ad", b"hello")
        self.assertRaises(DecryptError, chachapoly_decrypt, key, nonce, b"da", ciphertext)

    def test_rekey_is_spec(self) -> None:
        """
        ``REKEY(k)`` is the first 32 bytes of encrypting 32 zero bytes under
        nonce 2^64-1 with empty associated data.
        """
        key = os.urandom(32)
        expected = bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            bytes(32), b"", b"\0" * 4 + b"\xff" * 8, key
        )[:32]
        self.assertEqual(rekey(key), expected)

    def test_key_pair_repr_hides_private_key(self) -> None:
        """
        A key pair's repr shows the public key and never the private one.
        """
        pair = KeyPair.generate()
        self.assertIn(pair.public.hex(), repr(pair))
        self.assertNotIn(pair.private.hex(), repr(pair))


class CipherStateTests(SynchronousTestCase):
    """
    ``CipherState``: nonces, exhaustion, rekey, and the empty key.
    """

    def test_round_trip_and_nonce(self) -> None:
        """
        Each message advances the nonce by one on both sides, and the
        associated data must match.
        """
        key = os.urandom(32)
        sender, receiver = CipherState(key), CipherState(key)
        for n in range(3):
            ciphertext = sender.encrypt_with_ad(b"ad", b"message %d" % n)
            self.assertEqual(receiver.decrypt_with_ad(b"ad", ciphertext), b"message %d" % n)
        self.assertEqual((sender.nonce, receiver.nonce), (3, 3))
        ciphertext = sender.encrypt_with_ad(b"ad", b"x")
        self.assertRaises(DecryptError, receiver.decrypt_with_ad, b"other", ciphertext)

    def test_failed_decrypt_keeps_nonce(self) -> None:
        """
        A forged message does not advance the nonce, so the genuine one still
        decrypts.
        """
        key = os.urandom(32)
        sender, receiver = CipherState(key), CipherState(key)
        ciphertext = sender.encrypt_with_ad(b"", b"genuine")
        forged = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        self.assertRaises(DecryptError, receiver.decrypt_with_ad, b"", forged)
        self.assertEqual(receiver.nonce, 0)
        self.assertEqual(receiver.decrypt_with_ad(b"", ciphertext), b"genuine")

    def test_nonce_exhausted(self) -> None:
        """
        Nonce 2^64-1 is reserved: the message with nonce 2^64-2 is the last
        one, after which both directions raise ``NonceExhausted``.
        """
        key = os.urandom(32)
        sender, receiver = CipherState(key), CipherState(key)
        sender.set_nonce_for_testing(MAX_NONCE - 1)
        receiver.set_nonce_for_testing(MAX_NONCE - 1)
        last = sender.encrypt_with_ad(b"", b"last")
        self.assertEqual(receiver.decrypt_with_ad(b"", last), b"last")
        self.assertEqual(sender.nonce, MAX_NONCE)
        self.assertRaises(NonceExhausted, sender.encrypt_with_ad, b"", b"one more")
        self.assertRaises(NonceExhausted, receiver.decrypt_with_ad, b"", last)
        self.assertRaises(ValueError, sender.set_nonce_for_testing, MAX_NONCE + 1)

    def test_rekey(self) -> None:
        """
        After both sides rekey, messages still flow, under the key ``REKEY``
        gives and with the nonce unchanged; a side that did not rekey cannot
        read them.
        """
        key = os.urandom(32)
        sender, receiver, stale = CipherState(key), CipherState(key), CipherState(key)
        receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"before"))
        stale.set_nonce_for_testing(1)
        sender.rekey()
        receiver.rekey()
        ciphertext = sender.encrypt_with_ad(b"", b"after")
        self.assertEqual(receiver.decrypt_with_ad(b"", ciphertext), b"after")
        self.assertEqual(
            ciphertext,
            chachapoly_encrypt(rekey(key), chachapoly_nonce(1), b"", b"after"),
        )
        self.assertRaises(DecryptError, stale.decrypt_with_ad, b"", ciphertext)

    def test_empty_key_passes_through(self) -> None:
        """
        Without a key, encryption and decryption return their input and the
        nonce stays put (as during the first handshake messages).
        """
        cipher = CipherState()
        self.assertFalse(cipher.has_key())
        self.assertEqual(cipher.encrypt_with_ad(b"ad", b"clear"), b"clear")
        self.assertEqual(cipher.decrypt_with_ad(b"ad", b"clear"), b"clear")
        self.assertEqual(cipher.nonce, 0)


class CipherBackendTests(SynchronousTestCase):
    @settings(max_examples=50)
    @given(
        st.binary(min_size=32, max_size=32),
        st.lists(st.tuples(st.binary(max_size=64), st.binary(max_size=3000)), max_size=8),
    )
    def test_backends_agree(self, key: bytes, messages: list[tuple[bytes, bytes]]) -> None:
        """
        A transport (bulk) cipher state, on OpenSSL, and a handshake one, on
        libsodium, give the same ciphertexts, decrypt each other's, reject
        the same tampering with DecryptError, and rekey alike.
        """
        bulk, short = CipherState(key, bulk=True), CipherState(key)
        reader = CipherState(key, bulk=True)
        for index, (ad, plaintext) in enumerate(messages):
            ciphertext = bulk.encrypt_with_ad(ad, plaintext)
            self.assertEqual(short.encrypt_with_ad(ad, plaintext), ciphertext)
            tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
            self.assertRaises(DecryptError, reader.decrypt_with_ad, ad, tampered)
            self.assertEqual(reader.decrypt_with_ad(ad, ciphertext), plaintext)
            if index % 3 == 2:
                for state in (bulk, short, reader):
                    state.rekey()


class ProtocolNameTests(SynchronousTestCase):
    """
    Parsing protocol names into patterns and functions.
    """

    def test_parse(self) -> None:
        """
        A name gives its pattern, DH, cipher and hash, and the psk modifier
        adds its token where section 9 says.
        """
        protocol = NoiseProtocol.from_name("Noise_XXpsk3_25519_ChaChaPoly_SHA256")
        self.assertEqual(
            (protocol.dh, protocol.cipher, protocol.hash.name), ("25519", "ChaChaPoly", "SHA256")
        )
        self.assertEqual(
            protocol.pattern.messages, (("e",), ("e", "ee", "s", "es"), ("s", "se", "psk"))
        )
        both = HandshakePattern.from_name("NNpsk0+psk2")
        self.assertEqual(both.messages, (("psk", "e"), ("e", "ee", "psk")))
        self.assertEqual(both.psk_count, 2)
        self.assertIs(NoiseProtocol.from_name(BLAKE2B_IK), NoiseProtocol.from_name(BLAKE2B_IK))

    def test_initial_hash(self) -> None:
        """
        A name no longer than HASHLEN is zero-padded into ``h``; a longer one
        is hashed.
        """
        short = NoiseProtocol.from_name(BLAKE2B_XX)
        self.assertEqual(short.initial_hash, BLAKE2B_XX.encode().ljust(64, b"\0"))
        name = "Noise_XXpsk3_25519_ChaChaPoly_SHA256"
        self.assertEqual(
            NoiseProtocol.from_name(name).initial_hash, hashlib.sha256(name.encode()).digest()
        )

    def test_unsupported(self) -> None:
        """
        Unknown patterns, modifiers, DH functions, ciphers and hashes raise
        ``UnsupportedProtocol``, a Digital Spring error.
        """
        for name in [
            "Noise_XX_448_ChaChaPoly_BLAKE2b",
            "Noise_XX_25519_AESGCM_BLAKE2b",
            "Noise_XX_25519_ChaChaPoly_BLAKE3",
            "Noise_XXfallback_25519_ChaChaPoly_BLAKE2b",
            "Noise_XXpsk4_25519_ChaChaPoly_BLAKE2b",
            "Noise_XXpsk1+psk1_25519_ChaChaPoly_BLAKE2b",
            "Noise_NK1_25519_ChaChaPoly_BLAKE2b",
            "Noise_N_25519_ChaChaPoly_BLAKE2b",
            "Noise_XX_25519_ChaChaPoly",
            "Noise_XX_25519_ChaChaPoly_BLAKE2b_",
            "NoisePQ_XX_25519_ChaChaPoly_BLAKE2b",
            "",
        ]:
            with self.assertRaises(UnsupportedProtocol, msg=name) as caught:
                NoiseProtocol.from_name(name)
            self.assertIsInstance(caught.exception, NoiseError)
            self.assertIsInstance(caught.exception, DigitalSpringError)


class HandshakeConfigTests(SynchronousTestCase):
    """
    A handshake refuses keys that do not fit its pattern.
    """

    def test_missing_or_unexpected_keys(self) -> None:
        """
        A missing static key, a missing or unexpected remote static key, and
        a wrong number or size of pre-shared keys are refused up front.
        """
        s, rs = os.urandom(32), KeyPair.generate().public
        self.assertRaises(HandshakeConfigError, HandshakeState, BLAKE2B_XX, True)
        self.assertRaises(HandshakeConfigError, HandshakeState, BLAKE2B_IK, True, s=s)
        # XX learns the peer's key in the handshake: passing one would look
        # like pinning it, and it would not be.
        self.assertRaises(HandshakeConfigError, HandshakeState, BLAKE2B_XX, True, s=s, rs=rs)
        self.assertRaises(HandshakeConfigError, HandshakeState, BLAKE2B_IK, True, s=s, rs=rs[:31])
        self.assertRaises(
            HandshakeConfigError, HandshakeState, "Noise_NN_25519_ChaChaPoly_BLAKE2b", True, s=s
        )
        psk_name = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"
        self.assertRaises(HandshakeConfigError, HandshakeState, psk_name, True, s=s, rs=rs)
        self.assertRaises(
            HandshakeConfigError, HandshakeState, psk_name, True, s=s, rs=rs, psks=[b"x" * 31]
        )
        HandshakeState(psk_name, True, s=s, rs=rs, psks=[b"x" * 32])


class HandshakeTests(SynchronousTestCase):
    """
    The generic handshake machine over every pattern.
    """

    @settings(max_examples=150)
    @given(
        st.sampled_from(ALL_NAMES),
        st.binary(max_size=64),
        st.lists(st.binary(max_size=200), min_size=3, max_size=3),
        st.lists(st.binary(max_size=200), min_size=1, max_size=4),
        keys,
        keys,
    )
    def test_round_trip(
        self,
        name: str,
        prologue: bytes,
        payloads: list[bytes],
        transport: list[bytes],
        initiator_static: bytes,
        responder_static: bytes,
    ) -> None:
        """
        Every pattern completes with the payloads intact, equal handshake
        hashes, the right remote static keys, and transport messages both
        ways on the split cipher states.
        """
        initiator, responder = make_pair(name, initiator_static, responder_static, prologue)
        run_handshake(initiator, responder, payloads)
        self.assertEqual(initiator.handshake_hash, responder.handshake_hash)
        if initiator.remote_static is not None:
            self.assertEqual(initiator.remote_static, x25519_public_key(responder_static))
        if responder.remote_static is not None:
            self.assertEqual(responder.remote_static, x25519_public_key(initiator_static))
        initiator_send, initiator_receive = initiator.split()
        responder_send, responder_receive = responder.split()
        for message in transport:
            ciphertext = initiator_send.encrypt_with_ad(b"", message)
            self.assertEqual(responder_receive.decrypt_with_ad(b"", ciphertext), message)
            ciphertext = responder_send.encrypt_with_ad(b"", message)
            self.assertEqual(initiator_receive.decrypt_with_ad(b"", ciphertext), message)

    @settings(max_examples=200)
    @given(st.sampled_from(ALL_NAMES), st.data())
    def test_flipped_bit_rejected(self, name: str, data: st.DataObject) -> None:
        """
        A bit flipped anywhere in any handshake or transport message makes a
        side raise ``DecryptError`` before a transport message gets through
        in each direction, and immediately if the flipped message was
        encrypted (every transport message, and every handshake message once
        the pattern has a key).
        """
        initiator, responder = make_pair(name)
        pattern = initiator.protocol.pattern
        handshake_length = len(pattern.messages)
        target = data.draw(st.integers(0, handshake_length + 1), label="message")
        sides = [initiator, responder]
        with self.assertRaises(DecryptError):
            for index in range(handshake_length):
                writer, reader = sides[index % 2], sides[1 - index % 2]
                message = writer.write_message(b"payload")
                if index == target:
                    bit = data.draw(st.integers(0, len(message) * 8 - 1), label="bit")
                    message = _flip(message, bit)
                    if payload_encrypted(pattern, index):
                        self.assertRaises(DecryptError, reader.read_message, message)
                        raise DecryptError()
                reader.read_message(message)
            initiator_send, initiator_receive = initiator.split()
            responder_send, responder_receive = responder.split()
            for number, (send, receive) in enumerate(
                [(initiator_send, responder_receive), (responder_send, initiator_receive)],
                handshake_length,
            ):
                ciphertext = send.encrypt_with_ad(b"", b"transport")
                if number == target:
                    bit = data.draw(st.integers(0, len(ciphertext) * 8 - 1), label="bit")
                    self.assertRaises(
                        DecryptError, receive.decrypt_with_ad, b"", _flip(ciphertext, bit)
                    )
                    raise DecryptError()
                receive.decrypt_with_ad(b"", ciphertext)

    @settings(max_examples=60)
    @given(st.sampled_from(ALL_NAMES), st.binary(max_size=32), st.binary(max_size=32))
    def test_mismatched_prologue(self, name: str, mine: bytes, theirs: bytes) -> None:
        """
        Sides with different prologues fail the handshake with
        ``DecryptError`` at the first encrypted payload.
        """
        if mine == theirs:
            theirs += b"!"
        initiator, responder = make_pair(name, prologue=mine, responder_prologue=theirs)
        self.assertRaises(DecryptError, run_handshake, initiator, responder)

    def test_mismatched_psk(self) -> None:
        """
        Sides with different pre-shared keys fail with ``DecryptError``.
        """
        name = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"
        initiator, _ = make_pair(name, psks=[b"a" * 32])
        _, responder = make_pair(name, psks=[b"b" * 32])
        self.assertRaises(DecryptError, run_handshake, initiator, responder)

    def test_wrong_responder_key(self) -> None:
        """
        An IK initiator that expects another responder key fails at the
        responder's first read.
        """
        initiator, _ = make_pair(BLAKE2B_IK)
        _, responder = make_pair(BLAKE2B_IK)
        self.assertRaises(DecryptError, responder.read_message, initiator.write_message(b""))

    def test_low_order_ephemeral(self) -> None:
        """
        A handshake message carrying a low-order ephemeral key is refused with
        ``InvalidPublicKey`` by the side doing the DH, and the handshake is
        then abandoned.
        """
        for point in LOW_ORDER_POINTS:
            initiator, responder = make_pair(BLAKE2B_XX)
            responder.read_message(initiator.write_message(b""))
            message = responder.write_message(b"")
            self.assertRaises(InvalidPublicKey, initiator.read_message, point + message[32:])
            self.assertRaises(HandshakeOutOfOrder, initiator.write_message, b"")

    def test_low_order_remote_static(self) -> None:
        """
        An IK initiator given a low-order responder key refuses it with
        ``InvalidPublicKey`` at its first DH.
        """
        initiator = HandshakeState(BLAKE2B_IK, True, s=os.urandom(32), rs=LOW_ORDER_POINTS[2])
        self.assertRaises(InvalidPublicKey, initiator.write_message, b"")

    def test_out_of_order(self) -> None:
        """
        Writing or reading out of turn, splitting early or twice, and asking
        for the handshake hash early raise ``HandshakeOutOfOrder``; a failed
        read abandons the handshake.
        """
        initiator, responder = make_pair(BLAKE2B_XX)
        self.assertTrue(initiator.writes_next)
        self.assertFalse(responder.writes_next)
        self.assertRaises(HandshakeOutOfOrder, responder.write_message, b"")
        self.assertRaises(HandshakeOutOfOrder, initiator.read_message, b"x" * 32)
        self.assertRaises(HandshakeOutOfOrder, initiator.split)
        self.assertRaises(HandshakeOutOfOrder, lambda: initiator.handshake_hash)
        run_handshake(initiator, responder)
        self.assertRaises(HandshakeOutOfOrder, initiator.write_message, b"")
        initiator.split()
        self.assertRaises(HandshakeOutOfOrder, initiator.split)
        self.assertEqual(len(initiator.handshake_hash), 64)

        initiator, responder = make_pair(BLAKE2B_XX)
        responder.read_message(initiator.write_message(b""))
        message = responder.write_message(b"")
        self.assertRaises(DecryptError, initiator.read_message, message[:-1] + b"\0")
        self.assertRaises(HandshakeOutOfOrder, initiator.read_message, message)
        self.assertRaises(HandshakeOutOfOrder, initiator.write_message, b"")

    def test_message_lengths(self) -> None:
        """
        A handshake message may not exceed 65535 bytes (writing one leaves
        the handshake usable) nor be shorter than its fixed fields.
        """
        initiator, responder = make_pair(BLAKE2B_XX)
        self.assertRaises(InvalidMessage, initiator.write_message, b"x" * (65535 - 31))
        message = initiator.write_message(b"x" * (65535 - 32))
        self.assertEqual(len(message), 65535)
        responder.read_message(message)

        initiator, responder = make_pair(BLAKE2B_XX)
        self.assertRaises(InvalidMessage, responder.read_message, b"x" * 31)
        self.assertRaises(HandshakeOutOfOrder, responder.read_message, b"x" * 32)

    def test_split_directions(self) -> None:
        """
        ``split`` returns (send, receive) from each side's own point of view,
        and the two directions use different keys.
        """
        initiator, responder = make_pair(BLAKE2B_IK)
        run_handshake(initiator, responder)
        initiator_send, initiator_receive = initiator.split()
        responder_send, responder_receive = responder.split()
        ciphertext = initiator_send.encrypt_with_ad(b"", b"to responder")
        self.assertEqual(responder_receive.decrypt_with_ad(b"", ciphertext), b"to responder")
        ciphertext = responder_send.encrypt_with_ad(b"", b"to initiator")
        self.assertRaises(DecryptError, responder_receive.decrypt_with_ad, b"", ciphertext)
        self.assertEqual(initiator_receive.decrypt_with_ad(b"", ciphertext), b"to initiator")

    def test_fresh_ephemeral_each_handshake(self) -> None:
        """
        Without an injected ephemeral key, two handshakes with the same static
        keys produce different messages and handshake hashes.
        """
        s, r = os.urandom(32), os.urandom(32)
        first = make_pair(BLAKE2B_XX, s, r)
        second = make_pair(BLAKE2B_XX, s, r)
        messages = run_handshake(*first), run_handshake(*second)
        self.assertNotEqual(messages[0][0], messages[1][0])
        self.assertNotEqual(first[0].handshake_hash, second[0].handshake_hash)

    def test_injected_ephemeral(self) -> None:
        """
        An injected ephemeral key is the one sent in the first message.
        """
        e = os.urandom(32)
        initiator = HandshakeState(BLAKE2B_XX, True, s=os.urandom(32), e=e)
        self.assertEqual(initiator.write_message(b"")[:32], x25519_public_key(e))

    def test_errors_are_digital_spring_errors(self) -> None:
        """
        Every Noise error is a ``NoiseError`` and a ``DigitalSpringError``
        with a docstring to show users.
        """
        for error in [
            UnsupportedProtocol,
            HandshakeConfigError,
            HandshakeOutOfOrder,
            InvalidMessage,
            InvalidPublicKey,
            DecryptError,
            NonceExhausted,
        ]:
            self.assertTrue(issubclass(error, NoiseError))
            self.assertTrue(issubclass(error, DigitalSpringError))
            self.assertTrue(error.__doc__ and error.__doc__.strip())


def _flip(message: bytes, bit: int) -> bytes:
    flipped = bytearray(message)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)
