# -*- test-case-name: tests.test_dht_hostile -*-
"""
How fast peers may make a node work for them: token buckets per peer, per
source address and in total.

A store costs a signature check and a decode; quotas bound what a node
keeps, but not how often it is asked.  Each store takes a token from the
storing peer's bucket, its source address's and the node's; when any of
them is empty the store is refused before any other work.  A peer ID costs
nothing to make, so the buckets remembered per peer and per source are
few (the least recently used is forgotten, and comes back full): the
source's and the node's buckets are what bind a flood of fresh keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from attrs import frozen

#: Buckets remembered per kind (peers, source addresses): 4096 of about
#: 200 bytes each.
REMEMBERED = 4096


@frozen
class Rate:
    """
    A token bucket's shape: ``burst`` at once, then ``per_second``.
    """

    burst: int
    per_second: float


@frozen
class StoreRates:
    """
    How many stores a node takes.

    A node holds about ``k`` records per node of the network and receives
    each one's republication hourly, and a newcomer's neighbours hand it
    the records it should hold at once: a few stores a second at most,
    in bursts of up to a peer's quota.  The limits leave room for that ten
    times over, and hold the work of a flood to a few percent of a core
    (a store of a 4 KB record costs about 0.3 ms).

    :ivar peer: stores from one peer.
    :ivar source: stores from one source address.
    :ivar total: stores in all.
    """

    peer: Rate = Rate(64, 2.0)
    source: Rate = Rate(128, 8.0)
    total: Rate = Rate(256, 32.0)


class _Buckets:
    """
    Token buckets by name, the :data:`REMEMBERED` most recently used.
    """

    def __init__(self, clock: Any, rate: Rate) -> None:
        self._clock = clock
        self._rate = rate
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def has(self, name: Hashable) -> bool:
        return self._tokens(name) >= 1.0

    def take(self, name: Hashable) -> None:
        buckets = self._buckets
        now = self._clock.seconds()
        buckets[name] = (self._tokens(name) - 1.0, now)
        buckets.move_to_end(name)
        if len(buckets) > REMEMBERED:
            buckets.popitem(last=False)
        # A bucket full again is the same as one never used: forget the
        # least recently used while it is (two at most, so a take stays
        # cheap), and the map holds only the names that took tokens in the
        # last ``burst / per_second`` seconds, not REMEMBERED of them.
        rate = self._rate
        for _ in range(2):
            oldest = next(iter(buckets))
            tokens, updated = buckets[oldest]
            if oldest == name or tokens + (now - updated) * rate.per_second < rate.burst:
                break
            del buckets[oldest]

    def _tokens(self, name: Hashable) -> float:
        rate = self._rate
        found = self._buckets.get(name)
        if found is None:
            return float(rate.burst)
        tokens, updated = found
        elapsed: float = self._clock.seconds() - updated
        return min(float(rate.burst), tokens + elapsed * rate.per_second)


class StoreLimiter:
    """
    The buckets of :class:`StoreRates` on one clock.
    """

    def __init__(self, clock: Any, rates: StoreRates) -> None:
        self._peers = _Buckets(clock, rates.peer)
        self._sources = _Buckets(clock, rates.source)
        self._total = _Buckets(clock, rates.total)

    def admit(self, peer: Hashable, source: str | None) -> str | None:
        """
        Take a token for a store by ``peer`` from ``source``, if every
        bucket has one.

        :returns: ``None`` if the store may go ahead, else which bucket is
            empty: ``"peer"``, ``"source"`` or ``"total"``.
        """
        checks: list[tuple[str, _Buckets, Hashable]] = [
            ("peer", self._peers, peer),
            ("total", self._total, ""),
        ]
        if source is not None:
            checks.insert(1, ("source", self._sources, source))
        for reason, buckets, name in checks:
            if not buckets.has(name):
                return reason
        for _, buckets, name in checks:
            buckets.take(name)
        return None
