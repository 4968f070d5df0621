# -*- test-case-name: tests.test_multicast_service -*-
"""
What an owner and a member tell each other over their pairwise Noise
channel, outside any message: invitations, new epochs, neighbour changes
and removals (owner to member), acknowledgements and departures (member to
owner).  Each is a *notice*: a kind and a canonically encoded payload that
starts with the group's ID, so that it can wait in the outbox as it is.

Pure functions, no I/O.  Encodings::

    invitation:
        32 B    group ID
        varint  version (1, or 2 for a group with mailboxes)
        varint  length, then the group's name in UTF-8 (at most 255 bytes)
        varint  length, then the strategy's name (at most 64 bytes)
        varint  N, the degree of the neighbour graph (1 to 64)
        varint  number of neighbours (at most 64), then 32 B each, sorted
        varint  length, then the key delivery (see _epoch.py)
        (version 2 only) varint number of mailboxes (1 to 16), then 32 B
                each, sorted
    new epoch:
        32 B    group ID
        varint  version (1)
        varint  length, then the key delivery
    neighbours:
        32 B    group ID
        varint  version (1)
        varint  number of neighbours, then 32 B each, sorted
    removal, departure, news (owner to a member: messages wait for it,
    which it fetches itself):
        32 B    group ID
    mailbox invitation (owner to a mailbox):
        32 B    group ID
        varint  version (1)
        varint  length, then the strategy's name
        varint  N
        varint  number of neighbours, then 32 B each, sorted
        varint  retention: seconds the mailbox keeps each message
        varint  length, then the mailbox's key delivery (see _epoch.py)
    mailbox epoch (owner to a mailbox):
        32 B    group ID
        varint  version (1)
        varint  length, then the mailbox's key delivery
    key bundle (a member to the owner, see _prekeys.py):
        32 B    group ID (the bundle is for the owner, whatever the group)
        the rest: the member's key bundle
    sealed (owner to a mailbox: a notice sealed for a member away, see
    _prekeys.py):
        32 B    group ID
        32 B    the member
        the rest: the sealed item
    mailboxes (owner to a member):
        32 B    group ID
        varint  version (1)
        varint  number of mailboxes (at most 16), then 32 B each, sorted
    acknowledgement:
        32 B    group ID
        varint  epoch
        varint  index
        32 B    MAC = BLAKE2b(key=ack key, person="ds-delivery-ack",
                              group ID || varint epoch || varint index)

The acknowledgement key is one only the owner and that member hold: it is
derived from the X25519 Diffie-Hellman of their two identities (the static
keys of their Noise channel) and the group's ID.  So an acknowledgement
that a forwarder or a mailbox carries tells it nothing it could check or
forge, and the owner counts it for the member who made it and no one else.
"""

from __future__ import annotations

import hmac

from attrs import frozen
from nacl.bindings import crypto_scalarmult

from .._codec import Reader, varint
from ..errors import DigitalSpringError
from ..identity import Identity, PeerID
from ._crypto import blake2b
from ._epoch import (
    GROUP_ID_SIZE,
    MAX_DELIVERY_SIZE,
    MAX_MAILBOX_DELIVERY_SIZE,
    KeyDelivery,
    MailboxDelivery,
    decode_delivery,
    decode_mailbox_delivery,
    encode_delivery,
    encode_mailbox_delivery,
)

NOTICE_VERSION = 1
#: The version of an invitation that names the group's mailboxes.
_MAILBOXES_VERSION = 2
#: The longest group name, in bytes of UTF-8.
MAX_GROUP_NAME = 255
#: The longest strategy name, in bytes.
MAX_STRATEGY_NAME = 64
#: The largest degree of a neighbour graph, and the most neighbours a
#: notice may name.
MAX_DEGREE = 64
#: The size of an acknowledgement's MAC.
ACK_MAC_SIZE = 32
#: The most mailboxes a group has.
MAX_MAILBOXES = 16
#: The longest retention an owner may ask of a mailbox, in seconds.
MAX_RETENTION = 366 * 24 * 3600

#: The kinds of notices, as the outbox and the wire name them.
INVITATION = "invite"
NEW_EPOCH = "epoch"
NEIGHBOURS = "neighbours"
REMOVAL = "remove"
DEPARTURE = "leave"
ACKNOWLEDGEMENT = "ack"
MAILBOX_INVITATION = "mailbox-invite"
MAILBOX_EPOCH = "mailbox-epoch"
MAILBOXES = "mailboxes"
NEWS = "news"
KEY_BUNDLE = "key-bundle"
SEALED = "sealed"
KINDS = frozenset(
    {
        INVITATION,
        NEW_EPOCH,
        NEIGHBOURS,
        REMOVAL,
        DEPARTURE,
        ACKNOWLEDGEMENT,
        KEY_BUNDLE,
        SEALED,
        MAILBOX_INVITATION,
        MAILBOX_EPOCH,
        MAILBOXES,
        NEWS,
    }
)

