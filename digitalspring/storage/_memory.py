# -*- test-case-name: tests.test_storage -*-
"""
A store held in memory, for simulations of many nodes in one process.

It keeps the same rules as the SQLite store and passes the same
conformance tests, but nothing survives the process and nothing is
encrypted (there is no file to protect).  Every Deferred it returns has
already fired, so a simulation on a :class:`~twisted.internet.task.Clock`
needs no reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from attrs import evolve
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from ..identity import PeerID
from ._errors import (
    AlreadyStored,
    NotStored,
    PeerBlocked,
    StorageError,
    StoreClosed,
)
from ._interfaces import IStore
from ._rules import check_chain, check_mailbox_groups, check_mailbox_quota, check_quota
from ._values import (
    AddEpoch,
    AddFragment,
    AddGroup,
    AddInvitation,
    AddPrekeys,
    Block,
    Change,
    ChangeEdges,
    CloseEpoch,
    CommitReceived,
    CommitSent,
    CountAttempt,
    DeleteGroup,
    DeletePrekey,
    DeliveryState,
    DepositNotification,
    Dequeue,
    DropFragments,
    DropInvitation,
    DropMessage,
    DropQueued,
    Edge,
    Enqueue,
    Epoch,
    ExpireHeld,
    ExpirePrekeys,
    ForgetEpochKeys,
    ForgetRecipient,
    Group,
    HeldMessage,
    HoldMessage,
    HoldSealed,
    Invitation,
    KeepOnlySigningSecret,
    MailboxTerms,
    MailboxUsage,
    MarkDelivered,
    Member,
    NotifyMember,
    OutboxEntry,
    Prekey,
    PutBundle,
    PutMember,
    RecordOpened,
    RefuseNotification,
    RegisterNotifyMember,
    RevealSigningSecret,
    SetGroupState,
    SetMailboxes,
    SetMailboxTerms,
    SetNeighbours,
    SetPetname,
    SetSetting,
    StartMessage,
    StoredBundle,
    StoredMessage,
    StoreLimits,
    TakeNotifications,
    TakeSealed,
    Unblock,
    UnregisterNotifyMember,
    edge,
)

_K = TypeVar("_K")
_V = TypeVar("_V")
_T = TypeVar("_T")
_MessageKey = tuple[bytes, int, int]


@implementer(IStore)
class MemoryStore:
    """
    An :class:`~digitalspring.storage.IStore` in dictionaries.

    A transaction records how to undo each write and, when a change is
    refused, undoes them in reverse order.
    """

    def __init__(self, limits: StoreLimits | None = None) -> None:
        self._limits = limits or StoreLimits()
        self._closed = False
        self._undo: list[Callable[[], None]] = []
        self._groups: dict[bytes, Group] = {}
        self._members: dict[bytes, dict[PeerID, Member]] = {}
        self._edges: dict[bytes, dict[Edge, None]] = {}
        self._neighbours: dict[bytes, frozenset[PeerID]] = {}
        self._mailboxes: dict[bytes, frozenset[PeerID]] = {}
        self._terms: dict[bytes, MailboxTerms] = {}
        # Bytes a mailbox holds of each message of a group it serves.
        self._held: dict[_MessageKey, int] = {}
        self._epochs: dict[bytes, dict[int, Epoch]] = {}
        self._messages: dict[_MessageKey, StoredMessage] = {}
        self._fragments: dict[_MessageKey, dict[int, bytes]] = {}
        self._charges: dict[_MessageKey, tuple[PeerID, int]] = {}
        self._deliveries: dict[_MessageKey, dict[PeerID, DeliveryState]] = {}
        self._outbox: dict[int, OutboxEntry] = {}
        self._next_entry = 1
        self._invitations: dict[tuple[PeerID, bytes], Invitation] = {}
        self._blocked: dict[PeerID, float] = {}
        self._settings: dict[str, str] = {}
        self._prekeys: dict[bytes, Prekey] = {}
        # The ephemeral keys of items each signed prekey opened.
        self._opened: dict[tuple[bytes, bytes], None] = {}
        self._bundles: dict[PeerID, StoredBundle] = {}
        self._sealed: dict[tuple[bytes, PeerID], list[tuple[bytes, float | None]]] = {}
        # A notification box's members, and what it holds for each.
        self._notify_members: dict[PeerID, NotifyMember] = {}
        self._notifications: dict[PeerID, list[bytes]] = {}

    # --- journal ---------------------------------------------------------

    def _set(self, mapping: dict[_K, _V], key: _K, value: _V) -> None:
        if key in mapping:
            old = mapping[key]
            self._undo.append(lambda: mapping.__setitem__(key, old))
        else:
            self._undo.append(lambda: _forget(mapping, key))
        mapping[key] = value

    def _delete(self, mapping: dict[_K, _V], key: _K) -> None:
        if key in mapping:
            old = mapping.pop(key)
            self._undo.append(lambda: mapping.__setitem__(key, old))

    # --- reads -----------------------------------------------------------

    def _read(self, function: Callable[[], _T]) -> Deferred[_T]:
        if self._closed:
            return fail(StoreClosed("the store is closed"))
        try:
            return succeed(function())
        except StorageError as e:
            return fail(e)

    def _group(self, group_id: bytes) -> Group:
        try:
            return self._groups[group_id]
        except KeyError:
            raise NotStored(f"no group {group_id.hex()}") from None

    def _epoch(self, group_id: bytes, epoch: int | None) -> Epoch:
        self._group(group_id)
        epochs = self._epochs.get(group_id, {})
        if epoch is None and epochs:
            epoch = max(epochs)
        try:
            return epochs[epoch]  # type: ignore[index]
        except KeyError:
            raise NotStored(f"no epoch {epoch} in group {group_id.hex()}") from None

    def _message(self, key: _MessageKey) -> StoredMessage:
        try:
            return self._messages[key]
        except KeyError:
            raise NotStored(f"no message {key[1]}/{key[2]} in group {key[0].hex()}") from None

    def group(self, group_id: bytes) -> Deferred[Group]:
        return self._read(lambda: self._group(group_id))

    def groups(self) -> Deferred[list[Group]]:
        return self._read(
            lambda: sorted(self._groups.values(), key=lambda g: (g.created, g.group_id))
        )

    def members(self, group_id: bytes) -> Deferred[list[Member]]:
        return self._read(lambda: list(self._members.get(group_id, {}).values()))

    def edges(self, group_id: bytes) -> Deferred[frozenset[Edge]]:
        return self._read(lambda: frozenset(self._edges.get(group_id, {})))

    def neighbours(self, group_id: bytes) -> Deferred[frozenset[PeerID]]:
        return self._read(lambda: self._neighbours.get(group_id, frozenset()))

    def mailboxes(self, group_id: bytes) -> Deferred[frozenset[PeerID]]:
        return self._read(lambda: self._mailboxes.get(group_id, frozenset()))

    def _mailbox_terms(self, group_id: bytes) -> MailboxTerms:
        try:
            return self._terms[group_id]
        except KeyError:
            raise NotStored(f"this node is no mailbox of group {group_id.hex()}") from None

    def mailbox_terms(self, group_id: bytes) -> Deferred[MailboxTerms]:
        return self._read(lambda: self._mailbox_terms(group_id))

    def mailbox_usage(self) -> Deferred[list[MailboxUsage]]:
        def read() -> list[MailboxUsage]:
            found = []
            for group in sorted(self._groups.values(), key=lambda g: (g.created, g.group_id)):
                terms = self._terms.get(group.group_id)
                if terms is None:
                    continue
                keys = [k for k in self._held if k[0] == group.group_id]
                expiries = [
                    m.expires
                    for k in keys
                    if (m := self._messages.get(k)) is not None and m.expires is not None
                ]
                found.append(
                    MailboxUsage(
                        group.group_id,
                        group.owner,
                        len(keys),
                        sum(self._held[k] for k in keys),
                        terms.retention,
                        min(expiries, default=None),
                    )
                )
            return found

        return self._read(read)

    def next_expiry(self) -> Deferred[float | None]:
        return self._read(
            lambda: min(
                [
                    *(m.expires for m in self._messages.values() if m.expires is not None),
                    *(
                        expires
                        for items in self._sealed.values()
                        for _, expires in items
                        if expires is not None
                    ),
                ],
                default=None,
            )
        )

    def epoch(self, group_id: bytes, epoch: int | None = None) -> Deferred[Epoch]:
        return self._read(lambda: self._epoch(group_id, epoch))

    def message(self, group_id: bytes, epoch: int, index: int) -> Deferred[StoredMessage]:
        return self._read(lambda: self._message((group_id, epoch, index)))

    def manifest(self, group_id: bytes, epoch: int, index: int) -> Deferred[bytes]:
        return self._read(lambda: self._message((group_id, epoch, index)).manifest)

    def _sorted_messages(self, group_id: bytes) -> list[StoredMessage]:
        return sorted(
            (m for (g, _, _), m in self._messages.items() if g == group_id),
            key=lambda m: (m.epoch, m.index),
        )

    def history(
        self, group_id: bytes, after: tuple[int, int] | None = None, limit: int = 100
    ) -> Deferred[list[StoredMessage]]:
        def read() -> list[StoredMessage]:
            found = [
                m
                for m in self._sorted_messages(group_id)
                if m.state == "complete" and (after is None or (m.epoch, m.index) > after)
            ]
            return found[:limit]

        return self._read(read)

    def _held_message(self, message: StoredMessage) -> HeldMessage:
        key = (message.group_id, message.epoch, message.index)
        return HeldMessage(
            message.epoch,
            message.index,
            message.manifest,
            message.state,
            frozenset(self._fragments.get(key, {})),
        )

    def held_after(
        self, group_id: bytes, after: tuple[int, int], limit: int
    ) -> Deferred[list[HeldMessage]]:
        return self._read(
            lambda: [
                self._held_message(m)
                for m in self._sorted_messages(group_id)
                if (m.epoch, m.index) > after
            ][:limit]
        )

    def newest(self, group_id: bytes) -> Deferred[HeldMessage | None]:
        def read() -> HeldMessage | None:
            messages = self._sorted_messages(group_id)
            return self._held_message(messages[-1]) if messages else None

        return self._read(read)

    def fragment(self, group_id: bytes, epoch: int, index: int, number: int) -> Deferred[bytes]:
        def read() -> bytes:
            try:
                return self._fragments[(group_id, epoch, index)][number]
            except KeyError:
                raise NotStored(f"fragment {number} of {epoch}/{index} is not kept") from None

        return self._read(read)

    def partial_messages(self, group_id: bytes) -> Deferred[list[StoredMessage]]:
        return self._read(
            lambda: [m for m in self._sorted_messages(group_id) if m.state == "partial"]
        )

    def fragments(self, group_id: bytes, epoch: int, index: int) -> Deferred[dict[int, bytes]]:
        return self._read(lambda: dict(self._fragments.get((group_id, epoch, index), {})))

    def deliveries(
        self, group_id: bytes, epoch: int, index: int
    ) -> Deferred[dict[PeerID, DeliveryState]]:
        return self._read(lambda: dict(self._deliveries.get((group_id, epoch, index), {})))

    def undelivered(self, group_id: bytes, peer: PeerID) -> Deferred[list[tuple[int, int]]]:
        return self._read(
            lambda: sorted(
                (e, i)
                for (g, e, i), states in self._deliveries.items()
                if g == group_id and states.get(peer) == "pending"
            )
        )

    def outbox(self, peer: PeerID) -> Deferred[list[OutboxEntry]]:
        return self._read(lambda: [e for e in self._outbox.values() if e.peer == peer])

    def queued(self, peer: PeerID, kind: str, group_id: bytes) -> Deferred[list[OutboxEntry]]:
        return self._read(
            lambda: [
                e
                for e in self._outbox.values()
                if e.peer == peer and e.kind == kind and e.group_id == group_id
            ]
        )

    def member_of(self, peer: PeerID) -> Deferred[list[bytes]]:
        return self._read(
            lambda: [
                group_id
                for group_id, members in self._members.items()
                if peer in members and members[peer].status != "removed"
            ]
        )

    def outbox_peers(self) -> Deferred[frozenset[PeerID]]:
        return self._read(lambda: frozenset(e.peer for e in self._outbox.values()))

    def invitations(self) -> Deferred[list[Invitation]]:
        return self._read(lambda: sorted(self._invitations.values(), key=lambda i: i.received))

    def blocked(self) -> Deferred[frozenset[PeerID]]:
        return self._read(lambda: frozenset(self._blocked))

    def setting(self, name: str) -> Deferred[str | None]:
        return self._read(lambda: self._settings.get(name))

    def prekey(self, public: bytes) -> Deferred[Prekey]:
        def read() -> Prekey:
            try:
                return self._prekeys[public]
            except KeyError:
                raise NotStored(f"no prekey {public.hex()}") from None

        return self._read(read)

    def prekeys(self) -> Deferred[list[Prekey]]:
        return self._read(lambda: sorted(self._prekeys.values(), key=_prekey_order))

    def bundle(self, peer: PeerID) -> Deferred[StoredBundle]:
        def read() -> StoredBundle:
            try:
                return self._bundles[peer]
            except KeyError:
                raise NotStored(f"no key bundle of {peer}") from None

        return self._read(read)

    def sealed(self, group_id: bytes, recipient: PeerID, limit: int) -> Deferred[list[bytes]]:
        return self._read(
            lambda: [item for item, _ in self._sealed.get((group_id, recipient), [])[:limit]]
        )

    def notify_member(self, peer: PeerID) -> Deferred[NotifyMember]:
        def read() -> NotifyMember:
            try:
                member = self._notify_members[peer]
            except KeyError:
                raise NotStored(f"{peer} is no member of this notification box") from None
            return evolve(member, held=len(self._notifications.get(peer, [])))

        return self._read(read)

    def notify_members(self) -> Deferred[list[NotifyMember]]:
        return self._read(
            lambda: [
                evolve(m, held=len(self._notifications.get(m.peer, [])))
                for _, m in sorted(self._notify_members.items(), key=lambda i: i[0].public_key)
            ]
        )

    def notifications(self, recipient: PeerID, limit: int) -> Deferred[list[bytes]]:
        return self._read(lambda: self._notifications.get(recipient, [])[:limit])

    def close(self) -> Deferred[None]:
        self._closed = True
        return succeed(None)

    # --- writes ----------------------------------------------------------

    def commit(self, *changes: Change) -> Deferred[None]:
        if self._closed:
            return fail(StoreClosed("the store is closed"))
        self._undo = []
        try:
            for change in changes:
                _APPLY[type(change)](self, change)
        except StorageError as e:
            for undo in reversed(self._undo):
                undo()
            self._undo = []
            return fail(e)
        self._undo = []
        return succeed(None)

    def _add_group(self, change: AddGroup) -> None:
        group_id = change.group.group_id
        if group_id in self._groups:
            raise AlreadyStored(f"group {group_id.hex()} is already stored")
        if change.group.role == "mailbox":
            served = [g for g in self._groups.values() if g.role == "mailbox"]
            check_mailbox_groups(
                change.group.owner,
                sum(1 for g in served if g.owner == change.group.owner) + 1,
                len(served) + 1,
                self._limits,
            )
        self._set(self._groups, group_id, change.group)

    def _set_petname(self, change: SetPetname) -> None:
        group = self._group(change.group_id)
        self._set(self._groups, change.group_id, evolve(group, petname=change.petname))

    def _set_group_state(self, change: SetGroupState) -> None:
        group = self._group(change.group_id)
        self._set(self._groups, change.group_id, evolve(group, state=change.state))

    def _delete_group(self, change: DeleteGroup) -> None:
        group_id = change.group_id
        for table in (
            self._members,
            self._edges,
            self._neighbours,
            self._mailboxes,
            self._terms,
            self._epochs,
            self._groups,
        ):
            self._delete(table, group_id)  # type: ignore[misc]
        for key in [k for k in self._messages if k[0] == group_id]:
            self._drop_message(DropMessage(*key))
        for held in [k for k in self._sealed if k[0] == group_id]:
            self._delete(self._sealed, held)

    def _inner(self, outer: dict[bytes, dict[_K, _V]], group_id: bytes) -> dict[_K, _V]:
        self._group(group_id)
        if group_id not in outer:
            self._set(outer, group_id, {})
        return outer[group_id]

    def _put_member(self, change: PutMember) -> None:
        members = self._inner(self._members, change.group_id)
        self._set(members, change.member.peer, change.member)

    def _change_edges(self, change: ChangeEdges) -> None:
        members = self._members.get(change.group_id, {})
        edges = self._inner(self._edges, change.group_id)
        for a, b in change.remove:
            self._delete(edges, edge(a, b))
        for a, b in change.add:
            for end in (a, b):
                if end not in members:
                    raise NotStored(f"{end} is not a member of group {change.group_id.hex()}")
            self._set(edges, edge(a, b), None)

    def _set_neighbours(self, change: SetNeighbours) -> None:
        self._group(change.group_id)
        self._set(self._neighbours, change.group_id, frozenset(change.peers))

    def _set_mailboxes(self, change: SetMailboxes) -> None:
        self._group(change.group_id)
        self._set(self._mailboxes, change.group_id, frozenset(change.peers))

    def _set_mailbox_terms(self, change: SetMailboxTerms) -> None:
        self._group(change.group_id)
        self._set(self._terms, change.group_id, change.terms)

    def _charge_mailbox(self, key: _MessageKey, size: int) -> None:
        """
        In a group we serve as a mailbox, hold ``size`` more bytes of a
        message, within the bounds per group, per owner and in all.
        """
        group = self._group(key[0])
        if group.role != "mailbox":
            return
        owners = {g.group_id: g.owner for g in self._groups.values() if g.role == "mailbox"}
        held = self._held.items()
        check_mailbox_quota(
            group.group_id,
            group.owner,
            sum(n for k, n in held if k[0] == group.group_id) + size,
            sum(n for k, n in held if owners.get(k[0]) == group.owner) + size,
            sum(n for k, n in held if k[0] in owners) + size,
            self._limits,
        )
        self._set(self._held, key, self._held.get(key, 0) + size)

    def _add_epoch(self, change: AddEpoch) -> None:
        epochs = self._inner(self._epochs, change.epoch.group_id)
        if change.epoch.epoch in epochs:
            raise AlreadyStored(f"epoch {change.epoch.epoch} is already stored")
        self._set(epochs, change.epoch.epoch, change.epoch)

    def _replace_epoch(self, group_id: bytes, number: int, **values: Any) -> Epoch:
        epoch = self._epoch(group_id, number)
        self._set(self._epochs[group_id], number, evolve(epoch, **values))
        return epoch

    def _close_epoch(self, change: CloseEpoch) -> None:
        self._replace_epoch(change.group_id, change.epoch, close=change.close)

    def _reveal(self, change: RevealSigningSecret) -> None:
        self._replace_epoch(change.group_id, change.epoch, revealed_secret=change.secret)

    def _forget(self, change: ForgetEpochKeys) -> None:
        self._replace_epoch(
            change.group_id, change.epoch, chain=None, signing_secret=None, access_key=None
        )

    def _keep_only_signing(self, change: KeepOnlySigningSecret) -> None:
        self._replace_epoch(change.group_id, change.epoch, chain=None)

    def _commit_sent(self, change: CommitSent) -> None:
        epoch = self._epoch(change.group_id, change.epoch)
        check_chain(epoch, change.index, change.chain, exact=True)
        key = (change.group_id, change.epoch, change.index)
        if key in self._messages:
            raise AlreadyStored(f"message {change.epoch}/{change.index} is already stored")
        self._replace_epoch(change.group_id, change.epoch, chain=change.chain)
        self._set(
            self._messages,
            key,
            StoredMessage(
                change.group_id,
                change.epoch,
                change.index,
                change.manifest,
                "complete",
                change.content,
                change.sent_at,
                message_key=change.message_key,
            ),
        )
        self._set(self._fragments, key, dict(enumerate(change.fragments)))
        pending: dict[PeerID, DeliveryState] = dict.fromkeys(change.recipients, "pending")
        self._set(self._deliveries, key, pending)

    def _check_not_blocked(self, peer: PeerID) -> None:
        if peer in self._blocked:
            raise PeerBlocked(f"{peer} is blocked")

    def _charge(self, key: _MessageKey, peer: PeerID, size: int, new_message: bool) -> None:
        limits = self._limits
        charges = self._charges.values()
        check_quota(
            "partial messages",
            peer,
            sum(1 for p, _ in charges if p == peer) + new_message,
            len(self._charges) + new_message,
            limits.partial_messages_per_peer,
            limits.partial_messages_total,
        )
        check_quota(
            "partial bytes",
            peer,
            sum(n for p, n in charges if p == peer) + size,
            sum(n for _, n in charges) + size,
            limits.partial_bytes_per_peer,
            limits.partial_bytes_total,
        )
        held = self._charges.get(key, (peer, 0))[1]
        self._set(self._charges, key, (peer, held + size))

    def _start_message(self, change: StartMessage) -> None:
        self._check_not_blocked(change.from_peer)
        self._epoch(change.group_id, change.epoch)
        key = (change.group_id, change.epoch, change.index)
        if key in self._messages:
            raise AlreadyStored(f"message {change.epoch}/{change.index} is already stored")
        self._charge(key, change.from_peer, len(change.manifest), True)
        self._charge_mailbox(key, len(change.manifest))
        self._set(
            self._messages,
            key,
            StoredMessage(
                change.group_id,
                change.epoch,
                change.index,
                change.manifest,
                "partial",
                from_peer=change.from_peer,
                expires=change.expires,
            ),
        )

    def _partial(self, key: _MessageKey) -> StoredMessage:
        message = self._messages.get(key)
        if message is None or message.state != "partial":
            raise NotStored(f"message {key[1]}/{key[2]} is not arriving here")
        return message

    def _add_fragment(self, change: AddFragment) -> None:
        self._check_not_blocked(change.from_peer)
        key = (change.group_id, change.epoch, change.index)
        self._partial(key)
        fragments = self._fragments.get(key, {})
        if change.number in fragments:
            return
        self._charge(key, change.from_peer, len(change.data), False)
        self._charge_mailbox(key, len(change.data))
        if key not in self._fragments:
            self._set(self._fragments, key, fragments)
        self._set(fragments, change.number, change.data)

    def _commit_received(self, change: CommitReceived) -> None:
        key = (change.group_id, change.epoch, change.index)
        message = self._partial(key)
        epoch = self._epoch(change.group_id, change.epoch)
        check_chain(epoch, change.index, change.chain, exact=False)
        self._replace_epoch(change.group_id, change.epoch, chain=change.chain)
        self._set(
            self._messages,
            key,
            evolve(
                message,
                state="complete",
                content=change.content,
                sent_at=change.sent_at,
                from_peer=None,
            ),
        )
        self._delete(self._fragments, key)
        self._delete(self._charges, key)

    def _hold_message(self, change: HoldMessage) -> None:
        key = (change.group_id, change.epoch, change.index)
        message = self._partial(key)
        self._set(self._messages, key, evolve(message, state="complete", from_peer=None))
        self._delete(self._charges, key)

    def _expire_held(self, change: ExpireHeld) -> None:
        due = sorted(
            key
            for key, m in self._messages.items()
            if m.expires is not None and m.expires <= change.now
        )
        for group_id, epoch, index in due:
            terms = self._terms.get(group_id)
            if terms is not None and terms.floor < (epoch, index + 1):
                self._set(self._terms, group_id, evolve(terms, floor=(epoch, index + 1)))
            self._drop_message(DropMessage(group_id, epoch, index))
        for key, items in list(self._sealed.items()):
            left = [(i, e) for i, e in items if e is None or e > change.now]
            if len(left) == len(items):
                continue
            if left:
                self._set(self._sealed, key, left)
            else:
                self._delete(self._sealed, key)

    def _drop_message(self, change: DropMessage) -> None:
        key = (change.group_id, change.epoch, change.index)
        for table in (
            self._messages,
            self._fragments,
            self._charges,
            self._deliveries,
            self._held,
        ):
            self._delete(table, key)  # type: ignore[misc]

    def _drop_fragments(self, change: DropFragments) -> None:
        key = (change.group_id, change.epoch, change.index)
        message = self._messages.get(key)
        if message is not None and message.state == "complete" and message.message_key is None:
            self._delete(self._fragments, key)

    def _forget_recipient(self, change: ForgetRecipient) -> None:
        for key, states in list(self._deliveries.items()):
            if key[0] != change.group_id or states.get(change.peer) != "pending":
                continue
            self._delete(states, change.peer)
            if "pending" not in states.values():
                self._drop_fragments(DropFragments(*key))

    def _mark_delivered(self, change: MarkDelivered) -> None:
        states = self._deliveries.get((change.group_id, change.epoch, change.index), {})
        if change.peer not in states:
            raise NotStored(f"{change.peer} is not a recipient of {change.epoch}/{change.index}")
        self._set(states, change.peer, "committed")

    def _enqueue(self, change: Enqueue) -> None:
        limits = self._limits
        entries = self._outbox.values()
        check_quota(
            "outbox entries",
            change.peer,
            sum(1 for e in entries if e.peer == change.peer) + 1,
            len(self._outbox) + 1,
            limits.outbox_entries_per_peer,
            limits.outbox_entries_total,
        )
        size = len(change.payload)
        check_quota(
            "outbox bytes",
            change.peer,
            sum(len(e.payload) for e in entries if e.peer == change.peer) + size,
            sum(len(e.payload) for e in entries) + size,
            limits.outbox_bytes_per_peer,
            limits.outbox_bytes_total,
        )
        entry_id = self._next_entry
        self._next_entry += 1
        self._set(
            self._outbox,
            entry_id,
            OutboxEntry(
                entry_id,
                change.peer,
                change.kind,
                change.payload,
                change.created,
                group_id=change.group_id,
            ),
        )

    def _dequeue(self, change: Dequeue) -> None:
        self._delete(self._outbox, change.entry_id)

    def _drop_queued(self, change: DropQueued) -> None:
        for entry_id, entry in list(self._outbox.items()):
            if (
                entry.peer == change.peer
                and entry.group_id == change.group_id
                and entry.kind in change.kinds
            ):
                self._delete(self._outbox, entry_id)

    def _count_attempt(self, change: CountAttempt) -> None:
        entry = self._outbox.get(change.entry_id)
        if entry is not None:
            self._set(self._outbox, change.entry_id, evolve(entry, attempts=entry.attempts + 1))

    def _add_invitation(self, change: AddInvitation) -> None:
        invitation = change.invitation
        peer = invitation.from_peer
        self._check_not_blocked(peer)
        key = (peer, invitation.group_id)
        replacing = key in self._invitations
        limits = self._limits
        check_quota(
            "invitation bytes",
            peer,
            len(invitation.payload),
            0,
            limits.invitation_bytes,
            limits.invitation_bytes,
        )
        check_quota(
            "invitations",
            peer,
            sum(1 for p, _ in self._invitations if p == peer) + (not replacing),
            len(self._invitations) + (not replacing),
            limits.invitations_per_peer,
            limits.invitations_total,
        )
        self._set(self._invitations, key, invitation)

    def _drop_invitation(self, change: DropInvitation) -> None:
        self._delete(self._invitations, (change.from_peer, change.group_id))

    def _block(self, change: Block) -> None:
        self._set(self._blocked, change.peer, change.since)
        for key in [k for k in self._invitations if k[0] == change.peer]:
            self._delete(self._invitations, key)
        for charged in [k for k, (p, _) in self._charges.items() if p == change.peer]:
            self._drop_message(DropMessage(*charged))

    def _unblock(self, change: Unblock) -> None:
        self._delete(self._blocked, change.peer)

    def _set_setting(self, change: SetSetting) -> None:
        if change.value is None:
            self._delete(self._settings, change.name)
        else:
            self._set(self._settings, change.name, change.value)

    def _add_prekeys(self, change: AddPrekeys) -> None:
        for prekey in change.prekeys:
            if prekey.public in self._prekeys:
                raise AlreadyStored(f"prekey {prekey.public.hex()} is already stored")
            if prekey.audience is not None:
                audience = prekey.audience
                one_time = [p.audience for p in self._prekeys.values() if p.audience is not None]
                check_quota(
                    "one-time prekeys",
                    audience,
                    one_time.count(audience) + 1,
                    len(one_time) + 1,
                    self._limits.one_time_prekeys_per_peer,
                    self._limits.one_time_prekeys_total,
                )
            self._set(self._prekeys, prekey.public, prekey)

    def _delete_prekey(self, change: DeletePrekey) -> None:
        self._delete(self._prekeys, change.public)
        for key in [k for k in self._opened if k[0] == change.public]:
            self._delete(self._opened, key)

    def _expire_prekeys(self, change: ExpirePrekeys) -> None:
        for prekey in list(self._prekeys.values()):
            if prekey.expires is not None and prekey.expires <= change.before:
                self._delete_prekey(DeletePrekey(prekey.public))

    def _record_opened(self, change: RecordOpened) -> None:
        prekey = self._prekeys.get(change.prekey)
        if prekey is None or prekey.expires is None:
            raise NotStored(f"no signed prekey {change.prekey.hex()}")
        key = (change.prekey, change.ephemeral)
        if key in self._opened:
            raise AlreadyStored("that sealed item was opened before")
        self._set(self._opened, key, None)

    def _put_bundle(self, change: PutBundle) -> None:
        peer = change.bundle.peer
        check_quota(
            "key bundles",
            peer,
            1,
            len(self._bundles) + (peer not in self._bundles),
            1,
            self._limits.key_bundles_total,
        )
        self._set(self._bundles, peer, change.bundle)

    def _hold_sealed(self, change: HoldSealed) -> None:
        owner = self._group(change.group_id).owner
        key = (change.group_id, change.recipient)
        held = self._sealed.get(key, [])
        total = sum(len(items) for items in self._sealed.values())
        check_quota(
            "sealed items",
            change.recipient,
            len(held) + 1,
            total + 1,
            self._limits.sealed_items_per_member,
            self._limits.sealed_items_total,
        )
        check_quota(
            "sealed items left by one owner",
            owner,
            sum(len(v) for (g, _), v in self._sealed.items() if self._groups[g].owner == owner)
            + 1,
            total + 1,
            self._limits.sealed_items_per_owner,
            self._limits.sealed_items_total,
        )
        self._set(self._sealed, key, [*held, (change.item, change.expires)])

    def _take_sealed(self, change: TakeSealed) -> None:
        key = (change.group_id, change.recipient)
        left = self._sealed.get(key, [])[change.count :]
        if left:
            self._set(self._sealed, key, left)
        else:
            self._delete(self._sealed, key)

    def _register_notify_member(self, change: RegisterNotifyMember) -> None:
        if change.peer in self._notify_members:
            return
        check_quota(
            "notification box members",
            change.peer,
            1,
            len(self._notify_members) + 1,
            1,
            self._limits.notify_members_total,
        )
        self._set(self._notify_members, change.peer, NotifyMember(change.peer, change.when))

    def _unregister_notify_member(self, change: UnregisterNotifyMember) -> None:
        if change.peer in self._notify_members:
            self._delete(self._notify_members, change.peer)
        if change.peer in self._notifications:
            self._delete(self._notifications, change.peer)

    def _deposit_notification(self, change: DepositNotification) -> None:
        if change.recipient not in self._notify_members:
            raise NotStored(f"{change.recipient} is no member of this notification box")
        held = self._notifications.get(change.recipient, [])
        check_quota(
            "notifications",
            change.recipient,
            len(held) + 1,
            sum(len(items) for items in self._notifications.values()) + 1,
            self._limits.notifications_per_member,
            self._limits.notifications_total,
        )
        self._set(self._notifications, change.recipient, [*held, change.item])

    def _refuse_notification(self, change: RefuseNotification) -> None:
        member = self._notify_members.get(change.recipient)
        if member is not None:
            self._set(
                self._notify_members, change.recipient, evolve(member, refused=member.refused + 1)
            )

    def _take_notifications(self, change: TakeNotifications) -> None:
        left = self._notifications.get(change.recipient, [])[change.count :]
        if left:
            self._set(self._notifications, change.recipient, left)
        elif change.recipient in self._notifications:
            self._delete(self._notifications, change.recipient)
        member = self._notify_members.get(change.recipient)
        if member is not None and member.refused:
            self._set(self._notify_members, change.recipient, evolve(member, refused=0))


def _prekey_order(prekey: Prekey) -> tuple[int, int, bytes, bytes]:
    if prekey.expires is not None:
        return (0, prekey.expires, b"", prekey.public)
    assert prekey.audience is not None
    return (1, 0, prekey.audience.public_key, prekey.public)


def _forget(mapping: dict[_K, _V], key: _K) -> None:
    del mapping[key]


_APPLY: dict[type[Any], Callable[[MemoryStore, Any], None]] = {
    AddGroup: MemoryStore._add_group,
    SetPetname: MemoryStore._set_petname,
    SetGroupState: MemoryStore._set_group_state,
    DeleteGroup: MemoryStore._delete_group,
    PutMember: MemoryStore._put_member,
    ChangeEdges: MemoryStore._change_edges,
    SetNeighbours: MemoryStore._set_neighbours,
    SetMailboxes: MemoryStore._set_mailboxes,
    SetMailboxTerms: MemoryStore._set_mailbox_terms,
    AddEpoch: MemoryStore._add_epoch,
    CloseEpoch: MemoryStore._close_epoch,
    RevealSigningSecret: MemoryStore._reveal,
    ForgetEpochKeys: MemoryStore._forget,
    KeepOnlySigningSecret: MemoryStore._keep_only_signing,
    CommitSent: MemoryStore._commit_sent,
    StartMessage: MemoryStore._start_message,
    AddFragment: MemoryStore._add_fragment,
    CommitReceived: MemoryStore._commit_received,
    HoldMessage: MemoryStore._hold_message,
    ExpireHeld: MemoryStore._expire_held,
    DropMessage: MemoryStore._drop_message,
    DropFragments: MemoryStore._drop_fragments,
    ForgetRecipient: MemoryStore._forget_recipient,
    MarkDelivered: MemoryStore._mark_delivered,
    Enqueue: MemoryStore._enqueue,
    Dequeue: MemoryStore._dequeue,
    DropQueued: MemoryStore._drop_queued,
    CountAttempt: MemoryStore._count_attempt,
    AddInvitation: MemoryStore._add_invitation,
    DropInvitation: MemoryStore._drop_invitation,
    Block: MemoryStore._block,
    Unblock: MemoryStore._unblock,
    SetSetting: MemoryStore._set_setting,
    AddPrekeys: MemoryStore._add_prekeys,
    DeletePrekey: MemoryStore._delete_prekey,
    ExpirePrekeys: MemoryStore._expire_prekeys,
    RecordOpened: MemoryStore._record_opened,
    PutBundle: MemoryStore._put_bundle,
    HoldSealed: MemoryStore._hold_sealed,
    TakeSealed: MemoryStore._take_sealed,
    RegisterNotifyMember: MemoryStore._register_notify_member,
    UnregisterNotifyMember: MemoryStore._unregister_notify_member,
    DepositNotification: MemoryStore._deposit_notification,
    RefuseNotification: MemoryStore._refuse_notification,
    TakeNotifications: MemoryStore._take_notifications,
}
