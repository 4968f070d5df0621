"""
Offline delivery (issue 12): members who were away while a group's
messages went out come back and catch up, from the group's mailboxes, their
neighbours and the owner, through the real node code on the memory network
(``benchmarks/_multicast_sim.py``: every node real, the network and time
simulated, the ``broadband`` profile by default).

How it runs: an owner, ``--members`` members (100) and ``--mailboxes``
mailboxes (2) in one ``spring`` group; once all joined and the set-up
connections went idle, ``--away`` of the members (30 %) go down (their
nodes stopped, as laptops closed); the owner sends ``--messages`` messages
(20) of ``--size`` bytes (64 KiB), one every 10 s; then the members who
were away come back, one at a time at random over a minute, each a node
starting again with its identity and store, which catches up every group it
is a member of.  The owner stays online (its outbox sends them what they
missed too, as it would).

Every member has ``--notify-boxes`` notification boxes (2, nodes serving
with the default proof of work, 16 bits), chosen before it joins, so the
owners learn them from its key bundles.  The owner, not reaching a member
after a message, leaves a notification at each; a member coming back
collects them and catches up the groups they name.

Besides the group, one member that comes back (the *probe*) is a member of
``--other-groups`` other groups (1,000) that had no news, owned by another
node, so that what it contacts for them shows.

Fields (the last line of output is one JSON object):

* ``caught_up_ratio``: members back that committed every message, intact
  and in order, of those away;
* ``catchup_s_median``, ``catchup_s_p99``: from a member's start to its
  last commit (simulated seconds);
* ``bytes_fetched_x``: the bytes a member back downloaded, from its start
  to the end of the run, divided by the bytes it missed (the messages'
  ciphertext), the median over the members back (``_max`` the largest);
* ``groups_contacted_per_member``: for the probe, from its start, the
  groups it made a request for (a catch-up, asking every source it
  reaches; a collection of sealed notices from the group's mailboxes) or
  got a message of, of its 1 + ``--other-groups`` groups: 1 is the target
  (the one with news);
* ``probe_peers_dialled``, ``probe_lookups``: the peers the probe dialled
  from its start, its notification boxes apart (each connection it made),
  and the addresses it looked up for them (the DHT's part; a directory
  here); ``probe_box_dials``: its dials to its boxes;
  ``probe_dials_for_quiet_groups``: to the owner of the quiet groups (their
  only other member);
* ``mailbox_upload_x``: the bytes the busiest mailbox uploaded from the
  first message on (forwarding in transmissions, then serving catch-ups),
  divided by the bytes the members back missed, all together;
* ``wall_s``, ``peak_rss_mb``.

Run ``python benchmarks/offline.py [--members 100] [--other-groups 1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _multicast_sim import (  # noqa: E402
    IDLE_TIMEOUT,
    PROFILES,
    Simulation,
    add_members,
    peak_rss_mb,
    quiet_logs,
    tune_gc,
)
from twisted.internet.defer import Deferred  # noqa: E402

from digitalspring.channel import ConnectionPool  # noqa: E402
from digitalspring.identity import Identity, PeerID  # noqa: E402
from digitalspring.multicast import (  # noqa: E402
    MulticastService,
    ReceivedMessage,
    SpringStrategyPlugin,
)
from digitalspring.multicast._notify import DEFAULT_DEPOSIT_WORK  # noqa: E402
from digitalspring.storage import MemoryStore, StoreLimits  # noqa: E402
from digitalspring.transport._memory import _Flow  # noqa: E402

KIB = 1024
#: Seconds between two messages while members are away.
INTERVAL = 10.0
#: Seconds over which the members who were away come back.
RETURN_SPREAD = 60.0
#: Simulated seconds after the last return before the run ends.
DEADLINE = 3600.0


class OfflineSimulation(Simulation):
    """
    :class:`Simulation` with mailboxes, nodes that go down and come back,
    and bytes counted per host as they arrive.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.received: dict[str, int] = {}
        self._identities: dict[str, Identity] = {}
        self._stores: dict[str, MemoryStore] = {}
        self._listeners: dict[str, Any] = {}
        self._notify_boxes: dict[str, int | None] = {}

    def node(
        self, name: str, mailbox: StoreLimits | None = None, notify_box: int | None = None
    ) -> MulticastService:
        if name not in self.network.hosts:
            self.network.add_host(
                name,
                upload_bps=self.profile.upload * 8,
                download_bps=self.profile.download * 8,
            )
        transport = self.network.transport(name)
        identity = self._identities.setdefault(name, Identity.generate())
        store = self._stores.setdefault(name, MemoryStore(mailbox))
        pool = ConnectionPool(
            identity, self.clock, {"memory": transport}, self.directory, idle_timeout=IDLE_TIMEOUT
        )
        transport.listen("1", pool.server_factory).addCallback(
            lambda port: self._listeners.__setitem__(name, port)
        )
        self.directory.addresses[identity.peer_id] = [f"memory:{name}:1"]
        service = MulticastService(
            identity,
            self.clock,
            pool,
            store,
            is_contact=lambda peer: True,
            strategies={self.plugin.name: self.plugin},
            mailbox=mailbox,
            notify_box=self._notify_boxes.setdefault(name, notify_box),
        )
        pool.startService()  # type: ignore[no-untyped-call]
        service.startService()
        self.services[name] = service
        return service

    def down(self, name: str) -> None:
        service = self.services[name]
        self.network.take_offline(name, refuse=True)
        service.stopService()
        service.pool.stopService()
        self._listeners.pop(name).stopListening()

    def up(self, name: str) -> MulticastService:
        self.network.bring_online(name)
        return self.node(name)

    def count_arrivals(self) -> None:
        original = _Flow.depart
        received = self.received

        def depart(flow: _Flow, item: Any) -> None:
            if not flow.dead and isinstance(item, bytes | bytearray | memoryview):
                received[flow.target.name] = received.get(flow.target.name, 0) + len(item)
            original(flow, item)

        _Flow.depart = depart  # type: ignore[method-assign,assignment]

    def count_requests(self, peer: PeerID) -> dict[str, Any]:
        """
        From now on, what ``peer`` asks for: the peers it dials, the
        addresses it looks up, and the groups it runs a catch-up of or
        collects sealed notices of.
        """
        found: dict[str, Any] = {"dials": [], "lookups": [], "groups": set()}
        original_dial = ConnectionPool._dial
        original_catch_up = MulticastService.catch_up_group
        original_sealed = MulticastService.collect_sealed

        async def dial(pool: ConnectionPool, peer_id: PeerID, addresses: Any) -> None:
            if pool.identity.peer_id == peer:
                found["dials"].append(peer_id)
                if addresses is None:
                    found["lookups"].append(peer_id)
            await original_dial(pool, peer_id, addresses)

        def catch_up_group(service: MulticastService, group_id: bytes) -> Any:
            if service.local == peer:
                found["groups"].add(group_id)
            return original_catch_up(service, group_id)

        async def collect_sealed(service: MulticastService, group: Any) -> None:
            if service.local == peer:
                found["groups"].add(group.group_id)
            await original_sealed(service, group)

        ConnectionPool._dial = dial  # type: ignore[method-assign,assignment]
        MulticastService.catch_up_group = catch_up_group  # type: ignore[method-assign,assignment]
        MulticastService.collect_sealed = collect_sealed  # type: ignore[method-assign,assignment]
        return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    warnings = quiet_logs()
    began = time.perf_counter()
    rng = random.Random(args.seed)
    sim = OfflineSimulation(PROFILES[args.profile], SpringStrategyPlugin(), args.seed)
    owner = sim.node("owner")
    members = [sim.node(f"m{i}") for i in range(args.members)]
    boxes = [sim.node(f"box{i}", mailbox=StoreLimits()) for i in range(args.mailboxes)]
    notify_boxes = [
        sim.node(f"notify{i}", notify_box=DEFAULT_DEPOSIT_WORK) for i in range(args.notify_boxes)
    ]
    for member in members:
        for notify_box in notify_boxes:
            sim.result(member.add_notify_box(notify_box.local))
    tune_gc()
    group_id: bytes = sim.result(owner.create_group("offline", "spring"))
    sim.result(Deferred.fromCoroutine(add_members(owner, group_id, [m.local for m in members])))
    for box in boxes:
        sim.result(owner.add_member(group_id, box.local, "mailbox"))
    away = sorted(rng.sample(range(args.members), round(args.away * args.members)))
    probe = f"m{away[0]}"
    other_owner = sim.node("other-owner")
    others = []
    for n in range(args.other_groups):
        other = sim.result(other_owner.create_group(f"quiet {n}", "spring"))
        others.append(other)
        sim.result(other_owner.add_member(other, sim.services[probe].local))
        if n % 100 == 99:
            sim.clock.advance(1.0)

    def joined() -> bool:
        states: list[Any] = []
        owner.store.members(group_id).addCallback(states.extend)
        groups: list[Any] = []
        sim.services[probe].store.groups().addCallback(groups.extend)
        registered: list[Any] = []
        for box in notify_boxes:
            box.store.notify_members().addCallback(registered.extend)
        return (
            all(m.status == "active" for m in states)
            and len(groups) == 1 + len(others)
            and len(registered) == len(members) * len(notify_boxes)
        )

    sim.clock.run_until(joined, limit=DEADLINE)
    sim.clock.advance(IDLE_TIMEOUT + 10)
    setup_wall = time.perf_counter() - began

    for i in away:
        sim.down(f"m{i}")
    sizes = []
    before_box = sim.bytes_sent()
    for n in range(args.messages):
        report = sim.result(owner.publish(group_id, os.urandom(args.size), f"{n}.bin"))
        sealed = sim.result(owner.sealed_message(group_id, report.epoch, report.index))
        sizes.append(sum(len(f) for f in sealed.fragments))
        sim.clock.advance(INTERVAL)
    sent_data = [sim.result(owner.history(group_id, None, 1000))]
    expected = [m.data for m in sent_data[0]]
    sim.clock.advance(IDLE_TIMEOUT)

    sim.count_arrivals()
    returns = sorted(rng.uniform(0, RETURN_SPREAD) for _ in away)
    start = sim.clock.seconds()
    back: dict[str, float] = {}
    got: dict[str, list[ReceivedMessage]] = {}
    last: dict[str, float] = {}
    arrived: dict[str, int] = {}
    transmitted: dict[str, set[bytes]] = {}
    wall = time.perf_counter()
    requests: dict[str, Any] = {}
    for i, at in zip(away, returns, strict=True):
        name = f"m{i}"
        sim.clock.advance(max(0.0, start + at - sim.clock.seconds()))
        arrived[name] = sim.received.get(name, 0)
        back[name] = sim.clock.seconds()
        if name == probe:
            requests = sim.count_requests(sim.services[probe].local)
        service = sim.up(name)
        got[name] = []

        def commit(message: ReceivedMessage, name: str = name) -> None:
            got[name].append(message)
            last[name] = sim.clock.seconds()

        service.subscribe(group_id, commit)
        seen: set[bytes] = set()
        transmitted[name] = seen

        def any_group(message: ReceivedMessage, seen: set[bytes] = seen) -> None:
            seen.add(message.group_id)

        service.subscribe(None, any_group)

    def all_back() -> bool:
        return all(len(got[f"m{i}"]) >= len(expected) for i in away)

    sim.clock.run_until(all_back, limit=DEADLINE)
    sim.clock.advance(60)
    transmission_wall = time.perf_counter() - wall
    after_box = sim.bytes_sent()

    caught = [f"m{i}" for i in away if [m.data for m in got[f"m{i}"]] == expected]
    times = sorted(last[name] - back[name] for name in caught)
    missed = sum(sizes)
    fetched = sorted((sim.received.get(f"m{i}", 0) - arrived[f"m{i}"]) / missed for i in away)
    # The groups the probe made a request for (a catch-up, asking every
    # source it reaches; sealed notices at the group's mailboxes), or got a
    # message of.
    asked = requests["groups"] | set(sim.services[probe].caught_up) | transmitted[probe]
    box_ids = {b.local for b in notify_boxes}
    box_upload = max(after_box[f"box{i}"] - before_box[f"box{i}"] for i in range(args.mailboxes))
    missed_by_all = missed * len(away)
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))] if times else None
    row = {
        "profile": args.profile,
        "members": args.members,
        "mailboxes": args.mailboxes,
        "notify_boxes": args.notify_boxes,
        "away": len(away),
        "messages": args.messages,
        "size": args.size,
        "other_groups": args.other_groups,
        "caught_up_ratio": round(len(caught) / len(away), 4),
        "catchup_s_median": round(statistics.median(times), 3) if times else None,
        "catchup_s_p99": None if p99 is None else round(p99, 3),
        "bytes_fetched_x": round(statistics.median(fetched), 3),
        "bytes_fetched_x_max": round(fetched[-1], 3),
        "groups_contacted_per_member": len(asked),
        "probe_peers_dialled": len([p for p in requests["dials"] if p not in box_ids]),
        "probe_lookups": len([p for p in requests["lookups"] if p not in box_ids]),
        "probe_box_dials": len([p for p in requests["dials"] if p in box_ids]),
        "probe_dials_for_quiet_groups": requests["dials"].count(other_owner.local),
        "mailbox_upload_x": round(box_upload / missed_by_all, 3),
        "setup_wall_s": round(setup_wall, 1),
        "wall_s": round(transmission_wall, 2),
        "peak_rss_mb": peak_rss_mb(),
        "warnings": len(warnings),
    }
    row["targets"] = {
        "caught_up_ratio": {"target": 1.0, "met": row["caught_up_ratio"] == 1.0},
        "bytes_fetched_x": {"target": 1.2, "met": row["bytes_fetched_x"] <= 1.2},
        "groups_contacted_per_member": {
            "target": 1,
            "met": row["groups_contacted_per_member"] == 1,
        },
    }
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--mailboxes", type=int, default=2)
    parser.add_argument("--notify-boxes", type=int, default=2)
    parser.add_argument("--away", type=float, default=0.3)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--size", type=int, default=64 * KIB)
    parser.add_argument("--other-groups", type=int, default=1000)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="broadband")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    row = run(args)
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
