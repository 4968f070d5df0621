# -*- test-case-name: tests.test_strategy_plugins -*-
"""
Finding multicast strategies: the plugin registry.
"""

from __future__ import annotations

from twisted.plugin import getPlugins

from ..errors import DigitalSpringError
from ._interfaces import IMulticastStrategyPlugin

#: The strategy of a new group unless its owner names another: the
#: whitepaper's transmission phase.
DEFAULT_STRATEGY = "spring"


class UnknownStrategy(DigitalSpringError):
    """
    No installed multicast strategy has the name a group asks for.
    """

    def __init__(self, name: str, installed: list[str]) -> None:
        super().__init__(
            f"unknown multicast strategy {name!r}; installed strategies: "
            + (", ".join(sorted(installed)) or "none")
        )
        self.name = name
        self.installed = sorted(installed)


def strategy_plugins() -> dict[str, IMulticastStrategyPlugin]:
    """
    Every installed multicast strategy plugin, by name.

    When two plugins claim one name, the first found wins.
    """
    found: dict[str, IMulticastStrategyPlugin] = {}
    for plugin in getPlugins(IMulticastStrategyPlugin):
        found.setdefault(plugin.name, plugin)
    return found


def get_strategy(name: str) -> IMulticastStrategyPlugin:
    """
    The installed multicast strategy plugin called ``name``.

    :raises UnknownStrategy: naming the installed ones, when there is none
        by that name.
    """
    plugins = strategy_plugins()
    try:
        return plugins[name]
    except KeyError:
        raise UnknownStrategy(name, list(plugins)) from None
