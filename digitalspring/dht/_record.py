# -*- test-case-name: tests.test_dht_record -*-
"""
Signed peer records: where a peer can be reached, in its own words.

Pure functions, no I/O.  The encoding is canonical: one byte string per
value.  Integers and lengths are unsigned LEB128 varints, which a decoder
could read in more than one form (``0x80 0x00`` is also zero); instead of
trusting every decoder to be strict, :func:`verify_record` decodes, encodes
again and refuses the record unless the bytes are the same.  The body::

    varint  version (1)
    32 B    the peer's Ed25519 public key
    varint  sequence number (the highest wins)
    varint  issued at (Unix seconds)
    varint  expires at (Unix seconds)
    varint  number of addresses, then each: varint length, UTF-8 "NAME:ADDRESS"
    varint  number of notification boxes, then each: varint length, bytes
    varint  number of prekeys, then each: varint length, bytes

and the signed record is ``body || signature``, the 64-byte Ed25519
signature of the peer over ``RECORD_DOMAIN || body``.  The domain string keeps
a signature made for anything else from passing as a record.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from attrs import field, frozen

from .._codec import Reader, varint
from ..errors import DigitalSpringError
from ..identity import BadSignature, Identity, InvalidPeerID, PeerID
from ..transport import InvalidAddress, split_address

#: What a record signature signs before the encoding: domain separation.
RECORD_DOMAIN = b"digitalspring peer record v1\0"
RECORD_VERSION = 1
SIGNATURE_SIZE = 64

#: The largest signed record accepted, in bytes.
MAX_RECORD_SIZE = 4096
#: The most addresses, boxes or prekeys a record lists.
MAX_ITEMS = 16
#: The longest address, in bytes of UTF-8.
MAX_ADDRESS = 255
#: How far in the future a record may say it was issued (clocks disagree).
CLOCK_SKEW = 300
#: The longest a record may be valid.
MAX_LIFETIME = 24 * 3600


class RecordRejected(DigitalSpringError):
    """
    A peer record was refused.
    """


class RecordTooLarge(RecordRejected):
    """
    The peer record is larger than any valid record.
    """


class MalformedRecord(RecordRejected):
    """
    The peer record cannot be decoded.
    """


class NonCanonicalRecord(RecordRejected):
    """
    The peer record is not in its one canonical encoding.
    """


class BadRecordSignature(RecordRejected):
    """
    The peer record is not signed by the peer it names.
    """


class RecordExpired(RecordRejected):
    """
    The peer record has expired.
    """


class RecordFromFuture(RecordRejected):
    """
    The peer record is dated in the future, beyond any clock skew.
    """


class RecordLifetimeTooLong(RecordRejected):
    """
    The peer record claims to be valid for longer than records may be.
    """


def _texts(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(items)


def _blobs(items: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(items)


@frozen
class PeerRecord:
    """
    Where a peer can be reached: its addresses per transport (best first).
    The format has room for notification boxes and prekeys too, which a
    node leaves empty: it tells its boxes and prekeys to the owners of its
    groups in key bundles, not to everyone (``docs/offline.rst``).

    :ivar peer_id: whose record it is, and whose key signs it.
    :ivar sequence: the version: a node keeps the highest it has seen.
    :ivar issued: when it was made, in Unix seconds.
    :ivar expires: when it stops being valid, in Unix seconds.
    :ivar addresses: ``NAME:ADDRESS`` strings.
    """

    peer_id: PeerID
    sequence: int
    issued: int
    expires: int
    addresses: tuple[str, ...] = field(converter=_texts)
    boxes: tuple[bytes, ...] = field(default=(), converter=_blobs)
    prekeys: tuple[bytes, ...] = field(default=(), converter=_blobs)

    def as_json(self) -> dict[str, Any]:
        """
        The record as JSON values, for the control API.
        """
        return {
            "peer_id": str(self.peer_id),
            "sequence": self.sequence,
            "issued": self.issued,
            "expires": self.expires,
            "addresses": list(self.addresses),
            "boxes": [box.hex() for box in self.boxes],
            "prekeys": [prekey.hex() for prekey in self.prekeys],
        }


def _items(items: tuple[bytes, ...]) -> bytes:
    return varint(len(items)) + b"".join(varint(len(item)) + item for item in items)


def encode_record(record: PeerRecord) -> bytes:
    """
    The canonical encoding of a record's body (what is signed, after the
    domain string).

    :raises ValueError: when a value is out of range.
    """
    return b"".join(
        [
            varint(RECORD_VERSION),
            record.peer_id.public_key,
            varint(record.sequence),
            varint(record.issued),
            varint(record.expires),
            _items(tuple(address.encode("utf-8") for address in record.addresses)),
            _items(record.boxes),
            _items(record.prekeys),
        ]
    )


class _Reader(Reader):
    def __init__(self, data: bytes) -> None:
        super().__init__(data, MalformedRecord, "record")

    def items(self, what: str, longest: int) -> list[bytes]:
        count = self.varint()
        if count > MAX_ITEMS:
            raise MalformedRecord(f"the record lists {count} {what}; at most {MAX_ITEMS}")
        out = []
        for _ in range(count):
            size = self.varint()
            if size > longest:
                raise MalformedRecord(f"one of the record's {what} is longer than {longest} bytes")
            out.append(self.take(size))
        return out


def decode_record(body: bytes) -> PeerRecord:
    """
    Read a record's body.  This does not check that the encoding is
    canonical, nor the signature: :func:`verify_record` does.

    :raises MalformedRecord: when the bytes are not a record.
    """
    reader = _Reader(body)
    version = reader.varint()
    if version != RECORD_VERSION:
        raise MalformedRecord(f"record version {version} is not {RECORD_VERSION}")
    try:
        peer_id = PeerID(reader.take(32))
    except InvalidPeerID as e:
        raise MalformedRecord(f"the record's peer ID is invalid: {e}") from None
    sequence, issued, expires = reader.varint(), reader.varint(), reader.varint()
    addresses = []
    for raw in reader.items("addresses", MAX_ADDRESS):
        try:
            address = raw.decode("utf-8")
            split_address(address)
        except (UnicodeDecodeError, InvalidAddress) as e:
            raise MalformedRecord(f"the record has a bad address: {e}") from None
        addresses.append(address)
    boxes = reader.items("notification boxes", 1024)
    prekeys = reader.items("prekeys", 1024)
    if reader.offset != len(body):
        raise MalformedRecord(f"{len(body) - reader.offset} bytes follow the record")
    return PeerRecord(peer_id, sequence, issued, expires, addresses, boxes, prekeys)


def sign_record(record: PeerRecord, identity: Identity) -> bytes:
    """
    The signed record: its canonical encoding followed by the peer's
    signature over ``RECORD_DOMAIN`` and the encoding.

    :raises ValueError: when ``identity`` is not the record's peer.
    """
    if identity.peer_id != record.peer_id:
        raise ValueError("a peer signs its own record only")
    body = encode_record(record)
    return body + identity.sign(RECORD_DOMAIN + body)


def verify_record(
    signed: bytes,
    now: float,
    skew: float = CLOCK_SKEW,
    max_lifetime: float = MAX_LIFETIME,
) -> PeerRecord:
    """
    The record in a signed record, if it is one to believe now.

    :param now: the current time, in Unix seconds.
    :param skew: how far in the future a record may be dated.
    :param max_lifetime: the longest validity accepted.
    :raises RecordTooLarge: for more than :data:`MAX_RECORD_SIZE` bytes.
    :raises MalformedRecord: when it cannot be decoded.
    :raises NonCanonicalRecord: when encoding it again gives other bytes.
    :raises BadRecordSignature: when the signature is not the named peer's
        over ``RECORD_DOMAIN`` and the body.
    :raises RecordExpired: when it expired.
    :raises RecordFromFuture: when it was issued more than ``skew`` seconds
        after ``now``.
    :raises RecordLifetimeTooLong: when it is valid for longer than
        ``max_lifetime``.
    """
    if len(signed) > MAX_RECORD_SIZE:
        raise RecordTooLarge(f"the record has {len(signed)} bytes; at most {MAX_RECORD_SIZE}")
    if len(signed) <= SIGNATURE_SIZE:
        raise MalformedRecord("the record is truncated")
    body, signature = signed[:-SIGNATURE_SIZE], signed[-SIGNATURE_SIZE:]
    record = decode_record(body)
    if encode_record(record) != body:
        raise NonCanonicalRecord(f"the record of {record.peer_id} is not canonically encoded")
    try:
        record.peer_id.verify(RECORD_DOMAIN + body, signature)
    except BadSignature:
        raise BadRecordSignature(
            f"the record of {record.peer_id} does not carry its signature"
        ) from None
    if record.expires <= now:
        raise RecordExpired(f"the record of {record.peer_id} expired at {record.expires}")
    if record.issued > now + skew:
        raise RecordFromFuture(
            f"the record of {record.peer_id} is dated {record.issued - now:.0f} s in the future"
        )
    if record.expires - record.issued > max_lifetime:
        raise RecordLifetimeTooLong(
            f"the record of {record.peer_id} is valid for {record.expires - record.issued} s; "
            f"at most {max_lifetime:.0f}"
        )
    return record
