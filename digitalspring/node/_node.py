# -*- test-case-name: tests.test_node -*-
"""
The node: the service tree of one peer.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from twisted.application.service import IService, MultiService
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from ..channel import MAX_PING_DATA, ConnectionPool, Ping
from ..control import BadRequest, ControlService, peer_from_body
from ..dht import DHT
from ..errors import DigitalSpringError
from ..identity import Identity, PeerID
from ..multicast import RETRY_DELAYS, IMulticastStrategyPlugin, MulticastService
from ..storage import IStore, StoreLimits
from ..transport import ITransport, split_address
from ..web import DEFAULT_WEB, WebNotListening, WebService
from ._groups import GroupRoutes
from ._listen import ListeningService
from ._lock import DataDirLock


class StartFailed(DigitalSpringError):
    """
    The node could not start: a transport it was told to use is not there.
    """


class ListenFailed(StartFailed):
    """
    The node could not listen on one of its addresses.
    """


class NoDHT(DigitalSpringError):
    """
    The node runs without a DHT.
    """


@runtime_checkable
class _Reachable(Protocol):
    """
    A transport that reaches something outside the node when it starts
    (tor): the node has started only once it has.
    """

    name: str

    def reached(self) -> Deferred[None]: ...


@runtime_checkable
class _Bootstrapping(Protocol):
    """
    A transport that joins a network of its own as it starts (tor), and
    says how far it has come.
    """

    name: str

    def bootstrap_status(self) -> dict[str, Any]: ...


class Node(MultiService):
    """
    One peer: its identity, its transports and the services of every layer.

    Build it with :func:`digitalspring.tap.makeService` (or directly, in
    tests and simulations); nothing happens until ``startService``.

    :ivar identity: the peer's key pair.
    :ivar transports: every transport the node may use, by name.
    :ivar pool: its connections with other peers.
    :ivar dht: its Kademlia node, or ``None`` for a node without one.
    :ivar ready: fires once the node listens on all its addresses and has
        reached tor if it uses tor (with ``None``), or fails with
        :class:`StartFailed` (:class:`ListenFailed` for an address).
    :ivar lock: the lock of its data directory, or ``None``.
    :ivar store: its store once open, or ``None``.
    :ivar multicast: its groups, once the store is open, or ``None``.
    :ivar strategies: the multicast strategy plugins its groups run, by
        name, or ``None`` for every installed one.
    :ivar groups: the control routes of its groups (with a control API and
        a store), or ``None``.
    :ivar web: its web client, or ``None``.
    :ivar warnings: what the node found wrong once listening, in words a
        user reads: an address that only this machine can reach.
    """

    log = Logger()

    def __init__(
        self,
        identity: Identity,
        reactor: Any,
        transports: Mapping[str, ITransport],
        listen: list[str],
        pool: ConnectionPool,
        data_dir: FilePath[str] | None = None,
        control: str | None = None,
        dht: DHT | None = None,
        lock: DataDirLock | None = None,
        open_store: Callable[[], Deferred[IStore]] | None = None,
        is_contact: Callable[[PeerID], bool] = lambda peer: False,
        strategies: Mapping[str, IMulticastStrategyPlugin] | None = None,
        mailbox: StoreLimits | None = None,
        web: str | None = None,
        notify_box: int | None = None,
        retry_interval: float = RETRY_DELAYS[-1],
    ) -> None:
        """
        :param listen: addresses to listen on, ``NAME:DESCRIPTION``; each
            ``NAME`` must be in ``transports``.
        :param pool: the connection pool; inbound connections go to it.
        :param data_dir: where the control API publishes its address.
        :param control: the endpoint of the control API, or ``None`` for no
            control API.
        :param dht: the DHT over ``pool``; it publishes the node's record
            once the node listens.
        :param lock: the lock of ``data_dir``, held for this node; let go of
            once the node has stopped.
        :param open_store: opens the node's store (``DATA_DIR/node.db``);
            the node opens it when it starts, before it listens, and runs its
            groups on it (a :class:`~digitalspring.multicast.MulticastService`).
            ``None`` for a node without groups.
        :param is_contact: whether a peer is in the user's address book
            (its invitations are accepted unasked).
        :param strategies: the multicast strategies its groups run, by
            name; every installed one by default.
        :param mailbox: its store's limits when it serves as a mailbox
            (``--mailbox``), else ``None``.
        :param notify_box: the proof of work (leading zero bits) it asks of
            a deposit when it serves as a notification box
            (``--notify-box``), else ``None``.
        :param retry_interval: the most seconds its outbox waits between two
            tries of a peer it cannot reach (``--retry-interval``).
        :param web: the endpoint of its web client (with a control API,
            which hands out the client's login URLs), or ``None`` for none.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.identity = identity
        self.reactor = reactor
        self.transports = dict(transports)
        self.pool = pool
        self.dht = dht
        self.ready: Deferred[None] = Deferred()
        self.warnings: list[str] = []
        self.lock = lock
        self.store: IStore | None = None
        self.multicast: MulticastService | None = None
        self._open_store = open_store
        self._is_contact = is_contact
        self.strategies = dict(strategies) if strategies is not None else None
        self.mailbox = mailbox
        self.notify_box = notify_box
        self.retry_interval = retry_interval
        self._listeners: list[ListeningService] = []
        for transport in self.transports.values():
            # A transport with a life of its own (tor) starts first, stops last.
            if IService.providedBy(transport):
                IService(transport).setServiceParent(self)  # type: ignore[no-untyped-call]
        pool.setServiceParent(self)  # type: ignore[no-untyped-call]
        # With a store, the DHT starts once the groups have: a connection it
        # makes must carry the groups' commands too.
        self._after_store: list[IService] = []
        if dht is not None:
            if open_store is None:
                dht.setServiceParent(self)  # type: ignore[no-untyped-call]
            else:
                self._after_store.append(dht)
        for address in listen:
            name, description = split_address(address)
            transport = self.transports[name]
            # Parented (and so started) once the store is open: see startService.
            listener = ListeningService(transport, description, pool.listening_factory(transport))
            self._listeners.append(listener)
        self.groups: GroupRoutes | None = None
        self.web: WebService | None = None
        if control is not None and data_dir is not None:
            routes: dict[str, Any] = {
                "status": (b"GET", self._control_status),
                "ping": (b"POST", self._control_ping),
                "dht-lookup": (b"POST", self._control_dht_lookup),
                "dht-join": (b"POST", self._control_dht_join),
            }
            streams: dict[str, Any] = {}
            if open_store is not None:
                self.groups = GroupRoutes(self, data_dir)
                routes.update(self.groups.routes())
                streams.update(self.groups.streams())
            if web is not None:
                send_file = None if self.groups is None else self.groups.send_file
                self.web = WebService(reactor, data_dir, routes, streams, send_file, web)
                self.web.setServiceParent(self)  # type: ignore[no-untyped-call]
            routes["web-login"] = (b"POST", self._control_web_login)
            ControlService(reactor, data_dir, routes, control, streams).setServiceParent(  # type: ignore[no-untyped-call]
                self
            )

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

    async def ping(self, peer_id: PeerID, size: int = 56) -> dict[str, float | bool]:
        """
        Ping a peer through the secure channel.

        :returns: ``{"rtt_ms": ..., "connect_ms": ..., "new": ...}``: the
            round-trip time of the Ping itself, the time it took to connect
            first (0 on a live connection), and whether it connected.
        :raises PeerUnreachable: when the peer cannot be reached.
        """
        start = self.reactor.seconds()
        new = peer_id not in self.pool.connections()
        await self.pool.connect(peer_id)
        connected = self.reactor.seconds()
        await self.pool.call(peer_id, Ping, data=os.urandom(size))
        done = self.reactor.seconds()
        return {
            "rtt_ms": (done - connected) * 1000,
            "connect_ms": (connected - start) * 1000,
            "new": new,
        }

    def status(self) -> dict[str, Any]:
        """
        What the node is: its peer ID, addresses and connected peers, the
        counts of its connections (live, refused by reason, trimmed, failed
        channels; see :meth:`ConnectionPool.status`), its DHT's routing
        table, and how far each transport with a network of its own (tor)
        has bootstrapped, by name (see
        :meth:`~digitalspring.transport.TorTransport.bootstrap_status`), and
        what it caught up of its groups.
        """
        return {
            "peer_id": str(self.peer_id),
            "addresses": self.addresses(),
            "warnings": self.warnings,
            "connections": sorted(str(peer) for peer in self.pool.connections()),
            "network": self.pool.status(),
            "dht": None if self.dht is None else self.dht.status(),
            "bootstrap": {
                transport.name: transport.bootstrap_status()
                for transport in self.transports.values()
                if isinstance(transport, _Bootstrapping)
            },
            "catch_up": None if self.multicast is None else self._catch_up_status(),
        }

    def _catch_up_status(self) -> dict[str, Any]:
        """
        What the node caught up of its groups: when it started (each
        group's messages, and whether that catch-up is over; ``None`` when
        it caught up nothing at start), since it started (groups and
        messages, every catch-up together), and the last reports of the
        groups not caught up whole (missing messages, sources that held
        back or lied).
        """
        multicast = self.multicast
        assert multicast is not None
        reports = list(multicast.caught_up.values())
        at_start = multicast.caught_up_at_start
        return {
            "groups": len(multicast.caught_up_since_start),
            "messages": sum(multicast.caught_up_since_start.values()),
            "at_start": None
            if at_start is None
            else {
                "finished": multicast.at_start_finished,
                "groups": len(at_start),
                "messages": sum(r.committed for r in at_start.values()),
                "committed": {g.hex(): r.committed for g, r in sorted(at_start.items())},
            },
            "incomplete": [
                r.as_json() for r in reports if not r.caught_up or r.held_back or r.misbehaved
            ],
        }

    async def dht_lookup(self, peer_id: PeerID) -> dict[str, Any]:
        """
        Look up a peer's record in the DHT, for ``dspring dht lookup``.

        :returns: ``{"found": ..., "record": ..., "hops": ..., "rpcs": ...,
            "duration_ms": ..., "path": [...]}``; ``record`` is ``None`` when
            it was not found.
        :raises NoDHT: when the node runs without a DHT.
        """
        if self.dht is None:
            raise NoDHT("this node runs without a DHT")
        result = await self.dht.find_peer(peer_id)
        return {
            "peer": str(peer_id),
            "found": result.found is not None,
            "record": None if result.found is None else result.found.record.as_json(),
            "hops": result.hops,
            "rpcs": result.rpcs,
            "duration_ms": result.duration * 1000,
            "deadline_reached": result.deadline_reached,
            "path": [
                {
                    "peer": str(hop.peer_id),
                    "hop": hop.hop,
                    "outcome": hop.outcome,
                    "rtt_ms": hop.rtt * 1000,
                }
                for hop in result.path
            ],
        }

    async def _control_status(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    async def _control_dht_lookup(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.dht_lookup(peer_from_body(body))

    async def _control_dht_join(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        ``dspring dht join``: join the DHT through a peer (see
        :meth:`~digitalspring.dht.IDistributedHashTable.join`).
        """
        peer_id = peer_from_body(body)
        address = body.get("address")
        if not isinstance(address, str):
            raise BadRequest("address is the peer's TRANSPORT:ADDRESS")
        if self.dht is None:
            raise NoDHT("this node runs without a DHT")
        joined = await self.dht.join(peer_id, address)
        return {
            "peer": str(joined.peer_id),
            "address": joined.address,
            "contacts": joined.contacts,
            "published_to": joined.published_to,
        }

    async def _control_web_login(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        ``dspring web``: a one-time login URL of the web client.
        """
        if self.web is None:
            raise WebNotListening(
                f"this node runs without a web client: start it with --web {DEFAULT_WEB}"
            )
        return await self.web.control_login(body)

    async def _control_ping(self, body: dict[str, Any]) -> dict[str, Any]:
        peer_id = peer_from_body(body)
        size = body.get("size", 56)
        if not isinstance(size, int) or not 0 <= size <= MAX_PING_DATA:
            raise BadRequest(f"size is a number of bytes from 0 to {MAX_PING_DATA}")
        return {"peer": str(peer_id), **(await self.ping(peer_id, size))}

    def startService(self) -> None:
        self.log.info("Digital Spring node {peer_id} starting", peer_id=str(self.peer_id))
        if self.lock is not None:
            self.lock.record_pid()
        super().startService()  # type: ignore[no-untyped-call]
        if self._open_store is None:
            self._listen()
            return
        self._open_store().addCallbacks(self._store_opened, self._store_refused)

    def _store_opened(self, store: IStore) -> None:
        """
        Start the groups on the open store, then listen: the multicast
        service adds its commands to the pool before any peer can connect.
        """
        self.store = store
        if not self.running:
            # Stopped while the store was opening.
            store.close()
            return
        self.multicast = MulticastService(
            self.identity,
            self.reactor,
            self.pool,
            store,
            is_contact=self._is_contact,
            strategies=self.strategies,
            mailbox=self.mailbox,
            notify_box=self.notify_box,
            dht=self.dht,
            retry_interval=self.retry_interval,
        )
        self.multicast.setServiceParent(self)  # type: ignore[no-untyped-call]
        if self.groups is not None:
            self.groups.started(self.multicast)
        self._listen()

    def _store_refused(self, failure: Failure) -> None:
        """
        The store cannot be opened (a damaged file, one from a newer
        version, the wrong key): the node does not start, and the file is
        left as it is.
        """
        reason = failure.getErrorMessage()
        if not isinstance(failure.value, DigitalSpringError):
            self.log.failure("cannot open the node's store", failure)
        self.log.critical("cannot open the node's store: {reason}", reason=reason)
        self.ready.errback(StartFailed(reason))

    def _listen(self) -> None:
        if not self.running:
            return
        for service in [*self._after_store, *self._listeners]:
            service.setServiceParent(self)  # type: ignore[no-untyped-call]
        waiting: list[Deferred[Any]] = []
        for listener in self._listeners:
            assert listener.listening is not None, "started services listen"
            waiting.append(listener.listening)
        reachable = [t for t in self.transports.values() if isinstance(t, _Reachable)]
        waiting.extend(transport.reached() for transport in reachable)
        d = DeferredList(waiting, consumeErrors=True, fireOnOneErrback=True)
        # Say "ready" (and publish) from the running reactor, not from inside
        # startService: twistd starts services before the reactor installs
        # its signal handlers, and whoever waits for "ready" may then send
        # SIGTERM at once and expect a clean shutdown.
        d.addCallbacks(
            lambda results: self.reactor.callLater(0, self._listening),
            self._cannot_start,
            errbackArgs=(reachable,),
        )

    def stopService(self) -> Deferred[None]:
        d: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]

        def close_store(result: object) -> object:
            # After every service, the groups' among them, has stopped.
            if self.store is None:
                return result
            return self.store.close().addCallback(lambda ignored: result)

        d.addBoth(close_store)

        def release(result: object) -> object:
            if self.lock is not None:
                self.lock.release()
            return result

        return d.addBoth(release)

    def _listening(self) -> None:
        addresses = self.addresses()
        for address in addresses:
            self.log.info("listening on {address}", address=address)
        self.log.info(
            "node {peer_id} ready at {addresses}",
            peer_id=str(self.peer_id),
            addresses=addresses,
        )
        self.warnings = self._unreachable_addresses()
        for warning in self.warnings:
            self.log.warn("{problem}", problem=warning)
        if self.dht is not None:
            self.dht.addresses_changed()
        self.ready.callback(None)

    def _unreachable_addresses(self) -> list[str]:
        """
        A warning for each port bound to every interface whose published
        address is a loopback one (what the tcp transport publishes without
        ``--advertise``): peers on other machines cannot dial it.
        """
        warnings: list[str] = []
        for listener in self._listeners:
            bound = None if listener.port is None else listener.port.getHost()
            if not isinstance(bound, IPv4Address | IPv6Address):
                continue
            if not ipaddress.ip_address(bound.host).is_unspecified:
                continue
            for address in listener.transport.published_addresses():
                if _is_loopback_at(address, bound.port):
                    warnings.append(
                        f"{listener.transport.name}:{listener.description} listens on every "
                        f"interface but publishes {listener.transport.name}:{address}, which "
                        "only this machine can reach: give --advertise HOST, the host name "
                        "or IP address other machines reach this one at"
                    )
        return warnings

    def _cannot_start(self, failure: Failure, reachable: list[_Reachable]) -> None:
        first = failure.value.subFailure  # type: ignore[union-attr]
        index = failure.value.index  # type: ignore[union-attr]
        reason = _reason(first)
        if index < len(self._listeners):
            listener = self._listeners[index]
            address = f"{listener.transport.name}:{listener.description}"
            self.log.critical(
                "cannot listen on {address}: {reason}", address=address, reason=reason
            )
            error: StartFailed = ListenFailed(f"cannot listen on {address}: {reason}")
        else:
            name = reachable[index - len(self._listeners)].name
            self.log.critical("cannot use {name}: {reason}", name=name, reason=reason)
            error = StartFailed(f"cannot use {name}: {reason}")
        self.ready.errback(error)


def _reason(failure: Failure) -> str:
    """
    Why a start failed, in a few words: for a port in use, the system's
    words ("Address already in use"), not Twisted's sentence around them.
    """
    error = failure.value
    if isinstance(error, CannotListenError) and isinstance(error.socketError, OSError):
        if error.socketError.strerror:
            return str(error.socketError.strerror)
    return failure.getErrorMessage()


def _is_loopback_at(address: str, port: int) -> bool:
    """
    Whether ``HOST:PORT`` (``[HOST]:PORT`` for IPv6) is a loopback IP
    address at ``port``.
    """
    host, _, number = address.rpartition(":")
    try:
        return number == str(port) and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
