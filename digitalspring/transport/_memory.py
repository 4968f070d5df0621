# -*- test-case-name: tests.test_memory_network -*-
"""
The ``memory`` transport: an in-process network of named hosts on a
simulated clock.

The model, per host: an uplink and a downlink, each a fair-queueing server
with a rate.  A connection is two flows (one per direction).  Bytes written
wait in the flow's send queue; the sender's uplink serves its busy flows
round-robin, a chunk of at most 16 KiB at a time, so a host's connections
share its upload; a chunk that has left arrives after the one-way latency
(plus one retransmission timeout per loss, drawn from the seeded random
generator, because a reliable stream turns loss into delay), then passes the
receiver's downlink, served the same way, and is handed to the protocol.
Chunks of a flow arrive in order.  A flow never has more than
``receive_window`` bytes between its sender and the receiving protocol, so
a receiver that pauses reading pushes back on the sender.

Everything happens through the clock, never synchronously inside a
``write()``: protocols see the same re-entrancy rules as on a real reactor.
Between hosts that cannot reach each other (a partition, or a host taken
offline) nothing arrives: packets and connection attempts wait and go
through once the path is back, unless the connection attempt times out
first.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import (
    CannotListenError,
    ConnectError,
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    NoProtocol,
    TimeoutError,
)
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._address import check_memory_host, parse_memory_address, parse_port
from ._interfaces import ITransport, ITransportPlugin
from ._plugins import InvalidAddress, TransportConfigError, TransportContext

#: The most a link sends in one go: the granularity of bandwidth sharing.
CHUNK_SIZE = 16 * 1024

#: Write-buffer size above which a registered streaming producer is paused
#: (the same as Twisted's ``FileDescriptor.bufferSize``).
WRITE_BUFFER_SIZE = 64 * 1024

_FIRST_EPHEMERAL_PORT = 49152


class _Fin:
    """
    The end of a flow: its sender will write no more.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "FIN"


_FIN = _Fin()
_Item = bytes | _Fin

#: What an empty queue of chunks holds: a deque takes about 600 bytes even
#: empty, and a simulation has a few per connection, nearly all empty.  A
#: queue gets a deque of its own when something is put in it, and lets it
#: go when it empties; nothing is ever added to this one.
_NO_ITEMS: deque[_Item] = deque(maxlen=0)


