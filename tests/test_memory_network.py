"""
Tests for the simulated clock and for what the memory network models:
latency, bandwidth sharing, loss, partitions, offline hosts.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import (
    AlreadyCalled,
    AlreadyCancelled,
    ConnectError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPullProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from digitalspring.testing import drive
from digitalspring.transport import (
    MemoryAddress,
    MemoryNetwork,
    MemoryTransport,
    SimulatedClock,
)

# The clock.


class _ClockBehaviour:
    """
    What a simulated ``IReactorTime`` does; run against both
    ``SimulatedClock`` and ``task.Clock`` to show they agree.
    """

    def make_clock(self) -> Any:
        raise NotImplementedError

    def test_provides_interfaces(self) -> None:
        """
        The clock provides ``IReactorTime`` and its calls ``IDelayedCall``.
        """
        clock = self.make_clock()
        self.assertTrue(verifyObject(IReactorTime, clock))  # type: ignore[attr-defined]
        call = clock.callLater(1, lambda: None)
        self.assertTrue(verifyObject(IDelayedCall, call))  # type: ignore[attr-defined]

    def test_runs_when_due(self) -> None:
        """
        A call runs once time reaches its due time, not before, and time
        moves only when advanced.
        """
        clock = self.make_clock()
        ran: list[float] = []
        call = clock.callLater(2.5, ran.append, "x")
        self.assertEqual(clock.seconds(), 0)  # type: ignore[attr-defined]
        self.assertEqual(call.getTime(), 2.5)  # type: ignore[attr-defined]
        clock.advance(2)
        self.assertEqual(ran, [])  # type: ignore[attr-defined]
        self.assertTrue(call.active())  # type: ignore[attr-defined]
        clock.advance(0.5)
        self.assertEqual(ran, ["x"])  # type: ignore[attr-defined]
        self.assertFalse(call.active())  # type: ignore[attr-defined]
        self.assertEqual(clock.seconds(), 2.5)  # type: ignore[attr-defined]

    def test_order(self) -> None:
        """
        Calls run in order of due time, and calls due together in the order
        they were scheduled; keyword arguments are passed.
        """
        clock = self.make_clock()
        ran: list[str] = []

        def record(what: str, suffix: str = "") -> None:
            ran.append(what + suffix)

        clock.callLater(3, record, "c")
        clock.callLater(1, record, "a1")
        clock.callLater(2, record, "b")
        clock.callLater(1, record, "a2", suffix="!")
        clock.advance(10)
        self.assertEqual(ran, ["a1", "a2!", "b", "c"])  # type: ignore[attr-defined]

    def test_scheduled_while_running(self) -> None:
        """
        A call scheduled by a running call, due within the step being
        advanced, runs in the same step.
        """
        clock = self.make_clock()
        ran: list[str] = []
        clock.callLater(1, lambda: clock.callLater(0, ran.append, "nested"))
        clock.advance(1)
        self.assertEqual(ran, ["nested"])  # type: ignore[attr-defined]

    def test_cancel(self) -> None:
        """
        A cancelled call never runs; cancelling twice, or after it ran,
        raises.
        """
        clock = self.make_clock()
        ran: list[str] = []
        call = clock.callLater(1, ran.append, "x")
        call.cancel()
        self.assertFalse(call.active())  # type: ignore[attr-defined]
        self.assertRaises(AlreadyCancelled, call.cancel)  # type: ignore[attr-defined]
        self.assertRaises(AlreadyCancelled, call.reset, 1)  # type: ignore[attr-defined]
        clock.advance(2)
        self.assertEqual(ran, [])  # type: ignore[attr-defined]
        done = clock.callLater(1, ran.append, "y")
        clock.advance(1)
        self.assertRaises(AlreadyCalled, done.cancel)  # type: ignore[attr-defined]
        self.assertRaises(AlreadyCalled, done.delay, 1)  # type: ignore[attr-defined]

    def test_reset_and_delay(self) -> None:
        """
        ``reset`` reschedules relative to now, ``delay`` relative to the
        scheduled time, either way.
        """
        clock = self.make_clock()
        ran: list[float] = []
        late = clock.callLater(1, lambda: ran.append(clock.seconds()))
        early = clock.callLater(10, lambda: ran.append(clock.seconds()))
        clock.advance(0.5)
        late.reset(2)
        early.delay(-9)
        self.assertEqual(late.getTime(), 2.5)  # type: ignore[attr-defined]
        self.assertEqual(early.getTime(), 1)  # type: ignore[attr-defined]
        clock.advance(0.5)
        self.assertEqual(ran, [1])  # type: ignore[attr-defined]
        clock.advance(1)
        self.assertEqual(ran, [1])  # type: ignore[attr-defined]
        clock.advance(0.5)
        self.assertEqual(ran, [1, 2.5])  # type: ignore[attr-defined]

    def test_get_delayed_calls(self) -> None:
        """
        ``getDelayedCalls`` lists exactly the pending calls.
        """
        clock = self.make_clock()
        a = clock.callLater(1, lambda: None)
        b = clock.callLater(2, lambda: None)
        c = clock.callLater(3, lambda: None)
        b.cancel()
        clock.advance(1)
        self.assertEqual(list(clock.getDelayedCalls()), [c])  # type: ignore[attr-defined]
        self.assertFalse(a.active())  # type: ignore[attr-defined]

    def test_exception_propagates(self) -> None:
        """
        An exception raised by a call comes out of ``advance``; later calls
        still run on the next advance.
        """
        clock = self.make_clock()
        ran: list[str] = []
        clock.callLater(1, lambda: 1 // 0)
        clock.callLater(2, ran.append, "after")
        self.assertRaises(ZeroDivisionError, clock.advance, 1)  # type: ignore[attr-defined]
        clock.advance(1)
        self.assertEqual(ran, ["after"])  # type: ignore[attr-defined]

    def test_pump_and_drive(self) -> None:
        """
        ``pump`` advances step by step; ``drive`` advances until a
        ``Deferred`` fires, and no further.
        """
        clock = self.make_clock()
        clock.pump([1, 2, 3])
        self.assertEqual(clock.seconds(), 6)  # type: ignore[attr-defined]
        d = deferLater(clock, 5.25)
        clock.callLater(100, lambda: None)
        self.assertTrue(drive(clock, d))  # type: ignore[attr-defined]
        self.assertEqual(clock.seconds(), 11.25)  # type: ignore[attr-defined]
        self.assertFalse(drive(clock, Deferred(), limit=10))  # type: ignore[attr-defined]


class SimulatedClockTests(_ClockBehaviour, SynchronousTestCase):
    """
    :class:`SimulatedClock` behaves like ``task.Clock``, and more.
    """

    def make_clock(self) -> SimulatedClock:
        return SimulatedClock()

    def test_calls_run_at_their_own_time(self) -> None:
        """
        Within one long ``advance``, each call sees its own due time, and
        what it schedules is relative to that (``task.Clock`` would show the
        end of the step).
        """
        clock = SimulatedClock()
        seen: list[float] = []

        def first() -> None:
            seen.append(clock.seconds())
            clock.callLater(1, lambda: seen.append(clock.seconds()))

        clock.callLater(3, first)
        clock.advance(10)
        self.assertEqual(seen, [3, 4])
        self.assertEqual(clock.seconds(), 10)

    def test_run_until_idle(self) -> None:
        """
        ``run_until_idle`` runs everything pending, including what that
        schedules, and stops at ``limit`` for calls that never end.
        """
        clock = SimulatedClock()
        ran: list[float] = []
        clock.callLater(5, lambda: clock.callLater(5, ran.append, clock.seconds()))
        self.assertEqual(clock.run_until_idle(), 10)
        self.assertEqual(ran, [5])
        loop = LoopingCall(lambda: None)
        loop.clock = clock
        loop.start(1)
        self.assertEqual(clock.run_until_idle(limit=100), 110)
        loop.stop()
        self.assertEqual(clock.pending(), 0)

    def test_no_backwards(self) -> None:
        """
        Time cannot be advanced by a negative amount.
        """
        self.assertRaises(ValueError, SimulatedClock().advance, -1)

    def test_cancel_releases(self) -> None:
        """
        A cancelled call lets go of its arguments at once, and many
        cancelled calls do not pile up in the clock.
        """
        clock = SimulatedClock()

        class Thing:
            pass

        thing = Thing()
        ref = weakref.ref(thing)
        clock.callLater(1000, id, thing).cancel()
        del thing
        gc.collect()
        self.assertIsNone(ref())
        calls = [clock.callLater(i, lambda: None) for i in range(10000)]
        for call in calls[:9000]:
            call.cancel()
        for call in calls[9000:9500]:
            call.reset(5)
        self.assertEqual(clock.pending(), 1000)
        self.assertLess(len(clock._heap), 5000)
        clock.run_until_idle()
        self.assertEqual(clock.calls_run, 1000)

    def test_compaction_during_a_run_runs_each_call_once(self) -> None:
        """
        A call that reschedules another often enough to make the clock compact
        its heap in the middle of ``advance`` does not make the calls still
        pending run twice, nor lose the calls scheduled after it.
        """
        clock = SimulatedClock()
        ran: list[str] = []

        def churn() -> None:
            ran.append("churn")
            for _ in range(3000):
                moved.reset(1)

        clock.callLater(1, churn)
        clock.callLater(2, ran.append, "later")
        moved = clock.callLater(5, ran.append, "moved")
        clock.advance(10)
        clock.run_until_idle()
        self.assertEqual(sorted(ran), ["churn", "later", "moved"])
        self.assertEqual(clock.calls_run, 3)
        self.assertEqual(clock.pending(), 0)

    def test_same_as_task_clock_on_random_schedules(self) -> None:
        """
        On random schedules of calls, cancels and resets stepped one due
        time at a time, ``SimulatedClock`` and ``task.Clock`` run the same
        calls at the same times.
        """
        import random

        for seed in range(20):
            logs = []
            for clock in (SimulatedClock(), Clock()):
                rng = random.Random(seed)
                log: list[tuple[float, int]] = []
                calls: list[Any] = []

                def fire(n: int, clock: Any = clock, log: list[Any] = log) -> None:
                    log.append((clock.seconds(), n))

                for n in range(200):
                    calls.append(clock.callLater(rng.randrange(50) / 4, fire, n))
                for call in rng.sample(calls, 60):
                    if call.active():
                        if rng.random() < 0.5:
                            call.cancel()
                        else:
                            call.reset(rng.randrange(50) / 4 + 0.1)
                self.assertTrue(drive(clock))
                logs.append(sorted(log))
            self.assertEqual(logs[0], logs[1])


class TaskClockTests(_ClockBehaviour, SynchronousTestCase):
    """
    ``task.Clock`` passes the same behaviour tests (so they describe it).
    """

    def make_clock(self) -> Clock:
        return Clock()


# The network.


class Recorder(Protocol):
    """
    Records what happens to a connection, with the simulated time.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.data = b""
        self.arrivals: list[tuple[float, int]] = []
        self.made_at: float | None = None
        self.reason: Failure | None = None
        self.lost_at: float | None = None

    def connectionMade(self) -> None:
        self.made_at = self.clock.seconds()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self.arrivals.append((self.clock.seconds(), len(self.data)))

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.lost_at = self.clock.seconds()

    def time_when(self, size: int) -> float:
        """
        :returns: when ``size`` bytes had arrived.
        """
        for when, total in self.arrivals:
            if total >= size:
                return when
        raise AssertionError(f"only {len(self.data)} of {size} bytes arrived")


