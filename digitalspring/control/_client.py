# -*- test-case-name: tests.test_control -*-
"""
The client side of the control API, for the ``dspring`` command.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from typing import Any
from urllib.parse import urlencode

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.client import URI, Agent, FileBodyProducer, ResponseDone, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from ..errors import DigitalSpringError
from ._api import CONTROL_FILE_NAME


class NodeNotRunning(DigitalSpringError):
    """
    No node runs on this data directory (start one with ``twistd -n dspring``).
    """


class NodeGone(NodeNotRunning):
    """
    The data directory names a node's control API, but nothing answers
    there: the node was stopped abruptly, or crashed.
    """


class ControlError(DigitalSpringError):
    """
    The node answered a control request with an error.
    """


@implementer(IAgentEndpointFactory)
class _UNIXSocket:
    """
    Sends every request of an ``Agent`` to one UNIX socket.
    """

    def __init__(self, reactor: Any, path: str) -> None:
        self._reactor = reactor
        self._path = path

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return UNIXClientEndpoint(self._reactor, self._path)


class ControlClient:
    """
    Talks to the node of a data directory through its control API, on the
    TCP address or the UNIX socket that ``DATA_DIR/control.json`` names.
    """

    def __init__(self, reactor: Any, data_dir: FilePath[str]) -> None:
        self._data_dir = data_dir
        control = data_dir.child(CONTROL_FILE_NAME)
        try:
            document = json.loads(control.getContent())
            self._url = str(document["url"]).encode("ascii")
            self._token = str(document["token"]).encode("ascii")
            unix = document.get("unix")
        except FileNotFoundError:
            raise NodeNotRunning(
                f"no node is running on {data_dir.path} (start it with: "
                f"twistd -n dspring --data-dir {data_dir.path})"
            ) from None
        except (OSError, ValueError, KeyError, TypeError, UnicodeError) as e:
            raise NodeNotRunning(f"cannot read {control.path}: {e}") from None
        if unix is None:
            self._agent = Agent(reactor)
        else:
            self._agent = Agent.usingEndpointFactory(reactor, _UNIXSocket(reactor, str(unix)))

    async def call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """
        Call one endpoint: POST with ``body``, or GET without.

        :raises ControlError: with the node's message, for an error answer.
        :raises NodeGone: when the node does not answer: the local node is
            gone, whatever the request was about.
        """
        headers = Headers({b"authorization": [b"Bearer " + self._token]})
        producer = None
        if body is not None:
            headers.addRawHeader(b"content-type", b"application/json")
            producer = FileBodyProducer(BytesIO(json.dumps(body).encode("utf-8")))
        try:
            response = await self._agent.request(
                b"POST" if body is not None else b"GET",
                self._url + path.encode("ascii"),
                headers,
                producer,
            )
            raw = await readBody(response)
        except ConnectionError as e:
            raise self._gone(e) from None
        except Exception as e:
            # Twisted's ConnectError family is not a ConnectionError.
            if type(e).__module__.startswith("twisted.internet.error"):
                raise self._gone(e) from None
            raise
        try:
            document: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise ControlError(f"the node answered {response.code} without JSON") from None
        if response.code != 200:
            raise ControlError(str(document.get("error", f"HTTP {response.code}")))
        return document

    async def stream(
        self,
        path: str,
        query: dict[str, str],
        on_event: Callable[[str, dict[str, Any]], object],
        on_open: Callable[[], object] = lambda: None,
    ) -> None:
        """
        Follow an event stream of the API: ``on_open()`` once it is open,
        then ``on_event(event, data)`` for each event, until it ends.

        :raises ControlError: when the node refuses the stream.
        :raises NodeGone: when the node does not answer, or stops.
        """
        headers = Headers({b"authorization": [b"Bearer " + self._token]})
        url = self._url + path.encode("ascii")
        if query:
            url += b"?" + urlencode(query).encode("ascii")
        try:
            response = await self._agent.request(b"GET", url, headers, None)
        except Exception as e:
            if isinstance(e, ConnectionError) or type(e).__module__.startswith(
                "twisted.internet.error"
            ):
                raise self._gone(e) from None
            raise
        if response.code != 200:
            raw = await readBody(response)
            try:
                error = json.loads(raw).get("error", f"HTTP {response.code}")
            except (ValueError, AttributeError):
                error = f"HTTP {response.code}"
            raise ControlError(str(error))
        on_open()
        ended: Deferred[None] = Deferred()
        response.deliverBody(_EventReader(on_event, ended))
        await ended

    def _gone(self, error: Exception) -> NodeGone:
        control = self._data_dir.child(CONTROL_FILE_NAME)
        return NodeGone(
            f"no node is running for {self._data_dir.path} (stale control file "
            f"{control.path}: the node does not answer: {error})"
        )


class _EventReader(Protocol):
    """
    Reads a ``text/event-stream`` body: each event's ``event:`` and
    ``data:`` lines, up to the blank line that ends it.
    """

    def __init__(
        self, on_event: Callable[[str, dict[str, Any]], object], ended: Deferred[None]
    ) -> None:
        self._on_event = on_event
        self._ended = ended
        self._buffer = b""
        self._event = "message"
        self._data: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                try:
                    data = json.loads(b"\n".join(self._data))
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    self._on_event(self._event, data)
            self._event, self._data = "message", []
            return
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"event":
            self._event = value.decode("utf-8", "replace")
        elif field == b"data":
            self._data.append(value)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone):
            self._ended.errback(NodeGone("the node ended the event stream (it stopped)"))
        else:
            self._ended.errback(NodeGone(f"the event stream broke: {reason.getErrorMessage()}"))
