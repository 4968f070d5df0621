"""
Tests for the node's control API: where it may listen, who may call it (the
token, the ``Host`` header), the bounds on what a local program can make it
hold, and each of the node's routes through the client that the ``dspring``
command uses.

The API is served by the real ``ControlService`` on the real reactor, on
127.0.0.1, ``::1`` or a UNIX socket; the attacks are raw HTTP written on a
socket, so that nothing a client library would add or refuse hides them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.control import (
    CONTROL_FILE_NAME,
    DEFAULT_CONTROL,
    IDLE_TIMEOUT,
    KEEPALIVE,
    MAX_BODY,
    MAX_CONNECTIONS,
    MAX_IN_FLIGHT,
    MAX_QUEUED_BYTES,
    MAX_STREAMS,
    BadControlEndpoint,
    BadRequest,
    ControlClient,
    ControlError,
    ControlService,
    EventSink,
    NodeGone,
    check_control_endpoint,
    unix_control,
)
from digitalspring.errors import DigitalSpringError
from digitalspring.tap import Options

from ._nodes import node_in_process


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class _Unreachable(DigitalSpringError):
    """
    The test peer cannot be reached.
    """


# Where the API may listen.


class ControlEndpointTests(SynchronousTestCase):
    """
    The control API listens on loopback or a UNIX socket, and on a UNIX
    socket only with ``--onion-only``.
    """

    def test_loopback_and_unix_accepted(self) -> None:
        """
        TCP on a loopback IP address, IPv4 or IPv6, and UNIX sockets are
        accepted as they are.
        """
        for good in [
            DEFAULT_CONTROL,
            "tcp:17999:interface=127.0.0.1",
            "tcp:port=17999:interface=127.0.0.1",
            "tcp:17999:interface=127.0.0.9",
            "tcp:17999:interface=\\:\\:1",
            "tcp6:17999:interface=\\:\\:1",
            "unix:/run/dspring/control.sock:mode=600",
        ]:
            self.assertEqual(check_control_endpoint(good), good)

    def test_non_loopback_refused(self) -> None:
        """
        ``--control tcp:17999``, which listened on every interface, is
        refused, and so is every endpoint another machine could reach or
        that is not TCP or UNIX: the error says what to give instead.
        """
        for bad in [
            "tcp:17999",
            "tcp:17999:interface=0.0.0.0",
            "tcp:17999:0.0.0.0",
            "tcp:17999:0.0.0.0:50",
            "tcp:17999:interface=192.0.2.1",
            "tcp:17999:interface=localhost",
            "tcp6:17999",
            "tcp6:17999:interface=\\:\\:",
            "tcp6:17999:interface=\\:\\:ffff\\:127.0.0.1",
            "ssl:17999:interface=127.0.0.1",
            "systemd:domain=INET:index=0",
            "onion:17999",
            "nonsense",
        ]:
            with self.assertRaises(BadControlEndpoint, msg=bad) as caught:
                check_control_endpoint(bad)
            self.assertIn("127.0.0.1", str(caught.exception))

    def test_malformed_refused(self) -> None:
        """
        An endpoint Twisted cannot parse is a ``BadControlEndpoint`` too,
        not a traceback.
        """
        for bad in ["tcp:http", "tcp", "tcp:1:interface=127.0.0.1:backlog=x", "unix"]:
            self.assertRaises(BadControlEndpoint, check_control_endpoint, bad)

    def test_onion_only_wants_unix(self) -> None:
        """
        With ``onion_only`` even a loopback TCP port is refused (any program
        on the machine could find the node there); a UNIX socket is fine.
        """
        for bad in [DEFAULT_CONTROL, "tcp6:0:interface=\\:\\:1"]:
            with self.assertRaises(BadControlEndpoint, msg=bad) as caught:
                check_control_endpoint(bad, onion_only=True)
            self.assertIn("unix:PATH", str(caught.exception))
        good = "unix:/run/dspring/control.sock"
        self.assertEqual(check_control_endpoint(good, onion_only=True), good)

    def test_service_refuses(self) -> None:
        """
        ``ControlService`` itself refuses a non-loopback endpoint, however
        it was built.
        """
        self.assertRaises(
            BadControlEndpoint,
            ControlService,
            _reactor(),
            FilePath(self.mktemp()),
            {},
            "tcp:17999",
        )

    def test_unix_control_escapes(self) -> None:
        """
        The default socket of an onion-only node is ``control.sock`` in its
        data directory, for its user only, whatever characters the
        directory's path holds.
        """
        data_dir = FilePath("/srv/a:b=c\\d")
        description = unix_control(data_dir)
        self.assertEqual(check_control_endpoint(description, onion_only=True), description)
        from twisted.internet.endpoints import serverFromString

        endpoint = serverFromString(None, description)
        self.assertEqual(endpoint._address, "/srv/a:b=c\\d/control.sock")
        self.assertEqual(endpoint._mode, 0o600)


class IdleTimeoutTests(SynchronousTestCase):
    """
    A connection that sends nothing is not kept for ever.
    """

    def test_idle_connection_closed(self) -> None:
        """
        A connection left idle is closed after ``IDLE_TIMEOUT`` seconds on
        the node's own clock (Twisted's default is twelve hours).
        """
        reactor = MemoryReactorClock()
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        service = ControlService(reactor, data_dir, {})
        service.startService()
        self.addCleanup(service.stopService)
        [(_, factory, _, interface)] = reactor.tcpServers
        self.assertEqual(interface, "127.0.0.1")
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        reactor.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        reactor.advance(1)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))


class TwistdControlOptionTests(SynchronousTestCase):
    """
    ``twistd dspring --control``.
    """

    def _parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), *argv])
        return options

    def test_defaults(self) -> None:
        """
        By default the API listens on a loopback port; with
        ``--onion-only``, on ``DATA_DIR/control.sock``.
        """
        self.assertEqual(self._parse()["control"], DEFAULT_CONTROL)
        options = self._parse("--onion-only")
        self.assertEqual(options["control"], unix_control(options["data-dir"]))

    def test_refused_at_parsing(self) -> None:
        """
        A control endpoint on every interface, or a TCP one with
        ``--onion-only``, is a usage error with one clear line, before
        anything starts.
        """
        for argv in [
            ["--control", "tcp:17999"],
            ["--control", "tcp:17999:interface=0.0.0.0"],
            ["--onion-only", "--control", "tcp:17999:interface=127.0.0.1"],
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as caught:
                self._parse(*argv)
            self.assertEqual(len(str(caught.exception).splitlines()), 1)

    def test_accepted(self) -> None:
        """
        A loopback port, or a UNIX socket with ``--onion-only``, is kept
        as given.
        """
        options = self._parse("--control", "tcp:17999:interface=127.0.0.1")
        self.assertEqual(options["control"], "tcp:17999:interface=127.0.0.1")
        options = self._parse("--onion-only", "--control", "unix:/run/ds.sock")
        self.assertEqual(options["control"], "unix:/run/ds.sock")


# Who may call it, and what it holds.


class _Raw(Protocol):
    """
    Writes one request and collects all the server sends until it closes.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(b"".join(self.received))