class _Fixture:
    """
    A memory network with a listener per host and helpers to connect.
    """

    def setUp(self) -> None:
        self.clock: Any = SimulatedClock()

    def network(self, **options: Any) -> MemoryNetwork:
        self.net = MemoryNetwork(self.clock, **options)
        self.accepted: dict[str, list[Recorder]] = {}
        return self.net

    def host(self, name: str, **options: Any) -> MemoryTransport:
        self.net.add_host(name, **options)
        transport = self.net.transport(name, connect_timeout=5)
        accepted = self.accepted[name] = []

        def build() -> Recorder:
            protocol = Recorder(self.clock)
            accepted.append(protocol)
            return protocol

        transport.listen("80", Factory.forProtocol(build))
        return transport

    def connect(self, transport: MemoryTransport, address: str) -> Deferred[Any]:
        return transport.connect(address, Factory.forProtocol(lambda: Recorder(self.clock)))

    def pair(self, client: MemoryTransport, server: str) -> tuple[Recorder, Recorder]:
        d = self.connect(client, f"{server}:80")
        drive(self.clock, d)
        protocol = self.successResultOf(d)  # type: ignore[attr-defined]
        return protocol, self.accepted[server][-1]


class LatencyTests(_Fixture, SynchronousTestCase):
    """
    Latency delays set-up and data exactly as configured.
    """

    def test_constant_latency(self) -> None:
        """
        With 50 ms latency the server accepts after 50 ms, the client is
        connected after a round trip, and data it then writes lands 50 ms
        later.
        """
        self.network(latency=0.05)
        a = self.host("a")
        self.host("b")
        client, server = self.pair(a, "b")
        self.assertAlmostEqual(server.made_at, 0.05)
        self.assertAlmostEqual(client.made_at, 0.10)
        client.transport.write(b"ping")  # type: ignore[union-attr]
        self.clock.run_until_idle()
        self.assertEqual(server.data, b"ping")
        self.assertAlmostEqual(server.arrivals[0][0], 0.15)

    def test_latency_per_pair(self) -> None:
        """
        A latency function gives each direction of each pair its own delay.
        """
        delays = {("a", "b"): 0.01, ("b", "a"): 0.2}
        self.network(latency=lambda source, target: delays[source, target])
        a = self.host("a")
        self.host("b")
        client, server = self.pair(a, "b")
        self.assertAlmostEqual(client.made_at, 0.21)
        start = self.clock.seconds()
        server.transport.write(b"down")  # type: ignore[union-attr]
        client.transport.write(b"up")  # type: ignore[union-attr]
        self.clock.run_until_idle()
        self.assertAlmostEqual(server.arrivals[0][0] - start, 0.01)
        self.assertAlmostEqual(client.arrivals[0][0] - start, 0.2)

    def test_connect_delay(self) -> None:
        """
        A connection set-up delay holds each attempt's first packet back by
        what the function gives for its pair of hosts, called once per
        attempt, on top of the latency; an attempt whose delay outlasts its
        timeout times out.
        """
        asked: list[tuple[str, str]] = []
        delays = {"b": 2.0, "c": 9.0}

        def connect_delay(source: str, target: str) -> float:
            asked.append((source, target))
            return delays[target]

        self.network(latency=0.05, connect_delay=connect_delay)
        a = self.host("a")
        self.host("b")
        self.host("c")
        client, server = self.pair(a, "b")
        self.assertAlmostEqual(server.made_at, 2.05)
        self.assertAlmostEqual(client.made_at, 2.10)
        self.assertEqual(asked, [("a", "b")])
        start = self.clock.seconds()
        client.transport.write(b"ping")  # type: ignore[union-attr]
        self.clock.run_until_idle()
        self.assertAlmostEqual(server.arrivals[0][0] - start, 0.05)
        d = self.connect(a, "c:80")
        self.clock.run_until_idle()
        self.failureResultOf(d, TimeoutError)  # type: ignore[attr-defined]
        self.assertEqual(self.accepted["c"], [])
        self.assertEqual(asked, [("a", "b"), ("a", "c")])

    def test_never_synchronous(self) -> None:
        """
        Even with no latency, nothing written arrives before the clock
        runs.
        """
        self.network()
        a = self.host("a")
        self.host("b")
        client, server = self.pair(a, "b")
        client.transport.write(b"x")  # type: ignore[union-attr]
        client.transport.loseConnection()  # type: ignore[union-attr]
        self.assertEqual(server.data, b"")
        self.assertIsNone(client.reason)
        self.clock.advance(0)
        self.assertEqual(server.data, b"x")


