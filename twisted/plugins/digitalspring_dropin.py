"""
The twistd plugin ``dspring`` and Digital Spring's built-in transports.

Kept trivial on purpose: an import error here is silent and breaks every
``getPlugins`` caller.
"""

from twisted.application.service import ServiceMaker

dspring = ServiceMaker(
    "Digital Spring node",
    "digitalspring.tap",
    "A private peer-to-peer node: Noise channels, Kademlia, multicast groups.",
    "dspring",
)
