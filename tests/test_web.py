"""
The web client's checks, request by request, on Twisted's in-memory
transport: Host, login and session cookie, Origin and CSRF token, the
headers of pages and of received files, and the bounds on sessions and
bodies.
"""

from __future__ import annotations

import base64
import re
from http.cookies import SimpleCookie
from importlib.resources import files
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.control import MAX_BODY, allowed_hosts
from digitalspring.directory import AddressBook
from digitalspring.tap import Options
from digitalspring.web import (
    CSP,
    LOGIN_LIFETIME,
    MAX_LOGINS,
    MAX_SESSIONS,
    MAX_UPLOADS,
    SESSION_IDLE,
    BadWebEndpoint,
    Sessions,
    WebResource,
    check_web_endpoint,
)
from digitalspring.web._site import WebSite, attachment_header

PORT = 8421
HOST = b"127.0.0.1:%d" % PORT
ORIGIN = b"http://" + HOST
PEER = "a" * 56


class _Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.code = int(lines[0].split()[1])
        self.headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name)
        return values[-1] if values else None


class WebChecksTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        routes: dict[str, tuple[bytes, Any]] = {
            "status": (b"GET", self.route("status", {"peer_id": PEER, "addresses": ["tcp:x:1"]})),
            "group-create": (b"POST", self.route("group-create", {"group": "g"})),
            "send": (b"POST", self.route("send", {"sent": True})),
            "dht-lookup": (b"POST", self.route("dht-lookup", {})),
            "message": (
                b"POST",
                self.route(
                    "message",
                    {
                        "type": "file",
                        "file_name": 'a"b\r\n.html',
                        "data": base64.b64encode(b"<script>x()</script>").decode(),
                    },
                ),
            ),
        }
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        self.sessions = Sessions(self.clock)
        self.web = WebResource(
            self.clock,
            self.sessions,
            routes,
            {},
            AddressBook.in_data_dir(data_dir),
            self.send_file,
        )
        self.web.listening(allowed_hosts(IPv4Address("TCP", "127.0.0.1", PORT)), PORT)
        self.site = WebSite(self.web, self.clock, 60)
        self.uploads: list[tuple[str, bytes, str]] = []

    def route(self, name: str, answer: dict[str, Any]) -> Any:
        async def handler(body: dict[str, Any]) -> dict[str, Any]:
            self.calls.append((name, body))
            return answer

        return handler

    async def send_file(self, to: str, data: bytes, name: str) -> dict[str, Any]:
        self.uploads.append((to, data, name))
        return {"group": to}

    def request(
        self,
        method: bytes,
        path: bytes,
        headers: dict[bytes, bytes] | None = None,
        body: bytes = b"",
        host: bytes | None = HOST,
    ) -> _Response:
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        assert channel is not None
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", PORT),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 50000),
        )
        channel.makeConnection(transport)
        lines = [method + b" " + path + b" HTTP/1.1"]
        if host is not None:
            lines.append(b"Host: " + host)
        for name, value in (headers or {}).items():
            lines.append(name + b": " + value)
        if body or method == b"POST":
            lines.append(b"Content-Length: %d" % len(body))
        channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        response = _Response(transport.value())
        channel.connectionLost(None)
        return response

    def login(self) -> tuple[dict[bytes, bytes], str]:
        """
        Log in: the headers that carry the session, and its CSRF token.
        """
        token = self.sessions.new_login()
        response = self.request(b"GET", b"/login?token=" + token.encode())
        self.assertEqual(response.code, 303)
        cookie = SimpleCookie(response.header(b"set-cookie").decode())  # type: ignore[union-attr]
        jar = {
            b"Cookie": b"dspring-session-%d=%s"
            % (PORT, cookie[f"dspring-session-{PORT}"].value.encode())
        }
        answer = self.request(b"GET", b"/api/session", jar)
        self.assertEqual(answer.code, 200)
        csrf = re.search(rb'"csrf": "([^"]+)"', answer.body)
        assert csrf is not None
        return jar, csrf.group(1).decode()

    def post_headers(self, jar: dict[bytes, bytes], csrf: str) -> dict[bytes, bytes]:
        return {
            **jar,
            b"Origin": ORIGIN,
            b"X-CSRF-Token": csrf.encode(),
            b"Content-Type": b"application/json",
        }

    # --- Host ---------------------------------------------------------------------------

    def test_host_checked_everywhere(self) -> None:
        jar, _ = self.login()
        for path in (b"/", b"/static/app.js", b"/api/status", b"/login?token=x"):
            for host in (b"evil.example", b"evil.example:%d" % PORT, b"127.0.0.1:1", None):
                response = self.request(b"GET", path, jar, host=host)
                self.assertEqual(response.code, 403, (path, host))
        self.assertEqual(self.request(b"GET", b"/", host=b"localhost:%d" % PORT).code, 200)

    # --- login and session --------------------------------------------------------------------

    def test_login_once(self) -> None:
        token = self.sessions.new_login().encode()
        first = self.request(b"GET", b"/login?token=" + token)
        self.assertEqual((first.code, first.header(b"location")), (303, b"/"))
        cookie = first.header(b"set-cookie")
        assert cookie is not None
        self.assertIn(b"HttpOnly", cookie)
        self.assertIn(b"SameSite=strict", cookie)
        self.assertIn(b"Path=/", cookie)
        self.assertEqual(self.request(b"GET", b"/login?token=" + token).code, 403)
        self.assertEqual(self.request(b"GET", b"/login?token=made-up").code, 403)

    def test_login_expires(self) -> None:
        token = self.sessions.new_login().encode()
        self.clock.advance(LOGIN_LIFETIME)
        self.assertEqual(self.request(b"GET", b"/login?token=" + token).code, 403)

    def test_logins_bounded(self) -> None:
        tokens = [self.sessions.new_login() for _ in range(MAX_LOGINS + 1)]
        self.assertEqual(self.sessions.waiting_logins, MAX_LOGINS)
        self.assertIsNone(self.sessions.login(tokens[0]))
        self.assertIsNotNone(self.sessions.login(tokens[-1]))

    def test_cookie_required(self) -> None:
        for path in (b"/api/status", b"/api/session", b"/api/file?group=g&epoch=0&index=0"):
            self.assertEqual(self.request(b"GET", path).code, 401, path)
            wrong = {b"Cookie": b"dspring-session-%d=guess" % PORT}
            self.assertEqual(self.request(b"GET", path, wrong).code, 401, path)
        jar, _ = self.login()
        other_port = {b"Cookie": jar[b"Cookie"].replace(b"-%d=" % PORT, b"-1=")}
        self.assertEqual(self.request(b"GET", b"/api/status", other_port).code, 401)
        self.assertEqual(self.request(b"GET", b"/api/status", jar).code, 200)

    def test_sessions_bounded(self) -> None:
        first, _ = self.login()
        for _ in range(MAX_SESSIONS):
            self.login()
        self.assertEqual(self.sessions.open_sessions, MAX_SESSIONS)
        self.assertEqual(self.request(b"GET", b"/api/status", first).code, 401)

    def test_idle_session_closed(self) -> None:
        jar, _ = self.login()
        self.clock.advance(SESSION_IDLE - 1)
        self.assertEqual(self.request(b"GET", b"/api/status", jar).code, 200)
        self.clock.advance(SESSION_IDLE)
        self.assertEqual(self.request(b"GET", b"/api/status", jar).code, 401)

    def test_logout(self) -> None:
        jar, csrf = self.login()
        self.assertEqual(
            self.request(b"POST", b"/api/logout", self.post_headers(jar, csrf)).code, 200
        )
        self.assertEqual(self.request(b"GET", b"/api/status", jar).code, 401)

    # --- state changes: Origin and CSRF ----------------------------------------------------

    def test_post_needs_origin_and_csrf(self) -> None:
        jar, csrf = self.login()
        body = b'{"name": "friends"}'
        good = self.post_headers(jar, csrf)
        refused: list[dict[bytes, bytes]] = [
            {k: v for k, v in good.items() if k != b"Origin"},
            {**good, b"Origin": b"http://evil.example"},
            {**good, b"Origin": b"http://127.0.0.1:1"},
            {**good, b"Origin": b"null"},
            {k: v for k, v in good.items() if k != b"X-CSRF-Token"},
            {**good, b"X-CSRF-Token": b"x" + csrf.encode()},
            {k: v for k, v in good.items() if k != b"Cookie"},
        ]
        for headers in refused:
            response = self.request(b"POST", b"/api/group-create", headers, body)
            self.assertIn(response.code, (401, 403), headers)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.request(b"POST", b"/api/group-create", good, body).code, 200)
        self.assertEqual(self.calls, [("group-create", {"name": "friends"})])

    def test_csrf_of_another_session_refused(self) -> None:
        jar, _ = self.login()
        _, other = self.login()
        response = self.request(
            b"POST", b"/api/group-create", self.post_headers(jar, other), b"{}"
        )
        self.assertEqual(response.code, 403)

    def test_only_page_routes(self) -> None:
        jar, csrf = self.login()
        response = self.request(b"POST", b"/api/dht-lookup", self.post_headers(jar, csrf), b"{}")
        self.assertEqual(response.code, 404)

    def test_send_no_path(self) -> None:
        """
        A page cannot make the node read a file of its choosing.
        """
        jar, csrf = self.login()
        headers = self.post_headers(jar, csrf)
        body = b'{"to": "g", "path": "/etc/passwd"}'
        self.assertEqual(self.request(b"POST", b"/api/send", headers, body).code, 400)
        self.assertEqual(self.calls, [])
        ok = self.request(b"POST", b"/api/send", headers, b'{"to": "g", "text": "hi"}')
        self.assertEqual(ok.code, 200)
        self.assertEqual(self.calls, [("send", {"to": "g", "text": "hi"})])

    # --- headers --------------------------------------------------------------------------

    def test_page_headers(self) -> None:
        page = self.request(b"GET", b"/")
        self.assertEqual(page.code, 200)
        self.assertEqual(page.header(b"content-security-policy"), CSP)
        self.assertNotIn(b"unsafe", CSP)
        self.assertIn(b"script-src 'self'", CSP)
        self.assertEqual(page.header(b"x-content-type-options"), b"nosniff")
        self.assertEqual(page.header(b"x-frame-options"), b"DENY")
        for path in (b"/api/status", b"/static/nothing.js", b"/static/../_site.py"):
            response = self.request(b"GET", path)
            self.assertEqual(response.header(b"content-security-policy"), CSP, path)
            self.assertNotEqual(response.code, 200, path)

    def test_no_inline_script_shipped(self) -> None:
        """
        The pages hold no inline script or handler, and the script never
        parses what it shows as HTML.
        """
        static = files("digitalspring.web").joinpath("static")
        html = static.joinpath("index.html").read_text()
        self.assertEqual(re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", html), [])
        self.assertEqual(re.findall(r"\son[a-z]+\s*=", html), [])
        script = static.joinpath("app.js").read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            self.assertNotIn(sink, script)

    def test_file_is_a_download(self) -> None:
        jar, _ = self.login()
        response = self.request(b"GET", b"/api/file?group=g&epoch=0&index=3", jar)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.body, b"<script>x()</script>")
        self.assertEqual(response.header(b"content-type"), b"application/octet-stream")
        self.assertEqual(response.header(b"x-content-type-options"), b"nosniff")
        self.assertTrue(response.header(b"content-security-policy").startswith(b"sandbox"))  # type: ignore[union-attr]
        disposition = response.header(b"content-disposition")
        assert disposition is not None
        self.assertTrue(disposition.startswith(b"attachment; "))
        self.assertNotIn(b"\r", disposition)
        self.assertEqual(self.calls[-1], ("message", {"group": "g", "epoch": 0, "index": 3}))

    def test_attachment_names(self) -> None:
        self.assertEqual(
            attachment_header('x"; filename=evil.exe'),
            b'attachment; filename="x___filename_evil.exe"; '
            b"filename*=UTF-8''x%22%3B%20filename%3Devil.exe",
        )
        self.assertEqual(attachment_header("..")[:27], b'attachment; filename="file"')
        self.assertIn(b"%C3%A9t%C3%A9", attachment_header("été.txt"))

    # --- bodies ------------------------------------------------------------------------------

    def test_upload_needs_a_session(self) -> None:
        data = b"x" * (MAX_BODY + 1)
        response = self.request(
            b"POST",
            b"/api/send-file?to=g&name=big.bin",
            {b"Origin": ORIGIN, b"X-CSRF-Token": b"x"},
            data,
        )
        self.assertEqual(response.code, 413)
        jar, csrf = self.login()
        response = self.request(b"POST", b"/api/group-create", self.post_headers(jar, csrf), data)
        self.assertEqual(response.code, 413)
        response = self.request(
            b"POST", b"/api/send-file?to=g&name=big.bin", self.post_headers(jar, csrf), data
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(self.uploads, [("g", data, "big.bin")])

    def test_uploads_at_once_bounded(self) -> None:
        """
        While :data:`MAX_UPLOADS` uploads are being received, one more is
        held to ``MAX_BODY``; once one ends, the next may be long again.
        """
        jar, csrf = self.login()
        headers = b"".join(
            name + b": " + value + b"\r\n" for name, value in self.post_headers(jar, csrf).items()
        )
        size = MAX_BODY * 2

        def start_upload() -> tuple[Any, StringTransport]:
            channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(
                b"POST /api/send-file?to=g&name=f HTTP/1.1\r\nHost: "
                + HOST
                + b"\r\n"
                + headers
                + b"Content-Length: %d\r\n\r\n" % size
                + b"x" * 10
            )
            return channel, transport

        under_way = [start_upload() for _ in range(MAX_UPLOADS)]
        for _, transport in under_way:
            self.assertEqual(transport.value(), b"")
        _, refused = start_upload()
        self.assertIn(b"413", refused.value().split(b"\r\n")[0])
        channel, transport = under_way[0]
        channel.dataReceived(b"x" * (size - 10))
        self.assertIn(b" 200 ", transport.value().split(b"\r\n")[0])
        channel.connectionLost(None)
        _, accepted = start_upload()
        self.assertEqual(accepted.value(), b"")


class WebEndpointTests(SynchronousTestCase):
    def test_loopback_only(self) -> None:
        for good in (
            "tcp:0:interface=127.0.0.1",
            "tcp:8080:interface=127.0.0.2",
            "tcp6:0:interface=\\:\\:1",
        ):
            self.assertEqual(check_web_endpoint(good), good)
        for bad in (
            "tcp:8080",
            "tcp:8080:interface=0.0.0.0",
            "tcp:8080:interface=192.0.2.1",
            "tcp:8080:interface=localhost",
            "unix:/tmp/web.sock",
            "ssl:443",
            "tcp:nonsense",
        ):
            self.assertRaises(BadWebEndpoint, check_web_endpoint, bad)

    def test_twistd_option(self) -> None:
        options = Options()
        options.parseOptions(["--web", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(options["web"], "tcp:0:interface=127.0.0.1")
        options = Options()
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--web", "tcp:8080"])
        self.assertIn("loopback only", str(caught.exception))
        options = Options()
        options.parseOptions([])
        self.assertIsNone(options["web"])
