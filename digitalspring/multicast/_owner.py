# -*- test-case-name: tests.test_multicast_service -*-
"""
What the owner of a group does to it: create it, add and remove members
(mending the neighbour graph and ending the epoch on a removal), list,
show and delete it.  Whatever a member must be told waits in the outbox,
committed with the change it tells of.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred

from ..identity import PeerID
from ..storage import (
    AddEpoch,
    AddGroup,
    ChainState,
    ChangeEdges,
    CloseEpoch,
    DeleteGroup,
    DropQueued,
    Enqueue,
    Epoch,
    EpochClose,
    ForgetEpochKeys,
    ForgetRecipient,
    Group,
    KeepOnlySigningSecret,
    Member,
    MemberRole,
    PutMember,
    RevealSigningSecret,
    StorageError,
)
from ._chain import SendingChain
from ._core import AlreadyMember, GroupError, NotAMember, ServiceCore, deferred
from ._epoch import (
    EpochEnd,
    EpochKeys,
    OwnerEpoch,
    invitation_delivery,
    mailbox_epoch_delivery,
    mailbox_invitation_delivery,
    new_epoch_delivery,
    next_epoch,
    start_group,
)
from ._manifest import NO_PREVIOUS, decode_manifest
from ._neighbours import DEFAULT_DEGREE, NeighbourGraph
from ._notices import (
    DEPARTURE,
    INVITATION,
    MAILBOX_EPOCH,
    MAILBOX_INVITATION,
    MAILBOXES,
    MAX_MAILBOXES,
    MAX_RETENTION,
    NEIGHBOURS,
    NEW_EPOCH,
    REMOVAL,
    GroupInvitation,
    MailboxInvitation,
    encode_invitation,
    encode_mailbox_epoch,
    encode_mailbox_invitation,
    encode_mailboxes,
    encode_neighbours,
    encode_new_epoch,
    notice_group,
)
from ._outbox import CATCH_UP
from ._plugins import DEFAULT_STRATEGY, get_strategy

#: What waits in the outbox for a member that it no longer needs once it is
#: removed: messages, keys, neighbours, mailboxes and an invitation it did
#: not take.
_NEWS = frozenset(
    {CATCH_UP, INVITATION, NEW_EPOCH, NEIGHBOURS, MAILBOX_INVITATION, MAILBOX_EPOCH, MAILBOXES}
)

#: How long a mailbox keeps each message unless the owner says otherwise:
#: 30 days, in seconds.
DEFAULT_RETENTION = 30 * 24 * 3600


class OwnerOperations(ServiceCore):
    """
    The owner's operations on its groups.
    """

    @deferred
    async def create_group(
        self, name: str, strategy: str = DEFAULT_STRATEGY, degree: int = DEFAULT_DEGREE
    ) -> bytes:
        """
        Create a group owned by this node.

        :param name: its name, as members will be offered it.
        :param strategy: the name of its strategy plugin.
        :param degree: N, the number of neighbours of each member.
        :returns: its new random 32-byte ID.
        :raises UnknownStrategy: when no plugin has that name.
        """
        if strategy not in self.plugins():
            get_strategy(strategy)
        if not name or len(name.encode("utf-8")) > 255:
            raise GroupError("a group's name has 1 to 255 bytes")
        group_id = os.urandom(32)
        now = self._now()
        owner = start_group(group_id, now)
        await self.store.commit(
            AddGroup(Group(group_id, name, self.local, "owner", strategy, degree, now)),
            AddEpoch(self._owner_epoch_row(owner, now)),
        )
        return group_id

    def _owner_epoch_row(self, owner: OwnerEpoch, now: int) -> Epoch:
        keys = owner.keys
        return Epoch(
            keys.group_id,
            keys.epoch,
            keys.signing_public_key,
            now,
            chain=ChainState(keys.chain_key, 0),
            signing_secret=keys.signing_seed,
            access_key=keys.access_key,
        )

    async def _owner_state(self, group_id: bytes) -> OwnerEpoch:
        epoch = await self.store.epoch(group_id)
        assert epoch.chain is not None and epoch.signing_secret is not None
        assert epoch.access_key is not None
        last_hash = NO_PREVIOUS
        if epoch.chain.next_index:
            last = await self.store.manifest(group_id, epoch.epoch, epoch.chain.next_index - 1)
            last_hash = decode_manifest(last).hash
        held = None
        if epoch.epoch:
            held = (await self.store.epoch(group_id, epoch.epoch - 1)).signing_secret
        keys = EpochKeys(
            group_id, epoch.epoch, epoch.chain.key, epoch.signing_secret, epoch.access_key
        )
        return OwnerEpoch(
            keys,
            SendingChain(epoch.chain.next_index, epoch.chain.key),
            int(epoch.created),
            last_hash,
            held_seed=held,
        )

    async def _graph(self, group_id: bytes, degree: int) -> NeighbourGraph[PeerID]:
        # Mailboxes are vertices as members are: they take part in every
        # transmission as forwarders, and are neighbours to ask on return.
        members = await self._recipients(group_id)
        adjacency: dict[PeerID, set[PeerID]] = {m: set() for m in members}
        for a, b in await self.store.edges(group_id):
            if a in adjacency and b in adjacency:
                adjacency[a].add(b)
                adjacency[b].add(a)
        return NeighbourGraph.from_neighbours(adjacency, degree)

    @deferred
    async def add_member(
        self, group_id: bytes, peer: PeerID, role: str = "member", retention: int | None = None
    ) -> None:
        """
        Add ``peer`` to a group this node owns, and invite it: the
        invitation waits in the outbox until the peer takes it.

        :param role: ``"member"``, or ``"mailbox"``: a peer that keeps the
            group's messages for members who are away, which gets the
            access key and the signing public key but no content key
            (``docs/offline.rst``).  The members are told the group's
            mailboxes.
        :param retention: how long a mailbox keeps each message, in seconds
            (:data:`DEFAULT_RETENTION` by default).
        :raises NotOwner: for a group this node does not own.
        :raises AlreadyMember: when the peer is a member already.
        :raises GroupError: for a group with :data:`MAX_MAILBOXES` already.
        """
        group = await self._owned(group_id)
        if role not in ("member", "mailbox"):
            raise GroupError(f"a member's role is member or mailbox, not {role!r}")
        if retention is not None and (role != "mailbox" or not 0 < retention <= MAX_RETENTION):
            raise GroupError(
                f"a retention is for a mailbox, 1 to {MAX_RETENTION} seconds, not {retention!r}"
            )
        if peer == self.local:
            raise GroupError("the owner of a group is not one of its members")
        chosen: MemberRole = "mailbox" if role == "mailbox" else "member"
        await self._lock(group_id).run(
            self._add_member, group, peer, chosen, retention or DEFAULT_RETENTION
        )
        self._refresh_members(group_id)

    async def _add_member(
        self, group: Group, peer: PeerID, role: MemberRole, retention: int
    ) -> None:
        group_id = group.group_id
        members = await self.store.members(group_id)
        existing = {m.peer: m for m in members}
        if peer in existing and existing[peer].status != "removed":
            raise AlreadyMember(f"{peer} is a member of the group already")
        mailboxes = frozenset(
            m.peer for m in members if m.role == "mailbox" and m.status != "removed"
        )
        if role == "mailbox" and len(mailboxes) >= MAX_MAILBOXES:
            raise GroupError(f"a group has at most {MAX_MAILBOXES} mailboxes")
        change = (await self._graph(group_id, group.degree)).add_members([peer])
        owner = await self._owner_state(group_id)
        now = self._now()
        neighbours = change.graph.neighbours(peer)
        changes: list[Any] = [
            PutMember(group_id, Member(peer, role, "invited")),
            ChangeEdges(group_id, frozenset(change.added), frozenset(change.removed)),
        ]
        if role == "mailbox":
            invitation = MailboxInvitation(
                group_id,
                group.strategy,
                group.degree,
                neighbours,
                retention,
                mailbox_invitation_delivery(owner),
            )
            changes.append(
                Enqueue(
                    peer, MAILBOX_INVITATION, encode_mailbox_invitation(invitation), now, group_id
                )
            )
        else:
            member = GroupInvitation(
                group_id,
                group.name,
                group.strategy,
                group.degree,
                neighbours,
                invitation_delivery(owner),
                mailboxes,
            )
            changes.append(Enqueue(peer, INVITATION, encode_invitation(member), now, group_id))
        changes += self._neighbour_notices(group_id, change.graph, change.affected - {peer}, now)
        told = set(change.affected | {peer})
        if role == "mailbox":
            changes += await self._mailbox_notices(group_id, mailboxes | {peer}, now)
            told |= await self._members_only(group_id)
        await self.store.commit(*changes)
        self.outbox.waiting(told)

    async def _members_only(self, group_id: bytes) -> frozenset[PeerID]:
        """
        The members of a group we own that are not mailboxes, nor removed.
        """
        return frozenset(
            m.peer
            for m in await self.store.members(group_id)
            if m.role == "member" and m.status != "removed"
        )

    def _mailboxes_notice(
        self, group_id: bytes, peer: PeerID, mailboxes: frozenset[PeerID], now: int
    ) -> list[Any]:
        # The newest list supersedes any still waiting.
        return [
            DropQueued(peer, group_id, frozenset({MAILBOXES})),
            Enqueue(peer, MAILBOXES, encode_mailboxes(group_id, mailboxes), now, group_id),
        ]

    async def _mailbox_notices(
        self, group_id: bytes, mailboxes: frozenset[PeerID], now: int
    ) -> list[Any]:
        """
        The changes that tell every member the group's mailboxes now.
        """
        changes: list[Any] = []
        for peer in sorted(await self._members_only(group_id)):
            changes += self._mailboxes_notice(group_id, peer, mailboxes, now)
        return changes

    def _neighbour_notices(
        self, group_id: bytes, graph: NeighbourGraph[PeerID], peers: frozenset[PeerID], now: int
    ) -> list[Any]:
        changes: list[Any] = []
        for peer in sorted(peers):
            # The newest neighbour list supersedes any still waiting.
            changes += [
                DropQueued(peer, group_id, frozenset({NEIGHBOURS})),
                Enqueue(
                    peer,
                    NEIGHBOURS,
                    encode_neighbours(group_id, graph.neighbours(peer)),
                    now,
                    group_id,
                ),
            ]
        return changes

    def _refresh_members(self, group_id: bytes) -> None:
        context = self._contexts.get(group_id)
        if context is not None:

            async def refresh() -> None:
                context.set_members(await self._recipients(group_id))

            Deferred.fromCoroutine(refresh()).addErrback(self._log_failure)

    @deferred
    async def remove_member(self, group_id: bytes, peer: PeerID) -> None:
        """
        Remove ``peer`` from a group this node owns: it is told, its
        neighbours are mended, and the epoch ends at once, so that it
        cannot read what follows (the others get the new epoch's keys).

        :raises NotOwner: for a group this node does not own.
        :raises NotAMember: when the peer is not a member.
        """
        group = await self._owned(group_id)
        await self._lock(group_id).run(self._remove_member, group, peer, EpochEnd.MEMBER_REMOVED)

    async def _remove_member(self, group: Group, peer: PeerID, reason: EpochEnd) -> None:
        group_id = group.group_id
        members = {m.peer: m for m in await self.store.members(group_id)}
        member = members.get(peer)
        if member is None or member.status == "removed":
            raise NotAMember(f"{peer} is not a member of the group")
        now = self._now()
        changes: list[Any] = [
            PutMember(group_id, Member(peer, member.role, "removed")),
            # Nothing more it was still to get: no message, no keys.
            ForgetRecipient(group_id, peer),
            DropQueued(peer, group_id, _NEWS),
        ]
        notified = {peer} if reason is EpochEnd.MEMBER_REMOVED else set()
        if reason is EpochEnd.MEMBER_REMOVED:
            changes.append(Enqueue(peer, REMOVAL, group_id, now, group_id))
        # A mailbox holds the access key as a member does: either way the
        # epoch ends, so that the peer gone can prove nothing more.
        change = (await self._graph(group_id, group.degree)).remove_members([peer])
        changes.append(ChangeEdges(group_id, frozenset(change.added), frozenset(change.removed)))
        changes += self._neighbour_notices(group_id, change.graph, change.affected, now)
        notified |= change.affected
        remaining = frozenset(change.graph.members)
        rotate, _ = await self._rotation(group_id, remaining, now)
        changes += rotate
        notified |= remaining
        if member.role == "mailbox":
            mailboxes = frozenset(
                m.peer
                for m in members.values()
                if m.role == "mailbox" and m.status != "removed" and m.peer != peer
            )
            changes += await self._mailbox_notices(group_id, mailboxes, now)
        await self.store.commit(*changes)
        for report in self._reports.values():
            if report.group_id == group_id:
                report.drop(peer)
        context = self._contexts.get(group_id)
        if context is not None:
            context.set_members(await self._recipients(group_id))
        self.outbox.waiting(notified)

    async def _rotation(
        self, group_id: bytes, remaining: frozenset[PeerID], now: int
    ) -> tuple[list[Any], OwnerEpoch]:
        """
        The changes that end the current epoch and start the next: its
        close, the new keys, the new-epoch notice to each remaining member
        (a mailbox's own to each mailbox), and the reveal of the signing
        secret of the epoch before.
        """
        owner = await self._owner_state(group_id)
        new = next_epoch(owner, now)
        notice = encode_new_epoch(new_epoch_delivery(new))
        mailbox_notice = encode_mailbox_epoch(mailbox_epoch_delivery(new))
        mailboxes = {m.peer for m in await self.store.members(group_id) if m.role == "mailbox"}
        old = owner.keys.epoch
        changes: list[Any] = [
            CloseEpoch(group_id, old, EpochClose(owner.chain.next_index - 1, owner.last_hash)),
            AddEpoch(self._owner_epoch_row(new, now)),
            # Its chain key opens its messages: no longer needed to send.
            # Its signing secret is revealed one epoch later.
            KeepOnlySigningSecret(group_id, old),
        ]
        if new.revealed_seed is not None:
            changes += [
                ForgetEpochKeys(group_id, old - 1),
                RevealSigningSecret(group_id, old - 1, new.revealed_seed),
            ]
        changes += [
            Enqueue(peer, MAILBOX_EPOCH, mailbox_notice, now, group_id)
            if peer in mailboxes
            else Enqueue(peer, NEW_EPOCH, notice, now, group_id)
            for peer in sorted(remaining)
        ]
        return changes, new

    @deferred
    async def group_list(self) -> list[Group]:
        """
        Every group this node is or was in, oldest first.
        """
        return await self.store.groups()

    @deferred
    async def show(self, group_id: bytes) -> dict[str, Any]:
        """
        A group as ``dspring group show`` prints it: name, owner, role,
        strategy, epoch, and (at the owner) every member with its role,
        status, neighbours and the number of messages it has not
        committed; (at a member) its neighbours.

        :raises NotStored: for an unknown group.
        """
        group = await self.store.group(group_id)
        epoch = await self.store.epoch(group_id)
        shown: dict[str, Any] = {
            "group": group_id.hex(),
            "name": group.name,
            "petname": group.petname,
            "owner": str(group.owner),
            "role": group.role,
            "state": group.state,
            "strategy": group.strategy,
            "degree": group.degree,
            "epoch": epoch.epoch,
            "next_index": None if epoch.chain is None else epoch.chain.next_index,
        }
        if group.role == "owner":
            edges = await self.store.edges(group_id)
            members = []
            for member in await self.store.members(group_id):
                undelivered = await self.store.undelivered(group_id, member.peer)
                neighbours = sorted(
                    str(b if a == member.peer else a) for a, b in edges if member.peer in (a, b)
                )
                members.append(
                    {
                        "peer": str(member.peer),
                        "role": member.role,
                        "status": member.status,
                        "undelivered": len(undelivered),
                        "neighbours": neighbours,
                    }
                )
            shown["members"] = members
        else:
            shown["neighbours"] = sorted(str(p) for p in await self.store.neighbours(group_id))
        return shown

    @deferred
    async def delete_group(self, group_id: bytes) -> None:
        """
        Delete a group and all this node holds of it.  An owner tells its
        members the group is gone; a member leaves it first.
        """
        group = await self.store.group(group_id)
        now = self._now()
        changes: list[Any] = []
        told: set[PeerID] = set()
        if group.role == "owner" and group.state == "active":
            for member in await self.store.members(group_id):
                if member.status != "removed":
                    changes.append(Enqueue(member.peer, REMOVAL, group_id, now, group_id))
                    told.add(member.peer)
        elif group.state == "active":
            changes.append(Enqueue(group.owner, DEPARTURE, group_id, now, group_id))
            told.add(group.owner)
        changes.append(DeleteGroup(group_id))
        await self.store.commit(*changes)
        await self._forget_group(group_id)
        self.outbox.waiting(told)

    async def invitation_taken(self, peer: PeerID, payload: bytes) -> None:
        """
        ``peer`` took its invitation (out of the outbox): it is active.
        """
        group_id = notice_group(payload)
        try:
            members = {m.peer: m for m in await self.store.members(group_id)}
        except StorageError:
            return
        member = members.get(peer)
        if member is not None and member.status == "invited":
            await self.store.commit(PutMember(group_id, Member(peer, member.role, "active")))