class BandwidthTests(_Fixture, SynchronousTestCase):
    """
    A host's upload and download rates are shared between its connections.
    """

    def _send(self, client: Recorder, size: int) -> None:
        client.transport.write(b"x" * size)  # type: ignore[union-attr]

    def test_single_connection_uses_the_uplink(self) -> None:
        """
        200 kB through an 800 kbit/s (100 kB/s) uplink take two seconds.
        """
        self.network(latency=0.01)
        a = self.host("a", upload_bps=800_000)
        self.host("b")
        client, server = self.pair(a, "b")
        start = self.clock.seconds()
        self._send(client, 200_000)
        self.clock.run_until_idle()
        self.assertAlmostEqual(server.time_when(200_000) - start, 2.01, places=3)

    def test_two_connections_share_the_uplink(self) -> None:
        """
        Two connections sending 200 kB each through one 100 kB/s uplink
        each get half: both finish after four seconds, and each had about
        half its data after two.
        """
        self.network(latency=0.01)
        a = self.host("a", upload_bps=800_000)
        self.host("b")
        self.host("c")
        first, to_b = self.pair(a, "b")
        second, to_c = self.pair(a, "c")
        start = self.clock.seconds()
        self._send(first, 200_000)
        self._send(second, 200_000)
        self.clock.advance(2.01)
        for server in (to_b, to_c):
            self.assertApproximates(len(server.data), 100_000, 17_000)
        self.clock.run_until_idle()
        for server in (to_b, to_c):
            self.assertApproximates(server.time_when(200_000) - start, 4.01, 0.17)

    def test_two_senders_share_the_downlink(self) -> None:
        """
        Two hosts with fast uplinks sending to one with a 100 kB/s downlink
        each get half of it.
        """
        self.network(latency=0.01)
        a = self.host("a")
        c = self.host("c")
        self.host("b", download_bps=800_000)
        from_a, at_b1 = self.pair(a, "b")
        from_c, at_b2 = self.pair(c, "b")
        start = self.clock.seconds()
        self._send(from_a, 200_000)
        self._send(from_c, 200_000)
        self.clock.advance(2.01)
        for server in (at_b1, at_b2):
            self.assertApproximates(len(server.data), 100_000, 17_000)
        self.clock.run_until_idle()
        for server in (at_b1, at_b2):
            self.assertApproximates(server.time_when(200_000) - start, 4.01, 0.17)


