"""
Real node processes talking to each other over TCP on 127.0.0.1.
"""

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.identity import Identity

from ._nodes import NodeProcess


class PingTests(SynchronousTestCase):
    def start(self, name: str, *extra: str) -> NodeProcess:
        node = NodeProcess(self.workdir, name, *extra)
        self.addCleanup(node.stop)
        node.wait_ready()
        return node

    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()

    def test_ping_by_peer_id(self) -> None:
        """
        Two ``twistd -n dspring`` processes: after ``dspring contacts add``,
        ``dspring ping PEER_ID`` on one reaches the other through the Noise
        channel and prints round-trip times and statistics like ping(8);
        both nodes then show the connection.
        """
        alice, bob = self.start("alice"), self.start("bob")
        added = alice.dspring("contacts", "add", bob.peer_id, bob.address)
        self.assertEqual(added.returncode, 0, added.stderr)
        ping = alice.dspring("ping", "-c", "3", "-i", "0.2", bob.peer_id)
        self.assertEqual(ping.returncode, 0, ping.stdout + ping.stderr + "".join(alice.log))
        lines = ping.stdout.splitlines()
        self.assertEqual(lines[0], f"PING {bob.peer_id}: 56 data bytes")
        replies = [line for line in lines if line.startswith(f"56 bytes from {bob.peer_id}")]
        self.assertEqual(len(replies), 3, ping.stdout)
        self.assertIn("connected in", replies[0])
        self.assertIn("3 sent, 3 received, 0% packet loss", ping.stdout)
        self.assertRegex(ping.stdout, r"rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms")
        status = bob.dspring("status", "--json")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn(alice.peer_id, status.stdout)

    def test_ping_unknown_peer(self) -> None:
        """
        Pinging a peer with no known address reports the loss and exits
        non-zero with one line of error.
        """
        alice = self.start("alice")
        stranger = str(Identity.from_seed(bytes(range(32))).peer_id)
        ping = alice.dspring("ping", "-c", "1", stranger)
        self.assertEqual(ping.returncode, 1)
        self.assertIn("no address is known", ping.stdout)
        self.assertIn("100% packet loss", ping.stdout)
        self.assertEqual(len(ping.stderr.strip().splitlines()), 1, ping.stderr)

    def test_ping_without_node(self) -> None:
        """
        ``dspring ping`` on a data directory where no node runs says so.
        """
        node = NodeProcess(self.workdir, "idle")
        node.stop()
        ping = node.dspring("ping", "-c", "1", str(Identity.from_seed(bytes(32)).peer_id))
        self.assertEqual(ping.returncode, 1)
        self.assertIn("no node is running", ping.stderr)


class DHTTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()

    def start(self, name: str, *extra: str) -> NodeProcess:
        node = NodeProcess(self.workdir, name, *extra)
        self.addCleanup(node.stop)
        node.wait_ready()
        return node

    def test_ping_through_the_dht(self) -> None:
        """
        Three ``twistd -n dspring`` processes: B alone, A bootstrapping from
        B on the command line, C from B through its bootstrap file.  With
        no address book, ``dspring ping C`` on A reaches C by peer ID alone;
        ``dspring dht lookup C`` on A prints C's signed record and the hops;
        ``dspring status`` on B shows both others in its routing table.
        """
        b = self.start("b")
        a = self.start("a", "--bootstrap", f"{b.peer_id}@{b.address}")
        c_dir = self.workdir.child("c").child("data")
        c_dir.makedirs()
        c_dir.child("bootstrap.txt").setContent(
            f"# the first node\n{b.peer_id}@{b.address}\n".encode()
        )
        c = self.start("c")
        c.wait_for(r"published peer record \d+ with .* at [1-9]\d* nodes")
        ping = a.dspring("ping", "-c", "2", "-i", "0.2", c.peer_id)
        self.assertEqual(ping.returncode, 0, ping.stdout + ping.stderr + "".join(a.log))
        self.assertIn("2 sent, 2 received, 0% packet loss", ping.stdout)
        lookup = a.dspring("dht", "lookup", c.peer_id)
        self.assertEqual(lookup.returncode, 0, lookup.stdout + lookup.stderr)
        self.assertIn(f"peer ID:   {c.peer_id}", lookup.stdout)
        self.assertIn(f"addresses: {c.address}", lookup.stdout)
        self.assertRegex(lookup.stdout, r"lookup: +found in [1-9]\d* hops?,")
        self.assertRegex(lookup.stdout, r"hop 1 +[a-z2-7]{56} +found")
        status = b.dspring("status")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn("DHT:         2 contacts", status.stdout)
        self.assertIn(a.peer_id, status.stdout)
        self.assertIn(c.peer_id, status.stdout)

    def test_lookup_unknown(self) -> None:
        """
        ``dspring dht lookup`` of a peer nobody published says so and exits
        non-zero.
        """
        alone = self.start("alone")
        stranger = str(Identity.from_seed(bytes(range(32))).peer_id)
        lookup = alone.dspring("dht", "lookup", stranger)
        self.assertEqual(lookup.returncode, 1)
        self.assertIn("not found in 0 hops", lookup.stdout)
        self.assertIn("the DHT has no record", lookup.stderr)