_ACK_KEY = b"ds-ack-key"
_ACK_MAC = b"ds-delivery-ack"


class MalformedNotice(DigitalSpringError):
    """
    A group notice from a peer (an invitation, new keys, neighbours, an
    acknowledgement) cannot be read: it is damaged, or not in its one
    canonical encoding.
    """


@frozen
class GroupInvitation:
    """
    An invitation into a group, as the owner sends it.

    :ivar name: the group's name as the owner proposes it.
    :ivar strategy: the name of the group's strategy plugin.
    :ivar degree: N.
    :ivar neighbours: the member's neighbours.
    :ivar delivery: the epoch's keys for the member.
    :ivar mailboxes: the group's mailboxes.
    """

    group_id: bytes
    name: str
    strategy: str
    degree: int
    neighbours: frozenset[PeerID]
    delivery: KeyDelivery
    mailboxes: frozenset[PeerID] = frozenset()


@frozen
class MailboxInvitation:
    """
    What the owner sends a peer it adds as a mailbox of a group.

    :ivar retention: how long the mailbox keeps each message, in seconds.
    :ivar delivery: the epoch's keys for a mailbox.
    """

    group_id: bytes
    strategy: str
    degree: int
    neighbours: frozenset[PeerID]
    retention: int
    delivery: MailboxDelivery


@frozen
class Acknowledgement:
    """
    A member's word that it committed message ``index`` of ``epoch``.
    """

    group_id: bytes
    epoch: int
    index: int
    mac: bytes


def notice_group(payload: bytes) -> bytes:
    """
    The group a notice's payload is about.

    :raises MalformedNotice: when the payload is too short to name one.
    """
    if len(payload) < GROUP_ID_SIZE:
        raise MalformedNotice("the group notice is truncated")
    return payload[:GROUP_ID_SIZE]


def _peers(peers: frozenset[PeerID]) -> bytes:
    if len(peers) > MAX_DEGREE:
        raise ValueError(f"a notice names at most {MAX_DEGREE} neighbours")
    return varint(len(peers)) + b"".join(sorted(p.public_key for p in peers))


def _read_peers(reader: Reader, largest: int = MAX_DEGREE) -> frozenset[PeerID]:
    count = reader.varint(largest)
    try:
        return frozenset(PeerID(reader.take(32)) for _ in range(count))
    except ValueError as e:
        raise reader.fail(f"names a neighbour that is no peer ID: {e}") from None


