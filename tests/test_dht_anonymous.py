"""
Small values read with a throwaway identity, and what one depositor may
keep under one key (issue 12's DHT fallback for notifications).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from digitalspring.dht import (
    DHTSettings,
    NoAnswer,
    QuotaExceeded,
    Quotas,
    ValueStore,
    id_from_bytes,
    solve,
)
from digitalspring.dht._simulation import DHTSimulation
from digitalspring.identity import Identity, PeerID
from digitalspring.transport import SimulatedClock

SETTINGS = DHTSettings(k=4, rpc_timeout=2.0, lookup_deadline=20.0, pow_difficulty=4)
KEY = bytes(range(32))


def _network(count: int) -> DHTSimulation:
    sim = DHTSimulation(count, SETTINGS, seed=count, latency=0.01)
    sim.join_all()
    return sim


class AnonymousGetTests(SynchronousTestCase):
    def test_read_with_throwaway_identity(self) -> None:
        """
        A value put under a key is found by a node reading with a
        throwaway identity: no node it asks sees its peer ID, nor learns
        an address for the identity it saw (no table takes it), and the
        connections close once the lookup ends.
        """
        sim = _network(8)
        reader = sim.nodes[6]
        self.assertGreater(sim.run(sim.nodes[1].dht.put(KEY, b"hello", 3600)), 0)
        seen: list[PeerID] = []
        for node in sim.nodes:
            node.pool.locators.append(lambda c, seen=seen: seen.append(c.peer_id))
        self.assertEqual(sim.run(reader.dht.get_anonymously(KEY)), [b"hello"])
        ids = {node.identity.peer_id for node in sim.nodes}
        strangers = set(seen) - ids
        self.assertEqual(len(strangers), 1)
        self.assertNotIn(reader.identity.peer_id, seen)
        [throwaway] = strangers
        for node in sim.nodes:
            self.assertIsNone(node.dht.table.get(throwaway))
        sim.clock.advance(1)
        for node in sim.nodes:
            self.assertNotIn(throwaway, node.pool.connections())
        # Each lookup has an identity of its own.
        seen.clear()
        self.assertEqual(sim.run(reader.dht.get_anonymously(KEY)), [b"hello"])
        self.assertFalse((set(seen) - ids) & strangers)
        self.assertEqual(sim.run(reader.dht.get_anonymously(bytes(32))), [])

    def test_every_closest_nodes_values(self) -> None:
        """
        A node near the key holding a value of its own does not hide the
        values the others hold (``get`` stops at the first answer): every
        value of the closest nodes is read.
        """
        sim = _network(8)
        sim.run(sim.nodes[1].dht.put(KEY, b"from the owner", 3600))
        target = id_from_bytes(KEY)
        holders = [n for n in sim.nodes if n.dht.store.get_values(target)]
        expires = int(sim.clock.seconds()) + 3600
        junk = solve(KEY, b"junk", expires, SETTINGS.pow_difficulty).encode()
        holders[0].dht.store.put_value(junk)
        reader = next(n for n in sim.nodes if n not in holders)
        self.assertEqual(
            sorted(sim.run(reader.dht.get_anonymously(KEY))), [b"from the owner", b"junk"]
        )

    def test_no_answer(self) -> None:
        """
        When no node answers, the reader is told so (it cannot know what
        is held), rather than given an empty list.
        """
        sim = _network(4)
        for i in (1, 2, 3):
            sim.network.take_offline(sim.nodes[i].host)
        self.assertRaises(NoAnswer, sim.run, sim.nodes[0].dht.get_anonymously(KEY))


class PerDepositorTests(SynchronousTestCase):
    """
    What one depositor may keep under one key at a node.
    """

    def _value(self, clock: SimulatedClock, n: int, ttl: int = 3600) -> bytes:
        return solve(KEY, b"v%d" % n, int(clock.seconds()) + ttl, 0).encode()

    def test_one_peer_and_one_source_bounded_under_a_key(self) -> None:
        """
        One peer keeps at most key_values_per_peer values under one key,
        the peers of one source address key_values_per_source; others
        still fill the key to values_per_key; the bound is per key (the
        peer may store under other keys) and an expired value frees its
        place.
        """
        clock = SimulatedClock()
        clock.advance(1_000_000)
        store = ValueStore(clock, difficulty=0, quotas=Quotas())
        flooder = Identity.from_seed(b"f" * 32).peer_id
        store.put_value(self._value(clock, 0, ttl=60), flooder, "tcp:192.0.2.1")
        store.put_value(self._value(clock, 1), flooder, "tcp:192.0.2.1")
        error = self.assertRaises(
            QuotaExceeded, store.put_value, self._value(clock, 2), flooder, "tcp:192.0.2.1"
        )
        self.assertIn("under that key", str(error))
        other_key = solve(bytes(32), b"x", int(clock.seconds()) + 60, 0).encode()
        store.put_value(other_key, flooder, "tcp:192.0.2.1")
        sybils = [Identity.from_seed(bytes([n]) * 32).peer_id for n in range(1, 20)]
        store.put_value(self._value(clock, 3), sybils[0], "tcp:192.0.2.1")
        store.put_value(self._value(clock, 4), sybils[1], "tcp:192.0.2.1")
        self.assertRaises(
            QuotaExceeded, store.put_value, self._value(clock, 5), sybils[2], "tcp:192.0.2.1"
        )
        kept = 4
        for n, sybil in enumerate(sybils[3:], start=10):
            try:
                store.put_value(self._value(clock, n), sybil, f"tcp:10.0.0.{n}")
                kept += 1
            except Exception:
                break
        self.assertEqual(kept, Quotas().values_per_key)
        self.assertEqual(len(store.get_values(id_from_bytes(KEY))), 16)
        clock.advance(61)
        store.expire()
        # The flooder's first value expired: it may keep one more, and the
        # key has room for it.
        store.put_value(self._value(clock, 99), flooder, "tcp:192.0.2.9")
        self.assertRaises(
            QuotaExceeded, store.put_value, self._value(clock, 98), flooder, "tcp:192.0.2.9"
        )

    def test_over_the_network(self) -> None:
        """
        A node putting under one key more than its share is stored nowhere
        the third time; another node's value under the key still is.
        """
        sim = _network(6)
        one, other = sim.nodes[1], sim.nodes[2]
        self.assertGreater(sim.run(one.dht.put(KEY, b"a", 3600)), 0)
        self.assertGreater(sim.run(one.dht.put(KEY, b"b", 3600)), 0)
        self.assertEqual(sim.run(one.dht.put(KEY, b"c", 3600)), 0)
        self.assertGreater(sim.run(other.dht.put(KEY, b"d", 3600)), 0)
        self.assertEqual(
            sorted(sim.run(sim.nodes[5].dht.get_anonymously(KEY))), [b"a", b"b", b"d"]
        )
