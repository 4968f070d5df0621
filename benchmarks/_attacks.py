# -*- test-case-name: tests.test_hostile_benchmark -*-
"""
The attacks of ``benchmarks/hostile.py``, and the legitimate peer that
pings the node through them.

Each attack is a set of workers on one reactor, all dialling from one
source address of 127.0.0.0/8 (the caller's ``source``), each repeating its
move until the attack is cancelled: one attacker process runs one
:func:`run_attack`.  Connections go through the project's own
:class:`SecureChannelFactory`, so the attacks follow the wire format
wherever it goes; only the attacks on framing write bytes of their own
under it.  Every count of workers or connections is a constant below, so
that an attacker is bounded in what it holds as well as in time.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from struct import pack
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.protocols import amp
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from digitalspring.channel import Ping, SecureChannelFactory, SecureChannelProtocol
from digitalspring.channel._secure import MAGIC as _MAGIC
from digitalspring.channel._secure import PATTERN_IK as _PATTERN_IK
from digitalspring.channel._secure import VERSION as _CHANNEL_VERSION
from digitalspring.dht import (
    MAX_RECORD_SIZE,
    RECORD,
    DHTPing,
    FindNode,
    FindValue,
    PeerRecord,
    Store,
    id_bytes,
    node_id,
    sign_record,
)
from digitalspring.identity import Identity, PeerID

#: The attacks, in the order the benchmark runs them.
ATTACKS = (
    "amp_box",
    "unread_replies",
    "handshake_flood",
    "sybil_origins",
    "record_flood",
    "partial_frames",
)

#: Connections per attacker each sending one never-ending AMP box.
BOX_CONNECTIONS = 2
#: The largest AMP value: every key of the endless box carries one.
BOX_VALUE = 0xFFFF
#: Connections per attacker sending requests without reading answers.
UNREAD_CONNECTIONS = 2
#: Handshakes per attacker in flight at once.
HANDSHAKE_WORKERS = 16
#: Authenticated connections per attacker held open without traffic.
HANDSHAKE_HOLD = 256
#: Sybils per attacker talking to the node at once.
SYBIL_WORKERS = 8
#: Find-node requests of each sybil after its ping.
SYBIL_LOOKUPS = 3
#: Connections per attacker storing records at once.
RECORD_WORKERS = 4
#: Stores in flight on one connection.
RECORD_WINDOW = 32
#: Stores on one connection (one peer ID) before the next key takes over.
RECORDS_PER_KEY = 512
#: Connections per attacker, by kind, each held with a partial message.
PARTIAL_HOLD = {"preamble": 32, "handshake": 32, "frame": 256}
#: Workers per attacker sending garbage preambles, one connection after another.
GARBAGE_WORKERS = 2
#: Seconds between the bytes dripped into a held partial frame.
DRIP_INTERVAL = 1.0
#: Seconds a failed worker waits before its next try (the floods do not).
BACKOFF = 0.1
#: Seconds between the starts of an attack's workers, so that hundreds of
#: them do not all knock at once on the node's listen backlog.
STAGGER = 0.002
#: The most writes a flood makes in one go: it yields to the reactor after
#: them even if the connection takes more.
WRITES_PER_TURN = 16
#: The payload of the legitimate peer's pings, as ``dspring ping`` sends.
PING_PAYLOAD = bytes(56)


class _One(Factory):
    """
    A factory for exactly one given protocol.
    """

    noisy = False

    def __init__(self, protocol: IProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress) -> IProtocol:  # type: ignore[override]
        return self._protocol


class _Tracked(WrappingFactory):
    """
    Registers each connection with the attack, so that its end can close
    them all.
    """

    noisy = False

    def __init__(self, attack: Attack, wrapped: IProtocolFactory) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self._attack = attack

    def registerProtocol(self, p: ProtocolWrapper) -> None:
        self._attack._opened(p)

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        self._attack._closed(p)


class Probe(Protocol):
    """
    A protocol that reads nothing and says when its connection ends.
    """

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.closed.called:
            self.closed.callback(None)


class Client(amp.AMP):
    """
    AMP that says when its connection ends.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        if not self.closed.called:
            self.closed.callback(None)


