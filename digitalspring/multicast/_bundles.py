# -*- test-case-name: tests.test_prekeys -*-
"""
The service's part of key bundles (issue 12, item 4): a member gives the
owner of a group it joins a bundle of prekeys (see ``_prekeys.py``) through
the outbox, and gives its owners new ones when it starts and its signed
prekey is past half its lifetime; an owner keeps the bundles of its groups'
members.
"""

from __future__ import annotations

from ..errors import DigitalSpringError
from ..identity import PeerID
from ..storage import Dequeue, Enqueue, Group
from ._core import GroupError, NotOwner
from ._epoch import GROUP_ID_SIZE
from ._member import MemberSide
from ._notices import KEY_BUNDLE, GroupInvitation, MalformedNotice
from ._prekeys import BundleBook, MemberPrekeys, encode_bundle


class BundleSide(MemberSide):
    """
    Giving our key bundles to our groups' owners, and keeping our members'.
    """

    prekeys: MemberPrekeys
    bundles: BundleBook

    def _seconds(self) -> int:
        return int(self.clock.seconds())

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
        bundle = await self.prekeys.bundle(owner, now)
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
        the signed prekey is past half its lifetime (or gone), give every
        owner of our groups a bundle with a new one, once per owner.  An
        owner whose items wait sealed to the old one can still be opened
        until its grace is over.
        """
        now = self._seconds()
        await self.prekeys.expire(now)
        if not await self.prekeys.renewal_due(now):
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
