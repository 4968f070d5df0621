# -*- test-case-name: tests.test_multicast_service -*-
"""
Publishing to a group this node owns, and following its delivery: a
message is sealed and committed (its fragments kept until every member has
it) before its strategy sends it; a member counts only once it acknowledges
having committed it; a member the strategy did not reach gets a catch-up
through the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred

from ..identity import PeerID
from ..storage import (
    ChainState,
    CommitSent,
    DropFragments,
    Enqueue,
    Group,
    MarkDelivered,
    NotStored,
)
from ._commands import GroupNotice
from ._content import Content, file_content, text_content
from ._core import GroupError, NotAMember, NotOwner, deferred
from ._epoch import end_reason
from ._manifest import Manifest, decode_manifest
from ._message import SealedMessage, seal, sent_message_key
from ._notices import (
    ACK_MAC_SIZE,
    NEWS,
    acknowledgement_key,
    acknowledgement_valid,
    decode_acknowledgement,
    make_acknowledgement,
)
from ._outbox import CATCH_UP
from ._owner import OwnerOperations
from ._report import DeliveryReport

if TYPE_CHECKING:
    from ._service import MulticastService

#: The most delivery reports kept in memory to follow; older ones are
#: dropped (the store keeps every delivery state).
MAX_REPORTS = 1000

#: Seconds a member told that there is news has to fetch it from the
#: mailboxes, before the owner sends it again itself.
NEWS_GRACE = 120.0
#: The most members remembered as told (the oldest are forgotten, and told
#: again).
MAX_NEWS = 65_536

#: The most members' acknowledgement keys remembered, to check the
#: acknowledgements a strategy carries (32 bytes each); the oldest go first.
MAX_ACK_KEYS = 65_536


class Publishing(OwnerOperations):
    """
    The owner's publishing and delivery reports.
    """

    _ack_keys: dict[tuple[bytes, PeerID], bytes]
    _news: dict[tuple[PeerID, bytes], float]

    def publish(
        self, group_id: bytes, data: bytes | str, file_name: str | None = None
    ) -> Deferred[DeliveryReport]:
        """
        Send a message to a group this node owns: a text (``str``, or
        ``bytes`` of UTF-8 without ``file_name``) or a file.

        :returns: a Deferred that fires with the message's
            :class:`DeliveryReport` once it is sealed and committed here
            and its transmission has started; follow the report for its
            progress (``report.transmitted`` fires when the strategy's
            transmission ended, ``report.settled()`` once every member
            committed it).
        :raises NotOwner: for a group this node does not own.
        :raises ContentTooLarge: for a message over 64 MiB padded.
        """
        return Deferred.fromCoroutine(self._publish(group_id, data, file_name))

    async def _publish(
        self, group_id: bytes, data: bytes | str, file_name: str | None
    ) -> DeliveryReport:
        await self._owned(group_id)
        now = self._now()
        if file_name is not None:
            content = file_content(
                now, file_name, data.encode() if isinstance(data, str) else data
            )
        else:
            text = data if isinstance(data, str) else data.decode("utf-8")
            content = text_content(now, text)
        sealed, report = await self._lock(group_id).run(self._seal, group_id, content, now)
        strategy = await self.strategy_of(group_id)
        report.transmitted = strategy.publish(sealed).addCallback(self._transmitted, report)
        report.transmitted.addErrback(self._log_failure)
        return report

    async def _seal(
        self, group_id: bytes, content: Content, now: int
    ) -> tuple[SealedMessage, DeliveryReport]:
        owner = await self._owner_state(group_id)
        reason = end_reason(owner, now)
        if reason is not None:
            recipients = await self._recipients(group_id)
            changes, owner = await self._rotation(group_id, recipients, now)
            await self.store.commit(*changes)
            self.outbox.waiting(recipients)
        message_key = sent_message_key(owner)
        sealed, after = seal(owner, content)
        recipients = await self._recipients(group_id)
        manifest = sealed.manifest
        await self.store.commit(
            CommitSent(
                group_id,
                manifest.epoch,
                manifest.index,
                sealed.signed_manifest,
                sealed.fragments,
                None,
                now,
                ChainState(after.chain.chain_key, after.chain.next_index),
                recipients,
                # Our copy is the fragments and this key, not the content
                # a second time: half the bytes to write at each publish.
                message_key=message_key,
            )
        )
        report = DeliveryReport(group_id, manifest.epoch, manifest.index, recipients)
        self._keep_report(report)
        return sealed, report

    def _keep_report(self, report: DeliveryReport) -> None:
        self._reports[(report.group_id, report.epoch, report.index)] = report
        while len(self._reports) > MAX_REPORTS:
            del self._reports[next(iter(self._reports))]

    def _transmitted(self, transmission: Any, report: DeliveryReport) -> DeliveryReport:
        report.mark_unreached(transmission.unreached)
        if report.unreached:
            Deferred.fromCoroutine(self._queue_catch_up(report)).addErrback(self._log_failure)
        return report

    async def _queue_catch_up(self, report: DeliveryReport) -> None:
        now = self._now()
        changes = []
        for peer in sorted(report.unreached):
            if not await self.store.queued(peer, CATCH_UP, report.group_id):
                changes.append(Enqueue(peer, CATCH_UP, report.group_id, now, report.group_id))
        if changes:
            await self.store.commit(*changes)
        for peer in report.unreached:
            self.outbox.retry_later(peer)
            cast("MulticastService", self).notify_away(peer, report.group_id)

    def transmission_progress(
        self, group_id: bytes, manifest: Manifest, peer: PeerID, fragments: int
    ) -> None:
        """
        What a strategy says of a transmission under way (see
        :meth:`IStrategyContext.progress`).
        """
        report = self._reports.get((group_id, manifest.epoch, manifest.index))
        if report is not None:
            report.mark_progress(peer, fragments)

    @deferred
    async def sealed_message(self, group_id: bytes, epoch: int, index: int) -> SealedMessage:
        """
        A message this node sent, as its strategy sends it again.

        :raises NotStored: when its fragments are no longer kept.
        """
        stored = await self.store.message(group_id, epoch, index)
        fragments = await self.store.fragments(group_id, epoch, index)
        manifest = decode_manifest(stored.manifest)
        if len(fragments) != len(manifest.fragment_hashes):
            raise NotStored(f"the fragments of message {epoch}/{index} are no longer kept")
        return SealedMessage(
            manifest, stored.manifest, tuple(fragments[n] for n in range(len(fragments)))
        )

    @deferred
    async def report(self, group_id: bytes, epoch: int, index: int) -> DeliveryReport:
        """
        The delivery report of a message this node sent: the live one if
        it is still followed, else one read from the store.
        """
        report = self._reports.get((group_id, epoch, index))
        if report is not None:
            return report
        states = await self.store.deliveries(group_id, epoch, index)
        report = DeliveryReport(group_id, epoch, index, frozenset(states))
        report.committed = frozenset(p for p, s in states.items() if s == "committed")
        report.pending = frozenset(p for p, s in states.items() if s == "pending")
        return report

    async def acknowledged(self, peer: PeerID, group: Group, payload: bytes) -> None:
        """
        ``peer`` says it committed a message: count it, once the MAC under
        the key only it and the owner share checks out, and drop the
        message's fragments once every recipient has it.

        :raises GroupError: for a forged or misplaced acknowledgement.
        """
        if group.role != "owner":
            raise NotOwner("an acknowledgement goes to the owner")
        ack = decode_acknowledgement(payload)
        key = acknowledgement_key(self.identity, peer, group.group_id)
        if not acknowledgement_valid(key, ack):
            raise GroupError("an acknowledgement under another key")
        states = await self.store.deliveries(group.group_id, ack.epoch, ack.index)
        if peer not in states:
            raise NotAMember("an acknowledgement of a message not sent to this peer")
        await self._count(group.group_id, ack.epoch, ack.index, states, frozenset({peer}))

    async def _count(
        self,
        group_id: bytes,
        epoch: int,
        index: int,
        states: Mapping[PeerID, str],
        peers: frozenset[PeerID],
    ) -> None:
        """
        Count ``peers`` as having committed a message, and drop its
        fragments once every recipient has.
        """
        changes: list[Any] = [MarkDelivered(group_id, epoch, index, p) for p in sorted(peers)]
        if all(s == "committed" for p, s in states.items() if p not in peers):
            changes.append(DropFragments(group_id, epoch, index))
        await self.store.commit(*changes)
        report = self._reports.get((group_id, epoch, index))
        if report is not None:
            for peer in peers:
                report.mark_committed(peer)
            if not report.pending:
                del self._reports[(group_id, epoch, index)]

    @deferred
    async def acknowledged_macs(
        self, group_id: bytes, epoch: int, index: int, macs: list[bytes]
    ) -> frozenset[PeerID]:
        """
        Acknowledgements a strategy carried to this owner, as MACs alone
        (see :meth:`IAcknowledgementRelay.acknowledged`): each is matched
        against the MAC each pending member would make, so it counts only
        for the member who made it, and the forwarders never learned whose
        it was.

        :returns: the members newly counted.
        """
        await self._owned(group_id)
        states = await self.store.deliveries(group_id, epoch, index)
        wanted = set(macs)
        found = frozenset(
            peer
            for peer, state in states.items()
            if state == "pending"
            and make_acknowledgement(self._ack_key(group_id, peer), group_id, epoch, index)[
                -ACK_MAC_SIZE:
            ]
            in wanted
        )
        if found:
            await self._count(group_id, epoch, index, states, found)
        return found

    async def _mailboxes_hold(
        self, group_id: bytes, peer: PeerID, messages: list[tuple[int, int]]
    ) -> bool:
        """
        Whether some mailbox of the group acknowledged each of ``messages``
        (and ``peer`` is a member, which catches up; not a mailbox).
        """
        roles = {m.peer: m.role for m in await self.store.members(group_id)}
        if roles.get(peer) != "member":
            return False
        for epoch, index in messages:
            states = await self.store.deliveries(group_id, epoch, index)
            if not any(
                state == "committed" and roles.get(p) == "mailbox" for p, state in states.items()
            ):
                return False
        return True

    def _ack_key(self, group_id: bytes, peer: PeerID) -> bytes:
        """
        The acknowledgement key of a member, remembered (an X25519 each).
        """
        key = self._ack_keys.get((group_id, peer))
        if key is None:
            if len(self._ack_keys) >= MAX_ACK_KEYS:
                del self._ack_keys[next(iter(self._ack_keys))]
            key = self._ack_keys[(group_id, peer)] = acknowledgement_key(
                self.identity, peer, group_id
            )
        return key

    async def catch_up(self, peer: PeerID, group_id: bytes) -> bool:
        """
        Get ``peer`` the messages of the group it has not committed.

        When the group's mailboxes hold them all, ``peer`` is told that
        there is news (a ``news`` notice) and fetches them itself, from the
        mailboxes first (``docs/offline.rst``); the owner sends them again
        itself only if the peer has not got them :data:`NEWS_GRACE` later,
        or when no mailbox holds them.

        :returns: whether it was reached and has them (or the group is
            gone); ``False`` to be tried again on the outbox's schedule.
        """
        try:
            await self._owned(group_id)
        except GroupError:
            return True
        undelivered = await self.store.undelivered(group_id, peer)
        if not undelivered:
            self._news.pop((peer, group_id), None)
            return True
        told = self._news.get((peer, group_id))
        now = self.clock.seconds()
        if told is None and await self._mailboxes_hold(group_id, peer, undelivered):
            try:
                await self.pool.call(peer, GroupNotice, kind=NEWS, payload=group_id)
            except Exception:
                return False
            if len(self._news) >= MAX_NEWS:
                del self._news[next(iter(self._news))]
            self._news[(peer, group_id)] = now
            return False
        if told is not None and now - told < NEWS_GRACE:
            return False
        self._news.pop((peer, group_id), None)
        strategy = await self.strategy_of(group_id)
        for epoch, index in undelivered:
            try:
                message = await self.sealed_message(group_id, epoch, index)
            except NotStored:
                continue
            transmission = await strategy.publish(message)
            if peer in transmission.unreached:
                return False
        return True