class TrafficTests(_Fixture, SynchronousTestCase):
    """
    Each host counts the bytes that left its uplink.
    """

    def test_bytes_sent_counted_as_they_leave(self) -> None:
        """
        Bytes count when they leave the sender's uplink, not when written:
        after half a second on a 100 kB/s uplink three 16 KiB chunks of
        100,000 bytes have left; what an abort then drops never counts.
        The other direction counts at its own host.
        """
        self.network(latency=0.01)
        a = self.host("a", upload_bps=800_000)
        b = self.host("b")
        client, server = self.pair(a, "b")
        self.assertEqual((a.host.bytes_sent, b.host.bytes_sent), (0, 0))
        server.transport.write(b"hello")  # type: ignore[union-attr]
        client.transport.write(b"x" * 100_000)  # type: ignore[union-attr]
        self.clock.advance(0.5)
        self.assertEqual(a.host.bytes_sent, 3 * 16 * 1024)
        self.assertEqual(b.host.bytes_sent, 5)
        client.transport.abortConnection()  # type: ignore[union-attr]
        self.clock.run_until_idle()
        self.assertEqual(a.host.bytes_sent, 3 * 16 * 1024)


class LossTests(_Fixture, SynchronousTestCase):
    """
    Loss on a reliable stream is delay, never missing or reordered bytes.
    """

    def _transfer(self, loss: float, seed: int) -> Recorder:
        self.clock = SimulatedClock()
        self.network(latency=0.02, loss=loss, seed=seed)
        a = self.host("a", upload_bps=8_000_000)
        self.host("b")
        client, server = self.pair(a, "b")
        for n in range(2000):
            client.transport.write(b"%08d" % (n,) * 25)  # type: ignore[union-attr]
        client.transport.loseConnection()  # type: ignore[union-attr]
        self.clock.run_until_idle()
        return server

    def test_in_order_under_loss(self) -> None:
        """
        With 30% of chunks lost, every byte still arrives, in order, only
        later than without loss.
        """
        expected = b"".join(b"%08d" % (n,) * 25 for n in range(2000))
        lossless = self._transfer(0.0, 1)
        lossy = self._transfer(0.3, 1)
        self.assertEqual(lossless.data, expected)
        self.assertEqual(lossy.data, expected)
        self.assertTrue(lossy.reason is not None and lossy.reason.check(ConnectionDone))
        # At least one retransmission timeout (200 ms) later.
        self.assertGreater(lossy.time_when(len(expected)), lossless.time_when(len(expected)) + 0.2)

    def test_deterministic(self) -> None:
        """
        The same seed gives the same history to the microsecond; another
        seed, another history.
        """
        first = self._transfer(0.2, 7).arrivals
        again = self._transfer(0.2, 7).arrivals
        other = self._transfer(0.2, 8).arrivals
        self.assertEqual(first, again)
        self.assertNotEqual(first, other)


