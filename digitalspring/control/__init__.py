"""
The node's local control API, and the client the ``dspring`` command uses.
"""

from ._api import (
    CONTROL_FILE_NAME,
    CONTROL_SOCKET_NAME,
    DEFAULT_CONTROL,
    IDLE_TIMEOUT,
    MAX_BODY,
    MAX_CONNECTIONS,
    MAX_IN_FLIGHT,
    BadControlEndpoint,
    BadRequest,
    ControlService,
    check_control_endpoint,
    peer_from_body,
    unix_control,
)
from ._client import ControlClient, ControlError, NodeGone, NodeNotRunning
from ._events import KEEPALIVE, MAX_QUEUED_BYTES, MAX_STREAMS, EventSink, StreamHandler

__all__ = [
    "CONTROL_FILE_NAME",
    "CONTROL_SOCKET_NAME",
    "DEFAULT_CONTROL",
    "IDLE_TIMEOUT",
    "KEEPALIVE",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_IN_FLIGHT",
    "MAX_QUEUED_BYTES",
    "MAX_STREAMS",
    "BadControlEndpoint",
    "BadRequest",
    "ControlClient",
    "ControlError",
    "ControlService",
    "EventSink",
    "NodeGone",
    "NodeNotRunning",
    "StreamHandler",
    "check_control_endpoint",
    "peer_from_body",
    "unix_control",
]
