# -*- test-case-name: tests.test_identity -*-
"""
Peer IDs and identities: an Ed25519 key pair, and the text form of its public
key.

The text form reuses Tor's v3 onion encoding, so a typo is caught by a
checksum: ``base32(pubkey || checksum[:2] || 0x03)`` in 56 lowercase
characters, where ``checksum = SHA3-256(".onion checksum" || pubkey || 0x03)``.

One static key, one peer ID.  The Noise static key is the X25519 form of the
Ed25519 key, and that form forgets the sign of x: a key ``P`` and its
negation ``-P`` have the same static key, so a handshake that proves one
would prove both.  A peer ID is therefore only valid in one form: the sign
bit (the top bit of the last byte) clear, ``y`` reduced below ``2**255 - 19``,
and a point of the prime-order group (libsodium refuses the others when it
maps the key to X25519; a key with a torsion component could otherwise sign
as a third ID).  An :class:`Identity` derives its key pair from its seed so
that its key is always in that form.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re

from attrs import field, frozen
from nacl.bindings import (
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey
from nacl.utils import random as random_bytes

from ..errors import DigitalSpringError

PEER_ID_LENGTH = 56
_VERSION = 3
_CHECKSUM_PREFIX = b".onion checksum"
_NOT_BASE32 = re.compile(r"[^a-z2-7]")


class InvalidPeerID(DigitalSpringError):
    """
    The text is not a valid peer ID.
    """


class NonCanonicalPeerID(InvalidPeerID):
    """
    The key is not in the one form a peer ID may take (sign bit clear, y
    reduced, a point of the prime-order group): the key pair behind it would
    prove a second peer ID, or it is no usable key at all.  A key file made
    by a Digital Spring from before this rule may hold such a peer ID: make a
    new identity (``dspring init``) and give your contacts the new peer ID.
    """


class BadSignature(DigitalSpringError):
    """
    A signature does not match the peer's key and the signed message.
    """


_FIELD_PRIME = 2**255 - 19
_SIGN_BIT = 0x80


@functools.lru_cache(maxsize=4096)
def _x25519_public_key(public_key: bytes) -> bytes:
    """
    libsodium's X25519 form of an Ed25519 public key, remembered for the
    peers seen lately: it costs a scalar multiplication (the prime-order
    check), and the same peers come back again and again.

    :raises CryptoError: when the key is not a point of the prime-order group.
    """
    return crypto_sign_ed25519_pk_to_curve25519(public_key)


def _check_canonical(public_key: bytes) -> None:
    """
    Check that ``public_key`` is in the one form a peer ID may take.

    :raises NonCanonicalPeerID: saying what is wrong.
    """
    if public_key[31] & _SIGN_BIT:
        raise NonCanonicalPeerID(
            f"{encode_onion(public_key)} is not a valid peer ID: its key's sign bit is set, "
            "so the same key pair would also prove a second peer ID; an identity made by an "
            "older Digital Spring can have this: make a new one (dspring init)"
        )
    if int.from_bytes(public_key, "little") >= _FIELD_PRIME:
        raise NonCanonicalPeerID(
            f"{encode_onion(public_key)} is not a valid peer ID: its key is not reduced "
            "modulo 2**255 - 19"
        )
    try:
        _x25519_public_key(public_key)
    except CryptoError:
        raise NonCanonicalPeerID(
            f"{encode_onion(public_key)} is not a valid peer ID: its key is not a point of "
            "Ed25519's prime-order group"
        ) from None


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


@frozen(order=True, cache_hash=True)
class PeerID:
    """
    A peer's identity as others see it: its Ed25519 public key.

    ``str(peer_id)`` is the 56-character text form; :meth:`parse` reads it.
    Only canonical keys make a peer ID (see the module's docstring).

    :raises InvalidPeerID: for a key that is not 32 bytes long.
    :raises NonCanonicalPeerID: for a key that is not canonical.
    """

    public_key: bytes = field(repr=False)
    #: The text form, made the first time it is asked for: peer IDs are
    #: logged and counted by their text on every request a node answers.
    _text: str | None = field(default=None, init=False, eq=False, order=False, repr=False)

    @public_key.validator
    def _check_key(self, attribute: object, value: bytes) -> None:
        if len(value) != 32:
            raise InvalidPeerID(f"an Ed25519 public key has 32 bytes, not {len(value)}")
        _check_canonical(bytes(value))

    @classmethod
    def parse(cls, text: str) -> PeerID:
        """
        Read the text form of a peer ID (upper or lower case).

        :raises InvalidPeerID: with a message saying what is wrong.
        """
        return cls(decode_onion(text.strip()))

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = encode_onion(self.public_key)
            object.__setattr__(self, "_text", text)
        return text

    def __repr__(self) -> str:
        return f"PeerID({str(self)!r})"

    @property
    def x25519_public_key(self) -> bytes:
        """
        The X25519 form of the key: the peer's Noise static public key.
        """
        return _x25519_public_key(self.public_key)

    def verify(self, message: bytes, signature: bytes) -> None:
        """
        Check an Ed25519 signature made by this peer.

        :raises BadSignature: when it does not match.
        """
        try:
            VerifyKey(self.public_key).verify(message, signature)
        except (BadSignatureError, CryptoError, ValueError, TypeError) as e:
            raise BadSignature(f"the signature is not {self}'s") from e


def _canonical_signing_key(seed: bytes) -> SigningKey:
    """
    The Ed25519 key pair that an identity's 32-byte ``seed`` stands for: the
    one ``seed`` makes when its public key is canonical, else the one the
    BLAKE2b hash of ``seed`` stands for, in turn (about two tries; each try
    has an even chance).
    """
    key = SigningKey(seed)
    while bytes(key.verify_key)[31] & _SIGN_BIT:
        seed = hashlib.blake2b(seed, digest_size=32, person=b"dspring-peerid").digest()
        key = SigningKey(seed)
    return key


@frozen
class Identity:
    """
    A peer's own key pair: what signs its records and proves it in the
    secure channel.  Keep it secret; :mod:`digitalspring.identity` stores it
    in an encrypted key file.

    :ivar seed: the 32-byte secret the key pair is derived from (see
        :func:`_canonical_signing_key`).
    """

    seed: bytes = field(repr=False)
    signing_key: SigningKey = field(repr=False)
    #: The peer ID others know this identity by.
    peer_id: PeerID = field(init=False, repr=False, eq=False)

    @peer_id.default
    def _derive_peer_id(self) -> PeerID:
        return PeerID(bytes(self.signing_key.verify_key))

    @classmethod
    def generate(cls) -> Identity:
        """
        A fresh identity from the operating system's random source.
        """
        return cls.from_seed(random_bytes(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """
        The identity whose 32-byte secret seed is ``seed``.
        """
        return cls(bytes(seed), _canonical_signing_key(seed))

    @property
    def x25519_private_key(self) -> bytes:
        """
        The X25519 form of the secret key: the Noise static private key.
        """
        secret = bytes(self.signing_key) + bytes(self.signing_key.verify_key)
        return crypto_sign_ed25519_sk_to_curve25519(secret)

    def sign(self, message: bytes) -> bytes:
        """
        The 64-byte Ed25519 signature of ``message``.
        """
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Identity({self.peer_id})"
