"""
``benchmarks/multicast.py --vs-gossipsub``: a strategy over real TCP on
127.0.0.1, every node in this one process on the real reactor, measured as
the gossipsub anchor (``../shared/anchors/gossipsub/gossip_bench.py``)
measures gossipsub: ``hosts`` nodes (the owner and ``hosts - 1`` members,
as the anchor's publisher and subscribers), ``messages`` messages of
``size`` bytes, stop-and-wait (the next message once every member has the
last one, then ``interval`` seconds), every byte the TCP connections wrote
counted.

Each node listens and dials from an address of its own in 127.0.0.0/8, so
the pools' per-address admission limits see one peer per address, as
between machines.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import abstract, tcp
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from digitalspring.channel import ConnectionPool
from digitalspring.multicast import IMulticastStrategyPlugin, MulticastService, ReceivedMessage
from digitalspring.storage import MemoryStore
from digitalspring.testing._strategy import _Directory
from digitalspring.transport import TCPTransport

#: The most seconds one message may take to reach every member.
DRAIN_TIMEOUT = 60.0


class WireCounter:
    """
    Counts every byte written on a TCP connection of this process, per
    local address (that is, per node).
    """

    def __init__(self) -> None:
        self.by_host: dict[str, int] = {}
        self.counting = False

    def start(self) -> Callable[[], None]:
        """
        Count from now on.

        :returns: a function that puts the original methods back.
        """
        write = abstract.FileDescriptor.write
        write_sequence = abstract.FileDescriptor.writeSequence
        counter = self

        def add(connection: Any, size: int) -> None:
            if counter.counting:
                host = connection.getHost().host
                counter.by_host[host] = counter.by_host.get(host, 0) + size

        def counted_write(connection: Any, data: bytes) -> None:
            add(connection, len(data))
            write(connection, data)

        def counted_write_sequence(connection: Any, data: list[bytes]) -> None:
            add(connection, sum(len(part) for part in data))
            write_sequence(connection, data)

        tcp.Connection.write = counted_write  # type: ignore[method-assign]
        tcp.Connection.writeSequence = counted_write_sequence  # type: ignore[method-assign]

        def restore() -> None:
            del tcp.Connection.write
            del tcp.Connection.writeSequence

        return restore


def _percentile(values: list[float], p: float) -> float:
    """
    The ``p``-th percentile, interpolated as the anchor does.
    """
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(ordered) - 1)
    return ordered[f] + (ordered[c] - ordered[f]) * (k - f)


async def _sleep(reactor: Any, seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def run_tcp(
    reactor: Any,
    plugin: IMulticastStrategyPlugin,
    hosts: int,
    size: int,
    messages: int,
    interval: float = 0.05,
    tail: float = 2.0,
) -> dict[str, Any]:
    """
    Run it; the figures, named as the anchor names its own.
    """
    from _multicast_sim import Duplicates, add_members

    from digitalspring.identity import Identity

    began = time.perf_counter()
    directory = _Directory()
    services: list[MulticastService] = []
    for i in range(hosts):
        address = f"127.0.0.{i + 2}"
        transport = TCPTransport(reactor, source=address)
        identity = Identity.generate()
        pool = ConnectionPool(identity, reactor, {"tcp": transport}, directory)
        await transport.listen(f"0:interface={address}", pool.server_factory)
        directory.addresses[identity.peer_id] = [
            f"tcp:{a}" for a in transport.published_addresses()
        ]
        service = MulticastService(
            identity,
            reactor,
            pool,
            MemoryStore(),
            is_contact=lambda peer: True,
            strategies={plugin.name: plugin},
        )
        pool.startService()  # type: ignore[no-untyped-call]
        service.startService()
        services.append(service)
    owner, members = services[0], services[1:]
    group_id = await owner.create_group("benchmark", plugin.name)
    await add_members(owner, group_id, [m.local for m in members])
    while True:
        states = await owner.store.members(group_id)
        if all(m.status == "active" for m in states):
            break
        await _sleep(reactor, 0.05)
    setup_s = time.perf_counter() - began

    committed: list[dict[int, float]] = [{} for _ in members]
    for k, member in enumerate(members):

        def got(message: ReceivedMessage, k: int = k) -> None:
            committed[k].setdefault(message.index, time.perf_counter())

        member.subscribe(group_id, got)
    duplicates = Duplicates()
    duplicates.start()
    counter = WireCounter()
    restore = counter.start()
    counter.counting = True
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    latencies: list[float] = []
    published: list[int] = []
    for number in range(messages):
        data = number.to_bytes(4, "big") + os.urandom(size - 4)
        sent = time.perf_counter()
        report = await owner.publish(group_id, data, "benchmark.bin")
        index = report.index
        published.append(index)
        deadline = sent + DRAIN_TIMEOUT
        while time.perf_counter() < deadline and not all(index in c for c in committed):
            await _sleep(reactor, 0.005)
        if all(index in c for c in committed):
            latencies.append(max(c[index] for c in committed) - sent)
        await _sleep(reactor, interval)
    await _sleep(reactor, tail)
    counter.counting = False
    restore()
    duplicates.stop()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    got_count = sum(1 for c in committed for index in published if index in c)
    wire = sum(counter.by_host.values())
    owner_host = "127.0.0.2"
    for service in services:
        await service.stopService()
        await service.pool.stopService()
    return {
        "N": hosts,
        "S": size,
        "M": messages,
        "strategy": plugin.name,
        "delivery_ratio": round(got_count / ((hosts - 1) * messages), 4),
        "msgs_complete": len(latencies),
        "t_last_median_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "t_last_p95_ms": round(1000 * _percentile(latencies, 95), 1) if latencies else None,
        "pub_wire_amplification": round(counter.by_host.get(owner_host, 0) / (messages * size), 2),
        "all_hosts_wire_bytes": wire,
        "all_hosts_wire_per_delivered_payload": round(wire / max(1, got_count * size), 2),
        "dup_per_sub_per_msg_mean": round(duplicates.count / ((hosts - 1) * messages), 3),
        "cpu_publish_phase_s": round(
            cpu_after.ru_utime + cpu_after.ru_stime - cpu.ru_utime - cpu.ru_stime, 2
        ),
        "wall_setup_s": round(setup_s, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def tcp_child(plugin: IMulticastStrategyPlugin, hosts: int, size: int, messages: int) -> None:
    """
    In a child process: run on the real reactor and print the figures as
    one JSON line.
    """
    import json

    from _multicast_sim import quiet_logs
    from twisted.internet.task import react

    quiet_logs()

    async def main(reactor: Any) -> None:
        figures = await run_tcp(reactor, plugin, hosts, size, messages)
        print(json.dumps(figures), flush=True)

    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
