# -*- test-case-name: tests.test_admission -*-
"""
Admission control: which inbound connections a node lets start a handshake.

A handshake costs the listener Diffie-Hellman operations, and XX lets anyone
authenticate with a fresh key, so the number and rate of connections must be
bounded before any cryptography runs.  Modelled on Tor's DoS subsystem
(``DoSConnectionMaxConcurrentCount``, ``DoSConnectionConnectRate`` and
``-Burst``: concurrent connections and a token bucket of new connections per
source address) and on go-libp2p's resource manager (limits per address and
in total, and on connections still negotiating).

:class:`Admission` is the decision, with no I/O: it is given source keys and
times and says yes, or why not.  :class:`AdmissionFactory` puts it in front
of a :class:`~digitalspring.channel.SecureChannelFactory`: a refused
connection gets ``None`` from ``buildProtocol``, which makes Twisted close the
socket at once, before a single byte is read.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any

from attrs import define, frozen
from twisted.internet.address import IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from .._ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from ._secure import SecureChannelFactory


@frozen
class ConnectionLimits:
    """
    The bounds on a node's connections; ``docs/architecture.rst`` gives the
    reasons for each default.

    Before the handshake, for inbound connections:

    :ivar address_connections: inbound connections at once from one source
        address (an IPv6 /64), handshaking or open.
    :ivar address_rate: new inbound connections per second from one source
        address, in the long run ...
    :ivar address_burst: ... and at once.
    :ivar inbound_connections: inbound connections at once, in total.
    :ivar handshakes: inbound connections still in their handshake, in total.
    :ivar handshake_rate: new inbound connections per second, in total, in
        the long run ...
    :ivar handshake_burst: ... and at once.
    :ivar tracked_addresses: source addresses whose rate is remembered; the
        least recently seen is forgotten first.

    After the handshake, for authenticated connections (the pool's):

    :ivar peer_rate: inbound connections per second from one peer ID, in the
        long run ...
    :ivar peer_burst: ... and at once (each replaces the last: a peer has
        one connection).
    :ivar max_connections: live connections, inbound and outbound; an inbound
        one beyond it is closed.
    :ivar high_water: above this many live connections, idle inbound ones
        are closed ...
    :ivar low_water: ... down to this many.
    :ivar grace_period: seconds a new connection is safe from trimming.
    """

    address_connections: int = 8
    address_rate: float = 1.0
    address_burst: int = 10
    inbound_connections: int = 512
    handshakes: int = 128
    handshake_rate: float = 100.0
    handshake_burst: int = 200
    tracked_addresses: int = 4096
    peer_rate: float = 0.1
    peer_burst: int = 5
    max_connections: int = 384
    high_water: int = 256
    low_water: int = 192
    grace_period: float = 30.0


@define
class TokenBucket:
    """
    ``burst`` tokens that refill at ``rate`` per second.

    :ivar tokens: the tokens left at ``updated``.
    :ivar updated: when ``tokens`` was last brought up to date.
    """

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        """
        A bucket with all its tokens at ``now``.
        """
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        """
        Take one token at ``now``.

        :returns: whether there was one.
        """
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class KeyedBuckets:
    """
    A :class:`TokenBucket` per key, for at most ``size`` keys: the one seen
    least recently is forgotten first.  Forgetting a key gives it a full
    bucket again; to profit, an attacker needs ``size`` other keys in the
    meantime, and the total bounds hold those back.  A bucket that has filled
    up again is forgotten too, as soon as it is the least recently used: it
    is the same as a new one, and the map then holds only the keys seen in
    the last ``burst / rate`` seconds.
    """

    def __init__(self, rate: float, burst: float, size: int) -> None:
        self._rate = rate
        self._burst = burst
        self._size = size
        self._buckets: OrderedDict[Any, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Any, now: float) -> bool:
        """
        Take a token from ``key``'s bucket at ``now``.

        :returns: whether there was one.
        """
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket.full(self._rate, self._burst, now)
            if len(buckets) > self._size:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        taken = bucket.take(now)
        # A bucket full again is the same as a forgotten one: forget the
        # least recently used while they are (two at most per take), so
        # that the map holds the keys seen in the last ``burst / rate``
        # seconds, not ``size`` keys for good.
        for _ in range(2):
            oldest = next(iter(buckets))
            if oldest == key:
                break
            old = buckets[oldest]
            if old.tokens + (now - old.updated) * old.rate < old.burst:
                break
            del buckets[oldest]
        return taken


def source_key(address: IAddress | None) -> str | None:
    """
    The source that a connection from ``address`` counts against: the IP
    address; for IPv6 its /64, which one subscriber usually holds whole;
    the host name of a memory address.  ``None`` for an address that names
    no source host (a UNIX socket; a tor client, which the local tor
    connects for): per-address limits cannot tell such clients apart, and
    only the totals hold them.
    """
    if isinstance(address, IPv6Address):
        ip = ipaddress.IPv6Address(address.host.split("%", 1)[0])
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else None


class Admission:
    """
    Counts inbound connections by source and decides which may start a
    handshake.  No I/O: callers pass the time.

    :ivar refused: refusals so far, by reason; the pool adds its own.
    :ivar inbound: inbound connections now, handshaking or open.
    :ivar handshaking: inbound connections in their handshake now.
    """

    #: Why a connection was refused, by reason: what ``dspring status`` shows.
    REASONS = {
        "address-connections": "too many connections from its address",
        "address-rate": "its address opens connections too fast",
        "inbound-connections": "too many inbound connections",
        "handshakes": "too many handshakes under way",
        "handshake-rate": "connections arrive too fast",
    }

    def __init__(self, limits: ConnectionLimits, now: float) -> None:
        self.limits = limits
        self.refused: Counter[str] = Counter()
        self.inbound = 0
        self.handshaking = 0
        self._by_source: Counter[str] = Counter()
        self._rates = KeyedBuckets(
            limits.address_rate, limits.address_burst, limits.tracked_addresses
        )
        self._total_rate = TokenBucket.full(limits.handshake_rate, limits.handshake_burst, now)

    def admit(self, source: str | None, now: float) -> str | None:
        """
        Count a new inbound connection from ``source`` (``None``: one whose
        source cannot be told apart from others', as for a transport whose
        connections all come from one address; exempt from the per-address
        limits), unless it is refused.

        :returns: ``None`` if it may start its handshake, else the reason it
            may not, one of :attr:`REASONS`.
        """
        limits = self.limits
        reason = None
        if self.inbound >= limits.inbound_connections:
            reason = "inbound-connections"
        elif self.handshaking >= limits.handshakes:
            reason = "handshakes"
        elif source is not None and self._by_source[source] >= limits.address_connections:
            reason = "address-connections"
        elif source is not None and not self._rates.take(source, now):
            reason = "address-rate"
        elif not self._total_rate.take(now):
            reason = "handshake-rate"
        if reason is not None:
            self.refused[reason] += 1
            return reason
        self.inbound += 1
        self.handshaking += 1
        if source is not None:
            self._by_source[source] += 1
        return None

    def handshake_over(self) -> None:
        """
        An admitted connection finished its handshake, or failed it.
        """
        self.handshaking -= 1

    def closed(self, source: str | None) -> None:
        """
        An admitted connection from ``source`` closed.
        """
        self.inbound -= 1
        if source is not None:
            left = self._by_source[source] - 1
            if left:
                self._by_source[source] = left
            else:
                del self._by_source[source]


class _Admitted(ProtocolWrapper):
    """
    An admitted connection: gives its place back when it closes.
    """

    source: str | None = None
    handshaking = True

    def handshake_over(self, result: object = None) -> None:
        if self.handshaking:
            self.handshaking = False
            self.factory.admission.handshake_over()


class AdmissionFactory(WrappingFactory[_Admitted]):
    """
    Admits inbound connections to ``channels`` within the bounds of
    ``admission``; refuses the rest before a byte is read.

    :param channels: the listening secure channel factory.
    :param clock: tells the time.
    :param admission: the counts and the decision, shared by every factory
        of the node (see :meth:`sharing_source`).
    :param per_address: whether the per-address limits apply.
    """

    protocol = _Admitted
    # Twisted would log "Starting factory" for each listener, and the
    # protocols' lines go through the pool's log.
    noisy = False
    log = Logger()

    def __init__(
        self,
        channels: SecureChannelFactory,
        clock: Any,
        admission: Admission,
        per_address: bool = True,
        log: RateLimitedLog | None = None,
    ) -> None:
        super().__init__(channels)  # type: ignore[no-untyped-call]
        self.clock = clock
        self.admission = admission
        self.per_address = per_address
        self._log = log or RateLimitedLog(self.log, clock)

    def sharing_source(self) -> AdmissionFactory:
        """
        A factory with the same counts and total limits, but no per-address
        limits: for a transport whose inbound connections all come from one
        address (tor's onion services, whose connections come from the
        local tor).
        """
        return AdmissionFactory(
            self.wrappedFactory, self.clock, self.admission, per_address=False, log=self._log
        )

    def buildProtocol(self, addr: IAddress) -> _Admitted | None:  # type: ignore[override]
        source = source_key(addr) if self.per_address else None
        reason = self.admission.admit(source, self.clock.seconds())
        if reason is not None:
            self._log.info(
                "refused:" + reason,
                "refused a connection from {address}: {why}",
                address=str(addr),
                why=Admission.REASONS[reason],
                reason=reason,
            )
            return None
        channel = self.wrappedFactory.buildProtocol(addr)
        if channel is None:
            self.admission.handshake_over()
            self.admission.closed(source)
            return None
        admitted = _Admitted(self, channel)
        admitted.source = source
        channel.when_secured().addBoth(admitted.handshake_over)
        return admitted

    def unregisterProtocol(self, p: _Admitted) -> None:
        super().unregisterProtocol(p)  # type: ignore[no-untyped-call]
        p.handshake_over()
        self.admission.closed(p.source)
