"""
Tests for joining the DHT while running (``dspring dht join``), for what
feeds the routing table (DHT traffic only, never contacts or pings), and
for bootstrap retries: real pools, Noise channels and DHTs on the memory
network and a simulated clock.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.channel import ConnectionPool, Ping
from digitalspring.cli._dht import DhtJoinOptions
from digitalspring.dht import (
    DHTSettings,
    DirectoryChain,
    FindNode,
    JoinFailed,
    JoinPeerUnreachable,
    NotADHTNode,
    WrongPeer,
    bucket_index,
    id_bytes,
    node_id,
)
from digitalspring.dht._simulation import DHTSimulation, SimulatedNode
from digitalspring.directory import AddressBook
from digitalspring.identity import Identity

SETTINGS = DHTSettings(k=4, rpc_timeout=2.0, lookup_deadline=20.0, pow_difficulty=4)


def joined_but(count: int, outsiders: set[int], settings: DHTSettings = SETTINGS) -> DHTSimulation:
    """
    ``count`` nodes, all but ``outsiders`` joined one after the other
    through node 0; the outsiders run but have not joined.
    """
    sim = DHTSimulation(count, settings, seed=count, latency=0.01)
    seed = sim.nodes[0]
    sim.start([0])
    for i, node in enumerate(sim.nodes):
        if i == 0:
            continue
        if i not in outsiders:
            node.dht.bootstrap_contacts = [seed.contact]
        sim.start([i])
        sim.run(node.dht.joined)
    return sim


def failure_of(sim: DHTSimulation, d: Any) -> Exception:
    try:
        sim.run(d)
    except Exception as e:
        return e
    raise AssertionError("no failure")


class JoinTests(SynchronousTestCase):
    def test_join_through_a_peer(self) -> None:
        """
        A node that started without bootstrap peers joins through one while
        running: the peer enters its routing table at the address dialled,
        the join fills the table, the node's record is stored, and a node
        that joined earlier then finds it, with no restart.
        """
        sim = joined_but(12, {11})
        late, entry, earlier = sim.nodes[11], sim.nodes[0], sim.nodes[5]
        self.assertIsNone(sim.run(earlier.dht.find_peer(late.identity.peer_id)).found)
        joined = sim.run(late.dht.join(entry.identity.peer_id, f"memory:{entry.host}:1"))
        self.assertEqual(joined.peer_id, entry.identity.peer_id)
        self.assertEqual(joined.address, f"memory:{entry.host}:1")
        self.assertEqual(joined.contacts, len(late.dht.table))
        self.assertGreater(joined.contacts, 4)
        self.assertGreater(joined.published_to, 0)
        self.assertEqual(late.dht.table.get(entry.identity.peer_id).addresses, (joined.address,))
        found = sim.run(earlier.dht.find_peer(late.identity.peer_id)).found
        self.assertIsNotNone(found)
        self.assertEqual(found.record.addresses, (f"memory:{late.host}:1",))

    def test_join_refreshes_far_buckets(self) -> None:
        """
        Joining looks up a random ID in every bucket farther than the
        closest contact, besides the node's own ID: afterwards every bucket
        with nodes of the network in its range holds at least one of them.
        """
        sim = joined_but(40, {39})
        late, entry = sim.nodes[39], sim.nodes[0]
        sim.run(late.dht.join(entry.identity.peer_id, f"memory:{entry.host}:1"))
        own = late.dht.own_id
        populated = {bucket_index(own, node.dht.own_id) for node in sim.nodes[:39]}
        nearest = min(populated)
        held = {bucket_index(own, c.node_id) for c in late.dht.table.contacts()}
        self.assertEqual(populated - held, set(), f"nearest bucket {nearest}")

    def test_wrong_peer(self) -> None:
        """
        Joining through a peer ID that is not the one at the address fails
        with WrongPeer naming the peer that is there; nothing enters the
        routing table.
        """
        sim = joined_but(4, {3})
        late, there = sim.nodes[3], sim.nodes[1]
        named = sim.nodes[2].identity.peer_id
        error = failure_of(sim, late.dht.join(named, f"memory:{there.host}:1"))
        self.assertIsInstance(error, WrongPeer)
        self.assertEqual(
            str(error),
            f"the peer at memory:{there.host}:1 is {there.identity.peer_id}, not {named}",
        )
        self.assertEqual(len(late.dht.table), 0)

    def test_unreachable(self) -> None:
        """
        Joining through an address where nothing answers fails with
        JoinPeerUnreachable, saying so.
        """
        sim = joined_but(3, {2})
        late, gone = sim.nodes[2], sim.nodes[1]
        sim.network.take_offline(gone.host, refuse=True)
        error = failure_of(sim, late.dht.join(gone.identity.peer_id, f"memory:{gone.host}:1"))
        self.assertIsInstance(error, JoinPeerUnreachable)
        self.assertIn(f"cannot reach {gone.identity.peer_id} at memory:{gone.host}:1", str(error))

    def test_not_a_dht_node(self) -> None:
        """
        A peer that answers the handshake but runs no DHT is said to be no
        DHT node, and is not added to the routing table.
        """
        sim = joined_but(2, {1})
        late = sim.nodes[1]
        sim.network.add_host("plain")
        transport = sim.network.transport("plain")
        plain = Identity.from_seed(b"p" * 32)
        pool = ConnectionPool(plain, sim.clock, {"memory": transport}, DirectoryChain([]))
        transport.listen("1", pool.server_factory)
        pool.startService()  # type: ignore[no-untyped-call]
        error = failure_of(sim, late.dht.join(plain.peer_id, "memory:plain:1"))
        self.assertIsInstance(error, NotADHTNode)
        self.assertIn("does not answer DHT requests", str(error))
        self.assertIsNone(late.dht.table.get(plain.peer_id))

    def test_self_and_unknown_transport(self) -> None:
        """
        A node does not join through itself, nor through an address none of
        its transports dials.
        """
        sim = joined_but(2, {1})
        late, entry = sim.nodes[1], sim.nodes[0]
        error = failure_of(sim, late.dht.join(late.identity.peer_id, f"memory:{late.host}:1"))
        self.assertIsInstance(error, JoinFailed)
        self.assertIn("through itself", str(error))
        error = failure_of(sim, late.dht.join(entry.identity.peer_id, "tcp:127.0.0.1:7655"))
        self.assertIsInstance(error, JoinFailed)
        self.assertIn("no transport that dials tcp:127.0.0.1:7655", str(error))

    def test_joined_peer_retried_when_table_empties(self) -> None:
        """
        The peer joined through is tried again, like a bootstrap peer, when
        every contact is gone and then comes back.
        """
        sim = joined_but(3, {2})
        late, entry = sim.nodes[2], sim.nodes[0]
        sim.run(late.dht.join(entry.identity.peer_id, f"memory:{entry.host}:1"))
        self.assertIn(entry.contact, late.dht.bootstrap_contacts)
        for peer in late.dht.table.contacts():
            for _ in range(5 * SETTINGS.max_failures):
                late.dht.table.failed(peer.peer_id)
        self.assertEqual(len(late.dht.table), 0)
        sim.clock.advance(SETTINGS.maintenance_interval + SETTINGS.rpc_timeout)
        self.assertIsNotNone(late.dht.table.get(entry.identity.peer_id))


class BootstrapRetryTests(SynchronousTestCase):
    def test_bootstrap_peer_back_after_a_long_outage(self) -> None:
        """
        A node whose bootstrap peer was down for 17 minutes joins at the
        first retry after the peer is back, not after the connection pool's
        backoff (which grows to 5 minutes): retries dial bootstrap peers
        themselves.
        """
        sim = DHTSimulation(2, SETTINGS, seed=2, latency=0.01)
        seed, joiner = sim.nodes
        sim.network.take_offline(seed.host, refuse=True)
        sim.start([0])
        joiner.dht.bootstrap_contacts = [seed.contact]
        sim.start([1])
        sim.clock.advance(17 * 60)
        self.assertEqual(len(joiner.dht.table), 0)
        sim.network.bring_online(seed.host)
        sim.clock.advance(SETTINGS.bootstrap_retry + SETTINGS.rpc_timeout)
        self.assertIsNotNone(joiner.dht.table.get(seed.identity.peer_id))


class SocialGraphTests(SynchronousTestCase):
    """
    Peers met through the address book and pings never enter the routing
    table, so no lookup of another node reveals whom the user talks to.
    """

    def setUp(self) -> None:
        # A and B are DHT nodes (B joined through A); C runs, but never joined.
        self.sim = sim = joined_but(3, {2})
        self.a, self.b, self.c = sim.nodes

    def book(self, node: SimulatedNode, *contacts: SimulatedNode) -> None:
        """
        Give ``node`` an address book holding ``contacts``, asked before its
        DHT, as a real node's directory is.
        """
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        book = AddressBook.in_data_dir(data_dir)
        for contact in contacts:
            book.add(contact.identity.peer_id, contact.contact.addresses[0])
        directory = node.pool.directory
        assert isinstance(directory, DirectoryChain)
        directory.directories.insert(0, book)

    def ping(self, source: SimulatedNode, target: SimulatedNode) -> None:
        connection = self.sim.run(source.pool.connect(target.identity.peer_id))
        self.sim.run(connection.callRemote(Ping, data=b"hello"))

    def test_contact_pinged_is_not_served(self) -> None:
        """
        A pings its contact C, and C pings A back (an inbound connection
        from a contact): C is in neither routing table, and B, looking C up
        through A, gets neither C's record nor C as a contact from A.
        """
        a, b, c = self.a, self.b, self.c
        self.book(a, c)
        self.book(c, a)
        self.ping(a, c)
        self.ping(c, a)
        self.assertIsNone(a.dht.table.get(c.identity.peer_id))
        self.assertIsNone(c.dht.table.get(a.identity.peer_id))
        self.assertNotIn(str(c.identity.peer_id), a.dht.status()["known_peers"])
        key = id_bytes(node_id(c.identity.peer_id))
        connection = self.sim.run(b.pool.connect(a.identity.peer_id))
        answer = self.sim.run(connection.callRemote(FindNode, key=key, origin=()))
        self.assertNotIn(c.identity.peer_id, [contact.peer_id for contact in answer["contacts"]])
        result = self.sim.run(b.dht.find_peer(c.identity.peer_id))
        self.assertIsNone(result.found)
        self.assertNotIn(c.identity.peer_id, [hop.peer_id for hop in result.path])

    def test_joined_peer_is_served(self) -> None:
        """
        The same C, once it joins through A with ``dht join``, is a DHT node:
        A names it, and B finds it.
        """
        a, b, c = self.a, self.b, self.c
        self.book(a, c)
        self.ping(a, c)
        self.sim.run(c.dht.join(a.identity.peer_id, a.contact.addresses[0]))
        self.assertIsNotNone(a.dht.table.get(c.identity.peer_id))
        self.assertIsNotNone(self.sim.run(b.dht.find_peer(c.identity.peer_id)).found)


class JoinCommandTests(SynchronousTestCase):
    PEER = str(Identity.from_seed(b"j" * 32).peer_id)

    def test_forms(self) -> None:
        """
        ``dspring dht join`` takes PEER_ID@TRANSPORT:ADDRESS, as
        --bootstrap does, or the two apart.
        """
        for argv in ([f"{self.PEER}@tcp:127.0.0.1:7655"], [self.PEER, "tcp:127.0.0.1:7655"]):
            options = DhtJoinOptions()
            options.parseOptions(argv)
            self.assertEqual(str(options["peer"]), self.PEER)
            self.assertEqual(options["address"], "tcp:127.0.0.1:7655")

    def test_bad_forms(self) -> None:
        """
        A missing address, a bad peer ID or an address the transport would
        not read is a usage error saying which.
        """
        cases = [
            ([self.PEER], "is not of the form PEER_ID@TRANSPORT:ADDRESS"),
            (["nope@tcp:127.0.0.1:7655"], "nope"),
            ([f"{self.PEER}@tcp:127.0.0.1:77o5"], "77o5"),
        ]
        for argv, message in cases:
            with self.assertRaises(usage.UsageError) as raised:
                DhtJoinOptions().parseOptions(argv)
            self.assertIn(message, str(raised.exception))