@implementer(IAddress)
@frozen
class MemoryAddress:
    """
    Where a connection end sits on a :class:`MemoryNetwork`.

    :ivar host: the host's name.
    :ivar port: the port number.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class _Link:
    """
    One direction of a host's access line: a server with a rate in bytes
    per second that serves its waiting queues round-robin, one chunk each.
    A link without a rate passes everything on at once.
    """

    __slots__ = ("busy", "clock", "rate", "waiting")

    def __init__(self, clock: IReactorTime, rate: float | None) -> None:
        self.clock = clock
        self.rate = rate
        self.waiting: deque[_Queue] = deque()
        self.busy = False

    def activate(self, queue: _Queue) -> None:
        if queue.scheduled:
            return
        if self.rate is None:
            while (item := queue.take(None)) is not None:
                queue.sink(item)
            return
        queue.scheduled = True
        self.waiting.append(queue)
        if not self.busy:
            self._next()

    def _next(self) -> None:
        waiting = self.waiting
        while waiting:
            queue = waiting.popleft()
            item = queue.take(CHUNK_SIZE)
            if item is None:
                queue.scheduled = False
                continue
            self.busy = True
            size = 0 if item is _FIN else len(item)  # type: ignore[arg-type]
            self.clock.callLater(size / self.rate, self._sent, queue, item)  # type: ignore[operator]
            return
        self.busy = False

    def _sent(self, queue: _Queue, item: _Item) -> None:
        self.busy = False
        # Back of the line: the next chunk of this queue waits its turn.
        self.waiting.append(queue)
        queue.sink(item)
        if not self.busy:
            self._next()


class _Queue:
    """
    Items waiting for a link: a flow's unsent bytes (on the sender's uplink)
    or its arrived chunks (on the receiver's downlink).
    """

    __slots__ = ("flow", "items", "offset", "scheduled", "size")

    def __init__(self, flow: _Flow) -> None:
        self.flow = flow
        self.items = _NO_ITEMS
        self.offset = 0
        self.size = 0
        self.scheduled = False

    def put(self, item: _Item) -> None:
        if self.items is _NO_ITEMS:
            self.items = deque()
        self.items.append(item)
        if item is not _FIN:
            self.size += len(item)  # type: ignore[arg-type]

    def clear(self) -> None:
        self.items = _NO_ITEMS
        self.offset = 0
        self.size = 0

    def room(self) -> int | None:
        return None

    def take(self, most: int | None) -> _Item | None:
        items = self.items
        if not items:
            return None
        if items[0] is _FIN:
            fin = items.popleft()
            if not items:
                self.items = _NO_ITEMS
            return fin
        room = self.room()
        if room is not None:
            if room <= 0:
                return None
            most = room if most is None else min(most, room)
        pieces: list[bytes] = []
        taken = 0
        while items and items[0] is not _FIN:
            head: bytes = items[0]  # type: ignore[assignment]
            available = len(head) - self.offset
            if most is not None and taken + available > most:
                cut = most - taken
                pieces.append(head[self.offset : self.offset + cut])
                self.offset += cut
                taken += cut
                break
            pieces.append(head[self.offset :] if self.offset else head)
            items.popleft()
            self.offset = 0
            taken += available
            if most is not None and taken == most:
                break
        if not items:
            self.items = _NO_ITEMS
        self.size -= taken
        self.taken(taken)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def taken(self, size: int) -> None:
        pass

    def sink(self, item: _Item) -> None:
        raise NotImplementedError


class _SendQueue(_Queue):
    __slots__ = ()

    def room(self) -> int:
        flow = self.flow
        return flow.network.receive_window - flow.unacked

    def taken(self, size: int) -> None:
        self.flow.unacked += size

    def sink(self, item: _Item) -> None:
        self.flow.depart(item)


class _ReceiveQueue(_Queue):
    __slots__ = ()

    def sink(self, item: _Item) -> None:
        self.flow.deliver(item)


class _Flow:
    """
    One direction of a connection, from ``sender`` to ``receiver``.
    """

    __slots__ = (
        "dead",
        "in_flight",
        "last_arrival",
        "network",
        "receive",
        "receiver",
        "send",
        "sender",
        "source",
        "target",
        "unacked",
    )

    def __init__(self, network: MemoryNetwork, source: MemoryHost, target: MemoryHost) -> None:
        self.network = network
        self.source = source
        self.target = target
        self.sender: MemoryConnection | None = None
        self.receiver: MemoryConnection | None = None
        self.send = _SendQueue(self)
        self.receive = _ReceiveQueue(self)
        self.in_flight = _NO_ITEMS
        self.last_arrival = 0.0
        # Bytes that left the sender's queue and have not reached the
        # receiving protocol: what the receive window bounds.
        self.unacked = 0
        self.dead = False

    def kill(self) -> None:
        self.dead = True
        self.send.clear()
        self.receive.clear()
        self.in_flight = _NO_ITEMS

    def depart(self, item: _Item) -> None:
        if self.dead:
            return
        if item is not _FIN:
            self.source.bytes_sent += len(item)  # type: ignore[arg-type]
        network = self.network
        now = network.clock.seconds()
        delay = network.latency(self.source.name, self.target.name)
        if network.loss is not None:
            delay += network._retransmission_delay(self.source.name, self.target.name)
        arrival = now + delay
        if arrival < self.last_arrival:
            arrival = self.last_arrival
        self.last_arrival = arrival
        if self.in_flight is _NO_ITEMS:
            self.in_flight = deque()
        self.in_flight.append(item)
        network.clock.callLater(
            arrival - now, network._land, self.source, self.target, self.arrive
        )
        sender = self.sender
        if sender is not None and sender._watching_buffer:
            sender._schedule_drain_check()

    def arrive(self) -> None:
        # Each arrival event moves the oldest chunk in flight: whichever
        # event fires, bytes stay in order.
        if self.dead or not self.in_flight:
            return
        item = self.in_flight.popleft()
        if not self.in_flight:
            self.in_flight = _NO_ITEMS
        self.receive.put(item)
        self.target.download.activate(self.receive)

    def deliver(self, item: _Item) -> None:
        receiver = self.receiver
        if self.dead or receiver is None:
            return
        receiver._received(item)

    def acknowledged(self, size: int) -> None:
        self.unacked -= size
        if self.send.items and not self.send.scheduled:
            self.source.upload.activate(self.send)


class MemoryHost:
    """
    A host of a :class:`MemoryNetwork`: its name, access line and ports.
    Made by :meth:`MemoryNetwork.add_host`.

    :ivar name: the host's name, what addresses start with.
    :ivar upload_bps: its upload rate in bits per second, or ``None`` for
        unlimited.
    :ivar download_bps: its download rate in bits per second, or ``None``.
    :ivar online: whether it is connected to the network.
    :ivar gone: whether it left the network for good
        (:meth:`MemoryNetwork.remove_host`).
    :ivar bytes_sent: the bytes that have left its uplink, on every
        connection: what a benchmark counts as its traffic on the wire
        (everything its protocols wrote, without TCP/IP headers).
    """

    __slots__ = (
        "_next_port",
        "bytes_sent",
        "connections",
        "download",
        "download_bps",
        "gone",
        "name",
        "online",
        "ports",
        "refusing",
        "side",
        "upload",
        "upload_bps",
    )

    def __init__(
        self,
        clock: IReactorTime,
        name: str,
        upload_bps: float | None,
        download_bps: float | None,
    ) -> None:
        self.name = name
        self.upload_bps = upload_bps
        self.download_bps = download_bps
        self.upload = _Link(clock, None if upload_bps is None else upload_bps / 8)
        self.download = _Link(clock, None if download_bps is None else download_bps / 8)
        self.ports: dict[int, MemoryListeningPort] = {}
        self.connections: set[MemoryConnection] = set()
        self.online = True
        self.gone = False
        self.refusing = False
        self.side = 0
        self.bytes_sent = 0
        self._next_port = _FIRST_EPHEMERAL_PORT

    def allocate_port(self) -> int:
        """
        :returns: a port number not listened on, for an outgoing connection
            or a listener that asked for port 0.
        """
        port = self._next_port
        while port in self.ports:
            port += 1
        self._next_port = port + 1 if port < 65535 else _FIRST_EPHEMERAL_PORT
        return port

    def __repr__(self) -> str:
        return f"<MemoryHost {self.name}>"


def _constant(value: float) -> Callable[[str, str], float]:
    def between(source: str, target: str) -> float:
        return value

    return between


class MemoryNetwork:
    """
    An in-process network of named hosts, for tests and simulations.

    ::

        clock = SimulatedClock()
        network = MemoryNetwork(clock, latency=0.02, seed=1)
        network.add_host("alice", upload_bps=8_000_000)
        network.add_host("bob")
        alice = network.transport("alice")

    :ivar clock: what everything is scheduled on.
    :ivar receive_window: the most bytes a flow has between its sender and
        the receiving protocol.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        latency: float | Callable[[str, str], float] = 0.0,
        loss: float | Callable[[str, str], float] = 0.0,
        seed: int | str | bytes = 0,
        min_rto: float = 0.2,
        receive_window: int = 4 * 1024 * 1024,
        connect_delay: float | Callable[[str, str], float] = 0.0,
    ) -> None:
        """
        :param clock: an ``IReactorTime``: a
            :class:`~digitalspring.transport.SimulatedClock` for simulations,
            ``task.Clock`` or ``MemoryReactorClock`` for unit tests.
        :param latency: the one-way delay in seconds, or a function of the
            sending and the receiving host's names that gives it.
        :param loss: the chance that a chunk is lost on its way (it is sent
            again, arriving later), or a function of the two host names.
        :param seed: seeds the random generator behind loss: one seed, one
            history.
        :param min_rto: the shortest retransmission timeout; a loss costs
            ``max(min_rto, 2 * round-trip time)``.
        :param receive_window: see the class's ``receive_window``.
        :param connect_delay: seconds a connection attempt waits before its
            first packet leaves (on top of the latency), or a function of
            the connecting and the listening host's names that gives it,
            called once per attempt: the time an onion service takes to
            build its circuits, say.  It counts against the attempt's
            timeout.
        """
        self.clock = clock
        self.latency: Callable[[str, str], float] = (
            latency if callable(latency) else _constant(float(latency))
        )
        self.loss: Callable[[str, str], float] | None = (
            loss if callable(loss) else _constant(float(loss)) if loss else None
        )
        self.random = random.Random(seed)  # noqa: S311 (a simulation, not crypto)
        self.min_rto = min_rto
        self.receive_window = receive_window
        self.connect_delay: Callable[[str, str], float] = (
            connect_delay if callable(connect_delay) else _constant(float(connect_delay))
        )
        self.hosts: dict[str, MemoryHost] = {}
        self._stalled: list[tuple[MemoryHost, MemoryHost, Callable[..., object], tuple[Any, ...]]]
        self._stalled = []

    def add_host(
        self,
        name: str,
        *,
        upload_bps: float | None = None,
        download_bps: float | None = None,
    ) -> MemoryHost:
        """
        Add a host.

        :param name: its name: letters, digits, ``.``, ``_`` and ``-``.
        :param upload_bps: its upload rate in bits per second (``8_000_000``
            is 1 MB/s), shared by all its connections; ``None`` for
            unlimited.
        :param download_bps: its download rate, likewise.
        :raises ValueError: when the name is taken or invalid.
        """
        try:
            check_memory_host(name)
        except InvalidAddress as e:
            raise ValueError(str(e)) from None
        if name in self.hosts:
            raise ValueError(f"there is already a host {name!r}")
        for rate in (upload_bps, download_bps):
            if rate is not None and rate <= 0:
                raise ValueError(f"a rate must be positive, not {rate!r}")
        host = self.hosts[name] = MemoryHost(self.clock, name, upload_bps, download_bps)
        return host

    def transport(self, host: str, *, connect_timeout: float = 30.0) -> MemoryTransport:
        """
        A transport that listens and connects as ``host``.

        :param connect_timeout: seconds after which a connection attempt that
            got no answer fails with ``TimeoutError``.
        :raises KeyError: when there is no such host.
        """
        return MemoryTransport(self, self.hosts[host], connect_timeout=connect_timeout)

    def partition(self, *groups: Iterable[str]) -> None:
        """
        Split the network: hosts in different groups cannot reach each
        other, and the hosts in no group form one more group.  Replaces any
        earlier partition.  Traffic across the split stalls until
        :meth:`heal`.
        """
        for host in self.hosts.values():
            host.side = 0
        for side, group in enumerate(groups, 1):
            for name in group:
                self.hosts[name].side = side
        self.log.debug("network partitioned into {count} groups", count=len(groups) + 1)

    def heal(self) -> None:
        """
        Undo :meth:`partition`: stalled traffic resumes.
        """
        for host in self.hosts.values():
            host.side = 0
        self.log.debug("network healed")
        self._resume()

    def take_offline(self, name: str, *, refuse: bool = False) -> None:
        """
        Cut a host off the network: its open connections are lost on both
        sides (``ConnectionLost``), and connection attempts to it time out,
        or with ``refuse`` are refused at once (a host whose node is down).
        Its listeners stay; :meth:`bring_online` undoes this.
        """
        host = self.hosts[name]
        host.online = False
        host.refusing = refuse
        for connection in list(host.connections):
            connection._sever("host went offline")
        self.log.debug("host {host} offline", host=name)

    def remove_host(self, name: str) -> None:
        """
        Take a host off the network for good, as a machine that left it: its
        connections are lost as with :meth:`take_offline`, its listeners
        close, and connection attempts to it time out.  Unlike an offline
        host, it never comes back, so nothing sent to or from it is kept
        waiting for it: a simulation with churn does not pile up the
        packets of everyone who left.  Its name stays taken.
        """
        host = self.hosts[name]
        self.take_offline(name)
        host.gone = True
        for listener in list(host.ports.values()):
            listener.stopListening()
        self._stalled = [item for item in self._stalled if not (item[0].gone or item[1].gone)]

    def bring_online(self, name: str) -> None:
        """
        Reconnect a host taken offline.

        :raises ValueError: when the host was removed.
        """
        host = self.hosts[name]
        if host.gone:
            raise ValueError(f"host {name!r} left the network for good")
        host.online = True
        host.refusing = False
        self.log.debug("host {host} online", host=name)
        self._resume()

    def reachable(self, source: MemoryHost, target: MemoryHost) -> bool:
        """
        :returns: whether packets from ``source`` reach ``target`` now.
        """
        return (
            source.side == target.side
            and (source.online or source.refusing)
            and (target.online or target.refusing)
        )

    def _retransmission_delay(self, source: str, target: str) -> float:
        assert self.loss is not None
        chance = self.loss(source, target)
        losses = 0
        draw = self.random.random
        while draw() < chance:
            losses += 1
        if not losses:
            return 0.0
        rtt = self.latency(source, target) + self.latency(target, source)
        return losses * max(self.min_rto, 2 * rtt)

    def _land(
        self, source: MemoryHost, target: MemoryHost, what: Callable[..., object], *args: Any
    ) -> None:
        """
        A packet from ``source`` reaches ``target`` now, or waits for the
        path to come back.
        """
        if (
            source.side == target.side
            and (source.online or source.refusing)
            and (target.online or target.refusing)
        ):
            what(*args)
        elif not (source.gone or target.gone):
            self._stalled.append((source, target, what, args))

    def _send(
        self, source: MemoryHost, target: MemoryHost, what: Callable[..., object], *args: Any
    ) -> None:
        """
        Send a control packet (connection set-up, reset): ``what(*args)``
        runs at ``target`` after the latency.
        """
        self.clock.callLater(
            self.latency(source.name, target.name), self._land, source, target, what, *args
        )

    def _resume(self) -> None:
        stalled, self._stalled = self._stalled, []
        for source, target, what, args in stalled:
            # The retransmission that gets through.
            self._send(source, target, what, *args)

    def _connect(
        self,
        source: MemoryHost,
        name: str,
        port: int,
        factory: IProtocolFactory,
        timeout: float,
    ) -> Deferred[IProtocol]:
        target = self.hosts.get(name)
        if target is None:
            return fail(DNSLookupError(f"no host {name!r} on this memory network"))
        attempt = _ConnectionAttempt(self, source, target, port, factory)
        attempt.timeout = self.clock.callLater(timeout, attempt.time_out)
        delay = self.connect_delay(source.name, target.name)
        if delay > 0:
            self.clock.callLater(delay, self._send, source, target, attempt.syn_arrived)
        else:
            self._send(source, target, attempt.syn_arrived)
        return attempt.deferred