class Attack:
    """
    One attacker: where it dials from and to, what it counts, and every
    connection it holds.

    :ivar stats: what happened, by name: the attacker's report.
    """

    def __init__(self, reactor: Any, source: str, host: str, port: int, node: PeerID) -> None:
        self.reactor = reactor
        self.source = source
        self.host = host
        self.port = port
        self.node = node
        self.stats: Counter[str] = Counter()
        self._open: set[ProtocolWrapper] = set()
        self._empty: list[Deferred[None]] = []
        #: Set once the attack ends: closes from then on are ours.
        self.ending = False

    def _opened(self, wrapper: ProtocolWrapper) -> None:
        self._open.add(wrapper)
        self.stats["connections"] += 1
        self.stats["most_open"] = max(self.stats["most_open"], len(self._open))

    def _closed(self, wrapper: ProtocolWrapper) -> None:
        self._open.discard(wrapper)
        if not self._open:
            waiters, self._empty = self._empty, []
            for d in waiters:
                d.callback(None)

    def sleep(self, seconds: float) -> Deferred[None]:
        return deferLater(self.reactor, seconds)

    async def connect(self, factory: IProtocolFactory) -> IProtocol:
        """
        Dial the node from the attacker's address.

        :returns: the protocol ``factory`` built, once connected.
        """
        endpoint = TCP4ClientEndpoint(
            self.reactor, self.host, self.port, timeout=10, bindAddress=(self.source, 0)
        )
        wrapper: Any = await endpoint.connect(_Tracked(self, factory))
        return wrapper.wrappedProtocol  # type: ignore[no-any-return]

    async def channel(
        self, wrapped: IProtocol, identity: Identity | None = None, pattern: str = "IK"
    ) -> SecureChannelProtocol:
        """
        A secure channel with the node, under a fresh identity unless one
        is given, with ``wrapped`` inside it.
        """
        factory = SecureChannelFactory(
            identity or Identity.generate(),
            _One(wrapped),
            self.reactor,
            initiator=True,
            expected_peer=self.node,
            pattern=pattern,
        )
        channel = await self.connect(factory)
        assert isinstance(channel, SecureChannelProtocol)
        await channel.when_secured()
        self.stats[f"handshakes_{pattern}"] += 1
        return channel

    async def close_all(self, timeout: float = 10.0) -> None:
        """
        Abort every connection and wait until all are closed.
        """
        self.ending = True
        if not self._open:
            return
        d: Deferred[None] = Deferred()
        self._empty.append(d)
        for wrapper in list(self._open):
            wrapper.transport.abortConnection()  # type: ignore[union-attr]
        d.addTimeout(timeout, self.reactor)
        await d

    async def repeat(self, move: Callable[[], Awaitable[object]], backoff: float) -> None:
        """
        Make ``move`` again and again until the attack ends, counting
        failures by kind and waiting ``backoff`` seconds after each.
        """
        while not self.ending:
            try:
                await move()
            except Exception as e:
                # Cancelling a worker cancels what it waits for, which
                # fails in many ways (a connection attempt cancelled, a
                # channel aborted): all of them end the worker now.
                if self.ending or isinstance(e, CancelledError):
                    return
                self.stats[f"failed_{type(e).__name__}"] += 1
                if backoff:
                    await self.sleep(backoff)


async def _wait(attack: Attack, d: Deferred[None], seconds: float) -> None:
    """
    Wait for ``d`` at most ``seconds``.
    """
    done: Deferred[None] = Deferred()
    call = attack.reactor.callLater(seconds, done.callback, None)

    def finished(result: object) -> None:
        if not done.called:
            done.callback(None)

    d.addBoth(finished)
    try:
        await done
    finally:
        if call.active():
            call.cancel()


def _request(command: type[amp.Command], tag: int, **arguments: Any) -> bytes:
    """
    A serialized AMP request box asking ``command`` with tag ``tag``.
    """
    box = command.makeArguments(arguments, None)  # type: ignore[no-untyped-call]
    box[b"_command"] = command.commandName
    box[b"_ask"] = b"%x" % tag
    return box.serialize()  # type: ignore[no-any-return]


def _fill_boxes(source: str) -> tuple[bytes, ...]:
    """
    Notification boxes that bring a record of one address near
    :data:`MAX_RECORD_SIZE`, as large as a record may be.
    """
    template = Identity.from_seed(bytes(32))
    boxes: list[bytes] = []
    size = 1024
    while size:
        candidate = (*boxes, bytes(size))
        record = PeerRecord(template.peer_id, 1, 0, 1, (f"tcp:{source}:9",), candidate)
        if len(sign_record(record, template)) <= MAX_RECORD_SIZE - 8 and len(candidate) <= 16:
            boxes.append(os.urandom(size))
        else:
            size //= 2
    return tuple(boxes)


