# -*- test-case-name: tests.test_node -*-
"""
A service that keeps one transport listening on one address.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..transport import ITransport


class ListeningService(Service):
    """
    Listens on ``description`` with ``transport`` while running.

    :ivar listening: a ``Deferred`` made at start that fires with the port
        once listening, or fails with why it could not listen.
    """

    log = Logger()

    def __init__(self, transport: ITransport, description: str, factory: IProtocolFactory):
        self.transport = transport
        self.description = description
        self.factory = factory
        self.listening: Deferred[IListeningPort] | None = None
        self._port: IListeningPort | None = None

    def __repr__(self) -> str:
        return f"<ListeningService {self.transport.name}:{self.description}>"

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.listening = self.transport.listen(self.description, self.factory)
        self.listening.addCallback(self._listened)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self._port = port
        return port

    @property
    def port(self) -> IListeningPort | None:
        """
        The listening port, once listening.
        """
        return self._port

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]
        listening, self.listening = self.listening, None
        if self._port is not None:
            port, self._port = self._port, None
            d = port.stopListening()
            return d if isinstance(d, Deferred) else succeed(None)
        if listening is not None and not listening.called:
            # Stopped before the port came up: drop it when it does.
            def drop(result: IListeningPort | Failure | None) -> None:
                # None: the node's DeferredList consumed the failure.
                if result is None or isinstance(result, Failure):
                    return None
                self._port = None
                result.stopListening()
                return None

            listening.addBoth(drop)
        return succeed(None)
