# -*- test-case-name: tests.test_noise -*-
"""
The crypto functions of the Noise Protocol Framework (revision 34, section 4),
on PyNaCl and :mod:`hashlib`, and the errors Noise raises.

Pure module-level code with no I/O. Everything here sits under every
connection, so it stays close to libsodium: X25519 and ChaCha20-Poly1305 are
called through PyNaCl's cffi module (``nacl._sodium``), the same functions
``nacl.bindings`` wraps, without that layer's per-call overhead; HMAC and
HKDF are written out over :mod:`hashlib` constructors.

Two consequences:

- cffi hands buffers to C unchecked, so every length is checked here or
  guaranteed by the caller (the handshake slices fixed-size fields and
  validates keys given by the application; cipher keys come from HKDF).
- libsodium reports failure with a return code, turned here into a
  :class:`NoiseError` subclass (:class:`InvalidPublicKey` for an all-zero
  shared secret, :class:`DecryptError` for a bad tag), so no foreign
  exception reaches callers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from struct import Struct
from typing import Final, Protocol

from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from ..errors import DigitalSpringError

__all__ = [
    "DHLEN",
    "HASHES",
    "KEYLEN",
    "MAX_MESSAGE_LEN",
    "MAX_NONCE",
    "NONCELEN",
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
    "chachapoly_decrypt",
    "chachapoly_encrypt",
    "chachapoly_nonce",
    "rekey",
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


# -- the libsodium calls -------------------------------------------------------

# nacl.bindings formats an error message for every argument check of every call
# (eagerly), which costs twice the ChaCha20-Poly1305 work on a handshake-sized
# message. The few functions below call the same libsodium functions through
# PyNaCl's own cffi module, and check their arguments themselves: cffi hands
# buffers to C unchecked. tests.test_noise checks them against nacl.bindings.
_alloc = _ffi.new_allocator(should_clear_after_alloc=False)
_buffer = _ffi.buffer
_NULL = _ffi.NULL
_scalarmult = _lib.crypto_scalarmult
_scalarmult_base = _lib.crypto_scalarmult_base
_aead_encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
_aead_decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt

# libsodium picks its fastest implementations in sodium_init(); nacl.bindings
# calls it on import, but nothing says that import happened before ours.
if _lib.sodium_init() < 0:  # pragma: no cover - only when libsodium is broken
    raise ImportError("libsodium failed to initialise")


# -- DH: Curve25519 ----------------------------------------------------------

DHLEN: Final = 32


def x25519(private_key: bytes, public_key: bytes) -> bytes:
    """
    The Noise ``DH()`` function for 25519: X25519 of a private and a public
    key, each of :data:`DHLEN` bytes.

    :raises InvalidPublicKey: if ``public_key`` is a low-order point, so the
        shared secret would be all zeros.
    """
    if len(private_key) != DHLEN or len(public_key) != DHLEN:
        raise ValueError("X25519 keys are 32 bytes")
    out = _alloc("unsigned char[]", DHLEN)
    if _scalarmult(out, private_key, public_key) != 0:
        raise InvalidPublicKey()
    return _buffer(out, DHLEN)[:]  # type: ignore[no-any-return]


def x25519_public_key(private_key: bytes) -> bytes:
    """
    The X25519 public key of a 32-byte private key.

    :raises HandshakeConfigError: if ``private_key`` is not 32 bytes.
    """
    if type(private_key) is not bytes or len(private_key) != DHLEN:
        raise HandshakeConfigError("an X25519 private key is 32 bytes")
    out = _alloc("unsigned char[]", DHLEN)
    if _scalarmult_base(out, private_key) != 0:  # pragma: no cover
        # Only for a scalar that clamps to a multiple of the group order.
        raise HandshakeConfigError("this X25519 private key has no public key")
    return _buffer(out, DHLEN)[:]  # type: ignore[no-any-return]


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
        return cls(private, x25519_public_key(private))

    @classmethod
    def generate(cls) -> KeyPair:
        """
        A fresh random key pair (the Noise ``GENERATE_KEYPAIR()``).
        """
        private = os.urandom(DHLEN)
        return cls(private, x25519_public_key(private))

    def __repr__(self) -> str:
        return f"<KeyPair public={self.public.hex()}>"


# -- cipher: ChaChaPoly ------------------------------------------------------

KEYLEN: Final = 32
NONCELEN: Final = 12
TAGLEN: Final = 16
MAX_NONCE: Final = 2**64 - 1
"""
The reserved nonce: a cipher state whose counter reaches it refuses to go on
(Noise section 5.1), and :func:`rekey` encrypts with it.
"""
MAX_MESSAGE_LEN: Final = 65535

_ZEROS32: Final = bytes(32)


chachapoly_nonce: Final[Callable[[int], bytes]] = Struct("<4xQ").pack
"""
The ChaChaPoly nonce for counter ``n``: 4 zero bytes then ``n`` as a 64-bit
little-endian integer.
"""


def chachapoly_encrypt(
    key: bytes, nonce: bytes, ad: bytes, plaintext: bytes | memoryview
) -> bytes:
    """
    IETF ChaCha20-Poly1305 encryption: the Noise ``ENCRYPT(k, n, ad,
    plaintext)`` of ChaChaPoly, given ``n`` as :func:`chachapoly_nonce`
    bytes.

    :param key: :data:`KEYLEN` bytes (not checked: callers guarantee it).
    :param nonce: :data:`NONCELEN` bytes (not checked: callers guarantee it).
    """
    if type(plaintext) is not bytes:
        plaintext = bytes(plaintext)
    size = len(plaintext) + TAGLEN
    out = _alloc("unsigned char[]", size)
    _aead_encrypt(out, _NULL, plaintext, size - TAGLEN, ad, len(ad), _NULL, nonce, key)
    return _buffer(out, size)[:]  # type: ignore[no-any-return]


def chachapoly_decrypt(
    key: bytes, nonce: bytes, ad: bytes, ciphertext: bytes | memoryview
) -> bytes:
    """
    IETF ChaCha20-Poly1305 decryption: the Noise ``DECRYPT(k, n, ad,
    ciphertext)`` of ChaChaPoly. Arguments as for :func:`chachapoly_encrypt`.

    :raises DecryptError: if the ciphertext fails authentication.
    """
    if type(ciphertext) is not bytes:
        ciphertext = bytes(ciphertext)
    size = len(ciphertext) - TAGLEN
    if size < 0:
        raise DecryptError()
    out = _alloc("unsigned char[]", size)
    if _aead_decrypt(out, _NULL, _NULL, ciphertext, size + TAGLEN, ad, len(ad), nonce, key):
        raise DecryptError()
    return _buffer(out, size)[:]  # type: ignore[no-any-return]


_REKEY_NONCE: Final = chachapoly_nonce(MAX_NONCE)


def rekey(key: bytes) -> bytes:
    """
    The Noise default ``REKEY(k)``: the first 32 bytes of
    ``ENCRYPT(k, 2^64-1, zerolen, zeros)`` with 32 zero bytes of plaintext.
    """
    return chachapoly_encrypt(key, _REKEY_NONCE, b"", _ZEROS32)[:KEYLEN]


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

    def hmac(self, key: bytes, data: bytes) -> bytes:
        """
        ``HMAC-HASH(key, data)`` as RFC 2104 defines it.
        """
        new = self._new
        if len(key) > self.blocklen:
            key = new(key).digest()
        key = key.ljust(self.blocklen, b"\0")
        return new(key.translate(_OPAD) + new(key.translate(_IPAD) + data).digest()).digest()

    # HKDF's keys (the chaining key and temp_key) are HASHLEN bytes, never
    # longer than a block, so HMAC's key hashing step never applies; the
    # padded temp_key serves every output.

    def _hkdf_pads(self, chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
        """
        HKDF's ``temp_key = HMAC-HASH(chaining_key, input_key_material)``,
        as the inner and outer padded keys that every output's HMAC uses.
        """
        new = self._new
        key = chaining_key.ljust(self.blocklen, b"\0")
        key = new(key.translate(_OPAD) + new(key.translate(_IPAD) + ikm).digest()).digest()
        key = key.ljust(self.blocklen, b"\0")
        return key.translate(_IPAD), key.translate(_OPAD)

    def hkdf2(self, chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
        """
        ``HKDF(chaining_key, input_key_material, 2)``.
        """
        new = self._new
        inner, outer = self._hkdf_pads(chaining_key, ikm)
        output1 = new(outer + new(inner + b"\x01").digest()).digest()
        output2 = new(outer + new(inner + output1 + b"\x02").digest()).digest()
        return output1, output2

    def hkdf3(self, chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes, bytes]:
        """
        ``HKDF(chaining_key, input_key_material, 3)``.
        """
        new = self._new
        inner, outer = self._hkdf_pads(chaining_key, ikm)
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
