# -*- test-case-name: tests.test_group_crypto -*-
"""
The primitives of group crypto, as pure functions: BLAKE2b with a distinct
personalisation per use, XChaCha20-Poly1305, and Ed25519 epoch signing keys.

XChaCha20-Poly1305 is the IETF construction libsodium implements: the
HChaCha20 of the key and the first 16 bytes of the 24-byte nonce is the key
of ChaCha20-Poly1305 (RFC 8439), whose 12-byte nonce is four zero bytes and
the last 8 bytes of the nonce.  Both ways of computing it give the same
bytes (a test checks them against each other and against the test vector of
draft-irtf-cfrg-xchacha).  PyNaCl's libsodium build runs ChaCha20 at about
300 MB/s here, OpenSSL's (through ``cryptography``) at about 1.5 GB/s, but
HChaCha20 written in Python costs about 0.1 ms: so short messages go through
libsodium and long ones through HChaCha20 and OpenSSL.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_generichash_blake2b_salt_personal,
)
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey
from nacl.utils import random as random_bytes

from ..errors import DigitalSpringError

#: The size of every symmetric key, chain key and hash, in bytes.
KEY_SIZE = 32
HASH_SIZE = 32
#: The size of an XChaCha20-Poly1305 nonce and tag.
NONCE_SIZE = 24
TAG_SIZE = 16
#: The size of an Ed25519 public key, seed and signature.
PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64

#: From this many bytes of plaintext on, HChaCha20 in Python and OpenSSL's
#: ChaCha20-Poly1305 beat libsodium's XChaCha20-Poly1305 (measured: the
#: crossover is near 40 kB).
FAST_AEAD_FROM = 32 * 1024

_WORD = 0xFFFFFFFF
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
_QUARTER_ROUNDS = (
    (0, 4, 8, 12),
    (1, 5, 9, 13),
    (2, 6, 10, 14),
    (3, 7, 11, 15),
    (0, 5, 10, 15),
    (1, 6, 11, 12),
    (2, 7, 8, 13),
    (3, 4, 9, 14),
)


class UndecryptableMessage(DigitalSpringError):
    """
    The message does not decrypt under its key: it was damaged, or it was
    not encrypted for this group, epoch and index.
    """


def blake2b(person: bytes, data: bytes, key: bytes = b"") -> bytes:
    """
    The 32-byte BLAKE2b hash of ``data``, keyed with ``key`` if one is
    given, under the personalisation ``person`` (at most 16 bytes), so that a
    hash made for one purpose never stands for another.
    """
    digest: bytes = crypto_generichash_blake2b_salt_personal(
        data, digest_size=HASH_SIZE, key=key, person=person.ljust(16, b"\0")
    )
    return digest


def random_key() -> bytes:
    """
    A fresh random 32-byte key.
    """
    key: bytes = random_bytes(KEY_SIZE)
    return key


def random_nonce() -> bytes:
    """
    A fresh random XChaCha20-Poly1305 nonce.
    """
    nonce: bytes = random_bytes(NONCE_SIZE)
    return nonce


def hchacha20(key: bytes, nonce: bytes) -> bytes:
    """
    HChaCha20 of a 32-byte key and a 16-byte nonce: the 32-byte subkey of
    XChaCha20.
    """
    state = [*_SIGMA, *struct.unpack("<8I", key), *struct.unpack("<4I", nonce)]
    for _ in range(10):
        for a, b, c, d in _QUARTER_ROUNDS:
            state[a] = (state[a] + state[b]) & _WORD
            x = state[d] ^ state[a]
            state[d] = ((x << 16) | (x >> 16)) & _WORD
            state[c] = (state[c] + state[d]) & _WORD
            x = state[b] ^ state[c]
            state[b] = ((x << 12) | (x >> 20)) & _WORD
            state[a] = (state[a] + state[b]) & _WORD
            x = state[d] ^ state[a]
            state[d] = ((x << 8) | (x >> 24)) & _WORD
            state[c] = (state[c] + state[d]) & _WORD
            x = state[b] ^ state[c]
            state[b] = ((x << 7) | (x >> 25)) & _WORD
    return struct.pack("<8I", *state[0:4], *state[12:16])


def _openssl_aead(key: bytes, nonce: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    return ChaCha20Poly1305(hchacha20(key, nonce[:16])), b"\0\0\0\0" + nonce[16:]


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """
    XChaCha20-Poly1305: ``plaintext`` encrypted and authenticated together
    with ``associated``; the ciphertext is :data:`TAG_SIZE` bytes longer.
    """
    if len(plaintext) >= FAST_AEAD_FROM:
        aead, short_nonce = _openssl_aead(key, nonce)
        return aead.encrypt(short_nonce, plaintext, associated)
    ciphertext: bytes = crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, associated, nonce, key
    )
    return ciphertext


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    """
    The plaintext of an XChaCha20-Poly1305 ciphertext.

    :raises UndecryptableMessage: when the ciphertext or ``associated``
        were changed, or the key or nonce are not those it was made with.
    """
    if len(ciphertext) < TAG_SIZE:
        raise UndecryptableMessage("the message is shorter than its authentication tag")
    try:
        if len(ciphertext) - TAG_SIZE >= FAST_AEAD_FROM:
            aead, short_nonce = _openssl_aead(key, nonce)
            return aead.decrypt(short_nonce, ciphertext, associated)
        plaintext: bytes = crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, associated, nonce, key
        )
    except (InvalidTag, CryptoError):
        raise UndecryptableMessage("the message does not decrypt under its key") from None
    return plaintext


def signing_public_key(seed: bytes) -> bytes:
    """
    The Ed25519 public key of the signing key pair made from ``seed``.
    """
    public: bytes = SigningKey(seed).verify_key.encode()
    return public


def sign(seed: bytes, message: bytes) -> bytes:
    """
    The Ed25519 signature of ``message`` by the key pair made from ``seed``.
    """
    signature: bytes = SigningKey(seed).sign(message).signature
    return signature


def signature_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """
    Whether ``signature`` is the signature of ``message`` under
    ``public_key`` (libsodium's strict Ed25519 verification: small-order
    keys and non-canonical signatures are refused).
    """
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True
