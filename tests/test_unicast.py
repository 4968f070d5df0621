"""
The ``unicast`` strategy passes the strategy conformance tests, and is
found as a plugin.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from digitalspring.multicast import (
    IMulticastStrategyPlugin,
    UnicastStrategyPlugin,
    get_strategy,
)
from digitalspring.testing import StrategyConformanceMixin


class UnicastConformanceTests(StrategyConformanceMixin, SynchronousTestCase):
    def make_plugin(self) -> IMulticastStrategyPlugin:
        return UnicastStrategyPlugin()


class UnicastPluginTests(SynchronousTestCase):
    def test_found(self) -> None:
        """
        ``unicast`` is an installed strategy plugin, and a verified
        IMulticastStrategyPlugin.
        """
        plugin = get_strategy("unicast")
        self.assertIsInstance(plugin, UnicastStrategyPlugin)
        verifyObject(IMulticastStrategyPlugin, plugin)
