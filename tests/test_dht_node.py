"""
Tests for the DHT inside the node: the service tree twistd builds, the
bootstrap file, and the node's DHT status and lookup.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.channel import ConnectionPool
from digitalspring.dht import DHT, Contact, DHTDirectory, DHTSettings, DirectoryChain
from digitalspring.directory import AddressBook
from digitalspring.identity import Identity
from digitalspring.node import Node, NoDHT
from digitalspring.node._options import BadOption, read_bootstrap_file
from digitalspring.tap import Options, makeService
from digitalspring.transport import MemoryNetwork, SimulatedClock
from digitalspring.transport._clock import drive

B = Identity.from_seed(b"b" * 32).peer_id
C = Identity.from_seed(b"c" * 32).peer_id


class BootstrapFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = FilePath(self.mktemp())
        self.data_dir.makedirs()

    def test_missing(self) -> None:
        """
        Without a bootstrap file there are no bootstrap peers from it.
        """
        self.assertEqual(read_bootstrap_file(self.data_dir), [])

    def test_lines_and_comments(self) -> None:
        """
        One peer a line; blank lines and comments are skipped.
        """
        self.data_dir.child("bootstrap.txt").setContent(
            f"# friends\n\n{B}@tcp:127.0.0.1:7655  # bob\n{C}@memory:c:1\n".encode()
        )
        peers = read_bootstrap_file(self.data_dir)
        self.assertEqual(
            [(p.peer_id, p.address) for p in peers], [(B, "tcp:127.0.0.1:7655"), (C, "memory:c:1")]
        )

    def test_bad_line(self) -> None:
        """
        A bad line is reported with its number.
        """
        self.data_dir.child("bootstrap.txt").setContent(
            f"{B}@tcp:127.0.0.1:1\nnonsense\n".encode()
        )
        e = self.assertRaises(BadOption, read_bootstrap_file, self.data_dir)
        self.assertIn("line 2", str(e))


class MakeServiceTests(SynchronousTestCase):
    def test_node_has_dht(self) -> None:
        """
        twistd's service tree has a DHT with the bootstrap peers of the
        options and of the file, which keeps its state in the data
        directory, and the pool resolves through the address book first,
        then the DHT.
        """
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        data_dir.child("bootstrap.txt").setContent(f"{C}@tcp:127.0.0.1:2\n".encode())
        options = Options()
        options.parseOptions(
            [
                "--data-dir",
                data_dir.path,
                "--no-passphrase",
                "--bootstrap",
                f"{B}@tcp:127.0.0.1:1",
                "--dht-difficulty",
                "12",
            ]
        )
        node = makeService(options, MemoryReactorClock())
        assert isinstance(node, Node) and node.dht is not None
        self.assertEqual(
            [(c.peer_id, c.addresses) for c in node.dht.bootstrap_contacts],
            [(B, ("tcp:127.0.0.1:1",)), (C, ("tcp:127.0.0.1:2",))],
        )
        self.assertEqual(node.dht.settings.pow_difficulty, 12)
        self.assertEqual(node.dht.state_dir, data_dir)
        directory = node.pool.directory
        assert isinstance(directory, DirectoryChain)
        self.assertEqual([type(d) for d in directory.directories], [AddressBook, DHTDirectory])


class NodeTests(SynchronousTestCase):
    def node(self, network: MemoryNetwork, clock: Any, name: str, dht: bool = True) -> Node:
        network.add_host(name)
        identity = Identity.generate()
        transports = {"memory": network.transport(name)}
        directory = DirectoryChain([])
        pool = ConnectionPool(identity, clock, transports, directory)
        service = None
        if dht:
            service = DHT(pool, DHTSettings())
            directory.directories.append(DHTDirectory(service))
        return Node(identity, clock, transports, ["memory:1"], pool, dht=service)

    def test_status_and_lookup(self) -> None:
        """
        A node publishes its record once it listens; another node that
        joined through it shows it in its DHT status and finds its record
        with the lookup that ``dspring dht lookup`` prints.
        """
        clock = SimulatedClock()
        network = MemoryNetwork(clock, latency=0.01)
        b = self.node(network, clock, "b")
        a = self.node(network, clock, "a")
        assert a.dht is not None and b.dht is not None
        a.dht.bootstrap_contacts = [Contact(b.peer_id, ("memory:b:1",))]
        b.startService()
        a.startService()
        self.addCleanup(a.stopService)
        self.addCleanup(b.stopService)
        clock.advance(5)
        status = a.status()
        self.assertEqual(status["dht"]["routing_table"], 1)
        self.assertEqual(status["dht"]["known_peers"], [str(b.peer_id)])
        self.assertEqual(status["dht"]["own_record"]["stored_at"], 1)
        d = Deferred.fromCoroutine(a.dht_lookup(b.peer_id))
        self.assertTrue(drive(clock, d, limit=60))
        answer = self.successResultOf(d)
        self.assertTrue(answer["found"])
        self.assertEqual(answer["record"]["addresses"], ["memory:b:1"])
        self.assertEqual(answer["hops"], 1)
        self.assertEqual(answer["path"][0]["outcome"], "found")

    def test_without_dht(self) -> None:
        """
        A node built without a DHT says so when asked for a lookup.
        """
        clock = SimulatedClock()
        network = MemoryNetwork(clock)
        node = self.node(network, clock, "solo", dht=False)
        self.assertIsNone(node.status()["dht"])
        d = Deferred.fromCoroutine(node.dht_lookup(B))
        self.failureResultOf(d, NoDHT)
