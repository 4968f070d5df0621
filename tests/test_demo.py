"""
``dspring demo`` run as a user runs it (its real nodes over TCP on
127.0.0.1), what it printed checked against what its nodes hold.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from digitalspring.cli._stop import NoNodeRunning, stop_node
from digitalspring.control import ControlClient
from digitalspring.demo._script import FILE_SIZE, SMALL_FILE_SIZE


def _dspring(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digitalspring", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _gone(pid: int) -> bool:
    """
    Whether process ``pid`` has ended and been reaped (the demo waits for
    each of its nodes).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class DemoTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()
        self.root = self.workdir.child("demo")
        self.summary_file = self.workdir.child("summary.json")

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = json.loads(self.summary_file.getContent())
        return summary

    async def test_keep(self) -> None:
        """
        ``dspring demo --keep`` runs every step and leaves the five nodes
        running.  Its figures are the summary's, and the nodes hold what it
        says: each member every message (bytes whose SHA-256 is the file
        sent's), dave too after its catch-up, which its node counts; the
        mailbox the four messages, and a count of bytes sent at least what
        the demo says it carried.  The owner's web client's login link it
        printed logs a browser in.  The bars of the 2 MiB file were each
        recipient's own count of the fragments it held, up to all of them.
        """
        self.addCleanup(self.stop_all)
        result = _dspring(
            "demo", "--keep", "--dir", self.root.path, "--summary", self.summary_file.path
        )
        out = result.stdout
        self.assertEqual(result.returncode, 0, out + result.stderr)
        summary = self.summary()
        messages = summary["messages"]
        self.assertEqual(
            [(m["kind"], m["size"]) for m in messages],
            [("text", 52), ("file", FILE_SIZE), ("text", 48), ("file", SMALL_FILE_SIZE)],
        )
        for name, size in (("photos.zip", FILE_SIZE), ("menu.pdf", SMALL_FILE_SIZE)):
            data = self.root.child(name).getContent()
            self.assertEqual(len(data), size)
            [sent] = [m for m in messages if m["file_name"] == name]
            self.assertEqual(hashlib.sha256(data).hexdigest(), sent["sha256"])

        # What it printed is what it measured.
        printed = [
            (int(carried.replace(",", "")), int(unicast.replace(",", "")))
            for carried, unicast in re.findall(
                r"alice's link carried ([\d,]+) bytes: .*?needs at least ([\d,]+) bytes",
                out.replace("\n   ", " "),
            )
        ]
        self.assertEqual(printed, [(m["sender_bytes"], m["unicast_bytes"]) for m in messages])
        # The sender's link carried the 2 MiB file about once, less than half
        # of unicast's four copies.
        photos = messages[1]
        self.assertEqual(photos["committed"], ["bob", "box", "carol", "dave"])
        self.assertGreater(photos["sender_bytes"], FILE_SIZE)
        self.assertLess(photos["sender_bytes"], photos["unicast_bytes"] / 2)
        self.assertEqual([m["pending"] for m in messages[2:]], [["dave"], ["dave"]])
        # The bars are each recipient's own count of what it holds, from its
        # first fragment to its last.
        for name in ("bob", "carol", "dave", "box"):
            reported = photos["reported"][name]
            self.assertEqual(reported, sorted(reported), name)
            self.assertLess(reported[0], photos["fragments"], name)
            self.assertEqual(reported[-1], photos["fragments"], name)
        self.assertEqual(messages[3]["reported"]["dave"], [])
        self.assertEqual(set(photos["has_it"]), {"bob", "carol", "dave", "box"})
        self.assertIn("The five nodes keep running (--keep).", out)
        # The owner's web client: its one-time login link logs a browser in.
        login = re.search(r"\n  http://(127\.0\.0\.1:\d+)(/login\?token=\S+)\n", out)
        assert login is not None, out
        web = http.client.HTTPConnection(login.group(1), timeout=30)
        web.request("GET", login.group(2))
        answer = web.getresponse()
        web.close()
        self.assertEqual(answer.status, 303)
        self.assertIn("HttpOnly", answer.getheader("set-cookie", ""))

        # What the nodes hold.
        nodes = summary["nodes"]
        group = summary["group"]
        for name in ("bob", "carol", "dave"):
            node = self.client(nodes[name])
            inbox = (await node.call("inbox", {"to": group}))["messages"]
            self.assertEqual(
                [(m["epoch"], m["index"], m["size"]) for m in inbox],
                [(m["epoch"], m["index"], m["size"]) for m in messages],
                name,
            )
            for sent in messages:
                where = {"group": group, "epoch": sent["epoch"], "index": sent["index"]}
                shown = await node.call("message", where)
                data = (
                    base64.b64decode(shown["data"])
                    if shown["type"] == "file"
                    else shown["text"].encode("utf-8")
                )
                self.assertEqual(hashlib.sha256(data).hexdigest(), sent["sha256"], name)
        catch_up = summary["catch_up"]
        self.assertEqual((catch_up["source"], catch_up["messages"]), ("box", 2))
        self.assertIn(f"its node counts {catch_up['status']['messages']} caught up", out)
        self.assertEqual(catch_up["status"]["messages"], 2)
        box = await self.client(nodes["box"]).call("mailbox-status")
        self.assertEqual(box["messages"], 4)
        self.assertGreater(box["bytes"], FILE_SIZE + SMALL_FILE_SIZE)
        # The mailbox ran throughout: its count covers every figure of it.
        status = await self.client(nodes["box"]).call("status")
        box_sent = sum(m["bytes_sent"]["box"] for m in messages) + catch_up["mailbox_bytes_sent"]
        self.assertGreaterEqual(status["network"]["bytes_sent"], box_sent)
        self.assertGreater(catch_up["mailbox_bytes_sent"], SMALL_FILE_SIZE)

    def client(self, node: dict[str, Any]) -> ControlClient:
        from twisted.internet import reactor

        return ControlClient(reactor, FilePath(node["data_dir"]))

    def stop_all(self) -> None:
        for name in ("alice", "bob", "carol", "dave", "box"):
            data_dir = self.root.child(name).child("data")
            try:
                stop_node(data_dir, 60)
            except NoNodeRunning:
                pass

    def test_clean_exit(self) -> None:
        """
        Without ``--keep`` the demo runs to its end, then stops every node
        process it started (each ended) and removes its directory; the text
        it prints off a terminal has no control characters.
        """
        result = _dspring("demo", "--dir", self.root.path, "--summary", self.summary_file.path)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"The nodes are stopped and {self.root.path} is removed.", result.stdout)
        self.assertFalse(self.root.exists())
        self.assertNotIn("\x1b", result.stdout)
        self.assertRegex(result.stdout, r"\n     dave has it \(\d+\.\d\d s\)\n")
        pids = [pid for each in self.summary()["processes"].values() for pid in each]
        # dave started twice, the owner and two members once, the mailbox once.
        self.assertEqual(len(pids), 6)
        self.assertEqual([pid for pid in pids if not _gone(pid)], [])

    def test_interrupted(self) -> None:
        """
        Ctrl-C (SIGINT) while the demo runs stops its nodes and removes its
        directory; it exits with status 130.
        """
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "digitalspring",
                "demo",
                "--dir",
                self.root.path,
                "--summary",
                self.summary_file.path,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: demo.poll() is None and demo.kill())
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("3. "):
                break
        os.kill(demo.pid, signal.SIGINT)
        rest, errors = demo.communicate(timeout=60)
        self.assertEqual(demo.returncode, 130, "".join(lines) + rest + errors)
        self.assertIn("Interrupted: the nodes are stopped", rest)
        self.assertFalse(self.root.exists())
        pids = [pid for each in self.summary()["processes"].values() for pid in each]
        self.assertEqual(len(pids), 5)
        self.assertEqual([pid for pid in pids if not _gone(pid)], [])
