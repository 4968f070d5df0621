# -*- test-case-name: tests.test_dht_network -*-
"""
Many DHT nodes in one process: real pools, Noise channels and DHT code on
the memory network and a simulated clock, for tests and benchmarks.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..channel import ConnectionPool
from ..identity import Identity
from ..transport import MemoryNetwork, MemoryTransport, SimulatedClock
from ._dht import DHT, DHTSettings
from ._directory import DHTDirectory, DirectoryChain
from ._routing import Contact

#: The port every simulated node listens on.
PORT = 1


@frozen
class SimulatedNode:
    """
    One node of a :class:`DHTSimulation`.
    """

    host: str
    identity: Identity
    transport: MemoryTransport
    pool: ConnectionPool
    dht: DHT

    @property
    def contact(self) -> Contact:
        return Contact(self.identity.peer_id, (f"memory:{self.host}:{PORT}",))


def ring_latency(names: list[str]) -> Callable[[str, str], float]:
    """
    One-way latencies of 5 to 105 ms: each host sits on a ring (by a hash
    of its name), and latency grows with the distance around it.
    """
    ring = {name: (zlib.crc32(name.encode()) & 0xFFFF) / 0x10000 for name in names}

    def latency(source: str, target: str) -> float:
        d = abs(ring[source] - ring[target])
        return 0.005 + 0.2 * min(d, 1 - d)

    return latency


class DHTSimulation:
    """
    ``count`` DHT nodes, each with its own identity, connection pool and
    DHT, listening on ``memory:nN:1``.  Each resolves peers through its own
    DHT.

    :param seed: makes identities and random choices reproducible.
    :param idle_timeout: the pools' idle timeout: short, so that a large
        simulation does not keep every connection it ever opened.
    :param connect_timeout: how long the memory transport waits for an
        unreachable host.
    """

    def __init__(
        self,
        count: int,
        settings: DHTSettings | None = None,
        seed: int = 0,
        latency: float | Callable[[str, str], float] | None = None,
        idle_timeout: float = 10.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.clock = SimulatedClock()
        self.random = random.Random(seed)  # noqa: S311 (a simulation)
        names = [f"n{i}" for i in range(count)]
        self.network = MemoryNetwork(
            self.clock, latency=ring_latency(names) if latency is None else latency, seed=seed
        )
        self.settings = settings or DHTSettings()
        self.nodes: list[SimulatedNode] = []
        for i, name in enumerate(names):
            self.network.add_host(name)
            transport = self.network.transport(name, connect_timeout=connect_timeout)
            identity = Identity.from_seed(
                hashlib.blake2b(f"{seed}/{i}".encode(), digest_size=32).digest()
            )
            directory = DirectoryChain([])
            pool = ConnectionPool(
                identity, self.clock, {"memory": transport}, directory, idle_timeout=idle_timeout
            )
            dht = DHT(pool, self.settings)
            directory.directories.append(DHTDirectory(dht))
            transport.listen(str(PORT), pool.server_factory)
            self.nodes.append(SimulatedNode(name, identity, transport, pool, dht))
        self.dead: set[int] = set()

    def start(self, nodes: list[int] | None = None) -> None:
        """
        Start the services of the nodes (all by default).
        """
        for i in range(len(self.nodes)) if nodes is None else nodes:
            node = self.nodes[i]
            node.pool.startService()  # type: ignore[no-untyped-call]
            node.dht.startService()

    def fill_tables(self) -> None:
        """
        Give every node the routing table a long-lived network would have
        given it: in each bucket, up to ``k`` random nodes of that bucket's
        range (all of them where there are fewer), as if long seen.  This
        replaces joining one by one, which would cost a simulation of ten
        thousand nodes most of its time.
        """
        k = self.settings.k
        order = sorted(range(len(self.nodes)), key=lambda i: self.nodes[i].dht.own_id)
        ids = [self.nodes[i].dht.own_id for i in order]
        contacts = [node.contact for node in self.nodes]
        now = self.clock.seconds()
        for node in self.nodes:
            own = node.dht.own_id
            table = node.dht.table
            for index in range(255, -1, -1):
                low = ((own >> index) ^ 1) << index
                members = order[bisect_left(ids, low) : bisect_left(ids, low + (1 << index))]
                if len(members) > k:
                    members = self.random.sample(members, k)
                for i in members:
                    table.insert_unchecked(contacts[i], now)
                mine = (own >> index) << index
                if bisect_left(ids, mine + (1 << index)) - bisect_left(ids, mine) <= 1:
                    # Nobody else shares our prefix: the buckets below are empty.
                    break

    def join_all(self, first: int = 0) -> None:
        """
        Let every node join through node ``first``, one after the other, as
        a real network grows.
        """
        seed = self.nodes[first]
        for i, node in enumerate(self.nodes):
            if i != first:
                node.dht.bootstrap_contacts = [seed.contact]
        self.start([first])
        for i in range(len(self.nodes)):
            if i != first:
                self.start([i])
                self.run(self.nodes[i].dht.joined)

    def kill(self, fraction: float, keep: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
        """
        Take a random ``fraction`` of the nodes off the network for good:
        they stop answering, and dialling them times out.

        :param keep: nodes that must stay alive.
        :returns: the indices of the dead nodes.
        """
        alive = [i for i in range(len(self.nodes)) if i not in self.dead and i not in keep]
        victims = set(self.random.sample(alive, int(fraction * len(self.nodes))))
        for i in victims:
            self.network.take_offline(self.nodes[i].host)
        self.dead |= victims
        return victims

    def run(self, d: Deferred[Any], limit: float = 3600.0) -> Any:
        """
        Run the clock until ``d`` fires; its result.

        :raises AssertionError: when it did not fire within ``limit``
            simulated seconds.
        """
        results: list[Any] = []
        d.addBoth(results.append)
        self.clock.run_until(lambda: bool(results), limit=limit)
        assert results, "the simulation went idle before the result"
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]
