"""
Tests for the DHT's lighter simulated network,
:mod:`digitalspring.dht._requestnet`: its model of connections and loss,
and that the DHT on it behaves as on the memory network with real pools.
"""

from __future__ import annotations

import gc
import statistics
import weakref
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.internet.error import ConnectionLost
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.channel import PeerUnreachable
from digitalspring.dht import DHTSettings, LookupResult
from digitalspring.dht._dht import DHTPing
from digitalspring.dht._requestnet import LightPool
from digitalspring.dht._rpc import BadDHTRequest, Store
from digitalspring.dht._simulation import DHTSimulation

#: One-way latency in the small networks below.
LATENCY = 0.05


def _pair(**kw: Any) -> tuple[DHTSimulation, LightPool, LightPool]:
    """
    Two nodes on a request network, whose DHTs send nothing of their own.
    """
    settings = DHTSettings(maintenance_interval=1e9)
    sim = DHTSimulation(2, settings, latency=LATENCY, requests_only=True, **kw)
    sim.start()
    a, b = (node.pool for node in sim.nodes)
    assert isinstance(a, LightPool) and isinstance(b, LightPool)
    return sim, a, b


def _ping(sim: DHTSimulation, source: int, target: int) -> Any:
    node = sim.nodes[source]
    other = sim.nodes[target]
    return node.pool.request(
        other.identity.peer_id, DHTPing, [f"memory:{other.host}:1"], origin=()
    )


class ConnectionTests(SynchronousTestCase):
    def test_first_request_waits_for_the_handshake(self) -> None:
        """
        A request to a peer not yet connected is answered after two round
        trips of set-up (SYN, then Noise IK's two messages) and its own;
        the next one after its own round trip.  The dialled side knows the
        connection half a round trip before the dialling side.
        """
        sim, a, b = _pair()
        started = sim.clock.seconds()
        sim.run(_ping(sim, 0, 1))
        self.assertAlmostEqual(sim.clock.seconds() - started, 6 * LATENCY)
        self.assertIn(b.identity.peer_id, a.connections())
        self.assertIn(a.identity.peer_id, b.connections())
        self.assertTrue(a.connections()[b.identity.peer_id].initiator)
        self.assertFalse(b.connections()[a.identity.peer_id].initiator)
        started = sim.clock.seconds()
        sim.run(_ping(sim, 0, 1))
        self.assertAlmostEqual(sim.clock.seconds() - started, 2 * LATENCY)

    def test_idle_connection_closes(self) -> None:
        """
        A connection closes at both ends after the idle timeout without a
        box either way, and only then.
        """
        sim, a, b = _pair(idle_timeout=60.0)
        sim.run(_ping(sim, 0, 1))
        sim.clock.advance(30)
        sim.run(_ping(sim, 1, 0))
        sim.clock.advance(59)
        self.assertIn(b.identity.peer_id, a.connections())
        sim.clock.advance(2)
        self.assertEqual((a.connections(), b.connections()), ({}, {}))
        self.assertEqual((a.links, b.links), (set(), set()))

    def test_closed_connection_freed_by_reference_counting(self) -> None:
        """
        A closed connection holds no cycle (its ends, their responders and
        its link): it is freed once nothing else refers to it, without the
        cyclic collector, which a large simulation runs only now and then.
        """
        sim, a, b = _pair(idle_timeout=60.0)
        sim.run(_ping(sim, 0, 1))
        ends = [weakref.ref(a.connections()[b.identity.peer_id])]
        ends.append(weakref.ref(b.connections()[a.identity.peer_id]))
        link = weakref.ref(a.connections()[b.identity.peer_id].link)
        collecting = gc.isenabled()
        gc.disable()
        try:
            sim.clock.advance(61)
            self.assertEqual((a.connections(), b.connections()), ({}, {}))
            self.assertEqual([end() for end in ends], [None, None])
            self.assertIsNone(link())
        finally:
            if collecting:
                gc.enable()

    def test_leaving_host(self) -> None:
        """
        A host that leaves drops its connections at both ends: a request in
        flight fails with ``ConnectionLost`` once more dialling it times
        out, and the peer is then in its backoff delay.
        """
        sim, a, _ = _pair(connect_timeout=10.0)
        sim.run(_ping(sim, 0, 1))
        request = _ping(sim, 0, 1)
        sim.leave(1)
        self.assertEqual(a.connections(), {})
        started = sim.clock.seconds()
        self.assertRaises(ConnectTimeout, sim.run, request)
        self.assertAlmostEqual(sim.clock.seconds() - started, 10.0)
        self.assertRaises(PeerUnreachable, sim.run, _ping(sim, 0, 1))

    def test_both_dial_at_once(self) -> None:
        """
        When both peers dial each other at once, both end up with the same
        one connection: the one the peer whose key sorts first dialled; the
        other closes after a grace period, answering what was sent on it.
        """
        sim, a, b = _pair(idle_timeout=60.0)
        both = gatherResults([_ping(sim, 0, 1), _ping(sim, 1, 0)])
        sim.run(both)
        kept_a = a.connections()[b.identity.peer_id]
        kept_b = b.connections()[a.identity.peer_id]
        self.assertIs(kept_a.link, kept_b.link)
        first = min(a.identity.peer_id.public_key, b.identity.peer_id.public_key)
        dialler = a if kept_a.initiator else b
        self.assertEqual(dialler.identity.peer_id.public_key, first)
        sim.clock.advance(11)
        self.assertEqual(a.links, {kept_a.link})

    def test_answer_proves_address_after_the_peer_dialled_too(self) -> None:
        """
        A node that dialled a peer and asked it something takes it into
        its table with the address it reached, even when, before the answer
        came, the peer dialled back and the simultaneous-dial rule kept the
        peer's connection (in a join, the bootstrap peer's dial-back to a
        newcomer whose ping answer was lost and sent again).  Before, the
        DHT looked at the connection the pool held by then, saw one it had
        not dialled, and a newcomer could end its join with an empty table.
        """
        sim, a, b = _pair(idle_timeout=60.0)
        # The newcomer is the one whose key sorts last: the peer's dial wins.
        last = a.identity.peer_id.public_key > b.identity.peer_id.public_key
        new, old = (0, 1) if last else (1, 0)
        newcomer, peer = sim.nodes[new], sim.nodes[old]
        sim.run(newcomer.pool.dial(peer.identity.peer_id, f"memory:{peer.host}:1"))
        peer.pool.dial(newcomer.identity.peer_id, f"memory:{newcomer.host}:1")
        # The peer's connection is up at the newcomer after three one-way
        # delays, the ping's answer after two: sent half-way, it loses.
        sim.clock.advance(1.5 * LATENCY)
        ping = newcomer.dht._ping(peer.contact)
        sim.run(ping)
        self.assertFalse(newcomer.pool.connections()[peer.identity.peer_id].initiator)
        self.assertIn(peer.identity.peer_id, newcomer.dht.table)

    def test_wrong_peer(self) -> None:
        """
        Dialling an address where another peer listens fails, as the Noise
        handshake does.
        """
        sim = DHTSimulation(3, DHTSettings(), latency=LATENCY, requests_only=True)
        sim.start()
        pool = sim.nodes[0].pool
        d = pool.request(sim.nodes[1].identity.peer_id, DHTPing, ["memory:n2:1"], origin=())
        self.assertRaises(PeerUnreachable, sim.run, d)


