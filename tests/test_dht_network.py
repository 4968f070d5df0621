"""
The DHT at the scale of a small network: 200 real nodes (pools, Noise
channels, AMP) on the memory network, and the benchmark's small runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.dht import DHTSettings, LookupResult
from digitalspring.dht._simulation import DHTSimulation


class NetworkTests(SynchronousTestCase):
    def test_store_and_lookup_with_30_percent_dead(self) -> None:
        """
        In a network of 200 nodes, 40 publish their records; after 30 % of
        all nodes (publishers included) go silent, 200 lookups from the
        survivors for those records all succeed, none past its deadline;
        so do values put before the failure.
        """
        settings = DHTSettings(rpc_timeout=2.0, lookup_deadline=30.0, pow_difficulty=4)
        sim = DHTSimulation(200, settings, seed=7)
        sim.fill_tables()
        sim.start()
        publishers = sim.random.sample(range(200), 40)
        stored = sim.run(gatherResults([sim.nodes[i].dht.publish() for i in publishers]))
        self.assertEqual(min(stored), 20)
        keys = [bytes([n]) * 32 for n in range(5)]
        puts = [sim.nodes[n].dht.put(key, b"note %d" % n, 3600) for n, key in enumerate(keys)]
        self.assertGreaterEqual(min(sim.run(gatherResults(puts))), 19)

        sim.kill(0.3)
        self.assertEqual(len(sim.dead), 60)
        survivors = [i for i in range(200) if i not in sim.dead]
        lookups = [
            sim.nodes[sim.random.choice(survivors)].dht.find_peer(
                sim.nodes[sim.random.choice(publishers)].identity.peer_id
            )
            for _ in range(200)
        ]
        results: list[LookupResult] = sim.run(gatherResults(lookups))
        self.assertEqual([r for r in results if r.found is None], [])
        self.assertEqual([r for r in results if r.duration > settings.lookup_deadline], [])
        gets = [sim.nodes[survivors[n]].dht.get(key) for n, key in enumerate(keys)]
        self.assertEqual(sim.run(gatherResults(gets)), [[b"note %d" % n] for n in range(5)])


def _benchmark() -> Any:
    path = Path(__file__).parent.parent / "benchmarks" / "dht.py"
    spec = importlib.util.spec_from_file_location("dht_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: What every run of the benchmark reports, whatever its mode.
FIELDS = (
    "join_mode",
    "nodes",
    "median_hops",
    "p99_hops",
    "success_rate_churn",
    "median_lookup_ms",
    "p99_lookup_ms",
    "stale_contacts_fraction",
    "rpcs_per_lookup",
    "wall_s",
    "peak_rss_mb",
)


class BenchmarkTests(SynchronousTestCase):
    """
    The DHT benchmark still measures what it claims.
    """

    def test_small_churn_run(self) -> None:
        """
        Eighty nodes join one by one through real bootstrap requests; then,
        with sessions short enough that nodes leave and arrive within the
        run's simulated minutes, lookups for the records of nodes that are
        up succeed in at most a few hops, and every promised figure is
        reported.
        """
        figures: dict[str, Any] = _benchmark().run_churn(
            80,
            lookups=150,
            duration=600.0,
            warmup=120.0,
            join_interval=0.5,
            session_median=600.0,
            quiet=True,
        )
        for field in FIELDS:
            self.assertIn(field, figures)
        self.assertEqual(figures["join_mode"], "churn")
        self.assertEqual(figures["nodes"], 80)
        self.assertEqual(figures["joins_failed"], 0)
        self.assertGreater(figures["arrivals"], 0)
        self.assertGreater(figures["departures"], 0)
        self.assertGreater(figures["lookups"], 100)
        self.assertGreaterEqual(figures["success_rate_churn"], 0.98)
        self.assertLessEqual(figures["p99_hops"], 4)
        self.assertLessEqual(figures["p99_lookup_ms"], 5000)
        self.assertGreater(figures["stale_contacts_fraction"], 0)
        self.assertLess(figures["stale_contacts_fraction"], 0.5)
        self.assertGreater(figures["upkeep_rpcs_per_node_hour"], 0)

    def test_small_prefill_run(self) -> None:
        """
        The earlier mode, with tables filled directly: on 150 nodes every
        lookup succeeds with all nodes up, nearly all with 30 % dead, and
        none runs past its deadline.
        """
        figures: dict[str, Any] = _benchmark().run_prefill(
            150, lookups=100, records=40, quiet=True
        )
        for field in FIELDS:
            self.assertIn(field, figures)
        self.assertEqual(figures["join_mode"], "prefill")
        self.assertLessEqual(figures["median_hops"], 7)
        self.assertEqual(figures["success_rate_0_dead"], 1.0)
        self.assertGreaterEqual(figures["success_rate_30_dead"], 0.99)
        self.assertEqual(figures["lookups_past_deadline"], 0)
        self.assertGreater(figures["stale_contacts_fraction"], 0.2)
