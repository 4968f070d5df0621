# -*- test-case-name: tests.test_node -*-
"""
The node: the service tree of one peer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import DigitalSpringError
from ..identity import Identity, PeerID
from ..transport import ITransport, split_address
from ._listen import ListeningService


class ListenFailed(DigitalSpringError):
    """
    The node could not listen on one of its addresses.
    """


class Node(MultiService):
    """
    One peer: its identity, its transports and the services of every layer.

    Build it with :func:`digitalspring.tap.makeService` (or directly, in
    tests and simulations); nothing happens until ``startService``.

    :ivar identity: the peer's key pair.
    :ivar transports: every transport the node may use, by name.
    :ivar ready: fires once the node listens on all its addresses (with
        ``None``), or fails with :class:`ListenFailed`.
    """

    log = Logger()

    def __init__(
        self,
        identity: Identity,
        reactor: Any,
        transports: Mapping[str, ITransport],
        listen: list[str],
        factory: IProtocolFactory,
    ) -> None:
        """
        :param listen: addresses to listen on, ``NAME:DESCRIPTION``; each
            ``NAME`` must be in ``transports``.
        :param factory: builds the protocol of every inbound connection.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.identity = identity
        self.reactor = reactor
        self.transports = dict(transports)
        self.factory = factory
        self.ready: Deferred[None] = Deferred()
        self._listeners: list[ListeningService] = []
        for address in listen:
            name, description = split_address(address)
            listener = ListeningService(self.transports[name], description, factory)
            listener.setServiceParent(self)  # type: ignore[no-untyped-call]
            self._listeners.append(listener)

    @property
    def peer_id(self) -> PeerID:
        return self.identity.peer_id

    def addresses(self) -> list[str]:
        """
        The addresses at which this node can be reached now, as
        ``NAME:ADDRESS``: what it publishes to others.
        """
        return [
            f"{name}:{address}"
            for name, transport in sorted(self.transports.items())
            for address in transport.published_addresses()
        ]

    def startService(self) -> None:
        self.log.info("Digital Spring node {peer_id} starting", peer_id=str(self.peer_id))
        super().startService()  # type: ignore[no-untyped-call]
        listening = []
        for listener in self._listeners:
            assert listener.listening is not None, "started services listen"
            listening.append(listener.listening)
        d = DeferredList(listening, consumeErrors=True, fireOnOneErrback=True)
        d.addCallbacks(self._listening, self._cannot_listen)

    def _listening(self, ports: list[tuple[bool, IListeningPort]]) -> None:
        addresses = self.addresses()
        for address in addresses:
            self.log.info("listening on {address}", address=address)
        self.log.info(
            "node {peer_id} ready at {addresses}",
            peer_id=str(self.peer_id),
            addresses=addresses,
        )
        self.ready.callback(None)

    def _cannot_listen(self, failure: Failure) -> None:
        first = failure.value.subFailure  # type: ignore[union-attr]
        listener = self._listeners[failure.value.index]  # type: ignore[union-attr]
        reason = first.getErrorMessage()
        self.log.critical(
            "cannot listen on {address}: {reason}",
            address=f"{listener.transport.name}:{listener.description}",
            reason=reason,
        )
        self.ready.errback(
            ListenFailed(
                f"cannot listen on {listener.transport.name}:{listener.description}: {reason}"
            )
        )
