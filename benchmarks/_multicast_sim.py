"""
One row of ``benchmarks/multicast.py``: a strategy sends one message from
an owner to ``n`` members on the memory network, under a network profile,
and the row's figures.

Every node is the real code: its own identity, connection pool (with the
production idle timeout), Noise channels, AMP, a
:class:`~digitalspring.storage.MemoryStore` and the multicast service with
the strategy under test, found by name among the installed strategy
plugins.  What is simulated is the network (the memory transport: each
host's uplink and downlink shared by its connections, a one-way latency per
pair of hosts, loss turned into retransmission delay, a connection set-up
delay) and time (a :class:`~digitalspring.transport.SimulatedClock`, so
CPU time never delays a node).
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from digitalspring.channel import ConnectionPool
from digitalspring.identity import Identity, PeerID
from digitalspring.multicast import (
    FRAGMENT_SIZE,
    IMulticastStrategyPlugin,
    Manifest,
    MulticastService,
    ReceivedMessage,
    invitation_delivery,
)
from digitalspring.multicast._context import GroupContext
from digitalspring.multicast._notices import INVITATION, GroupInvitation, encode_invitation
from digitalspring.storage import ChangeEdges, Enqueue, Member, MemoryStore, PutMember
from digitalspring.testing._strategy import _Directory
from digitalspring.transport import MemoryNetwork, SimulatedClock

#: How long after the owner's delivery report settled (every member
#: acknowledged) the open connections are counted: long enough for a
#: strategy's teardown, well under the pools' idle timeout (300 s), so that
#: ``connections_after`` counts what the strategy left open.
TEARDOWN_GRACE = 60.0

#: The most simulated seconds a transmission may take before the row gives
#: up on the members that have not committed.
DEADLINE = 4 * 3600.0

#: The production idle timeout of a pool (``ConnectionPool``'s default).
IDLE_TIMEOUT = 300.0


@frozen
class Profile:
    """
    A network profile: every host's access line and the paths between them.

    :ivar upload: each host's upload rate, in bytes per second.
    :ivar download: each host's download rate, in bytes per second.
    :ivar latency: the range of one-way latencies, in seconds: each pair of
        hosts gets one, uniform in it.
    :ivar loss: the chance that a chunk is lost (and sent again).
    :ivar connect_delay: the range of connection set-up delays, in seconds,
        each attempt drawing one uniformly; ``None`` for none.
    """

    name: str
    upload: float
    download: float
    latency: tuple[float, float]
    loss: float
    connect_delay: tuple[float, float] | None = None


PROFILES = {
    "broadband": Profile("broadband", 1.25e6, 6.25e6, (0.020, 0.150), 0.005),
    "tor": Profile("tor", 0.5e6, 0.5e6, (0.250, 0.600), 0.0, (2.0, 5.0)),
}


def lower_bound(profile: Profile, n: int, size: int) -> float:
    """
    The physical limit: the sender uploads the whole message, and the last
    fragment then reaches ``n`` members, at best doubling its holders every
    fragment time, plus the smallest one-way latency.
    """
    fragment = min(size, FRAGMENT_SIZE)
    upload = profile.upload
    doublings = math.ceil(math.log2(n + 1))
    return (size - fragment) / upload + doublings * fragment / upload + profile.latency[0]


def pair_latency(low: float, high: float, seed: int) -> Callable[[str, str], float]:
    """
    A one-way latency for each pair of hosts, uniform in ``[low, high]``,
    the same both ways and from one run to the next.
    """
    known: dict[tuple[str, str], float] = {}

    def latency(source: str, target: str) -> float:
        key = (source, target) if source < target else (target, source)
        value = known.get(key)
        if value is None:
            digest = hashlib.blake2b(
                f"{key[0]}|{key[1]}".encode(), digest_size=8, key=seed.to_bytes(8, "big")
            ).digest()
            value = known[key] = low + (high - low) * int.from_bytes(digest, "big") / 2**64
        return value

    return latency


@implementer(ILogObserver)
class _Kept:
    """
    Warnings and worse from the nodes, kept for the report.
    """

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        if len(self.events) < 1000:
            self.events.append(event)


def quiet_logs() -> list[LogEvent]:
    """
    Keep the nodes' log events off stderr; keep their warnings and worse.
    """
    kept = _Kept()
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(kept, [LogLevelFilterPredicate(LogLevel.warn)])],
        discardBuffer=True,
        redirectStandardIO=False,
    )
    return kept.events


def tune_gc() -> None:
    """
    Freeze what exists and run the cyclic collector less often: thousands
    of nodes hold millions of objects, most freed by reference counting
    (as ``benchmarks/dht.py`` measured).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Duplicates:
    """
    Counts, for every node, the fragments its group contexts were handed
    and already held: ``GroupContext.accept_fragment`` answering ``False``.
    It is the service's code every strategy stores fragments through, so
    the count does not depend on the strategy's own bookkeeping.
    """

    def __init__(self) -> None:
        self.count = 0
        self._original = GroupContext.accept_fragment

    def start(self) -> None:
        original = self._original

        def accept_fragment(
            context: GroupContext, manifest: Manifest, number: int, data: bytes
        ) -> Deferred[bool]:
            d = original(context, manifest, number, data)

            def seen(new: bool) -> bool:
                if new is False:
                    self.count += 1
                return new

            return d.addCallback(seen)

        GroupContext.accept_fragment = accept_fragment  # type: ignore[method-assign,assignment]

    def stop(self) -> None:
        GroupContext.accept_fragment = self._original  # type: ignore[method-assign]


