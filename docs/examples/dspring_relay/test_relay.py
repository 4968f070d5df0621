"""
The ``relay`` strategy passes Digital Spring's strategy conformance tests
(``trial dspring_relay``).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from digitalspring.multicast import IMulticastStrategyPlugin
from digitalspring.testing import StrategyConformanceMixin

from . import RelayStrategyPlugin, split


class RelayConformanceTests(StrategyConformanceMixin, SynchronousTestCase):
    def make_plugin(self) -> IMulticastStrategyPlugin:
        return RelayStrategyPlugin()


class SplitTests(SynchronousTestCase):
    def test_split(self) -> None:
        """
        Members are split into two subtrees of about equal size, none
        empty.
        """
        self.assertEqual(split([]), [])
        self.assertEqual(split([1]), [[1]])  # type: ignore[list-item]
        self.assertEqual(split([1, 2, 3, 4, 5]), [[1, 2, 3], [4, 5]])  # type: ignore[list-item]
