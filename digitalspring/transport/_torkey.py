# -*- test-case-name: tests.test_tor -*-
"""
Onion service keys and onion addresses: pure functions, no I/O but the key
file.

An onion service's key is an Ed25519 key of its own, kept in the node's
data directory; it is *not* the node's identity key (see ``docs/tor.rst``
for why).
"""

from __future__ import annotations

import base64
import hashlib
import os

from nacl.signing import SigningKey
from twisted.python.filepath import FilePath

from ..identity import InvalidPeerID, atomic_write, decode_onion, encode_onion
from ._address import parse_port
from ._plugins import InvalidAddress, TransportConfigError

#: The length of an Ed25519 seed, which is what a key file holds.
SEED_LENGTH = 32

_V2_LENGTH = 16
_V3_LENGTH = 56


def new_seed() -> bytes:
    """
    A fresh random Ed25519 seed for an onion service key.
    """
    return os.urandom(SEED_LENGTH)


def expanded_secret_key(seed: bytes) -> bytes:
    """
    The 64-byte expanded Ed25519 secret key tor wants in ``ADD_ONION``:
    SHA-512 of the seed, its first half clamped as RFC 8032 says.
    """
    digest = bytearray(hashlib.sha512(seed).digest())
    digest[0] &= 248
    digest[31] &= 127
    digest[31] |= 64
    return bytes(digest)


def tor_private_key(seed: bytes) -> str:
    """
    The ``ED25519-V3:...`` key blob for ``ADD_ONION``.
    """
    return "ED25519-V3:" + base64.b64encode(expanded_secret_key(seed)).decode("ascii")


def onion_host(seed: bytes) -> str:
    """
    The ``.onion`` host name of the service whose key is made from ``seed``.
    """
    return encode_onion(bytes(SigningKey(seed).verify_key)) + ".onion"


def parse_onion_address(address: str) -> tuple[str, int]:
    """
    Split a ``tor`` address, ``ONION.onion:PORT``, checking the v3 onion
    encoding (length, characters, version and checksum).

    :returns: the lowercase host name, with ``.onion``, and the port.
    :raises InvalidAddress: for anything that is not a v3 onion address and
        port, saying what is wrong.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise InvalidAddress(f"{address!r} is not of the form ONION.onion:PORT")
    port = parse_port(port_text)
    lowered = host.lower()
    if not lowered.endswith(".onion"):
        raise InvalidAddress(
            f"{host!r} is not an onion address: the tor transport connects to onion "
            "services only (ONION.onion:PORT)"
        )
    label = lowered[: -len(".onion")]
    if len(label) == _V2_LENGTH:
        raise InvalidAddress(
            f"{host!r} is a version 2 onion address, which tor no longer supports; "
            "ask for the peer's version 3 address (56 characters)"
        )
    if "." in label or len(label) != _V3_LENGTH:
        raise InvalidAddress(
            f"{host!r} is not a version 3 onion address (56 base32 characters, then .onion)"
        )
    try:
        decode_onion(label, "version 3 onion address")
    except InvalidPeerID as e:
        raise InvalidAddress(str(e)) from None
    return lowered, port


def load_or_create_seed(path: FilePath[str]) -> bytes:
    """
    The onion service key seed kept in ``path``, created (mode 0600,
    written atomically) if missing, so the service's address stays the same
    across restarts.

    :raises TransportConfigError: when the file cannot be read or written,
        or does not hold a key.
    """
    try:
        if path.exists():
            seed = path.getContent()
            if len(seed) != SEED_LENGTH:
                raise TransportConfigError(
                    f"{path.path} is not an onion service key file "
                    f"({len(seed)} bytes, expected {SEED_LENGTH}); move it away to make a new key"
                )
            return seed
        seed = new_seed()
        path.parent().makedirs(ignoreExistingDirectory=True)
        os.chmod(path.parent().path, 0o700)
        atomic_write(path, seed)
        return seed
    except OSError as e:
        raise TransportConfigError(f"cannot use the onion service key {path.path}: {e}") from None