class Simulation:
    """
    An owner and its members on a memory network shaped by a profile.
    """

    def __init__(self, profile: Profile, plugin: IMulticastStrategyPlugin, seed: int = 1) -> None:
        self.profile = profile
        self.plugin = plugin
        self.clock = SimulatedClock()
        rng = random.Random(seed)
        delay: float | Callable[[str, str], float] = 0.0
        if profile.connect_delay is not None:
            low, high = profile.connect_delay

            def delay(source: str, target: str) -> float:
                return rng.uniform(low, high)

        self.network = MemoryNetwork(
            self.clock,
            latency=pair_latency(*profile.latency, seed),
            loss=profile.loss,
            seed=seed,
            connect_delay=delay,
        )
        self.directory = _Directory()
        self.services: dict[str, MulticastService] = {}

    def node(self, name: str) -> MulticastService:
        """
        A new node called ``name``, started, on a host of the profile's
        rates.
        """
        self.network.add_host(
            name, upload_bps=self.profile.upload * 8, download_bps=self.profile.download * 8
        )
        transport = self.network.transport(name)
        identity = Identity.generate()
        pool = ConnectionPool(
            identity, self.clock, {"memory": transport}, self.directory, idle_timeout=IDLE_TIMEOUT
        )
        transport.listen("1", pool.server_factory)
        self.directory.addresses[identity.peer_id] = [f"memory:{name}:1"]
        service = MulticastService(
            identity,
            self.clock,
            pool,
            MemoryStore(),
            is_contact=lambda peer: True,
            strategies={self.plugin.name: self.plugin},
        )
        pool.startService()  # type: ignore[no-untyped-call]
        service.startService()
        self.services[name] = service
        return service

    def result(self, d: Deferred[Any], limit: float = 3600.0) -> Any:
        """
        Run the clock until ``d`` fires; its result, or its error raised.
        """
        results: list[Any] = []
        d.addBoth(results.append)
        self.clock.run_until(lambda: bool(results), limit=limit)
        if not results:
            raise AssertionError("nothing happened in time")
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def open_connections(self) -> int:
        """
        The connections open on the network (each counted once).
        """
        ends = sum(len(host.connections) for host in self.network.hosts.values())
        return (ends + 1) // 2

    def bytes_sent(self) -> dict[str, int]:
        return {name: host.bytes_sent for name, host in self.network.hosts.items()}


async def add_members(owner: MulticastService, group_id: bytes, peers: list[PeerID]) -> None:
    """
    Add ``peers`` to a group ``owner`` owns, and invite them, in one commit.

    It does what ``MulticastService.add_member`` does for each peer, with the
    same parts (the neighbour graph's ``add_members``, the invitation with
    the epoch's keys, the outbox), all at once: ``add_member`` rebuilds the
    graph from the store for every member, which took 33 s for 1,000
    members and grows with the square (about an hour for 10,000).
    """
    group = await owner._owned(group_id)
    graph = await owner._graph(group_id, group.degree)
    change = graph.add_members(peers)
    state = await owner._owner_state(group_id)
    delivery = invitation_delivery(state)
    now = owner._now()
    changes: list[Any] = [PutMember(group_id, Member(peer, "member", "invited")) for peer in peers]
    changes.append(ChangeEdges(group_id, frozenset(change.added), frozenset(change.removed)))
    for peer in peers:
        invitation = GroupInvitation(
            group_id,
            group.name,
            group.strategy,
            group.degree,
            change.graph.neighbours(peer),
            delivery,
        )
        changes.append(Enqueue(peer, INVITATION, encode_invitation(invitation), now, group_id))
    await owner.store.commit(*changes)
    owner.outbox.waiting(frozenset(peers))
    owner._refresh_members(group_id)


def for_profile(plugin: IMulticastStrategyPlugin, profile: Profile) -> IMulticastStrategyPlugin:
    """
    The strategy as a node on the profile's links runs it: one with an
    upload budget (``spring``'s ``--upload-budget``) gets the profile's
    upload rate, so that it does not plan on more than its uplink carries
    (the default, 1.25 MB/s, is broadband's; tor's is 0.5 MB/s).
    """
    if getattr(plugin, "upload_budget", None) is None:
        return plugin
    made: IMulticastStrategyPlugin = type(plugin)(upload_budget=profile.upload)  # type: ignore[call-arg]
    return made


def _progress(message: str) -> None:
    sys.stderr.write(f"  {message}\n")
    sys.stderr.flush()


