"""
``benchmarks/hostile.py`` still runs: each attack against a real node for
a second, and the whole benchmark, briefly, from its command line.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
SCRIPT = BENCHMARKS / "hostile.py"


def benchmark_modules() -> tuple[ModuleType, ModuleType]:
    """
    ``hostile`` and ``_attacks`` from ``benchmarks/``, which is a directory
    of scripts and not a package: ``hostile`` imports ``_attacks`` by name.
    """
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("hostile"), importlib.import_module("_attacks")


#: What shows that each attack made its move at least once.
EVIDENCE = {
    "amp_box": ("box_bytes",),
    "unread_replies": ("requests_sent",),
    "handshake_flood": ("handshakes_IK", "handshakes_XX"),
    "sybil_origins": ("sybils",),
    "record_flood": ("records_stored", "records_not_kept", "records_failed_"),
    "partial_frames": ("garbage_preambles", "partial_preamble"),
}


class AttackTests(TestCase):
    """
    Every attack, in this process, against one real node.
    """

    timeout = 120

    def setUp(self) -> Deferred[None]:
        self.hostile, self.attacks = benchmark_modules()
        workdir = Path(self.mktemp())
        workdir.mkdir(parents=True)
        self.node = self.hostile.NodeProcess(str(workdir / "node"))
        self.addCleanup(self.node.stop)
        from twisted.internet import reactor

        self.reactor = reactor
        return Deferred.fromCoroutine(self.node.ready(reactor))

    def test_each_attack(self) -> Deferred[None]:
        """
        Each attack, run for a second from an address of its own, connects
        to the node and makes its move (its counts say so), closes all it
        opened, and leaves a node that still answers the legitimate peer's
        pings.
        """
        return Deferred.fromCoroutine(self._each_attack())

    async def _each_attack(self) -> None:
        node = self.node
        pinger = self.attacks.Pinger(
            self.reactor, self.hostile.LEGIT_ADDRESS, node.host, node.port, node.peer_id
        )
        await pinger.connect()
        pinger.start()
        try:
            for index, attack in enumerate(self.attacks.ATTACKS):
                counts: dict[str, Any] = await self.attacks.run_attack(
                    self.reactor,
                    attack,
                    f"127.0.{20 + index}.1",
                    node.host,
                    node.port,
                    node.peer_id,
                    1.0,
                )
                self.assertGreater(counts.get("connections", 0), 0, (attack, counts))
                moves = sum(
                    value
                    for key, value in counts.items()
                    if any(key.startswith(evidence) for evidence in EVIDENCE[attack])
                )
                self.assertGreater(moves, 0, (attack, counts))
                pinger.take()
                await deferLater(self.reactor, 0.3)
                window = pinger.take()
                await window.close()
                self.assertTrue(window.rtts, (attack, window.sent, dict(window.failures)))
        finally:
            await pinger.stop()


class CommandLineTests(SynchronousTestCase):
    """
    The benchmark as it is run.
    """

    def test_short_run(self) -> None:
        """
        ``hostile.py --only partial_frames`` with one attacker for a second
        runs the baseline and the attack on nodes of their own, prints the
        table with a verdict (which a second's run on a busy machine may
        miss), and ends with the JSON line that has the
        issue's fields.
        """
        done = subprocess.run(
            [
                *(sys.executable, str(SCRIPT), "--only", "partial_frames", "--duration", "1"),
                *("--attackers", "1", "--warmup", "0.3", "--settle", "0.2"),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        lines = done.stdout.strip().splitlines()
        report = json.loads(lines[-1])
        figures = report["partial_frames"]
        for field in (
            "rss_growth_mb",
            "legit_ping_success",
            "legit_ping_p99_ms",
            "baseline_ping_p99_ms",
        ):
            self.assertIn(field, figures)
        self.assertGreater(figures["legit_pings_sent"], 0)
        self.assertGreater(figures["attackers"]["connections"], 0)
        self.assertTrue(figures["node_alive"])
        self.assertIn("baseline_ping_p99_ms", report)
        row = [line for line in lines if line.startswith("partial_frames ")]
        self.assertEqual(len(row), 1, done.stdout)
        self.assertRegex(row[0], r"  (met|MISSED: .+)$")
