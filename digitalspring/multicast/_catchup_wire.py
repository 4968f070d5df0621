# -*- test-case-name: tests.test_catchup -*-
# mypy: disallow-untyped-calls=False
"""
The commands of catch-up (issue 12; ``docs/offline.rst``), the same for
every strategy: a member back from an absence asks the group's mailboxes,
its neighbours and the owner what they hold after the last message it
committed, then fetches the fragments it lacks from those that hold them.

Any node of a group answers them from its store, over a connection on which
the asker proved membership of the group's current epoch (``NOT_PROVEN``
otherwise, the same whatever the reason).

``group-since``
    The signed manifests of the messages after (``epoch``, ``index``), in
    order, each with a bitmap of the fragments the answerer holds (at most
    :data:`MAX_SINCE` of them, within :data:`MAX_ENTRIES_SIZE` bytes), and
    the newest message it holds, the same way: a signed manifest, so the
    newest index it reports is the owner's word, not the answerer's.
``group-fragment``
    One fragment of a message; ``BUSY`` when the answerer's upload is
    full (ask another holder, or again later), ``REFUSED`` for one it does
    not hold.

Entries are ``varint length, signed manifest, varint length, bitmap`` one
after the other; a bitmap has one bit per fragment, least significant
first, no trailing zero byte (as spring's).
"""

from __future__ import annotations

from twisted.protocols import amp

from .._codec import Reader, varint
from ..errors import DigitalSpringError
from ._commands import BoundedBytes
from ._manifest import FRAGMENT_SIZE, MAX_FRAGMENTS, MAX_MANIFEST_SIZE
from ._membership import MembershipNotProven

#: The most manifests in one ``group-since`` answer.
MAX_SINCE = 32
#: The most bytes of entries in one answer: one AMP value, with room.
MAX_ENTRIES_SIZE = 60_000
#: The largest bitmap of fragments.
BITMAP_SIZE = -(-MAX_FRAGMENTS // 8)
#: The largest entry: one manifest and its bitmap with their lengths.
MAX_ENTRY_SIZE = 3 + MAX_MANIFEST_SIZE + 2 + BITMAP_SIZE


class CatchUpRefused(DigitalSpringError):
    """
    The peer refused a catch-up request: it does not hold what was asked,
    or the request was malformed.
    """


class CatchUpBusy(DigitalSpringError):
    """
    The peer's upload is full, or it already serves as many catch-up
    requests of this node as it serves one peer: ask another holder, or
    again a little later.
    """


class MalformedEntries(DigitalSpringError):
    """
    A peer's answer to a catch-up request cannot be read.
    """


_ERRORS: dict[type[Exception], bytes] = {
    MembershipNotProven: b"NOT_PROVEN",
    CatchUpRefused: b"REFUSED",
    CatchUpBusy: b"BUSY",
}


class CatchUpSince(amp.Command):
    """
    What the answerer holds of the group after (``epoch``, ``index``).
    """

    commandName = b"group-since"
    arguments = [
        (b"group", BoundedBytes(32)),
        (b"epoch", amp.Integer()),
        (b"index", amp.Integer()),
    ]
    response = [
        (b"entries", BoundedBytes(max(MAX_ENTRIES_SIZE, MAX_ENTRY_SIZE))),
        (b"newest", BoundedBytes(MAX_ENTRY_SIZE, optional=True)),
    ]
    errors = _ERRORS


class CatchUpFragment(amp.Command):
    """
    Fragment ``number`` of message ``index`` of ``epoch``.
    """

    commandName = b"group-fragment"
    arguments = [
        (b"group", BoundedBytes(32)),
        (b"epoch", amp.Integer()),
        (b"index", amp.Integer()),
        (b"number", amp.Integer()),
    ]
    response = [(b"data", BoundedBytes(FRAGMENT_SIZE))]
    errors = _ERRORS


def encode_bitmap(numbers: frozenset[int]) -> bytes:
    """
    A set of fragment numbers as a bitmap, without trailing zero bytes.
    """
    bits = 0
    for number in numbers:
        bits |= 1 << number
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


def decode_bitmap(data: bytes) -> int:
    """
    The bits of a bitmap.

    :raises MalformedEntries: for trailing zero bytes.
    """
    if data and data[-1] == 0:
        raise MalformedEntries("a bitmap with trailing zero bytes")
    return int.from_bytes(data, "little")


def encode_entry(signed_manifest: bytes, numbers: frozenset[int]) -> bytes:
    """
    One message as ``group-since`` answers it.
    """
    bitmap = encode_bitmap(numbers)
    return varint(len(signed_manifest)) + signed_manifest + varint(len(bitmap)) + bitmap


def decode_entries(data: bytes) -> list[tuple[bytes, int]]:
    """
    The (signed manifest, bitmap) pairs of an answer, not yet checked.

    :raises MalformedEntries: when it cannot be read.
    """
    reader = Reader(data, MalformedEntries, "catch-up answer")
    entries: list[tuple[bytes, int]] = []
    while reader.offset < len(data):
        if len(entries) >= MAX_SINCE:
            raise reader.fail(f"holds more than {MAX_SINCE} messages")
        manifest = reader.take(reader.varint(MAX_MANIFEST_SIZE))
        bitmap = decode_bitmap(reader.take(reader.varint(BITMAP_SIZE)))
        entries.append((manifest, bitmap))
    return entries
