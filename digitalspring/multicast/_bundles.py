# -*- test-case-name: tests.test_prekeys -*-
"""
The service's part of key bundles and sealed notices (issue 12, item 4).

A member gives the owner of a group it joins a bundle of prekeys (see
``_prekeys.py``) through the outbox, and gives its owners new ones when it
starts and its signed prekey is past half its lifetime; an owner keeps the
bundles of its groups' members.  When the outbox cannot reach a member,
the new epochs and removals waiting for it are also sealed to its bundle
and left at the group's mailboxes (through the outbox: a ``sealed`` notice
to each mailbox).  A mailbox keeps them for
their recipient, which takes them (``group-sealed``) when it starts and
handles each as the notice the owner sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from .._codec import Reader, varint
from ..errors import DigitalSpringError
from ..identity import PeerID
from ..storage import (
    Change,
    Dequeue,
    Enqueue,
    Group,
    HoldSealed,
    NotStored,
    OutboxEntry,
    TakeSealed,
)
from ._commands import MAX_SEALED_ANSWER, MAX_SEALED_ANSWER_SIZE, CollectSealed, NoticeRefused
from ._core import GroupError, NotOwner
from ._epoch import GROUP_ID_SIZE
from ._member import MemberSide
from ._notices import (
    KEY_BUNDLE,
    NEW_EPOCH,
    REMOVAL,
    SEALED,
    GroupInvitation,
    MalformedNotice,
    decode_new_epoch,
)
from ._owner import DEFAULT_RETENTION
from ._prekeys import (
    BundleBook,
    MemberPrekeys,
    NoPrekey,
    SealedItemRefused,
    encode_bundle,
    read_sealed_header,
    seal,
)
from ._rates import SEALED as SEALED_REQUESTS

if TYPE_CHECKING:
    from ._service import MulticastService

_PEER = 32
#: The setting that holds a member's notification boxes, by peer ID.
NOTIFY_BOXES_SETTING = "notify-boxes"
#: The most ``group-sealed`` requests a member makes of one mailbox of a
#: group when it starts.
MAX_SEALED_ROUNDS = 4


class BundleSide(MemberSide):
    """
    Giving our key bundles to our groups' owners, keeping our members',
    and sealed notices: left at mailboxes, kept there, collected.
    """

    prekeys: MemberPrekeys
    bundles: BundleBook
    #: The outbox entries of each peer already looked at for sealing while
    #: we run (those still waiting: at most the peer's outbox).
    _sealed_entries: dict[PeerID, set[int]]

    def _seconds(self) -> int:
        return int(self.clock.seconds())

    async def notify_boxes(self) -> list[PeerID]:
        """
        Our notification boxes, as we chose them (``_notify_side.py``).
        """
        value = await self.store.setting(NOTIFY_BOXES_SETTING)
        return [PeerID.parse(text) for text in (value or "").split()]

    async def join(self, owner: PeerID, invitation: GroupInvitation) -> None:
        """
        Join the group, then give its owner our bundle (the group is
        joined even when that fails: the owner seals nothing to us then,
        and what it tells us waits in its outbox).
        """
        await super().join(owner, invitation)
        try:
            await self.give_bundle(owner, invitation.group_id)
        except DigitalSpringError as e:
            self._rlog.info(
                "bundle-not-given",
                "could not give {peer} our key bundle: {error}",
                peer=str(owner),
                error=str(e),
            )

    async def give_bundle(self, owner: PeerID, group_id: bytes) -> None:
        """
        Give ``owner`` (of ``group_id``) a new bundle, through the outbox,
        in place of any still waiting there for it.
        """
        now = self._seconds()
        bundle = await self.prekeys.bundle(owner, now, frozenset(await self.notify_boxes()))
        # One bundle waits for an owner, whatever the group (a member
        # joining many groups of one owner would fill its outbox).
        waiting = [e for e in await self.store.outbox(owner) if e.kind == KEY_BUNDLE]
        await self.store.commit(
            *(Dequeue(e.entry_id) for e in waiting),
            Enqueue(owner, KEY_BUNDLE, group_id + encode_bundle(bundle), now, group_id),
        )
        self.outbox.waiting([owner])

    async def refresh_bundles(self) -> None:
        """
        At start: delete the prekeys past their expiry and grace, and if
        the signed prekey is past half its lifetime (or gone), or we have no
        day-key secret yet, give every owner of our groups a bundle with a
        new one (and the secret), once per owner.  Items
        an owner sealed to the old one still open until its grace is over.
        """
        now = self._seconds()
        await self.prekeys.expire(now)
        # Owners that were given bundles before they carried the day-key
        # secret get one that does.
        fresh = await self.prekeys.notify_secret() is None
        if not fresh and not await self.prekeys.renewal_due(now):
            return
        told: set[PeerID] = set()
        for group in await self.store.groups():
            if group.role == "member" and group.state == "active" and group.owner not in told:
                told.add(group.owner)
                await self.give_bundle(group.owner, group.group_id)

    async def bundle_received(self, peer: PeerID, group: Group, payload: bytes) -> None:
        """
        A member of a group we own gave us its key bundle.

        :raises GroupError: when ``peer`` is not a member of the group.
        """
        if group.role != "owner":
            raise NotOwner("a key bundle goes to the owner")
        if len(payload) <= GROUP_ID_SIZE:
            raise MalformedNotice("the key bundle notice is truncated")
        if group.group_id not in await self.store.member_of(peer):
            raise GroupError("a key bundle from a peer that is no member of the group")
        await self.bundles.add(payload[GROUP_ID_SIZE:], peer, self._seconds())

    # --- the owner: leaving sealed notices ---------------------------------

    async def leave_sealed(self, peer: PeerID, entries: list[OutboxEntry]) -> None:
        """
        The outbox could not reach ``peer``: seal the new epochs and
        removals waiting for it in groups we own that have mailboxes, each
        to its bundle, and leave them at those mailboxes (each entry once
        while we run).  Without a bundle valid for a mailbox's retention,
        they wait in the outbox alone.
        """
        changes: list[Change] = []
        told: set[PeerID] = set()
        now = self._seconds()
        waiting = {entry.entry_id for entry in entries}
        done = self._sealed_entries.pop(peer, set()) & waiting
        for entry in entries:
            if entry.kind not in (NEW_EPOCH, REMOVAL) or entry.group_id is None:
                continue
            if entry.entry_id in done:
                continue
            done.add(entry.entry_id)
            group_id = entry.group_id
            group = await self.store.group(group_id)
            mailboxes = sorted(
                m.peer
                for m in await self.store.members(group_id)
                if m.role == "mailbox" and m.status != "removed"
            )
            if group.role != "owner" or not mailboxes:
                continue
            try:
                signed, one_time = await self.bundles.prekeys(peer, now, DEFAULT_RETENTION)
            except NoPrekey:
                continue
            # A removal is at the group's epoch now: at or after the
            # member's, so taken; a replay after it joined again, not.
            number = (
                decode_new_epoch(entry.payload).member.epoch
                if entry.kind == NEW_EPOCH
                else (await self.store.epoch(group_id)).epoch
            )
            item = seal(
                self.identity, peer, signed, one_time, group_id, number, entry.kind, entry.payload
            )
            payload = group_id + peer.public_key + item
            changes += [Enqueue(box, SEALED, payload, now, group_id) for box in mailboxes]
            told.update(mailboxes)
        if done:
            self._sealed_entries[peer] = done
        if changes:
            await self.store.commit(*changes)
            self.outbox.waiting(told)

    # --- a mailbox: keeping and giving them --------------------------------

    async def hold_sealed(self, group: Group, payload: bytes) -> None:
        """
        The owner of a group we serve as a mailbox left an item sealed for
        a member: keep it until the member takes it, or the owner's
        retention is up (as a message is kept).

        :raises DigitalSpringError: when it is malformed, not the owner's,
            not for the group, or past our bounds.
        """
        if len(payload) <= GROUP_ID_SIZE + _PEER:
            raise MalformedNotice("the sealed notice is truncated")
        recipient = PeerID(payload[GROUP_ID_SIZE : GROUP_ID_SIZE + _PEER])
        item = payload[GROUP_ID_SIZE + _PEER :]
        header = read_sealed_header(item)
        if (header.group_id, header.recipient, header.sender) != (
            group.group_id,
            recipient,
            group.owner,
        ):
            raise MalformedNotice("the sealed item names another group, recipient or sender")
        terms = await self.store.mailbox_terms(group.group_id)
        expires = self.clock.seconds() + terms.retention
        await self.store.commit(HoldSealed(group.group_id, recipient, item, expires))
        cast("MulticastService", self).expiry_changed()

    async def give_sealed(self, peer: PeerID, group_id: bytes) -> bytes:
        """
        The items we hold for ``peer`` in a group we serve as a mailbox (the
        oldest, at most :data:`MAX_SEALED_ANSWER`), deleted once given.

        :raises NoticeRefused: when we serve no such group.
        :raises PeerBusy: past the rates of ``group-sealed`` (before any
            read).
        """
        self._request_rates.admit(SEALED_REQUESTS, peer)
        try:
            group = await self.store.group(group_id)
        except NotStored:
            raise NoticeRefused("refused") from None
        if group.role != "mailbox" or group.state != "active":
            raise NoticeRefused("refused")
        items = await self.store.sealed(group_id, peer, MAX_SEALED_ANSWER)
        if items:
            await self.store.commit(TakeSealed(group_id, peer, len(items)))
        return b"".join(varint(len(item)) + item for item in items)

    # --- a member: collecting them -------------------------------------------

    async def collect_all_sealed(self, groups: set[bytes] | None = None) -> None:
        """
        Take what the mailboxes of our groups (of ``groups`` alone, when
        given) hold for us, group by group.
        """
        for group in await self.store.groups():
            if group.role != "member" or group.state != "active":
                continue
            if groups is None or group.group_id in groups:
                await self.collect_sealed(group)

    async def collect_sealed(self, group: Group) -> None:
        """
        Take the items the group's mailboxes hold for us, and handle each
        as the notice its owner sent.  A mailbox that cannot be reached, or
        an item refused, is logged and skipped.
        """
        for box in sorted(await self.store.mailboxes(group.group_id)):
            # A mailbox keeps 16 items for a member by default: a hostile
            # one that always answers a full batch is asked no more.
            for _ in range(MAX_SEALED_ROUNDS):
                try:
                    answer = await self.pool.call(box, CollectSealed, group=group.group_id)
                    reader = Reader(answer["items"], MalformedNotice, "sealed notices")
                    items: list[bytes] = []
                    while reader.offset < len(reader.data) and len(items) < MAX_SEALED_ANSWER:
                        items.append(reader.take(reader.varint(MAX_SEALED_ANSWER_SIZE)))
                    reader.end()
                except Exception as e:
                    self._rlog.info(
                        "sealed-not-collected",
                        "could not collect sealed notices from {peer}: {error}",
                        peer=str(box),
                        error=str(e),
                    )
                    break
                for item in items:
                    await self._take_sealed(group, item)
                if len(items) < MAX_SEALED_ANSWER:
                    break

    async def _take_sealed(self, group: Group, item: bytes) -> None:
        try:
            known = (await self.store.epoch(group.group_id)).epoch
            opened = await self.prekeys.open(item, self._seconds(), known)
            if opened.sender != group.owner or opened.group_id != group.group_id:
                raise SealedItemRefused("the sealed item is not of the group's owner")
            service = cast("MulticastService", self)
            await service.receive_notice(opened.sender, opened.kind, opened.payload)
        except DigitalSpringError as e:
            self._rlog.info(
                "sealed-refused",
                "refused a sealed notice of group {group}: {error}",
                group=group.group_id.hex(),
                error=str(e),
            )
