"""
Digital Spring's built-in transports, ``tcp`` and ``memory``, as plugins.

Kept trivial on purpose: an import error here is silent and breaks every
``getPlugins`` caller.
"""

from digitalspring.transport import MemoryTransportPlugin, TCPTransportPlugin

tcp = TCPTransportPlugin()
memory = MemoryTransportPlugin()