def _response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """
    The status, headers and JSON body of a whole HTTP response.
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return int(status.split()[1]), headers, json.loads(body) if body else None


def _request(
    method: str = "GET",
    path: str = "/v1/status",
    host: str | None = None,
    token: str | None = None,
    body: bytes | None = None,
    extra: tuple[str, ...] = (),
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Connection: close"]
    if host is not None:
        lines.append(f"Host: {host}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class _API:
    """
    A ``ControlService`` on the real reactor with routes that record what
    they are asked.
    """

    def __init__(self, data_dir: FilePath[str], endpoint: str) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.waiting: list[Deferred[dict[str, Any]]] = []
        self.all_waiting: Deferred[None] = Deferred()

        def route(name: str, answer: Callable[[dict[str, Any]], Any]) -> Any:
            async def handler(body: dict[str, Any]) -> dict[str, Any]:
                self.calls.append((name, body))
                result: dict[str, Any] = await answer(body)
                return result

            return handler

        async def status(body: dict[str, Any]) -> dict[str, Any]:
            return {"calls": len(self.calls)}

        async def record(body: dict[str, Any]) -> dict[str, Any]:
            return {"got": body}

        def wait(body: dict[str, Any]) -> Deferred[dict[str, Any]]:
            d: Deferred[dict[str, Any]] = Deferred()
            self.waiting.append(d)
            if len(self.waiting) == MAX_IN_FLIGHT:
                self.all_waiting.callback(None)
            return d

        async def refuse(body: dict[str, Any]) -> dict[str, Any]:
            raise BadRequest("size is a number of bytes from 0 to 1024")

        async def unreachable(body: dict[str, Any]) -> dict[str, Any]:
            raise _Unreachable("no address is known for that peer")

        async def crash(body: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("a bug")

        routes = {
            "status": (b"GET", route("status", status)),
            "record": (b"POST", route("record", record)),
            "wait": (b"POST", route("wait", wait)),
            "refuse": (b"POST", route("refuse", refuse)),
            "unreachable": (b"POST", route("unreachable", unreachable)),
            "crash": (b"POST", route("crash", crash)),
        }
        self.data_dir = data_dir
        self.service = ControlService(_reactor(), data_dir, routes, endpoint)

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.data_dir.child(CONTROL_FILE_NAME).getContent())
        return document

    @property
    def token(self) -> str:
        return str(self.document["token"])

    @property
    def port(self) -> int:
        return int(self.document["url"].rsplit(":", 1)[1].split("/")[0])

    def endpoint(self) -> IStreamClientEndpoint:
        reactor = _reactor()
        if "unix" in self.document:
            return UNIXClientEndpoint(reactor, self.document["unix"])
        if self.document["url"].startswith("http://["):
            return TCP6ClientEndpoint(reactor, "::1", self.port)
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)

    async def send(self, data: bytes) -> tuple[int, dict[str, str], Any]:
        protocol = _Raw(data)
        await connectProtocol(self.endpoint(), protocol)
        return _response(await protocol.done)


class ControlAPITests(TestCase):
    """
    The API on 127.0.0.1: every refusal is answered JSON and runs nothing.
    """

    async def start(self, endpoint: str = DEFAULT_CONTROL) -> _API:
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        return await self._start(data_dir, endpoint)

    async def _start(self, data_dir: FilePath[str], endpoint: str) -> _API:
        api = _API(data_dir, endpoint)
        api.service.startService()
        self.addCleanup(api.service.stopService)
        assert api.service._starting is not None
        await api.service._starting
        return api

    def host(self, api: _API) -> str:
        return f"127.0.0.1:{api.port}"

    async def test_control_file(self) -> None:
        """
        The node publishes the API's URL and a 64-hex-digit token in a file
        only its user can read, and removes it on stop.
        """
        api = await self.start()
        control = api.data_dir.child(CONTROL_FILE_NAME)
        self.assertEqual(stat.S_IMODE(os.stat(control.path).st_mode), 0o600)
        self.assertEqual(api.document["url"], f"http://127.0.0.1:{api.port}/v1/")
        self.assertEqual(len(bytes.fromhex(api.token)), 32)
        await api.service.stopService()
        self.assertFalse(control.exists())

    async def test_token_required(self) -> None:
        """
        A request without the token, or with a wrong one (same length, one
        digit off, longer, or another scheme), is answered 401 and runs
        nothing; the right token is answered.
        """
        api = await self.start()
        token = api.token
        flipped = ("1" if token[0] == "0" else "0") + token[1:]
        body = b'{"x": 1}'
        for wrong in [None, "", flipped, token + "0", token[:-1]]:
            code, _, answer = await api.send(
                _request("POST", "/v1/record", self.host(api), wrong, body)
            )
            self.assertEqual((code, answer), (401, {"error": "bad or missing control token"}))
        code, _, answer = await api.send(
            _request(
                "POST",
                "/v1/record",
                self.host(api),
                None,
                body,
                (f"Authorization: Basic {token}",),
            )
        )
        self.assertEqual(code, 401)
        self.assertEqual(api.calls, [])
        code, headers, answer = await api.send(
            _request("POST", "/v1/record", self.host(api), token, body)
        )
        self.assertEqual((code, answer), (200, {"got": {"x": 1}}))
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(api.calls, [("record", {"x": 1})])

    async def test_host_header_rebinding(self) -> None:
        """
        A request whose ``Host`` names anything but the bound address (what
        a browser sends after a DNS rebinding attack: the attacker's own
        name, on the API's port or not) is refused 403 and runs nothing,
        even with the right token; the bound address and ``localhost`` on
        its port pass, in any case.
        """
        api = await self.start()
        port = api.port
        for host in [
            f"evil.example:{port}",
            "evil.example",
            f"127.0.0.1.nip.io:{port}",
            f"localhost.evil.example:{port}",
            f"127.0.0.1:{port + 1 if port < 65535 else port - 1}",
            "127.0.0.1",
            "localhost",
            f"[::1]:{port}",
            f"127.0.0.2:{port}",
            "",
        ]:
            code, _, answer = await api.send(
                _request("POST", "/v1/record", host, api.token, b"{}")
            )
            self.assertEqual(code, 403, host)
            self.assertEqual(answer, {"error": "the Host header does not name the control API"})
        self.assertEqual(api.calls, [])
        for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}"]:
            code, _, _ = await api.send(_request("POST", "/v1/record", host, api.token, b"{}"))
            self.assertEqual(code, 200, host)
        self.assertEqual(len(api.calls), 3)

    async def test_host_header_missing_or_repeated(self) -> None:
        """
        On TCP a request with no ``Host`` header, or with two (a good one
        and a bad one, in either order), is refused.
        """
        api = await self.start()
        good, bad = f"Host: {self.host(api)}", "Host: evil.example"
        for extra in [(), (good, bad), (bad, good)]:
            code, _, _ = await api.send(
                _request("POST", "/v1/record", None, api.token, b"{}", extra)
            )
            self.assertEqual(code, 403, extra)
        self.assertEqual(api.calls, [])

    async def test_body_too_large_announced(self) -> None:
        """
        A request that announces a terabyte body is answered 413 at once,
        from its headers alone (the test never sends a byte of the body),
        and the connection is closed; nothing runs.
        """
        api = await self.start()
        code, headers, answer = await api.send(
            _request(
                "POST",
                "/v1/record",
                self.host(api),
                api.token,
                None,
                ("Content-Length: 1000000000000", "Expect: 100-continue"),
            )
        )
        self.assertEqual(code, 413)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(answer, {"error": f"the request body is over {MAX_BODY} bytes"})
        self.assertEqual(api.calls, [])

    async def test_body_too_large_chunked(self) -> None:
        """
        A chunked body, which announces no length, is refused 413 once it
        passes the bound; nothing runs.
        """
        api = await self.start()
        chunk = b"x" * 4096
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(16))
        last = b"1\r\n" + b"x"
        head = _request(
            "POST",
            "/v1/record",
            self.host(api),
            api.token,
            None,
            ("Transfer-Encoding: chunked",),
        )
        self.assertEqual(16 * len(chunk), MAX_BODY)
        code, _, answer = await api.send(head + chunks + last)
        self.assertEqual(code, 413)
        self.assertEqual(answer, {"error": f"the request body is over {MAX_BODY} bytes"})
        self.assertEqual(api.calls, [])

    async def test_body_at_the_bound(self) -> None:
        """
        A body of exactly the bound is read and answered.
        """
        api = await self.start()
        padding = "x" * (MAX_BODY - len('{"pad": ""}'))
        body = json.dumps({"pad": padding}).encode()
        self.assertEqual(len(body), MAX_BODY)
        code, _, answer = await api.send(
            _request("POST", "/v1/record", self.host(api), api.token, body)
        )
        self.assertEqual(code, 200)
        self.assertEqual(answer, {"got": {"pad": padding}})

    async def test_bad_json(self) -> None:
        """
        A body that is not UTF-8 JSON, or not a JSON object, is answered
        400 with the reason, and runs nothing.
        """
        api = await self.start()
        for body, reason in [
            (b"{", "the request body is not JSON"),
            (b"\xff\xfe", "the request body is not JSON"),
            (b"[1, 2]", "the request body is not a JSON object"),
            (b'"peer"', "the request body is not a JSON object"),
        ]:
            code, _, answer = await api.send(
                _request("POST", "/v1/record", self.host(api), api.token, body)
            )
            self.assertEqual((code, answer), (400, {"error": reason}), body)
        self.assertEqual(api.calls, [])

    async def test_method_and_path(self) -> None:
        """
        The wrong method is answered 405 naming the right one; a path that
        is no route is answered 404, both in JSON.
        """
        api = await self.start()
        host, token = self.host(api), api.token
        code, headers, answer = await api.send(_request("GET", "/v1/record", host, token))
        self.assertEqual((code, headers["allow"]), (405, "POST"))
        self.assertEqual(answer, {"error": "method not allowed"})
        for path in ["/v1/nothing", "/v1/", "/", "/v2/status", "/v1/status/x", "/v1/status/"]:
            code, _, answer = await api.send(_request("GET", path, host, token))
            self.assertEqual((code, answer), (404, {"error": "no such request"}), path)
        self.assertEqual(api.calls, [])

    async def test_handler_errors(self) -> None:
        """
        A ``BadRequest`` from a route is answered 400, another Digital Spring
        error 502, both with their message; a bug is answered 500 without
        its details, and logged.
        """
        api = await self.start()
        host, token = self.host(api), api.token
        for path, expected in [
            ("refuse", (400, {"error": "size is a number of bytes from 0 to 1024"})),
            ("unreachable", (502, {"error": "no address is known for that peer"})),
            ("crash", (500, {"error": "internal error; see the node's log"})),
        ]:
            code, _, answer = await api.send(_request("POST", f"/v1/{path}", host, token, b"{}"))
            self.assertEqual((code, answer), expected)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_requests_in_flight_bounded(self) -> None:
        """
        With ``MAX_IN_FLIGHT`` requests being handled, one more is answered
        503 without running; once they end, requests run again.
        """
        api = await self.start()
        host, token = self.host(api), api.token
        pending = [
            Deferred.fromCoroutine(api.send(_request("POST", "/v1/wait", host, token, b"{}")))
            for _ in range(MAX_IN_FLIGHT)
        ]
        await api.all_waiting
        code, _, answer = await api.send(_request("POST", "/v1/record", host, token, b"{}"))
        self.assertEqual(code, 503)
        self.assertEqual(answer, {"error": "too many requests at once; try again"})
        self.assertEqual(len(api.calls), MAX_IN_FLIGHT)
        for d in api.waiting:
            d.callback({"done": True})
        for response in pending:
            code, _, answer = await response
            self.assertEqual((code, answer), (200, {"done": True}))
        code, _, _ = await api.send(_request("POST", "/v1/record", host, token, b"{}"))
        self.assertEqual(code, 200)

    async def test_connections_bounded(self) -> None:
        """
        With ``MAX_CONNECTIONS`` connections open (idle, as a local program
        hoarding them would leave them), one more is closed without an
        answer; once one of them closes, a new one is served.
        """
        api = await self.start()
        hoarded = []
        for _ in range(MAX_CONNECTIONS):
            protocol = _Raw(b"")
            await connectProtocol(api.endpoint(), protocol)
            hoarded.append(protocol)
        request = _request("GET", "/v1/status", self.host(api), api.token)
        extra = _Raw(request)
        await connectProtocol(api.endpoint(), extra)
        self.assertEqual(await extra.done, b"")
        first = hoarded.pop()
        assert first.transport is not None
        first.transport.loseConnection()
        await first.done
        code, _, answer = await api.send(request)
        self.assertEqual((code, answer), (200, {"calls": 1}))
        for protocol in hoarded:
            assert protocol.transport is not None
            protocol.transport.loseConnection()
            await protocol.done

    async def test_ipv6_loopback(self) -> None:
        """
        On ``::1`` the URL brackets the address, and the ``Host`` header must
        name ``[::1]:PORT`` (or ``localhost:PORT``), not 127.0.0.1.
        """
        api = await self.start("tcp6:0:interface=\\:\\:1")
        port = api.port
        self.assertEqual(api.document["url"], f"http://[::1]:{port}/v1/")
        for host, expected in [
            (f"[::1]:{port}", 200),
            (f"localhost:{port}", 200),
            (f"127.0.0.1:{port}", 403),
            (f"evil.example:{port}", 403),
        ]:
            code, _, _ = await api.send(_request("GET", "/v1/status", host, api.token))
            self.assertEqual(code, expected, host)
        client = ControlClient(_reactor(), api.data_dir)
        self.assertEqual(await client.call("status"), {"calls": 3})

    async def test_unix_socket(self) -> None:
        """
        On a UNIX socket (``unix_control``, an onion-only node's default) the
        socket is for the node's user only, the client reaches it through
        ``control.json``, and ``Host`` may be ``localhost`` or absent but
        not another name.
        """
        short = tempfile.mkdtemp(prefix="ds-")
        self.addCleanup(shutil.rmtree, short)
        data_dir = FilePath(short)
        api = await self._start(data_dir, unix_control(data_dir))
        socket = data_dir.child("control.sock")
        self.assertEqual(api.document["unix"], socket.path)
        self.assertEqual(api.document["url"], "http://localhost/v1/")
        self.assertEqual(stat.S_IMODE(os.stat(socket.path).st_mode), 0o600)
        client = ControlClient(_reactor(), data_dir)
        self.assertEqual(await client.call("record", {"peer": "x"}), {"got": {"peer": "x"}})
        for host, expected in [(None, 200), ("localhost", 200), ("evil.example", 403)]:
            code, _, _ = await api.send(_request("GET", "/v1/status", host, api.token))
            self.assertEqual(code, expected, host)
        self.assertEqual(len(api.calls), 3)

    async def test_unix_path_too_long(self) -> None:
        """
        A socket path longer than a UNIX socket may have (as in a deep data
        directory) is logged as a reason the node has no control API, and
        leaves nothing running nor any control file behind.
        """
        data_dir = FilePath(tempfile.mkdtemp(prefix="ds-"))
        self.addCleanup(shutil.rmtree, data_dir.path)
        deep = data_dir.child("d" * 100)
        deep.makedirs()
        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        api = await self._start(deep, unix_control(deep))
        self.assertFalse(deep.child(CONTROL_FILE_NAME).exists())
        [error] = [e for e in seen if e.get("log_level") == LogLevel.error]
        self.assertIn("cannot serve the control API", formatEvent(error))
        self.assertIn("too long", formatEvent(error))
        self.assertIsNone(api.service.stopService())


# The node's own routes, through the client the dspring command uses.


class NodeRoutesTests(TestCase):
    """
    Two real nodes on 127.0.0.1, built as ``twistd dspring`` builds them;
    each route of the node's API answers through ``ControlClient``.
    """

    async def test_status_ping_and_lookup(self) -> None:
        """
        ``status`` names the node and its addresses; ``ping`` reaches the
        other node by peer ID (found through the DHT it joined by);
        ``dht-lookup`` finds the other node's record.  A bad peer ID is a 400
        with the reason.
        """
        b, _ = await node_in_process(self, "b")
        [address_b] = b.addresses()
        a, client = await node_in_process(self, "a", "--bootstrap", f"{b.peer_id}@{address_b}")
        status = await client.call("status")
        self.assertEqual(status["peer_id"], str(a.peer_id))
        self.assertEqual(status["addresses"], a.addresses())
        ping = await client.call("ping", {"peer": str(b.peer_id), "size": 8})
        self.assertEqual(ping["peer"], str(b.peer_id))
        self.assertGreater(ping["rtt_ms"], 0)
        lookup = await client.call("dht-lookup", {"peer": str(b.peer_id)})
        self.assertTrue(lookup["found"], lookup)
        self.assertIn(address_b, json.dumps(lookup["record"]))
        with self.assertRaises(ControlError) as caught:
            await client.call("ping", {"peer": "not a peer"})
        self.assertIn("peer", str(caught.exception))


# Event streams.


class _FakeRequest:
    """
    The parts of a request an :class:`EventSink` uses, recording them.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        self.code: int | None = None
        self.producer: Any = None
        self.finished = False
        self.lost = False
        self.channel: object | None = object()

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        assert not self.finished
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True

    def loseConnection(self) -> None:
        self.lost = True


class EventSinkTests(SynchronousTestCase):
    """
    One event stream's queue and keep-alive, on a simulated clock.
    """

    def sink(self) -> tuple[EventSink, _FakeRequest, Clock]:
        clock, request = Clock(), _FakeRequest()
        return EventSink(clock, request), request, clock  # type: ignore[arg-type]

    def test_events_in_order(self) -> None:
        """
        Events sent before the stream starts wait, then go first, in
        order, each as ``event:`` and one ``data:`` line of JSON.
        """
        sink, request, _ = self.sink()
        sink.send("message", {"n": 1})
        self.assertEqual(request.written, [])
        sink.start()
        sink.send("delivery", {"n": 2})
        self.assertEqual(request.headers[b"content-type"], b"text/event-stream")
        self.assertEqual(
            b"".join(request.written),
            b'event: message\ndata: {"n": 1}\n\n: ready\n\nevent: delivery\ndata: {"n": 2}\n\n',
        )

    def test_keepalive(self) -> None:
        """
        A stream with nothing to say sends a comment every KEEPALIVE
        seconds, and none while events flow.
        """
        sink, request, clock = self.sink()
        sink.start()
        clock.advance(KEEPALIVE - 1)
        sink.send("message", {})
        clock.advance(KEEPALIVE - 1)
        self.assertNotIn(b": keepalive\n\n", request.written)
        clock.advance(1)
        self.assertEqual(request.written[-1], b": keepalive\n\n")
        sink.close()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_reader_that_does_not_read(self) -> None:
        """
        While the connection is full (paused), events queue; past
        MAX_QUEUED_BYTES the stream is closed and its queue dropped, so a
        client that never reads holds a bounded amount of the node's
        memory.
        """
        sink, request, _ = self.sink()
        sink.start()
        sink.pauseProducing()
        written = len(request.written)
        event = {"text": "x" * 60_000}
        for _ in range(MAX_QUEUED_BYTES // 60_000 - 1):
            sink.send("message", event)
        self.assertFalse(sink.closed)
        self.assertEqual(len(request.written), written)
        for _ in range(2):
            sink.send("message", event)
        self.assertTrue(sink.closed)
        self.assertTrue(request.finished)
        self.assertEqual(len(request.written), written)


class _Stream(Protocol):
    """
    Opens an event stream and collects what comes, staying open.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.ready: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b": ready" in self.received and not self.ready.called:
            self.ready.callback(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)


class EventStreamTests(TestCase):
    """
    Event streams of the real service over 127.0.0.1.
    """

    async def start(self) -> tuple[_API, dict[str, Any]]:
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        api = _API(data_dir, DEFAULT_CONTROL)
        state: dict[str, Any] = {"sinks": [], "stopped": 0, "queries": []}

        async def events(query: dict[str, str], sink: EventSink) -> Any:
            if query.get("to") == "nobody":
                raise BadRequest("no group is named 'nobody'")
            state["queries"].append(query)
            state["sinks"].append(sink)

            def stop() -> None:
                state["stopped"] += 1

            return stop

        api.service.streams = {"events": events}
        api.service.startService()
        self.addCleanup(api.service.stopService)
        assert api.service._starting is not None
        await api.service._starting
        return api, state

    def request(self, api: _API, path: str = "/v1/events", token: str | None = "") -> bytes:
        return _request(
            path=path,
            host=f"127.0.0.1:{api.port}",
            token=api.token if token == "" else token,
        )

    async def open(self, api: _API) -> _Stream:
        stream = _Stream(self.request(api))
        await connectProtocol(api.endpoint(), stream)
        await stream.ready
        return stream

    async def test_events_reach_the_client(self) -> None:
        """
        ``ControlClient.stream`` gets the events a route sends, in order,
        with the route's query; when the node ends the stream, the client
        is told the node stopped, and the route's subscription ends.
        """
        api, state = await self.start()
        got: list[tuple[str, dict[str, Any]]] = []

        def opened() -> None:
            [sink] = state["sinks"]
            sink.send("message", {"n": 1})
            sink.send("delivery", {"n": 2})
            _reactor().callLater(0.05, sink.close)

        client = ControlClient(_reactor(), api.data_dir)
        with self.assertRaises(NodeGone):
            await client.stream(
                "events", {"to": "friends"}, lambda e, d: got.append((e, d)), opened
            )
        self.assertEqual(got, [("message", {"n": 1}), ("delivery", {"n": 2})])
        self.assertEqual(state["queries"], [{"to": "friends"}])
        self.assertEqual(state["stopped"], 1)

    async def test_refused_stream(self) -> None:
        """
        A stream the route refuses is a 400 with the reason, and one
        without the token a 401: neither is counted as open.
        """
        api, _ = await self.start()
        status, _, body = await api.send(self.request(api, "/v1/events?to=nobody"))
        self.assertEqual((status, body), (400, {"error": "no group is named 'nobody'"}))
        status, _, body = await api.send(self.request(api, token="wrong"))
        self.assertEqual(status, 401)
        assert api.service._api is not None
        self.assertEqual(api.service._api.dispatcher.open_streams, set())
        with self.assertRaises(ControlError) as caught:
            await ControlClient(_reactor(), api.data_dir).stream("events", {"to": "nobody"}, print)
        self.assertIn("nobody", str(caught.exception))

    async def test_streams_bounded(self) -> None:
        """
        MAX_STREAMS streams may be open at once; one more is answered 503
        at once.  A client that goes away frees its place and ends its
        subscription.
        """
        api, state = await self.start()
        streams = [await self.open(api) for _ in range(MAX_STREAMS)]
        status, _, body = await api.send(self.request(api))
        self.assertEqual(status, 503)
        self.assertIn("event streams are open already", body["error"])
        first = streams[0]
        assert first.transport is not None
        first.transport.loseConnection()
        await first.closed
        for _ in range(100):
            if state["stopped"]:
                break
            await deferLater(_reactor(), 0.01, lambda: None)
        self.assertEqual(state["stopped"], 1)
        again = await self.open(api)
        self.assertIn(b"text/event-stream", again.received)
        for stream in [*streams[1:], again]:
            assert stream.transport is not None
            stream.transport.loseConnection()
            await stream.closed

    async def test_stop_ends_streams(self) -> None:
        """
        Stopping the service ends every open stream.
        """
        api, state = await self.start()
        stream = await self.open(api)
        await api.service.stopService()
        await stream.closed
        self.assertEqual(state["stopped"], 1)
