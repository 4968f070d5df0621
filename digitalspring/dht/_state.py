# -*- test-case-name: tests.test_dht_state -*-
"""
What a DHT node remembers across restarts: the files it keeps in its data
directory, and their codecs (pure functions; the DHT service reads and
writes them).

``dht-contacts.json`` holds the routing table's contacts, most recently seen
first: the peers a restarted node tries first to rejoin the network, with no
bootstrap peer needed.  ``dht-records.json`` holds the signed peer records
and small values the node holds for others, and the last sequence number it
signed its own record with, so that it never publishes a lower one (the
highest sequence wins, whatever the clock says after a restart).

Both are JSON objects naming their format and version and the node they
belong to; a file that is damaged, of another format or of another node is
refused with :class:`DamagedStateFile`, and the node starts without it.
"""

from __future__ import annotations

import binascii
import json
import math
from base64 import b64decode, b64encode
from collections.abc import Iterable
from typing import Any

from attrs import frozen

from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID
from ..transport import InvalidAddress, split_address
from ._routing import Contact

#: The routing table's contacts, in the data directory.
CONTACTS_FILE_NAME = "dht-contacts.json"
#: The records and values held for others, and our own sequence number.
RECORDS_FILE_NAME = "dht-records.json"

CONTACTS_FORMAT = "digitalspring dht contacts"
RECORDS_FORMAT = "digitalspring dht records"
STATE_VERSION = 1

#: The most contacts saved (the most recently seen).
MAX_SAVED_CONTACTS = 256
#: The most addresses saved per contact, as on the wire.
MAX_SAVED_ADDRESSES = 8
#: The longest address saved, in characters.
MAX_ADDRESS_LENGTH = 255
#: The most peer records saved (those closest to our own ID).
MAX_SAVED_RECORDS = 2000
#: The most small values saved.
MAX_SAVED_VALUES = 2000
#: A larger state file is refused unread (a saved one is under 12 MiB).
MAX_STATE_FILE_SIZE = 16 * 1024 * 1024


class DamagedStateFile(DigitalSpringError):
    """
    A DHT state file in the data directory is damaged or not this node's;
    the node ignores it and writes a new one.
    """


@frozen
class SavedContact:
    """
    A contact as saved: who, where, and when we last heard from it.
    """

    contact: Contact
    last_seen: float


@frozen
class SavedRecords:
    """
    What the records file holds.

    :ivar sequence: the last sequence number this node signed a record
        with (0: none).
    :ivar records: signed peer records, as received.
    :ivar values: small values, in their wire form.
    """

    sequence: int
    records: tuple[bytes, ...] = ()
    values: tuple[bytes, ...] = ()


def _document(data: bytes, kind: str, peer_id: PeerID) -> dict[str, Any]:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DamagedStateFile(f"not JSON ({e})") from None
    if not isinstance(document, dict) or document.get("format") != kind:
        raise DamagedStateFile(f"not a file of {kind}")
    if document.get("version") != STATE_VERSION:
        raise DamagedStateFile(f"version {document.get('version')!r} is unknown")
    if document.get("peer_id") != str(peer_id):
        raise DamagedStateFile(f"it belongs to another node ({str(document.get('peer_id'))[:60]})")
    return document


def _list(document: dict[str, Any], name: str, limit: int) -> list[Any]:
    items = document.get(name)
    if not isinstance(items, list):
        raise DamagedStateFile(f"{name} is not a list")
    if len(items) > limit:
        raise DamagedStateFile(f"more than {limit} {name}")
    return items


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DamagedStateFile(f"{str(value)[:40]} is not a time")
    return float(value)


