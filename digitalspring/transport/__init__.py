"""
Transports: how byte streams reach peers (tcp, tor, memory, or a plugin's).
"""

from ._clock import SimulatedCall, SimulatedClock
from ._interfaces import IOnionService, ITorControl, ITransport, ITransportPlugin
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
from ._tor import (
    ListenDescription,
    OnionAddress,
    OnionListeningPort,
    TorClientAddress,
    TorTransport,
    TorTransportPlugin,
)
from ._torbootstrap import BOOTSTRAP_WARNING, TorBootstrap, TorBootstrapWatch
from ._torcontrol import TxtorconControl, attach_tor, launch_tor
from ._torerrors import (
    OnionServiceUnreachable,
    TorNotFound,
    TorStreamFailed,
    TorStreamTimeout,
    TorUnavailable,
)
from ._torkey import onion_host, parse_onion_address

__all__ = [
    "BOOTSTRAP_WARNING",
    "IOnionService",
    "ITorControl",
    "ITransport",
    "ITransportPlugin",
    "InvalidAddress",
    "ListenDescription",
    "MemoryAddress",
    "MemoryConnection",
    "MemoryHost",
    "MemoryListeningPort",
    "MemoryNetwork",
    "MemoryTransport",
    "MemoryTransportPlugin",
    "OnionAddress",
    "OnionListeningPort",
    "OnionServiceUnreachable",
    "SimulatedCall",
    "SimulatedClock",
    "TCPTransport",
    "TCPTransportPlugin",
    "TorBootstrap",
    "TorBootstrapWatch",
    "TorClientAddress",
    "TorNotFound",
    "TorStreamFailed",
    "TorStreamTimeout",
    "TorTransport",
    "TorTransportPlugin",
    "TorUnavailable",
    "TransportConfigError",
    "TransportContext",
    "TransportError",
    "TxtorconControl",
    "UnknownTransport",
    "attach_tor",
    "get_transport_plugin",
    "launch_tor",
    "onion_host",
    "parse_onion_address",
    "split_address",
    "transport_plugins",
]
