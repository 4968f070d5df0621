# -*- test-case-name: tests.test_dht_requestnet -*-
"""
A lighter network for large DHT simulations: the DHT's requests travel as
AMP boxes between stand-in pools, with the memory network's latency, loss
and connection set-up times, but without Noise or a byte stream.

Everything the DHT does stays real: the responders, routing table, lookups,
store, dial-backs and upkeep are the production code, and a request is
answered as AMP would answer it (the arguments and answer its command
declares, absent optional ones as ``None``, the errors it declares and
``UnknownRemoteError`` for others, ``ConnectionLost`` for requests
outstanding when the connection drops).  By default a request and its
answer travel as Python objects, straight to the responder: AMP's argument
codecs and dispatch cost a quarter of a large simulation's time and add
nothing a simulation measures.  With ``codecs=True`` they travel as AMP
boxes through the commands' own codecs and AMP's dispatch instead;
``tests.test_dht_requestnet`` runs the same simulation both ways and finds
the same figures.  What this module models, after
:class:`~digitalspring.transport.MemoryNetwork` and
:class:`~digitalspring.channel.ConnectionPool`:

- a connection takes what it takes over the memory network with Noise IK:
  the SYN and its answer (one round trip), then the handshake's two
  messages (one more).  The dialled side has the connection after one and
  a half round trips, the dialling side after two; the handshake's
  messages can be lost like any data;
- every box takes the one-way latency between the two hosts, and each loss
  (drawn with the network's loss rate, again and again) delays it by
  ``max(min_rto, 2 * round trip)``, as the memory network's chunks;
- one connection per pair of peers: when both dial at once, both keep the
  one dialled by the peer whose ID sorts first and close the other after
  :data:`~digitalspring.channel._pool.DUPLICATE_GRACE` seconds, as the pool
  does; a connection closes after ``idle_timeout`` seconds without a box
  either way;
- a peer that could not be dialled is not dialled again before a backoff
  delay that doubles with each failure, as in the pool;
- a host that leaves drops its connections at both ends (requests on them
  fail with ``ConnectionLost``), and dialling it times out after
  ``connect_timeout`` seconds.

Left out: CPU time, bandwidth (the DHT's boxes are small), and the pool's
admission limits and trimming, which a DHT node's few dozen connections
stay far below.  ``tests.test_dht_requestnet`` runs the same joins and
lookups on this network and on the memory network with real pools, and
compares them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from inspect import iscoroutine
from types import MethodType
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from ..channel import PeerUnreachable
from ..channel._pool import DUPLICATE_GRACE, BackingOff
from ..identity import Identity, PeerID
from ..transport import InvalidAddress, MemoryAddress, split_address

#: The port every node listens on.
PORT = 1

#: The first port of the dialling ends.
_EPHEMERAL = 1024

#: Seconds per tick of the idle watch (see :meth:`RequestNetwork.watch_idle`).
IDLE_TICK = 1.0


class _Peer:
    """
    The transport of one end, as the DHT reads it: where the other end is.
    """

    def __init__(self, address: MemoryAddress) -> None:
        self._address = address

    def getPeer(self) -> MemoryAddress:
        return self._address


class _Listening:
    """
    A pool's one transport, as the DHT reads it: where it listens.
    """

    def __init__(self, host: str) -> None:
        self.host = host

    def published_addresses(self) -> list[str]:
        return [f"{self.host}:{PORT}"]


class _Locators:
    """
    The command locators of every layer, for one end.
    """

    def __init__(self, locators: list[Any]) -> None:
        self.locators = locators

    def locateResponder(self, name: bytes) -> Any:
        for locator in self.locators:
            responder = locator.locateResponder(name)
            if responder is not None:
                return responder
        return None


@implementer(amp.IBoxSender)
class End:
    """
    One end of a connection: what :meth:`LightPool.connections` holds and
    the DHT's responders are given.

    :ivar peer_id: the peer at the other end.
    :ivar initiator: whether this side dialled.
    :ivar transport: its ``getPeer()`` is where the other end sits; ``None``
        once closed.
    """

    log = Logger()

    def __init__(
        self,
        link: Link,
        pool: LightPool,
        peer_id: PeerID,
        initiator: bool,
        there: MemoryAddress,
    ) -> None:
        self.link = link
        self.pool = pool
        self.peer_id = peer_id
        self.initiator = initiator
        self.transport: _Peer | None = _Peer(there)
        self.other: End | None = None
        locators = [make(self) for make in pool.locators]
        self.dispatcher: amp.BoxDispatcher | None = None
        if link.network.codecs:
            self.dispatcher = amp.BoxDispatcher(_Locators(locators))
            self.dispatcher.startReceivingBoxes(self)
        self._locators = locators
        #: Requests sent and not yet answered, by tag.
        self._asked: dict[int, Deferred[Any]] = {}
        self._tags = 0
        #: Why the connection was lost, once it was: later requests fail
        #: with it, as AMP's do once it has stopped receiving boxes.
        self._lost_by: Failure | None = None

    def __repr__(self) -> str:
        return f"<End of {self.pool.host} with {self.peer_id}>"

    def call(
        self, command: type[amp.Command], arguments: dict[str, Any]
    ) -> Deferred[tuple[End, Any]]:
        """
        Send a request; the Deferred fires with this end and the answer, or
        fails, as the pool's ``request`` does (the answer and errors as
        ``callRemote``'s).

        :raises ConnectionLost: when the connection is closed, as
            ``callRemote`` does.
        """
        if self.dispatcher is not None:
            asked = self.dispatcher.callRemote(command, **arguments)
            return asked.addCallback(lambda answer: (self, answer))  # type: ignore[no-any-return]
        if self._lost_by is not None:
            return fail(self._lost_by)
        other = self._sending()
        self._tags += 1
        d: Deferred[Any] = Deferred()
        self._asked[self._tags] = d
        self._deliver(other, other._asked_to, self._tags, command, arguments)
        return d

    def _sending(self) -> End:
        link = self.link
        other = self.other
        if link.closed or other is None:
            raise ConnectionLost("the connection is closed")
        link.last_active = link.network.clock.seconds()
        return other

    def _deliver(self, other: End, arrive: Callable[..., None], *args: Any) -> None:
        network = self.link.network
        network.clock.callLater(network.delay(self.pool.host, other.pool.host), arrive, *args)

    def _arrived(self) -> bool:
        link = self.link
        if link.closed:
            return False
        link.last_active = link.network.clock.seconds()
        return True

    def _asked_to(self, tag: int, command: type[amp.Command], arguments: dict[str, Any]) -> None:
        if not self._arrived():
            return
        responder = _responder(self._locators, command)
        if responder is None:
            self._answer(tag, None, amp.UnhandledCommand(command.commandName.decode()))
            return
        kw = {name: arguments.get(name) for name in _argument_names(command)}
        # As maybeDeferred, without a Deferred for the answers given at once
        # (most of them).
        try:
            result = responder(**kw)
        except Exception:
            self._answer(tag, None, _remote_error(command, Failure()))
            return
        if isinstance(result, dict):
            # Most answers: checked first, as isinstance(result, Deferred)
            # goes through an ABC's check (Deferred is an Awaitable).
            self._answer(tag, _response(command, result), None)
            return
        if iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            result.addCallbacks(
                lambda answer: self._answer(tag, _response(command, answer), None),
                lambda failure: self._answer(tag, None, _remote_error(command, failure)),
            )
        else:
            self._answer(tag, _response(command, result), None)

    def _answer(self, tag: int, result: dict[str, Any] | None, error: Exception | None) -> None:
        try:
            other = self._sending()
        except ConnectionLost:
            return
        self._deliver(other, other._answered, tag, result, error)

    def _answered(self, tag: int, result: dict[str, Any] | None, error: Exception | None) -> None:
        if not self._arrived():
            return
        d = self._asked.pop(tag, None)
        if d is None:
            return
        if error is None:
            d.callback((self, result))
        else:
            d.errback(error)

    def sendBox(self, box: amp.AmpBox) -> None:
        other = self._sending()
        self._deliver(other, other._received, box)

    def _received(self, box: amp.AmpBox) -> None:
        if self._arrived() and self.dispatcher is not None:
            self.dispatcher.ampBoxReceived(box)

    def unhandledError(self, failure: Failure) -> None:
        self.log.failure("unhandled error on a simulated connection", failure)

    def _lost(self, reason: Failure) -> None:
        self.transport = None
        # The references back to this end go (as Link.close drops its
        # ends): a closed connection is freed once nothing else holds it,
        # rather than left to the cyclic collector.
        self.other = None
        self._locators = []
        self.pool._connection_lost(self)
        if self.dispatcher is not None:
            self.dispatcher.stopReceivingBoxes(reason)
        self._lost_by = reason
        asked, self._asked = self._asked, {}
        for d in asked.values():
            d.errback(reason)


def _python_name(name: bytes) -> str:
    # As AMP's own mapping of wire names to keyword arguments.
    return name.decode("ascii").replace("-", "_")


@cache
def _argument_names(command: type[amp.Command]) -> tuple[str, ...]:
    """
    The keyword names of ``command``'s arguments, worked out once.
    """
    return tuple(_python_name(name) for name, _ in command.arguments)


@cache
def _answer_names(command: type[amp.Command]) -> tuple[str, ...]:
    """
    The keyword names of ``command``'s answer, worked out once.
    """
    return tuple(_python_name(name) for name, _ in command.response)


def _responder(locators: list[Any], command: type[amp.Command]) -> Callable[..., Any] | None:
    """
    The first locator's own method that answers ``command``: the function
    AMP's ``locateResponder`` wraps in the command's codecs, found in the
    same table (``CommandLocator._commandDispatch``, filled by
    ``Command.responder``).
    """
    for locator in locators:
        found = getattr(type(locator), "_commandDispatch", {}).get(command.commandName)
        if found is not None:
            return MethodType(found[1], locator)
    return None


def _response(command: type[amp.Command], result: dict[str, Any]) -> dict[str, Any]:
    # What the command's answer carries: its declared names, absent ones None.
    return {name: result.get(name) for name in _answer_names(command)}


def _remote_error(command: type[amp.Command], failure: Failure) -> Exception:
    """
    The error the requester sees for ``failure``: the class the command
    declares for it, with its text, as AMP sends it, or
    ``UnknownRemoteError`` (logged here, as AMP logs it).
    """
    # Both tables are made by Command's metaclass, unknown to the stubs.
    codes: dict[type[Exception], bytes] = command.allErrors  # type: ignore[attr-defined]
    errors: dict[bytes, type[Exception]] = command.reverseErrors  # type: ignore[attr-defined]
    declared = failure.check(*codes)
    if declared is None:
        End.log.failure("unhandled error answering {command}", failure, command=command.__name__)
        return amp.UnknownRemoteError("Unknown Error")
    return errors[codes[declared]](str(failure.value))


class Link:
    """
    A connection between two pools: both its ends, and its idle watch.

    :ivar last_active: when a box last went either way.
    """

    def __init__(self, network: RequestNetwork) -> None:
        self.network = network
        self.ends: list[End] = []
        self.closed = False
        self.last_active = network.clock.seconds()
        #: The call that closes it: a duplicate's, or its idle timeout once
        #: the network's idle watch found it due (see
        #: :meth:`RequestNetwork.watch_idle`).
        self._timer: Any = None
        network.watch_idle(self, self.last_active + network.idle_timeout)

    def check_idle(self) -> None:
        """
        Close if idle for the network's idle timeout, or else watch again.
        """
        self._timer = None
        due = self.last_active + self.network.idle_timeout
        if due > self.network.clock.seconds():
            self.network.watch_idle(self, due)
        else:
            self.close(ConnectionDone("idle"))

    def idle_due(self) -> None:
        """
        The idle watch found the link due to close at ``last_active`` plus
        the idle timeout, within the watch's tick: time the close exactly.
        """
        clock = self.network.clock
        due = self.last_active + self.network.idle_timeout
        self._timer = clock.callLater(max(0.0, due - clock.seconds()), self.check_idle)

    def closing(self) -> bool:
        """
        Whether a close is already timed (so the idle watch can forget it).
        """
        return self.closed or self._timer is not None

    def close_later(self, delay: float) -> None:
        """
        Close after ``delay`` seconds (a duplicate, still answering).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.network.clock.callLater(delay, self.close, ConnectionDone("duplicate"))

    def close(self, reason: Exception) -> None:
        """
        Close both ends now.
        """
        if self.closed:
            return
        self.closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        failure = Failure(reason)
        ends, self.ends = self.ends, []
        for end in ends:
            end._lost(failure)


