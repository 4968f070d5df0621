"""
Digital Spring's built-in multicast strategies, as plugins: ``unicast``
now, ``spring`` after it.

Kept trivial on purpose: an import error here is silent and breaks every
``getPlugins`` caller.
"""

from digitalspring.multicast import UnicastStrategyPlugin

unicast = UnicastStrategyPlugin()
