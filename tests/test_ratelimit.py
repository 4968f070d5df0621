"""
Tests for :mod:`digitalspring._ratelimit`: lines a peer can cause, bounded.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from digitalspring._ratelimit import RateLimitedLog


class RateLimitedLogTests(SynchronousTestCase):
    """
    :class:`RateLimitedLog` passes a burst, then a steady trickle, and counts
    what it held back.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.clock = Clock()
        self.log = RateLimitedLog(
            Logger(observer=self.events.append), self.clock, burst=3, per_second=0.5
        )

    def test_flood_is_bounded(self) -> None:
        """
        10,000 lines of one kind in one instant write only the burst.
        """
        passed = sum(self.log.warn("refused", "refused {n}", n=n) for n in range(10_000))
        self.assertEqual((passed, len(self.events)), (3, 3))
        self.assertEqual(self.events[0]["log_level"], LogLevel.warn)

    def test_held_back_are_counted(self) -> None:
        """
        The first line after a quiet spell says how many were held back.
        """
        for _ in range(10):
            self.log.info("refused", "refused")
        self.clock.advance(2.0)
        self.assertTrue(self.log.info("refused", "refused"))
        self.assertEqual(self.events[-1]["held_back"], 7)
        self.assertIn("{held_back} more like this", self.events[-1]["log_format"])

    def test_steady_rate(self) -> None:
        """
        Over 100 s at one attempt per 10 ms, lines pass at the set rate
        (0.5 per second) after the burst.
        """
        passed = 0
        for _ in range(10_000):
            passed += self.log.warn("refused", "refused")
            self.clock.advance(0.01)
        self.assertTrue(3 + 49 <= passed <= 3 + 51, passed)

    def test_kinds_are_separate(self) -> None:
        """
        One kind using up its budget does not silence another.
        """
        for _ in range(10):
            self.log.warn("a", "a")
        self.assertTrue(self.log.warn("b", "b"))
