# -*- test-case-name: tests.test_memory_network -*-
"""
A simulated clock that stays fast with hundreds of thousands of pending calls.

:class:`twisted.internet.task.Clock` keeps its calls in a list that it sorts
again on every ``callLater`` and after every call it runs, which is fine for a
unit test and hopeless for a simulation of ten thousand nodes.
:class:`SimulatedClock` keeps them in a binary heap instead: ``callLater``,
``cancel`` and ``reset`` are O(log n) (cancelled and rescheduled entries are
dropped lazily, and the heap is compacted when they pile up).

It differs from ``task.Clock`` in one deliberate way: :meth:`advance` runs
each call at its own due time (``seconds()`` reads the call's time while it
runs, and whatever it schedules is relative to that), as a discrete-event
simulator must; ``task.Clock`` jumps to the end of the step first.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from itertools import count
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

# Below this many dead heap entries compaction is not worth its O(n).
_COMPACT_MINIMUM = 1024


@implementer(IDelayedCall)
class SimulatedCall:
    """
    A call scheduled on a :class:`SimulatedClock`.
    """

    __slots__ = ("_clock", "_seq", "args", "called", "cancelled", "func", "kw", "time")

    def __init__(
        self,
        clock: SimulatedClock,
        time: float,
        seq: int,
        func: Callable[..., object],
        args: tuple[object, ...],
        kw: dict[str, object],
    ) -> None:
        self._clock = clock
        self._seq = seq
        self.time = time
        self.func = func
        self.args = args
        self.kw = kw
        self.called = False
        self.cancelled = False

    def getTime(self) -> float:
        """
        :returns: the simulated time at which the call will run.
        """
        return self.time

    def cancel(self) -> None:
        """
        Unschedule the call.

        :raises AlreadyCancelled: when it was already cancelled.
        :raises AlreadyCalled: when it already ran.
        """
        if self.cancelled:
            raise AlreadyCancelled
        if self.called:
            raise AlreadyCalled
        self.cancelled = True
        self._clock._forget()
        # Drop references at once: a cancelled timeout must not keep a
        # connection alive until its heap entry is popped.
        self.func = _nothing
        self.args = ()
        self.kw = {}

    def reset(self, secondsFromNow: float) -> None:
        """
        Reschedule the call to run ``secondsFromNow`` after the clock's
        current time.

        :raises AlreadyCancelled: when it was cancelled.
        :raises AlreadyCalled: when it already ran.
        """
        self._move(self._clock.seconds() + secondsFromNow)

    def delay(self, secondsLater: float) -> None:
        """
        Run the call ``secondsLater`` later than it is scheduled (earlier if
        negative).

        :raises AlreadyCancelled: when it was cancelled.
        :raises AlreadyCalled: when it already ran.
        """
        self._move(self.time + secondsLater)

    def _move(self, time: float) -> None:
        if self.cancelled:
            raise AlreadyCancelled
        if self.called:
            raise AlreadyCalled
        self._clock._reschedule(self, time)

    def active(self) -> bool:
        """
        :returns: whether the call has neither run nor been cancelled.
        """
        return not (self.called or self.cancelled)

    def __repr__(self) -> str:
        state = "called" if self.called else "cancelled" if self.cancelled else "pending"
        return f"<SimulatedCall {state} at {self.time!r}: {self.func!r}>"


def _nothing(*args: object, **kw: object) -> None:
    """
    What a cancelled call would run: nothing.
    """


@implementer(IReactorTime)
class SimulatedClock:
    """
    A deterministic :class:`~twisted.internet.interfaces.IReactorTime` for
    simulations: nothing happens until :meth:`advance`,
    :meth:`run_until_idle` or :meth:`run_until` moves time forward.

    Calls due at the same time run in the order they were scheduled (or last
    rescheduled).  An exception raised by a call propagates out of
    :meth:`advance`, as with ``task.Clock``; the call counts as run.
    """

    def __init__(self, start: float = 0.0) -> None:
        """
        :param start: the value :meth:`seconds` returns at first.
        """
        self._now = float(start)
        self._heap: list[tuple[float, int, SimulatedCall]] = []
        self._seq = count()
        self._dead = 0
        self.calls_run = 0
        """How many calls have run so far (a cost measure for benchmarks)."""

    def seconds(self) -> float:
        """
        :returns: the current simulated time, in seconds.
        """
        return self._now

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall:
        """
        Schedule ``callable(*args, **kw)`` to run ``delay`` seconds from now.

        :returns: the :class:`SimulatedCall`, to cancel or move it.
        """
        seq = next(self._seq)
        time = self._now + delay
        call = SimulatedCall(self, time, seq, callable, args, kw)
        heapq.heappush(self._heap, (time, seq, call))
        return call

    def getDelayedCalls(self) -> list[IDelayedCall]:
        """
        :returns: every pending call, soonest first.
        """
        return [
            call for (_, seq, call) in sorted(self._heap) if call._seq == seq and call.active()
        ]

    def pending(self) -> int:
        """
        :returns: how many calls are waiting to run (cheaper than
            ``len(getDelayedCalls())``).
        """
        return len(self._heap) - self._dead

    def next_time(self) -> float | None:
        """
        :returns: the time of the soonest pending call, or ``None`` when
            nothing is pending.
        """
        self._drop_dead()
        return self._heap[0][0] if self._heap else None

    def advance(self, amount: float) -> None:
        """
        Move time forward by ``amount`` seconds, running every call that falls
        due on the way, each at its own time.
        """
        if amount < 0:
            raise ValueError(f"cannot move time backwards by {amount!r}")
        self._run_through(self._now + amount)

    def pump(self, timings: Iterable[float]) -> None:
        """
        Advance by each of ``timings`` in turn.
        """
        for amount in timings:
            self.advance(amount)

    def run_until_idle(self, limit: float | None = None) -> float:
        """
        Run calls until none is pending, or until simulated time would pass
        ``limit`` seconds from now (a guard against periodic calls that never
        stop).

        :returns: the simulated time when it stopped.
        """
        deadline = None if limit is None else self._now + limit
        while True:
            when = self.next_time()
            if when is None or (deadline is not None and when > deadline):
                break
            self._run_through(when)
        return self._now

    def run_until(self, condition: Callable[[], object], limit: float = 3600.0) -> bool:
        """
        Run calls one due time at a time until ``condition()`` is true.

        :param limit: the most simulated seconds to run for.
        :returns: whether ``condition()`` became true; it is false when
            nothing more was pending or ``limit`` was reached first.
        """
        deadline = self._now + limit
        while not condition():
            when = self.next_time()
            if when is None or when > deadline:
                return False
            self._run_through(when)
        return True

    def _run_through(self, until: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= until:
            time, seq, call = pop(heap)
            if call._seq != seq or call.cancelled:
                self._dead -= 1
                continue
            if time > self._now:
                self._now = time
            call.called = True
            self.calls_run += 1
            call.func(*call.args, **call.kw)
        if until > self._now:
            self._now = until

    def _drop_dead(self) -> None:
        heap = self._heap
        while heap:
            _, seq, call = heap[0]
            if call._seq == seq and not call.cancelled:
                return
            heapq.heappop(heap)
            self._dead -= 1

    def _forget(self) -> None:
        """
        One heap entry died (its call was cancelled or rescheduled).
        """
        self._dead += 1
        if self._dead > _COMPACT_MINIMUM and self._dead * 2 > len(self._heap):
            # In place: a run in progress (_run_through, _drop_dead) holds
            # this very list, and must go on popping from the compacted heap
            # rather than from a stale copy whose calls would run again.
            heap = self._heap
            heap[:] = [
                entry for entry in heap if entry[2]._seq == entry[1] and not entry[2].cancelled
            ]
            heapq.heapify(heap)
            self._dead = 0

    def _reschedule(self, call: SimulatedCall, time: float) -> None:
        seq = next(self._seq)
        call._seq = seq
        call.time = time
        heapq.heappush(self._heap, (time, seq, call))
        self._forget()


def drive(clock: Any, deferred: Deferred[Any] | None = None, limit: float = 3600.0) -> bool:
    """
    Advance a simulated clock (a :class:`SimulatedClock`, ``task.Clock`` or
    ``MemoryReactorClock``) one due call at a time until ``deferred`` has a
    result, or, without one, until no call is pending.

    :param limit: the most simulated seconds to run for.
    :returns: whether ``deferred`` has a result (without one: whether the
        clock is idle).
    """

    def done() -> bool:
        return deferred.called if deferred is not None else False

    if isinstance(clock, SimulatedClock):
        if clock.run_until(done, limit):
            return True
        return deferred is None and clock.next_time() is None
    deadline = clock.seconds() + limit
    while not done():
        pending = [c.getTime() for c in clock.getDelayedCalls() if c.active()]
        if not pending:
            return deferred is None
        now = clock.seconds()
        when = max(min(pending), now)
        if when > deadline:
            return False
        step = when - now
        # now + (when - now) can round to just below when; never stall there.
        while now + step < when:
            step = math.nextafter(step, math.inf)
        clock.advance(step)
    return True
