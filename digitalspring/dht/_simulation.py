# -*- test-case-name: tests.test_dht_network -*-
"""
Many DHT nodes in one process: real pools, Noise channels and DHT code on
the memory network and a simulated clock, for tests and benchmarks.

Nodes can be built into a network the way a real one grows (each starts
with bootstrap peers and joins through them: :meth:`DHTSimulation.join`),
or have their tables filled directly (:meth:`DHTSimulation.fill_tables`);
they can leave for good (:meth:`DHTSimulation.leave`) and new ones be
added at any time, for simulations with churn.

With ``requests_only``, the nodes' pools are the lighter stand-ins of
:mod:`digitalspring.dht._requestnet` (the same DHT code, its requests
carried as AMP boxes without Noise or a byte stream), for simulations of
thousands of nodes.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..channel import ConnectionPool
from ..identity import Identity
from ..transport import MemoryNetwork, MemoryTransport, SimulatedClock
from ._dht import DHT, DHTSettings
from ._directory import DHTDirectory, DirectoryChain
from ._requestnet import LightPool, RequestNetwork
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
    #: ``None`` on a :class:`~digitalspring.dht._requestnet.RequestNetwork`.
    transport: MemoryTransport | None
    pool: ConnectionPool | LightPool
    dht: DHT

    @property
    def contact(self) -> Contact:
        return Contact(self.identity.peer_id, (f"memory:{self.host}:{PORT}",))


def ring_latency(low: float = 0.005, high: float = 0.105) -> Callable[[str, str], float]:
    """
    One-way latencies from ``low`` to ``high`` seconds: each host sits on a
    ring (by a hash of its name), and latency grows with the distance around
    it, so nearby hosts are near each other too.  Hosts added later get
    their place when they first send.
    """
    ring: dict[str, float] = {}
    span = 2 * (high - low)

    def place(name: str) -> float:
        where = ring[name] = (zlib.crc32(name.encode()) & 0xFFFF) / 0x10000
        return where

    def latency(source: str, target: str) -> float:
        a = ring.get(source)
        b = ring.get(target)
        d = abs((place(source) if a is None else a) - (place(target) if b is None else b))
        return low + span * min(d, 1 - d)

    return latency


class DHTSimulation:
    """
    ``count`` DHT nodes, each with its own identity, connection pool and
    DHT, listening on ``memory:nN:1``.  Each resolves peers through its own
    DHT.  More can be added, and nodes can leave for good, as in a network
    with churn.

    :param seed: makes identities and random choices reproducible.
    :param latency: the network's one-way latency (see
        :class:`~digitalspring.transport.MemoryNetwork`); by default
        :func:`ring_latency`'s 5 to 105 ms.
    :param loss: the chance that a chunk is lost on its way (it arrives one
        retransmission timeout later).
    :param idle_timeout: the pools' idle timeout: short, so that a large
        simulation does not keep every connection it ever opened.
    :param connect_timeout: how long the memory transport waits for an
        unreachable host.
    :param requests_only: whether the nodes' requests travel on a
        :class:`~digitalspring.dht._requestnet.RequestNetwork` instead of
        real pools on the memory network.
    :param codecs: on a request network, whether requests travel through
        their commands' AMP codecs rather than as Python objects.
    :ivar dead: the indices of the nodes that are off the network.
    """

    def __init__(
        self,
        count: int,
        settings: DHTSettings | None = None,
        seed: int = 0,
        latency: float | Callable[[str, str], float] | None = None,
        idle_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        loss: float = 0.0,
        requests_only: bool = False,
        codecs: bool = False,
    ) -> None:
        self.clock = SimulatedClock()
        self.random = random.Random(seed)  # noqa: S311 (a simulation)
        self.seed = seed
        if latency is None:
            latency = ring_latency()
        self.network = MemoryNetwork(self.clock, latency=latency, loss=loss, seed=seed)
        self.requests: RequestNetwork | None = None
        if requests_only:
            self.requests = RequestNetwork(
                self.clock,
                self.network.latency,
                loss,
                random.Random(f"{seed}/requests"),  # noqa: S311 (a simulation)
                idle_timeout=idle_timeout,
                connect_timeout=connect_timeout,
                codecs=codecs,
            )
        self.settings = settings or DHTSettings()
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.nodes: list[SimulatedNode] = []
        self.dead: set[int] = set()
        for _ in range(count):
            self.add_node()

    def add_node(self) -> int:
        """
        Make one more node, listening but not started, on a host of its
        own; its identity depends only on the seed and its index.

        :returns: its index in :attr:`nodes`.
        """
        i = len(self.nodes)
        name = f"n{i}"
        identity = Identity.from_seed(
            hashlib.blake2b(f"{self.seed}/{i}".encode(), digest_size=32).digest()
        )
        if self.requests is not None:
            light = self.requests.add_host(name, identity)
            dht = DHT(light, self.settings, random=self._random_for(i))
            self.nodes.append(SimulatedNode(name, identity, None, light, dht))
            return i
        self.network.add_host(name)
        transport = self.network.transport(name, connect_timeout=self.connect_timeout)
        directory = DirectoryChain([])
        pool = ConnectionPool(
            identity,
            self.clock,
            {"memory": transport},
            directory,
            idle_timeout=self.idle_timeout,
        )
        dht = DHT(pool, self.settings, random=self._random_for(i))
        directory.directories.append(DHTDirectory(dht))
        transport.listen(str(PORT), pool.server_factory)
        self.nodes.append(SimulatedNode(name, identity, transport, pool, dht))
        return i

    def _random_for(self, i: int) -> random.Random:
        # Each node draws from its own generator, so that one node's draws
        # do not shift another's.
        return random.Random(f"{self.seed}/{i}/dht")  # noqa: S311 (a simulation)

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
        range (all of them where there are fewer), as if long seen, without
        a single request: a quick start where how the tables came to be
        does not matter.
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

    def join(self, i: int, through: Sequence[int]) -> Deferred[None]:
        """
        Start node ``i`` with the nodes ``through`` as its bootstrap peers:
        it joins as a real node does (it pings them, then looks up its own
        ID), and its upkeep runs from then on.

        :returns: its ``joined`` Deferred.
        """
        node = self.nodes[i]
        node.dht.bootstrap_contacts = [self.nodes[j].contact for j in through]
        self.start([i])
        return node.dht.joined

    def leave(self, i: int) -> None:
        """
        Node ``i`` leaves the network for good, without a goodbye, as most
        peers do: its host drops off the network (its connections are lost
        on both ends, and dialling it times out), and its services stop.
        """
        node = self.nodes[i]
        if self.requests is not None:
            self.requests.remove_host(node.host)
        else:
            self.network.remove_host(node.host)
        self.dead.add(i)
        if node.dht.running:
            node.dht.stopService()
        if node.pool.running:
            node.pool.stopService()

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
            if self.requests is not None:
                self.requests.remove_host(self.nodes[i].host)
            else:
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
