# -*- test-case-name: tests.test_ratelimit -*-
"""
Log lines that a peer can cause, at a bounded rate.

A hostile peer can make a node refuse connections, frames or requests as fast
as it can send them; logging each refusal would let it fill the disk.  A
:class:`RateLimitedLog` lets a burst of lines of one kind through, then one per
interval, and says how many it held back with the next line it lets through.
The kinds are chosen by our code, never by a peer, so their number is bounded.
"""

from __future__ import annotations

from typing import Any

from attrs import define
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