class PartitionTests(_Fixture, SynchronousTestCase):
    """
    Partitions stall traffic until healed.
    """

    def test_stall_and_heal(self) -> None:
        """
        Data sent across a partition does not arrive, however long one
        waits; after ``heal`` it arrives, in order, one latency later.
        """
        self.network(latency=0.05)
        a = self.host("a")
        self.host("b")
        self.host("c")
        client, server = self.pair(a, "b")
        self.net.partition({"a", "c"}, {"b"})
        client.transport.write(b"one ")  # type: ignore[union-attr]
        client.transport.write(b"two")  # type: ignore[union-attr]
        self.clock.advance(100)
        self.assertEqual(server.data, b"")
        self.assertIsNone(server.reason)
        self.net.heal()
        healed = self.clock.seconds()
        self.clock.run_until_idle()
        self.assertEqual(server.data, b"one two")
        self.assertAlmostEqual(server.arrivals[-1][0], healed + 0.05)

    def test_connect_across_times_out(self) -> None:
        """
        A connection attempt across a partition fails with ``TimeoutError``
        after the connect timeout, while one inside a side succeeds.
        """
        self.network(latency=0.05)
        a = self.host("a")
        self.host("b")
        self.host("c")
        self.net.partition({"a", "c"})
        across = self.connect(a, "b:80")
        inside = self.connect(a, "c:80")
        self.clock.advance(4.9)
        self.assertIsInstance(self.successResultOf(inside), Recorder)
        self.assertNoResult(across)
        self.clock.advance(0.1)
        self.failureResultOf(across, TimeoutError)

    def test_connect_resumes_after_heal(self) -> None:
        """
        A connection attempt made during a partition goes through once it
        heals, if that is before the timeout.
        """
        self.network(latency=0.05)
        a = self.host("a")
        self.host("b")
        self.net.partition({"a"}, {"b"})
        d = self.connect(a, "b:80")
        self.clock.advance(2)
        self.net.heal()
        self.clock.advance(1)
        self.assertIsInstance(self.successResultOf(d), Recorder)


