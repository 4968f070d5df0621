# -*- test-case-name: tests.test_multicast_service -*-
"""
A member's side of its groups: invitations and the user's consent to
them, what the owner tells it (new epochs, neighbours, removal), leaving,
and handing committed messages to the application, each acknowledged to
the owner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..identity import PeerID
from ..storage import (
    AddEpoch,
    AddGroup,
    AddInvitation,
    Block,
    ChainState,
    CloseEpoch,
    DropInvitation,
    Enqueue,
    Epoch,
    EpochClose,
    ForgetEpochKeys,
    Group,
    NotStored,
    RevealSigningSecret,
    SetGroupState,
    SetMailboxes,
    SetNeighbours,
    SetSetting,
    Unblock,
)
from ..storage import Invitation as PendingInvitation
from ._commands import GroupNotice
from ._content import Content
from ._context import GroupContext, decode_stored
from ._core import GroupError, ServiceCore, deferred
from ._crypto import signing_public_key
from ._interfaces import IAcknowledgementCarrier
from ._manifest import decode_manifest
from ._message import open_sent
from ._notices import (
    ACK_MAC_SIZE,
    ACKNOWLEDGEMENT,
    DEPARTURE,
    GroupInvitation,
    acknowledgement_key,
    decode_bare,
    decode_invitation,
    decode_neighbours,
    decode_new_epoch,
    make_acknowledgement,
)
from ._report import Arrival, ReceivedMessage

#: The setting that turns off accepting invitations from contacts unasked.
AUTO_ACCEPT_SETTING = "auto-accept-contacts"


class MemberSide(ServiceCore):
    """
    A member's side of its groups.
    """

    # --- receiving ------------------------------------------------------------

    def subscribe(
        self, group_id: bytes | None, callback: Callable[[ReceivedMessage], object]
    ) -> Callable[[], None]:
        """
        Call ``callback`` with every message of a group (of every group
        for ``None``) that this node commits from now on: verified,
        complete and committed, in order.

        :returns: a function that stops it.
        """
        self._subscribers.setdefault(group_id, []).append(callback)

        def stop() -> None:
            callbacks = self._subscribers.get(group_id, [])
            if callback in callbacks:
                callbacks.remove(callback)

        return stop

    def follow_arrivals(self, callback: Callable[[Arrival], object]) -> Callable[[], None]:
        """
        Call ``callback`` with an :class:`Arrival` each time this node
        stores a new fragment of a message, of any group, whoever sent it
        (the owner, a peer forwarding, or a catch-up's source): how much of
        the message it holds, as its own progress bar shows it.

        :returns: a function that stops it.
        """
        self._arrival_watchers.append(callback)

        def stop() -> None:
            if callback in self._arrival_watchers:
                self._arrival_watchers.remove(callback)

        return stop

    def fragment_arrived(
        self, group_id: bytes, epoch: int, index: int, held: int, total: int
    ) -> None:
        """
        A fragment of message ``index`` of ``epoch`` was stored: ``held`` of
        its ``total`` fragments are here now.
        """
        if not self._arrival_watchers:
            return
        arrival = Arrival(group_id, epoch, index, held, total, float(self.clock.seconds()))
        for callback in list(self._arrival_watchers):
            try:
                callback(arrival)
            except Exception:
                self.log.failure("an arrival watcher failed")

    @deferred
    async def history(
        self, group_id: bytes, after: tuple[int, int] | None = None, limit: int = 100
    ) -> list[ReceivedMessage]:
        """
        The messages of a group this node holds, by (epoch, index).

        :param after: only those after this (epoch, index).
        """
        group = await self.store.group(group_id)
        found = []
        for stored in await self.store.history(group_id, after, limit):
            if stored.content is not None:
                content = decode_stored(stored.content, int(stored.sent_at or 0))
            elif stored.message_key is not None:
                manifest = decode_manifest(stored.manifest)
                held = await self.store.fragments(group_id, stored.epoch, stored.index)
                fragments = [held.get(n, b"") for n in range(len(manifest.fragment_hashes))]
                content = open_sent(manifest, fragments, stored.message_key)
            else:
                continue
            found.append(
                self._received(group_id, group.owner, stored.epoch, stored.index, content)
            )
        return found

    @staticmethod
    def _received(
        group_id: bytes, owner: PeerID, epoch: int, index: int, content: Content
    ) -> ReceivedMessage:
        return ReceivedMessage(
            group_id,
            epoch,
            index,
            owner,
            content.sent_at,
            content.content_type.name.lower(),
            content.data,
            content.file_name,
        )

    async def committed(
        self, context: GroupContext, epoch: int, index: int, content: Content
    ) -> None:
        """
        A member committed a message: hand it to the subscribers, then
        acknowledge it to the owner (through the outbox if the owner cannot
        be reached now).
        """
        group_id = context.group_id
        message = self._received(group_id, context.owner, epoch, index, content)
        for callback in self._subscribers.get(group_id, []) + self._subscribers.get(None, []):
            try:
                callback(message)
            except Exception:
                self.log.failure("a subscriber failed")
        await self.acknowledge(context, epoch, index)

    async def acknowledge(self, context: GroupContext, epoch: int, index: int) -> None:
        """
        Tell the owner that message ``index`` of ``epoch`` is committed here:
        through the group's strategy when it carries acknowledgements
        (:class:`~digitalspring.multicast.IAcknowledgementCarrier`), else
        directly (through the outbox if the owner cannot be reached now).  Also sent
        again when the owner sends a message already committed: the first
        acknowledgement may have been lost with a node killed right after
        its commit.
        """
        group_id = context.group_id
        key = acknowledgement_key(self.identity, context.owner, group_id)
        payload = make_acknowledgement(key, group_id, epoch, index)
        carrier = IAcknowledgementCarrier(self._strategies.get(group_id), None)
        if carrier is not None and carrier.carry_acknowledgement(
            epoch, index, payload[-ACK_MAC_SIZE:]
        ):
            return
        try:
            await self.pool.call(context.owner, GroupNotice, kind=ACKNOWLEDGEMENT, payload=payload)
        except Exception:
            await self.store.commit(
                Enqueue(context.owner, ACKNOWLEDGEMENT, payload, self._now(), group_id)
            )
            self.outbox.retry_later(context.owner)

    # --- what the owner tells a member ------------------------------------------

    async def invited(self, peer: PeerID, payload: bytes) -> None:
        """
        ``peer`` invites us into a group: join it at once if it is a
        contact (and auto-accept is on), else keep it for the user.
        """
        invitation = decode_invitation(payload)
        try:
            existing = await self.store.group(invitation.group_id)
        except NotStored:
            existing = None
        if existing is not None:
            if existing.owner != peer:
                raise GroupError("an invitation into a group with another owner")
            return
        if invitation.strategy not in self.plugins():
            raise GroupError(f"an invitation into a group of strategy {invitation.strategy!r}")
        if self.is_contact(peer) and await self.auto_accept():
            await self.join(peer, invitation)
        else:
            await self.store.commit(
                AddInvitation(PendingInvitation(peer, invitation.group_id, payload, self._now()))
            )

    async def join(self, owner: PeerID, invitation: GroupInvitation) -> None:
        """
        Join the group of an invitation: its epoch keys and our neighbours.
        """
        member = invitation.delivery.member
        now = self._now()
        await self.store.commit(
            AddGroup(
                Group(
                    invitation.group_id,
                    invitation.name,
                    owner,
                    "member",
                    invitation.strategy,
                    invitation.degree,
                    now,
                )
            ),
            AddEpoch(
                Epoch(
                    member.group_id,
                    member.epoch,
                    member.signing_public_key,
                    now,
                    chain=ChainState(member.chain_key, member.first_index),
                    access_key=member.access_key,
                )
            ),
            SetNeighbours(invitation.group_id, invitation.neighbours),
            SetMailboxes(invitation.group_id, invitation.mailboxes),
        )

    async def new_epoch(self, group: Group, payload: bytes) -> None:
        """
        The owner started a new epoch: keep its keys, the close statement
        of the one before, and the signing secret it reveals of the one
        before that.
        """
        delivery = decode_new_epoch(payload)
        member = delivery.member
        group_id = group.group_id
        latest = await self.store.epoch(group_id)
        if member.epoch <= latest.epoch:
            return
        changes: list[Any] = []
        close = delivery.close
        if close is not None and close.epoch == latest.epoch:
            changes.append(
                CloseEpoch(group_id, close.epoch, EpochClose(close.count - 1, close.last_hash))
            )
            if latest.chain is not None and latest.chain.next_index >= close.count:
                changes.append(ForgetEpochKeys(group_id, close.epoch))
        if delivery.revealed_seed is not None:
            try:
                revealed = await self.store.epoch(group_id, member.epoch - 2)
            except NotStored:
                revealed = None
            if revealed is not None and (
                signing_public_key(delivery.revealed_seed) == revealed.signing_public
            ):
                changes.append(
                    RevealSigningSecret(group_id, member.epoch - 2, delivery.revealed_seed)
                )
        changes.append(
            AddEpoch(
                Epoch(
                    group_id,
                    member.epoch,
                    member.signing_public_key,
                    self._now(),
                    chain=ChainState(member.chain_key, member.first_index),
                    access_key=member.access_key,
                )
            )
        )
        await self.store.commit(*changes)

    async def new_neighbours(self, group: Group, payload: bytes) -> None:
        """
        The owner says our neighbours in a group changed.
        """
        _, neighbours = decode_neighbours(payload)
        await self.store.commit(SetNeighbours(group.group_id, neighbours))
        context = self._contexts.get(group.group_id)
        if context is not None:
            context.set_neighbours(neighbours)

    async def removed(self, group: Group, payload: bytes) -> None:
        """
        The owner removed us from a group (or deleted it): forget its keys.
        """
        decode_bare(payload)
        changes: list[Any] = [SetGroupState(group.group_id, "removed")]
        changes += await self._forget_all_keys(group.group_id)
        await self.store.commit(*changes)
        await self._forget_group(group.group_id)

    @deferred
    async def leave_group(self, group_id: bytes) -> None:
        """
        Leave a group this node is a member of: the owner is told (when it
        is reachable) and this node's keys of the group are deleted.

        :raises NotInGroup: when this node is not in it.
        :raises GroupError: for a group this node owns (delete it instead).
        """
        group = await self._group(group_id)
        if group.role == "owner":
            raise GroupError("the owner of a group deletes it instead of leaving it")
        changes: list[Any] = [
            SetGroupState(group_id, "left"),
            Enqueue(group.owner, DEPARTURE, group_id, self._now(), group_id),
        ]
        changes += await self._forget_all_keys(group_id)
        await self.store.commit(*changes)
        await self._forget_group(group_id)
        self.outbox.waiting([group.owner])

    async def _forget_all_keys(self, group_id: bytes) -> list[Any]:
        latest = await self.store.epoch(group_id)
        changes: list[Any] = []
        for number in range(latest.epoch + 1):
            try:
                epoch = await self.store.epoch(group_id, number)
            except NotStored:
                continue
            if epoch.chain is not None or epoch.access_key is not None:
                changes.append(ForgetEpochKeys(group_id, number))
        return changes

    # --- consent ---------------------------------------------------------------

    @deferred
    async def auto_accept(self) -> bool:
        """
        Whether invitations from contacts are accepted unasked.
        """
        return (await self.store.setting(AUTO_ACCEPT_SETTING)) != "off"

    @deferred
    async def set_auto_accept(self, on: bool) -> None:
        """
        Accept invitations from contacts unasked, or not.
        """
        await self.store.commit(SetSetting(AUTO_ACCEPT_SETTING, None if on else "off"))

    @deferred
    async def invitations(self) -> list[dict[str, Any]]:
        """
        The invitations waiting for the user's consent, oldest first.
        """
        shown = []
        for pending in await self.store.invitations():
            invitation = decode_invitation(pending.payload)
            shown.append(
                {
                    "from": str(pending.from_peer),
                    "group": pending.group_id.hex(),
                    "name": invitation.name,
                    "strategy": invitation.strategy,
                    "received": pending.received,
                }
            )
        return shown

    @deferred
    async def accept_invitation(self, peer: PeerID, group_id: bytes) -> None:
        """
        Join the group ``peer`` invited this node into.

        :raises NotStored: when no such invitation waits.
        """
        for pending in await self.store.invitations():
            if pending.from_peer == peer and pending.group_id == group_id:
                await self.join(peer, decode_invitation(pending.payload))
                await self.store.commit(DropInvitation(peer, group_id))
                return
        raise NotStored("no such invitation waits")

    @deferred
    async def decline_invitation(self, peer: PeerID, group_id: bytes) -> None:
        """
        Forget an invitation without joining.
        """
        await self.store.commit(DropInvitation(peer, group_id))

    @deferred
    async def block(self, peer: PeerID) -> None:
        """
        Refuse everything from ``peer``: its invitations and partial
        messages go at once, and nothing more from it is kept.
        """
        await self.store.commit(Block(peer, self.clock.seconds()))
        self._blocked |= {peer}

    @deferred
    async def unblock(self, peer: PeerID) -> None:
        """
        Stop blocking ``peer``.
        """
        await self.store.commit(Unblock(peer))
        self._blocked -= {peer}
