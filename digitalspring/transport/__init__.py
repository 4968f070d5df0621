"""
Transports: how byte streams reach peers (tcp, tor, memory, or a plugin's).
"""

from ._interfaces import ITransport, ITransportPlugin
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

__all__ = [
    "ITransport",
    "ITransportPlugin",
    "InvalidAddress",
    "TransportConfigError",
    "TransportContext",
    "TransportError",
    "UnknownTransport",
    "get_transport_plugin",
    "split_address",
    "transport_plugins",
]
