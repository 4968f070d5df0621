# -*- test-case-name: tests.test_dht -*-
"""
The DHT's requests, as AMP commands inside the secure channel.

Every request carries ``origin``: the addresses at which the sender can be
dialled (empty for a node that is not reachable).  The channel proved who
sent it, so the receiver may add the sender to its routing table under the
peer ID the handshake proved.  Contacts in answers are ``(peer ID,
addresses)`` pairs; their node IDs are derived from the peer IDs, and they
become routing-table contacts only once we have talked to them.

``contacts`` is one AMP value::

    u8 count, then each: 32 B public key, u8 address count,
    then each address: u8 length, UTF-8 ``NAME:ADDRESS``

A malformed entry ends the list: the entries before it are kept.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from twisted.protocols import amp

from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID
from ._record import MAX_ADDRESS, RecordRejected
from ._routing import Contact
from ._store import StoreRefused
from ._value import ValueRejected

#: The most contacts in one answer.
MAX_CONTACTS = 32
#: The most addresses of one contact in an answer or an origin.
MAX_ADDRESSES = 8

#: ``kind`` of FindValue and Store: a signed peer record.
RECORD = "record"
#: ``kind`` of FindValue and Store: small values with proof of work.
MAILBOX = "mailbox"


class BadDHTRequest(DigitalSpringError):
    """
    A DHT request was malformed.
    """


#: Contacts remembered by the codec, each way: an answer to a lookup holds
#: up to :data:`MAX_CONTACTS` contacts, mostly peers met before.  Decoding,
#: a key's checks (canonical form, a point of the prime-order group) cost
#: more than the rest; only keys that pass them are remembered.
PEER_IDS_REMEMBERED = 1 << 15


def encode_contacts(contacts: list[Contact] | tuple[Contact, ...]) -> bytes:
    """
    The wire form of a list of contacts (the first :data:`MAX_CONTACTS`).
    """
    chosen = contacts[:MAX_CONTACTS]
    return b"".join(
        [bytes([len(chosen)])]
        + [_encode_contact(c.peer_id.public_key, c.addresses) for c in chosen]
    )


@lru_cache(maxsize=PEER_IDS_REMEMBERED)
def _encode_contact(public_key: bytes, addresses: tuple[str, ...]) -> bytes:
    """
    One contact's wire form: remembered, as a node answers with the same
    contacts again and again.
    """
    out = bytearray(public_key)
    encoded = [a.encode("utf-8") for a in addresses[:MAX_ADDRESSES]]
    encoded = [a for a in encoded if len(a) <= MAX_ADDRESS]
    out.append(len(encoded))
    for address in encoded:
        out.append(len(address))
        out += address
    return bytes(out)


def decode_contacts(data: bytes) -> list[Contact]:
    """
    Read a list of contacts; never raises: a malformed entry ends it.
    """
    contacts: list[Contact] = []
    if not data:
        return contacts
    count, offset = data[0], 1
    for _ in range(min(count, MAX_CONTACTS)):
        # The entry's extent first: 32 B of key, then its addresses.
        end = offset + 32
        if end >= len(data):
            break
        n = data[end]
        if n > MAX_ADDRESSES:
            break
        end += 1
        for _ in range(n):
            if end >= len(data):
                break
            end += 1 + data[end]
        if end > len(data):
            break
        try:
            contact = _contact(data[offset:end])
        except (IndexError, UnicodeDecodeError):
            break
        offset = end
        if contact is not None:
            contacts.append(contact)
    return contacts


@lru_cache(maxsize=PEER_IDS_REMEMBERED)
def _contact(entry: bytes) -> Contact | None:
    """
    One contact of an answer, from its whole entry, or ``None`` for a key
    no peer can have (the entry is skipped): remembered, as answers name
    the same contacts again and again, and a contact is immutable.

    :raises IndexError: when an address's length runs past the entry.
    :raises UnicodeDecodeError: for an address that is not UTF-8.
    """
    offset = 33
    addresses = []
    for _ in range(entry[32]):
        size = entry[offset]
        raw = entry[offset + 1 : offset + 1 + size]
        if len(raw) != size:
            raise IndexError
        addresses.append(raw.decode("utf-8"))
        offset += 1 + size
    try:
        return Contact(_peer_id(entry[:32]), addresses)
    except InvalidPeerID:
        return None


@lru_cache(maxsize=PEER_IDS_REMEMBERED)
def _peer_id(key: bytes) -> PeerID:
    return PeerID(key)


class Contacts(amp.Argument):
    """
    An AMP argument holding a list of :class:`Contact`.
    """

    def fromString(self, inString: bytes) -> list[Contact]:
        return decode_contacts(inString)

    def toString(self, inObject: list[Contact]) -> bytes:
        return encode_contacts(inObject)


class Origin(amp.Argument):
    """
    The sender's addresses: an AMP argument holding a tuple of ``str``,
    bounded in number and length.
    """

    def fromString(self, inString: bytes) -> tuple[str, ...]:
        addresses = []
        try:
            for raw in amp.ListOf(amp.String()).fromString(inString)[:MAX_ADDRESSES]:
                if len(raw) <= MAX_ADDRESS:
                    addresses.append(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, IndexError):
            return ()
        return tuple(addresses)

    def toString(self, inObject: Any) -> bytes:
        encoded = [a.encode("utf-8") for a in list(inObject)[:MAX_ADDRESSES]]
        return amp.ListOf(amp.String()).toString(encoded)  # type: ignore[no-any-return]


class DHTPing(amp.Command):
    """
    Are you there?
    """

    commandName = b"dht-ping"
    arguments = [(b"origin", Origin())]
    response = []


class FindNode(amp.Command):
    """
    The contacts closest to ``key`` that the receiver knows.
    """

    commandName = b"dht-find-node"
    arguments = [(b"key", amp.String()), (b"origin", Origin())]
    response = [(b"contacts", Contacts())]
    errors = {BadDHTRequest: b"DHT_BAD_REQUEST"}


class FindValue(amp.Command):
    """
    What the receiver holds under ``key`` (of ``kind`` :data:`RECORD` or
    :data:`MAILBOX`), and the contacts closest to it.
    """

    commandName = b"dht-find-value"
    arguments = [(b"key", amp.String()), (b"kind", amp.Unicode()), (b"origin", Origin())]
    response = [
        (b"record", amp.String(optional=True)),
        (b"values", amp.ListOf(amp.String())),
        (b"contacts", Contacts()),
    ]
    errors = {BadDHTRequest: b"DHT_BAD_REQUEST"}


class Store(amp.Command):
    """
    Keep ``data``: a signed peer record (``kind`` :data:`RECORD`) or a small
    value with its proof of work (:data:`MAILBOX`).
    """

    commandName = b"dht-store"
    arguments = [(b"kind", amp.Unicode()), (b"data", amp.String()), (b"origin", Origin())]
    response = [(b"stored", amp.Boolean())]
    # StoreRefused first: StoreFull is also a ValueRejected.
    errors = {
        StoreRefused: b"DHT_STORE_REFUSED",
        BadDHTRequest: b"DHT_BAD_REQUEST",
        RecordRejected: b"DHT_RECORD_REJECTED",
        ValueRejected: b"DHT_VALUE_REJECTED",
    }
