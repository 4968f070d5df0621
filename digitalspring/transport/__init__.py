"""
Transports: how byte streams reach peers (tcp, tor, memory, or a plugin's).
"""

from ._clock import SimulatedCall, SimulatedClock
from ._interfaces import ITransport, ITransportPlugin
from ._memory import (
    MemoryAddress,
    MemoryConnection,
    MemoryHost,
    MemoryListeningPort,
    MemoryNetwork,
    MemoryTransport,
    MemoryTransportPlugin,
)
from ._plugins import (
    InvalidAddress,
    TransportConfigError,
    TransportContext,
    TransportError,
    UnknownTransport,
    get_transport_plugin,
    split_address,
    transport_plugins,
)
from ._tcp import TCPTransport, TCPTransportPlugin

__all__ = [
    "ITransport",
    "ITransportPlugin",
    "InvalidAddress",
    "MemoryAddress",
    "MemoryConnection",
    "MemoryHost",
    "MemoryListeningPort",
    "MemoryNetwork",
    "MemoryTransport",
    "MemoryTransportPlugin",
    "SimulatedCall",
    "SimulatedClock",
    "TCPTransport",
    "TCPTransportPlugin",
    "TransportConfigError",
    "TransportContext",
    "TransportError",
    "UnknownTransport",
    "get_transport_plugin",
    "split_address",
    "transport_plugins",
]
