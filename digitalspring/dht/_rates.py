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

from collections.abc import Hashable
from typing import Any

from attrs import frozen

from .._ratelimit import REMEMBERED, Rate, TokenBuckets

__all__ = ["REMEMBERED", "Rate", "StoreLimiter", "StoreRates"]


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


class StoreLimiter:
    """
    The buckets of :class:`StoreRates` on one clock.
    """

    def __init__(self, clock: Any, rates: StoreRates) -> None:
        self._peers = TokenBuckets(clock, rates.peer)
        self._sources = TokenBuckets(clock, rates.source)
        self._total = TokenBuckets(clock, rates.total)

    def admit(self, peer: Hashable, source: str | None) -> str | None:
        """
        Take a token for a store by ``peer`` from ``source``, if every
        bucket has one.

        :returns: ``None`` if the store may go ahead, else which bucket is
            empty: ``"peer"``, ``"source"`` or ``"total"``.
        """
        checks: list[tuple[str, TokenBuckets, Hashable]] = [
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
