# -*- test-case-name: tests.test_group_crypto -*-
"""
Epochs: the keys the owner makes for each, what each role holds, how an
epoch ends, and the key delivery that hands an epoch's keys to a member.

The owner of a group makes, per epoch, a chain key ``CK_0``, an ephemeral
Ed25519 signing key pair and an access key (:class:`EpochKeys`).  A member
gets the chain key, the signing *public* key and the access key
(:class:`MemberEpoch`); a mailbox gets the access key and the signing public
key (:class:`MailboxEpoch`).  The owner alone holds the signing secret until
one epoch after the epoch is closed, when it reveals it to the members, so
that a transcript proves nothing to outsiders (see ``docs/group-crypto.rst``).

The key delivery (the invitation, or the new-epoch message) travels over
the pairwise Noise channel between owner and member, so it needs no
signature of its own.  Its canonical encoding::

    varint  version (1)
    32 B    group ID
    varint  epoch
    varint  first index: the chain key given is CK_(first index)
    32 B    chain key
    32 B    epoch signing public key
    32 B    access key
    1 B     0, or 1 then the close statement of epoch - 1:
                varint  number of messages of that epoch
                32 B    hash of its last manifest (zeros if none)
    1 B     0, or 1 then the 32-byte signing seed of epoch - 2 (revealed)

A mailbox's key delivery (its invitation, or a new epoch) is smaller: it
has no chain key and never a revealed seed::

    varint  version (1)
    32 B    group ID
    varint  epoch
    varint  first index: the first message of the epoch it is to keep
    32 B    epoch signing public key
    32 B    access key
    1 B     0, or 1 then the close statement of epoch - 1 (as above)

A decoder refuses anything that does not encode back to the same bytes.
"""

from __future__ import annotations

import enum

from attrs import evolve, field, frozen

from .._codec import Reader, varint
from ..errors import DigitalSpringError
from ._chain import ReceivingChain, SendingChain
from ._crypto import (
    HASH_SIZE,
    KEY_SIZE,
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    random_key,
    signing_public_key,
)

#: An epoch ends at the first send after it is this old (seconds) ...
EPOCH_MAX_AGE = 7 * 24 * 3600
#: ... or after it holds this many messages.
EPOCH_MAX_MESSAGES = 1000
#: The size of a group ID.
GROUP_ID_SIZE = 32

DELIVERY_VERSION = 1
#: The largest key delivery, in bytes (every field present and at its
#: longest).
MAX_DELIVERY_SIZE = 1 + 32 + 10 + 10 + 3 * 32 + 1 + 10 + 32 + 1 + 32
#: The largest key delivery of a mailbox, in bytes.
MAX_MAILBOX_DELIVERY_SIZE = 1 + 32 + 10 + 10 + 2 * 32 + 1 + 10 + 32

_NO_HASH = bytes(HASH_SIZE)


class MalformedDelivery(DigitalSpringError):
    """
    The group keys the owner sent cannot be read: they are damaged, or not
    in their one canonical encoding.
    """


class EpochEnd(enum.Enum):
    """
    Why an epoch ends.  The first three are events the service raises
    (:func:`end_epoch`); the last two are found by :func:`end_reason`.
    """

    MEMBER_REMOVED = "member removed"
    MEMBER_LEFT = "member left"
    RESTORED = "restored from a backup"
    TOO_OLD = "older than 7 days"
    TOO_MANY = "1,000 messages sent"


@frozen
class GroupAccess:
    """
    What proves membership of a group in an epoch: the access key.
    Members and mailboxes hold it.
    """

    group_id: bytes
    epoch: int
    access_key: bytes = field(repr=False)


@frozen
class CloseStatement:
    """
    How an epoch ended: the number of its messages and the hash of its last
    manifest.  A member refuses any manifest of the epoch outside that chain.
    """

    group_id: bytes
    epoch: int
    count: int
    last_hash: bytes


@frozen
class EpochKeys:
    """
    The keys the owner makes for an epoch.

    :ivar chain_key: ``CK_0``.
    :ivar signing_seed: the seed of the epoch's Ed25519 signing key pair.
    :ivar access_key: the key of membership proofs.
    """

    group_id: bytes
    epoch: int
    chain_key: bytes = field(repr=False)
    signing_seed: bytes = field(repr=False)
    access_key: bytes = field(repr=False)

    @property
    def signing_public_key(self) -> bytes:
        """
        The public half of the epoch signing key pair.
        """
        return signing_public_key(self.signing_seed)

    @property
    def access(self) -> GroupAccess:
        """
        The access key of the epoch, as members hold it.
        """
        return GroupAccess(self.group_id, self.epoch, self.access_key)


