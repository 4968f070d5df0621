"""
The ``spring`` strategy: it passes the strategy conformance tests, is found
as a plugin and is the default, and moves a message through its members
rather than from the owner to each.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from digitalspring.multicast import (
    DEFAULT_STRATEGY,
    IMulticastStrategyPlugin,
    SpringStrategyPlugin,
    get_strategy,
)
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