def run_row(
    plugin: IMulticastStrategyPlugin,
    profile: Profile,
    n: int,
    size: int,
    seed: int = 1,
    progress: Callable[[str], None] = _progress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Build the group, let its set-up connections go idle, send one message
    of ``size`` random bytes, and measure.

    :returns: the row's figures and details about the run.
    """
    warnings = quiet_logs()
    began = time.perf_counter()
    plugin = for_profile(plugin, profile)
    sim = Simulation(profile, plugin, seed)
    owner = sim.node("owner")
    members = [sim.node(f"m{i}") for i in range(n)]
    tune_gc()
    group_id: bytes = sim.result(owner.create_group("benchmark", plugin.name))
    sim.result(Deferred.fromCoroutine(add_members(owner, group_id, [m.local for m in members])))

    def joined() -> bool:
        states: list[Any] = []
        owner.store.members(group_id).addCallback(states.extend)
        return all(m.status == "active" for m in states)

    def set_up() -> bool:
        # Nothing of the set-up left to send: invitations answered, and
        # every member's key bundle taken by the owner, who paces them (a
        # bundle answered BUSY waits in its member's outbox for a retry).
        waiting: list[Any] = []
        for service in [owner, *members]:
            service.store.outbox_peers().addCallback(waiting.append)
        return not any(waiting)

    while not joined():
        if sim.clock.seconds() > DEADLINE:
            raise AssertionError("the members did not all join")
        sim.clock.advance(1.0)
    joined_at = sim.clock.seconds()
    while not set_up():
        if sim.clock.seconds() > DEADLINE:
            raise AssertionError("the group's set-up did not settle")
        sim.clock.advance(1.0)
    settled_setup_at = sim.clock.seconds()
    # The group is idle when a message is sent: set-up connections closed.
    sim.clock.advance(IDLE_TIMEOUT + 10)
    setup_wall = time.perf_counter() - began
    progress(
        f"{n} members joined in {joined_at:.1f} s simulated (set-up settled at "
        f"{settled_setup_at:.1f} s), {setup_wall:.1f} s wall; "
        f"{sim.open_connections()} connections open when sending"
    )

    committed: dict[PeerID, float] = {}
    wrong: list[PeerID] = []
    data = os.urandom(size)
    for member in members:

        def got(message: ReceivedMessage, peer: PeerID = member.local) -> None:
            if message.data != data:
                wrong.append(peer)
            committed.setdefault(peer, sim.clock.seconds())

        member.subscribe(group_id, got)
    duplicates = Duplicates()
    duplicates.start()
    before = sim.bytes_sent()
    events = sim.clock.calls_run
    wall = time.perf_counter()
    start = sim.clock.seconds()
    report = sim.result(owner.publish(group_id, data, "benchmark.bin"))
    sim.clock.run_until(lambda: len(committed) == n, limit=DEADLINE)
    done_at = sim.clock.seconds()
    settled: list[Any] = []
    report.settled().addBoth(settled.append)
    sim.clock.run_until(lambda: bool(settled), limit=max(0.0, start + DEADLINE - done_at))
    settled_at = sim.clock.seconds()
    sim.clock.advance(TEARDOWN_GRACE)
    connections = sim.open_connections()
    transmission_wall = time.perf_counter() - wall
    duplicates.stop()
    after = sim.bytes_sent()
    sent = {name: after[name] - before.get(name, 0) for name in after}
    complete = len(committed) == n and not wrong
    completion = max(committed.values()) - start if complete else None
    bound = lower_bound(profile, n, size)
    member_upload = max((sent[f"m{i}"] for i in range(n)), default=0)
    row = {
        "strategy": plugin.name,
        "profile": profile.name,
        "n": n,
        "size": size,
        "delivered_ratio": round((len(committed) - len(wrong)) / n, 4),
        "completion_s": None if completion is None else round(completion, 3),
        "lower_bound_s": round(bound, 4),
        "completion_vs_bound": None if completion is None else round(completion / bound, 3),
        "sender_upload_x": round(sent["owner"] / size, 3),
        "max_member_upload_x": round(member_upload / size, 3),
        "dup_fragments_per_member": round(duplicates.count / n, 3),
        "wire_x": round(sum(sent.values()) / (size * n), 3),
        "connections_after": connections,
        "wall_s": round(transmission_wall, 2),
        "peak_rss_mb": peak_rss_mb(),
    }
    details = {
        "setup_wall_s": round(setup_wall, 1),
        "setup_settled_s": round(settled_setup_at, 1),
        "members_committed": len(committed),
        "members_with_wrong_data": len(wrong),
        "owner_report_pending": len(report.pending),
        "report_settled_s": round(settled_at - start, 3) if settled else None,
        "simulated_events": sim.clock.calls_run - events,
        "warnings": len(warnings),
        "first_warning": _text(warnings[0]) if warnings else None,
    }
    return row, details


def _text(event: LogEvent) -> str:
    from twisted.logger import formatEvent

    return formatEvent(event)[:300]