_BOXES: dict[str, tuple[bytes, ...]] = {}


def _boxes(source: str) -> tuple[bytes, ...]:
    """
    :func:`_fill_boxes` of ``source``, made once.
    """
    if source not in _BOXES:
        _BOXES[source] = _fill_boxes(source)
    return _BOXES[source]


def large_record(identity: Identity, source: str, boxes: tuple[bytes, ...]) -> bytes:
    """
    A fresh, valid, self-signed record of ``identity`` of almost
    :data:`MAX_RECORD_SIZE` bytes.
    """
    now = int(time.time())
    record = PeerRecord(identity.peer_id, 1, now, now + 3600, (f"tcp:{source}:9",), boxes)
    return sign_record(record, identity)


# -- 1. one never-ending AMP box ------------------------------------------------


@implementer(IPushProducer)
class BoxFlood(Probe):
    """
    Writes one AMP box that never ends, as fast as the channel takes it:
    unique keys, each with a value of :data:`BOX_VALUE` bytes.
    """

    def __init__(self, attack: Attack) -> None:
        super().__init__()
        self._attack = attack
        self._keys = 0
        self._paused = False
        self._value = pack(">H", BOX_VALUE) + os.urandom(BOX_VALUE)

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        for _ in range(WRITES_PER_TURN):
            if self._paused or self.closed.called:
                return
            key = b"%x" % self._keys
            self._keys += 1
            entry = pack(">H", len(key)) + key + self._value
            self._attack.stats["box_bytes"] += len(entry)
            self.transport.write(entry)  # type: ignore[union-attr]
        self._attack.reactor.callLater(0, self._resume_unless_paused)

    def _resume_unless_paused(self) -> None:
        if not self._paused:
            self.resumeProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._paused = True
        super().connectionLost(reason)


async def _amp_box(attack: Attack) -> None:
    flood = BoxFlood(attack)
    await attack.channel(flood)
    await flood.closed
    attack.stats["closed_by_node"] += 1


# -- 2. requests whose answers are never read ----------------------------------------


@implementer(IPushProducer)
class RequestFlood:
    """
    Writes the same batch of request boxes again and again, as fast as the
    channel takes them, on a connection that no longer reads, until
    ``closed`` fires.
    """

    def __init__(
        self,
        attack: Attack,
        channel: SecureChannelProtocol,
        closed: Deferred[None],
        batch: bytes,
        requests: int,
    ) -> None:
        self._attack = attack
        self._channel = channel
        self._closed = closed
        self._batch = batch
        self._requests = requests
        self._paused = False

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        stats = self._attack.stats
        for _ in range(WRITES_PER_TURN):
            if self._paused or self._closed.called:
                return
            stats["requests_sent"] += self._requests
            stats["request_bytes"] += len(self._batch)
            self._channel.write(self._batch)
        self._attack.reactor.callLater(0, self._resume_unless_paused)

    def _resume_unless_paused(self) -> None:
        if not self._paused:
            self.resumeProducing()


async def _unread_replies(attack: Attack) -> None:
    identity = Identity.generate()
    client = Client()
    channel = await attack.channel(client, identity)
    # A record as large as records get, so that each find-value answer
    # carries it: about 4 KB for a request of about 100 bytes.
    signed = large_record(identity, attack.source, _boxes(attack.source))
    try:
        answer = await client.callRemote(Store, kind=RECORD, data=signed, origin=())  # type: ignore[no-untyped-call]
        attack.stats["record_stored" if answer["stored"] else "record_not_kept"] += 1
    except amp.RemoteAmpError as e:
        attack.stats[f"record_refused_{e.errorCode.decode('ascii', 'replace')}"] += 1
    key = id_bytes(node_id(identity.peer_id))
    requests = []
    for tag in range(1, 33):
        requests.append(_request(Ping, tag, data=os.urandom(1024)))
    for tag in range(33, 321):
        requests.append(_request(FindValue, tag, key=key, kind=RECORD, origin=()))
    # From here on nothing is read: the node's answers pile up wherever it
    # lets them.
    channel.pauseProducing()
    flood = RequestFlood(attack, channel, client.closed, b"".join(requests), len(requests))
    channel.registerProducer(flood, True)
    flood.resumeProducing()
    await client.closed
    attack.stats["closed_by_node"] += 1