def _network_figures(requests_only: bool, codecs: bool = False) -> dict[str, float]:
    """
    150 nodes join one by one; 30 publish; 150 lookups for their records
    from random nodes, with loss: the figures to compare.
    """
    sim = DHTSimulation(
        150,
        DHTSettings(),
        seed=3,
        loss=0.01,
        idle_timeout=60.0,
        requests_only=requests_only,
        codecs=codecs,
    )
    sim.join_all()
    publishers = sim.random.sample(range(150), 30)
    stored = sim.run(gatherResults([sim.nodes[i].dht.publish() for i in publishers]))
    lookups = [
        sim.nodes[sim.random.randrange(150)].dht.find_peer(
            sim.nodes[sim.random.choice(publishers)].identity.peer_id
        )
        for _ in range(150)
    ]
    results: list[LookupResult] = sim.run(gatherResults(lookups))
    return {
        "found": sum(r.found is not None for r in results) / len(results),
        "stored": statistics.mean(stored),
        "table": statistics.mean(len(node.dht.table) for node in sim.nodes),
        "hops": statistics.mean(r.hops for r in results),
        "rpcs": statistics.mean(r.rpcs for r in results),
        "ms": statistics.median(r.duration for r in results) * 1000,
    }


class SameAsMemoryNetworkTests(SynchronousTestCase):
    def test_same_figures(self) -> None:
        """
        Joins, publications and lookups on the request network give the
        figures they give on the memory network with real pools, Noise and
        AMP: every lookup succeeds on both, tables and replicas are as
        large, and hops, requests and durations agree within a fifth.
        """
        light = _network_figures(True)
        real = _network_figures(False)
        self.assertEqual((light["found"], real["found"]), (1.0, 1.0))
        for name in ("stored", "table", "hops", "rpcs", "ms"):
            self.assertLess(abs(light[name] / real[name] - 1), 0.2, f"{name}: {light} {real}")

    def test_codecs_change_nothing(self) -> None:
        """
        Requests passed as Python objects give exactly the figures that
        requests through the commands' AMP codecs and dispatch give: the
        shortcut changes no answer, error or event's time.
        """
        self.assertEqual(_network_figures(True), _network_figures(True, codecs=True))


class AnswersAsAMPTests(SynchronousTestCase):
    """
    A request answered on either path fails as AMP's ``callRemote`` would.
    """

    def _answer(self, codecs: bool, **arguments: Any) -> Any:
        sim, a, b = _pair(codecs=codecs)
        d = a.request(b.identity.peer_id, Store, ["memory:n1:1"], **arguments)
        answers: list[Any] = []
        d.addBoth(answers.append)
        sim.clock.advance(10)
        [answer] = answers
        return answer

    def test_declared_error(self) -> None:
        """
        An error the command declares reaches the requester as that class,
        with its text.
        """
        for codecs in (False, True):
            failure = self._answer(codecs, kind="no-such-kind", data=b"x", origin=())
            self.assertIsInstance(failure, Failure)
            failure.trap(BadDHTRequest)
            self.assertIn("no-such-kind", str(failure.value))

    def test_unknown_command(self) -> None:
        """
        A command no responder answers fails with ``UnhandledCommand``.
        """
        for codecs in (False, True):
            sim, a, b = _pair(codecs=codecs)
            d = a.request(b.identity.peer_id, _Unanswered, ["memory:n1:1"])
            self.assertRaises(amp.UnhandledCommand, sim.run, d)

    def test_lost_connection(self) -> None:
        """
        A request outstanding when its connection drops fails with
        ``ConnectionLost`` once no other connection can carry it.
        """
        for codecs in (False, True):
            sim, a, b = _pair(codecs=codecs)
            d = a.request(b.identity.peer_id, DHTPing, ["memory:n1:1"], origin=())
            sim.clock.advance(5 * LATENCY)
            sim.leave(1)
            self.assertRaises((ConnectionLost, ConnectTimeout), sim.run, d)


class _Unanswered(amp.Command):
    commandName = b"nobody-answers"
