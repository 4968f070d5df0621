# -*- test-case-name: tests.test_notify -*-
# mypy: disallow-untyped-calls=False
"""
The service's part of notification boxes (issue 12, item 3; see
``_notify.py`` and ``docs/offline.rst``).

A member keeps the boxes it chose in its store (a setting), registers with
each through its outbox, and names them in the key bundles it gives its
groups' owners.  An owner that cannot reach a member leaves a sealed
notification at each of the member's boxes, once per group until the
member is seen again (its outbox still retries the member directly, on
its schedule).  A node run with ``--notify-box`` keeps notifications for
the members that registered with it, within its quotas, and gives each
member its own when it asks.  A member that starts collects its
notifications and catches up the groups they name, and no others; while it
runs it collects again every few minutes (jittered, so that members do not
ask their boxes in step), sooner after a collection that reached no box,
and at once when a connection shows it is back on the network.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.protocols import amp
from twisted.python.failure import Failure

from ..channel import ISecureChannel, SecureChannelFactory, SecureChannelProtocol
from ..errors import DigitalSpringError
from ..identity import Identity, InvalidPeerID, PeerID
from ..storage import (
    DepositNotification,
    Dequeue,
    Enqueue,
    NotStored,
    OutboxEntry,
    PeerQuotaExceeded,
    QuotaExceeded,
    RefuseNotification,
    RegisterNotifyMember,
    SetSetting,
    TakeNotifications,
    UnregisterNotifyMember,
)
from ..transport import split_address
from ._bundles import NOTIFY_BOXES_SETTING, BundleSide
from ._core import GroupError, deferred
from ._notices import KEY_BUNDLE, NEW_EPOCH, REMOVAL, decode_new_epoch
from ._notify import (
    DAY,
    DEFAULT_DEPOSIT_WORK,
    DHT_TTL,
    ITEM_SIZE,
    MAX_COLLECT,
    MAX_DEPOSIT_WORK,
    BoxFull,
    DepositRefused,
    InsufficientWork,
    NotABox,
    Notification,
    NotificationRefused,
    NotifyCollect,
    NotifyDeposit,
    NotifyRegister,
    NotifyWork,
    check_deposit,
    day_key,
    item_prekey,
    make_notification,
    notification_valid,
    open_notification,
    seal_notification,
    solve_deposit,
)
from ._outbox import CATCH_UP
from ._prekeys import MAX_NOTIFY_BOXES, PREKEY_GRACE, KeyBundle, decode_bundle
from ._rates import BOX

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from ..channel import PeerConnection
    from ..dht import DHT
    from ._service import MulticastService

#: Outbox kind of a registration with a box (payload ``b"\x01"``) or its
#: end (``b"\x00"``).
NOTIFY_REGISTER = "notify-register"
#: Seconds a deposit may take, dialling and handshake included.
DEPOSIT_TIMEOUT = 30.0
#: The most ``notify-collect`` requests a member makes of one box at start
#: (MAX_COLLECT each: a box keeps 64 for a member by default).
MAX_COLLECT_ROUNDS = 4
#: The most (member, group) pairs an owner remembers having notified.
MAX_NOTIFIED = 65_536
#: The most deposits an owner makes at once, and the seconds it waits after
#: each: each is a new connection, and a box admits one a second from an
#: address (``ConnectionLimits.address_rate``), ten at once.
MAX_DEPOSITS = 1
DEPOSIT_SPACING = 1.0
#: Seconds between a running member's collections, by default: news the
#: owner could not bring it directly (it was unreachable a moment) waits
#: at most this long, and a box answers each of its members a few times an
#: hour.  Each wait is drawn within COLLECT_JITTER of it.
DEFAULT_COLLECT_INTERVAL = 300.0
COLLECT_JITTER = 0.2
#: Seconds before a collection that reached no box is tried again,
#: doubling after each such one, up to the interval.
COLLECT_RETRY = 30.0


class NotifySide(BundleSide):
    """
    Notification boxes: a member's choice of them and what it collects, an
    owner's deposits, and a box's serving.

    :ivar notify_box_work: the proof of work this node asks of a deposit
        when it serves as a notification box, else ``None``.
    """

    notify_box_work: int | None
    #: The DHT that notifications of members without boxes go through,
    #: if the node has one.
    dht: DHT | None
    #: When we last put a notification of each (member, group) in the DHT.
    _dht_puts: dict[tuple[PeerID, bytes], int]
    #: The groups each member was notified of since we last saw it, and
    #: the latest message their notifications named (``None`` while the
    #: first is under way).
    _notified: dict[PeerID, dict[bytes, tuple[int, int] | None]]
    #: Deposits under way, at most MAX_DEPOSITS.
    _deposits: DeferredSemaphore
    #: Seconds between collections while running.
    collect_interval: float
    _collect_timer: IDelayedCall | None
    #: What waits on the collection under way, if one is.
    _collecting: list[Deferred[None]] | None
    #: Collections in a row that reached no box.
    _collect_failures: int
    _random: random.Random

    # --- a member: its boxes ---------------------------------------------

    @deferred
    async def add_notify_box(self, box: PeerID) -> list[PeerID]:
        """
        Use ``box`` as a notification box: register with it (through the
        outbox) and give the owners of our groups new bundles naming it.

        :returns: our boxes now.
        :raises GroupError: for ourselves, or past :data:`MAX_NOTIFY_BOXES`.
        """
        boxes = await self.notify_boxes()
        if box == self.local:
            raise GroupError("a node is not its own notification box")
        if box in boxes:
            return boxes
        if len(boxes) >= MAX_NOTIFY_BOXES:
            raise GroupError(f"a member has at most {MAX_NOTIFY_BOXES} notification boxes")
        return await self._set_boxes(sorted([*boxes, box], key=str), box, True)

    @deferred
    async def remove_notify_box(self, box: PeerID) -> list[PeerID]:
        """
        Stop using ``box``: tell it (through the outbox) and give the owners
        new bundles without it.

        :returns: our boxes now.
        :raises GroupError: when it is not one of ours.
        """
        boxes = await self.notify_boxes()
        if box not in boxes:
            raise GroupError(f"{box} is not one of our notification boxes")
        return await self._set_boxes([b for b in boxes if b != box], box, False)

    async def _set_boxes(self, boxes: list[PeerID], box: PeerID, use: bool) -> list[PeerID]:
        now = self._now()
        waiting = [e for e in await self.store.outbox(box) if e.kind == NOTIFY_REGISTER]
        await self.store.commit(
            SetSetting(NOTIFY_BOXES_SETTING, " ".join(str(b) for b in boxes)),
            *(Dequeue(e.entry_id) for e in waiting),
            Enqueue(box, NOTIFY_REGISTER, b"\x01" if use else b"\x00", now),
        )
        self.outbox.waiting([box])
        told: set[PeerID] = set()
        for group in await self.store.groups():
            if group.role == "member" and group.state == "active" and group.owner not in told:
                told.add(group.owner)
                await self.give_bundle(group.owner, group.group_id)
        if boxes and self._collect_timer is None and self._collecting is None:
            self.schedule_collection()
        return boxes

    async def register_at_box(self, box: PeerID, payload: bytes) -> bool:
        """
        Deliver a registration with ``box`` (or its end), for the outbox.
        A box that does not serve is logged, and not asked again.
        """
        try:
            await self.pool.call(box, NotifyRegister, use=payload == b"\x01")
        except (NotABox, BoxFull) as e:
            self.log.warn("notification box {box} refused us: {error}", box=str(box), error=str(e))
        return True

    # --- an owner: leaving notifications -----------------------------------

    async def undelivered(self, peer: PeerID, entries: list[OutboxEntry]) -> None:
        """
        The outbox could not reach ``peer``: leave what is sealed for it at
        its groups' mailboxes, and a notification at its boxes for each
        group we own that has news for it (messages, a new epoch, or its
        removal: a member that collects only the groups its boxes name
        would not take a removal sealed at a mailbox otherwise); again for
        a group we notified before when we sent more since, so that the
        member's catch-up runs until our latest message.
        """
        await self.leave_sealed(peer, entries)
        for entry in entries:
            if entry.kind in (CATCH_UP, NEW_EPOCH, REMOVAL) and entry.group_id is not None:
                self.notify_away(peer, entry.group_id, again=True)

    def seen(self, peer: PeerID) -> None:
        """
        ``peer`` connected: a later absence is notified again.  A member
        whose last collection reached no box is back on the network:
        collect now.
        """
        self._notified.pop(peer, None)
        for key in [k for k in self._dht_puts if k[0] == peer]:
            del self._dht_puts[key]
        if self._collect_failures and self.running:
            self.collect_soon()

    def notify_away(self, peer: PeerID, group_id: bytes, again: bool = False) -> None:
        """
        ``peer`` was not reached with news of a group we own: leave a
        notification at each of its boxes, once until we see it again, or
        (``again``: the outbox failed to reach it, on its retry schedule)
        once more when the group's latest message is past the one the last
        notification named.
        """
        groups = self._notified.get(peer)
        if groups is None:
            if len(self._notified) >= MAX_NOTIFIED:
                del self._notified[next(iter(self._notified))]
            groups = self._notified[peer] = {}
        elif group_id in groups:
            previous = groups[group_id]
            if not again or previous is None:
                # Notified, or a notification under way.
                return
        previous = groups.get(group_id)
        groups[group_id] = None
        Deferred.fromCoroutine(self._notify(peer, group_id, previous)).addErrback(
            self._log_failure
        )

    def _notified_as(self, peer: PeerID, group_id: bytes, latest: tuple[int, int] | None) -> None:
        """
        Remember the latest message the notifications of ``group_id`` left
        for ``peer`` named (``None``: none was left).
        """
        groups = self._notified.get(peer)
        if groups is None or group_id not in groups:
            return
        if latest is None:
            del groups[group_id]
        else:
            groups[group_id] = latest

    async def _notify(
        self, peer: PeerID, group_id: bytes, previous: tuple[int, int] | None
    ) -> None:
        left = previous
        try:
            left = await self._notify_boxes(peer, group_id, previous)
        finally:
            self._notified_as(peer, group_id, left)

    async def _notify_boxes(
        self, peer: PeerID, group_id: bytes, previous: tuple[int, int] | None
    ) -> tuple[int, int] | None:
        """
        Leave a notification of ``group_id`` at each of ``peer``'s boxes,
        unless it names nothing past ``previous``.

        :returns: the latest message the notifications left so far name.
        """
        try:
            held = await self.store.bundle(peer)
        except NotStored:
            return previous
        now = self._now()
        bundle = decode_bundle(held.data)
        secret = bundle.notify_secret
        to_dht = not bundle.notify_boxes and secret is not None and self.dht is not None
        if bundle.expires <= now or not (bundle.notify_boxes or to_dht):
            return previous
        try:
            current = await self.store.epoch(group_id)
        except NotStored:
            return previous
        if current.access_key is None or current.chain is None:
            return previous
        latest = (current.epoch, current.chain.next_index - 1)
        put_at = self._dht_puts.get((peer, group_id))
        if (
            previous is not None
            and latest <= previous
            # A notification in the DHT expires: put again past half its
            # life (at a retry of the outbox, daily at most).
            and not (to_dht and (put_at is None or now - put_at >= DHT_TTL / 2))
        ):
            return previous
        keys = {current.epoch: current.access_key}
        waiting = []
        for e in await self.store.outbox(peer):
            if e.group_id != group_id:
                continue
            if e.kind == NEW_EPOCH:
                waiting.append(decode_new_epoch(e.payload).member.epoch)
            elif e.kind == REMOVAL:
                # Removed, it was given no epoch since: at most the one
                # before ours.
                waiting.append(current.epoch)
        if waiting:
            # The member may hold only the epoch before the first it was
            # not given.
            try:
                held_epoch = await self.store.epoch(group_id, min(waiting) - 1)
            except NotStored:
                held_epoch = None
            if held_epoch is not None and held_epoch.access_key is not None:
                keys[held_epoch.epoch] = held_epoch.access_key
        notification = make_notification(peer, group_id, latest, keys)
        if to_dht:
            assert secret is not None
            kept = await self._put_in_dht(peer, group_id, secret, bundle, notification)
            return latest if kept else previous
        left = False
        for box in sorted(bundle.notify_boxes, key=str):
            item = seal_notification(peer, bundle.signed_prekey, notification)
            try:
                await self._deposits.run(self._paced_deposit, box, peer, item)
            except Exception as e:
                self._rlog.info(
                    "deposit-failed",
                    "could not leave a notification at {box}: {error}",
                    box=str(box),
                    error=str(e),
                )
            else:
                left = True
        # When no box took it, tried again when the outbox next fails to
        # reach the peer.
        return latest if left else previous

    async def _put_in_dht(
        self,
        peer: PeerID,
        group_id: bytes,
        secret: bytes,
        bundle: KeyBundle,
        notification: Notification,
    ) -> bool:
        """
        Put the notification, sealed to ``peer`` as at a box, in the DHT
        under today's key of ``peer`` (a member without boxes).

        :returns: whether any node kept it.
        """
        assert self.dht is not None
        item = seal_notification(peer, bundle.signed_prekey, notification)
        key = day_key(secret, int(self.clock.seconds() // DAY))
        try:
            stored = await self._deposits.run(self._paced_put, key, item)
        except Exception as e:
            stored, error = 0, str(e)
        else:
            error = "no DHT node kept it"
        if not stored:
            self._rlog.info(
                "dht-notify-failed",
                "could not leave a notification for {peer} in the DHT: {error}",
                peer=str(peer),
                error=error,
            )
            return False
        if len(self._dht_puts) >= MAX_NOTIFIED:
            del self._dht_puts[next(iter(self._dht_puts))]
        self._dht_puts[peer, group_id] = self._now()
        return True

    @deferred
    async def _paced_put(self, key: bytes, item: bytes) -> int:
        assert self.dht is not None
        try:
            return await self.dht.put(key, item, DHT_TTL)
        finally:
            await deferLater(self.clock, DEPOSIT_SPACING, lambda: None)

    @deferred
    async def _paced_deposit(self, box: PeerID, recipient: PeerID, item: bytes) -> None:
        try:
            await self.deposit(box, recipient, item)
        finally:
            await deferLater(self.clock, DEPOSIT_SPACING, lambda: None)

    @deferred
    async def deposit(self, box: PeerID, recipient: PeerID, item: bytes) -> None:
        """
        Leave ``item`` for ``recipient`` at ``box``, over a connection of its
        own with a throwaway identity (Noise XX: the box learns no peer ID
        of ours), with the proof of work the box asks.

        :raises DigitalSpringError: when the box cannot be reached or
            refuses (:class:`NotABox`, :class:`DepositRefused`,
            :class:`BoxFull`, :class:`InsufficientWork`).
        """
        addresses = await self.pool.directory.resolve(box)
        factory = SecureChannelFactory(
            Identity.generate(),
            Factory.forProtocol(amp.AMP),
            self.clock,
            initiator=True,
            expected_peer=box,
            pattern="XX",
        )
        errors: list[str] = []
        for address in addresses:
            name, description = split_address(address)
            transport = self.pool.transports.get(name)
            if transport is None:
                continue
            try:
                channel = await transport.connect(description, factory).addTimeout(
                    DEPOSIT_TIMEOUT, self.clock
                )
                assert isinstance(channel, SecureChannelProtocol)
                protocol = await channel.when_secured().addTimeout(DEPOSIT_TIMEOUT, self.clock)
            except Exception as e:
                errors.append(f"{address}: {e}")
                continue
            try:
                assert isinstance(protocol, amp.AMP)
                answer = await protocol.callRemote(NotifyWork).addTimeout(
                    DEPOSIT_TIMEOUT, self.clock
                )
                bits = answer["bits"]
                if not 0 <= bits <= MAX_DEPOSIT_WORK:
                    raise InsufficientWork(f"the box asks {bits} bits of work; at most 24 given")
                nonce = solve_deposit(box, channel.handshake_hash, recipient, item, bits)
                await protocol.callRemote(
                    NotifyDeposit, recipient=recipient.public_key, item=item, nonce=nonce
                ).addTimeout(DEPOSIT_TIMEOUT, self.clock)
            finally:
                channel.loseConnection()
            return
        raise DepositRefused(f"cannot reach {box}: " + "; ".join(errors))

    # --- a box: serving ------------------------------------------------------

    def box_work(self) -> int:
        """
        The proof of work this node asks of a deposit.

        :raises NotABox: when it does not serve as a notification box.
        """
        if self.notify_box_work is None:
            raise NotABox(
                "this node does not serve as a notification box (run it with --notify-box)"
            )
        return self.notify_box_work

    async def box_register(self, peer: PeerID, use: bool) -> None:
        """
        ``peer`` uses this node as a notification box from now on, or no
        longer.
        """
        self.box_work()
        self._request_rates.admit(BOX, peer)
        if not use:
            await self.store.commit(UnregisterNotifyMember(peer))
            return
        try:
            await self.store.commit(RegisterNotifyMember(peer, self.clock.seconds()))
        except QuotaExceeded as e:
            raise BoxFull(str(e)) from None

    async def box_deposit(
        self, connection: PeerConnection, recipient: bytes, item: bytes, nonce: bytes
    ) -> None:
        """
        A deposit: checked (size, proof of work bound to this connection)
        and kept for its recipient within the quotas.
        """
        bits = self.box_work()
        if len(item) != ITEM_SIZE:
            raise DepositRefused(f"a notification has {ITEM_SIZE} bytes")
        try:
            member = PeerID(recipient)
        except InvalidPeerID:
            raise DepositRefused("the deposit names no valid peer") from None
        binding = ISecureChannel(connection.transport).handshake_hash
        check_deposit(self.local, binding, member, item, nonce, bits)
        try:
            await self.store.commit(DepositNotification(member, item))
        except NotStored:
            raise DepositRefused("this box serves no such member") from None
        except QuotaExceeded as e:
            await self.store.commit(RefuseNotification(member))
            what = "for this member" if isinstance(e, PeerQuotaExceeded) else "in all"
            raise BoxFull(f"this box holds as many notifications as it keeps {what}") from None

    async def box_collect(self, peer: PeerID) -> tuple[bytes, int]:
        """
        The oldest notifications held for ``peer`` (deleted once given),
        and how many deposits for it were refused since it last collected.
        """
        self.box_work()
        self._request_rates.admit(BOX, peer)
        try:
            member = await self.store.notify_member(peer)
        except NotStored:
            raise DepositRefused("this box does not serve you: register first") from None
        items = await self.store.notifications(peer, MAX_COLLECT)
        await self.store.commit(TakeNotifications(peer, len(items)))
        return b"".join(items), member.refused

    @deferred
    async def notify_box_status(self) -> dict[str, Any]:
        """
        For ``dspring notify-boxes list``: our boxes, and what this node
        holds as a box.
        """
        members = await self.store.notify_members() if self.notify_box_work is not None else []
        return {
            "boxes": [str(b) for b in await self.notify_boxes()],
            "serving": self.notify_box_work is not None,
            "work_bits": self.notify_box_work,
            "members": [
                {"peer": str(m.peer), "held": m.held, "refused": m.refused} for m in members
            ],
        }

    # --- a member: collecting ------------------------------------------------

    async def collect_notifications(self) -> set[bytes] | None:
        """
        Take what our boxes hold for us (without boxes, what the DHT holds
        under our day keys): the groups with news, each checked (it opens,
        its MAC checks under an access key we hold, and it names a message
        past the last we have).

        :returns: those groups; ``None`` when no box (no DHT node)
            answered, or one refused deposits for us (it was full; the DHT
            key was full, or a day's key could not be read): we cannot
            know we were told of every group with news.
        """
        news, answered, complete = await self._collect()
        if not answered or not complete:
            return None
        return news

    # --- a member: collecting while it runs -----------------------------

    def schedule_collection(self, delay: float | None = None) -> None:
        """
        Collect again in ``delay`` seconds; by default in
        :attr:`collect_interval` give or take :data:`COLLECT_JITTER`, or
        sooner after collections that reached no box.  One timer at most,
        and none while the service is stopped.
        """
        self.stop_collections()
        if not self.running:
            return
        if delay is None:
            if self._collect_failures:
                delay = min(
                    self.collect_interval, COLLECT_RETRY * 2 ** (self._collect_failures - 1)
                )
            else:
                spread = self._random.uniform(1 - COLLECT_JITTER, 1 + COLLECT_JITTER)
                delay = self.collect_interval * spread
        self._collect_timer = self.clock.callLater(delay, self.collect_soon)

    def stop_collections(self) -> None:
        """
        Cancel the collection timer.
        """
        timer, self._collect_timer = self._collect_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def collect_soon(self) -> Deferred[None]:
        """
        Collect our notifications now (once at a time: a call while one is
        under way gets that one), take the sealed notices of the groups
        they name and catch those up; then collect again on the timer.
        """
        d: Deferred[None] = Deferred()
        if self._collecting is not None:
            self._collecting.append(d)
            return d
        waiting = self._collecting = [d]

        def done(result: object) -> None:
            self._collecting = None
            if isinstance(result, Failure):
                self._log_failure(result)
            for each in waiting:
                each.callback(None)

        Deferred.fromCoroutine(self._collect_while_running()).addBoth(done)
        return d

    async def _collect_while_running(self) -> None:
        self.stop_collections()
        if not await self.notify_boxes() and not await self.reads_dht():
            return
        try:
            news, answered, complete = await self._collect()
        finally:
            if self.running:
                self.schedule_collection()
        if not answered:
            return
        # While running, the owner reaches us directly; a box that refused
        # deposits for us is the one reason to catch up every group.
        groups = news if complete else None
        if groups is None or groups:
            service = cast("MulticastService", self)
            await service.collect_all_sealed(groups)
            await service.catch_up_all(groups)

    async def reads_dht(self) -> bool:
        """
        Whether we collect our notifications from the DHT: we have no box,
        a DHT, and have given our owners a day-key secret.
        """
        return (
            self.dht is not None
            and not await self.notify_boxes()
            and await self.prekeys.notify_secret() is not None
        )

    async def _collect(self) -> tuple[set[bytes], bool, bool]:
        """
        Collect from every box, or without boxes from the DHT: the groups
        with news, whether any box (or DHT node) answered, and whether we
        can vouch we were told of every group with news.
        """
        boxes = await self.notify_boxes()
        if boxes:
            news, answered, complete = await self._collect_boxes(boxes)
        else:
            news, answered, complete = await self._collect_dht()
        self._collect_failures = 0 if answered else self._collect_failures + 1
        return news, answered, complete

    async def _collect_dht(self) -> tuple[set[bytes], bool, bool]:
        """
        Read today's and yesterday's keys of ours in the DHT, each with a
        throwaway identity (``DHT.get_anonymously``): values are kept 23
        hours, so these two hold every notification still there.  The
        groups whose owner has not taken our bundle with its secret yet
        (one waits in our outbox) may have news too.
        """
        secret = await self.prekeys.notify_secret()
        if self.dht is None or secret is None:
            return set(), False, True
        news: set[bytes] = set()
        answered = False
        complete = True
        dht = self.dht
        # At start: once the DHT has tried to join, so that it knows nodes.
        joined: Deferred[None] = Deferred()

        def tried(result: object) -> object:
            joined.callback(None)
            return result

        dht.joined.addBoth(tried)
        await joined
        today = int(self.clock.seconds() // DAY)
        full = dht.settings.quotas.values_per_key
        for day in (today, today - 1):
            try:
                values = await dht.get_anonymously(day_key(secret, day))
            except Exception as e:
                self._rlog.info(
                    "notifications-not-collected",
                    "could not read our notifications in the DHT: {error}",
                    error=str(e),
                )
                complete = False
                continue
            answered = True
            if len(values) >= full:
                # Filled (by depositors within their bounds): what did not
                # fit is unknown.
                complete = False
            for value in values:
                if len(value) != ITEM_SIZE:
                    continue
                group_id = await self._news_of(value)
                if group_id is not None:
                    news.add(group_id)
        for group in await self.store.groups():
            if group.role == "member" and group.state == "active" and group.group_id not in news:
                waiting = await self.store.outbox(group.owner)
                if any(e.kind == KEY_BUNDLE for e in waiting):
                    news.add(group.group_id)
        return news, answered, complete

    async def _collect_boxes(self, boxes: list[PeerID]) -> tuple[set[bytes], bool, bool]:
        """
        Collect from every box: the groups with news, whether any box
        answered, and whether every box could vouch it was told everything.
        """
        news: set[bytes] = set()
        answered = False
        complete = True
        for box in boxes:
            # Collections space their own tries (COLLECT_RETRY doubling);
            # the pool's backoff, from dials while we were off the network,
            # would keep a collection on our return from reaching the box.
            self.pool.forget_failures(box)
            for _ in range(MAX_COLLECT_ROUNDS):
                try:
                    answer = await self.pool.call(box, NotifyCollect)
                    data = answer["items"]
                    if len(data) % ITEM_SIZE:
                        raise NotificationRefused("an answer of notifications cut short")
                except Exception as e:
                    self._rlog.info(
                        "notifications-not-collected",
                        "could not collect notifications from {box}: {error}",
                        box=str(box),
                        error=str(e),
                    )
                    break
                answered = True
                if answer["refused"]:
                    complete = False
                items = [data[i : i + ITEM_SIZE] for i in range(0, len(data), ITEM_SIZE)]
                for item in items:
                    group_id = await self._news_of(item)
                    if group_id is not None:
                        news.add(group_id)
                if len(items) < MAX_COLLECT:
                    break
            else:
                complete = False
        return news, answered, complete

    async def _news_of(self, item: bytes) -> bytes | None:
        """
        The group a notification tells of news in, or ``None`` when it is
        refused (logged) or tells nothing new.
        """
        try:
            now = self._now()
            prekey = await self.store.prekey(item_prekey(item))
            if prekey.expires is None or prekey.expires + PREKEY_GRACE <= now:
                raise NotificationRefused("the notification's prekey is not one we hold")
            notification = open_notification(self.identity, prekey.secret, item)
            group_id = notification.group_id
            group = await self.store.group(group_id)
            if group.role != "member" or group.state != "active":
                raise NotificationRefused("a notification of a group we are no member of")
            keys: dict[int, bytes] = {}
            for epoch, _ in notification.macs:
                try:
                    held = await self.store.epoch(group_id, epoch)
                except NotStored:
                    continue
                if held.access_key is not None:
                    keys[epoch] = held.access_key
            if not notification_valid(notification, self.local, keys):
                raise NotificationRefused("a notification whose MAC does not check")
        except (DigitalSpringError, NotStored) as e:
            self._rlog.info(
                "notification-refused", "refused a notification: {error}", error=str(e)
            )
            return None
        latest = await self.store.epoch(group_id)
        epoch, index = notification.latest
        if epoch < latest.epoch:
            return None
        if epoch == latest.epoch and latest.chain is not None:
            if index < latest.chain.next_index:
                return None
        # The catch-up it triggers runs until it has that message: a
        # source that hides it is found out.
        cast("MulticastService", self).learn_newest(group_id, notification.latest)
        return group_id


__all__ = [
    "DEFAULT_DEPOSIT_WORK",
    "NOTIFY_BOXES_SETTING",
    "NOTIFY_REGISTER",
    "NotifySide",
]
