"""
Hostile peers against a node's connections (issue 8, findings 1, 2 and 6):
attacks over real connections of the memory network, on a simulated clock.
What is measured is the bytes the node holds for the attacker's connection
(its transport's unsent bytes, the channel's and AMP's buffers), not RSS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from digitalspring.channel import (
    BOX_TIMEOUT,
    MAX_BOX_BYTES,
    MAX_BOX_KEYS,
    MAX_REQUESTS_IN_FLIGHT,
    POOL_REQUESTS_PER_TURN,
    REQUESTS_PER_TURN,
    BoxTimeout,
    BoxTooLarge,
    ConnectionPool,
    PeerConnection,
    Ping,
    SecureChannelFactory,
    SecureChannelProtocol,
    Truncated,
    WriteStalled,
)
from digitalspring.directory import IPeerDirectory, UnknownPeer
from digitalspring.identity import Identity, PeerID
from digitalspring.transport import MemoryNetwork, SimulatedClock

#: What one Amplify answer carries: a find-value answer's worth.
ANSWER_SIZE = 4000


class Amplify(amp.Command):
    """
    A small request with a large answer, like the DHT's find-value.
    """

    arguments = [(b"n", amp.Integer())]
    response = [(b"data", amp.String())]


class Hold(amp.Command):
    """
    A request whose answer waits until the test releases it.
    """

    arguments = [(b"n", amp.Integer())]
    response = [(b"n", amp.Integer())]


class Fragments(amp.Command):
    """
    The largest legitimate box: three values of a multicast fragment's size.
    """

    arguments = [(b"a", amp.String()), (b"b", amp.String()), (b"c", amp.String())]
    response = [(b"size", amp.Integer())]


class Commands(amp.CommandLocator):
    def __init__(self, held: list[Deferred[dict[str, int]]]) -> None:
        self.held = held

    @Amplify.responder
    def amplify(self, n: int) -> dict[str, bytes]:
        return {"data": b"x" * ANSWER_SIZE}

    @Hold.responder
    def hold(self, n: int) -> Deferred[dict[str, int]]:
        d: Deferred[dict[str, int]] = Deferred()
        self.held.append(d)
        return d

    @Fragments.responder
    def fragments(self, a: bytes, b: bytes, c: bytes) -> dict[str, int]:
        return {"size": len(a) + len(b) + len(c)}


@implementer(IPeerDirectory)
class NoDirectory:
    def resolve(self, peer_id: PeerID) -> Deferred[list[str]]:
        return fail(UnknownPeer(str(peer_id)))


class Recorder(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason


class Scene:
    """
    A node with a connection pool on the memory network, and hosts to
    attack it from.
    """

    def __init__(self, receive_window: int = 256 * 1024) -> None:
        self.clock = SimulatedClock()
        self.network = MemoryNetwork(
            self.clock, latency=0.001, seed=1, receive_window=receive_window
        )
        self.network.add_host("node")
        self.identity = Identity.generate()
        self.held: list[Deferred[dict[str, int]]] = []
        self.pool = ConnectionPool(
            self.identity,
            self.clock,
            {"memory": self.network.transport("node")},
            NoDirectory(),
        )
        self.pool.locators.append(lambda connection: Commands(self.held))
        self.pool.transports["memory"].listen("1", self.pool.server_factory)
        self.pool.startService()
        #: The secure channel factory behind the pool's listening factory.
        self.channels: SecureChannelFactory = getattr(
            self.pool, "channel_factory", self.pool.server_factory
        )
        self.peak = 0

    def dial(
        self, host: str, protocol: Callable[[], Protocol] = amp.AMP
    ) -> tuple[SecureChannelProtocol, Any]:
        """
        Connect from a new host ``host``; the protocol inside the channel
        is whatever the attacker likes.

        :returns: the attacker's channel and its wrapped protocol.
        """
        self.network.add_host(host)
        factory = SecureChannelFactory(
            Identity.generate(),
            Factory.forProtocol(protocol),
            self.clock,
            initiator=True,
            expected_peer=self.identity.peer_id,
        )
        channel = self.result(self.network.transport(host).connect("node:1", factory))
        self.result(channel.when_secured())
        return channel, channel.wrappedProtocol

    def node_side(self, channel: SecureChannelProtocol) -> SecureChannelProtocol:
        """
        The node's end of the attacker's ``channel``.
        """
        (mine,) = [
            c
            for c in self.channels.channels.protocols
            if c.peer_id == channel.factory.identity.peer_id
        ]
        return mine

    def held_bytes(self, node_channel: SecureChannelProtocol) -> int:
        """
        What the node holds for one connection: unsent bytes in its
        transport, and the channel's and AMP's buffers.
        """
        connection = node_channel.wrappedProtocol
        assert isinstance(connection, PeerConnection)
        transport: Any = node_channel.transport
        while not hasattr(transport, "outgoing"):  # under a wrapper (admission)
            transport = transport.transport
        unsent = transport.outgoing.send.size
        total: int = unsent + node_channel.buffered_bytes + connection.buffered_bytes
        self.peak = max(self.peak, total)
        return total

    def run(self, seconds: float, node_channel: SecureChannelProtocol | None = None) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(0.05)
            if node_channel is not None and self.is_connected(node_channel):
                self.held_bytes(node_channel)

    def is_connected(self, node_channel: SecureChannelProtocol) -> bool:
        return node_channel in self.channels.channels.protocols

    def result(self, d: Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        self.clock.run_until(lambda: bool(results), limit=120)
        assert results, "nothing happened in time"
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]


def _box(pairs: list[tuple[bytes, bytes]], end: bool = True) -> bytes:
    """
    An AMP box on the wire, ended or not.
    """
    wire = b"".join(
        len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v for k, v in pairs
    )
    return wire + (b"\0\0" if end else b"")


class RepliesNobodyReadsTests(SynchronousTestCase):
    """
    Finding 2: requests sent by a peer that never reads the answers.
    """

    def test_unread_answers_stay_bounded(self) -> None:
        """
        A peer that sends 5,000 amplifying requests (20 MB of answers) and
        reads nothing makes the node hold well under 1 MiB for it: the node
        stops reading the peer instead of queueing answers.  Another peer is
        answered all along, and once the attacker reads again, every one of
        its requests is answered.
        """
        scene = Scene()
        attacker, attacker_amp = scene.dial("attacker")
        _, friend_amp = scene.dial("friend")
        node_channel = scene.node_side(attacker)
        attacker.transport.pauseProducing()  # type: ignore[union-attr]
        answers = [attacker_amp.callRemote(Amplify, n=i) for i in range(5000)]
        for _ in range(20):
            scene.run(0.5, node_channel)
            pong = scene.result(friend_amp.callRemote(Ping, data=b"still there?"))
            self.assertEqual(pong, {"data": b"still there?"})
        self.assertLess(scene.peak, 1024 * 1024)
        self.assertGreater(scene.peak, 64 * 1024)  # the attack did fill the buffers

        attacker.transport.resumeProducing()  # type: ignore[union-attr]
        done: list[Any] = []
        for d in answers:
            d.addBoth(done.append)
        scene.clock.run_until(lambda: len(done) == len(answers), limit=600)
        self.assertEqual(done, [{"data": b"x" * ANSWER_SIZE}] * len(answers))
        self.assertEqual(scene.channels.failures["WriteStalled"], 0)

    def test_peer_that_never_reads_is_dropped(self) -> None:
        """
        A peer that reads nothing of what is queued for it for the write
        stall timeout is dropped with WriteStalled, and counted.
        """
        scene = Scene()
        attacker, attacker_amp = scene.dial("attacker")
        node_channel = scene.node_side(attacker)
        attacker.transport.pauseProducing()  # type: ignore[union-attr]
        for i in range(2000):
            attacker_amp.callRemote(Amplify, n=i).addErrback(lambda f: None)
        scene.run(70, node_channel)
        self.assertFalse(scene.is_connected(node_channel))
        self.assertEqual(scene.channels.failures["WriteStalled"], 1)
        self.assertEqual(scene.pool.connections(), {})
        self.assertIsInstance(node_channel._reason, WriteStalled)

    def test_requests_in_flight_bounded(self) -> None:
        """
        Of 1,000 requests whose answers take time, the node serves at most
        MAX_REQUESTS_IN_FLIGHT at once and reads no more meanwhile; as they
        are answered it reads on, and every request gets its answer.
        """
        scene = Scene()
        attacker, attacker_amp = scene.dial("attacker")
        node_channel = scene.node_side(attacker)
        answers = [attacker_amp.callRemote(Hold, n=i) for i in range(1000)]
        scene.run(5, node_channel)
        self.assertEqual(len(scene.held), MAX_REQUESTS_IN_FLIGHT)
        self.assertLess(scene.peak, 512 * 1024)
        done: list[Any] = []
        for d in answers:
            d.addBoth(done.append)
        answered = 0
        while answered < 1000:
            batch, scene.held[:] = list(scene.held), []
            self.assertLessEqual(len(batch), MAX_REQUESTS_IN_FLIGHT)
            self.assertTrue(batch)
            for d in batch:
                d.callback({"n": 1})
            answered += len(batch)
            scene.run(0.5, node_channel)
        self.assertEqual(len(done), 1000)
        self.assertEqual(done, [{"n": 1}] * 1000)


class RequestsPerTurnTests(SynchronousTestCase):
    """
    One read can bring hundreds of requests: served all at once, they hold
    up every other connection for as long.
    """

    def test_floods_served_a_few_per_turn(self) -> None:
        """
        Ten peers each send 400 requests in one go, so that each read of
        the node brings hundreds.  No scheduled call of the node's clock
        (a reactor turn's work) serves more than POOL_REQUESTS_PER_TURN
        requests, nor more than REQUESTS_PER_TURN of one connection; a
        fifth peer's ping, sent last, is answered ahead of the floods'
        backlog; and every request is answered in the end.
        """
        scene = Scene()
        served: list[PeerConnection] = []
        in_call: list[PeerConnection] = []
        most = {"pool": 0, "connection": 0}
        original_dispatch = PeerConnection.dispatchCommand

        def dispatch(connection: PeerConnection, box: amp.AmpBox) -> Any:
            served.append(connection)
            in_call.append(connection)
            most["pool"] = max(most["pool"], len(in_call))
            most["connection"] = max(most["connection"], in_call.count(connection))
            return original_dispatch(connection, box)

        self.patch(PeerConnection, "dispatchCommand", dispatch)
        original_call_later = scene.clock.callLater

        def call_later(delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> Any:
            def turn(*a: Any, **kw: Any) -> Any:
                in_call.clear()
                return f(*a, **kw)

            return original_call_later(delay, turn, *a, **kw)

        self.patch(scene.clock, "callLater", call_later)
        floods = [scene.dial(f"attacker{n}")[1] for n in range(10)]
        friend_channel, friend = scene.dial("friend")
        answers = [flood.callRemote(Ping, data=b"%d" % i) for flood in floods for i in range(400)]
        pong = friend.callRemote(Ping, data=b"friend")
        friend_side = scene.node_side(friend_channel).wrappedProtocol
        self.assertEqual(scene.result(pong), {"data": b"friend"})
        self.assertLess(served.index(friend_side), 2 * POOL_REQUESTS_PER_TURN)
        done: list[Any] = []
        for d in answers:
            d.addBoth(done.append)
        scene.clock.run_until(lambda: len(done) == len(answers), limit=60)
        self.assertEqual(len([a for a in done if isinstance(a, dict)]), 4000)
        # Ten connections of four requests each would be 40: they share.
        self.assertLessEqual(most["pool"], POOL_REQUESTS_PER_TURN)
        self.assertEqual(most["connection"], REQUESTS_PER_TURN)


class UnboundedBoxTests(SynchronousTestCase):
    """
    Finding 1: one AMP box that never ends.
    """

    def test_never_ending_box(self) -> None:
        """
        A box of ever more 60 KiB values, never ended, is cut off with
        BoxTooLarge once it passes MAX_BOX_BYTES; the node never holds much
        more than that for it.
        """
        scene = Scene()
        attacker, _ = scene.dial("attacker", Protocol)
        node_channel = scene.node_side(attacker)
        for i in range(100):
            attacker.write(_box([(b"k%d" % i, b"v" * 60000)], end=False))
            scene.run(0.05, node_channel)
        scene.run(1, node_channel)
        self.assertFalse(scene.is_connected(node_channel))
        self.assertIsInstance(node_channel._reason, BoxTooLarge)
        self.assertEqual(scene.channels.failures["BoxTooLarge"], 1)
        self.assertLess(scene.peak, MAX_BOX_BYTES + 512 * 1024)
        self.assertEqual(scene.pool.connections(), {})

    def test_too_many_keys(self) -> None:
        """
        A box of tiny keys is cut off after MAX_BOX_KEYS keys.
        """
        scene = Scene()
        attacker, _ = scene.dial("attacker", Protocol)
        node_channel = scene.node_side(attacker)
        attacker.write(_box([(b"%d" % i, b"") for i in range(MAX_BOX_KEYS + 1)], end=False))
        scene.run(1, node_channel)
        self.assertIsInstance(node_channel._reason, BoxTooLarge)
        self.assertIn("keys", str(node_channel._reason))

    def test_box_that_never_finishes(self) -> None:
        """
        A box begun and never finished is cut off with BoxTimeout, long
        before the idle timeout would close the connection.
        """
        scene = Scene()
        attacker, _ = scene.dial("attacker", Protocol)
        node_channel = scene.node_side(attacker)
        attacker.write(_box([(b"_command", b"Ping")], end=False))
        scene.run(BOX_TIMEOUT + 1, node_channel)
        self.assertIsInstance(node_channel._reason, BoxTimeout)
        self.assertEqual(scene.channels.failures["BoxTimeout"], 1)

    def test_largest_legitimate_box_passes(self) -> None:
        """
        A box with three 65,000-byte values (more than any command sends)
        is within the bounds and answered.
        """
        scene = Scene()
        _, client = scene.dial("client")
        value = b"f" * 65000
        answer = scene.result(client.callRemote(Fragments, a=value, b=value, c=value))
        self.assertEqual(answer, {"size": 3 * 65000})


class TruncationTests(SynchronousTestCase):
    """
    Finding 6: a stream cut at a frame boundary.
    """

    def _pair(self) -> tuple[Scene, SecureChannelProtocol, Recorder]:
        scene = Scene()
        scene.network.add_host("server")
        server_factory = SecureChannelFactory(
            scene.identity, Factory.forProtocol(Recorder), scene.clock, initiator=False
        )
        scene.network.transport("server").listen("2", server_factory)
        scene.network.add_host("client")
        client_factory = SecureChannelFactory(
            Identity.generate(),
            Factory.forProtocol(Protocol),
            scene.clock,
            initiator=True,
            expected_peer=scene.identity.peer_id,
        )
        client = scene.result(
            scene.network.transport("client").connect("server:2", client_factory)
        )
        scene.result(client.when_secured())
        (server,) = server_factory.channels.protocols
        return scene, client, server.wrappedProtocol  # type: ignore[return-value]

    def test_cut_stream_is_an_error(self) -> None:
        """
        Data, then the transport closed at a frame boundary with no end of
        stream: the receiver gets the data, then Truncated.
        """
        scene, client, server_app = self._pair()
        client.write(b"pay 100 to")
        scene.run(0.1)
        client.transport.loseConnection()  # type: ignore[union-attr]
        scene.run(0.1)
        self.assertEqual(server_app.received, b"pay 100 to")
        assert server_app.lost is not None
        self.assertIsInstance(server_app.lost.value, Truncated)

    def test_clean_close(self) -> None:
        """
        The channel's own loseConnection is a clean close for the receiver.
        """
        scene, client, server_app = self._pair()
        client.write(b"pay 100 to bob")
        client.loseConnection()
        scene.run(0.1)
        self.assertEqual(server_app.received, b"pay 100 to bob")
        assert server_app.lost is not None
        self.assertIsInstance(server_app.lost.value, ConnectionDone)
