# -*- test-case-name: tests.test_web -*-
"""
The web client's HTTP side: every request's checks, the pages, the login,
and the API its pages call.

Every request must name the address the client listens on in its ``Host``
header (a page elsewhere that points a name of its own at 127.0.0.1, DNS
rebinding, is refused).  Everything under ``/api/`` needs the session
cookie; every ``POST`` also needs the session's CSRF token in
``X-CSRF-Token`` and an ``Origin`` naming the client itself.  Every answer
carries a Content Security Policy that lets the pages run only the
scripts the node ships (no inline script, no ``eval``), and received files
are answered only as downloads, in a sandbox of their own.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from importlib.resources import files
from io import BytesIO
from typing import Any
from urllib.parse import quote

import segno
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..control import (
    MAX_BODY,
    BadRequest,
    BoundedRequest,
    Handler,
    RouteDispatcher,
    StreamHandler,
    answer,
    request_host,
)
from ..directory import AddressBook, Contact, check_address
from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID
from ..multicast import MAX_PADDED_SIZE
from ._sessions import Session, Sessions

#: The largest file a page uploads to send; the only body over
#: :data:`~digitalspring.control.MAX_BODY`, let in with a session only.
MAX_UPLOAD = MAX_PADDED_SIZE

#: Uploads being received at once; one more is held to ``MAX_BODY``.
MAX_UPLOADS = 2

#: The Content Security Policy of every page and answer: scripts, styles
#: and images from the client itself only, no inline script or style, no
#: frames, forms or ``<base>`` pointing elsewhere.
CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

#: The policy of a received file: a sandbox of its own, no script, nothing
#: loaded, were a browser ever to show it instead of saving it.
FILE_CSP = b"sandbox; default-src 'none'"

#: The control routes a page may call, by name; the others (``send`` with
#: a path, the DHT's, ``web-login``) stay the ``dspring`` command's.
PAGE_ROUTES = frozenset(
    {
        "status",
        "group-list",
        "group-create",
        "group-add",
        "group-remove",
        "group-show",
        "group-name",
        "group-leave",
        "group-delete",
        "inbox",
        "invitations",
        "accept",
        "decline",
        "send",
    }
)

_STATIC_TYPES = {
    "html": b"text/html; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "svg": b"image/svg+xml",
}

_STATIC_NAME = re.compile(r"\A[a-z0-9-]+\.(html|css|js|svg)\Z")


def _load_static() -> dict[bytes, tuple[bytes, bytes]]:
    """
    The files the pages are made of, shipped in the package:
    ``{name: (content type, bytes)}``.
    """
    found: dict[bytes, tuple[bytes, bytes]] = {}
    for entry in files(__package__).joinpath("static").iterdir():
        match = _STATIC_NAME.match(entry.name)
        if match is not None:
            found[entry.name.encode("ascii")] = (
                _STATIC_TYPES[match.group(1)],
                entry.read_bytes(),
            )
    return found


def attachment_header(name: str) -> bytes:
    """
    A ``Content-Disposition`` that saves a file under (a safe form of) the
    name its sender gave: ASCII letters, digits, ``.``, ``-`` and ``_`` in
    ``filename``, the whole name percent-encoded in ``filename*``.
    """
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "file"
    encoded = quote(name, safe="")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}".encode("ascii")


def shareable(status: dict[str, Any]) -> list[str]:
    """
    ``PEER_ID@ADDRESS`` for each address the node publishes.
    """
    return [f"{status['peer_id']}@{address}" for address in status["addresses"]]


def qr_svg(text: str) -> bytes:
    """
    A QR code of ``text`` as an SVG image (4 pixels a module, with its
    quiet zone).
    """
    out = BytesIO()
    segno.make(text, error="m", micro=False).save(out, kind="svg", scale=4, svgclass=None)
    return out.getvalue()


def _contact(contact: Contact) -> dict[str, Any]:
    return {
        "peer": str(contact.peer_id),
        "name": contact.name,
        "addresses": list(contact.addresses),
    }


class _WebRequest(BoundedRequest):
    """
    A request whose body is held to :data:`~digitalspring.control.MAX_BODY`,
    but for a file upload of a logged-in page, held to :data:`MAX_UPLOAD`.
    """

    def body_limit(self) -> int:
        assert self.channel is not None
        site = getattr(self.channel, "site", None)
        assert isinstance(site, WebSite)
        # The request's path is the channel's until the body is in.
        path: bytes = getattr(self.channel, "_path", b"")
        return site.web.body_limit(self, path)


class WebSite(Site):
    """
    The web client's site: bounded requests, no access log (the user's own
    clicks).
    """

    def __init__(self, web: WebResource, reactor: Any, timeout: float) -> None:
        super().__init__(web, requestFactory=_WebRequest, timeout=timeout, reactor=reactor)
        self.web = web
        self.noisy = False

    def log(self, request: http.Request) -> None:
        pass


_Answer = tuple[bytes, bytes, dict[bytes, bytes]]

#: A route answering other than JSON, or reading its own body: given the
#: request, its session and its query, it returns the content type, the
#: body and more headers.
RawHandler = Callable[[Request, Session, dict[str, str]], Coroutine[Any, Any, _Answer]]


class WebResource(Resource):
    """
    Every path of the web client.

    :param routes: the node's control routes; those in
        :data:`PAGE_ROUTES` are the pages' too, run by the same handlers.
    :param streams: the node's event streams; ``events`` is the pages'.
    :param book: the node's address book (the contacts page's).
    :param send_file: sends uploaded bytes as a file (``to``, data, name),
        answering as the ``send`` route; ``None`` for a node without groups.
    :ivar hosts: the ``Host`` header values accepted; none until it
        listens.
    :ivar cookie: the name of the session cookie (holding the port:
        browsers send a host's cookies to all its ports).
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        sessions: Sessions,
        routes: Mapping[str, tuple[bytes, Handler]],
        streams: Mapping[str, StreamHandler],
        book: AddressBook,
        send_file: Callable[[str, bytes, str], Awaitable[dict[str, Any]]] | None,
    ) -> None:
        super().__init__()
        self.sessions = sessions
        self.hosts: frozenset[bytes] = frozenset()
        self.origins: frozenset[bytes] = frozenset()
        self.cookie = b"dspring-session"
        self._book = book
        self._routes = dict(routes)
        self._send_file = send_file
        self._static = _load_static()
        page_routes: dict[str, tuple[bytes, Handler]] = {
            name: route for name, route in routes.items() if name in PAGE_ROUTES
        }
        if "send" in page_routes:
            page_routes["send"] = (b"POST", self._send_text)
        page_routes.update(
            {
                "identity": (b"GET", self._identity),
                "contacts": (b"GET", self._contacts),
                "contacts-add": (b"POST", self._contacts_add),
                "contacts-name": (b"POST", self._contacts_name),
                "contacts-remove": (b"POST", self._contacts_remove),
            }
        )
        self._raw: dict[bytes, tuple[bytes, RawHandler]] = {
            b"session": (b"GET", self._session_info),
            b"qr.svg": (b"GET", self._qr),
            b"file": (b"GET", self._file),
            b"send-file": (b"POST", self._upload),
            b"logout": (b"POST", self._logout),
        }
        page_streams = {name: s for name, s in streams.items() if name == "events"}
        self.dispatcher = RouteDispatcher(reactor, page_routes, page_streams)
        self._uploading = 0

    def listening(self, hosts: frozenset[bytes], port: int) -> None:
        """
        The client listens now, at the addresses ``hosts`` names (see
        :func:`~digitalspring.control.allowed_hosts`), on ``port``.
        """
        self.hosts = hosts
        self.origins = frozenset(b"http://" + host for host in hosts)
        self.cookie = b"dspring-session-%d" % port

    # --- checks ------------------------------------------------------------------

    def _session(self, request: Request) -> Session | None:
        raw = request.getCookie(self.cookie)
        return self.sessions.session(None if raw is None else raw.decode("ascii", "replace"))

    def body_limit(self, request: Request, path: bytes) -> int:
        """
        How long a body ``request`` may carry: :data:`MAX_UPLOAD` for an
        upload to ``/api/send-file`` of a session, while fewer than
        :data:`MAX_UPLOADS` are under way, else
        :data:`~digitalspring.control.MAX_BODY`.
        """
        if path.partition(b"?")[0] != b"/api/send-file" or self._uploading >= MAX_UPLOADS:
            return MAX_BODY
        if request_host(request) not in self.hosts or self._session(request) is None:
            return MAX_BODY
        self._uploading += 1

        def done(result: object) -> None:
            self._uploading -= 1

        request.notifyFinish().addBoth(done)
        return MAX_UPLOAD

    def render(self, request: Request) -> int | bytes:
        request.setHeader(b"content-security-policy", CSP)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"cross-origin-opener-policy", b"same-origin")
        request.setHeader(b"cross-origin-resource-policy", b"same-origin")
        request.setHeader(b"cache-control", b"no-store")
        if request_host(request) not in self.hosts:
            return self._refuse(request, 403, "the Host header does not name this web client")
        if request.method not in (b"GET", b"HEAD", b"POST"):
            request.setHeader(b"allow", b"GET, POST")
            return self._refuse(request, 405, "method not allowed")
        if request.method == b"POST":
            origin = request.getHeader(b"origin")
            if origin is None or origin.lower() not in self.origins:
                return self._refuse(request, 403, "the Origin header does not name this client")
        path = request.postpath or []
        if path in ([], [b""], [b"index.html"]):
            return self._static_file(request, b"index.html")
        if len(path) == 2 and path[0] == b"static":
            return self._static_file(request, path[1])
        if path == [b"login"]:
            return self._login(request)
        if len(path) != 2 or path[0] != b"api":
            return self._refuse(request, 404, "no such page")
        session = self._session(request)
        if session is None:
            return self._refuse(request, 401, "not logged in: run 'dspring web' for a login URL")
        if request.method == b"POST" and not session.csrf_matches(
            request.getHeader(b"x-csrf-token")
        ):
            return self._refuse(request, 403, "missing or wrong CSRF token")
        raw = self._raw.get(path[1])
        if raw is not None:
            return self._run_raw(request, session, *raw)
        return self.dispatcher.dispatch(request, path[1])

    def _refuse(self, request: Request, code: int, error: str) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return answer(request, code, {"error": error})

    def _static_file(self, request: Request, name: bytes) -> int | bytes:
        if request.method == b"POST":
            request.setHeader(b"allow", b"GET")
            return self._refuse(request, 405, "method not allowed")
        found = self._static.get(name)
        if found is None:
            return self._refuse(request, 404, "no such page")
        content_type, content = found
        request.setHeader(b"content-type", content_type)
        return content

    def _login(self, request: Request) -> bytes:
        """
        ``GET /login?token=TOKEN``: consume the one-time token, open a
        session, and go to the pages.
        """
        tokens = (request.args or {}).get(b"token", [])
        session = None
        if request.method == b"GET" and len(tokens) == 1:
            session = self.sessions.login(tokens[0].decode("utf-8", "replace"))
        if session is None:
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return (
                b"This login link is not valid: it was used already, or is older than "
                b"5 minutes. Run 'dspring web' for a new one.\n"
            )
        request.addCookie(
            self.cookie,
            session.session_id.encode("ascii"),
            path=b"/",
            httpOnly=True,
            sameSite="strict",
        )
        request.setResponseCode(303)
        request.setHeader(b"location", b"/")
        return b""

    def _run_raw(
        self, request: Request, session: Session, method: bytes, handler: RawHandler
    ) -> int | bytes:
        if request.method != method:
            request.setHeader(b"allow", method)
            return self._refuse(request, 405, "method not allowed")
        query = {
            key.decode("utf-8", "replace"): values[-1].decode("utf-8", "replace")
            for key, values in (request.args or {}).items()
            if values
        }
        d: Deferred[_Answer] = Deferred.fromCoroutine(handler(request, session, query))
        d.addCallbacks(
            self._raw_answer, self._raw_failed, callbackArgs=(request,), errbackArgs=(request,)
        )
        return NOT_DONE_YET

    def _raw_answer(self, result: _Answer, request: Request) -> None:
        content_type, body, headers = result
        if request.finished or request.channel is None:
            return
        request.setHeader(b"content-type", content_type)
        for name, value in headers.items():
            request.setHeader(name, value)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    def _raw_failed(self, failure: Failure, request: Request) -> None:
        if isinstance(failure.value, DigitalSpringError):
            code = 400 if isinstance(failure.value, BadRequest) else 502
            error = str(failure.value)
        else:
            self.log.failure("web request failed", failure)
            code, error = 500, "internal error; see the node's log"
        if request.finished or request.channel is None:
            return
        body = self._refuse(request, code, error)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    # --- the API's own routes ----------------------------------------------------------

    async def _status(self) -> dict[str, Any]:
        return await self._routes["status"][1]({})

    async def _identity(self, body: dict[str, Any]) -> dict[str, Any]:
        status = await self._status()
        return {
            "peer_id": status["peer_id"],
            "addresses": status["addresses"],
            "shareable": shareable(status),
        }

    async def _contacts(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"contacts": [_contact(c) for c in self._book.contacts()]}

    def _peer(self, text: object) -> PeerID:
        if not isinstance(text, str):
            raise BadRequest("peer is a peer ID or a contact's name")
        try:
            return self._book.find(text)
        except DigitalSpringError as e:
            raise BadRequest(str(e)) from None

    async def _contacts_add(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        Add ``PEER_ID@TRANSPORT:ADDRESS`` (``contact``), with a ``name``.
        """
        text = body.get("contact")
        name = body.get("name") or None
        if not isinstance(text, str) or (name is not None and not isinstance(name, str)):
            raise BadRequest("contact is PEER_ID@TRANSPORT:ADDRESS, name a name")
        peer, sep, address = text.strip().partition("@")
        if not sep:
            raise BadRequest(f"{text!r} is not of the form PEER_ID@TRANSPORT:ADDRESS")
        try:
            peer_id = PeerID.parse(peer)
            check_address(address)
            return _contact(self._book.add(peer_id, address, name))
        except (InvalidPeerID, DigitalSpringError) as e:
            raise BadRequest(str(e)) from None

    async def _contacts_name(self, body: dict[str, Any]) -> dict[str, Any]:
        peer = self._peer(body.get("peer"))
        name = body.get("name")
        if not isinstance(name, str):
            raise BadRequest("name is the contact's new name")
        try:
            return _contact(self._book.set_name(peer, name))
        except DigitalSpringError as e:
            raise BadRequest(str(e)) from None

    async def _contacts_remove(self, body: dict[str, Any]) -> dict[str, Any]:
        peer = self._peer(body.get("peer"))
        try:
            return _contact(self._book.remove(peer))
        except DigitalSpringError as e:
            raise BadRequest(str(e)) from None

    async def _send_text(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        ``send`` with a text only: a page sends a file by uploading it,
        never by naming a path the node would read.
        """
        if "path" in body or not isinstance(body.get("text"), str):
            raise BadRequest("a page sends text here, and files to send-file")
        return await self._routes["send"][1]({"to": body.get("to"), "text": body["text"]})

    async def _session_info(
        self, request: Request, session: Session, query: dict[str, str]
    ) -> _Answer:
        """
        ``GET /api/session``: the session's CSRF token, which the page sends
        with every ``POST`` (a page of another origin cannot read it).
        """
        return b"application/json", json.dumps({"csrf": session.csrf}).encode("ascii"), {}

    async def _qr(self, request: Request, session: Session, query: dict[str, str]) -> _Answer:
        """
        ``GET /api/qr.svg?index=N``: a QR code of the node's Nth
        ``PEER_ID@ADDRESS``.
        """
        addresses = shareable(await self._status())
        try:
            text = addresses[int(query.get("index", "0"))]
        except (ValueError, IndexError):
            raise BadRequest("no such address") from None
        return b"image/svg+xml", qr_svg(text), {}

    async def _file(self, request: Request, session: Session, query: dict[str, str]) -> _Answer:
        """
        ``GET /api/file?group=G&epoch=E&index=I``: a received (or sent)
        file, as a download only: never shown, sniffed or run here.
        """
        try:
            epoch, index = int(query.get("epoch", "")), int(query.get("index", ""))
        except ValueError:
            raise BadRequest("epoch and index are the message's numbers") from None
        message = await self._routes["message"][1](
            {"group": query.get("group", ""), "epoch": epoch, "index": index}
        )
        if message.get("type") != "file":
            raise BadRequest("that message is not a file")
        return (
            b"application/octet-stream",
            base64.b64decode(message["data"]),
            {
                b"content-disposition": attachment_header(str(message["file_name"])),
                b"content-security-policy": FILE_CSP,
            },
        )

    async def _upload(self, request: Request, session: Session, query: dict[str, str]) -> _Answer:
        """
        ``POST /api/send-file?to=GROUP&name=NAME``, the file's bytes as the
        body: send it; the answer is ``send``'s.
        """
        if self._send_file is None:
            raise BadRequest("this node has no groups")
        assert request.content is not None
        data = request.content.read()
        sent = await self._send_file(query.get("to", ""), data, query.get("name", ""))
        return b"application/json", json.dumps(sent).encode("utf-8"), {}

    async def _logout(self, request: Request, session: Session, query: dict[str, str]) -> _Answer:
        self.sessions.logout(session.session_id)
        request.addCookie(
            self.cookie, b"", path=b"/", max_age=b"0", httpOnly=True, sameSite="strict"
        )
        return b"application/json", b"{}", {}