class LightPool(Service):
    """
    A node's stand-in for :class:`~digitalspring.channel.ConnectionPool`
    on a :class:`RequestNetwork`: what a DHT needs of a pool (see
    :class:`~digitalspring.dht._interfaces.RequestPool`).
    """

    def __init__(
        self,
        network: RequestNetwork,
        host: str,
        identity: Identity,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
    ) -> None:
        self.network = network
        self.host = host
        self.identity = identity
        self.clock = network.clock
        self.transports: Mapping[str, Any] = {"memory": _Listening(host)}
        self.locators: list[Callable[[Any], Any]] = []
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.links: set[Link] = set()
        self._connections: dict[PeerID, End] = {}
        self._waiting: dict[PeerID, list[Deferred[End]]] = {}
        self._failures: dict[PeerID, tuple[int, float]] = {}

    def host_port(self) -> tuple[str, int]:
        """
        Where this pool's node listens.
        """
        return self.host, PORT

    def connections(self) -> dict[PeerID, End]:
        return self._connections

    def connect(self, peer_id: PeerID, addresses: Sequence[str] | None = None) -> Deferred[End]:
        """
        The connection with ``peer_id``: the live one, or a new one dialled
        at the first of ``addresses`` (the DHT always knows them).
        """
        if peer_id == self.identity.peer_id:
            return fail(PeerUnreachable("a node does not connect to itself"))
        live = self._connections.get(peer_id)
        if live is not None:
            return succeed(live)
        d: Deferred[End] = Deferred()
        waiting = self._waiting.get(peer_id)
        if waiting is not None:
            waiting.append(d)
            return d
        failures = self._failures.get(peer_id)
        now = self.clock.seconds()
        if failures is not None and failures[1] > now:
            return fail(
                BackingOff(f"{peer_id} was unreachable; next try in {failures[1] - now:.1f} s")
            )
        if not addresses:
            return fail(PeerUnreachable(f"no address for {peer_id}"))
        self._waiting[peer_id] = [d]
        dial = self.network.open(self, peer_id, addresses[0])
        dial.addCallbacks(self._dialled, self._dial_failed, errbackArgs=(peer_id,))
        return d

    def _dialled(self, end: End) -> None:
        live = self._connections.get(end.peer_id, end)
        for d in self._waiting.pop(end.peer_id, []):
            if not d.called:
                d.callback(live)

    def _dial_failed(self, failure: Failure, peer_id: PeerID) -> None:
        if peer_id not in self._connections:
            count = self._failures.get(peer_id, (0, 0.0))[0] + 1
            delay = min(self.backoff_base * 2 ** (count - 1), self.backoff_max)
            self._failures[peer_id] = (count, self.clock.seconds() + delay)
        for d in self._waiting.pop(peer_id, []):
            if not d.called:
                d.errback(failure)

    def request(
        self,
        peer_id: PeerID,
        command: type[amp.Command],
        addresses: Sequence[str] | None = None,
        **arguments: Any,
    ) -> Deferred[tuple[End, Any]]:
        """
        As :meth:`ConnectionPool.request`: sent once more on another
        connection when the one it went on is lost.  (Callbacks rather
        than a coroutine: simulations send millions.)
        """

        def send(end: End) -> Deferred[tuple[End, Any]]:
            return end.call(command, arguments)

        def again(failure: Failure) -> Deferred[tuple[End, Any]]:
            failure.trap(ConnectionLost, ConnectionDone)
            return self.connect(peer_id, addresses).addCallback(send)

        live = self._connections.get(peer_id)
        if live is not None:
            # Most requests go on a live connection: no Deferred to wait for.
            return send(live).addErrback(again)
        return self.connect(peer_id, addresses).addCallback(
            lambda end: send(end).addErrback(again)
        )

    def dial(self, peer_id: PeerID, address: str, pattern: str | None = None) -> Deferred[Any]:
        """
        As :meth:`ConnectionPool.dial`: a new connection to ``address``.
        """
        d = self.network.open(self, peer_id, address)
        return d.addCallback(lambda end: MemoryAddress(*end.link.ends[0].pool.host_port()))

    def _connection_made(self, end: End) -> bool:
        """
        A connection is up at this end: keep it, unless one with that peer
        is live and wins the simultaneous-dial rule.

        :returns: whether this end was kept.
        """
        self._failures.pop(end.peer_id, None)
        self.links.add(end.link)
        live = self._connections.get(end.peer_id)
        if live is not None and live.link is not end.link:
            if _dialled_by(live) <= _dialled_by(end):
                end.link.close_later(DUPLICATE_GRACE)
                return False
            live.link.close_later(DUPLICATE_GRACE)
        self._connections[end.peer_id] = end
        return True

    def _connection_lost(self, end: End) -> None:
        self.links.discard(end.link)
        if self._connections.get(end.peer_id) is end:
            del self._connections[end.peer_id]

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for link in list(self.links):
            link.close(ConnectionLost("the node stopped"))
        return succeed(None)


