# -*- test-case-name: tests.test_manifest,tests.test_dht_record -*-
"""
The pieces every canonical encoding is made of (peer records, manifests,
key deliveries, content headers): unsigned LEB128 varints and a reader that
refuses truncated input.

A varint has more than one form (``0x80 0x00`` is also zero), so no decoder
here is trusted to be strict: each codec decodes, encodes again and refuses
the input unless the bytes are the same, as :mod:`digitalspring.dht._record`
does for peer records.
"""

from __future__ import annotations

from .errors import DigitalSpringError


def varint(value: int) -> bytes:
    """
    The unsigned LEB128 encoding of ``value``.

    :raises ValueError: when ``value`` does not fit 64 unsigned bits.
    """
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"{value} does not fit an unsigned 64-bit varint")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    """
    Reads a byte string from the front, raising ``error`` (with a sentence
    naming ``what``) on anything that is not there.

    :ivar offset: how many bytes have been read.
    """

    def __init__(self, data: bytes, error: type[DigitalSpringError], what: str) -> None:
        self.data = data
        self.offset = 0
        self._error = error
        self._what = what

    def fail(self, reason: str) -> DigitalSpringError:
        """
        The error to raise for ``reason``.
        """
        return self._error(f"the {self._what} {reason}")

    def take(self, size: int) -> bytes:
        """
        The next ``size`` bytes.
        """
        if size > len(self.data) - self.offset:
            raise self.fail("is truncated")
        piece = self.data[self.offset : self.offset + size]
        self.offset += size
        return piece

    def varint(self, largest: int = (1 << 64) - 1) -> int:
        """
        The next varint, refused above ``largest``.
        """
        value = 0
        for shift in range(0, 70, 7):
            (byte,) = self.take(1)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > largest:
                    raise self.fail(f"holds {value} where at most {largest} is allowed")
                return value
        raise self.fail("holds a number that is too long")

    def flag(self) -> bool:
        """
        The next byte as a yes or no: ``0`` or ``1``, nothing else.
        """
        (byte,) = self.take(1)
        if byte > 1:
            raise self.fail(f"holds {byte} where a yes (1) or no (0) belongs")
        return byte == 1

    def end(self) -> None:
        """
        Refuse anything after what has been read.
        """
        if self.offset != len(self.data):
            raise self.fail(f"is followed by {len(self.data) - self.offset} more bytes")
