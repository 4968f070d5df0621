"""
``benchmarks/offline.py`` (issue 12) runs, small, and reports its fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "offline.py"


class OfflineBenchmarkTests(SynchronousTestCase):
    def _benchmark(self, *argv: str) -> dict[str, Any]:
        result = subprocess.run(
            [
                sys.executable,
                str(BENCHMARK),
                *("--members", "10", "--mailboxes", "1", "--messages", "5"),
                *("--other-groups", "5", *argv),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        row: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return row

    def test_small_run(self) -> None:
        """
        With 10 members (3 away), 1 mailbox and 5 quiet groups, the last
        line is one JSON object with the issue's fields: every member back
        caught up, downloading at most 1.2 times what it missed, and the
        probe, told of news by its notification boxes, contacting its one
        group with news and no dial for the quiet ones.
        """
        row = self._benchmark()
        self.assertEqual((row["away"], row["other_groups"], row["notify_boxes"]), (3, 5, 2))
        self.assertEqual(row["caught_up_ratio"], 1.0)
        self.assertLessEqual(row["bytes_fetched_x"], 1.2)
        self.assertGreater(row["catchup_s_median"], 0)
        self.assertLessEqual(row["catchup_s_median"], row["catchup_s_p99"])
        self.assertEqual(row["groups_contacted_per_member"], 1)
        self.assertEqual(row["probe_dials_for_quiet_groups"], 0)
        self.assertGreater(row["mailbox_upload_x"], 0)
        self.assertEqual(
            set(row["targets"]),
            {"caught_up_ratio", "bytes_fetched_x", "groups_contacted_per_member"},
        )

    def test_without_boxes(self) -> None:
        """
        With ``--notify-boxes 0`` the probe, told of nothing, catches up
        its 6 groups, and every member still catches up.
        """
        row = self._benchmark("--notify-boxes", "0")
        self.assertEqual(row["notify_boxes"], 0)
        self.assertEqual(row["caught_up_ratio"], 1.0)
        self.assertEqual(row["groups_contacted_per_member"], 6)
