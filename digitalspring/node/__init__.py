"""
The node: one peer's service tree, and the services that keep it listening.
"""

from ._listen import ListeningService
from ._node import ListenFailed, Node, NoDHT

__all__ = ["ListenFailed", "ListeningService", "NoDHT", "Node"]