class _ConnectionAttempt:
    """
    A connection being set up: the SYN travels to the listener, the answer
    (SYN-ACK or refusal) travels back.
    """

    def __init__(
        self,
        network: MemoryNetwork,
        source: MemoryHost,
        target: MemoryHost,
        port: int,
        factory: IProtocolFactory,
    ) -> None:
        self.network = network
        self.source = source
        self.target = target
        self.port = port
        self.factory = factory
        self.local = MemoryAddress(source.name, source.allocate_port())
        self.remote = MemoryAddress(target.name, port)
        self.deferred: Deferred[IProtocol] = Deferred(self._cancel)
        self.timeout: IDelayedCall | None = None
        self.done = False

    def _finish(self) -> bool:
        if self.done:
            return False
        self.done = True
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        return True

    def _cancel(self, deferred: Deferred[IProtocol]) -> None:
        self._finish()

    def time_out(self) -> None:
        if self._finish():
            self.deferred.errback(
                TimeoutError(string=f"connecting to {self.remote}")  # type: ignore[no-untyped-call]
            )

    def refused(self) -> None:
        if self._finish():
            refusal = ConnectionRefusedError(  # type: ignore[no-untyped-call]
                string=f"connecting to {self.remote}"
            )
            self.deferred.errback(refusal)

    def syn_arrived(self) -> None:
        if self.done:
            return
        network = self.network
        target = self.target
        listener = target.ports.get(self.port) if target.online else None
        server_protocol = None
        if listener is not None:
            server_protocol = listener.factory.buildProtocol(self.local)
        if server_protocol is None:
            network._send(target, self.source, self.refused)
            return
        outbound = _Flow(network, self.source, target)
        inbound = _Flow(network, target, self.source)
        server = MemoryConnection(network, target, self.remote, self.local, outbound, inbound)
        client = MemoryConnection(network, self.source, self.local, self.remote, inbound, outbound)
        server.peer = client
        client.peer = server
        # Schedule the answer before the server protocol can write: its
        # first bytes then reach a client that is already connected.
        network._send(target, self.source, self.established, client)
        server._start(server_protocol)

    def established(self, client: MemoryConnection) -> None:
        if client.lost:
            # Severed while the answer travelled (a host went offline).
            if self._finish():
                why = f"connection to {self.remote} lost while connecting"
                self.deferred.errback(ConnectError(string=why))  # type: ignore[no-untyped-call]
            return
        if not self._finish():
            # Nobody waits any more: reset the server's end.
            client._reset_peer()
            return
        try:
            protocol = self.factory.buildProtocol(self.remote)
            if protocol is None:
                raise NoProtocol()
        except BaseException:
            client._reset_peer()
            self.deferred.errback()
            return
        client._start(protocol)
        self.deferred.callback(protocol)