def _dialled_by(end: End) -> bytes:
    """
    The public key of the peer that dialled ``end``'s connection.
    """
    if end.initiator:
        return end.pool.identity.peer_id.public_key
    return end.peer_id.public_key


class RequestNetwork:
    """
    Hosts whose pools exchange AMP boxes (see the module's description).

    :param clock: what everything is scheduled on.
    :param latency: the one-way delay in seconds between two host names.
    :param loss: the chance that a box or handshake message is lost on its
        way (it is sent again, arriving later).
    :param random: draws the losses.
    :param idle_timeout: seconds after which a connection without a box
        either way closes.
    :param connect_timeout: seconds after which dialling a host that is
        gone fails.
    :param codecs: whether requests travel as AMP boxes through their
        commands' codecs, rather than as Python objects (see the module's
        description).
    """

    def __init__(
        self,
        clock: Any,
        latency: Callable[[str, str], float],
        loss: float,
        random: Any,
        idle_timeout: float,
        connect_timeout: float,
        min_rto: float = 0.2,
        codecs: bool = False,
    ) -> None:
        self.clock = clock
        self.codecs = codecs
        self.latency = latency
        self.loss = loss
        self.random = random
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.min_rto = min_rto
        self.pools: dict[str, LightPool] = {}
        self._ports = _EPHEMERAL
        #: Links to look at, by tick of :data:`IDLE_TICK` seconds.
        self._idle: dict[int, list[Link]] = {}

    def add_host(self, name: str, identity: Identity) -> LightPool:
        """
        A new host, and the pool of its node.
        """
        if name in self.pools:
            raise ValueError(f"there is already a host {name!r}")
        pool = self.pools[name] = LightPool(self, name, identity)
        return pool

    def remove_host(self, name: str) -> None:
        """
        The host leaves for good: its connections drop at both ends, and
        dialling it times out.
        """
        pool = self.pools.pop(name)
        for link in list(pool.links):
            link.close(ConnectionLost("host went offline"))

    def watch_idle(self, link: Link, due: float) -> None:
        """
        Look at ``link`` in the tick of ``due``, when it closes unless a box
        goes either way before.

        Links wait in a list per tick rather than each with a call on the
        clock: a large simulation holds tens of thousands of idle
        connections, and a call each made the clock's heap several times
        larger, and every call on it slower (its entries no longer fit in
        the processor's caches).  Only the links due within the tick get a
        call of their own, at their exact time.
        """
        tick = int(due // IDLE_TICK)
        links = self._idle.get(tick)
        if links is None:
            links = self._idle[tick] = []
            delay = max(0.0, tick * IDLE_TICK - self.clock.seconds())
            self.clock.callLater(delay, self._idle_tick, tick)
        links.append(link)

    def _idle_tick(self, tick: int) -> None:
        end = (tick + 1) * IDLE_TICK
        timeout = self.idle_timeout
        for link in self._idle.pop(tick):
            if link.closing():
                continue
            due = link.last_active + timeout
            if due >= end:
                self.watch_idle(link, due)
            else:
                link.idle_due()

    def delay(self, source: str, target: str) -> float:
        """
        How long a box takes from ``source`` to ``target``: the latency,
        and a retransmission timeout for each loss.
        """
        latency = self.latency(source, target)
        losses = 0
        while self.random.random() < self.loss:
            losses += 1
        if losses:
            rtt = latency + self.latency(target, source)
            latency += losses * max(self.min_rto, 2 * rtt)
        return latency

    def open(self, source: LightPool, peer_id: PeerID, address: str) -> Deferred[End]:
        """
        Dial ``address`` from ``source`` expecting ``peer_id``.

        :returns: a Deferred that fires with ``source``'s end once the
            handshake is over there.
        """
        try:
            name, description = split_address(address)
            host, _, port = description.rpartition(":")
        except InvalidAddress as e:
            return fail(PeerUnreachable(str(e)))
        if name != "memory":
            return fail(PeerUnreachable(f"this node has no {name} transport"))
        started = self.clock.seconds()
        d: Deferred[End] = Deferred()
        there = self.latency(source.host, host) if host in self.pools else 0.0
        back = self.latency(host, source.host) if host in self.pools else 0.0

        def time_out() -> None:
            self.clock.callLater(
                max(0.0, started + self.connect_timeout - self.clock.seconds()),
                _fail,
                d,
                ConnectTimeout(string=f"connecting to {address}"),
            )

        def syn() -> None:
            target = self.pools.get(host)
            if target is None or not target.running or self.pools.get(source.host) is not source:
                time_out()
            elif port != str(PORT):
                self.clock.callLater(back, _fail, d, ConnectionRefusedError(address))
            else:
                # The SYN's answer back, then the handshake's first message.
                self.clock.callLater(back + self.delay(source.host, host), first, target)

        def first(target: LightPool) -> None:
            if self.pools.get(host) is not target or self.pools.get(source.host) is not source:
                time_out()
                return
            if target.identity.peer_id != peer_id:
                self.clock.callLater(
                    back, _fail, d, PeerUnreachable(f"the peer at {address} is another")
                )
                return
            link = Link(self)
            self._ports += 1
            server = End(
                link,
                target,
                source.identity.peer_id,
                False,
                MemoryAddress(source.host, self._ports),
            )
            client = End(link, source, peer_id, True, MemoryAddress(host, PORT))
            server.other, client.other = client, server
            link.ends = [server, client]
            target._connection_made(server)
            self.clock.callLater(self.delay(host, source.host), second, link, client)

        def second(link: Link, client: End) -> None:
            if self.pools.get(source.host) is not source:
                link.close(ConnectionLost("host went offline"))
            if link.closed:
                _fail(d, ConnectionLost("lost while connecting"))
                return
            source._connection_made(client)
            if not d.called:
                d.callback(client)

        self.clock.callLater(there, syn)
        return d


def _fail(d: Deferred[Any], error: Exception) -> None:
    if not d.called:
        d.errback(error)
