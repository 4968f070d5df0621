# -*- test-case-name: tests.test_identity -*-
"""
Peer IDs and identities: an Ed25519 key pair, and the text form of its public
key.

The text form reuses Tor's v3 onion encoding, so a typo is caught by a
checksum: ``base32(pubkey || checksum[:2] || 0x03)`` in 56 lowercase
characters, where ``checksum = SHA3-256(".onion checksum" || pubkey || 0x03)``.
"""

from __future__ import annotations

import base64
import hashlib
import re

from attrs import field, frozen
from nacl.bindings import (
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from ..errors import DigitalSpringError

PEER_ID_LENGTH = 56
_VERSION = 3
_CHECKSUM_PREFIX = b".onion checksum"
_NOT_BASE32 = re.compile(r"[^a-z2-7]")


class InvalidPeerID(DigitalSpringError):
    """
    The text is not a valid peer ID.
    """


class BadSignature(DigitalSpringError):
    """
    A signature does not match the peer's key and the signed message.
    """


def _checksum(public_key: bytes) -> bytes:
    return hashlib.sha3_256(_CHECKSUM_PREFIX + public_key + bytes([_VERSION])).digest()[:2]


def encode_onion(public_key: bytes) -> str:
    """
    Tor's v3 onion encoding of a 32-byte Ed25519 public key, without
    ``.onion``: 56 lowercase base32 characters.
    """
    raw = public_key + _checksum(public_key) + bytes([_VERSION])
    return base64.b32encode(raw).decode("ascii").lower()


def decode_onion(text: str, what: str = "peer ID") -> bytes:
    """
    The Ed25519 public key that a v3 onion encoding holds.

    :param what: how the error messages call the thing being parsed.
    :raises InvalidPeerID: saying whether the length, the characters, the
        version or the checksum is wrong.
    """
    if len(text) != PEER_ID_LENGTH:
        raise InvalidPeerID(
            f"a {what} has {PEER_ID_LENGTH} characters; {text[:70]!r} has {len(text)}"
        )
    lowered = text.lower()
    bad = sorted(set(_NOT_BASE32.findall(lowered)))
    if bad:
        raise InvalidPeerID(
            f"{text!r} is not a {what}: it contains characters that are not base32 "
            f"(a-z, 2-7): {''.join(bad)!r}"
        )
    raw = base64.b32decode(lowered.upper())
    public_key, checksum, version = raw[:32], raw[32:34], raw[34]
    if version != _VERSION:
        raise InvalidPeerID(f"{text!r} is not a {what}: version {version}, expected {_VERSION}")
    if checksum != _checksum(public_key):
        raise InvalidPeerID(f"{text!r} is not a {what}: the checksum does not match (a typo?)")
    return public_key


@frozen(order=True)
class PeerID:
    """
    A peer's identity as others see it: its Ed25519 public key.

    ``str(peer_id)`` is the 56-character text form; :meth:`parse` reads it.
    """

    public_key: bytes = field(repr=False)

    @public_key.validator
    def _check_length(self, attribute: object, value: bytes) -> None:
        if len(value) != 32:
            raise InvalidPeerID(f"an Ed25519 public key has 32 bytes, not {len(value)}")

    @classmethod
    def parse(cls, text: str) -> PeerID:
        """
        Read the text form of a peer ID (upper or lower case).

        :raises InvalidPeerID: with a message saying what is wrong.
        """
        return cls(decode_onion(text.strip()))

    def __str__(self) -> str:
        return encode_onion(self.public_key)

    def __repr__(self) -> str:
        return f"PeerID({str(self)!r})"

    @property
    def x25519_public_key(self) -> bytes:
        """
        The X25519 form of the key: the peer's Noise static public key.
        """
        return crypto_sign_ed25519_pk_to_curve25519(self.public_key)

    def verify(self, message: bytes, signature: bytes) -> None:
        """
        Check an Ed25519 signature made by this peer.

        :raises BadSignature: when it does not match.
        """
        try:
            VerifyKey(self.public_key).verify(message, signature)
        except (BadSignatureError, CryptoError, ValueError, TypeError) as e:
            raise BadSignature(f"the signature is not {self}'s") from e


@frozen
class Identity:
    """
    A peer's own key pair: what signs its records and proves it in the
    secure channel.  Keep it secret; :mod:`digitalspring.identity` stores it
    in an encrypted key file.
    """

    signing_key: SigningKey = field(repr=False)

    @classmethod
    def generate(cls) -> Identity:
        """
        A fresh identity from the operating system's random source.
        """
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """
        The identity whose 32-byte Ed25519 seed is ``seed``.
        """
        return cls(SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """
        The 32-byte secret seed that the key pair is derived from.
        """
        return bytes(self.signing_key)

    @property
    def peer_id(self) -> PeerID:
        return PeerID(bytes(self.signing_key.verify_key))

    @property
    def x25519_private_key(self) -> bytes:
        """
        The X25519 form of the secret key: the Noise static private key.
        """
        secret = self.seed + bytes(self.signing_key.verify_key)
        return crypto_sign_ed25519_sk_to_curve25519(secret)

    def sign(self, message: bytes) -> bytes:
        """
        The 64-byte Ed25519 signature of ``message``.
        """
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Identity({self.peer_id})"
