"""
The DHT at scale: 10,000 nodes that join one by one, then lookups of peer
records for two simulated hours while nodes leave and arrive.

What is real and what is simulated
----------------------------------

Every node runs the real DHT code, as a production node runs it: its own
Ed25519 identity and peer ID, the DHT with its production settings
(``DHTSettings()``: k = 20, alpha = 3, 5 s per request, 30 s per lookup),
its requests and answers encoded as AMP boxes and decoded by the real
responders.  Nodes join as a real node does, through one bootstrap peer (a
ping, then a lookup of their own ID and of each farther bucket, through the
same ``startService`` a node runs), and the DHT's upkeep runs exactly as in
production: every minute each node checks whether to republish its record
(hourly), refresh a bucket no lookup touched for an hour, and re-replicate
records it holds for others; origins are proved by dial-back; stores are
checked against quotas.

What is simulated is everything under the DHT.  By default
(``--network requests``) that is the request network of
:mod:`digitalspring.dht._requestnet`: a light pool per node that carries
AMP boxes with the delays a real connection has (a new connection answers
its first request after the SYN's round trip and Noise IK's two messages,
one connection per pair of peers with the pool's simultaneous-dial rule,
idle connections closed, backoff after failed dials), without running
Noise's cryptography or the byte-level transport.  ``--network memory``
runs the real connection pools and Noise channels over the memory
transport instead (``digitalspring.transport.MemoryNetwork``): four times
slower and three times the memory, with the same figures
(``tests/test_dht_requestnet.py``'s ``SameAsMemoryNetworkTests`` checks
they agree).  Either way there is one host per node, 20 to 150 ms of
one-way latency (hosts sit on a ring, and latency grows with the distance
around it) and 1 % loss (a lost message arrives one retransmission timeout
later, as over TCP); time is a simulated clock, so a run's figures are
simulated seconds, and CPU time never delays a node.  Pools close idle
connections after ``--idle-timeout`` seconds (60 by default, where a
production node waits 300), and a node that dials again pays one more
handshake.  A node that leaves disappears without a goodbye: its
connections drop, and dialling it times out.

The run (``--join-mode churn``, the default)
--------------------------------------------

1. ``--nodes`` nodes join, one every ``--join-interval`` simulated seconds
   (joins overlap: one takes a few seconds), each through a random node
   that joined before it; the first joins nobody.  The run waits for the
   last join to end.
2. Churn starts and runs to the end.  Session lengths follow a Weibull
   distribution with shape 0.5 and a median of one hour (as measured on
   deployed Kademlia networks: most sessions are short, a few last days).
   The nodes already up get what is left of a session in progress (the
   stationary residual of that distribution), so the network is in its
   steady state from the start; newcomers arrive as a Poisson process at
   the rate that keeps the population at ``--nodes`` on average, each a
   new node (a new identity on a new host) that joins through a random
   node that is up, with a session of its own.
3. ``--warmup`` simulated seconds of churn and upkeep without lookups.
4. ``--duration`` simulated seconds (two hours) in which ``--lookups``
   lookups start at random times (a Poisson process), each from a random
   node that is up and has joined, for the record of a random node that is
   up and has published its record.  Lookups whose looking node leaves
   before the lookup ends are not counted.

``success_rate_churn`` is the share of counted lookups that returned the
verified record.  Hops count from the looking node (1: a node of its own
table answered), for the lookups that succeeded, as do the durations
(simulated time).  ``rpcs_per_lookup`` counts every request a lookup sent,
answered or not.  ``stale_contacts_fraction`` is the share of routing-table
contacts, over the tables of nodes that are up, whose node has left,
sampled every ten simulated minutes of the measurement and averaged.
``upkeep_rpcs_per_node_hour`` counts every DHT request any node sent, per
node that was up, per simulated hour of the measurement.  ``warnings``
counts the nodes' log events at warning level or worse, and
``first_warning`` is the first of them.

``--join-mode prefill`` runs the earlier benchmark instead, for comparison:
routing tables filled directly as a long-lived network would have filled
them, ``--records`` nodes publish, ``--lookups`` lookups with every node up,
then 30 % of the nodes go silent for good and ``--lookups`` more run.  It
cannot show much about failures: a record is lost only if all 20 replicas
die (0.3 to the 20th).

Run ``python benchmarks/dht.py [--nodes N] [--join-mode churn|prefill]
[--seed S] ...``; progress goes to stderr and the figures are one JSON
object on the last line.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import implementer

from digitalspring.dht import DHTSettings, LookupResult
from digitalspring.dht._simulation import DHTSimulation, ring_latency

P = ParamSpec("P")
R = TypeVar("R")

#: Production settings: the benchmark measures the DHT as it ships.
SETTINGS = DHTSettings()

#: The Weibull shape of session lengths, and their median in seconds.
SESSION_SHAPE = 0.5
SESSION_MEDIAN = 3600.0

#: One-way latency between hosts, in seconds, and the loss rate.
LATENCY = (0.020, 0.150)
LOSS = 0.01

#: Nodes whose tables are read for each sample of stale contacts.
STALE_SAMPLE = 1000
#: Joins between two freezes of what the collector need not walk again.
FREEZE_EVERY = 250

#: Requests and lookups started at once in the prefill mode.
BATCH = 200


class Progress:
    """
    Progress lines on stderr, with the wall and CPU time since the start
    (they differ when the machine is busy with something else).
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self.started
            sys.stderr.write(f"[{elapsed:7.1f} s, CPU {self.cpu():7.1f} s] {message}\n")
            sys.stderr.flush()

    def cpu(self) -> float:
        """
        CPU seconds this process used since the start.
        """
        return round(time.process_time() - self.cpu_started, 1)

    def wall(self) -> float:
        return round(time.perf_counter() - self.started, 1)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@implementer(ILogObserver)
