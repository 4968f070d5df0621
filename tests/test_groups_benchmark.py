"""
``benchmarks/groups.py`` still runs: briefly, at small sizes, from its
command line, ending with its figures as one JSON object.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "groups.py"


class GroupsBenchmarkSmokeTests(SynchronousTestCase):
    def test_small_run(self) -> None:
        """
        A run with 50 groups, 2 idle groups, a 64 KiB publish and 3
        members prints every figure on its last line; the start-up child
        saw every group, idle groups sent 0 bytes, and publishing was
        measured against the AEAD.
        """
        out = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "--groups",
                "50",
                "--members",
                "5",
                "--idle-groups",
                "2",
                "--publish-mib",
                "0.0625",
                "--unicast-members",
                "3",
                "--repeat",
                "2",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        for name in (
            "startup_s",
            "startup_s_empty",
            "rss_mb",
            "publish_MBps",
            "aead_MBps",
            "unicast_1k_ms",
        ):
            self.assertGreater(figures[name], 0, name)
        self.assertEqual(figures["groups"], 50)
        self.assertEqual(figures["idle_bytes_per_group_per_day"], 0)
        self.assertEqual(figures["durability"], "WAL, synchronous=FULL")
        self.assertEqual(set(figures["publish_parts_ms"]), {"pad", "encrypt", "hash", "commit"})