# -- 3. handshakes, and idle connections held ------------------------------------------


class _HandshakeFlood:
    """
    Full handshakes, IK and XX in turn, each under a fresh key; the first
    :data:`HANDSHAKE_HOLD` connections stay open and idle, the others
    close at once.
    """

    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.held = 0
        self.count = 0

    async def once(self) -> None:
        self.count += 1
        pattern = "IK" if self.count % 2 else "XX"
        probe = Probe()
        channel = await self.attack.channel(probe, pattern=pattern)
        if self.held < HANDSHAKE_HOLD:
            self.held += 1
            self.attack.stats["most_held"] = max(self.attack.stats["most_held"], self.held)
            probe.closed.addCallback(self._released)
        else:
            channel.loseConnection()

    def _released(self, result: None) -> None:
        self.held -= 1
        if not self.attack.ending:
            self.attack.stats["held_closed_by_node"] += 1


# -- 4. sybils with lying origins ------------------------------------------------


def _lie() -> str:
    """
    An address nobody listens at, never the source's, never off loopback:
    mostly another /16 of 127.0.0.0/8, sometimes an onion the node cannot
    dial.
    """
    if random.random() < 0.1:
        onion = "".join(random.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(56))
        return f"tor:{onion}.onion:7655"
    return (
        f"tcp:127.{random.randint(1, 254)}.{random.randint(0, 255)}."
        f"{random.randint(1, 254)}:{random.randint(1024, 65535)}"
    )


async def _sybil(attack: Attack) -> None:
    client = Client()
    await attack.channel(client)
    origin = (_lie(),)
    await client.callRemote(DHTPing, origin=origin)  # type: ignore[no-untyped-call]
    for _ in range(SYBIL_LOOKUPS):
        answer = await client.callRemote(  # type: ignore[no-untyped-call]
            FindNode, key=os.urandom(32), origin=origin
        )
        attack.stats["most_contacts_answered"] = max(
            attack.stats["most_contacts_answered"], len(answer["contacts"])
        )
    attack.stats["sybils"] += 1
    client.transport.loseConnection()  # type: ignore[union-attr]


# -- 5. records flooding the store ----------------------------------------------------


