# -*- test-case-name: tests.test_web -*-
"""
The service that serves the web client while the node runs, on loopback
only, and hands out its one-time login URLs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from ..control import IDLE_TIMEOUT, BoundedConnections, Handler, StreamHandler, allowed_hosts
from ..directory import AddressBook
from ..errors import DigitalSpringError
from ._sessions import Sessions
from ._site import WebResource, WebSite

#: ``--web`` to pick a free port on loopback.
DEFAULT_WEB = "tcp:0:interface=127.0.0.1"

_FORMS = "tcp:PORT:interface=127.0.0.1 or tcp6:PORT:interface=\\:\\:1"


class BadWebEndpoint(DigitalSpringError):
    """
    The web client cannot listen there: it listens on a loopback TCP
    address only, so that no other machine can reach it.
    """


class WebNotListening(DigitalSpringError):
    """
    The web client does not listen (yet, or at all): no login URL.
    """


def check_web_endpoint(description: str) -> str:
    """
    Check that the web client may listen on a server endpoint string:
    ``tcp`` or ``tcp6`` on a loopback IP address.

    :returns: ``description``.
    :raises BadWebEndpoint: saying what is wrong and what to give.
    """
    kind = description.partition(":")[0]
    if kind not in ("tcp", "tcp6"):
        raise BadWebEndpoint(f"the web client listens on {_FORMS}, not on {description!r}")
    try:
        endpoint = serverFromString(None, description)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise BadWebEndpoint(f"bad web endpoint {description!r}: {e}") from None
    assert isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint)
    interface = str(endpoint._interface)
    try:
        loopback = ipaddress.ip_address(interface).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        where = f"on {interface}" if interface else "on every interface"
        raise BadWebEndpoint(
            f"the web client listens on loopback only ({_FORMS}); {description!r} would "
            f"listen {where}, where other machines could reach it"
        )
    return description


class WebService(Service):
    """
    Serves the web client while the node runs.

    :param routes: the node's control routes (the pages run some of them:
        see :data:`~digitalspring.web._site.PAGE_ROUTES`).
    :param streams: the node's event streams.
    :param data_dir: where the address book is.
    :param send_file: sends uploaded bytes as a file, or ``None``.
    :param endpoint: a server endpoint string that
        :func:`check_web_endpoint` accepts.
    :raises BadWebEndpoint: when it does not.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        data_dir: FilePath[str],
        routes: Mapping[str, tuple[bytes, Handler]],
        streams: Mapping[str, StreamHandler],
        send_file: Callable[[str, bytes, str], Awaitable[dict[str, Any]]] | None,
        endpoint: str = DEFAULT_WEB,
    ) -> None:
        self.reactor = reactor
        self.endpoint = check_web_endpoint(endpoint)
        self.sessions = Sessions(reactor)
        self.resource = WebResource(
            reactor, self.sessions, routes, streams, AddressBook.in_data_dir(data_dir), send_file
        )
        self.url: str | None = None
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        site = WebSite(self.resource, self.reactor, IDLE_TIMEOUT)
        factory = BoundedConnections(site)
        d: Deferred[IListeningPort] = serverFromString(self.reactor, self.endpoint).listen(factory)
        d.addCallbacks(self._listening, self._cannot_listen)

    def _listening(self, port: IListeningPort) -> None:
        if not self.running:
            port.stopListening()
            return
        self._port = port
        address = port.getHost()
        assert isinstance(address, IPv4Address | IPv6Address)
        self.resource.listening(allowed_hosts(address), address.port)
        host = f"[{address.host}]" if isinstance(address, IPv6Address) else address.host
        self.url = f"http://{host}:{address.port}/"
        self.log.info("web client at {url} (run 'dspring web' to log in)", url=self.url)

    def _cannot_listen(self, failure: Failure) -> None:
        self.log.error(
            "cannot serve the web client on {endpoint}: {reason}",
            endpoint=self.endpoint,
            reason=failure.getErrorMessage(),
        )

    def login_url(self) -> str:
        """
        A one-time login URL: opening it logs a browser in.

        :raises WebNotListening: when the client does not listen.
        """
        if self.url is None:
            raise WebNotListening("the web client is not listening (see the node's log)")
        return f"{self.url}login?token={self.sessions.new_login()}"

    async def control_login(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        The control route ``web-login``: ``{"url": LOGIN_URL}``.
        """
        return {"url": self.login_url()}

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.url = None
        self.resource.dispatcher.close_streams()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None
