"""
Digital Spring: private peer-to-peer communication with no middleman.

The layers live in sub-packages (see ``docs/architecture.rst``): identity,
transports, the secure channel, the peer directory, multicast, offline
delivery and storage.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
