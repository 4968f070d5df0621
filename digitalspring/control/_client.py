# -*- test-case-name: tests.test_control -*-
"""
The client side of the control API, for the ``dspring`` command.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.filepath import FilePath
from twisted.web.client import URI, Agent, FileBodyProducer, readBody
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

    def _gone(self, error: Exception) -> NodeGone:
        control = self._data_dir.child(CONTROL_FILE_NAME)
        return NodeGone(
            f"no node is running for {self._data_dir.path} (stale control file "
            f"{control.path}: the node does not answer: {error})"
        )
