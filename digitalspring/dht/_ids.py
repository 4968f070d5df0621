# -*- test-case-name: tests.test_dht_routing -*-
"""
Node IDs and the XOR metric: pure functions.

A node's 256-bit ID is BLAKE2b-256 of its Ed25519 public key.  It is always
derived from a key the secure channel proved, or from a peer ID we will
prove when we dial it, never taken from what a peer claims about itself.
IDs are kept as Python integers so that distances are one XOR.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from random import Random, SystemRandom

from ..identity import PeerID

_SYSTEM = SystemRandom()

#: Bits in a node ID.
ID_BITS = 256


def node_id(peer_id: PeerID) -> int:
    """
    The Kademlia node ID of a peer: BLAKE2b-256 of its public key, as an
    integer.
    """
    return _node_id_of_key(peer_id.public_key)


#: Node IDs remembered: every contact decoded from an answer derives one,
#: and a busy node meets the same few thousand peers again and again.
NODE_IDS_REMEMBERED = 1 << 15


@lru_cache(maxsize=NODE_IDS_REMEMBERED)
def _node_id_of_key(public_key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(public_key, digest_size=32).digest(), "big")


def id_bytes(value: int) -> bytes:
    """
    The 32-byte big-endian form of a node ID or key.
    """
    return value.to_bytes(32, "big")


def id_from_bytes(data: bytes) -> int:
    """
    The integer form of a 32-byte node ID or key.

    :raises ValueError: when ``data`` is not 32 bytes long.
    """
    if len(data) != 32:
        raise ValueError(f"a DHT key has 32 bytes, not {len(data)}")
    return int.from_bytes(data, "big")


def distance(a: int, b: int) -> int:
    """
    The Kademlia distance between two IDs: their XOR, read as an integer.
    """
    return a ^ b


def bucket_index(own: int, other: int) -> int:
    """
    The k-bucket of ``other`` in the routing table of ``own``: the index of
    the highest bit in which they differ, 0 to 255 (255: the far half of the
    ID space).

    :raises ValueError: when the IDs are equal.
    """
    d = own ^ other
    if not d:
        raise ValueError("a node has no bucket for itself")
    return d.bit_length() - 1


def random_id_in_bucket(own: int, index: int, source: Random = _SYSTEM) -> int:
    """
    A random ID whose bucket in the routing table of ``own`` is ``index``:
    the target of a bucket refresh.

    :param source: where the random bits come from: the operating system's
        generator, unless a simulation passes a seeded one.
    """
    low = source.getrandbits(index) if index else 0
    return (own ^ (1 << index)) & ~((1 << index) - 1) | low
