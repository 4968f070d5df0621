# -*- test-case-name: tests.test_transport -*-
"""
The conformance tests every :class:`~digitalspring.transport.ITransport`
passes: the built-in ones, and a third party's.

Mix :class:`TransportConformanceMixin` into a trial test case and say how to
make a transport, where to listen, and how a ``Deferred`` is driven to
completion (the real reactor for ``tcp``; advancing the simulated clock for
``memory``).  The test bodies are coroutines that await ``Deferred``\\ s, so
the same body runs either way.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import (
    IConsumer,
    IListeningPort,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from ..transport import InvalidAddress, ITransport

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    class _Base:
        # What the mixin uses of a trial test case, typed (trial's are not).
        def assertTrue(self, condition: object, msg: object = None) -> None: ...
        def assertFalse(self, condition: object, msg: object = None) -> None: ...
        def assertEqual(self, first: object, second: object, msg: object = None) -> None: ...
        def assertLess(self, first: Any, second: Any, msg: object = None) -> None: ...
        def assertIsInstance(self, instance: object, classOrTuple: Any) -> None: ...
        def assertRaises(
            self, exception: type[BaseException], *, msg: object = None
        ) -> AbstractContextManager[Any]: ...
        def fail(self, msg: object = None) -> None: ...

else:
    _Base = object

_T = TypeVar("_T")


class _Event:
    """
    Something that happens once, which any number of waiters can await.
    """

    def __init__(self) -> None:
        self.fired = False
        self.value: Any = None
        self._waiting: list[Deferred[Any]] = []

    def fire(self, value: Any = None) -> None:
        if self.fired:
            return
        self.fired = True
        self.value = value
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(value)

    def wait(self) -> Deferred[Any]:
        if self.fired:
            return succeed(self.value)
        d: Deferred[Any] = Deferred()
        self._waiting.append(d)
        return d


class RecordingProtocol(Protocol):
    """
    A protocol that hashes and counts what it receives and lets a test wait
    for its events.

    :ivar received: how many bytes arrived.
    :ivar head: the first 64 KiB that arrived, to compare contents.
    :ivar reason: why the connection was lost, once it was.
    """

    _HEAD = 64 * 1024

    def __init__(self, scenario: TransportConformanceMixin) -> None:
        self._scenario = scenario
        self.received = 0
        self.head = b""
        self._digest = hashlib.sha256()
        self.made = _Event()
        self.lost = _Event()
        self.reason: Failure | None = None
        self._thresholds: list[tuple[int, Deferred[None]]] = []

    def connectionMade(self) -> None:
        self._scenario._connections.append(self)
        self.made.fire()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self._digest.update(data)
        if len(self.head) < self._HEAD:
            self.head += data[: self._HEAD - len(self.head)]
        reached = [(n, d) for (n, d) in self._thresholds if self.received >= n]
        self._thresholds = [(n, d) for (n, d) in self._thresholds if self.received < n]
        for _, d in reached:
            d.callback(None)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.lost.fire()
        thresholds, self._thresholds = self._thresholds, []
        for n, d in thresholds:
            d.errback(AssertionError(f"lost after {self.received} of {n} bytes: {reason}"))

    @property
    def connection(self) -> Any:
        """
        The protocol's transport: an ``ITCPTransport``, ``IConsumer`` and
        ``IPushProducer``.
        """
        return self.transport

    def digest(self) -> bytes:
        """
        :returns: the SHA-256 of everything received so far.
        """
        return self._digest.copy().digest()

    def received_at_least(self, count: int) -> Deferred[None]:
        """
        :returns: a ``Deferred`` that fires once ``count`` bytes arrived, and
            fails if the connection is lost before.
        """
        if self.received >= count:
            return succeed(None)
        if self.lost.fired:
            return Deferred.fromCoroutine(_raise(AssertionError("connection already lost")))
        d: Deferred[None] = Deferred()
        self._thresholds.append((count, d))
        return d


async def _raise(error: Exception) -> None:
    raise error


class AcceptingFactory(Factory):
    """
    A factory of :class:`RecordingProtocol` for listeners, which lets a test
    wait for each accepted connection in turn.
    """

    def __init__(self, scenario: TransportConformanceMixin) -> None:
        self._scenario = scenario
        self._accepted: list[RecordingProtocol] = []
        self._waiting: list[Deferred[RecordingProtocol]] = []

    def buildProtocol(self, addr: Any) -> RecordingProtocol:
        protocol = RecordingProtocol(self._scenario)
        protocol.factory = self
        protocol.made.wait().addCallback(lambda _: self._made(protocol))
        return protocol

    def _made(self, protocol: RecordingProtocol) -> None:
        if self._waiting:
            self._waiting.pop(0).callback(protocol)
        else:
            self._accepted.append(protocol)

    def next_connection(self) -> Deferred[RecordingProtocol]:
        """
        :returns: a ``Deferred`` firing with the next accepted connection's
            protocol, once it is connected.
        """
        if self._accepted:
            return succeed(self._accepted.pop(0))
        d: Deferred[RecordingProtocol] = Deferred()
        self._waiting.append(d)
        return d


@implementer(IPushProducer)
class _Pump:
    """
    A streaming producer that writes blocks until its consumer pauses it.
    """

    def __init__(self, transport: Any, block: bytes, cap: int) -> None:
        self.transport = transport
        self.block = block
        self.cap = cap
        self.written = 0
        self.paused = False
        self.resumed = 0
        self.stopped = False
        self._digest = hashlib.sha256()

    def digest(self) -> bytes:
        return self._digest.copy().digest()

    def pump(self) -> None:
        while not self.paused and not self.stopped and self.written < self.cap:
            self.written += len(self.block)
            self._digest.update(self.block)
            self.transport.write(self.block)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumed += 1
        self.pump()

    def stopProducing(self) -> None:
        self.stopped = True


def _payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)  # noqa: S311 (test data)


#: How many waits of a settle time a test makes for a transport to reach
#: a state before it fails, rather than waiting forever.
_PATIENCE = 100


def scenario(
    body: Callable[[Any], Coroutine[Any, Any, None]],
) -> Callable[[Any], Deferred[None] | None]:
    """
    Make a test method of a coroutine: it runs through
    :meth:`TransportConformanceMixin.run_scenario`, and every connection and
    listener it opened is closed afterwards, whatever happened.
    """

    @wraps(body)
    def test(self: TransportConformanceMixin) -> Deferred[None] | None:
        return self.run_scenario(Deferred.fromCoroutine(self._cleaning_up(body(self))))

    return test


class TransportConformanceMixin(_Base):
    """
    Tests that a transport does what :class:`ITransport` promises.

    A subclass (which is also a trial test case) provides:

    - :meth:`make_transport`: a new transport; connections are made between
      two transports it returned;
    - :attr:`listen_description`: where to listen, for any free port;
    - :meth:`run_scenario`: how to run a test body to completion;
    - :attr:`clock`: what time passes on, for waiting;
    - optionally :attr:`bulk_size`, the bytes each way in the bulk test.
    """

    #: How many bytes each side sends in the bulk test.
    bulk_size = 4 * 1024 * 1024

    #: A listening description for any free port (``"0"`` for ``memory``).
    listen_description = "0"

    #: Simulated or real seconds to wait for a writer to stall.
    settle_time = 0.5

    _connections: list[RecordingProtocol]
    _listeners: list[IListeningPort]

    def make_transport(self) -> ITransport:
        """
        :returns: a fresh transport to test.
        """
        raise NotImplementedError

    @property
    def clock(self) -> IReactorTime:
        """
        The clock the transport runs on.
        """
        raise NotImplementedError

    def run_scenario(self, scenario: Deferred[None]) -> Deferred[None] | None:
        """
        Run a test body to completion.

        :param scenario: the running body: it succeeds or fails as the test
            should.
        :returns: what the test method returns: the ``Deferred`` for trial
            to wait on (real reactor), or ``None`` after having driven it to
            its end (simulated clock).
        """
        raise NotImplementedError

    # Helpers for the bodies.

    async def _cleaning_up(self, body: Coroutine[Any, Any, None]) -> None:
        self._connections = []
        self._listeners = []
        try:
            await body
        finally:
            for listener in self._listeners:
                await maybeDeferred(listener.stopListening)
            for connection in self._connections:
                if not connection.lost.fired:
                    connection.connection.abortConnection()
            for connection in self._connections:
                await connection.lost.wait()

    def sleep(self, seconds: float) -> Deferred[None]:
        """
        :returns: a ``Deferred`` firing after ``seconds`` on :attr:`clock`.
        """
        return deferLater(self.clock, seconds)

    async def listen(self, transport: ITransport) -> tuple[IListeningPort, AcceptingFactory]:
        """
        Listen on ``transport`` at :attr:`listen_description`.

        :returns: the port and the factory that accepts the connections.
        """
        factory = AcceptingFactory(self)
        port = await transport.listen(self.listen_description, factory)
        self._listeners.append(port)
        return port, factory

    async def connected_pair(self) -> tuple[RecordingProtocol, RecordingProtocol]:
        """
        Connect one new transport to another.

        :returns: the client and the server protocol, both connected.
        """
        server_transport = self.make_transport()
        client_transport = self.make_transport()
        _, factory = await self.listen(server_transport)
        [address] = server_transport.published_addresses()
        client = await client_transport.connect(
            address, Factory.forProtocol(lambda: RecordingProtocol(self))
        )
        server = await factory.next_connection()
        assert isinstance(client, RecordingProtocol)
        return client, server

    async def assert_lost(self, protocol: RecordingProtocol, *kinds: type[Exception]) -> None:
        """
        Wait until ``protocol`` lost its connection, and check why.
        """
        await protocol.lost.wait()
        reason = protocol.reason
        assert reason is not None
        if not reason.check(*kinds):  # type: ignore[no-untyped-call]
            self.fail(f"connection lost with {reason.value!r}, expected one of {kinds}")

    # The tests.

    @scenario
    async def test_provides_interface(self) -> None:
        """
        The transport provides ``ITransport`` and has a name.
        """
        transport = self.make_transport()
        self.assertTrue(verifyObject(ITransport, transport))
        self.assertIsInstance(transport.name, str)

    @scenario
    async def test_published_addresses(self) -> None:
        """
        A transport publishes one address per listening port, and only while
        it listens.
        """
        transport = self.make_transport()
        self.assertEqual(transport.published_addresses(), [])
        first, _ = await self.listen(transport)
        second, _ = await self.listen(transport)
        addresses = transport.published_addresses()
        self.assertEqual(len(set(addresses)), 2)
        await maybeDeferred(first.stopListening)
        self.assertEqual(transport.published_addresses(), addresses[1:])
        await maybeDeferred(second.stopListening)
        self.assertEqual(transport.published_addresses(), [])

    @scenario
    async def test_connect(self) -> None:
        """
        ``connect`` to a published address fires with the client's protocol
        once both ends are connected, with TCP-like transports under them.
        """
        client, server = await self.connected_pair()
        self.assertTrue(client.made.fired)
        self.assertTrue(server.made.fired)
        for end in (client, server):
            self.assertTrue(verifyObject(ITCPTransport, end.transport))
            self.assertTrue(IConsumer.providedBy(end.transport))
            self.assertTrue(IPushProducer.providedBy(end.transport))
        self.assertEqual(client.connection.getPeer(), server.connection.getHost())
        self.assertEqual(client.connection.getHost(), server.connection.getPeer())

    @scenario
    async def test_small_exchange(self) -> None:
        """
        A few bytes written on either side arrive intact at the other.
        """
        client, server = await self.connected_pair()
        client.connection.write(b"hello, ")
        client.connection.writeSequence([b"server", b"!"])
        server.connection.write(b"hello, client")
        await server.received_at_least(14)
        await client.received_at_least(13)
        self.assertEqual(server.head, b"hello, server!")
        self.assertEqual(client.head, b"hello, client")

    @scenario
    async def test_bulk_transfer(self) -> None:
        """
        Megabytes written both ways at once arrive complete and unaltered.
        """
        client, server = await self.connected_pair()
        size = self.bulk_size
        up = _payload(1, size)
        down = _payload(2, size + 12345)
        block = 65536
        for offset in range(0, size // 2, block):
            client.connection.write(up[offset : min(offset + block, size // 2)])
        client.connection.writeSequence(
            [up[offset : offset + block] for offset in range(size // 2, size, block)]
        )
        server.connection.write(down)
        await server.received_at_least(len(up))
        await client.received_at_least(len(down))
        self.assertEqual(server.received, len(up))
        self.assertEqual(client.received, len(down))
        self.assertEqual(server.digest(), hashlib.sha256(up).digest())
        self.assertEqual(client.digest(), hashlib.sha256(down).digest())

    async def _close_from(self, closing: str) -> None:
        client, server = await self.connected_pair()
        closer, other = (client, server) if closing == "client" else (server, client)
        last_words = _payload(3, 200_000)
        closer.connection.write(last_words)
        closer.connection.loseConnection()
        await self.assert_lost(other, ConnectionDone)
        await self.assert_lost(closer, ConnectionDone)
        self.assertEqual(other.received, len(last_words))
        self.assertEqual(other.digest(), hashlib.sha256(last_words).digest())

    @scenario
    async def test_close_from_client(self) -> None:
        """
        When the client closes, what it wrote first arrives, then both ends
        see a clean close (``ConnectionDone``).
        """
        await self._close_from("client")

    @scenario
    async def test_close_from_server(self) -> None:
        """
        When the server closes, what it wrote first arrives, then both ends
        see a clean close (``ConnectionDone``).
        """
        await self._close_from("server")

    @scenario
    async def test_abort(self) -> None:
        """
        ``abortConnection`` ends the connection at once: the aborting end
        sees ``ConnectionAborted``, the other a lost connection, not a clean
        close.
        """
        client, server = await self.connected_pair()
        client.connection.write(_payload(4, 1_000_000))
        client.connection.abortConnection()
        await self.assert_lost(client, ConnectionAborted)
        await self.assert_lost(server, ConnectionLost)
        assert server.reason is not None
        clean = server.reason.check(ConnectionDone)  # type: ignore[no-untyped-call]
        self.assertFalse(clean, server.reason)

    @scenario
    async def test_connection_refused(self) -> None:
        """
        Connecting where nobody listens (any more) fails with
        ``ConnectionRefusedError``.
        """
        server_transport = self.make_transport()
        port, _ = await self.listen(server_transport)
        [address] = server_transport.published_addresses()
        await maybeDeferred(port.stopListening)
        client_transport = self.make_transport()
        connecting = client_transport.connect(
            address, Factory.forProtocol(lambda: RecordingProtocol(self))
        )
        try:
            await connecting
        except ConnectionRefusedError:
            pass
        else:
            self.fail(f"connected to {address} after it stopped listening")

    @scenario
    async def test_stop_listening_keeps_connections(self) -> None:
        """
        Open connections outlive the listener they came through.
        """
        server_transport = self.make_transport()
        port, factory = await self.listen(server_transport)
        [address] = server_transport.published_addresses()
        client_transport = self.make_transport()
        client = await client_transport.connect(
            address, Factory.forProtocol(lambda: RecordingProtocol(self))
        )
        server = await factory.next_connection()
        assert isinstance(client, RecordingProtocol)
        await maybeDeferred(port.stopListening)
        self.assertEqual(server_transport.published_addresses(), [])
        client.connection.write(b"still here")
        await server.received_at_least(10)
        self.assertEqual(server.head, b"still here")

    @scenario
    async def test_invalid_addresses(self) -> None:
        """
        Malformed addresses and listening descriptions fail the returned
        ``Deferred`` with ``InvalidAddress``.
        """
        transport = self.make_transport()
        factory = Factory.forProtocol(lambda: RecordingProtocol(self))
        for address in ["", "nohost", ":1", "host:", "host:port", "host:70000", "a b:1"]:
            with self.assertRaises(InvalidAddress, msg=address):
                await transport.connect(address, factory)
        for description in ["nonsense", "-1", "70000"]:
            with self.assertRaises(InvalidAddress, msg=description):
                await transport.listen(description, factory)

    @scenario
    async def test_backpressure(self) -> None:
        """
        A streaming producer writing to a reader that stopped reading is
        paused and stays paused; once the reader resumes, it is resumed and
        everything it wrote arrives.
        """
        client, server = await self.connected_pair()
        server.connection.pauseProducing()
        cap = 256 * 1024 * 1024
        pump = _Pump(client.transport, _payload(5, 65536), cap)
        client.connection.registerProducer(pump, True)
        pump.pump()
        written = -1
        for _ in range(_PATIENCE):
            if written == pump.written and pump.paused:
                break
            written = pump.written
            await self.sleep(self.settle_time)
        else:
            self.fail(
                f"the writer was not paused and stalled after {_PATIENCE} x "
                f"{self.settle_time} s ({pump.written} bytes written, paused: {pump.paused}; "
                f"the paused reader received {server.received}; lost: writer "
                f"{client.reason}, reader {server.reason})"
            )
        self.assertLess(written, cap)
        resumed = pump.resumed
        server.connection.resumeProducing()
        # As long as pausing may take, looked at ten times as often: over
        # Tor the window opens only as the reader's SENDMEs come back (in
        # one of ten runs of the Tor modules, more than 10 s).
        for _ in range(_PATIENCE * 10):
            if pump.resumed != resumed:
                break
            await self.sleep(self.settle_time / 10)
        else:
            self.fail(
                f"the writer was not resumed {_PATIENCE * 10} x {self.settle_time / 10} s "
                "after the reader resumed"
            )
        pump.stopped = True
        client.connection.unregisterProducer()
        await server.received_at_least(pump.written)
        self.assertEqual(server.received, pump.written)
        self.assertEqual(server.digest(), pump.digest())