async def _record_flood(attack: Attack) -> None:
    boxes = _boxes(attack.source)
    client = Client()
    await attack.channel(client)
    origin = (f"tcp:{attack.source}:{random.randint(1024, 65535)}",)
    for _ in range(RECORDS_PER_KEY // RECORD_WINDOW):
        calls = [
            client.callRemote(  # type: ignore[no-untyped-call]
                Store,
                kind=RECORD,
                data=large_record(Identity.generate(), attack.source, boxes),
                origin=origin,
            )
            for _ in range(RECORD_WINDOW)
        ]
        results = await DeferredList(calls, consumeErrors=True)
        for ok, result in results:
            if ok:
                attack.stats["records_stored" if result["stored"] else "records_not_kept"] += 1
            else:
                attack.stats[f"records_failed_{type(result.value).__name__}"] += 1
        if client.closed.called:
            attack.stats["closed_by_node"] += 1
            return
    client.transport.loseConnection()  # type: ignore[union-attr]


# -- 6. partial and slow frames, garbage preambles ------------------------------------------


_GARBAGE = (
    b"GET / HTTP/1.1\r\n\r\n",
    _MAGIC + bytes([9, _PATTERN_IK]),
    _MAGIC + bytes([_CHANNEL_VERSION, 7]),
)


class Dripping(Probe):
    """
    A probe that can write one byte every :data:`DRIP_INTERVAL` seconds
    under the channel, until its connection ends.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self._reactor = reactor
        self._drip: LoopingCall | None = None

    def drip(self, raw: Any) -> None:
        if self.closed.called:
            return
        self._drip = LoopingCall(raw.write, b"\0")
        self._drip.clock = self._reactor
        self._drip.start(DRIP_INTERVAL, now=False)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._drip is not None and self._drip.running:
            self._drip.stop()
        super().connectionLost(reason)


async def _garbage(attack: Attack) -> None:
    probe = Probe()
    await attack.connect(_One(probe))
    preamble = random.choice((*_GARBAGE, b"\0" + os.urandom(8)))
    probe.transport.write(preamble)  # type: ignore[union-attr]
    attack.stats["garbage_preambles"] += 1
    await _wait(attack, probe.closed, 2.0)
    if not probe.closed.called:
        probe.transport.abortConnection()  # type: ignore[union-attr]


async def _partial(attack: Attack, kind: str) -> None:
    """
    Hold one connection with an unfinished message of ``kind`` until the
    node closes it.
    """
    probe = Dripping(attack.reactor)
    if kind == "frame":
        # Authenticated, then a transport frame that claims 65535 bytes,
        # sent all but the last few hundred, then one byte a second.
        channel = await attack.channel(probe)
        raw = channel.transport
        assert raw is not None
        raw.write(b"\xff\xff" + os.urandom(65000))
        probe.drip(raw)
    else:
        await attack.connect(_One(probe))
        assert probe.transport is not None
        if kind == "preamble":
            probe.transport.write(_MAGIC[:5])
        else:
            # A handshake frame that claims 1000 bytes and brings 500.
            preamble = _MAGIC + bytes([_CHANNEL_VERSION, _PATTERN_IK])
            probe.transport.write(preamble + pack(">H", 1000) + os.urandom(500))
    attack.stats[f"partial_{kind}"] += 1
    await probe.closed
    attack.stats[f"partial_{kind}_closed_by_node"] += 1


# -- running an attack ------------------------------------------------------------------


def _moves(attack: Attack, kind: str) -> list[tuple[Callable[[], Awaitable[object]], float]]:
    """
    The workers of attack ``kind``: each a move to repeat and its backoff.
    """
    if kind == "amp_box":
        return [(lambda: _amp_box(attack), BACKOFF)] * BOX_CONNECTIONS
    if kind == "unread_replies":
        return [(lambda: _unread_replies(attack), BACKOFF)] * UNREAD_CONNECTIONS
    if kind == "handshake_flood":
        flood = _HandshakeFlood(attack)
        return [(flood.once, 0.0)] * HANDSHAKE_WORKERS
    if kind == "sybil_origins":
        return [(lambda: _sybil(attack), 0.0)] * SYBIL_WORKERS
    if kind == "record_flood":
        return [(lambda: _record_flood(attack), BACKOFF)] * RECORD_WORKERS
    if kind == "partial_frames":
        moves: list[tuple[Callable[[], Awaitable[object]], float]] = [
            (lambda: _garbage(attack), 0.0)
        ] * GARBAGE_WORKERS
        for held, count in PARTIAL_HOLD.items():
            moves += [(partial(_partial, attack, held), BACKOFF)] * count
        return moves
    raise ValueError(f"no attack named {kind!r}; the attacks are {', '.join(ATTACKS)}")


async def run_attack(
    reactor: Any,
    kind: str,
    source: str,
    host: str,
    port: int,
    node: PeerID,
    duration: float,
    stop: Deferred[None] | None = None,
) -> dict[str, int]:
    """
    Attack the node at ``host:port`` from ``source`` for ``duration``
    seconds, or until ``stop`` fires, then close every connection.

    :returns: the attacker's counts.
    """
    attack = Attack(reactor, source, host, port, node)

    async def worker(index: int, move: Callable[[], Awaitable[object]], backoff: float) -> None:
        await attack.sleep(index * STAGGER)
        await attack.repeat(move, backoff)

    workers: list[Deferred[None]] = []
    for index, (move, backoff) in enumerate(_moves(attack, kind)):
        coroutine: Coroutine[Any, Any, None] = worker(index, move, backoff)
        workers.append(Deferred.fromCoroutine(coroutine))

    def cancelled(failure: Failure) -> Failure | None:
        return None if isinstance(failure.value, CancelledError) else failure

    for d in workers:
        d.addErrback(cancelled)
    ended: Deferred[None] = Deferred()
    timer = reactor.callLater(duration, ended.callback, None)
    if stop is not None:
        stop.addCallback(lambda _: None if ended.called else ended.callback(None))
    await ended
    if timer.active():
        timer.cancel()
    attack.ending = True
    for d in workers:
        d.cancel()
    await attack.close_all()
    return dict(attack.stats)


# -- the legitimate peer ----------------------------------------------------------------


class PingWindow:
    """
    The pings of one stretch of time, and what became of them.

    :ivar rtts: round-trip times of the answered pings, in seconds.
    :ivar failures: the unanswered pings by reason.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.rtts: list[float] = []
        self.failures: Counter[str] = Counter()
        self._outstanding = 0
        self._closed = False
        self._settled: list[Deferred[None]] = []

    def started(self) -> None:
        self.sent += 1
        self._outstanding += 1

    def answered(self, rtt: float) -> None:
        self.rtts.append(rtt)
        self._done()

    def failed(self, reason: str) -> None:
        self.failures[reason] += 1
        self._done()

    def _done(self) -> None:
        self._outstanding -= 1
        if self._closed and not self._outstanding:
            waiters, self._settled = self._settled, []
            for d in waiters:
                d.callback(None)

    def close(self) -> Deferred[None]:
        """
        No more pings start in this window.

        :returns: a Deferred that fires once each of its pings is answered
            or has failed.
        """
        self._closed = True
        d: Deferred[None] = Deferred()
        if self._outstanding:
            self._settled.append(d)
        else:
            d.callback(None)
        return d


class Pinger:
    """
    The legitimate peer: one secure AMP connection with the node from its
    own address, and a Ping on it every ``1 / rate`` seconds whether or not
    the last was answered.  A ping fails when it is not answered within
    ``timeout`` seconds, or when there is no connection; a lost connection
    is dialled again at once.

    :ivar window: the pings since the last :meth:`take`.
    """

    def __init__(
        self,
        reactor: Any,
        source: str,
        host: str,
        port: int,
        node: PeerID,
        rate: float = 100.0,
        timeout: float = 5.0,
    ) -> None:
        self.reactor = reactor
        self.node = node
        self.timeout = timeout
        self.window = PingWindow()
        self.reconnects = 0
        self._identity = Identity.generate()
        self._endpoint = TCP4ClientEndpoint(
            reactor, host, port, timeout=10, bindAddress=(source, 0)
        )
        self._client: Client | None = None
        self._running = False
        self._loop = LoopingCall(self._ping)
        self._loop.clock = reactor
        self._interval = 1 / rate
        self._dialling: Deferred[None] | None = None

    async def connect(self) -> None:
        """
        Open the connection, and say how it failed if it did not open.
        """
        client = Client()
        factory = SecureChannelFactory(
            self._identity, _One(client), self.reactor, initiator=True, expected_peer=self.node
        )
        channel = await self._endpoint.connect(factory)
        assert isinstance(channel, SecureChannelProtocol)
        await channel.when_secured()
        self._client = client
        client.closed.addCallback(self._lost, client)

    def _lost(self, result: None, client: Client) -> None:
        if self._client is client:
            self._client = None
        if self._running and self._dialling is None:
            self._redial()

    def _redial(self) -> None:
        self.reconnects += 1
        self._dialling = Deferred.fromCoroutine(self.connect())

        def dialled(result: object) -> None:
            self._dialling = None
            if self._client is None and self._running:
                self.reactor.callLater(0.1, self._redial_unless_connected)

        self._dialling.addBoth(dialled)

    def _redial_unless_connected(self) -> None:
        if self._client is None and self._running and self._dialling is None:
            self._redial()

    def start(self) -> None:
        self._running = True
        self._loop.start(self._interval)

    def take(self) -> PingWindow:
        """
        Start a new window.

        :returns: the one that ends; its pings still in flight are still
            counted in it.
        """
        ended, self.window = self.window, PingWindow()
        return ended

    def _ping(self) -> None:
        window = self.window
        window.started()
        client = self._client
        if client is None:
            window.failed("no connection")
            return
        began = time.perf_counter()
        d: Deferred[Any] = client.callRemote(  # type: ignore[no-untyped-call]
            Ping, data=PING_PAYLOAD
        )
        d.addTimeout(self.timeout, self.reactor)
        d.addCallbacks(
            lambda answer: window.answered(time.perf_counter() - began),
            lambda failure: window.failed(type(failure.value).__name__),
        )

    async def stop(self) -> None:
        """
        Stop pinging and close the connection.
        """
        self._running = False
        if self._loop.running:
            self._loop.stop()
        if self._dialling is not None:
            self._dialling.cancel()
        await self.take().close()
        client = self._client
        if client is not None:
            client.transport.loseConnection()  # type: ignore[union-attr]
            await client.closed