def _text(value: str, largest: int, what: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > largest:
        raise ValueError(f"a {what} has at most {largest} bytes")
    return varint(len(data)) + data


def _read_text(reader: Reader, largest: int) -> str:
    try:
        return reader.take(reader.varint(largest)).decode("utf-8")
    except UnicodeDecodeError:
        raise reader.fail("holds a name that is not UTF-8") from None


def _read_delivery(reader: Reader, group_id: bytes) -> KeyDelivery:
    data = reader.take(reader.varint(MAX_DELIVERY_SIZE))
    try:
        delivery = decode_delivery(data)
    except DigitalSpringError as e:
        raise MalformedNotice(str(e)) from None
    if delivery.member.group_id != group_id:
        raise reader.fail("carries the keys of another group")
    return delivery


def _read_mailbox_delivery(reader: Reader, group_id: bytes) -> MailboxDelivery:
    data = reader.take(reader.varint(MAX_MAILBOX_DELIVERY_SIZE))
    try:
        delivery = decode_mailbox_delivery(data)
    except DigitalSpringError as e:
        raise MalformedNotice(str(e)) from None
    if delivery.mailbox.access.group_id != group_id:
        raise reader.fail("carries the keys of another group")
    return delivery


def _mailbox_delivery(delivery: MailboxDelivery) -> bytes:
    data = encode_mailbox_delivery(delivery)
    return varint(len(data)) + data


def _canonical(data: bytes, encoded: bytes) -> None:
    if encoded != data:
        raise MalformedNotice("the group notice is not canonically encoded")


def encode_invitation(invitation: GroupInvitation) -> bytes:
    """
    The canonical encoding of an invitation.

    :raises ValueError: when a value is out of range.
    """
    if not 0 < invitation.degree <= MAX_DEGREE:
        raise ValueError(f"a degree is 1 to {MAX_DEGREE}")
    mailboxes = invitation.mailboxes
    if len(mailboxes) > MAX_MAILBOXES:
        raise ValueError(f"a group has at most {MAX_MAILBOXES} mailboxes")
    return b"".join(
        [
            invitation.group_id,
            varint(_MAILBOXES_VERSION if mailboxes else NOTICE_VERSION),
            _text(invitation.name, MAX_GROUP_NAME, "group name"),
            _text(invitation.strategy, MAX_STRATEGY_NAME, "strategy name"),
            varint(invitation.degree),
            _peers(invitation.neighbours),
            _delivery(invitation.delivery),
            _peers(mailboxes) if mailboxes else b"",
        ]
    )


def _delivery(delivery: KeyDelivery) -> bytes:
    data = encode_delivery(delivery)
    return varint(len(data)) + data


def _start(
    payload: bytes, what: str, versions: tuple[int, ...] = (NOTICE_VERSION,)
) -> tuple[Reader, bytes]:
    reader, group_id, _ = _versioned(payload, what, versions)
    return reader, group_id


def _versioned(payload: bytes, what: str, versions: tuple[int, ...]) -> tuple[Reader, bytes, int]:
    reader = Reader(payload, MalformedNotice, what)
    group_id = reader.take(GROUP_ID_SIZE)
    version = reader.varint()
    if version not in versions:
        raise reader.fail(f"is of version {version}, not {NOTICE_VERSION}")
    return reader, group_id, version


def decode_invitation(payload: bytes) -> GroupInvitation:
    """
    The invitation in ``payload``.

    :raises MalformedNotice: unless it is canonically encoded.
    """
    reader, group_id, version = _versioned(
        payload, "invitation", (NOTICE_VERSION, _MAILBOXES_VERSION)
    )
    name = _read_text(reader, MAX_GROUP_NAME)
    strategy = _read_text(reader, MAX_STRATEGY_NAME)
    degree = reader.varint(MAX_DEGREE)
    if degree == 0:
        raise reader.fail("names a degree of 0")
    neighbours = _read_peers(reader)
    delivery = _read_delivery(reader, group_id)
    mailboxes: frozenset[PeerID] = frozenset()
    if version == _MAILBOXES_VERSION:
        mailboxes = _read_peers(reader, MAX_MAILBOXES)
    reader.end()
    invitation = GroupInvitation(group_id, name, strategy, degree, neighbours, delivery, mailboxes)
    _canonical(payload, encode_invitation(invitation))
    return invitation


def encode_new_epoch(delivery: KeyDelivery) -> bytes:
    """
    The canonical encoding of a new-epoch notice.
    """
    return delivery.member.group_id + varint(NOTICE_VERSION) + _delivery(delivery)


def decode_new_epoch(payload: bytes) -> KeyDelivery:
    """
    The key delivery in a new-epoch notice.

    :raises MalformedNotice: unless it is canonically encoded.
    """
    reader, group_id = _start(payload, "new-epoch notice")
    delivery = _read_delivery(reader, group_id)
    reader.end()
    _canonical(payload, encode_new_epoch(delivery))
    return delivery


def encode_neighbours(group_id: bytes, neighbours: frozenset[PeerID]) -> bytes:
    """
    The canonical encoding of a neighbours notice.
    """
    return group_id + varint(NOTICE_VERSION) + _peers(neighbours)


def decode_neighbours(payload: bytes) -> tuple[bytes, frozenset[PeerID]]:
    """
    The group and neighbours in a neighbours notice.

    :raises MalformedNotice: unless it is canonically encoded.
    """
    reader, group_id = _start(payload, "neighbours notice")
    neighbours = _read_peers(reader)
    reader.end()
    _canonical(payload, encode_neighbours(group_id, neighbours))
    return group_id, neighbours


def decode_bare(payload: bytes) -> bytes:
    """
    The group of a removal or departure notice (its group ID alone).

    :raises MalformedNotice: when it is anything else.
    """
    if len(payload) != GROUP_ID_SIZE:
        raise MalformedNotice("the group notice is not a group ID alone")
    return payload


def acknowledgement_key(identity: Identity, peer: PeerID, group_id: bytes) -> bytes:
    """
    The key of the acknowledgements between ``identity`` and ``peer`` (the
    owner and a member, either way round) for one group.
    """
    shared = crypto_scalarmult(identity.x25519_private_key, peer.x25519_public_key)
    return blake2b(_ACK_KEY, group_id, shared)


def _ack_data(group_id: bytes, epoch: int, index: int) -> bytes:
    return group_id + varint(epoch) + varint(index)


def make_acknowledgement(key: bytes, group_id: bytes, epoch: int, index: int) -> bytes:
    """
    The canonical encoding of a member's acknowledgement of a message.
    """
    mac = blake2b(_ACK_MAC, _ack_data(group_id, epoch, index), key)
    return _ack_data(group_id, epoch, index) + mac


def decode_acknowledgement(payload: bytes) -> Acknowledgement:
    """
    The acknowledgement in ``payload``, not yet checked
    (:func:`acknowledgement_valid` does).

    :raises MalformedNotice: unless it is canonically encoded.
    """
    reader = Reader(payload, MalformedNotice, "acknowledgement")
    group_id = reader.take(GROUP_ID_SIZE)
    epoch = reader.varint()
    index = reader.varint()
    mac = reader.take(ACK_MAC_SIZE)
    reader.end()
    _canonical(payload, _ack_data(group_id, epoch, index) + mac)
    return Acknowledgement(group_id, epoch, index, mac)


def acknowledgement_valid(key: bytes, ack: Acknowledgement) -> bool:
    """
    Whether ``ack`` was made with ``key``.
    """
    expected = blake2b(_ACK_MAC, _ack_data(ack.group_id, ack.epoch, ack.index), key)
    return hmac.compare_digest(expected, ack.mac)


def encode_mailbox_invitation(invitation: MailboxInvitation) -> bytes:
    """
    The canonical encoding of a mailbox's invitation.

    :raises ValueError: when a value is out of range.
    """
    if not 0 < invitation.degree <= MAX_DEGREE:
        raise ValueError(f"a degree is 1 to {MAX_DEGREE}")
    if not 0 < invitation.retention <= MAX_RETENTION:
        raise ValueError(f"a retention is 1 to {MAX_RETENTION} seconds")
    return b"".join(
        [
            invitation.group_id,
            varint(NOTICE_VERSION),
            _text(invitation.strategy, MAX_STRATEGY_NAME, "strategy name"),
            varint(invitation.degree),
            _peers(invitation.neighbours),
            varint(invitation.retention),
            _mailbox_delivery(invitation.delivery),
        ]
    )


def decode_mailbox_invitation(payload: bytes) -> MailboxInvitation:
    """
    The mailbox's invitation in ``payload``.

    :raises MalformedNotice: unless it is canonically encoded.
    """
    reader, group_id = _start(payload, "mailbox invitation")
    strategy = _read_text(reader, MAX_STRATEGY_NAME)
    degree = reader.varint(MAX_DEGREE)
    if degree == 0:
        raise reader.fail("names a degree of 0")
    neighbours = _read_peers(reader)
    retention = reader.varint(MAX_RETENTION)
    if retention == 0:
        raise reader.fail("names a retention of 0")
    delivery = _read_mailbox_delivery(reader, group_id)
    reader.end()
    invitation = MailboxInvitation(group_id, strategy, degree, neighbours, retention, delivery)
    _canonical(payload, encode_mailbox_invitation(invitation))
    return invitation


def encode_mailbox_epoch(delivery: MailboxDelivery) -> bytes:
    """
    The canonical encoding of a mailbox's new-epoch notice.
    """
    group_id = delivery.mailbox.access.group_id
    return group_id + varint(NOTICE_VERSION) + _mailbox_delivery(delivery)


def decode_mailbox_epoch(payload: bytes) -> MailboxDelivery:
    """
    The mailbox's key delivery in a mailbox's new-epoch notice.

    :raises MalformedNotice: unless it is canonically encoded.
    """
    reader, group_id = _start(payload, "mailbox epoch notice")
    delivery = _read_mailbox_delivery(reader, group_id)
    reader.end()
    _canonical(payload, encode_mailbox_epoch(delivery))
    return delivery


def encode_mailboxes(group_id: bytes, mailboxes: frozenset[PeerID]) -> bytes:
    """
    The canonical encoding of a mailboxes notice.

    :raises ValueError: for more than :data:`MAX_MAILBOXES`.
    """
    if len(mailboxes) > MAX_MAILBOXES:
        raise ValueError(f"a group has at most {MAX_MAILBOXES} mailboxes")
    return group_id + varint(NOTICE_VERSION) + _peers(mailboxes)


def decode_mailboxes(payload: bytes) -> tuple[bytes, frozenset[PeerID]]:
    """
    The group and mailboxes in a mailboxes notice.

    :raises MalformedNotice: unless it is canonically encoded.
    """
    reader, group_id = _start(payload, "mailboxes notice")
    count = reader.varint(MAX_MAILBOXES)
    try:
        mailboxes = frozenset(PeerID(reader.take(32)) for _ in range(count))
    except ValueError as e:
        raise reader.fail(f"names a mailbox that is no peer ID: {e}") from None
    reader.end()
    _canonical(payload, encode_mailboxes(group_id, mailboxes))
    return group_id, mailboxes
