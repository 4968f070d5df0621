"""
The node: one peer's service tree, and the services that keep it listening.
"""

from ._listen import ListeningService
from ._lock import DataDirInUse, DataDirLock
from ._node import ListenFailed, Node, NoDHT, StartFailed

__all__ = [
    "DataDirInUse",
    "DataDirLock",
    "ListenFailed",
    "ListeningService",
    "NoDHT",
    "Node",
    "StartFailed",
]