@implementer(ITCPTransport, IConsumer, IPushProducer)
class MemoryConnection:
    """
    One end of a connection on a :class:`MemoryNetwork`: the transport its
    protocol writes to, with the interfaces of a TCP connection
    (``ITCPTransport``), a consumer for a producer, and a push producer of
    the data it receives.

    :ivar connected: whether the protocol is connected.
    :ivar disconnecting: whether ``loseConnection`` was called.
    """

    def __init__(
        self,
        network: MemoryNetwork,
        host: MemoryHost,
        local: MemoryAddress,
        remote: MemoryAddress,
        incoming: _Flow,
        outgoing: _Flow,
    ) -> None:
        self.network = network
        self.host = host
        self.local = local
        self.remote = remote
        self.incoming = incoming
        self.outgoing = outgoing
        incoming.receiver = self
        outgoing.sender = self
        self.peer: MemoryConnection | None = None
        self.protocol: IProtocol | None = None
        self.connected = False
        self.disconnecting = False
        self.lost = False
        self._write_closing = False
        self._write_closed = False
        self._read_closed = False
        self._reading_paused = False
        self._inbox = _NO_ITEMS
        self._flush_scheduled = False
        self.producer: Any = None
        self._streaming = False
        self._producer_paused = False
        self._watching_buffer = False
        self._drain_check_scheduled = False
        self._no_delay = False
        self._keep_alive = False

    def __repr__(self) -> str:
        return f"<MemoryConnection {self.local} -> {self.remote}>"

    # Life cycle.

    def _start(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        self.connected = True
        self.host.connections.add(self)
        protocol.makeConnection(self)
        if self._inbox:
            self._flush_inbox()

    def _lose(self, reason: Exception) -> None:
        if self.lost:
            return
        self.lost = True
        self.connected = False
        self._read_closed = True
        self._inbox = _NO_ITEMS
        self.incoming.kill()
        self.host.connections.discard(self)
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        # Like Twisted's tcp.Connection, let go of the protocol and the
        # other end, so a finished connection is freed by reference
        # counting instead of waiting for the cyclic collector.
        protocol, self.protocol = self.protocol, None
        self.incoming.receiver = None
        self.outgoing.sender = None
        if self.peer is not None and self.peer.lost:
            self.peer.peer = None
            self.peer = None
        if protocol is not None:
            protocol.connectionLost(Failure(reason))  # type: ignore[no-untyped-call]

    def _sever(self, why: str) -> None:
        # Both ends lose the connection at once (a host went offline).
        for end in (self, self.peer):
            if end is not None and not end.lost:
                end.incoming.kill()
                end.outgoing.kill()
                self.network.clock.callLater(0, end._lose, ConnectionLost(why))

    def _reset_peer(self) -> None:
        # Our end never got a protocol; tell the other end it is over.
        self.outgoing.kill()
        self.incoming.kill()
        if self.peer is not None:
            self.network._send(self.host, self.peer.host, self.peer._reset)

    def _reset(self) -> None:
        if self.lost:
            return
        self.outgoing.kill()
        self._lose(ConnectionLost("connection reset by peer"))

    # Receiving.

    def _received(self, item: _Item) -> None:
        if self.lost or self._read_closed:
            return
        if self._reading_paused or not self.connected or self._inbox:
            if self._inbox is _NO_ITEMS:
                self._inbox = deque()
            self._inbox.append(item)
            return
        self._consume(item)

    def _consume(self, item: _Item) -> None:
        if item is _FIN:
            self._fin_received()
            return
        size = len(item)  # type: ignore[arg-type]
        if not self.disconnecting:
            assert self.protocol is not None
            self.protocol.dataReceived(item)  # type: ignore[arg-type]
        self.incoming.acknowledged(size)

    def _flush_inbox(self) -> None:
        self._flush_scheduled = False
        inbox = self._inbox
        while inbox and not self._reading_paused and not self.lost:
            self._consume(inbox.popleft())
        if not inbox and self._inbox is inbox:
            self._inbox = _NO_ITEMS

    def _fin_received(self) -> None:
        if self.lost:
            return
        self._read_closed = True
        if self._write_closed:
            self._lose(ConnectionDone("connection closed by both ends"))
        elif not self._write_closing and IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
        else:
            # Like a TCP socket of a protocol that cannot half-close: the
            # whole connection ends and unsent data is dropped.
            self.outgoing.send.clear()
            self._send_fin()
            self._lose(ConnectionDone("connection closed by the peer"))

    def pauseProducing(self) -> None:
        """
        Stop delivering received data until :meth:`resumeProducing`; the
        sender is slowed once the receive window fills.
        """
        self._reading_paused = True

    def resumeProducing(self) -> None:
        """
        Deliver received data again.
        """
        self._reading_paused = False
        if self._inbox and not self._flush_scheduled and not self.lost:
            self._flush_scheduled = True
            self.network.clock.callLater(0, self._flush_inbox)

    def stopProducing(self) -> None:
        """
        Close the connection, as a producer told to stop does.
        """
        self.loseConnection()

    # Sending.

    def write(self, data: bytes) -> None:
        """
        Queue ``data`` for the peer.  It is never delivered before this
        returns.
        """
        if isinstance(data, str):
            raise TypeError("data must be bytes, not str")
        if self.lost or self._write_closed or not data:
            return
        send = self.outgoing.send
        send.put(bytes(data))
        if not send.scheduled:
            self.host.upload.activate(send)
        if self._streaming and not self._producer_paused and send.size > WRITE_BUFFER_SIZE:
            self._producer_paused = True
            self._update_watch()
            self.producer.pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """
        Queue each of ``data`` in turn.
        """
        self.write(b"".join(data))

    def _schedule_drain_check(self) -> None:
        if not self._drain_check_scheduled:
            self._drain_check_scheduled = True
            self.network.clock.callLater(0, self._drain_check)

    def _update_watch(self) -> None:
        # Whether an emptied send queue means anything: a close waits for
        # it, or a producer is to be asked for more.  A streaming producer
        # that is not paused needs no check after every chunk.
        self._watching_buffer = self._write_closing or (
            self.producer is not None and (not self._streaming or self._producer_paused)
        )

    def _drain_check(self) -> None:
        self._drain_check_scheduled = False
        if self.lost or self._write_closed or self.outgoing.send.size:
            return
        producer = self.producer
        if producer is not None and (not self._streaming or self._producer_paused):
            # As Twisted's FileDescriptor: an empty buffer asks for more
            # before it closes.
            self._producer_paused = False
            self._update_watch()
            producer.resumeProducing()
            return
        if self._write_closing:
            self._send_fin()
            if self.disconnecting or self._read_closed:
                self._lose(ConnectionDone("connection closed"))

    def _send_fin(self) -> None:
        if self._write_closed:
            return
        self._write_closed = True
        self._write_closing = True
        send = self.outgoing.send
        send.put(_FIN)
        if not send.scheduled:
            self.host.upload.activate(send)

    def loseConnection(self) -> None:
        """
        Close once everything written has been sent; both protocols then
        get ``connectionLost`` with ``ConnectionDone``.
        """
        if self.lost or self.disconnecting:
            return
        self.disconnecting = True
        self._close_write()

    def loseWriteConnection(self) -> None:
        """
        Half-close: send what was written, then end the stream to the peer,
        and keep receiving.
        """
        if not self.lost:
            self._close_write()

    def _close_write(self) -> None:
        self._write_closing = True
        self._update_watch()
        self._schedule_drain_check()

    def abortConnection(self) -> None:
        """
        Close at once, dropping unsent data: this end gets
        ``ConnectionAborted``, the peer ``ConnectionLost``.
        """
        if self.lost:
            return
        self.disconnecting = True
        self.outgoing.kill()
        self.incoming.kill()
        if self.peer is not None:
            self.network._send(self.host, self.peer.host, self.peer._reset)
        self.network.clock.callLater(0, self._lose, ConnectionAborted())

    # Producers.

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register a producer; a streaming one is paused while more than
        ``WRITE_BUFFER_SIZE`` bytes wait to be sent, a pull one is asked for
        more whenever everything was sent.

        :raises RuntimeError: when a producer is already registered.
        """
        if self.producer is not None:
            raise RuntimeError(
                f"cannot register producer {producer!r}: {self.producer!r} is registered"
            )
        if self.lost:
            producer.stopProducing()
            return
        self.producer = producer
        self._streaming = bool(streaming)
        self._producer_paused = False
        self._update_watch()
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        """
        Forget the registered producer.
        """
        self.producer = None
        self._update_watch()
        if self._write_closing:
            self._schedule_drain_check()

    # Addresses and options.

    def getHost(self) -> MemoryAddress:  # type: ignore[override]
        """
        :returns: this end's :class:`MemoryAddress`.
        """
        return self.local

    def getPeer(self) -> MemoryAddress:  # type: ignore[override]
        """
        :returns: the other end's :class:`MemoryAddress`.
        """
        return self.remote

    def getTcpNoDelay(self) -> bool:
        """
        :returns: what :meth:`setTcpNoDelay` set (it changes nothing here).
        """
        return self._no_delay

    def setTcpNoDelay(self, enabled: bool) -> None:
        """
        Accepted for compatibility; the memory network never delays writes.
        """
        self._no_delay = enabled

    def getTcpKeepAlive(self) -> bool:
        """
        :returns: what :meth:`setTcpKeepAlive` set (it changes nothing here).
        """
        return self._keep_alive

    def setTcpKeepAlive(self, enabled: bool) -> None:
        """
        Accepted for compatibility.
        """
        self._keep_alive = enabled


@implementer(IListeningPort)
class MemoryListeningPort:
    """
    A port a :class:`MemoryTransport` listens on.
    """

    def __init__(self, transport: MemoryTransport, port: int, factory: IProtocolFactory) -> None:
        self.transport = transport
        self.port = port
        self.factory = factory
        self.listening = False

    def startListening(self) -> None:
        """
        Accept connections.

        :raises CannotListenError: when the port is taken.
        """
        host = self.transport.host
        if self.port in host.ports:
            raise CannotListenError(  # type: ignore[no-untyped-call]
                host.name, self.port, OSError("port in use")
            )
        self.factory.doStart()
        host.ports[self.port] = self
        self.transport._ports.append(self)
        self.listening = True

    def stopListening(self) -> Deferred[None]:
        """
        Refuse new connections; open ones stay.

        :returns: a ``Deferred`` that has already fired.
        """
        if self.listening:
            self.listening = False
            host = self.transport.host
            if host.ports.get(self.port) is self:
                del host.ports[self.port]
            self.transport._ports.remove(self)
            self.factory.doStop()
        return succeed(None)

    def getHost(self) -> MemoryAddress:
        """
        :returns: where it listens.
        """
        return MemoryAddress(self.transport.host.name, self.port)


@implementer(ITransport)
class MemoryTransport:
    """
    The ``memory`` transport of one host on a :class:`MemoryNetwork`.

    Addresses are ``HOST:PORT``; listening descriptions are a port number,
    ``"0"`` meaning any free one.
    """

    name = "memory"

    def __init__(
        self, network: MemoryNetwork, host: MemoryHost, *, connect_timeout: float = 30.0
    ) -> None:
        self.network = network
        self.host = host
        self.connect_timeout = connect_timeout
        self._ports: list[MemoryListeningPort] = []

    def listen(self, description: str, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        See :meth:`ITransport.listen`.
        """
        try:
            port = parse_port(description.strip(), allow_zero=True)
        except InvalidAddress as e:
            return fail(InvalidAddress(f"bad memory listening description: {e}"))
        if port == 0:
            port = self.host.allocate_port()
        listener = MemoryListeningPort(self, port, factory)
        try:
            listener.startListening()
        except CannotListenError:
            return fail()
        return succeed(listener)

    def connect(self, address: str, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        See :meth:`ITransport.connect`.  An unknown host fails with
        ``DNSLookupError``.
        """
        try:
            name, port = parse_memory_address(address)
        except InvalidAddress:
            return fail()
        return self.network._connect(self.host, name, port, factory, self.connect_timeout)

    def published_addresses(self) -> list[str]:
        """
        See :meth:`ITransport.published_addresses`.
        """
        return [f"{self.host.name}:{listener.port}" for listener in self._ports]


@implementer(ITransportPlugin)
@frozen
class MemoryTransportPlugin:
    """
    The ``memory`` transport plugin.  Its options: ``network``, the
    :class:`MemoryNetwork`; ``host``, the name of a host on it; and
    optionally ``connect_timeout`` in seconds.  The transport runs on the
    network's clock, whatever ``context.reactor`` is.
    """

    name: str = "memory"
    description: str = "An in-process simulated network, for tests and simulations."

    def make_transport(self, context: TransportContext) -> MemoryTransport:
        """
        See :meth:`ITransportPlugin.make_transport`.
        """
        network = context.options.get("network")
        host = context.options.get("host")
        if not isinstance(network, MemoryNetwork):
            raise TransportConfigError(
                "the memory transport needs the option 'network', a MemoryNetwork"
            )
        if not isinstance(host, str):
            raise TransportConfigError("the memory transport needs the option 'host', a host name")
        if host not in network.hosts:
            raise TransportConfigError(
                f"there is no host {host!r} on the memory network; add it with add_host"
            )
        timeout = context.options.get("connect_timeout", 30.0)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise TransportConfigError(f"bad connect_timeout {timeout!r}")
        return network.transport(host, connect_timeout=float(timeout))
