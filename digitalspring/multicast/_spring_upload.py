# -*- test-case-name: tests.test_spring -*-
"""
A node's upload budget for the ``spring`` strategy: the bytes per second it
serves to other members, shared by all its groups.

Fragments go out as a token bucket allows.  What cannot go at once waits
in a short queue ordered by the latency of the peer it goes to (lowest
first, as the whitepaper's priorities ask); a request that finds the queue
full is refused at once, so that its requester asks another holder
instead of waiting behind everyone else.  The owner's own pushes wait
however full the queue is: they are the transmission's start.

It holds a timer only while something waits.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

from twisted.internet.defer import Deferred, succeed

from ._spring_wire import SpringBusy

#: The default upload budget, in bytes per second: 10 Mbit/s, a common
#: home uplink.  ``--upload-budget`` sets another.
DEFAULT_UPLOAD_BUDGET = 1_250_000

#: How many fragments may wait for the budget before requests are refused.
MAX_WAITING = 8


class UploadBudget:
    """
    A token bucket of ``rate`` bytes per second with a priority queue.

    :param clock: an ``IReactorTime``.
    :param rate: bytes per second.
    :param burst: the most bytes that can go at once after a quiet spell.
    """

    def __init__(self, clock: Any, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"an upload budget is a positive number of bytes/s, not {rate!r}")
        self.clock = clock
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 4, 130_000))
        self._tokens = self.burst
        self._updated = clock.seconds()
        self._waiting: list[tuple[float, int, int, Deferred[None]]] = []
        self._order = itertools.count()
        self._timer: Any = None
        #: Bytes granted so far.
        self.granted = 0

    def _refill(self) -> None:
        now = self.clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    @property
    def waiting(self) -> int:
        """
        How many grants wait.
        """
        return len(self._waiting)

    def reserve(self, size: int, latency: float, refuse: bool = True) -> Deferred[None]:
        """
        Wait until ``size`` bytes may go.

        :param latency: the receiver's latency: lower goes first.
        :param refuse: refuse when the queue is full, rather than wait.
        :returns: a Deferred that fires once they may go.
        :raises SpringBusy: (at once) when ``refuse`` and the queue is full.
        """
        self._refill()
        if not self._waiting and self._tokens >= 0:
            self._tokens -= size
            self.granted += size
            return succeed(None)
        if refuse and len(self._waiting) >= MAX_WAITING:
            raise SpringBusy("the upload queue is full")
        d: Deferred[None] = Deferred()
        heapq.heappush(self._waiting, (latency, next(self._order), size, d))
        self._schedule()
        return d

    def _schedule(self) -> None:
        if self._timer is not None or not self._waiting:
            return
        delay = -self._tokens / self.rate + 1e-6 if self._tokens < 0 else 0.0
        self._timer = self.clock.callLater(delay, self._release)

    def _release(self) -> None:
        self._timer = None
        self._refill()
        while self._waiting and self._tokens >= 0:
            _, _, size, d = heapq.heappop(self._waiting)
            self._tokens -= size
            self.granted += size
            d.callback(None)
        self._schedule()
