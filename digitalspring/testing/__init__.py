"""
Test support other packages can reuse: the transport conformance tests, ways
to drive a simulated clock, a fake tor control, and a private Tor network on
loopback (see ``docs/tor-test-network.rst``).
"""

from ..transport._clock import drive
from ._store import StoreConformanceMixin
from ._strategy import GroupNetwork, StrategyConformanceMixin
from ._torcontract import TorControlContractMixin
from ._torcontrol import (
    NamespacedEndpoint,
    PublishedOnion,
    bootstrap_progress,
    close_control,
    connect_control,
    publish_onion_service,
    socks_client_endpoint,
)
from ._torecho import EchoMeasurements, echo_factory, measure_echo
from ._torfake import FakeOnionNetwork, FakeOnionService, FakeTorControl
from ._torfixture import enter_shared_tor_network, shared_tor_network
from ._torkeys import KeyTemplate, load_or_create_template
from ._tornamespace import NamespaceUnavailable, NetworkNamespace, isolated_namespace_or_none
from ._tornet import PrivateTorNetwork, StartupTimings, TorClient
from ._torprocess import (
    TorNetworkError,
    TorNotInstalled,
    TorProcess,
    find_tor_binaries,
    tor_binary_or_skip,
)
from ._transport import (
    AcceptingFactory,
    RecordingProtocol,
    TransportConformanceMixin,
    scenario,
)

__all__ = [
    "AcceptingFactory",
    "EchoMeasurements",
    "FakeOnionNetwork",
    "FakeOnionService",
    "FakeTorControl",
    "GroupNetwork",
    "KeyTemplate",
    "NamespaceUnavailable",
    "NamespacedEndpoint",
    "NetworkNamespace",
    "PrivateTorNetwork",
    "PublishedOnion",
    "RecordingProtocol",
    "StartupTimings",
    "StoreConformanceMixin",
    "StrategyConformanceMixin",
    "TorClient",
    "TorControlContractMixin",
    "TorNetworkError",
    "TorNotInstalled",
    "TorProcess",
    "TransportConformanceMixin",
    "bootstrap_progress",
    "close_control",
    "connect_control",
    "drive",
    "echo_factory",
    "enter_shared_tor_network",
    "find_tor_binaries",
    "isolated_namespace_or_none",
    "load_or_create_template",
    "measure_echo",
    "publish_onion_service",
    "scenario",
    "shared_tor_network",
    "socks_client_endpoint",
    "tor_binary_or_skip",
]
