# -*- test-case-name: tests.test_control -*-
"""
The node's local control API: HTTP and JSON on loopback, for the ``dspring``
command.

On start the node writes ``DATA_DIR/control.json`` (mode 0600) with the
API's address and a fresh random token; every request must carry
``Authorization: Bearer TOKEN``.  The file is removed on a clean stop.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID, atomic_write

CONTROL_FILE_NAME = "control.json"
DEFAULT_CONTROL = "tcp:0:interface=127.0.0.1"
_MAX_BODY = 64 * 1024


class BadRequest(DigitalSpringError):
    """
    A control request is malformed.
    """


def _json_body(request: Request) -> dict[str, Any]:
    assert request.content is not None
    raw = request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise BadRequest("the request body is too large")
    try:
        body = json.loads(raw.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body is not a JSON object")
    return body


def peer_from_body(body: dict[str, Any]) -> PeerID:
    """
    The peer ID named by a request's ``peer``.

    :raises BadRequest: when it is missing or invalid.
    """
    try:
        return PeerID.parse(str(body.get("peer", "")))
    except InvalidPeerID as e:
        raise BadRequest(str(e)) from None


class _Endpoint(Resource):
    """
    One JSON endpoint: checks the token, runs a handler, answers JSON.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        token: bytes,
        method: bytes,
        handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    ) -> None:
        super().__init__()
        self._token = token
        self._method = method
        self._handler = handler

    def render(self, request: Request) -> int | bytes:
        request.setHeader(b"content-type", b"application/json")
        offered = request.getHeader(b"authorization") or b""
        if not hmac.compare_digest(offered, b"Bearer " + self._token):
            return self._answer(request, 401, {"error": "bad or missing control token"})
        if request.method != self._method:
            return self._answer(request, 405, {"error": "method not allowed"})
        try:
            body = _json_body(request) if self._method == b"POST" else {}
        except BadRequest as e:
            return self._answer(request, 400, {"error": str(e)})
        d = Deferred.fromCoroutine(self._run(body))
        d.addCallbacks(
            lambda result: self._finish(request, 200, result),
            lambda failure: self._failed(request, failure),
        )
        return NOT_DONE_YET

    async def _run(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._handler(body)

    def _answer(self, request: Request, code: int, document: dict[str, Any]) -> bytes:
        request.setResponseCode(code)
        return json.dumps(document).encode("utf-8") + b"\n"

    def _finish(self, request: Request, code: int, document: dict[str, Any]) -> None:
        if request.finished or request.channel is None:
            return
        request.write(self._answer(request, code, document))
        request.finish()

    def _failed(self, request: Request, failure: Failure) -> None:
        if isinstance(failure.value, DigitalSpringError):
            code = 400 if isinstance(failure.value, BadRequest) else 502
            self._finish(request, code, {"error": str(failure.value)})
        else:
            self.log.failure("control request failed", failure)
            self._finish(request, 500, {"error": "internal error; see the node's log"})


class ControlService(Service):
    """
    Serves the control API while the node runs.

    :param routes: ``{path: (method, handler)}``; a handler takes the JSON
        body and returns the JSON answer (raising a ``DigitalSpringError``
        for an error the user reads).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        data_dir: FilePath[str],
        routes: Mapping[str, tuple[bytes, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]],
        endpoint: str = DEFAULT_CONTROL,
    ) -> None:
        self.reactor = reactor
        self.data_dir = data_dir
        self.routes = routes
        self.endpoint = endpoint
        self._port: IListeningPort | None = None
        self._starting: Deferred[IListeningPort] | None = None

    @property
    def control_file(self) -> FilePath[str]:
        return self.data_dir.child(CONTROL_FILE_NAME)

    def startService(self) -> None:
        super().startService()
        token = secrets.token_hex(32).encode("ascii")
        root = Resource()
        v1 = Resource()
        root.putChild(b"v1", v1)
        for path, (method, handler) in self.routes.items():
            v1.putChild(path.encode("ascii"), _Endpoint(token, method, handler))
        site = Site(root)
        site.noisy = False
        self._starting = serverFromString(self.reactor, self.endpoint).listen(site)
        self._starting.addCallback(self._listening, token)
        self._starting.addErrback(
            lambda f: self.log.error(
                "cannot serve the control API on {endpoint}: {reason}",
                endpoint=self.endpoint,
                reason=f.getErrorMessage(),
            )
        )

    def _listening(self, port: IListeningPort, token: bytes) -> None:
        self._port = port
        host = port.getHost()
        document = {
            "version": 1,
            "url": f"http://{host.host}:{host.port}/v1/",  # type: ignore[attr-defined]
            "token": token.decode("ascii"),
        }
        atomic_write(
            self.control_file, json.dumps(document).encode("utf-8") + b"\n", replace=True
        )
        self.log.info("control API at {url}", url=document["url"])

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.control_file.exists():
            self.control_file.remove()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None
