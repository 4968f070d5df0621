"""
The web client: pages a browser on this machine opens to use the node,
served by the node itself on loopback (``twistd dspring --web ENDPOINT``),
logged in to through a one-time URL that ``dspring web`` prints.
"""

from ._service import (
    DEFAULT_WEB,
    BadWebEndpoint,
    WebNotListening,
    WebService,
    check_web_endpoint,
)
from ._sessions import LOGIN_LIFETIME, MAX_LOGINS, MAX_SESSIONS, SESSION_IDLE, Session, Sessions
from ._site import CSP, FILE_CSP, MAX_UPLOAD, MAX_UPLOADS, PAGE_ROUTES, WebResource

__all__ = [
    "CSP",
    "DEFAULT_WEB",
    "FILE_CSP",
    "LOGIN_LIFETIME",
    "MAX_LOGINS",
    "MAX_SESSIONS",
    "MAX_UPLOAD",
    "MAX_UPLOADS",
    "PAGE_ROUTES",
    "SESSION_IDLE",
    "BadWebEndpoint",
    "Session",
    "Sessions",
    "WebNotListening",
    "WebResource",
    "WebService",
    "check_web_endpoint",
]