def make_epoch_keys(group_id: bytes, epoch: int) -> EpochKeys:
    """
    Fresh random keys for ``epoch`` of the group.
    """
    return EpochKeys(group_id, epoch, random_key(), random_key(), random_key())


@frozen
class MemberEpoch:
    """
    What a member holds for an epoch.

    :ivar first_index: the index of the first message it can read: 0 for a
        new epoch, the owner's next index for a member invited mid-epoch.
    :ivar chain_key: ``CK_(first_index)``.
    """

    group_id: bytes
    epoch: int
    first_index: int
    chain_key: bytes = field(repr=False)
    signing_public_key: bytes
    access_key: bytes = field(repr=False)

    @property
    def access(self) -> GroupAccess:
        """
        The access key of the epoch.
        """
        return GroupAccess(self.group_id, self.epoch, self.access_key)

    def receiving_chain(self) -> ReceivingChain:
        """
        The member's receiving chain at the start.
        """
        return ReceivingChain(self.first_index, self.chain_key)


@frozen
class MailboxEpoch:
    """
    What a mailbox holds for an epoch: the access key, and the signing
    public key so that it can check the manifests it keeps.  It never gets
    a chain key nor a revealed signing secret.
    """

    access: GroupAccess
    signing_public_key: bytes


@frozen
class MailboxDelivery:
    """
    What a mailbox's invitation or new-epoch message carries.

    :ivar mailbox: the epoch's access key and signing public key.
    :ivar first_index: the first message of the epoch the mailbox keeps:
        the owner's next index when it added the mailbox, 0 in a new epoch.
    :ivar close: how the epoch before ended, if it did.
    """

    mailbox: MailboxEpoch
    first_index: int = 0
    close: CloseStatement | None = None


@frozen
class KeyDelivery:
    """
    What an invitation or a new-epoch message carries.

    :ivar member: the keys of the new epoch.
    :ivar close: how the epoch before it ended, if it did.
    :ivar revealed_seed: the signing seed of the epoch two before, revealed
        for deniability.
    """

    member: MemberEpoch
    close: CloseStatement | None = None
    revealed_seed: bytes | None = field(default=None, repr=False)


@frozen
class OwnerEpoch:
    """
    What the owner holds for the current epoch of a group.

    :ivar keys: the epoch's keys; ``CK_0`` stays until the epoch ends, for
        the members whose new-epoch message waits in the outbox.
    :ivar chain: where the sending chain is.
    :ivar started: when the epoch started, in Unix seconds.
    :ivar last_hash: the hash of the last manifest sent (zeros before any).
    :ivar close: how the epoch before ended.
    :ivar revealed_seed: the signing seed of the epoch two before, which the
        new-epoch messages of this epoch reveal.
    :ivar held_seed: the signing seed of the epoch before, revealed at the
        next epoch.
    :ivar ending: why the epoch must end before the next send, once the
        service said so.
    """

    keys: EpochKeys
    chain: SendingChain
    started: int
    last_hash: bytes = _NO_HASH
    close: CloseStatement | None = None
    revealed_seed: bytes | None = field(default=None, repr=False)
    held_seed: bytes | None = field(default=None, repr=False)
    ending: EpochEnd | None = None


def revealed_seed_matches(epoch: MemberEpoch, seed: bytes) -> bool:
    """
    Whether ``seed`` is the signing secret of ``epoch``: a member checks a
    revealed seed against the public key it holds before keeping it.
    """
    return len(seed) == SEED_SIZE and signing_public_key(seed) == epoch.signing_public_key


def start_group(group_id: bytes, now: int) -> OwnerEpoch:
    """
    The owner's state for epoch 0 of a new group.
    """
    keys = make_epoch_keys(group_id, 0)
    return OwnerEpoch(keys, SendingChain(0, keys.chain_key), now)


def end_reason(owner: OwnerEpoch, now: int) -> EpochEnd | None:
    """
    Why the epoch must end before the owner sends again at ``now``: an
    event the service raised, its age, or its number of messages; ``None``
    if it goes on.
    """
    if owner.ending is not None:
        return owner.ending
    if now - owner.started >= EPOCH_MAX_AGE:
        return EpochEnd.TOO_OLD
    if owner.chain.next_index >= EPOCH_MAX_MESSAGES:
        return EpochEnd.TOO_MANY
    return None


