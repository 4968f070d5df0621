"""
Test support other packages can reuse: the transport conformance tests, and
ways to drive a simulated clock.
"""

from ..transport._clock import drive
from ._transport import (
    AcceptingFactory,
    RecordingProtocol,
    TransportConformanceMixin,
    scenario,
)

__all__ = [
    "AcceptingFactory",
    "RecordingProtocol",
    "TransportConformanceMixin",
    "drive",
    "scenario",
]
