# -*- test-case-name: tests.test_dht_hostile -*-
"""
Which addresses the routing table may hold for a peer.

A DHT request carries ``origin``, the addresses at which its sender says it
can be dialled.  The channel proved who sent it, but not where it listens:
taken on trust, an origin lets one machine pose as many networks (and slip
past the routing table's subnet limit), and makes every node that learns
the contact dial an address the sender made up.  So:

* what a connection's other end is, is read from the connection itself
  (``getPeer()``), never from the origin: :func:`source_of` and
  :func:`dialled_address`;
* an origin's ``tcp`` address with an IP literal, and a ``memory`` address,
  must name the host the connection came from, or it is dropped at once
  (:func:`check_origin`);
* what is left (the port, a DNS name, an onion service) enters the table only
  after a **dial-back**: this node dials that one address expecting that peer
  ID (Noise IK), and only if the handshake proves the peer there is the
  address kept.  :class:`DialBacks` runs them, a few at a time, within a
  rate per source address and a rate in total, from a bounded queue.

An address this node reached itself (it dialled it and the handshake proved
the peer) needs no dial-back: :func:`dialled_address` names it.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import DigitalSpringError
from ..identity import PeerID
from ..transport import InvalidAddress, MemoryAddress, OnionAddress, split_address
from ..transport._address import format_tcp_address, parse_tcp_address
from ._routing import network_of


class DialBackFailed(DigitalSpringError):
    """
    A peer's claimed address could not be confirmed: dialling it did not
    reach that peer.
    """


def _parts(address: IAddress) -> tuple[str, str, int] | None:
    if isinstance(address, (IPv4Address, IPv6Address)):
        return "tcp", address.host, address.port
    if isinstance(address, MemoryAddress):
        return "memory", address.host, address.port
    if isinstance(address, OnionAddress):
        return "tor", address.host, address.port
    return None


def source_of(address: IAddress) -> str | None:
    """
    The source a connection came from, for per-source limits:
    ``"tcp:IP"`` or ``"memory:HOST"``; ``None`` when nobody can tell (a
    connection to our onion service comes from tor, anonymously).
    """
    parts = _parts(address)
    if parts is None or parts[0] == "tor":
        return None
    return f"{parts[0]}:{parts[1]}"


def source_network(address: IAddress) -> frozenset[str]:
    """
    The networks the subnet limit counts a connection's other end in (see
    :func:`~digitalspring.dht._routing.network_of`): at most one.
    """
    parts = _parts(address)
    if parts is None:
        return frozenset()
    net = network_of(parts[0], parts[1])
    return frozenset() if net is None else frozenset((net,))


def dialled_address(address: IAddress) -> str | None:
    """
    The ``NAME:ADDRESS`` of the other end of a connection this node
    dialled, as a contact address, or ``None`` for a kind of address the
    DHT does not know.
    """
    parts = _parts(address)
    if parts is None:
        return None
    name, host, port = parts
    return f"{name}:{format_tcp_address(host, port)}"


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def check_origin(origin: Sequence[str], source: IAddress) -> tuple[tuple[str, ...], int]:
    """
    The addresses of an origin worth a dial-back, given where the
    connection came from: ``tcp`` addresses with an IP other than the
    source's and ``memory`` addresses of another host are dropped, as are
    malformed ones.

    :returns: the addresses kept, and how many were dropped.
    """
    parts = _parts(source)
    kept: list[str] = []
    dropped = 0
    for address in origin:
        try:
            name, rest = split_address(address)
            if name == "tcp":
                host, _ = parse_tcp_address(rest)
                if network_of("tcp", host) is not None and not (
                    parts is not None and parts[0] == "tcp" and _same_ip(host, parts[1])
                ):
                    raise InvalidAddress(f"{host} is not where the connection came from")
            elif name == "memory":
                host = rest.rpartition(":")[0]
                if parts is None or parts[:2] != ("memory", host):
                    raise InvalidAddress(f"{host} is not where the connection came from")
        except InvalidAddress:
            dropped += 1
            continue
        if address not in kept:
            kept.append(address)
    return tuple(kept), dropped


@define
class _Budget:
    tokens: float
    updated: float


#: The size of a token bucket map at which its full buckets are first
#: swept out.
_FIRST_SWEEP = 64


class _TokenBuckets:
    """
    A token bucket per key, refilled at ``rate`` per second up to
    ``burst``; keys whose bucket is full again are forgotten, and at most
    ``max_keys`` are kept (a key beyond them gets nothing until some are).
    """

    def __init__(self, clock: Any, burst: float, rate: float, max_keys: int) -> None:
        self.clock = clock
        self.burst = burst
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[str, _Budget] = {}
        # Full buckets are swept out whenever the map reaches this size,
        # which then becomes twice what is left: the map stays within
        # twice the keys that took a token in the last ``burst / rate``
        # seconds, at a constant cost per take.
        self._sweep_at = _FIRST_SWEEP

    def take(self, key: str) -> bool:
        now = self.clock.seconds()
        budget = self._buckets.get(key)
        if budget is None:
            if len(self._buckets) >= self._sweep_at:
                self._forget_full(now)
                self._sweep_at = max(_FIRST_SWEEP, 2 * len(self._buckets))
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
                if len(self._buckets) >= self.max_keys:
                    return False
            budget = self._buckets[key] = _Budget(self.burst, now)
        else:
            budget.tokens = min(self.burst, budget.tokens + (now - budget.updated) * self.rate)
            budget.updated = now
        if budget.tokens < 1.0:
            return False
        budget.tokens -= 1.0
        return True

    def _forget_full(self, now: float) -> None:
        refill = self.burst / self.rate
        self._buckets = {
            key: budget for key, budget in self._buckets.items() if now - budget.updated < refill
        }


@define
class _Request:
    peer_id: PeerID
    addresses: tuple[str, ...]
    nets: frozenset[str]
    #: Dial-backs of these addresses already failed.
    failed: int = 0


#: Seconds after a failed dial-back before each try again, while the peer
#: stays connected (see :class:`DialBacks`).
RETRY_DELAYS = (20.0, 60.0)


class DialBacks:
    """
    The dial-backs this node owes the peers that told it where they
    listen: a bounded queue, run at most ``concurrency`` at a time and
    ``rate`` per second (after a burst of ``burst``), with at most
    ``source_burst`` requests per source address and then one per
    ``source_interval`` seconds.  Connections from tor have no source
    address and share the total rate only.

    :param dial: dials one address expecting a peer: fires with the
        other end's ``IAddress`` once the handshake proved the peer, fails
        otherwise.
    :param confirmed: called with the peer, the addresses that proved
        theirs (maybe none), and the networks they were reached in.
    :param connected: whether a peer is connected to us now.  A dial-back
        that failed is tried again after each of ``retry_delays`` while
        the peer stays connected: a peer that talks to us and cannot be
        reached where it says may only be early (a new onion service
        whose descriptor has not reached tor's directories yet), and may
        not talk to us again for an hour.  At most ``max_pending``
        dial-backs wait to be tried again.
    :ivar counts: what happened to requests, by outcome, for ``status()``.
    """

    log = Logger()

    def __init__(
        self,
        clock: Any,
        dial: Callable[[PeerID, str], Deferred[IAddress]],
        confirmed: Callable[[PeerID, tuple[str, ...], frozenset[str]], None],
        rate: float = 2.0,
        burst: int = 16,
        source_burst: int = 4,
        source_interval: float = 30.0,
        max_pending: int = 64,
        concurrency: int = 4,
        addresses_per_peer: int = 2,
        max_sources: int = 10_000,
        connected: Callable[[PeerID], bool] = lambda peer_id: False,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.clock = clock
        self.dial = dial
        self.confirmed = confirmed
        self.connected = connected
        self.retry_delays = tuple(retry_delays)
        self._retrying: dict[PeerID, IDelayedCall] = {}
        self.concurrency = concurrency
        self.max_pending = max_pending
        self.addresses_per_peer = addresses_per_peer
        self._total = _TokenBuckets(clock, burst, rate, 1)
        self._sources = _TokenBuckets(clock, source_burst, 1.0 / source_interval, max_sources)
        self._pending: deque[_Request] = deque()
        self._busy: set[PeerID] = set()
        self._running = 0
        self._wakeup: IDelayedCall | None = None
        self._rate = rate
        self.counts = {
            "requested": 0,
            "confirmed": 0,
            "failed": 0,
            "retried": 0,
            "refused_source_rate": 0,
            "refused_queue_full": 0,
        }

    def __len__(self) -> int:
        return len(self._pending)

    def request(
        self,
        peer_id: PeerID,
        addresses: tuple[str, ...],
        source: str | None,
        nets: frozenset[str] = frozenset(),
    ) -> bool:
        """
        Ask for ``addresses`` of ``peer_id`` to be dialled back.

        :param source: the source address the claim came from (``None``: tor).
        :param nets: networks the peer is counted in besides those of the
            addresses (its source's).
        :returns: whether the request was queued (a peer already queued or
            being dialled is not queued twice).
        """
        if peer_id in self._busy:
            return False
        if len(self._pending) >= self.max_pending:
            self.counts["refused_queue_full"] += 1
            return False
        if source is not None and not self._sources.take(source):
            self.counts["refused_source_rate"] += 1
            return False
        self.counts["requested"] += 1
        self._busy.add(peer_id)
        self._pending.append(_Request(peer_id, addresses[: self.addresses_per_peer], nets))
        self._pump()
        return True

    def stop(self) -> None:
        """
        Forget what is queued and stop waiting for the rate to allow more.
        """
        for request in self._pending:
            self._busy.discard(request.peer_id)
        self._pending.clear()
        for peer_id, call in self._retrying.items():
            self._busy.discard(peer_id)
            if call.active():
                call.cancel()
        self._retrying.clear()
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None

    def _pump(self) -> None:
        while self._pending and self._running < self.concurrency:
            if not self._total.take(""):
                if self._wakeup is None or not self._wakeup.active():
                    self._wakeup = self.clock.callLater(1.0 / self._rate, self._pump)
                return
            request = self._pending.popleft()
            self._running += 1
            Deferred.fromCoroutine(self._run(request)).addErrback(self._unexpected)

    async def _run(self, request: _Request) -> None:
        proved: list[str] = []
        nets = set(request.nets)
        try:
            for address in request.addresses:
                try:
                    reached = await self.dial(request.peer_id, address)
                except Exception as e:
                    self.log.debug(
                        "dial-back of {peer} at {address} failed: {reason}",
                        peer=str(request.peer_id),
                        address=address,
                        reason=str(e) or e.__class__.__name__,
                    )
                    continue
                proved.append(address)
                nets |= source_network(reached)
        finally:
            self._running -= 1
            self._busy.discard(request.peer_id)
        if not proved and self._retry_later(request):
            self._pump()
            return
        self._finish(request, tuple(proved), frozenset(nets))
        self._pump()

    def _finish(self, request: _Request, proved: tuple[str, ...], nets: frozenset[str]) -> None:
        """
        ``request`` is over: count it, confirmed or failed, and say so.
        """
        self.counts["confirmed" if proved else "failed"] += 1
        self.confirmed(request.peer_id, proved, nets)

    def _retry_later(self, request: _Request) -> bool:
        """
        Try ``request`` again later, if it has tries left, its peer is
        still connected, and fewer than ``max_pending`` wait.

        :returns: whether it will be tried again.
        """
        if (
            request.failed >= len(self.retry_delays)
            or len(self._retrying) >= self.max_pending
            or not self.connected(request.peer_id)
        ):
            return False
        delay = self.retry_delays[request.failed]
        request.failed += 1
        self.counts["retried"] += 1
        self._busy.add(request.peer_id)
        self._retrying[request.peer_id] = self.clock.callLater(delay, self._retry, request)
        return True

    def _retry(self, request: _Request) -> None:
        del self._retrying[request.peer_id]
        if len(self._pending) >= self.max_pending:
            # No room in the queue for another try: it failed.
            self._busy.discard(request.peer_id)
            self._finish(request, (), request.nets)
            return
        self._pending.append(request)
        self._pump()

    def _unexpected(self, failure: Failure) -> None:
        self.log.failure("a dial-back failed unexpectedly", failure)