class OfflineTests(_Fixture, SynchronousTestCase):
    """
    A host taken offline loses its connections and cannot be reached.
    """

    def test_connections_lost(self) -> None:
        """
        Taking a host offline loses its open connections on both ends.
        """
        self.network(latency=0.05)
        a = self.host("a")
        self.host("b")
        client, server = self.pair(a, "b")
        self.net.take_offline("b")
        self.clock.run_until_idle()
        for end in (client, server):
            self.assertIsNotNone(end.reason)
            self.assertTrue(end.reason.check(ConnectionLost))  # type: ignore[union-attr]

    def test_unreachable_then_back(self) -> None:
        """
        Connecting to an offline host times out (or is refused when it
        refuses); once back online, it accepts on its old listener.
        """
        self.network(latency=0.05)
        a = self.host("a")
        self.host("b")
        self.net.take_offline("b")
        d = self.connect(a, "b:80")
        drive(self.clock, d)
        self.failureResultOf(d, TimeoutError)
        self.assertEqual(self.clock.seconds(), 5)
        self.net.take_offline("b", refuse=True)
        d = self.connect(a, "b:80")
        drive(self.clock, d)
        self.failureResultOf(d, ConnectionRefusedError)
        self.net.bring_online("b")
        d = self.connect(a, "b:80")
        drive(self.clock, d)
        self.assertIsInstance(self.successResultOf(d), Recorder)

    def test_offline_while_connecting(self) -> None:
        """
        A host that goes offline after accepting, before the client heard
        back, fails the attempt with a ``ConnectError`` and loses the
        accepted connection; nothing is left running.
        """
        for refuse in (False, True):
            self.clock = SimulatedClock()
            self.network(latency=0.05)
            a = self.host("a")
            self.host("b")
            d = self.connect(a, "b:80")
            self.clock.advance(0.06)
            [accepted] = self.accepted["b"]
            self.net.take_offline("b", refuse=refuse)
            drive(self.clock, d)
            self.failureResultOf(d, ConnectError)
            self.assertTrue(accepted.reason.check(ConnectionLost))  # type: ignore[union-attr]
            self.net.bring_online("b")
            self.assertTrue(drive(self.clock))

    def test_removed_for_good(self) -> None:
        """
        A removed host loses its connections, dialling it times out, and
        nothing sent to it is kept waiting: no packet stalls, however many
        attempts there were, and it cannot be brought back.
        """
        self.network(latency=0.05)
        a = self.host("a")
        self.host("b")
        client, server = self.pair(a, "b")
        self.net.remove_host("b")
        client.transport.write(b"lost")  # type: ignore[union-attr]
        attempts = [self.connect(a, "b:80") for _ in range(50)]
        self.assertTrue(drive(self.clock))
        for d in attempts:
            self.failureResultOf(d, TimeoutError)
        for end in (client, server):
            self.assertTrue(end.reason.check(ConnectionLost))  # type: ignore[union-attr]
        self.assertEqual(self.net._stalled, [])
        self.assertEqual(self.net.hosts["b"].ports, {})
        self.assertRaises(ValueError, self.net.bring_online, "b")


