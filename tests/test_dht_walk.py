"""
The README's DHT walk, with real ``twistd -n dspring`` processes on
loopback addresses of their own: nodes that find each other through the
DHT alone, and a node that joins it while running, with no restart.
"""

from __future__ import annotations

import re

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.identity import Identity

from ._nodes import NodeProcess


class ReadmeWalkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()

    def start(self, name: str, *extra: str) -> NodeProcess:
        node = NodeProcess(self.workdir, name, *extra)
        self.addCleanup(node.stop)
        node.wait_ready()
        return node

    def id_lines(self, node: NodeProcess) -> list[str]:
        """
        What ``dspring id`` prints for a running node: its peer ID, then
        its ``PEER_ID@ADDRESS`` lines.
        """
        shown = node.dspring("id")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        return shown.stdout.splitlines()

    def test_walk(self) -> None:
        """
        As the README shows: node 1 alone; nodes 2 and 3 started with
        ``--bootstrap`` and node 1's line of ``dspring id``; ``dspring dht
        lookup`` of node 2 on node 3 finds it.  Then the case of the issue:
        node 4 started without bootstrap peers is not found, until
        ``dspring dht join`` on node 4, through node 1, says how many
        contacts its table holds; node 3 then finds it, and nothing was
        restarted.
        """
        node1 = self.start("node1")
        node1_line = self.id_lines(node1)[-1]
        self.assertEqual(node1_line, f"{node1.peer_id}@{node1.address}")
        node2 = self.start("node2", "--bootstrap", node1_line)
        node3 = self.start("node3", "--bootstrap", node1_line)
        node2_id = self.id_lines(node2)[0]
        self.assertEqual(node2_id, node2.peer_id)
        node2.wait_for(r"published peer record \d+ with .* at [1-9]\d* nodes")
        lookup = node3.dspring("dht", "lookup", node2_id)
        self.assertEqual(lookup.returncode, 0, lookup.stdout + lookup.stderr)
        self.assertIn(f"peer ID:   {node2.peer_id}", lookup.stdout)
        self.assertIn(f"addresses: {node2.address}", lookup.stdout)

        node4 = self.start("node4")
        node4_id = self.id_lines(node4)[0]
        lookup = node3.dspring("dht", "lookup", node4_id)
        self.assertEqual(lookup.returncode, 1, lookup.stdout + lookup.stderr)
        self.assertIn("the DHT has no record", lookup.stderr)
        join = node4.dspring("dht", "join", node1_line)
        self.assertEqual(join.returncode, 0, join.stdout + join.stderr + "".join(node4.log))
        joined = re.fullmatch(
            rf"joined the DHT through {node1.peer_id} at {re.escape(node1.address)}: "
            r"(\d+) contacts in the routing table, record stored at (\d+) nodes?\n",
            join.stdout,
        )
        assert joined is not None, join.stdout
        self.assertEqual(joined.group(1), "3")
        self.assertGreaterEqual(int(joined.group(2)), 1)
        lookup = node3.dspring("dht", "lookup", node4_id)
        self.assertEqual(lookup.returncode, 0, lookup.stdout + lookup.stderr)
        self.assertIn(f"addresses: {node4.address}", lookup.stdout)
        for node in (node1, node2, node3, node4):
            self.assertIsNone(node.proc.poll())

    def test_join_errors(self) -> None:
        """
        ``dspring dht join`` with the wrong peer ID for an address says
        which peer is there; with an address where nothing listens, that
        it cannot reach it.  Each is one line on stderr and exit status 1.
        """
        node1, node2 = self.start("node1"), self.start("node2")
        stranger = Identity.from_seed(bytes(range(32))).peer_id
        wrong = node2.dspring("dht", "join", f"{stranger}@{node1.address}")
        self.assertEqual(wrong.returncode, 1, wrong.stdout + wrong.stderr)
        self.assertEqual(
            wrong.stderr.strip(),
            f"dspring: error: the peer at {node1.address} is {node1.peer_id}, not {stranger}",
        )
        itself = node1.dspring("dht", "join", f"{node1.peer_id}@{node1.address}")
        self.assertEqual(itself.returncode, 1, itself.stdout + itself.stderr)
        self.assertIn("does not join the DHT through itself", itself.stderr)
        nowhere = f"tcp:{node1.host}:1"
        gone = node2.dspring("dht", "join", f"{node1.peer_id}@{nowhere}")
        self.assertEqual(gone.returncode, 1, gone.stdout + gone.stderr)
        self.assertEqual(len(gone.stderr.strip().splitlines()), 1, gone.stderr)
        self.assertIn(f"cannot reach {node1.peer_id} at {nowhere}", gone.stderr)
