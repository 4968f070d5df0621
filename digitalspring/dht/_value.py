# -*- test-case-name: tests.test_dht_value -*-
"""
Small unsigned values (the whitepaper's "DHT mailbox") and their proof of
work: pure functions, no I/O.

Anyone may leave a value of at most :data:`MAX_VALUE_SIZE` bytes under a
key, for at most :data:`MAX_VALUE_TTL` seconds, if they pay for it in CPU:
``BLAKE2b-256(VALUE_DOMAIN || key || expires || nonce || value)`` must start
with ``difficulty`` zero bits (hashcash).  The expiry is inside the hash so
that nobody can extend someone else's value.  The wire form is canonical by
construction (fixed widths, the value last)::

    32 B key || 8 B expires (Unix seconds, big-endian) || 8 B nonce || value
"""

from __future__ import annotations

import hashlib

from attrs import field, frozen

from ..errors import DigitalSpringError

VALUE_DOMAIN = b"digitalspring dht value v1\0"
#: The largest value, in bytes.
MAX_VALUE_SIZE = 1024
#: The longest a value may be kept, in seconds.
MAX_VALUE_TTL = 24 * 3600
#: Leading zero bits of the proof of work that nodes ask for by default.
DEFAULT_DIFFICULTY = 16
_HEADER = 32 + 8 + 8


class ValueRejected(DigitalSpringError):
    """
    A value was refused by the DHT.
    """


class MalformedValue(ValueRejected):
    """
    The DHT value cannot be decoded.
    """


class ValueTooLarge(ValueRejected):
    """
    The DHT value is larger than 1 KiB.
    """


class ValueExpired(ValueRejected):
    """
    The DHT value has expired.
    """


class ValueTTLTooLong(ValueRejected):
    """
    The DHT value asks to be kept for longer than 24 hours.
    """


class InsufficientWork(ValueRejected):
    """
    The DHT value's proof of work is not hard enough.
    """


@frozen
class MailboxValue:
    """
    A small value under a key, with its expiry and proof-of-work nonce.
    """

    key: bytes = field(repr=lambda key: key.hex()[:16])
    value: bytes
    expires: int
    nonce: bytes = field(repr=False)

    def encode(self) -> bytes:
        """
        The wire form.
        """
        return self.key + self.expires.to_bytes(8, "big") + self.nonce + self.value


def work_hash(key: bytes, value: bytes, expires: int, nonce: bytes) -> bytes:
    """
    The hash whose leading zero bits are the proof of work.
    """
    return hashlib.blake2b(
        VALUE_DOMAIN + key + expires.to_bytes(8, "big") + nonce + value, digest_size=32
    ).digest()


def leading_zero_bits(digest: bytes) -> int:
    """
    How many bits at the start of ``digest`` are zero.
    """
    number = int.from_bytes(digest, "big")
    return len(digest) * 8 - number.bit_length()


def solve(key: bytes, value: bytes, expires: int, difficulty: int) -> MailboxValue:
    """
    Find a nonce that makes the proof of work: about ``2 ** difficulty``
    hashes.

    :raises ValueError: when ``key`` is not 32 bytes or the value is too
        large.
    """
    if len(key) != 32:
        raise ValueError("a DHT key has 32 bytes")
    if len(value) > MAX_VALUE_SIZE:
        raise ValueTooLarge(f"a DHT value has at most {MAX_VALUE_SIZE} bytes, not {len(value)}")
    prefix = VALUE_DOMAIN + key + expires.to_bytes(8, "big")
    limit = 1 << (256 - difficulty)
    counter = 0
    while True:
        nonce = counter.to_bytes(8, "big")
        digest = hashlib.blake2b(prefix + nonce + value, digest_size=32).digest()
        if int.from_bytes(digest, "big") < limit:
            return MailboxValue(key, value, expires, nonce)
        counter += 1


def decode_value(data: bytes) -> MailboxValue:
    """
    Read a value's wire form.

    :raises MalformedValue: when it is too short.
    :raises ValueTooLarge: when the value is larger than
        :data:`MAX_VALUE_SIZE`.
    """
    if len(data) < _HEADER:
        raise MalformedValue("the DHT value is truncated")
    if len(data) - _HEADER > MAX_VALUE_SIZE:
        raise ValueTooLarge(
            f"a DHT value has at most {MAX_VALUE_SIZE} bytes, not {len(data) - _HEADER}"
        )
    return MailboxValue(
        data[:32], data[_HEADER:], int.from_bytes(data[32:40], "big"), data[40:_HEADER]
    )


def check_value(
    data: bytes,
    now: float,
    difficulty: int = DEFAULT_DIFFICULTY,
    max_ttl: float = MAX_VALUE_TTL,
) -> MailboxValue:
    """
    The value in ``data``, if a node should keep it now.

    :raises MalformedValue: when it cannot be decoded.
    :raises ValueTooLarge: when it is larger than :data:`MAX_VALUE_SIZE`.
    :raises ValueExpired: when it expired.
    :raises ValueTTLTooLong: when it expires more than ``max_ttl`` seconds
        from ``now``.
    :raises InsufficientWork: when its proof of work has fewer than
        ``difficulty`` leading zero bits.
    """
    value = decode_value(data)
    if value.expires <= now:
        raise ValueExpired("the DHT value has expired")
    if value.expires - now > max_ttl:
        raise ValueTTLTooLong(f"a DHT value is kept for at most {max_ttl:.0f} s")
    bits = leading_zero_bits(work_hash(value.key, value.value, value.expires, value.nonce))
    if bits < difficulty:
        raise InsufficientWork(
            f"the DHT value's proof of work has {bits} leading zero bits; {difficulty} needed"
        )
    return value
