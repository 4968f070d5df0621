# -*- test-case-name: tests.test_mailbox -*-
"""
A mailbox's side of the groups it serves (issue 12; ``docs/offline.rst``).

A mailbox is a member the owner adds with the role ``mailbox``: a vertex
of the neighbour graph like any member, so it takes part in every
transmission as a forwarder, but it holds only the epoch's access key and
signing public key, never a content key.  It checks each manifest and
fragment against the owner's signature, holds whole messages as their
ciphertext, acknowledges each to the owner once it is durable, serves
catch-up, and deletes each message once the owner's retention is up.

What it holds is bounded by the store (per group, per owner, in total:
``StoreLimits``); when each message is deleted, by one timer, which exists
only while something is held.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from ..identity import PeerID
from ..storage import (
    AddEpoch,
    AddGroup,
    CloseEpoch,
    DeleteGroup,
    Epoch,
    EpochClose,
    ExpireHeld,
    ForgetEpochKeys,
    Group,
    MailboxTerms,
    NotStored,
    SetMailboxes,
    SetMailboxTerms,
    SetNeighbours,
    StoreLimits,
)
from ._context import GroupContext
from ._core import GroupError, deferred
from ._member import MemberSide
from ._notices import decode_mailbox_epoch, decode_mailbox_invitation, decode_mailboxes


class NotAMailbox(GroupError):
    """
    This node does not serve as a mailbox: run it with ``twistd dspring
    --mailbox`` for it to keep groups' messages for their members.
    """


class MailboxSide(MemberSide):
    """
    What a node does in the groups it serves as a mailbox, and what a
    member keeps of its groups' mailboxes.

    :ivar mailbox_limits: the store's limits when this node serves as a
        mailbox (its quotas), else ``None``.
    """

    mailbox_limits: StoreLimits | None
    _expiry: IDelayedCall | None

    # --- joining and new epochs -------------------------------------------

    async def mailbox_invited(self, peer: PeerID, payload: bytes) -> None:
        """
        ``peer`` adds this node as a mailbox of its group: keep the
        epoch's access key and signing public key, the owner's retention,
        and the neighbours it names.

        :raises NotAMailbox: when this node does not serve as a mailbox.
        :raises QuotaExceeded: past the groups it serves for one owner, or
            in all.
        """
        if self.mailbox_limits is None:
            raise NotAMailbox(
                "this node does not serve as a mailbox (run it with twistd dspring --mailbox)"
            )
        invitation = decode_mailbox_invitation(payload)
        group_id = invitation.group_id
        try:
            existing = await self.store.group(group_id)
        except NotStored:
            existing = None
        if existing is not None:
            if existing.owner != peer:
                raise GroupError("a mailbox invitation into a group with another owner")
            return
        if invitation.strategy not in self.plugins():
            raise GroupError(f"a mailbox invitation of strategy {invitation.strategy!r}")
        delivery = invitation.delivery
        access = delivery.mailbox.access
        now = self._now()
        await self.store.commit(
            AddGroup(
                Group(
                    group_id,
                    "",
                    peer,
                    "mailbox",
                    invitation.strategy,
                    invitation.degree,
                    now,
                )
            ),
            AddEpoch(
                Epoch(
                    group_id,
                    access.epoch,
                    delivery.mailbox.signing_public_key,
                    now,
                    access_key=access.access_key,
                )
            ),
            SetMailboxTerms(
                group_id,
                MailboxTerms(float(invitation.retention), (access.epoch, delivery.first_index)),
            ),
            SetNeighbours(group_id, invitation.neighbours),
        )
        self.log.info(
            "serving group {group} of {owner} as a mailbox, keeping messages {days:.1f} days",
            group=group_id.hex(),
            owner=str(peer),
            days=invitation.retention / 86400,
        )

    async def mailbox_new_epoch(self, group: Group, payload: bytes) -> None:
        """
        The owner started a new epoch: keep its access key and signing
        public key, the close of the one before, and forget the access key
        before (proofs are made in the current epoch only).
        """
        delivery = decode_mailbox_epoch(payload)
        access = delivery.mailbox.access
        group_id = group.group_id
        latest = await self.store.epoch(group_id)
        if access.epoch <= latest.epoch:
            return
        changes: list[Any] = []
        close = delivery.close
        if close is not None and close.epoch == latest.epoch:
            changes.append(
                CloseEpoch(group_id, close.epoch, EpochClose(close.count - 1, close.last_hash))
            )
        changes += [
            ForgetEpochKeys(group_id, latest.epoch),
            AddEpoch(
                Epoch(
                    group_id,
                    access.epoch,
                    delivery.mailbox.signing_public_key,
                    self._now(),
                    access_key=access.access_key,
                )
            ),
        ]
        await self.store.commit(*changes)

    async def no_longer_mailbox(self, group: Group) -> None:
        """
        The owner removed this mailbox, or deleted the group: everything
        held of it goes.
        """
        await self.store.commit(DeleteGroup(group.group_id))
        await self._forget_group(group.group_id)
        self.expiry_changed()

    async def new_mailboxes(self, group: Group, payload: bytes) -> None:
        """
        The owner says which mailboxes its group has now (member side).
        """
        _, mailboxes = decode_mailboxes(payload)
        await self.store.commit(SetMailboxes(group.group_id, mailboxes))

    # --- holding ---------------------------------------------------------------

    async def held(self, context: GroupContext, epoch: int, index: int) -> None:
        """
        A mailbox holds a whole message now, durably: acknowledge it to
        the owner, and see that it is deleted in time.
        """
        await self.acknowledge(context, epoch, index)
        self.expiry_changed()

    def expiry_changed(self) -> None:
        """
        What is held, or when it expires, changed: set the timer for the
        next expiry (none when nothing is held).
        """
        Deferred.fromCoroutine(self._schedule_expiry()).addErrback(self._log_failure)

    async def _schedule_expiry(self) -> None:
        when = await self.store.next_expiry()
        if not self.running:
            return
        timer = self._expiry
        if timer is not None and timer.active():
            if when is not None and timer.getTime() <= when:
                return
            timer.cancel()
        self._expiry = None
        if when is not None:
            delay = max(0.0, when - self.clock.seconds())
            self._expiry = self.clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        Deferred.fromCoroutine(self._delete_expired()).addErrback(self._log_failure)

    async def _delete_expired(self) -> None:
        await self.store.commit(ExpireHeld(self.clock.seconds()))
        for context in self._contexts.values():
            if context.role == "mailbox":
                context.forget_arriving()
        await self._schedule_expiry()

    def stop_expiry(self) -> None:
        """
        Cancel the expiry timer (the service stops).
        """
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    # --- status ------------------------------------------------------------------

    @deferred
    async def mailbox_status(self) -> dict[str, Any]:
        """
        What this node holds as a mailbox, for ``dspring mailbox status``:
        whether it serves, its quotas, and per group the owner, the
        messages and bytes held, the retention and the next expiry.
        """
        limits = self.mailbox_limits
        usage = await self.store.mailbox_usage()
        return {
            "serving": limits is not None,
            "quotas": None
            if limits is None
            else {
                "bytes_per_group": limits.mailbox_bytes_per_group,
                "bytes_per_owner": limits.mailbox_bytes_per_owner,
                "bytes_total": limits.mailbox_bytes_total,
                "groups_per_owner": limits.mailbox_groups_per_owner,
                "groups_total": limits.mailbox_groups_total,
            },
            "bytes": sum(u.bytes for u in usage),
            "messages": sum(u.messages for u in usage),
            "groups": [
                {
                    "group": u.group_id.hex(),
                    "owner": str(u.owner),
                    "messages": u.messages,
                    "bytes": u.bytes,
                    "retention": u.retention,
                    "next_expiry": u.next_expiry,
                }
                for u in usage
            ],
        }