class _Kept:
    """
    Log events, kept in a list.
    """

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)


def _quiet_logs() -> list[LogEvent]:
    """
    Keep the nodes' log events off stderr (and out of the log beginner's
    buffer); the warnings and worse are kept, for the report.
    """
    kept = _Kept()
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(kept, [LogLevelFilterPredicate(LogLevel.warn)])],
        discardBuffer=True,
        redirectStandardIO=False,
    )
    return kept.events


def _tune_gc() -> None:
    """
    Freeze what exists (it lives to the end anyway) and run the cyclic
    collector less often: nodes hold millions of objects, most freed by
    reference counting, and the collector walking them again and again
    costs a third of a run (measured on 300 joins: 111 s of CPU with the
    default thresholds, 76 s with 50,000; 500 nodes' joins and 6 minutes of
    churn: 64 s with 50,000, 58 s with 500,000, and 56 s with no collector
    at all; the peak memory barely moves).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(500_000, 20, 100)


def _restoring_gc(run: Callable[P, R]) -> Callable[P, R]:
    """
    Run ``run`` and then put the collector back as it was (the tests run
    the benchmark in their own process): enabled or not, its thresholds,
    and nothing frozen.
    """

    @functools.wraps(run)
    def restoring(*args: P.args, **kw: P.kwargs) -> R:
        enabled = gc.isenabled()
        thresholds = gc.get_threshold()
        try:
            return run(*args, **kw)
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            if enabled:
                gc.enable()

    return restoring


def _collect_by_hand() -> None:
    """
    The churn mode's collector: none running by itself (its young
    collections, run every 500,000 allocations, were a seventh of the join
    phase's CPU: 1,000 joins took 76.4 s with it, 71.4 s without).  The
    join phase freezes what it built every :data:`FREEZE_EVERY` joins,
    without collecting first: the joins leave next to no cyclic garbage
    (1,000 joins with no collector at all peak at the same memory), and a
    collection before each freeze was 6 % of 10,000 joins' CPU.  Churn
    runs one collection every ten simulated minutes (see
    :func:`_run_for`), which keeps the garbage that only the collector
    frees to what ten minutes make (closed connections were most of it
    until they dropped their cycles: at 1,000 nodes, 100,000 to 150,000
    objects every ten minutes, 760,000 after the joins), and
    then freezes what survived, so that each collection walks only what
    the last ten minutes made: at 10,000 nodes, walking all that churn had
    made drew 43 % of py-spy's samples over 90 s of the second hour.  What
    a freeze keeps for good is what lived at a collection: requests then
    in flight, and nodes, which the simulation keeps after they leave
    anyway.
    """
    gc.collect()
    gc.freeze()
    gc.disable()


def session_scale(median: float) -> float:
    """
    The scale of the Weibull distribution of sessions whose median is
    ``median``.
    """
    return median / float(math.log(2) ** (1 / SESSION_SHAPE))


@define
class Churn:
    """
    Nodes arriving and leaving on the simulation's clock, and the sets the
    benchmark draws from.

    :ivar session_median: the median session length, in seconds.
    :ivar online: the nodes up now, in a list for drawing at random.
    :ivar joined: the nodes up whose join has ended.
    """

    sim: DHTSimulation
    session_median: float = SESSION_MEDIAN
    online: list[int] = field(factory=list)
    joined: set[int] = field(factory=set)
    arrivals: int = 0
    departures: int = 0
    joins_failed: int = 0
    _where: dict[int, int] = field(factory=dict)
    _rate: float = 0.0
    _running: bool = False

    def add(self, through: list[int]) -> int:
        """
        A new node joins through ``through``.
        """
        sim = self.sim
        i = sim.add_node()
        self._where[i] = len(self.online)
        self.online.append(i)
        sim.join(i, through).addCallback(self._joined, i, bool(through))
        return i

    def _joined(self, _: object, i: int, through_someone: bool) -> None:
        if i in self._where:
            self.joined.add(i)
            if through_someone and not len(self.sim.nodes[i].dht.table):
                self.joins_failed += 1

    def remove(self, i: int) -> None:
        """
        Node ``i`` leaves.
        """
        where = self._where.pop(i, None)
        if where is None:
            return
        last = self.online.pop()
        if last != i:
            self.online[where] = last
            self._where[last] = where
        self.joined.discard(i)
        self.sim.leave(i)
        self.departures += 1

    def is_up(self, i: int) -> bool:
        """
        Whether node ``i`` is up.
        """
        return i in self._where

    def random_joined(self) -> int | None:
        """
        A random node that is up and has joined, if any.
        """
        random = self.sim.random
        for _ in range(100):
            i = random.choice(self.online)
            if i in self.joined:
                return i
        return None

    def start(self, population: int) -> None:
        """
        Start churn: give each node up what is left of its session, and let
        newcomers arrive at the rate that keeps ``population`` up.
        """
        sim = self.sim
        scale = session_scale(self.session_median)
        mean = scale * math.gamma(1 + 1 / SESSION_SHAPE)
        self._rate = population / mean
        self._running = True
        for i in list(self.online):
            # Length-biased session (a node up now is more likely in a long
            # one), and a uniform point in it: the stationary residual.
            total = scale * sim.random.gammavariate(1 + 1 / SESSION_SHAPE, 1.0) ** (
                1 / SESSION_SHAPE
            )
            sim.clock.callLater(sim.random.random() * total, self.remove, i)
        self._next_arrival()

    def _next_arrival(self) -> None:
        sim = self.sim
        sim.clock.callLater(sim.random.expovariate(self._rate), self._arrive)

    def _arrive(self) -> None:
        sim = self.sim
        through = self.random_joined()
        if through is not None:
            i = self.add([through])
            self.arrivals += 1
            scale = session_scale(self.session_median)
            session = sim.random.weibullvariate(scale, SESSION_SHAPE)
            sim.clock.callLater(session, self.remove, i)
        self._next_arrival()


class RPCCounter:
    """
    Counts the DHT requests every node sends, by wrapping each node's
    request method: a measuring probe, the only change to a node.
    """

    def __init__(self) -> None:
        self.count = 0

    def watch(self, sim: DHTSimulation, i: int) -> None:
        dht = sim.nodes[i].dht
        call = dht._call

        def counted(*args: Any, **kw: Any) -> Deferred[Any]:
            self.count += 1
            return call(*args, **kw)

        dht._call = counted  # type: ignore[method-assign]


def _stale_fraction(sim: DHTSimulation, churn: Churn, index: dict[Any, int]) -> float:
    nodes = list(churn.joined)
    if len(nodes) > STALE_SAMPLE:
        nodes = sim.random.sample(nodes, STALE_SAMPLE)
    total = stale = 0
    for i in nodes:
        for contact in sim.nodes[i].dht.table.contacts():
            total += 1
            j = index.get(contact.peer_id)
            if j is None or j in sim.dead:
                stale += 1
    return stale / total if total else 0.0


@_restoring_gc
def run_churn(
    nodes: int,
    lookups: int = 10_000,
    seed: int = 1,
    quiet: bool = False,
    duration: float = 7200.0,
    warmup: float = 1800.0,
    join_interval: float = 0.1,
    idle_timeout: float = 60.0,
    session_median: float = SESSION_MEDIAN,
    settings: DHTSettings = SETTINGS,
    network: str = "requests",
) -> dict[str, Any]:
    """
    Run the benchmark with joins and churn; the figures.

    :param duration: simulated seconds of lookups under churn.
    :param warmup: simulated seconds of churn before the lookups.
    :param join_interval: simulated seconds between two joins.
    :param session_median: the median session length, in seconds.
    :param quiet: whether to leave out the progress lines on stderr.
    :param network: ``"requests"`` for the lighter request network, or
        ``"memory"`` for real pools, Noise and AMP on the memory network.
    """
    progress = Progress(quiet)
    warnings = _quiet_logs()
    sim = DHTSimulation(
        0,
        settings,
        seed=seed,
        latency=ring_latency(*LATENCY),
        loss=LOSS,
        idle_timeout=idle_timeout,
        connect_timeout=10.0,
        requests_only=network == "requests",
    )
    clock = sim.clock
    churn = Churn(sim, session_median)
    rpcs = RPCCounter()
    index: dict[Any, int] = {}

    def add(through: list[int]) -> None:
        i = churn.add(through)
        rpcs.watch(sim, i)
        index[sim.nodes[i].identity.peer_id] = i

    _collect_by_hand()
    # 1. Joins, one at a time.
    add([])
    for n in range(1, nodes):
        clock.advance(join_interval)
        through = churn.random_joined()
        add([through if through is not None else 0])
        if n % FREEZE_EVERY == 0:
            gc.freeze()
        if n % 1000 == 0:
            progress(f"{n} nodes joined or joining at {clock.seconds():.0f} s simulated")
    last = sim.nodes[-1].dht.joined
    sim.run(last, limit=3600)
    clock.advance(settings.maintenance_interval)
    sizes = [len(sim.nodes[i].dht.table) for i in churn.online]
    joined_at = clock.seconds()
    progress(
        f"{nodes} nodes joined by {joined_at:.0f} s simulated: "
        f"{statistics.mean(sizes):.0f} contacts per node, "
        f"{churn.joins_failed} joins failed"
    )
    gc.collect()
    gc.freeze()

    # 2, 3. Churn, and the warm-up.
    churn.start(nodes)
    _run_for(sim, warmup, 600.0, lambda: progress(_state(sim, churn, rpcs, "warm-up")))

    # 4. Lookups under churn.
    rate = lookups / duration
    results: list[tuple[bool, LookupResult]] = []
    started = [0]
    skipped = [0]

    def look() -> None:
        source = churn.random_joined()
        target = None
        for _ in range(100):
            candidate = churn.random_joined()
            if candidate is not None and sim.nodes[candidate].dht.published_to > 0:
                target = candidate
                break
        if source is None or target is None or target == source:
            skipped[0] += 1
        else:
            started[0] += 1
            peer = sim.nodes[target].identity.peer_id
            d = sim.nodes[source].dht.find_peer(peer)
            # Counted only if the looking node is still up when it ends.
            d.addCallback(lambda result: results.append((churn.is_up(source), result)))
        if clock.seconds() < measure_end:
            clock.callLater(sim.random.expovariate(rate), look)

    measure_start = clock.seconds()
    measure_end = measure_start + duration
    rpcs_before = rpcs.count
    node_seconds = [0.0]
    stale: list[float] = []

    def sample() -> None:
        node_seconds[0] += len(churn.online) * 600.0
        stale.append(_stale_fraction(sim, churn, index))
        progress(_state(sim, churn, rpcs, "lookups", results, stale[-1]))

    clock.callLater(sim.random.expovariate(rate), look)
    _run_for(sim, duration, 600.0, sample)
    upkeep_rpcs = rpcs.count - rpcs_before
    # The lookups still running end within their deadline.
    clock.advance(settings.lookup_deadline + settings.rpc_timeout)

    counted = [r for up, r in results if up]
    found = [r for r in counted if r.found is not None]
    hops = [float(r.hops) for r in found]
    durations = [r.duration for r in found]
    return {
        "join_mode": "churn",
        "network": network,
        "nodes": nodes,
        "median_hops": statistics.median(hops) if hops else None,
        "p99_hops": _percentile(hops, 0.99) if hops else None,
        "success_rate_churn": round(len(found) / len(counted), 5) if counted else None,
        "median_lookup_ms": round(statistics.median(durations) * 1000, 1) if found else None,
        "p99_lookup_ms": round(_percentile(durations, 0.99) * 1000, 1) if found else None,
        "stale_contacts_fraction": round(statistics.mean(stale), 4) if stale else None,
        "rpcs_per_lookup": round(statistics.mean(r.rpcs for r in counted), 2) if counted else None,
        "lookups": len(counted),
        "lookups_failed": len(counted) - len(found),
        "lookups_source_left": len(results) - len(counted),
        "lookups_at_deadline": sum(r.deadline_reached for r in counted),
        "arrivals": churn.arrivals,
        "departures": churn.departures,
        "joins_failed": churn.joins_failed,
        "online_at_end": len(churn.online),
        "upkeep_rpcs_per_node_hour": round(upkeep_rpcs / (node_seconds[0] / 3600), 1)
        if node_seconds[0]
        else None,
        "join_phase_s": round(joined_at, 1),
        "simulated_s": round(clock.seconds(), 1),
        "warnings": len(warnings),
        "first_warning": formatEvent(warnings[0])[:300] if warnings else None,
        "wall_s": progress.wall(),
        "cpu_s": progress.cpu(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_for(sim: DHTSimulation, seconds: float, every: float, report: Callable[[], None]) -> None:
    end = sim.clock.seconds() + seconds
    while sim.clock.seconds() < end:
        sim.clock.advance(min(every, end - sim.clock.seconds()))
        gc.collect()
        gc.freeze()
        report()


def _state(
    sim: DHTSimulation,
    churn: Churn,
    rpcs: RPCCounter,
    phase: str,
    results: Iterable[tuple[bool, LookupResult]] = (),
    stale: float | None = None,
) -> str:
    done = list(results)
    failed = sum(1 for _, r in done if r.found is None)
    line = (
        f"{phase} at {sim.clock.seconds():.0f} s simulated: {len(churn.online)} up, "
        f"{churn.arrivals} arrived, {churn.departures} left, {rpcs.count} requests"
    )
    if done:
        line += f", {len(done)} lookups ({failed} failed)"
    if stale is not None:
        line += f", {stale:.1%} of contacts stale"
    return line


@_restoring_gc
def run_prefill(
    nodes: int, lookups: int = 2000, records: int = 1000, seed: int = 1, quiet: bool = False
) -> dict[str, Any]:
    """
    Run the earlier benchmark: tables filled directly, no churn, then 30 %
    of the nodes dead; the figures.
    """
    progress = Progress(quiet)
    _quiet_logs()
    settings = DHTSettings(
        rpc_timeout=2.0,
        lookup_deadline=30.0,
        # Upkeep runs hourly; a run lasts minutes of simulated time, and the
        # nodes that publish do so explicitly.
        maintenance_interval=1e9,
    )
    sim = DHTSimulation(nodes, settings, seed=seed, idle_timeout=5.0, connect_timeout=5.0)
    progress(f"{nodes} nodes made")
    sim.fill_tables()
    sim.start()
    sizes = [len(node.dht.table) for node in sim.nodes]
    progress(f"tables filled: {statistics.mean(sizes):.0f} contacts per node")
    _tune_gc()

    def in_batches(work: list[Any], start: Callable[[Any], Deferred[Any]]) -> list[Any]:
        results: list[Any] = []
        for first in range(0, len(work), BATCH):
            batch = [start(item) for item in work[first : first + BATCH]]
            results.extend(sim.run(gatherResults(batch), limit=1e6))
        return results

    def lookups_from(sources: list[int], targets: list[int]) -> list[LookupResult]:
        pairs = [(sim.random.choice(sources), sim.random.choice(targets)) for _ in range(lookups)]
        return in_batches(
            pairs, lambda p: sim.nodes[p[0]].dht.find_peer(sim.nodes[p[1]].identity.peer_id)
        )

    published = sim.random.sample(range(nodes), min(records, nodes))
    stored = in_batches(published, lambda i: sim.nodes[i].dht.publish())
    progress(f"{len(published)} records published, at {statistics.mean(stored):.1f} nodes each")
    everyone = list(range(nodes))
    healthy = lookups_from(everyone, published)
    progress(f"{len(healthy)} lookups with every node up")
    sim.kill(0.3)
    survivors = [i for i in everyone if i not in sim.dead]
    wounded = lookups_from(survivors, published)
    progress(f"{len(wounded)} lookups with {len(sim.dead)} nodes dead")

    dead = {sim.nodes[i].identity.peer_id for i in sim.dead}
    contacts = [c.peer_id for i in survivors for c in sim.nodes[i].dht.table.contacts()]
    both = healthy + wounded
    found = [r for r in both if r.found is not None]
    hops = [float(r.hops) for r in found]
    return {
        "join_mode": "prefill",
        "nodes": nodes,
        "median_hops": statistics.median(hops),
        "p99_hops": _percentile(hops, 0.99),
        "success_rate_churn": None,
        "success_rate_0_dead": sum(r.found is not None for r in healthy) / len(healthy),
        "success_rate_30_dead": sum(r.found is not None for r in wounded) / len(wounded),
        "median_lookup_ms": round(statistics.median(r.duration for r in found) * 1000, 1),
        "p99_lookup_ms": round(_percentile([r.duration for r in found], 0.99) * 1000, 1),
        "stale_contacts_fraction": round(sum(p in dead for p in contacts) / len(contacts), 4),
        "rpcs_per_lookup": round(statistics.mean(r.rpcs for r in both), 2),
        "lookups": len(both),
        "records_published": len(published),
        "mean_replicas": round(statistics.mean(stored), 2),
        "lookups_past_deadline": sum(r.duration > settings.lookup_deadline + 1e-9 for r in both),
        "lookups_at_deadline": sum(r.deadline_reached for r in both),
        "simulated_s": round(sim.clock.seconds(), 1),
        "wall_s": progress.wall(),
        "cpu_s": progress.cpu(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--join-mode", choices=("churn", "prefill"), default="churn")
    parser.add_argument("--lookups", type=int, help="lookups (churn: 10,000; prefill: per phase)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=7200.0, help="simulated s of lookups")
    parser.add_argument("--warmup", type=float, default=1800.0, help="simulated s of churn first")
    parser.add_argument("--join-interval", type=float, default=0.1, help="simulated s")
    parser.add_argument("--idle-timeout", type=float, default=60.0, help="the pools', in s")
    parser.add_argument("--records", type=int, default=1000, help="prefill: records published")
    parser.add_argument(
        "--network",
        choices=("requests", "memory"),
        default="requests",
        help="churn: the lighter request network, or real pools on the memory network",
    )
    args = parser.parse_args()
    if args.join_mode == "prefill":
        figures = run_prefill(args.nodes, args.lookups or 2000, args.records, args.seed)
    else:
        figures = run_churn(
            args.nodes,
            args.lookups or 10_000,
            args.seed,
            duration=args.duration,
            warmup=args.warmup,
            join_interval=args.join_interval,
            idle_timeout=args.idle_timeout,
            network=args.network,
        )
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
    # The process ends without freeing the simulation object by object:
    # after the 10,000-node run printed its figures, that took 5.6 minutes.
    sys.stderr.flush()
    os._exit(0)
