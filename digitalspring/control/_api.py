# -*- test-case-name: tests.test_control -*-
"""
The node's local control API: HTTP and JSON for the ``dspring`` command, on
loopback or on a UNIX socket, never on an address other machines can reach.

On start the node writes ``DATA_DIR/control.json`` (mode 0600) with the
API's address and a fresh random token; every request must carry
``Authorization: Bearer TOKEN``, and a ``Host`` header that names the
address the API is bound to, which is what keeps a web page from reaching
it through DNS rebinding.  The file is removed on a clean stop.

Everything a local program can make the API hold is bounded: the request
line and headers (Twisted's own limits), the body (:data:`MAX_BODY`), the
connections open at once (:data:`MAX_CONNECTIONS`), how long one may idle
(:data:`IDLE_TIMEOUT`), the requests being handled at once
(:data:`MAX_IN_FLIGHT`), and the event streams open at once
(:data:`~digitalspring.control._events.MAX_STREAMS`, each with a bounded
queue: see :mod:`digitalspring.control._events`).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from io import BytesIO
from typing import Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID, atomic_write
from ._events import MAX_STREAMS, EventSink, StreamHandler

CONTROL_FILE_NAME = "control.json"

#: Where the control API listens unless told otherwise: a port the system
#: picks, on loopback.
DEFAULT_CONTROL = "tcp:0:interface=127.0.0.1"

#: The UNIX socket in the data directory that an onion-only node serves the
#: control API on unless told otherwise.
CONTROL_SOCKET_NAME = "control.sock"

#: The largest request body, in bytes.  The largest real request (a ping) is
#: under a hundred bytes; a longer body is answered 413 as soon as its
#: ``Content-Length`` (or its running length, when chunked) passes this,
#: and the connection is closed without reading the rest.
MAX_BODY = 64 * 1024

#: Connections open at once.  One more is closed as soon as it is accepted.
#: The ``dspring`` command opens one at a time.
MAX_CONNECTIONS = 32

#: Requests being handled at once (a ping or a DHT lookup can take seconds).
#: One more is answered 503 without being run.
MAX_IN_FLIGHT = 16

#: Seconds a connection may stay open without a request being handled.
IDLE_TIMEOUT = 60

_ENDPOINT_FORMS = "tcp:PORT:interface=127.0.0.1, tcp6:PORT:interface=\\:\\:1 or unix:PATH"


class BadRequest(DigitalSpringError):
    """
    A control request is malformed.
    """


class BadControlEndpoint(DigitalSpringError):
    """
    The control API cannot listen there: it listens on loopback or on a UNIX
    socket only (and only on a UNIX socket with --onion-only), so that no
    other machine can reach it.
    """


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, or "" for every interface


def check_control_endpoint(description: str, onion_only: bool = False) -> str:
    """
    Check that the control API may listen on a server endpoint string:
    ``tcp`` or ``tcp6`` on a loopback IP address, or ``unix``; with
    ``onion_only``, ``unix`` alone (a TCP port, even on loopback, tells
    every program on the machine that a node runs here, and lets any of
    them knock).

    :returns: ``description``.
    :raises BadControlEndpoint: saying what is wrong and what to give.
    """
    kind = description.partition(":")[0]
    if kind not in ("tcp", "tcp6", "unix"):
        raise BadControlEndpoint(
            f"the control API listens on {_ENDPOINT_FORMS}, not on {description!r}"
        )
    if onion_only and kind != "unix":
        raise BadControlEndpoint(
            f"with --onion-only the control API listens on a UNIX socket (unix:PATH), "
            f"not on {description!r}: a TCP port, even on loopback, shows every program "
            f"on this machine that a node runs here"
        )
    try:
        endpoint = serverFromString(None, description)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise BadControlEndpoint(f"bad control endpoint {description!r}: {e}") from None
    if isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint):
        interface = str(endpoint._interface)
        if not _is_loopback(interface):
            where = f"on {interface}" if interface else "on every interface"
            raise BadControlEndpoint(
                f"the control API listens on loopback only ({_ENDPOINT_FORMS}); "
                f"{description!r} would listen {where}"
            )
    else:
        assert isinstance(endpoint, UNIXServerEndpoint)
    return description


def unix_control(data_dir: FilePath[str]) -> str:
    """
    The endpoint of a control API on ``DATA_DIR/control.sock``, a socket
    that only the node's user may open.
    """
    path = data_dir.child(CONTROL_SOCKET_NAME).path
    escaped = path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
    return f"unix:{escaped}:mode=600"


def allowed_hosts(address: IAddress) -> frozenset[bytes]:
    """
    The ``Host`` header values that name the address the API is bound to:
    ``127.0.0.1:PORT`` (or ``[::1]:PORT``) and ``localhost:PORT``, without
    the port on port 80 as HTTP clients omit it there; for a UNIX socket,
    ``localhost`` or no header at all.
    """
    if isinstance(address, UNIXAddress):
        return frozenset({b"", b"localhost"})
    assert isinstance(address, IPv4Address | IPv6Address)
    literal = f"[{address.host}]" if isinstance(address, IPv6Address) else address.host
    names = {literal.lower(), "localhost"}
    hosts = {f"{name}:{address.port}" for name in names}
    if address.port == 80:
        hosts |= names
    return frozenset(host.encode("ascii") for host in hosts)


def request_host(request: Request) -> bytes | None:
    """
    The request's ``Host`` header, lower-cased: ``b""`` when it has none,
    ``None`` when it has several.
    """
    hosts = request.requestHeaders.getRawHeaders(b"host", [])
    if len(hosts) > 1:
        return None
    return hosts[0].strip().lower() if hosts else b""


def _json_body(request: Request) -> dict[str, Any]:
    assert request.content is not None
    try:
        body = json.loads(request.content.read().decode("utf-8") or "{}")
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


def _document(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode("utf-8") + b"\n"


class BoundedRequest(Request):
    """
    A request whose body is kept in memory, :meth:`body_limit` bytes at
    most (:data:`MAX_BODY`).

    Twisted would spool any body to a temporary file, however long; here a
    longer one is answered 413 once its announced or received length passes
    the bound, the connection is closed, and the request never runs.
    """

    _received = 0
    _refused = False
    _limit = MAX_BODY

    def body_limit(self) -> int:
        """
        The longest body this request may carry, asked once its headers
        are in (a subclass may allow more to some requests).
        """
        return MAX_BODY

    def gotLength(self, length: int | None) -> None:
        self.content = BytesIO()
        self._limit = self.body_limit()
        if length is not None and length > self._limit:
            # Before Twisted answers "100 Continue" to a body we refuse.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse_too_large()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._refuse_too_large()
        else:
            assert self.content is not None
            self.content.write(data)

    def process(self) -> None:
        if not self._refused:
            super().process()

    def _refuse_too_large(self) -> None:
        self._refused = True
        self.content = BytesIO()
        body = _document({"error": f"the request body is over {self._limit} bytes"})
        assert self.channel is not None and self.channel.transport is not None
        # The response machinery serves requests that have been received in
        # full, which this one never will be: answer on the wire, as Twisted
        # itself answers a malformed request.
        self.channel.transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body) + body
        )
        self.channel.loseConnection()


class _ControlSite(Site):
    """
    The API's site: bounded requests, and no access log (the ``dspring``
    command's requests are the user's own, and a flood of them must not fill
    the node's log).
    """

    def log(self, request: http.Request) -> None:
        pass


class BoundedConnections(WrappingFactory):
    """
    Closes each connection past :data:`MAX_CONNECTIONS` as soon as it is
    accepted.
    """

    noisy = False

    # WrappingFactory narrows Factory's "or None", which closes the connection.
    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper | None:  # type: ignore[override]
        if len(self.protocols) >= MAX_CONNECTIONS:
            return None
        return super().buildProtocol(addr)


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class RouteDispatcher:
    """
    Runs the routes and event streams of an API whose requests have been
    let in (the control API's by its token, the web client's by its
    session): checks the route and its method, reads the JSON body, runs
    the handler within :data:`MAX_IN_FLIGHT` and answers JSON, or opens an
    event stream within :data:`MAX_STREAMS`.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        routes: Mapping[str, tuple[bytes, Handler]],
        streams: Mapping[str, StreamHandler],
    ) -> None:
        self._reactor = reactor
        self._routes = {path.encode("ascii"): route for path, route in routes.items()}
        self._streams = {path.encode("ascii"): stream for path, stream in streams.items()}
        self._in_flight = 0
        self.open_streams: set[EventSink] = set()

    def dispatch(self, request: Request, name: bytes) -> int | bytes:
        """
        Answer ``request`` with the route or stream called ``name``.
        """
        request.setHeader(b"content-type", b"application/json")
        stream = self._streams.get(name)
        if stream is not None:
            return self._stream(request, stream)
        route = self._routes.get(name)
        if route is None:
            return answer(request, 404, {"error": "no such request"})
        method, handler = route
        if request.method != method:
            request.setHeader(b"allow", method)
            return answer(request, 405, {"error": "method not allowed"})
        try:
            body = _json_body(request) if method == b"POST" else {}
        except BadRequest as e:
            return answer(request, 400, {"error": str(e)})
        return self.run(request, handler, body)

    def run(self, request: Request, handler: Handler, body: dict[str, Any]) -> int | bytes:
        """
        Run ``handler`` on ``body`` within :data:`MAX_IN_FLIGHT`, and
        answer what it returns as JSON.
        """
        if self._in_flight >= MAX_IN_FLIGHT:
            return answer(request, 503, {"error": "too many requests at once; try again"})
        self._in_flight += 1
        d = Deferred.fromCoroutine(self._run(handler, body))
        d.addCallbacks(
            lambda result: self._finish(request, 200, result),
            lambda failure: self._failed(request, failure),
        )
        return NOT_DONE_YET

    def _stream(self, request: Request, handler: StreamHandler) -> int | bytes:
        """
        Open an event stream: the handler subscribes a sink, which then
        holds the response open until the client or the node ends it.
        """
        if request.method != b"GET":
            request.setHeader(b"allow", b"GET")
            return answer(request, 405, {"error": "method not allowed"})
        if len(self.open_streams) >= MAX_STREAMS:
            return answer(request, 503, {"error": f"{MAX_STREAMS} event streams are open already"})
        query = {
            key.decode("utf-8", "replace"): values[-1].decode("utf-8", "replace")
            for key, values in (request.args or {}).items()
            if values
        }
        sink = EventSink(self._reactor, request)
        self.open_streams.add(sink)
        unsubscribe: list[Callable[[], None]] = []

        def ended(result: object) -> None:
            self.open_streams.discard(sink)
            sink.close()
            for stop in unsubscribe:
                stop()

        # Asked now: a request that ends before the handler returns would
        # never say so later.
        request.notifyFinish().addBoth(ended)

        def subscribed(stop: Callable[[], None]) -> None:
            if sink.closed:
                stop()
                return
            unsubscribe.append(stop)
            sink.start()

        def refused(failure: Failure) -> None:
            self.open_streams.discard(sink)
            self._failed(request, failure)

        d: Deferred[Callable[[], None]] = Deferred.fromCoroutine(handler(query, sink))
        d.addCallbacks(subscribed, refused)
        return NOT_DONE_YET

    def close_streams(self) -> None:
        """
        End every event stream (the node is stopping).
        """
        for sink in list(self.open_streams):
            sink.close()

    async def _run(self, handler: Handler, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await handler(body)
        finally:
            # Counted until the work ends, not until the client leaves.
            self._in_flight -= 1

    def _finish(self, request: Request, code: int, document: dict[str, Any]) -> None:
        if request.finished or request.channel is None:
            return
        body = answer(request, code, document)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    def _failed(self, request: Request, failure: Failure) -> None:
        if isinstance(failure.value, DigitalSpringError):
            code = 400 if isinstance(failure.value, BadRequest) else 502
            self._finish(request, code, {"error": str(failure.value)})
        else:
            self.log.failure("request failed", failure)
            self._finish(request, 500, {"error": "internal error; see the node's log"})


def answer(request: Request, code: int, document: dict[str, Any]) -> bytes:
    """
    Answer ``code``, with ``document`` as the JSON body returned.
    """
    request.setResponseCode(code)
    return _document(document)


class _ControlAPI(Resource):
    """
    Every path of the API: checks the ``Host`` header and the token, then
    lets its :class:`RouteDispatcher` answer.

    :ivar hosts: the ``Host`` header values accepted (see
        :func:`allowed_hosts`); none until the API listens.
    """

    isLeaf = True

    def __init__(
        self,
        reactor: Any,
        token: bytes,
        routes: Mapping[str, tuple[bytes, Handler]],
        streams: Mapping[str, StreamHandler],
    ) -> None:
        super().__init__()
        self._authorization = b"Bearer " + token
        self.dispatcher = RouteDispatcher(reactor, routes, streams)
        self.hosts: frozenset[bytes] = frozenset()

    def render(self, request: Request) -> int | bytes:
        request.setHeader(b"content-type", b"application/json")
        if request_host(request) not in self.hosts:
            return answer(request, 403, {"error": "the Host header does not name the control API"})
        offered = request.getHeader(b"authorization") or b""
        if not hmac.compare_digest(offered, self._authorization):
            return answer(request, 401, {"error": "bad or missing control token"})
        path = request.postpath or []
        name = path[1] if len(path) == 2 and path[0] == b"v1" else b""
        return self.dispatcher.dispatch(request, name)


class ControlService(Service):
    """
    Serves the control API while the node runs.

    :param routes: ``{path: (method, handler)}``; a handler takes the JSON
        body and returns the JSON answer (raising a ``DigitalSpringError``
        for an error the user reads).
    :param streams: ``{path: handler}`` of the event streams, answered to
        ``GET`` (see :data:`~digitalspring.control._events.StreamHandler`).
    :param endpoint: a server endpoint string that
        :func:`check_control_endpoint` accepts.
    :raises BadControlEndpoint: when it does not.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        data_dir: FilePath[str],
        routes: Mapping[str, tuple[bytes, Handler]],
        endpoint: str = DEFAULT_CONTROL,
        streams: Mapping[str, StreamHandler] | None = None,
    ) -> None:
        self.reactor = reactor
        self.data_dir = data_dir
        self.routes = routes
        self.streams = dict(streams or {})
        self.endpoint = check_control_endpoint(endpoint)
        self._api: _ControlAPI | None = None
        self._port: IListeningPort | None = None
        self._starting: Deferred[IListeningPort] | None = None

    @property
    def control_file(self) -> FilePath[str]:
        return self.data_dir.child(CONTROL_FILE_NAME)

    def startService(self) -> None:
        super().startService()
        token = secrets.token_hex(32).encode("ascii")
        api = self._api = _ControlAPI(self.reactor, token, self.routes, self.streams)
        site = _ControlSite(
            api, requestFactory=BoundedRequest, timeout=IDLE_TIMEOUT, reactor=self.reactor
        )
        site.noisy = False
        factory = BoundedConnections(site)
        self._starting = serverFromString(self.reactor, self.endpoint).listen(factory)
        self._starting.addCallbacks(
            self._listening,
            self._cannot_listen,
            callbackArgs=(api, token),
            errbackArgs=(factory,),
        )

    def _cannot_listen(self, failure: Failure, factory: BoundedConnections) -> None:
        # A UNIX port starts its factory before it binds, and leaves it
        # started (the site's clock ticking) when binding fails.
        if factory.numPorts:
            factory.doStop()
        self.log.error(
            "cannot serve the control API on {endpoint}: {reason}",
            endpoint=self.endpoint,
            reason=failure.getErrorMessage(),
        )

    def _listening(self, port: IListeningPort, api: _ControlAPI, token: bytes) -> None:
        self._port = port
        address = port.getHost()
        api.hosts = allowed_hosts(address)
        document: dict[str, Any] = {"version": 1}
        if isinstance(address, UNIXAddress):
            assert address.name is not None
            name = address.name
            document["url"] = "http://localhost/v1/"
            document["unix"] = name.decode("utf-8") if isinstance(name, bytes) else name
        else:
            assert isinstance(address, IPv4Address | IPv6Address)
            host = f"[{address.host}]" if isinstance(address, IPv6Address) else address.host
            document["url"] = f"http://{host}:{address.port}/v1/"
        document["token"] = token.decode("ascii")
        atomic_write(self.control_file, _document(document), replace=True)
        self.log.info(
            "control API at {url}{on}",
            url=document["url"],
            on=f" on {document['unix']}" if "unix" in document else "",
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.control_file.exists():
            self.control_file.remove()
        if self._api is not None:
            self._api.dispatcher.close_streams()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None
