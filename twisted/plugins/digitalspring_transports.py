"""
Digital Spring's built-in transports, ``tcp``, ``memory`` and ``tor``, as plugins.

Kept trivial on purpose: an import error here is silent and breaks every
``getPlugins`` caller.
"""

from digitalspring.transport import MemoryTransportPlugin, TCPTransportPlugin, TorTransportPlugin

tcp = TCPTransportPlugin()
memory = MemoryTransportPlugin()
tor = TorTransportPlugin()
