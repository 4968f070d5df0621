# -*- test-case-name: tests.test_noise -*-
"""
The crypto functions of the Noise Protocol Framework (revision 34, section 4),
on PyNaCl and :mod:`hashlib`, and the errors Noise raises.

Pure module-level code with no I/O. Everything here sits under every
connection, so the functions call :mod:`nacl.bindings` directly and avoid
building objects they do not return.

Two hazards of :mod:`nacl.bindings` shape this module:

- ``crypto_scalarmult`` does not check the length of its inputs (it hands the
  buffers to C), so every key reaching :func:`x25519` has been checked to be
  exactly 32 bytes by the caller: the handshake slices fixed-size fields and
  validates keys given by the application.
- nacl raises its own exceptions (``RuntimeError`` for an all-zero shared
  secret, ``CryptoError`` for a bad tag); they are turned into
  :class:`NoiseError` subclasses here so none leaks to callers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from struct import Struct
from typing import Final, Protocol

from nacl import bindings as _nacl
from nacl.exceptions import CryptoError as _NaclCryptoError
from nacl.exceptions import RuntimeError as _NaclRuntimeError

from ..errors import DigitalSpringError

__all__ = [
    "DHLEN",
    "HASHES",
    "MAX_MESSAGE_LEN",
    "MAX_NONCE",
    "TAGLEN",
    "DecryptError",
    "HandshakeConfigError",
    "HandshakeOutOfOrder",
    "HashFunction",
    "InvalidMessage",
    "InvalidPublicKey",
    "KeyPair",
    "NoiseError",
    "NonceExhausted",
    "UnsupportedProtocol",
    "aead_decrypt",
    "aead_encrypt",
    "x25519",
    "x25519_public_key",
]


# -- errors ------------------------------------------------------------------


class NoiseError(DigitalSpringError):
    """
    The encrypted channel (Noise protocol) failed.
    """


class UnsupportedProtocol(NoiseError, ValueError):
    """
    The peer or the configuration asked for a Noise protocol that Digital
    Spring does not implement.
    """


class HandshakeConfigError(NoiseError, ValueError):
    """
    The Noise handshake was given keys or pre-shared keys that do not fit its
    pattern (missing, unexpected, or of the wrong length).
    """


class HandshakeOutOfOrder(NoiseError):
    """
    The Noise handshake was driven out of order: a message was written or
    read when it was not its turn, or the handshake had already failed or
    finished.
    """


class InvalidMessage(NoiseError):
    """
    A Noise message had an impossible length (too short for its fields, or
    longer than 65535 bytes).
    """


class InvalidPublicKey(NoiseError):
    """
    The peer sent a public key that is not a safe X25519 key (a low-order
    point that would give a predictable shared secret), so the connection was
    refused.
    """


class DecryptError(NoiseError):
    """
    A message failed authentication: it was corrupted or forged, or the two
    sides do not share the same keys or prologue.
    """


class NonceExhausted(NoiseError):
    """
    This encrypted session has used every message number it has; it must be
    replaced by a new handshake.
    """


# -- DH: Curve25519 ----------------------------------------------------------

DHLEN: Final = 32

_scalarmult = _nacl.crypto_scalarmult
_scalarmult_base = _nacl.crypto_scalarmult_base


def x25519(private_key: bytes, public_key: bytes) -> bytes:
    """
    The Noise ``DH()`` function for 25519: X25519 of a private and a public
    key.

    Both arguments must be exactly :data:`DHLEN` bytes; callers guarantee it
    (see the module docstring).

    :raises InvalidPublicKey: if ``public_key`` is a low-order point, so the
        shared secret would be all zeros.
    """
    try:
        return _scalarmult(private_key, public_key)
    except _NaclRuntimeError:
        raise InvalidPublicKey() from None


def x25519_public_key(private_key: bytes) -> bytes:
    """
    The X25519 public key of a 32-byte private key.
    """
    return _scalarmult_base(private_key)


class KeyPair:
    """
    An X25519 key pair. Its ``repr`` shows the public key only.

    Build one with :meth:`generate` or :meth:`from_private`; a node builds its
    static key pair once and hands the same object to every handshake, which
    saves one scalar multiplication per connection.

    :ivar private: the 32-byte private key.
    :ivar public: the 32-byte public key.
    """

    __slots__ = ("private", "public")

    private: bytes
    public: bytes

    def __init__(self, private: bytes, public: bytes) -> None:
        self.private = private
        self.public = public

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        """
        The key pair of a raw 32-byte X25519 private key.

        :raises HandshakeConfigError: if ``private`` is not 32 bytes.
        """
        if type(private) is not bytes or len(private) != DHLEN:
            raise HandshakeConfigError("an X25519 private key is 32 bytes")
        return cls(private, _scalarmult_base(private))

    @classmethod
    def generate(cls) -> KeyPair:
        """
        A fresh random key pair (the Noise ``GENERATE_KEYPAIR()``).
        """
        private = os.urandom(DHLEN)
        return cls(private, _scalarmult_base(private))

    def __repr__(self) -> str:
        return f"<KeyPair public={self.public.hex()}>"


# -- cipher: ChaChaPoly ------------------------------------------------------

TAGLEN: Final = 16
MAX_NONCE: Final = 2**64 - 1
"""
The reserved nonce: a cipher state whose counter reaches it refuses to go on
(Noise section 5.1), and :func:`rekey` encrypts with it.
"""
MAX_MESSAGE_LEN: Final = 65535

_pack_nonce: Final[Callable[[int], bytes]] = Struct("<4xQ").pack
_encrypt = _nacl.crypto_aead_chacha20poly1305_ietf_encrypt
_decrypt = _nacl.crypto_aead_chacha20poly1305_ietf_decrypt
_REKEY_NONCE: Final = _pack_nonce(MAX_NONCE)
_ZEROS32: Final = bytes(32)


def aead_encrypt(key: bytes, nonce: int, ad: bytes, plaintext: bytes) -> bytes:
    """
    The Noise ``ENCRYPT(k, n, ad, plaintext)`` of ChaChaPoly: IETF
    ChaCha20-Poly1305 with a nonce of 4 zero bytes then ``n`` as 64-bit
    little-endian.
    """
    return _encrypt(plaintext, ad, _pack_nonce(nonce), key)


def aead_decrypt(key: bytes, nonce: int, ad: bytes, ciphertext: bytes) -> bytes:
    """
    The Noise ``DECRYPT(k, n, ad, ciphertext)`` of ChaChaPoly.

    :raises DecryptError: if the ciphertext fails authentication.
    """
    if type(ciphertext) is not bytes:
        ciphertext = bytes(ciphertext)
    if len(ciphertext) < TAGLEN:
        raise DecryptError()
    try:
        return _decrypt(ciphertext, ad, _pack_nonce(nonce), key)
    except _NaclCryptoError:
        raise DecryptError() from None


def rekey(key: bytes) -> bytes:
    """
    The Noise default ``REKEY(k)``: the first 32 bytes of
    ``ENCRYPT(k, 2^64-1, zerolen, zeros)`` with 32 zero bytes of plaintext.
    """
    return _encrypt(_ZEROS32, b"", _REKEY_NONCE, key)[:32]


# -- hashes, HMAC and HKDF ---------------------------------------------------


class _HashObject(Protocol):
    def digest(self) -> bytes: ...


_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))


class HashFunction:
    """
    A Noise hash function with the ``HMAC`` and ``HKDF`` the spec builds on
    it (section 4.3).

    HMAC is RFC 2104 over the hash with its real block length (128 bytes for
    BLAKE2b and SHA512, 64 for BLAKE2s and SHA256); keyed BLAKE2 is a
    different function and is not used.

    :ivar name: the name in a Noise protocol name, e.g. ``"BLAKE2b"``.
    :ivar hashlen: ``HASHLEN``, the digest length in bytes.
    :ivar blocklen: ``BLOCKLEN``, the block length HMAC pads keys to.
    """

    __slots__ = ("_new", "blocklen", "hashlen", "name")

    name: str
    hashlen: int
    blocklen: int

    def __init__(
        self, name: str, new: Callable[[bytes], _HashObject], hashlen: int, blocklen: int
    ) -> None:
        self.name = name
        self._new = new
        self.hashlen = hashlen
        self.blocklen = blocklen

    def __repr__(self) -> str:
        return f"<HashFunction {self.name}>"

    def hash(self, data: bytes) -> bytes:
        """
        ``HASH(data)``.
        """
        return self._new(data).digest()

    def _pads(self, key: bytes) -> tuple[bytes, bytes]:
        if len(key) > self.blocklen:
            key = self._new(key).digest()
        key = key.ljust(self.blocklen, b"\0")
        return key.translate(_IPAD), key.translate(_OPAD)

    def hmac(self, key: bytes, data: bytes) -> bytes:
        """
        ``HMAC-HASH(key, data)`` as RFC 2104 defines it.
        """
        new = self._new
        inner, outer = self._pads(key)
        return new(outer + new(inner + data).digest()).digest()

    def hkdf2(self, chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
        """
        ``HKDF(chaining_key, input_key_material, 2)``.
        """
        new = self._new
        inner, outer = self._pads(chaining_key)
        temp_key = new(outer + new(inner + ikm).digest()).digest()
        inner, outer = self._pads(temp_key)
        output1 = new(outer + new(inner + b"\x01").digest()).digest()
        output2 = new(outer + new(inner + output1 + b"\x02").digest()).digest()
        return output1, output2

    def hkdf3(self, chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes, bytes]:
        """
        ``HKDF(chaining_key, input_key_material, 3)``.
        """
        new = self._new
        inner, outer = self._pads(chaining_key)
        temp_key = new(outer + new(inner + ikm).digest()).digest()
        inner, outer = self._pads(temp_key)
        output1 = new(outer + new(inner + b"\x01").digest()).digest()
        output2 = new(outer + new(inner + output1 + b"\x02").digest()).digest()
        output3 = new(outer + new(inner + output2 + b"\x03").digest()).digest()
        return output1, output2, output3


HASHES: Final[dict[str, HashFunction]] = {
    h.name: h
    for h in (
        HashFunction("BLAKE2b", hashlib.blake2b, 64, 128),
        HashFunction("BLAKE2s", hashlib.blake2s, 32, 64),
        HashFunction("SHA256", hashlib.sha256, 32, 64),
        HashFunction("SHA512", hashlib.sha512, 64, 128),
    )
}
"""
The hash functions by their names in Noise protocol names.
"""