def end_epoch(owner: OwnerEpoch, reason: EpochEnd) -> OwnerEpoch:
    """
    The owner's state once ``reason`` (a member removed or gone, a restore
    from backup) says the epoch must end before the next send.  The first
    reason is kept.
    """
    if owner.ending is not None:
        return owner
    return evolve(owner, ending=reason)


def next_epoch(owner: OwnerEpoch, now: int) -> OwnerEpoch:
    """
    The owner's state for the epoch after ``owner``'s: fresh keys, the close
    statement of the epoch that ends, and the signing seed of the one before
    it to reveal.
    """
    keys = make_epoch_keys(owner.keys.group_id, owner.keys.epoch + 1)
    close = CloseStatement(
        owner.keys.group_id, owner.keys.epoch, owner.chain.next_index, owner.last_hash
    )
    return OwnerEpoch(
        keys,
        SendingChain(0, keys.chain_key),
        now,
        close=close,
        revealed_seed=owner.held_seed,
        held_seed=owner.keys.signing_seed,
    )


def new_epoch_delivery(owner: OwnerEpoch) -> KeyDelivery:
    """
    The new-epoch message to every remaining member: the epoch's keys from
    index 0, the close of the epoch before and the revealed seed.
    """
    return KeyDelivery(
        _member_epoch(owner, 0, owner.keys.chain_key), owner.close, owner.revealed_seed
    )


def invitation_delivery(owner: OwnerEpoch) -> KeyDelivery:
    """
    The keys in an invitation of a new member: the epoch's keys from the
    next message on, so that it reads nothing sent before it joined.
    """
    return KeyDelivery(_member_epoch(owner, owner.chain.next_index, owner.chain.chain_key))


def mailbox_epoch(owner: OwnerEpoch) -> MailboxEpoch:
    """
    What a mailbox of the group gets for the current epoch.
    """
    return MailboxEpoch(owner.keys.access, owner.keys.signing_public_key)


def mailbox_invitation_delivery(owner: OwnerEpoch) -> MailboxDelivery:
    """
    The keys in a mailbox's invitation: it keeps the messages from the
    owner's next one on.
    """
    return MailboxDelivery(mailbox_epoch(owner), owner.chain.next_index)


def mailbox_epoch_delivery(owner: OwnerEpoch) -> MailboxDelivery:
    """
    A new epoch for a mailbox: its keys from index 0, and the close of the
    epoch before (never a revealed seed: a mailbox gets no signing secret).
    """
    return MailboxDelivery(mailbox_epoch(owner), 0, owner.close)


def _member_epoch(owner: OwnerEpoch, first_index: int, chain_key: bytes) -> MemberEpoch:
    keys = owner.keys
    return MemberEpoch(
        keys.group_id, keys.epoch, first_index, chain_key, keys.signing_public_key, keys.access_key
    )


def encode_delivery(delivery: KeyDelivery) -> bytes:
    """
    The canonical encoding of a key delivery.

    :raises ValueError: when a value is out of range, or the close statement
        or revealed seed are not of the two epochs before.
    """
    member = delivery.member
    parts = [
        varint(DELIVERY_VERSION),
        _exact(member.group_id, GROUP_ID_SIZE, "group ID"),
        varint(member.epoch),
        varint(member.first_index),
        _exact(member.chain_key, KEY_SIZE, "chain key"),
        _exact(member.signing_public_key, PUBLIC_KEY_SIZE, "signing public key"),
        _exact(member.access_key, KEY_SIZE, "access key"),
    ]
    close = delivery.close
    if close is None:
        parts.append(b"\0")
    else:
        if close.group_id != member.group_id or close.epoch + 1 != member.epoch:
            raise ValueError("a key delivery closes the epoch before its own, of its group")
        parts += [b"\1", varint(close.count), _exact(close.last_hash, HASH_SIZE, "manifest hash")]
    if delivery.revealed_seed is None:
        parts.append(b"\0")
    else:
        if member.epoch < 2:
            raise ValueError("a key delivery reveals the seed of the epoch two before its own")
        parts += [b"\1", _exact(delivery.revealed_seed, SEED_SIZE, "signing seed")]
    return b"".join(parts)


