"""
Digital Spring's built-in multicast strategies, as plugins.

None yet: ``unicast`` comes with the multicast service, ``spring`` after it.
Each will be one line here, ``unicast = UnicastStrategyPlugin()``, with the
plugin imported from ``digitalspring.multicast``.

Kept trivial on purpose: an import error here is silent and breaks every
``getPlugins`` caller.
"""
