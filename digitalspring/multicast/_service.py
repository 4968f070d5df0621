# -*- test-case-name: tests.test_multicast_service -*-
"""
The multicast service: a node's groups, as owner and as member.

It ties the pure parts together: the owner's epochs and keys
(``_epoch.py``), sealing and opening (``_message.py``), the neighbour graph
(``_neighbours.py``), membership proofs (``_membership.py``), the notices
of the pairwise channel (``_notices.py``), the store, and one strategy per
group (a plugin).  The service itself is put together from parts, one idea
each (see ``_core.py``); this module starts and stops it and dispatches
the notices peers send.  What waits for an offline peer waits in the
store's outbox (``_outbox.py``): an idle node holds no timer and no
connection for its groups.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.python.failure import Failure

from .._ratelimit import RateLimitedLog
from ..channel import ConnectionPool
from ..dht import DHT
from ..errors import DigitalSpringError
from ..identity import Identity, PeerID
from ..storage import IStore, StoreLimits, closed_by_stopping
from ._catchup import CatchUpSide
from ._catchup_serve import CatchUpServer
from ._commands import NoticeRefused, PeerBusy
from ._core import AlreadyMember, GroupError, NotAMember, NotInGroup, NotOwner
from ._epoch import EpochEnd
from ._interfaces import IMulticastStrategy, IMulticastStrategyPlugin
from ._mailbox import MailboxSide, NotAMailbox
from ._member import AUTO_ACCEPT_SETTING
from ._notices import (
    ACKNOWLEDGEMENT,
    DEPARTURE,
    INVITATION,
    KEY_BUNDLE,
    MAILBOX_EPOCH,
    MAILBOX_INVITATION,
    MAILBOXES,
    NEIGHBOURS,
    NEW_EPOCH,
    NEWS,
    REMOVAL,
    SEALED,
    decode_bare,
    notice_group,
)
from ._notify_side import DEFAULT_COLLECT_INTERVAL, MAX_DEPOSITS, NOTIFY_REGISTER, NotifySide
from ._outbox import CATCH_UP, MAX_ATTEMPTS, RETRY_DELAYS, Outbox, retry_delays
from ._prekeys import BundleBook, MemberPrekeys
from ._publishing import MAX_REPORTS, Publishing
from ._rates import BUNDLE, RequestLimiter, RequestRates
from ._router import MembershipRouter
from ._spring_upload import DEFAULT_UPLOAD_BUDGET

__all__ = [
    "AUTO_ACCEPT_SETTING",
    "CATCH_UP",
    "MAX_ATTEMPTS",
    "MAX_REPORTS",
    "RETRY_DELAYS",
    "AlreadyMember",
    "GroupError",
    "MulticastService",
    "NotAMailbox",
    "NotAMember",
    "NotInGroup",
    "NotOwner",
]


class MulticastService(Publishing, MailboxSide, CatchUpSide, NotifySide, MembershipRouter):
    """
    A node's multicast groups: owner operations, pub/sub, invitations and
    consent, membership proofs, and the strategies that move messages.

    :param identity: this node's identity.
    :param clock: every timer runs on it.
    :param pool: the connection pool the service's commands and the
        strategies' travel on.
    :param store: the node's store.
    :param is_contact: whether a peer is in the user's address book
        (invitations from contacts are accepted unasked, unless the
        ``auto-accept-contacts`` setting is ``off``).
    :param strategies: the strategy plugins by name; by default the
        installed ones.
    :param mailbox: the store's limits, when this node serves as a mailbox
        (``twistd dspring --mailbox``): it takes the groups owners add it
        to as a mailbox, within the quotas these limits say.  ``None``:
        it refuses them.
    :param catch_up_rate: the bytes per second it uploads to members
        catching up, all groups together.
    :param catch_up_at_start: whether it catches up every group it is a
        member of when it starts (with notification boxes: those they
        name).
    :param notify_box: the leading zero bits of proof of work it asks of
        a deposit when it serves as a notification box (``twistd dspring
        --notify-box``; the store's limits bound what it keeps); ``None``:
        it does not serve.
    :param rates: how often peers may ask work of each paced kind (key
        bundles, sealed notices, notification boxes).
    :param collect_interval: about how many seconds pass between a member's
        collections of its notifications while it runs (each wait drawn
        within 20 % of it).
    :param dht: the node's DHT, if it has one: a member without boxes
        collects its notifications there, and an owner leaves them there
        for such a member.
    :param retry_interval: the most seconds its outbox waits between two
        tries of a peer it cannot reach (:func:`retry_delays`): an owner
        retries a member away, and notifies it again, at least this often.
    :param random_source: draws the jitter of its timers (the operating
        system's generator unless a test or simulation passes a seeded one).
    """

    def __init__(
        self,
        identity: Identity,
        clock: Any,
        pool: ConnectionPool,
        store: IStore,
        is_contact: Callable[[PeerID], bool] = lambda peer: False,
        strategies: Mapping[str, IMulticastStrategyPlugin] | None = None,
        mailbox: StoreLimits | None = None,
        catch_up_rate: float = DEFAULT_UPLOAD_BUDGET,
        catch_up_at_start: bool = True,
        notify_box: int | None = None,
        rates: RequestRates | None = None,
        collect_interval: float = DEFAULT_COLLECT_INTERVAL,
        dht: DHT | None = None,
        retry_interval: float = RETRY_DELAYS[-1],
        random_source: random.Random | None = None,
    ) -> None:
        self.identity = identity
        self.retry_interval = retry_interval
        self.notify_box_work = notify_box
        self.dht = dht
        self._dht_puts = {}
        self._notified = {}
        self._deposits = DeferredSemaphore(MAX_DEPOSITS)
        self.collect_interval = collect_interval
        self._collect_timer = None
        self._collecting = None
        self._collect_failures = 0
        self._random = random_source or random.SystemRandom()
        self.mailbox_limits = mailbox
        self._expiry = None
        self.catch_up_server = CatchUpServer(store, clock, catch_up_rate)
        self._catch_up_at_start = catch_up_at_start
        self._catch_ups = {}
        self._catch_up_runs = set()
        self._catch_up_machines = {}
        self._targets = {}
        self._short = {}
        self.caught_up = {}
        self.caught_up_since_start = {}
        self.caught_up_at_start = None
        self.at_start_finished = False
        self.clock = clock
        self.pool = pool
        self.store = store
        self.prekeys = MemberPrekeys(identity, store)
        self.bundles = BundleBook(identity.peer_id, store)
        self.is_contact = is_contact
        self.outbox = Outbox(
            clock,
            pool,
            store,
            special={CATCH_UP: self.catch_up, NOTIFY_REGISTER: self.register_at_box},
            after={INVITATION: self.invitation_taken, MAILBOX_INVITATION: self.invitation_taken},
            undelivered=self.undelivered,
            delays=retry_delays(retry_interval),
            random=self._random,
        )
        self._sealed_entries = {}
        self._plugins = dict(strategies) if strategies is not None else None
        self._rlog = RateLimitedLog(self.log, clock)
        self._request_rates = RequestLimiter(clock, rates or RequestRates())
        self._sessions = weakref.WeakKeyDictionary()
        self._contexts = {}
        self._strategies = {}
        self._locks = {}
        self._reports = {}
        self._ack_keys = {}
        self._news = {}
        self._subscribers = {}
        self._arrival_watchers = []
        self._blocked = frozenset()
        self._locators: list[Callable[[Any], Any]] = []
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        self._locators = self._all_locators()
        self.pool.locators.extend(self._locators)
        Deferred.fromCoroutine(self._load()).addBoth(self._loaded)

    async def _load(self) -> None:
        self._blocked = await self.store.blocked()
        await self.outbox.start()
        await self.refresh_bundles()
        self.expiry_changed()
        Deferred.fromCoroutine(self._back_online()).addErrback(self._log_failure)

    async def _back_online(self) -> None:
        # With notification boxes, only the groups they name have news;
        # without (or when a box cannot vouch that it was told everything),
        # every group may.
        news: set[bytes] | None = None
        try:
            if await self.notify_boxes() or await self.reads_dht():
                news = await self.collect_notifications()
                # And again while we run (sooner if no box answered).
                self.schedule_collection()
        except Exception:
            self.log.failure("could not collect notifications")
        # Sealed notices first: a new epoch among them is what catch-up
        # proves membership in.  Catch-up runs whatever became of them.
        try:
            await self.collect_all_sealed(news)
        except Exception:
            self.log.failure("could not collect sealed notices")
        if self._catch_up_at_start:
            await self.catch_up_at_start(news)

    def _loaded(self, result: object) -> None:
        if isinstance(result, Failure):
            if closed_by_stopping(result, self.running):
                self.log.info("the multicast service stopped before its state was loaded")
            else:
                self.log.failure("the multicast service could not load its state", result)
        self.ready.callback(None)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for locator in self._locators:
            if locator in self.pool.locators:
                self.pool.locators.remove(locator)
        self.outbox.stop()
        self.stop_expiry()
        self.stop_collections()
        self.stop_catch_ups()
        strategies, self._strategies = list(self._strategies.values()), {}
        self._contexts.clear()
        return Deferred.fromCoroutine(self._stop_all(strategies))

    async def _stop_all(self, strategies: list[IMulticastStrategy]) -> None:
        for strategy in strategies:
            await strategy.stop()

    def reachable(self, peer: PeerID) -> None:
        """
        ``peer`` is reachable now (the node saw it): what waits for it in
        the outbox, catch-ups included, goes at once.  A connection from or
        to the peer says the same without being told.
        """
        self.outbox.reachable(peer)

    # --- notices ---------------------------------------------------------------

    async def receive_notice(self, peer: PeerID, kind: str, payload: bytes) -> None:
        """
        A notice ``peer`` sent over the pairwise channel.

        :raises NoticeRefused: for any notice refused (the reason is
            logged at a bounded rate, not told to the peer).
        :raises PeerBusy: for a key bundle past the rates (before it is
            read).
        """
        try:
            if peer in self._blocked:
                raise NoticeRefused("refused")
            if kind == KEY_BUNDLE:
                self._request_rates.admit(BUNDLE, peer)
            await self._handle_notice(peer, kind, payload)
        except (NoticeRefused, PeerBusy):
            raise
        except DigitalSpringError as e:
            self._rlog.info(
                "notice-refused",
                "refused a group notice ({notice}) from {peer}: {error}",
                notice=kind[:16],
                peer=str(peer),
                error=str(e),
            )
            raise NoticeRefused("refused") from None

    async def _handle_notice(self, peer: PeerID, kind: str, payload: bytes) -> None:
        if kind == INVITATION:
            await self.invited(peer, payload)
            return
        if kind == MAILBOX_INVITATION:
            await self.mailbox_invited(peer, payload)
            return
        group_id = notice_group(payload)
        group = await self._group(group_id)
        if kind == ACKNOWLEDGEMENT:
            await self.acknowledged(peer, group, payload)
        elif kind == KEY_BUNDLE:
            await self.bundle_received(peer, group, payload)
        elif kind == DEPARTURE:
            if group.role != "owner":
                raise NotOwner("a departure goes to the owner")
            decode_bare(payload)
            await self._lock(group_id).run(self._remove_member, group, peer, EpochEnd.MEMBER_LEFT)
        elif group.owner != peer or group.role == "owner":
            raise NotOwner("only a group's owner sends it keys, neighbours or removals")
        elif kind == NEIGHBOURS:
            await self.new_neighbours(group, payload)
        elif kind == REMOVAL:
            if group.role == "mailbox":
                decode_bare(payload)
                await self.no_longer_mailbox(group)
            else:
                await self.removed(group, payload)
        elif kind == NEW_EPOCH and group.role == "member":
            await self.new_epoch(group, payload)
        elif kind == MAILBOXES and group.role == "member":
            await self.new_mailboxes(group, payload)
        elif kind == SEALED and group.role == "mailbox":
            await self.hold_sealed(group, payload)
        elif kind == MAILBOX_EPOCH and group.role == "mailbox":
            await self.mailbox_new_epoch(group, payload)
        elif kind == NEWS and group.role == "member":
            decode_bare(payload)
            # Fetched from the mailboxes first; the owner waits for none of it.
            self.catch_up_group(group_id).addErrback(self._log_failure)
        else:
            raise GroupError(f"no group notice of this kind for a group's {group.role}")
