# -*- test-case-name: tests.test_pool -*-
"""
The connection pool: one secure AMP connection per peer, dialled by peer ID.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from .._ratelimit import RateLimitedLog
from ..directory import IPeerDirectory
from ..errors import DigitalSpringError
from ..identity import Identity, PeerID
from ..transport import ITransport, TransportError, split_address
from ._admission import Admission, AdmissionFactory, ConnectionLimits, KeyedBuckets
from ._amp import PeerConnection
from ._secure import (
    ChannelError,
    ChannelSettings,
    SecureChannelFactory,
    SecureChannelProtocol,
    Truncated,
)

#: Why the pool closed an authenticated inbound connection at once, by the
#: reason counted in ``dspring status``.
REFUSED_AFTER_HANDSHAKE = {
    "peer-rate": "the peer reconnects too often",
    "connections": "the node has as many connections as it keeps",
}


#: Seconds a connection dropped by the simultaneous-dial rule keeps answering
#: before it closes: a few round trips, on Tor too.
DUPLICATE_GRACE = 10.0


class PeerUnreachable(DigitalSpringError):
    """
    The peer could not be reached at any of its addresses.
    """


class BackingOff(PeerUnreachable):
    """
    The peer was unreachable a moment ago; it is not dialled again yet.
    """


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def buildProtocol(self, addr: IAddress | None) -> PeerConnection:
        return PeerConnection(self.pool, self.pool.locators)


class ConnectionPool(Service):
    """
    Dials peers by ID, accepts their connections, and keeps one connection
    per pair of peers.

    When both peers dial each other at once, both keep the connection
    dialled by the peer whose ID sorts first, and close the other.
    Connections close after ``idle_timeout`` seconds without use (a peer's
    Pings do not count).  A peer that could not be reached is not dialled
    again before a backoff delay that doubles with each failure.

    Every bound of ``limits`` holds: inbound connections are admitted by
    source address before their handshake (:class:`AdmissionFactory`); once
    authenticated, a peer that reconnects too often or an inbound connection
    beyond ``max_connections`` is closed at once; above ``high_water`` live
    connections, the inbound ones idle longest (past their grace period,
    with no request in flight) are closed down to ``low_water``.

    :ivar server_factory: the factory a node listens with.
    :ivar channel_factory: the secure channel factory behind it, which
        dials.
    :ivar admission: the counts of inbound connections, and refusals by
        reason.
    :ivar trimmed: how many idle connections were closed to stay under
        ``high_water``.
    :ivar locators: callables that give each connection a layer's
        :class:`amp.CommandLocator`; append before starting.
    """

    log = Logger()

    def __init__(
        self,
        identity: Identity,
        clock: Any,
        transports: Mapping[str, ITransport],
        directory: IPeerDirectory,
        idle_timeout: float = 300.0,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        channel_settings: ChannelSettings | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.identity = identity
        self.clock = clock
        self.transports = transports
        self.directory = directory
        self.idle_timeout = idle_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.limits = limits = limits or ConnectionLimits()
        self.locators: list[Callable[[PeerConnection], Any]] = []
        self.channel_factory = SecureChannelFactory(
            identity, _ConnectionFactory(self), clock, initiator=False, settings=channel_settings
        )
        self._log = RateLimitedLog(self.log, clock)
        self.admission = Admission(limits, clock.seconds())
        self.server_factory = AdmissionFactory(
            self.channel_factory, clock, self.admission, log=self._log
        )
        self._sharing_source: AdmissionFactory | None = None
        self.trimmed = 0
        self._peer_rates = KeyedBuckets(
            limits.peer_rate, limits.peer_burst, limits.tracked_addresses
        )
        # One info line per connection, but a flood of them stays bounded.
        self._connected_log = RateLimitedLog(self.log, clock, burst=50, per_second=1.0)
        self._connected_at: dict[PeerID, float] = {}
        #: Connections closed by the simultaneous-dial rule, still answering
        #: what was sent on them, and when they close.
        self._draining: dict[PeerConnection, Any] = {}
        self._connections: dict[PeerID, PeerConnection] = {}
        self._waiting: dict[PeerID, list[Deferred[PeerConnection]]] = {}
        self._dialling: set[PeerID] = set()
        self._failures: dict[PeerID, tuple[int, float]] = {}

    def connections(self) -> dict[PeerID, PeerConnection]:
        """
        The live connection of every connected peer.
        """
        return dict(self._connections)

    def listening_factory(self, transport: ITransport) -> IProtocolFactory:
        """
        The factory to listen with on ``transport``: :attr:`server_factory`,
        or for a transport whose inbound connections all come from one
        source address (its ``shares_source_address`` is true, as for tor's
        onion services), one without the per-address limits.
        """
        if not getattr(transport, "shares_source_address", False):
            return self.server_factory
        if self._sharing_source is None:
            self._sharing_source = self.server_factory.sharing_source()
        return self._sharing_source

    def status(self) -> dict[str, Any]:
        """
        Counts for ``dspring status``: live connections each way, inbound
        handshakes under way, connections refused by reason, idle ones
        trimmed, secure channels that failed, by error, and the bytes the
        channels sent and received since the node started (see
        :class:`~digitalspring.channel.Traffic`).
        """
        inbound = sum(1 for c in self._connections.values() if not c.initiator)
        failures = self.channel_factory.failures
        return {
            "inbound": inbound,
            "outbound": len(self._connections) - inbound,
            "handshaking": self.admission.handshaking,
            "refused": dict(sorted(self.admission.refused.items())),
            "trimmed": self.trimmed,
            "channel_failures": dict(sorted(failures.items())),
            "bytes_sent": self.channel_factory.traffic.sent,
            "bytes_received": self.channel_factory.traffic.received,
        }

    def connect(
        self, peer_id: PeerID, addresses: Sequence[str] | None = None
    ) -> Deferred[PeerConnection]:
        """
        The connection with ``peer_id``: the live one, or a new one.

        :param addresses: where to dial it, ``NAME:ADDRESS``, when the caller
            knows (the DHT does, for contacts it learned in a lookup); by
            default the directory says.
        :returns: a Deferred that fires with the :class:`PeerConnection`.
        :raises PeerUnreachable: (through the Deferred) when no address of
            the peer answered, or the peer is in its backoff delay.
        :raises UnknownPeer: (through the Deferred) when the directory has
            no address for it.
        """
        if peer_id == self.identity.peer_id:
            return Deferred.fromCoroutine(self._refuse_self())
        live = self._connections.get(peer_id)
        if live is not None:
            return succeed(live)
        d: Deferred[PeerConnection] = Deferred()
        self._waiting.setdefault(peer_id, []).append(d)
        if peer_id not in self._dialling:
            self._dialling.add(peer_id)
            dial = Deferred.fromCoroutine(self._dial(peer_id, addresses))
            dial.addErrback(self._dial_failed, peer_id)
        return d

    async def call(
        self,
        peer_id: PeerID,
        command: type[amp.Command],
        addresses: Sequence[str] | None = None,
        **arguments: Any,
    ) -> Any:
        """
        Send ``command`` to ``peer_id`` and wait for its answer, connecting
        first if need be.

        When both peers dial each other at once, both keep one connection
        and close the other, and the request may have gone out on the one
        closed; the peer may even close it before this side has seen the
        other connection open.  So a request whose connection is lost is
        sent once more, on the connection :meth:`connect` then gives (the
        one kept, or a new one).  Commands sent through here must be safe
        to receive twice.

        :param addresses: as for :meth:`connect`.
        :returns: the answer, as :meth:`amp.AMP.callRemote` gives it.
        :raises PeerUnreachable: as :meth:`connect` does.
        """
        _, answer = await self.request(peer_id, command, addresses, **arguments)
        return answer

    async def request(
        self,
        peer_id: PeerID,
        command: type[amp.Command],
        addresses: Sequence[str] | None = None,
        **arguments: Any,
    ) -> tuple[PeerConnection, Any]:
        """
        As :meth:`call`, with the connection the answer came on: not always
        the one the pool holds by then, when both peers dialled at once.
        """
        connection = await self.connect(peer_id, addresses)
        try:
            return connection, await connection.callRemote(command, **arguments)
        except (ConnectionLost, ConnectionDone, Truncated):
            connection = await self.connect(peer_id, addresses)
            return connection, await connection.callRemote(command, **arguments)

    def dial(
        self, peer_id: PeerID, address: str, pattern: str | None = None
    ) -> Deferred[IAddress]:
        """
        Dial ``address`` expecting ``peer_id`` (Noise IK, or ``pattern``), on
        a new connection even when one is live: what proves that the peer
        listens there.  The connection joins the pool like any other (the
        pool keeps one per peer).

        :returns: a Deferred that fires with the other end's address once
            the handshake proved the peer.
        :raises PeerUnreachable: (through the Deferred) when this node has
            no transport for the address.
        """

        async def dial() -> IAddress:
            name, description = split_address(address)
            transport = self.transports.get(name)
            if transport is None:
                raise PeerUnreachable(f"this node has no {name} transport")
            factory = self.channel_factory.for_dialling(peer_id, pattern)
            channel = await transport.connect(description, factory)
            assert isinstance(channel, SecureChannelProtocol)
            await channel.when_secured()
            there: IAddress = channel.getPeer()
            return there

        return Deferred.fromCoroutine(dial())

    def forget_failures(self, peer_id: PeerID) -> None:
        """
        Dial ``peer_id`` at the next call, whatever its earlier failures'
        backoff says: for a caller whose own schedule already spaces its
        tries to that peer (a member collecting from its notification
        boxes), so that the pool's backoff, grown while this node was off
        the network, does not outlast the node's return.
        """
        self._failures.pop(peer_id, None)

    async def _refuse_self(self) -> PeerConnection:
        raise PeerUnreachable("a node does not connect to itself")

    async def _dial(self, peer_id: PeerID, addresses: Sequence[str] | None) -> None:
        failures = self._failures.get(peer_id)
        if failures is not None and failures[1] > self.clock.seconds():
            raise BackingOff(
                f"{peer_id} was unreachable; next try in "
                f"{failures[1] - self.clock.seconds():.1f} s"
            )
        if addresses is None:
            addresses = await self.directory.resolve(peer_id)
        factory = self.channel_factory.for_dialling(peer_id)
        errors = []
        for address in addresses:
            if peer_id in self._connections:
                return
            try:
                name, description = split_address(address)
                transport = self.transports.get(name)
                if transport is None:
                    errors.append(f"{address}: this node has no {name} transport")
                    continue
                channel = await transport.connect(description, factory)
                assert isinstance(channel, SecureChannelProtocol)
                await channel.when_secured()
                # _connection_made has registered it and answered the waiters.
                return
            except (ChannelError, TransportError, OSError) as e:
                errors.append(f"{address}: {e}")
            except Exception as e:
                errors.append(f"{address}: {e.__class__.__name__}: {e}")
        if peer_id in self._connections:
            return
        raise PeerUnreachable(f"cannot reach {peer_id}: " + "; ".join(errors))

    def _dial_failed(self, failure: Failure, peer_id: PeerID) -> None:
        self._dialling.discard(peer_id)
        if peer_id in self._connections:
            return
        if not isinstance(failure.value, BackingOff):
            count = self._failures.get(peer_id, (0, 0.0))[0] + 1
            delay = min(self.backoff_base * 2 ** (count - 1), self.backoff_max)
            self._failures[peer_id] = (count, self.clock.seconds() + delay)
        # Peers can make the DHT dial addresses that do not answer.
        self._log.info(
            "dial-failed",
            "cannot connect to {peer}: {reason}",
            peer=str(peer_id),
            reason=failure.getErrorMessage(),
        )
        for d in self._waiting.pop(peer_id, []):
            d.errback(failure)

    def _connection_made(self, connection: PeerConnection) -> None:
        peer_id = connection.peer_id
        if not self.running:
            connection.transport.loseConnection()  # type: ignore[union-attr]
            return
        if not connection.initiator:
            reason = self._refusal(connection)
            if reason is not None:
                self.admission.refused[reason] += 1
                self._log.info(
                    "refused:" + reason,
                    "closed a connection from {peer}: {why}",
                    peer=str(peer_id),
                    why=REFUSED_AFTER_HANDSHAKE[reason],
                    reason=reason,
                )
                connection.transport.loseConnection()  # type: ignore[union-attr]
                return
        existing = self._connections.get(peer_id)
        if existing is not None and existing is not connection:
            keep = self._preferred(existing, connection)
            drop = connection if keep is existing else existing
            self.log.debug(
                "two connections with {peer}: keeping the one {who} dialled",
                peer=peer_id,
                who="we" if keep.initiator else "they",
            )
            self._connections[peer_id] = keep
            self._drain(drop)
        else:
            self._connections[peer_id] = connection
        if self._connections[peer_id] is connection:
            self._connected_at[peer_id] = self.clock.seconds()
            self._connected_log.info(
                "connected",
                "connected with {peer} ({direction}, {address})",
                # Formatted only if logged: most connections' lines are
                # filtered out or held back, and a peer ID's text costs.
                peer=peer_id,
                direction="outbound" if connection.initiator else "inbound",
                address=connection.transport.getPeer(),  # type: ignore[union-attr]
            )
        self._dialling.discard(peer_id)
        self._failures.pop(peer_id, None)
        live = self._connections[peer_id]
        for d in self._waiting.pop(peer_id, []):
            d.callback(live)
        self._trim()

    def _refusal(self, connection: PeerConnection) -> str | None:
        """
        Why an authenticated inbound connection must be closed at once, or
        ``None``.
        """
        if not self._peer_rates.take(connection.peer_id, self.clock.seconds()):
            return "peer-rate"
        if connection.peer_id not in self._connections:
            if len(self._connections) >= self.limits.max_connections:
                self._trim()
            if len(self._connections) >= self.limits.max_connections:
                return "connections"
        return None

    def _trim(self) -> None:
        """
        Above ``high_water`` live connections, close the inbound ones that
        have been idle longest, down to ``low_water``; never one in its
        grace period or with a request in flight.
        """
        limits = self.limits
        excess = len(self._connections) - limits.low_water
        if len(self._connections) <= limits.high_water:
            return
        settled = self.clock.seconds() - limits.grace_period
        idle = sorted(
            (
                c
                for peer_id, c in self._connections.items()
                if not c.initiator
                and c.requests_in_flight == 0
                and self._connected_at[peer_id] <= settled
            ),
            key=lambda c: c.last_active,
        )
        for connection in idle[:excess]:
            self.trimmed += 1
            self.log.debug(
                "closing idle {peer}: too many connections", peer=str(connection.peer_id)
            )
            del self._connections[connection.peer_id]
            del self._connected_at[connection.peer_id]
            connection.transport.loseConnection()  # type: ignore[union-attr]

    def _preferred(self, a: PeerConnection, b: PeerConnection) -> PeerConnection:
        """
        Of two connections with one peer, the one both sides keep: the one
        dialled by the smaller peer ID; of two dialled by the same side, the
        newer (the older is likely dead).
        """
        if a.initiator == b.initiator:
            return b
        we_are_smaller = self.identity.peer_id.public_key < a.peer_id.public_key
        return a if a.initiator == we_are_smaller else b

    def _drain(self, connection: PeerConnection) -> None:
        """
        Stop using ``connection``, one of two with the same peer, and close
        it :data:`DUPLICATE_GRACE` seconds later.  Until then it still
        answers: the peer, which may not have seen the other connection open
        yet, may still send requests on it (and answers to ours may still be
        on their way), and both would be lost if it closed at once.
        """
        if connection not in self._draining:
            self._draining[connection] = self.clock.callLater(
                DUPLICATE_GRACE,
                connection.transport.loseConnection,  # type: ignore[union-attr]
            )

    def _connection_lost(self, connection: PeerConnection, reason: Failure) -> None:
        closing = self._draining.pop(connection, None)
        if closing is not None and closing.active():
            closing.cancel()
        peer_id = connection.peer_id
        if self._connections.get(peer_id) is connection:
            del self._connections[peer_id]
            del self._connected_at[peer_id]

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self.channel_factory.close_all()
