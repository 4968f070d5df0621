# -*- test-case-name: tests.test_storage -*-
"""
What the store holds, as values, and the changes made to it.

A read returns these frozen values; a write is a sequence of
:class:`Change` values that :meth:`IStore.commit
<digitalspring.storage.IStore.commit>` applies in one transaction, all or
nothing.  Each change is one step of what the group layer does; a logical
change of the group layer (remove a member: its status, the neighbour edges
that change, the next epoch, what waits in the outbox) is one ``commit`` of
several steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from attrs import field, frozen

from ..identity import PeerID

#: How we take part in a group.
Role = Literal["owner", "member", "mailbox"]
#: What a member can be in a group, as its owner sees it.
MemberRole = Literal["member", "mailbox"]
#: Where a member stands, as the owner sees it.
MemberStatus = Literal["invited", "active", "removed"]
#: Where we stand in a group: in it, left it, or removed by its owner.
GroupState = Literal["active", "left", "removed"]
#: Whether all of a message is here and committed.
MessageState = Literal["partial", "complete"]
#: Whether a member has committed a message we sent (owner side).
DeliveryState = Literal["pending", "committed"]

ROLES: tuple[Role, ...] = ("owner", "member", "mailbox")
MEMBER_ROLES: tuple[MemberRole, ...] = ("member", "mailbox")
MEMBER_STATUSES: tuple[MemberStatus, ...] = ("invited", "active", "removed")
GROUP_STATES: tuple[GroupState, ...] = ("active", "left", "removed")

#: The length of a group ID, a chain key, an access key and a hash.
KEY_SIZE = 32


def _check_32(instance: object, attribute: object, value: bytes) -> None:
    if len(value) != KEY_SIZE:
        raise ValueError(f"expected {KEY_SIZE} bytes, got {len(value)}")


def _check_index(instance: object, attribute: object, value: int) -> None:
    if value < 0:
        raise ValueError(f"expected a number from 0, got {value}")


@frozen
class Group:
    """
    A group this node is in.

    :ivar group_id: its 32 random bytes.
    :ivar name: its name as the owner proposes it.
    :ivar petname: what the local user calls it, or ``None``.
    :ivar owner: the peer that owns it (ourselves when ``role`` is owner).
    :ivar role: how we take part.
    :ivar strategy: the name of its multicast strategy plugin.
    :ivar degree: N, how many neighbours each member has.
    :ivar created: when it was created or joined (Unix seconds).
    :ivar state: whether we are still in it.
    """

    group_id: bytes = field(validator=_check_32)
    name: str
    owner: PeerID
    role: Role
    strategy: str
    degree: int
    created: float
    petname: str | None = None
    state: GroupState = "active"


@frozen
class Member:
    """
    A member of a group we own.
    """

    peer: PeerID
    role: MemberRole
    status: MemberStatus


@frozen
class ChainState:
    """
    Where a group's sender-key chain is: the chain key for message
    ``next_index``.  The owner sends with it; members receive with it.
    """

    key: bytes = field(repr=False, validator=_check_32)
    next_index: int = field(validator=_check_index)


@frozen
class EpochClose:
    """
    How an epoch ended: the index of its last message (``-1`` when it has
    none) and the hash of that message's manifest (32 zero bytes when none).
    """

    last_index: int
    last_manifest_hash: bytes = field(validator=_check_32)


@frozen
class Epoch:
    """
    One epoch of a group: its keys and whether it is closed.

    Secrets are ``None`` once deleted (:class:`ForgetEpochKeys`) or when we
    never had them: members never hold ``signing_secret``; mailboxes hold
    only ``access_key``.

    :ivar chain: the chain state, or ``None``.
    :ivar signing_public: the epoch's Ed25519 public key (32 bytes).
    :ivar signing_secret: its secret half: the owner's until revealed.
    :ivar access_key: the key of membership proofs in this epoch.
    :ivar close: how it ended, once it has.
    :ivar revealed_secret: the signing secret the owner revealed to members
        one epoch after this one closed (deniability).
    """

    group_id: bytes = field(validator=_check_32)
    epoch: int = field(validator=_check_index)
    signing_public: bytes = field(validator=_check_32)
    created: float
    chain: ChainState | None = None
    signing_secret: bytes | None = field(default=None, repr=False)
    access_key: bytes | None = field(default=None, repr=False)
    close: EpochClose | None = None
    revealed_secret: bytes | None = field(default=None, repr=False)


@frozen
class StoredMessage:
    """
    A message of a group, as stored.

    :ivar manifest: the signed manifest's bytes.
    :ivar state: ``partial`` while fragments are arriving, ``complete`` once
        committed (received and decrypted, or sent).
    :ivar content: the decrypted content (padding removed by the caller) of
        a complete message, when it was kept.
    :ivar sent_at: the send time from inside the encrypted content, once
        known.
    :ivar from_peer: the peer whose fragments are held for a partial message.
    :ivar message_key: the key of a message we sent and keep as its
        fragments (see :class:`CommitSent`).
    :ivar expires: when a mailbox deletes it (Unix seconds), for a message
        a mailbox holds; ``None`` for any other.
    """

    group_id: bytes
    epoch: int
    index: int
    manifest: bytes
    state: MessageState
    content: bytes | None = field(default=None, repr=False)
    sent_at: float | None = None
    from_peer: PeerID | None = None
    message_key: bytes | None = field(default=None, repr=False)
    expires: float | None = None


@frozen
class HeldMessage:
    """
    A message as the catch-up server reads it: what it can tell a member
    that asks, without reading (or decrypting) any content.

    :ivar fragments: the numbers of the fragments held.
    """

    epoch: int
    index: int
    manifest: bytes
    state: MessageState
    fragments: frozenset[int]


@frozen
class MailboxTerms:
    """
    How a mailbox keeps a group it serves.

    :ivar retention: how long it keeps each message, in seconds, as the
        owner set it.
    :ivar floor: the first (epoch, index) it accepts: where the owner's
        chain was when it added the mailbox, raised past every message the
        mailbox deleted, so that nothing it deleted is stored again.
    """

    retention: float
    floor: tuple[int, int]


@frozen
class MailboxUsage:
    """
    What a mailbox holds of one group, for ``dspring mailbox status``.

    :ivar messages: the messages held, complete or arriving.
    :ivar bytes: their manifests' and fragments' bytes: what its quotas
        count.
    :ivar next_expiry: when the next of them is deleted, or ``None``.
    """

    group_id: bytes
    owner: PeerID
    messages: int
    bytes: int
    retention: float
    next_expiry: float | None


@frozen
class OutboxEntry:
    """
    Something waiting to go to a peer when it is reachable.

    :ivar entry_id: the store's number for it, which :class:`Dequeue` and
        :class:`CountAttempt` take; entries of a peer come in the order they
        were queued.
    :ivar group_id: the group it is about, if any: what :meth:`IStore.queued
        <digitalspring.storage.IStore.queued>` and :class:`DropQueued` find
        it by.
    """

    entry_id: int
    peer: PeerID
    kind: str
    payload: bytes = field(repr=False)
    created: float
    attempts: int = 0
    group_id: bytes | None = None


@frozen
class Invitation:
    """
    An invitation waiting for the user's consent.
    """

    from_peer: PeerID
    group_id: bytes
    payload: bytes = field(repr=False)
    received: float


#: An undirected edge of a group's neighbour graph.
Edge = tuple[PeerID, PeerID]


def edge(a: PeerID, b: PeerID) -> Edge:
    """
    The edge between ``a`` and ``b``, in the one order the store uses.

    :raises ValueError: for a loop (``a == b``).
    """
    if a == b:
        raise ValueError("a neighbour graph has no loops")
    return (a, b) if a < b else (b, a)


def _fragments(fragments: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(fragments)


@frozen
class Prekey:
    """
    One of our prekey pairs (issue 12, item 4): a signed prekey, with the
    time it expires, or a one-time prekey, with the peer it was given to.

    :ivar public: the X25519 public key, as given in our key bundles.
    :ivar secret: its X25519 secret.
    :ivar audience: the peer a one-time prekey is reserved for; ``None``
        for a signed prekey.
    :ivar expires: when a signed prekey expires (Unix seconds); ``None``
        for a one-time prekey.
    """

    public: bytes = field(validator=_check_32)
    secret: bytes = field(repr=False, validator=_check_32)
    audience: PeerID | None = None
    expires: int | None = None

    def __attrs_post_init__(self) -> None:
        if (self.audience is None) == (self.expires is None):
            raise ValueError("a prekey has either an audience (one-time) or an expiry (signed)")


@frozen
class StoredBundle:
    """
    A peer's key bundle for us, as it gave it (signature included), and
    those of its one-time prekeys we have handed out (at most the bundle's).
    """

    peer: PeerID
    serial: int
    expires: int
    data: bytes
    handed_out: frozenset[bytes] = frozenset()


@frozen
class NotifyMember:
    """
    A member a notification box serves (it registered over its own
    channel), with how many notifications the box holds for it and how
    many deposits for it were refused since it last collected (past its
    quota: it cannot trust that it was told of every group with news).
    """

    peer: PeerID
    registered: float
    held: int = 0
    refused: int = 0


@frozen
class StoreLimits:
    """
    What peers can make the store hold, per peer and in total.

    The defaults and their reasons are in ``docs/storage.rst``.
    """

    partial_messages_per_peer: int = 256
    partial_messages_total: int = 4096
    partial_bytes_per_peer: int = 64 * 1024 * 1024
    partial_bytes_total: int = 256 * 1024 * 1024
    outbox_entries_per_peer: int = 1000
    outbox_entries_total: int = 100_000
    outbox_bytes_per_peer: int = 16 * 1024 * 1024
    outbox_bytes_total: int = 256 * 1024 * 1024
    invitations_per_peer: int = 8
    invitations_total: int = 256
    invitation_bytes: int = 64 * 1024
    mailbox_bytes_per_group: int = 256 * 1024 * 1024
    mailbox_bytes_per_owner: int = 512 * 1024 * 1024
    mailbox_bytes_total: int = 1024 * 1024 * 1024
    mailbox_groups_per_owner: int = 64
    mailbox_groups_total: int = 1024
    one_time_prekeys_per_peer: int = 16
    one_time_prekeys_total: int = 65536
    key_bundles_total: int = 4096
    sealed_items_per_member: int = 16
    sealed_items_per_owner: int = 1024
    sealed_items_total: int = 16384
    notify_members_total: int = 1024
    notifications_per_member: int = 64
    notifications_total: int = 65536


# --- Changes -----------------------------------------------------------------


@frozen
class Change:
    """
    One step of a transaction.

    :cvar erases: whether the step deletes secrets or contents; after a
        transaction that does, the SQLite store checkpoints its write-ahead
        log with truncation, so the deleted bytes are in neither file.
    """

    erases: ClassVar[bool] = False


@frozen
class AddGroup(Change):
    """
    Store a new group.

    :raises AlreadyStored: when a group has its ID.
    :raises PeerQuotaExceeded: or :raises TotalQuotaExceeded: for a group
        we would serve as a mailbox, past the bound on the groups of its
        owner or on all of them.
    """

    group: Group


@frozen
class SetPetname(Change):
    """
    Name a group for the local user (``None`` shows the owner's name).
    """

    group_id: bytes
    petname: str | None


@frozen
class SetGroupState(Change):
    """
    Record that we left a group, or were removed from it.
    """

    group_id: bytes
    state: GroupState


@frozen
class DeleteGroup(Change):
    """
    Delete a group and everything stored for it: members, neighbours,
    epochs and their keys, messages, fragments and delivery states.
    """

    erases: ClassVar[bool] = True
    group_id: bytes


@frozen
class PutMember(Change):
    """
    Add a member to a group we own, or change its role or status.
    """

    group_id: bytes
    member: Member


@frozen
class ChangeEdges(Change):
    """
    Change a group's neighbour graph (owner side): both ends of each edge
    are members; an edge is given once, in :func:`edge` order or not.
    Adding an edge already there, or removing one that is not, is a no-op.
    """

    group_id: bytes
    add: frozenset[Edge] = frozenset()
    remove: frozenset[Edge] = frozenset()


@frozen
class SetNeighbours(Change):
    """
    Replace our own neighbours in a group (member side).
    """

    group_id: bytes
    peers: frozenset[PeerID]


@frozen
class SetMailboxes(Change):
    """
    Replace the mailboxes of a group we are a member of, as its owner
    names them (member side).
    """

    group_id: bytes
    peers: frozenset[PeerID]


@frozen
class SetMailboxTerms(Change):
    """
    Record how we keep a group we serve as a mailbox.
    """

    group_id: bytes
    terms: MailboxTerms


@frozen
class AddEpoch(Change):
    """
    Store a new epoch of a group, with its keys.

    :raises AlreadyStored: when the group already has this epoch.
    """

    epoch: Epoch


@frozen
class KeepOnlySigningSecret(Change):
    """
    Delete an epoch's chain key, keeping its signing secret and access key
    (and public key, close statement and any revealed secret): what the
    owner holds of an epoch it has closed, until it reveals the secret one
    epoch later (:class:`ForgetEpochKeys` then).  The access key proves
    nothing in a closed epoch; the owner keeps it to authenticate the
    notifications it leaves for a member still in that epoch (away while
    it closed, or removed then), which holds no later one.
    """

    erases: ClassVar[bool] = True
    group_id: bytes
    epoch: int


@frozen
class CloseEpoch(Change):
    """
    Record how an epoch ended.
    """

    group_id: bytes
    epoch: int
    close: EpochClose


@frozen
class RevealSigningSecret(Change):
    """
    Keep the signing secret the owner revealed for a closed epoch.
    """

    group_id: bytes
    epoch: int
    secret: bytes = field(repr=False)


@frozen
class ForgetEpochKeys(Change):
    """
    Delete an epoch's chain key, signing secret and access key.  Its public
    key, close statement and any revealed secret stay.
    """

    erases: ClassVar[bool] = True
    group_id: bytes
    epoch: int


@frozen
class CommitSent(Change):
    """
    Commit a message we send (owner): its manifest and ciphertext fragments,
    the send chain moved to ``chain``, and a pending delivery state for each
    recipient.  Our own copy (history) is either ``message_key``, and then
    the fragments are kept as long as the message (they are its content,
    and :class:`DropFragments` and :class:`ForgetRecipient` leave them), or
    ``content``, and then the fragments are kept until every recipient has
    them; or neither (no history).

    ``index`` must be where the chain was, and ``chain.next_index`` past it.

    :raises ChainOutOfOrder: otherwise.
    """

    group_id: bytes
    epoch: int
    index: int
    manifest: bytes
    fragments: tuple[bytes, ...] = field(repr=False, converter=_fragments)
    content: bytes | None = field(repr=False)
    sent_at: float
    chain: ChainState
    recipients: frozenset[PeerID]
    message_key: bytes | None = field(default=None, repr=False)


@frozen
class StartMessage(Change):
    """
    Keep the (verified) manifest of a message that is arriving from
    ``from_peer``: a partial message, charged to that peer.  In a group we
    serve as a mailbox, its bytes (the manifest's, then its fragments') are
    charged to the group and its owner too, and ``expires`` says when it
    is deleted (:class:`ExpireHeld`).

    :raises AlreadyStored: when the message is already there.
    :raises PeerQuotaExceeded: or :raises TotalQuotaExceeded: past a bound
        (:raises GroupQuotaExceeded: past a mailbox's bound per group).
    :raises PeerBlocked: when ``from_peer`` is blocked.
    """

    group_id: bytes
    epoch: int
    index: int
    manifest: bytes
    from_peer: PeerID
    expires: float | None = None


@frozen
class AddFragment(Change):
    """
    Keep a (verified) fragment of a partial message.  Storing a fragment
    already stored is a no-op.

    :raises NotStored: when the message is not partial here.
    :raises PeerQuotaExceeded: or :raises TotalQuotaExceeded: past a bound
        (:raises GroupQuotaExceeded: past a mailbox's bound per group).
    :raises PeerBlocked: when ``from_peer`` is blocked.
    """

    group_id: bytes
    epoch: int
    index: int
    number: int
    data: bytes = field(repr=False)
    from_peer: PeerID


@frozen
class CommitReceived(Change):
    """
    Commit a received message: keep its content, delete its fragments, and
    replace the receive chain with ``chain``, all at once.  The receive
    chain may skip indices (messages never to be read) but not go back.

    :raises NotStored: when the message is not partial here.
    :raises ChainOutOfOrder: when ``index`` is before the chain, or
        ``chain.next_index`` not past ``index``.
    """

    group_id: bytes
    epoch: int
    index: int
    content: bytes = field(repr=False)
    sent_at: float
    chain: ChainState


@frozen
class HoldMessage(Change):
    """
    A mailbox holds a whole message: it is complete, its fragments stay
    (they are what the mailbox serves), and its bytes stay charged to its
    group and owner, no longer as a partial message of its sender.

    :raises NotStored: when the message is not partial here.
    """

    group_id: bytes
    epoch: int
    index: int


@frozen
class ExpireHeld(Change):
    """
    Delete every message a mailbox holds whose time is up at ``now``, with
    its fragments, and raise each group's floor past them
    (:class:`MailboxTerms`); and every sealed item whose time is up
    (:class:`HoldSealed`).
    """

    erases: ClassVar[bool] = True
    now: float


@frozen
class DropMessage(Change):
    """
    Delete a message, complete or partial, with its fragments and delivery
    states (a refused partial message, or history the user deletes).
    """

    erases: ClassVar[bool] = True
    group_id: bytes
    epoch: int
    index: int


@frozen
class DropFragments(Change):
    """
    Delete the fragments kept of a message we sent, once every recipient
    has it (unless they are our copy of it: :class:`CommitSent`).
    """

    erases: ClassVar[bool] = True
    group_id: bytes
    epoch: int
    index: int


@frozen
class ForgetRecipient(Change):
    """
    Forget what a removed member was still to get of a group we own: its
    pending delivery states (those it committed stay), and the fragments
    of each message that then has no recipient left pending.
    """

    erases: ClassVar[bool] = True
    group_id: bytes
    peer: PeerID


@frozen
class MarkDelivered(Change):
    """
    Record that a recipient committed a message we sent.
    """

    group_id: bytes
    epoch: int
    index: int
    peer: PeerID


@frozen
class Enqueue(Change):
    """
    Queue something for a peer in the outbox, about a group or not.

    :raises PeerQuotaExceeded: or :raises TotalQuotaExceeded: past a bound.
    """

    peer: PeerID
    kind: str
    payload: bytes = field(repr=False)
    created: float
    group_id: bytes | None = None


@frozen
class Dequeue(Change):
    """
    Remove an entry from the outbox (it was delivered, or is given up).
    """

    entry_id: int


@frozen
class DropQueued(Change):
    """
    Remove from the outbox what waits for ``peer`` about a group, of the
    given kinds (news it no longer needs: it was removed, or a newer
    notice supersedes them).
    """

    peer: PeerID
    group_id: bytes
    kinds: frozenset[str]


@frozen
class CountAttempt(Change):
    """
    Count one more attempt to deliver an outbox entry.
    """

    entry_id: int


@frozen
class AddInvitation(Change):
    """
    Keep an invitation until the user answers it; a second one from the
    same peer for the same group replaces the first.

    :raises PeerQuotaExceeded: or :raises TotalQuotaExceeded: past a bound
        (the size of one invitation is bounded too).
    :raises PeerBlocked: when ``from_peer`` is blocked.
    """

    invitation: Invitation


@frozen
class DropInvitation(Change):
    """
    Delete a pending invitation (accepted or declined).
    """

    erases: ClassVar[bool] = True
    from_peer: PeerID
    group_id: bytes


@frozen
class Block(Change):
    """
    Block a peer: its pending invitations and partial messages go at once,
    and nothing more from it is kept.
    """

    erases: ClassVar[bool] = True
    peer: PeerID
    since: float


@frozen
class Unblock(Change):
    """
    Stop blocking a peer.
    """

    peer: PeerID


@frozen
class SetSetting(Change):
    """
    Set a setting, or delete it with ``None``.
    """

    name: str
    value: str | None


@frozen
class AddPrekeys(Change):
    """
    Store prekey pairs we made for our key bundles.

    :raises AlreadyStored: when one of them is stored already.
    :raises PeerQuotaExceeded: past the one-time prekeys kept for one peer.
    :raises TotalQuotaExceeded: past the one-time prekeys kept in all.
    """

    prekeys: tuple[Prekey, ...]


@frozen
class DeletePrekey(Change):
    """
    Delete a prekey's secret (a one-time prekey once used), with what we
    recorded of the items it opened.
    """

    public: bytes
    erases: ClassVar[bool] = True


@frozen
class ExpirePrekeys(Change):
    """
    Delete the signed prekeys that expire at or before ``before`` (the
    caller gives now minus the grace), with what they opened.
    """

    before: float
    erases: ClassVar[bool] = True


@frozen
class RecordOpened(Change):
    """
    Record that an item sealed to the signed prekey ``prekey`` with the
    ephemeral key ``ephemeral`` was opened, so that a replay is refused; the
    record goes with the prekey.

    :raises NotStored: when we hold no such prekey.
    :raises AlreadyStored: when that item was opened before.
    """

    prekey: bytes
    ephemeral: bytes


@frozen
class PutBundle(Change):
    """
    Keep a peer's key bundle for us, in place of the one held.

    :raises TotalQuotaExceeded: when it is a new peer's and we hold as many
        bundles as we keep.
    """

    bundle: StoredBundle


@frozen
class HoldSealed(Change):
    """
    A mailbox holds an item the group's owner sealed for ``recipient``
    (a notice it missed), until the recipient takes it or, when
    ``expires`` is given, until then (:class:`ExpireHeld`), as it keeps
    messages.

    :raises NotStored: when the group is not stored.
    :raises PeerQuotaExceeded: past the items held for one recipient, or
        left by the group's owner in all its groups.
    :raises TotalQuotaExceeded: past the items held in all.
    """

    group_id: bytes
    recipient: PeerID
    item: bytes
    expires: float | None = None


@frozen
class TakeSealed(Change):
    """
    Delete the ``count`` oldest items held for ``recipient`` in a group
    (it took them).
    """

    group_id: bytes
    recipient: PeerID
    count: int


@frozen
class RegisterNotifyMember(Change):
    """
    A notification box serves ``peer`` from now on (again: no change).

    :raises TotalQuotaExceeded: past the members a box serves.
    """

    peer: PeerID
    when: float


@frozen
class UnregisterNotifyMember(Change):
    """
    A notification box no longer serves ``peer``: what it held for it goes.
    """

    peer: PeerID


@frozen
class DepositNotification(Change):
    """
    A notification box holds ``item`` (sealed, opaque) for ``recipient``
    until it collects it.

    :raises NotStored: when the box does not serve ``recipient``.
    :raises PeerQuotaExceeded: past the notifications held for one member.
    :raises TotalQuotaExceeded: past those held in all.
    """

    recipient: PeerID
    item: bytes


@frozen
class RefuseNotification(Change):
    """
    Count a deposit for ``recipient`` refused (nothing when the box does
    not serve it).
    """

    recipient: PeerID


@frozen
class TakeNotifications(Change):
    """
    Delete the ``count`` oldest notifications held for ``recipient`` (it
    collected them), and the count of those refused.
    """

    recipient: PeerID
    count: int
