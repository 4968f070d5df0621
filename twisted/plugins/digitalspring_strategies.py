"""
Digital Spring's built-in multicast strategies, as plugins: ``spring``
(the default) and ``unicast`` (the baseline).

Kept trivial on purpose: an import error here is silent and breaks every
``getPlugins`` caller.
"""

from digitalspring.multicast import SpringStrategyPlugin, UnicastStrategyPlugin

spring = SpringStrategyPlugin()
unicast = UnicastStrategyPlugin()
