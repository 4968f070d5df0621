# -*- test-case-name: tests.test_ratelimit -*-
"""
Log lines that a peer can cause, at a bounded rate.

A hostile peer can make a node refuse connections, frames or requests as fast
as it can send them; logging each refusal would let it fill the disk.  A
:class:`RateLimitedLog` lets a burst of lines of one kind through, then one per
interval, and says how many it held back with the next line it lets through.
The kinds are chosen by our code, never by a peer, so their number is bounded.

The work a peer can ask of a node is paced the same way: :class:`PeerRates`
keeps a token bucket per peer and one for all peers together, in front of
requests that cost a signature check or a write (DHT stores, key bundles,
sealed notices, notification boxes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from attrs import define, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel


@define
class _Bucket:
    tokens: float
    updated: float
    held_back: int = 0


class RateLimitedLog:
    """
    A token bucket per kind of line in front of a :class:`Logger`.

    :param log: where the lines that pass go.
    :param clock: tells the time.
    :param burst: how many lines of one kind pass at once.
    :param per_second: how many lines of one kind pass per second after
        the burst.
    """

    def __init__(
        self, log: Logger, clock: IReactorTime, burst: int = 10, per_second: float = 0.2
    ) -> None:
        self._log = log
        self._clock = clock
        self._burst = burst
        self._rate = per_second
        self._buckets: dict[str, _Bucket] = {}

    def emit(self, level: LogLevel, kind: str, format: str, **fields: Any) -> bool:
        """
        Log ``format`` with ``fields`` at ``level``, unless lines of ``kind``
        have used up their budget; a line that passes after some were held
        back carries their number as ``held_back`` and says so.

        :returns: whether the line was logged.
        """
        now = self._clock.seconds()
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = _Bucket(float(self._burst), now)
        else:
            bucket.tokens = min(
                float(self._burst), bucket.tokens + (now - bucket.updated) * self._rate
            )
            bucket.updated = now
        if bucket.tokens < 1.0:
            bucket.held_back += 1
            return False
        bucket.tokens -= 1.0
        held_back, bucket.held_back = bucket.held_back, 0
        if held_back:
            format += " ({held_back} more like this were not logged)"
        self._log.emit(level, format, log_kind=kind, held_back=held_back, **fields)
        return True

    def warn(self, kind: str, format: str, **fields: Any) -> bool:
        """
        :meth:`emit` at the warning level.
        """
        return self.emit(LogLevel.warn, kind, format, **fields)

    def info(self, kind: str, format: str, **fields: Any) -> bool:
        """
        :meth:`emit` at the info level.
        """
        return self.emit(LogLevel.info, kind, format, **fields)


@frozen
class Rate:
    """
    A token bucket's shape: ``burst`` at once, then ``per_second``.
    """

    burst: int
    per_second: float


#: Buckets remembered per :class:`TokenBuckets` (per peer, per source
#: address): 4096 of about 200 bytes each.
REMEMBERED = 4096


class TokenBuckets:
    """
    Token buckets by name, the :data:`REMEMBERED` most recently used.

    A name costs a peer nothing to make (a fresh key), so the buckets
    remembered are few: the least recently used is forgotten, and comes
    back full.  A bucket in front of them all (:class:`PeerRates`) is what
    binds a flood of fresh names.
    """

    def __init__(self, clock: IReactorTime, rate: Rate) -> None:
        self._clock = clock
        self._rate = rate
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def has(self, name: Hashable) -> bool:
        """
        Whether ``name``'s bucket holds a token.
        """
        return self._tokens(name) >= 1.0

    def take(self, name: Hashable) -> None:
        """
        Take a token from ``name``'s bucket (it may go below zero).
        """
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

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, name: Hashable) -> float:
        rate = self._rate
        found = self._buckets.get(name)
        if found is None:
            return float(rate.burst)
        tokens, updated = found
        elapsed: float = self._clock.seconds() - updated
        return min(float(rate.burst), tokens + elapsed * rate.per_second)


class PeerRates:
    """
    How often peers may ask one kind of work of this node: a bucket per
    peer and one for all peers together.

    :param peer: each peer's rate.
    :param total: the rate of all peers together.
    """

    def __init__(self, clock: IReactorTime, peer: Rate, total: Rate) -> None:
        self._peers = TokenBuckets(clock, peer)
        self._total = TokenBuckets(clock, total)

    def admit(self, peer: Hashable) -> str | None:
        """
        Take a token for a request of ``peer``, if both buckets have one.

        :returns: ``None`` if the request may go ahead, else which bucket
            is empty: ``"peer"`` or ``"total"``.
        """
        if not self._peers.has(peer):
            return "peer"
        if not self._total.has(""):
            return "total"
        self._peers.take(peer)
        self._total.take("")
        return None