def encode_contacts_file(
    peer_id: PeerID, contacts: Iterable[SavedContact], saved_at: float
) -> bytes:
    """
    The contacts file of node ``peer_id``: at most
    :data:`MAX_SAVED_CONTACTS` contacts, the most recently seen first.
    """
    chosen = sorted(contacts, key=lambda saved: -saved.last_seen)[:MAX_SAVED_CONTACTS]
    document = {
        "format": CONTACTS_FORMAT,
        "version": STATE_VERSION,
        "peer_id": str(peer_id),
        "saved_at": saved_at,
        "contacts": [
            {
                "peer_id": str(saved.contact.peer_id),
                "addresses": [
                    address
                    for address in saved.contact.addresses
                    if len(address) <= MAX_ADDRESS_LENGTH
                ][:MAX_SAVED_ADDRESSES],
                "last_seen": saved.last_seen,
            }
            for saved in chosen
        ],
    }
    return json.dumps(document, indent=1).encode("utf-8") + b"\n"


def decode_contacts_file(data: bytes, peer_id: PeerID) -> list[SavedContact]:
    """
    The contacts in the contacts file of node ``peer_id``.

    :raises DamagedStateFile: saying what is wrong, when the file is
        damaged, of another format or of another node.
    """
    document = _document(data, CONTACTS_FORMAT, peer_id)
    found = []
    for entry in _list(document, "contacts", MAX_SAVED_CONTACTS):
        if not isinstance(entry, dict):
            raise DamagedStateFile("a contact is not an object")
        addresses = entry.get("addresses")
        if (
            not isinstance(addresses, list)
            or not 0 < len(addresses) <= MAX_SAVED_ADDRESSES
            or not all(isinstance(a, str) and len(a) <= MAX_ADDRESS_LENGTH for a in addresses)
        ):
            raise DamagedStateFile("a contact has no valid list of addresses")
        try:
            contact = Contact(PeerID.parse(str(entry.get("peer_id"))), addresses)
            for address in addresses:
                split_address(address)
        except (InvalidPeerID, InvalidAddress) as e:
            raise DamagedStateFile(f"a bad contact: {e}") from None
        found.append(SavedContact(contact, _number(entry.get("last_seen"))))
    return found


def encode_records_file(peer_id: PeerID, saved: SavedRecords, saved_at: float) -> bytes:
    """
    The records file of node ``peer_id``: its sequence number, and at most
    :data:`MAX_SAVED_RECORDS` records and :data:`MAX_SAVED_VALUES` values
    (the first ones given), base64-encoded.
    """
    document = {
        "format": RECORDS_FORMAT,
        "version": STATE_VERSION,
        "peer_id": str(peer_id),
        "saved_at": saved_at,
        "sequence": saved.sequence,
        "records": [b64encode(r).decode("ascii") for r in saved.records[:MAX_SAVED_RECORDS]],
        "values": [b64encode(v).decode("ascii") for v in saved.values[:MAX_SAVED_VALUES]],
    }
    return json.dumps(document, indent=0).encode("utf-8") + b"\n"


def _blobs(document: dict[str, Any], name: str, limit: int) -> tuple[bytes, ...]:
    blobs = []
    for item in _list(document, name, limit):
        if not isinstance(item, str):
            raise DamagedStateFile(f"one of the {name} is not a string")
        try:
            blobs.append(b64decode(item.encode("ascii"), validate=True))
        except (UnicodeEncodeError, binascii.Error):
            raise DamagedStateFile(f"one of the {name} is not base64") from None
    return tuple(blobs)


def decode_records_file(data: bytes, peer_id: PeerID) -> SavedRecords:
    """
    What the records file of node ``peer_id`` holds; the records and values
    are not verified here.

    :raises DamagedStateFile: saying what is wrong, when the file is
        damaged, of another format or of another node.
    """
    document = _document(data, RECORDS_FORMAT, peer_id)
    sequence = document.get("sequence")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise DamagedStateFile("the sequence number is not a natural number")
    return SavedRecords(
        sequence,
        _blobs(document, "records", MAX_SAVED_RECORDS),
        _blobs(document, "values", MAX_SAVED_VALUES),
    )