def _exact(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise ValueError(f"a {what} has {size} bytes, not {len(value)}")
    return value


def decode_delivery(data: bytes) -> KeyDelivery:
    """
    The key delivery in ``data``, refused unless it is in its canonical
    encoding.

    :raises MalformedDelivery: when it is not.
    """
    if len(data) > MAX_DELIVERY_SIZE:
        raise MalformedDelivery(
            f"the group keys have {len(data)} bytes; at most {MAX_DELIVERY_SIZE}"
        )
    reader = Reader(data, MalformedDelivery, "group keys")
    version = reader.varint()
    if version != DELIVERY_VERSION:
        raise reader.fail(f"are of version {version}, not {DELIVERY_VERSION}")
    group_id = reader.take(GROUP_ID_SIZE)
    epoch = reader.varint()
    first_index = reader.varint(EPOCH_MAX_MESSAGES)
    member = MemberEpoch(
        group_id,
        epoch,
        first_index,
        reader.take(KEY_SIZE),
        reader.take(PUBLIC_KEY_SIZE),
        reader.take(KEY_SIZE),
    )
    close = None
    if reader.flag():
        if epoch < 1:
            raise reader.fail("close an epoch before epoch 0")
        count = reader.varint(EPOCH_MAX_MESSAGES)
        close = CloseStatement(group_id, epoch - 1, count, reader.take(HASH_SIZE))
    revealed = None
    if reader.flag():
        if epoch < 2:
            raise reader.fail(f"reveal the seed of an epoch before epoch 0 (in epoch {epoch})")
        revealed = reader.take(SEED_SIZE)
    reader.end()
    delivery = KeyDelivery(member, close, revealed)
    if encode_delivery(delivery) != data:
        raise MalformedDelivery("the group keys are not canonically encoded")
    return delivery


def _close(close: CloseStatement | None, group_id: bytes, epoch: int) -> list[bytes]:
    if close is None:
        return [b"\0"]
    if close.group_id != group_id or close.epoch + 1 != epoch:
        raise ValueError("a key delivery closes the epoch before its own, of its group")
    return [b"\1", varint(close.count), _exact(close.last_hash, HASH_SIZE, "manifest hash")]


def encode_mailbox_delivery(delivery: MailboxDelivery) -> bytes:
    """
    The canonical encoding of a mailbox's key delivery.

    :raises ValueError: when a value is out of range, or the close
        statement is not of the epoch before.
    """
    access = delivery.mailbox.access
    return b"".join(
        [
            varint(DELIVERY_VERSION),
            _exact(access.group_id, GROUP_ID_SIZE, "group ID"),
            varint(access.epoch),
            varint(delivery.first_index),
            _exact(delivery.mailbox.signing_public_key, PUBLIC_KEY_SIZE, "signing public key"),
            _exact(access.access_key, KEY_SIZE, "access key"),
            *_close(delivery.close, access.group_id, access.epoch),
        ]
    )


def decode_mailbox_delivery(data: bytes) -> MailboxDelivery:
    """
    The mailbox's key delivery in ``data``, refused unless it is in its
    canonical encoding.

    :raises MalformedDelivery: when it is not.
    """
    if len(data) > MAX_MAILBOX_DELIVERY_SIZE:
        raise MalformedDelivery(
            f"the mailbox's keys have {len(data)} bytes; at most {MAX_MAILBOX_DELIVERY_SIZE}"
        )
    reader = Reader(data, MalformedDelivery, "mailbox's keys")
    version = reader.varint()
    if version != DELIVERY_VERSION:
        raise reader.fail(f"are of version {version}, not {DELIVERY_VERSION}")
    group_id = reader.take(GROUP_ID_SIZE)
    epoch = reader.varint()
    first_index = reader.varint(EPOCH_MAX_MESSAGES)
    public = reader.take(PUBLIC_KEY_SIZE)
    access = GroupAccess(group_id, epoch, reader.take(KEY_SIZE))
    close = None
    if reader.flag():
        if epoch < 1:
            raise reader.fail("close an epoch before epoch 0")
        count = reader.varint(EPOCH_MAX_MESSAGES)
        close = CloseStatement(group_id, epoch - 1, count, reader.take(HASH_SIZE))
    reader.end()
    delivery = MailboxDelivery(MailboxEpoch(access, public), first_index, close)
    if encode_mailbox_delivery(delivery) != data:
        raise MalformedDelivery("the mailbox's keys are not canonically encoded")
    return delivery