class ConnectionTests(_Fixture, SynchronousTestCase):
    """
    Details of connections on the memory network.
    """

    def test_unknown_host(self) -> None:
        """
        Connecting to a host the network lacks fails with
        ``DNSLookupError``; to a port nobody listens on, with
        ``ConnectionRefusedError``.
        """
        self.network()
        a = self.host("a")
        self.failureResultOf(self.connect(a, "nobody:80"), DNSLookupError)
        d = self.connect(a, "a:81")
        drive(self.clock, d)
        self.failureResultOf(d, ConnectionRefusedError)

    def test_addresses(self) -> None:
        """
        Each end's ``getHost`` is the other's ``getPeer``, with the
        listener's port on the server's side.
        """
        self.network()
        a = self.host("a")
        self.host("b")
        client, server = self.pair(a, "b")
        self.assertEqual(client.transport.getPeer(), MemoryAddress("b", 80))  # type: ignore[union-attr]
        self.assertEqual(server.transport.getPeer(), client.transport.getHost())  # type: ignore[union-attr]
        self.assertEqual(str(MemoryAddress("b", 80)), "b:80")

    def test_listen_taken(self) -> None:
        """
        Listening on a port that is taken fails; on ``0``, picks a free one.
        """
        self.network()
        a = self.host("a")
        from twisted.internet.error import CannotListenError

        self.failureResultOf(a.listen("80", Factory.forProtocol(Protocol)), CannotListenError)
        port = self.successResultOf(a.listen("0", Factory.forProtocol(Protocol)))
        self.assertNotEqual(port.getHost().port, 80)  # type: ignore[attr-defined]
        self.assertEqual(len(a.published_addresses()), 2)

    def test_half_close(self) -> None:
        """
        ``loseWriteConnection`` ends the stream towards a half-closeable
        peer, which can still answer before closing.
        """

        @implementer(IHalfCloseableProtocol)
        class Answering(Recorder):
            def readConnectionLost(self) -> None:
                self.transport.write(b"answer:" + self.data)  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

            def writeConnectionLost(self) -> None:
                pass

        self.network(latency=0.01)
        self.net.add_host("a")
        self.net.add_host("b")
        self.net.transport("b").listen("80", Factory.forProtocol(lambda: Answering(self.clock)))
        d = self.connect(self.net.transport("a"), "b:80")
        drive(self.clock, d)
        client = self.successResultOf(d)
        client.transport.write(b"question")
        client.transport.loseWriteConnection()
        self.clock.run_until_idle()
        self.assertEqual(client.data, b"answer:question")
        self.assertTrue(client.reason.check(ConnectionDone))

    def test_pull_producer(self) -> None:
        """
        A pull producer is asked for more each time what it wrote has been
        sent.
        """

        @implementer(IPullProducer)
        class Counter:
            def __init__(self, transport: Any) -> None:
                self.transport = transport
                self.count = 0

            def resumeProducing(self) -> None:
                self.count += 1
                if self.count > 5:
                    self.transport.unregisterProducer()
                    self.transport.loseConnection()
                else:
                    self.transport.write(b"%d" % (self.count,))

            def stopProducing(self) -> None:
                pass

        self.network(latency=0.01)
        a = self.host("a", upload_bps=8000)
        self.host("b")
        client, server = self.pair(a, "b")
        client.transport.registerProducer(Counter(client.transport), False)  # type: ignore[union-attr]
        self.clock.run_until_idle()
        self.assertEqual(server.data, b"12345")
        self.assertTrue(server.reason is not None and server.reason.check(ConnectionDone))

    def test_memory_reactor_clock(self) -> None:
        """
        The network also runs on ``MemoryReactorClock``.
        """
        self.clock = MemoryReactorClock()
        self.network(latency=0.01)
        a = self.host("a")
        self.host("b")
        client, server = self.pair(a, "b")
        client.transport.write(b"hi")  # type: ignore[union-attr]
        drive(self.clock)
        self.assertEqual(server.data, b"hi")

    def test_tls_on_top(self) -> None:
        """
        Twisted's TLS wrapper, a protocol wrapper like the Noise channel,
        runs over memory connections: handshake, data both ways, close.
        """
        from twisted.internet import ssl
        from twisted.protocols.tls import TLSMemoryBIOFactory
        from twisted.python.filepath import FilePath
        from twisted.test import __file__ as twisted_test

        pem = FilePath(twisted_test).sibling("server.pem").getContent()
        certificate = ssl.PrivateCertificate.loadPEM(pem)
        self.network(latency=0.02, loss=0.05, seed=3)
        self.net.add_host("a", upload_bps=10_000_000)
        self.net.add_host("b", upload_bps=10_000_000)
        server_protocols: list[Recorder] = []

        def build() -> Recorder:
            server_protocols.append(Recorder(self.clock))
            return server_protocols[-1]

        server_factory = TLSMemoryBIOFactory(
            certificate.options(), False, Factory.forProtocol(build)
        )
        self.net.transport("b").listen("443", server_factory)
        client_factory = TLSMemoryBIOFactory(
            ssl.CertificateOptions(),
            True,
            Factory.forProtocol(lambda: Recorder(self.clock)),
        )
        d = self.net.transport("a").connect("b:443", client_factory)
        drive(self.clock, d)
        wrapper = self.successResultOf(d)
        client = wrapper.wrappedProtocol
        payload = bytes(range(256)) * 4096
        wrapper.write(payload)
        self.clock.run_until_idle()
        [server] = server_protocols
        self.assertEqual(server.data, payload)
        server.transport.write(b"thanks")  # type: ignore[union-attr]
        server.transport.loseConnection()  # type: ignore[union-attr]
        self.clock.run_until_idle()
        self.assertEqual(client.data, b"thanks")
        self.assertTrue(client.reason.check(ConnectionDone))


class BenchmarkTests(SynchronousTestCase):
    """
    The memory-network benchmark still measures what it claims.
    """

    def test_small_run(self) -> None:
        """
        On 300 hosts every message is delivered and checked, none corrupt,
        and the figures carry the fields the benchmark promises.
        """
        import importlib.util
        from pathlib import Path

        path = Path(__file__).parent.parent / "benchmarks" / "memory_network.py"
        spec = importlib.util.spec_from_file_location("memory_network_benchmark", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        figures = module.run(300, 5)
        self.assertEqual(figures["messages_delivered"], 300)
        self.assertEqual(figures["messages_corrupt"], 0)
        for field in ("hosts", "messages_delivered", "wall_s", "peak_rss_mb"):
            self.assertIn(field, figures)
