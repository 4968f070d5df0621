"""
The node's local control API, and the client the ``dspring`` command uses.
"""

from ._api import CONTROL_FILE_NAME, DEFAULT_CONTROL, BadRequest, ControlService, peer_from_body
from ._client import ControlClient, NodeNotRunning

__all__ = [
    "CONTROL_FILE_NAME",
    "DEFAULT_CONTROL",
    "BadRequest",
    "ControlClient",
    "ControlService",
    "NodeNotRunning",
    "peer_from_body",
]
