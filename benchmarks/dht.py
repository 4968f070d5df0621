"""
The DHT at scale: lookups of peer records among 10,000 simulated nodes.

Every node is the real code: its own identity, connection pool, Noise
channels, AMP and DHT, on the memory network with 5 to 105 ms of one-way
latency between pairs (a ring, as in ``benchmarks/memory_network.py``) and a
simulated clock.  Routing tables are filled as a long-lived network would
have filled them (``DHTSimulation.fill_tables``: in each bucket, up to k
random nodes of its range), because joining ten thousand nodes one by one
would cost the run most of its time and measure joining, not lookups.

Then, all through the network:

1. ``--records`` random nodes publish their signed records (a lookup for
   the k closest nodes, then STORE at each);
2. ``--lookups`` lookups, each from a random node for a random published
   record, with every node up (``success_rate_0_dead``);
3. 30 % of the nodes, chosen at random, go silent for good (connection
   attempts to them time out), and ``--lookups`` more lookups run from the
   survivors, for records whose owners may be dead
   (``success_rate_30_dead``).

A lookup succeeds when it returns the verified record.  Hops count from the
looking node: 1 for the nodes of its own table.  ``median_lookup_ms`` is
simulated time; ``rpcs_per_lookup`` counts the requests a lookup sent,
answered or not; ``lookups_past_deadline`` counts lookups that ran longer
than the deadline (``lookups_at_deadline`` those the deadline ended).

Run ``python benchmarks/dht.py [--nodes N] [--lookups L] [--seed S]``;
progress goes to stderr and the figures are one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred, gatherResults

from digitalspring.dht import DHTSettings, LookupResult
from digitalspring.dht._simulation import DHTSimulation

#: Requests and lookups started at once: enough to overlap, few enough to
#: keep the number of open connections down.
BATCH = 200

SETTINGS = DHTSettings(
    rpc_timeout=2.0,
    lookup_deadline=30.0,
    # Upkeep (republishing, refresh) runs hourly; a run lasts minutes of
    # simulated time, and the nodes that publish do so explicitly.
    maintenance_interval=1e9,
)


def _progress(message: str, started: float) -> None:
    if QUIET[0]:
        return
    sys.stderr.write(f"[{time.perf_counter() - started:7.1f} s] {message}\n")
    sys.stderr.flush()


def _in_batches(sim: DHTSimulation, work: list[Any], start: Any) -> list[Any]:
    results: list[Any] = []
    for first in range(0, len(work), BATCH):
        batch: list[Deferred[Any]] = [start(item) for item in work[first : first + BATCH]]
        results.extend(sim.run(gatherResults(batch), limit=1e6))
    return results


def _lookups(sim: DHTSimulation, sources: list[int], targets: list[int]) -> list[LookupResult]:
    def start(pair: tuple[int, int]) -> Deferred[LookupResult]:
        source, target = pair
        return sim.nodes[source].dht.find_peer(sim.nodes[target].identity.peer_id)

    pairs = [(sim.random.choice(sources), sim.random.choice(targets)) for _ in range(LOOKUPS[0])]
    return _in_batches(sim, pairs, start)


LOOKUPS = [1000]
QUIET = [False]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(
    nodes: int, lookups: int = 1000, records: int = 1000, seed: int = 1, quiet: bool = False
) -> dict[str, Any]:
    """
    Run the benchmark; the figures.

    :param quiet: whether to leave out the progress lines on stderr.
    """
    started = time.perf_counter()
    LOOKUPS[0] = lookups
    QUIET[0] = quiet
    sim = DHTSimulation(nodes, SETTINGS, seed=seed, idle_timeout=5.0, connect_timeout=5.0)
    _progress(f"{nodes} nodes made", started)
    sim.fill_tables()
    sim.start()
    sizes = [len(node.dht.table) for node in sim.nodes]
    _progress(f"tables filled: {statistics.mean(sizes):.0f} contacts per node", started)
    gc.collect()
    gc.freeze()

    published = sim.random.sample(range(nodes), min(records, nodes))
    stored = _in_batches(sim, published, lambda i: sim.nodes[i].dht.publish())
    _progress(
        f"{len(published)} records published, at {statistics.mean(stored):.1f} nodes each",
        started,
    )

    everyone = list(range(nodes))
    healthy = _lookups(sim, everyone, published)
    _progress(f"{len(healthy)} lookups with every node up", started)

    sim.kill(0.3)
    survivors = [i for i in everyone if i not in sim.dead]
    wounded = _lookups(sim, survivors, published)
    _progress(f"{len(wounded)} lookups with {len(sim.dead)} nodes dead", started)

    both = healthy + wounded
    found = [r for r in both if r.found is not None]
    deadline = SETTINGS.lookup_deadline
    return {
        "nodes": nodes,
        "lookups": len(both),
        "records_published": len(published),
        "mean_replicas": round(statistics.mean(stored), 2),
        "median_hops": statistics.median(r.hops for r in found),
        "p99_hops": _percentile([r.hops for r in found], 0.99),
        "median_lookup_ms": round(statistics.median(r.duration for r in found) * 1000, 1),
        "p99_lookup_ms": round(_percentile([r.duration for r in found], 0.99) * 1000, 1),
        "success_rate_0_dead": sum(r.found is not None for r in healthy) / len(healthy),
        "success_rate_30_dead": sum(r.found is not None for r in wounded) / len(wounded),
        "rpcs_per_lookup": round(statistics.mean(r.rpcs for r in both), 2),
        "lookups_past_deadline": sum(r.duration > deadline + 1e-9 for r in both),
        "lookups_at_deadline": sum(r.deadline_reached for r in both),
        "simulated_s": round(sim.clock.seconds(), 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2000, help="lookups per phase")
    parser.add_argument("--records", type=int, default=1000, help="records published")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(run(args.nodes, args.lookups, args.records, args.seed)))


if __name__ == "__main__":
    main()
