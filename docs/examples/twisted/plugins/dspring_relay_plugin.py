"""
The ``relay`` multicast strategy, found by Digital Spring through Twisted's
plugin system.  Kept to this one line: an import error here is silent.
"""

from dspring_relay import RelayStrategyPlugin

relay = RelayStrategyPlugin()
