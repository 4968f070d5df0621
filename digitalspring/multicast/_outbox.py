# -*- test-case-name: tests.test_multicast_service -*-
"""
The owner's (and a member's) outbox, as the service drives it: what waits
in the store for a peer goes out when the peer connects, when the node
learns the peer is reachable, or on a bounded retry schedule that exists
only while something waits.  An idle node holds no timer here.

The entries themselves live in the store (so they survive a restart); this
object holds only which peers something waits for, one timer per such
peer, and which flushes are under way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from random import Random, SystemRandom
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from .._ratelimit import RateLimitedLog
from ..channel import ConnectionPool
from ..identity import PeerID
from ..storage import CountAttempt, Dequeue, IStore, OutboxEntry, closed_by_stopping
from ._commands import GroupNotice, NoticeRefused, PeerBusy

#: Seconds before each retry of an outbox entry a peer did not take; the
#: last one repeats.  After :data:`MAX_ATTEMPTS` the entry waits for the
#: peer to connect (or to be seen reachable).  A node may wait less
#: (:func:`retry_delays`).
RETRY_DELAYS = (30.0, 120.0, 600.0, 3600.0, 6 * 3600.0, 24 * 3600.0)
MAX_ATTEMPTS = 20
#: Seconds before trying again a peer that answered busy: it is there and
#: asked us to come back, so this neither grows nor counts as an attempt.
BUSY_RETRY = 60.0
#: Each delay is drawn between these fractions of its nominal value, so
#: that peers refused together (hundreds of members whose key bundles an
#: owner paced, say) do not all come back at the same moment, to be
#: refused together again.
JITTER = (0.5, 1.5)
#: Outbox kind of a catch-up: messages a member has not committed.
CATCH_UP = "catch-up"

#: How an entry of a special kind is delivered: with the peer and the
#: entry's payload; returns whether the peer was reached.
Deliver = Callable[[PeerID, bytes], Awaitable[bool]]
#: What follows the delivery of an entry of some kind.
Delivered = Callable[[PeerID, bytes], Awaitable[None]]
#: What follows a peer not reached: with the entries that wait for it.
Undelivered = Callable[[PeerID, list[OutboxEntry]], Awaitable[None]]


def retry_delays(longest: float) -> tuple[float, ...]:
    """
    The retry schedule of a node that waits at most ``longest`` seconds
    between two tries of a peer (``twistd dspring --retry-interval``):
    :data:`RETRY_DELAYS`, none longer than ``longest``.
    """
    if not longest > 0:
        raise ValueError(f"a retry interval is above 0 seconds, not {longest}")
    return tuple(min(delay, longest) for delay in RETRY_DELAYS)


class Outbox:
    """
    Sends what waits in the store's outbox for each peer, in the order it
    was queued, stopping at the first entry the peer does not take; the
    entries of a special kind (catch-ups) go after the notices, since they
    may need what the notices carry: a catch-up queued before a new epoch
    goes over a connection proven in that epoch, which the member can
    check only once it has the epoch's keys.

    :param special: how entries of kinds other than a plain group notice
        are delivered (a catch-up, say), by kind.
    :param after: what to do once an entry of a kind was delivered, by
        kind.
    :param undelivered: what to do when the peer was not reached (not
        refused, nor busy): errors it raises are logged, and the retry
        goes on.  An entry the peer answers busy
        (:class:`~digitalspring.multicast._commands.PeerBusy`) is tried
        again on the retry schedule.
    :param delays: the retry schedule, seconds before each retry (the last
        one repeats); :data:`RETRY_DELAYS` by default.
    """

    log = Logger()

    def __init__(
        self,
        clock: Any,
        pool: ConnectionPool,
        store: IStore,
        special: Mapping[str, Deliver],
        after: Mapping[str, Delivered],
        undelivered: Undelivered | None = None,
        random: Random | None = None,
        delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self._clock = clock
        self._delays = delays
        self._random = random or SystemRandom()
        self._pool = pool
        self._store = store
        self._special = dict(special)
        self._after = dict(after)
        self._undelivered = undelivered
        self._rlog = RateLimitedLog(self.log, clock)
        self._running = False
        self._peers: set[PeerID] = set()
        self._flushing: dict[PeerID, bool] = {}
        self._timers: dict[PeerID, IDelayedCall] = {}

    @property
    def timers(self) -> dict[PeerID, IDelayedCall]:
        """
        The timers held, by peer: one per peer something waits for, none
        when nothing does.
        """
        return dict(self._timers)

    async def start(self) -> None:
        """
        Read which peers something waits for, and try each at once.
        """
        self._running = True
        self.waiting(await self._store.outbox_peers())

    def stop(self) -> None:
        """
        Cancel every timer; flushes under way finish on their own.
        """
        self._running = False
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()

    def waiting(self, peers: Iterable[PeerID]) -> None:
        """
        Something was just queued for ``peers``: try them now.
        """
        for peer in peers:
            self._peers.add(peer)
            self._schedule(peer, 0)

    def retry_later(self, peer: PeerID) -> None:
        """
        Something was queued for ``peer`` because it could not be reached
        just now: try again on the retry schedule (or when it connects).
        """
        self._peers.add(peer)
        self._schedule(peer, self._jittered(self._delays[0]))

    def reachable(self, peer: PeerID) -> None:
        """
        ``peer`` connected, or was seen reachable: what waits for it goes
        at once, whatever the retry schedule said.
        """
        if peer in self._peers:
            self._schedule(peer, 0)

    def _schedule(self, peer: PeerID, delay: float) -> None:
        if not self._running:
            return
        call = self._timers.get(peer)
        if call is not None and call.active():
            if call.getTime() <= self._clock.seconds() + delay:
                return
            call.cancel()
        self._timers[peer] = self._clock.callLater(delay, self._flush, peer)

    def _jittered(self, delay: float) -> float:
        return delay * self._random.uniform(*JITTER)

    def _flush(self, peer: PeerID) -> None:
        self._timers.pop(peer, None)
        if peer in self._flushing:
            self._flushing[peer] = True
            return
        self._flushing[peer] = False
        Deferred.fromCoroutine(self._send(peer)).addErrback(self._failed).addBoth(
            self._flushed, peer
        )

    def _flushed(self, result: object, peer: PeerID) -> None:
        again = self._flushing.pop(peer, False)
        if again:
            self._flush(peer)

    def _failed(self, failure: Any) -> None:
        if closed_by_stopping(failure, self._running):
            # What the flush did not commit stays queued for the next start.
            self.log.info("the outbox stopped during a flush")
            return
        self.log.failure("the outbox", failure)

    async def _send(self, peer: PeerID) -> None:
        entries = await self._store.outbox(peer)
        notices = [e for e in entries if e.kind not in self._special]
        for entry in notices + [e for e in entries if e.kind in self._special]:
            refused = busy = False
            try:
                special = self._special.get(entry.kind)
                if special is not None:
                    delivered = await special(peer, entry.payload)
                else:
                    await self._pool.call(
                        peer, GroupNotice, kind=entry.kind, payload=entry.payload
                    )
                    delivered = True
            except NoticeRefused:
                self._rlog.info(
                    "outbox-refused",
                    "{peer} refused a group notice ({notice}); dropped it",
                    peer=str(peer),
                    notice=entry.kind,
                )
                delivered = refused = True
            except PeerBusy:
                # Reached, and asked to come back later.
                delivered = False
                busy = True
            except Exception:
                delivered = False
            if busy:
                self._schedule(peer, self._jittered(BUSY_RETRY))
                return
            if not delivered:
                await self._store.commit(CountAttempt(entry.entry_id))
                if self._undelivered is not None:
                    try:
                        await self._undelivered(peer, entries)
                    except Exception:
                        self.log.failure("after {peer} was not reached", peer=str(peer))
                if entry.attempts + 1 < MAX_ATTEMPTS:
                    delay = self._delays[min(entry.attempts, len(self._delays) - 1)]
                    self._schedule(peer, self._jittered(delay))
                return
            await self._store.commit(Dequeue(entry.entry_id))
            after = self._after.get(entry.kind)
            # Refused is not taken: an invitation refused leaves the peer
            # invited, not a member.
            if after is not None and not refused:
                await after(peer, entry.payload)
        self._peers.discard(peer)
