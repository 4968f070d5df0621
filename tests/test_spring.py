"""
The ``spring`` strategy: it passes the strategy conformance tests, is found
as a plugin and is the default, and moves a message through its members
rather than from the owner to each.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from digitalspring.multicast import (
    DEFAULT_STRATEGY,
    IMulticastStrategyPlugin,
    SpringStrategyPlugin,
    UploadBudget,
    get_strategy,
)
from digitalspring.multicast._spring_upload import MAX_WAITING
from digitalspring.multicast._spring_wire import SpringBusy
from digitalspring.testing import StrategyConformanceMixin


class SpringConformanceTests(StrategyConformanceMixin, SynchronousTestCase):
    def make_plugin(self) -> IMulticastStrategyPlugin:
        return SpringStrategyPlugin()


class SpringPluginTests(SynchronousTestCase):
    def test_found(self) -> None:
        """
        ``spring`` is an installed strategy plugin, a verified
        IMulticastStrategyPlugin, and the default strategy.
        """
        plugin = get_strategy("spring")
        self.assertIsInstance(plugin, SpringStrategyPlugin)
        verifyObject(IMulticastStrategyPlugin, plugin)
        self.assertEqual(DEFAULT_STRATEGY, "spring")


class UploadBudgetTests(SynchronousTestCase):
    def test_rate_kept(self) -> None:
        """
        Grants follow the rate: after a burst, 20 fragments of 100,000
        bytes at 100,000 bytes/s are granted over about 20 s, none early,
        and no timer is left once nothing waits.
        """
        clock = Clock()
        budget = UploadBudget(clock, 100_000, burst=100_000)
        granted: list[float] = []
        for _ in range(20):
            budget.reserve(100_000, 0.1, refuse=False).addCallback(
                lambda _: granted.append(clock.seconds())
            )
        while clock.getDelayedCalls():
            clock.advance(0.05)
        self.assertEqual(len(granted), 20)
        for i, when in enumerate(granted):
            # Tokens may go below zero by one grant: the i-th waits for i-1
            # fragments' worth of refill.
            self.assertGreaterEqual(when, (i - 1) * 1.0 - 1e-6)
        self.assertLess(granted[-1], 20.0)
        self.assertEqual(budget.granted, 20 * 100_000)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lowest_latency_first(self) -> None:
        """
        What waits goes to the peer of lowest latency first, whatever the
        order it was asked in.
        """
        clock = Clock()
        budget = UploadBudget(clock, 100_000, burst=100_000)
        budget.reserve(200_000, 0.0)
        order: list[float] = []
        for latency in (0.3, 0.1, 0.2):
            budget.reserve(1000, latency).addCallback(lambda _, seen=latency: order.append(seen))
        clock.pump([0.5] * 10)
        self.assertEqual(order, [0.1, 0.2, 0.3])

    def test_full_queue_refuses(self) -> None:
        """
        A request that finds :data:`MAX_WAITING` grants waiting is refused
        at once (BUSY: ask another holder), while the owner's own pushes
        (``refuse=False``) still wait.
        """
        clock = Clock()
        budget = UploadBudget(clock, 1000, burst=1000)
        budget.reserve(10_000, 0.1)
        for _ in range(MAX_WAITING):
            budget.reserve(1000, 0.1)
        self.assertRaises(SpringBusy, budget.reserve, 1000, 0.1)
        pushed = budget.reserve(1000, 0.1, refuse=False)
        self.assertEqual(budget.waiting, MAX_WAITING + 1)
        clock.pump([0.5] * 60)
        self.assertIsNone(self.successResultOf(pushed))
        self.assertEqual(budget.waiting, 0)
