"""
Tests for ``dspring stop``: the node of a data directory stopped, and
waited for until its lock is free.
"""

from __future__ import annotations

import io
import subprocess
import sys

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.cli import main
from digitalspring.cli._stop import NoNodeRunning, stop_node
from digitalspring.errors import DigitalSpringError
from digitalspring.node import DataDirLock

from ._nodes import NodeProcess

#: Holds the data directory's lock as a node does, says so, and on SIGTERM
#: takes a while before it exits (a node closing its store), or, given
#: "ignore", ignores SIGTERM.
_HOLDER = """
import signal, sys, time
from twisted.python.filepath import FilePath
from digitalspring.node import DataDirLock
lock = DataDirLock.acquire(FilePath(sys.argv[1]))
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    def slow_exit(number, frame):
        time.sleep(0.5)
        sys.exit(0)
    signal.signal(signal.SIGTERM, slow_exit)
print("locked", flush=True)
while True:
    time.sleep(1)
"""


class StopTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = FilePath(self.mktemp())
        self.data_dir.makedirs()

    def holder(self, how: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, self.data_dir.path, how],
            stdout=subprocess.PIPE,
            text=True,
        )

        def kill() -> None:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

        self.addCleanup(kill)
        assert proc.stdout is not None
        self.assertEqual(proc.stdout.readline(), "locked\n")
        return proc

    def test_waits_until_stopped(self) -> None:
        """
        ``stop_node`` signals the process named in the lock file and
        returns only once it has ended: its lock is free at once, though
        the process took half a second to exit.
        """
        proc = self.holder("exit")
        self.assertEqual(stop_node(self.data_dir, 30), proc.pid)
        self.assertEqual(proc.poll(), 0)
        DataDirLock.acquire(self.data_dir).release()

    def test_no_node(self) -> None:
        """
        With no node on the data directory (no lock file, or a lock file
        nobody holds, as a stopped node leaves), ``dspring stop`` says so
        in one line and exits 1.
        """
        self.assertRaises(NoNodeRunning, stop_node, self.data_dir, 1)
        DataDirLock.acquire(self.data_dir).release()
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["--data-dir", self.data_dir.path, "stop"], out, err), 1)
        self.assertEqual(
            err.getvalue(), f"dspring: error: no node is running on {self.data_dir.path}\n"
        )

    def test_gives_up(self) -> None:
        """
        A node that does not stop is waited for ``timeout`` seconds, then
        named in the error.
        """
        proc = self.holder("ignore")
        clock = [0.0]
        error = self.assertRaises(
            DigitalSpringError,
            stop_node,
            self.data_dir,
            5,
            sleep=lambda seconds: clock.__setitem__(0, clock[0] + seconds),
            now=lambda: clock[0],
        )
        self.assertIn(f"(process {proc.pid}) is still running 5 s after", str(error))
        self.assertIsNone(proc.poll())

    def test_bad_timeout(self) -> None:
        """
        ``--timeout`` takes a positive number of seconds: anything else is
        a usage error.
        """
        for value in ("soon", "0"):
            err = io.StringIO()
            status = main(
                ["-d", self.data_dir.path, "stop", "--timeout", value], io.StringIO(), err
            )
            self.assertEqual(status, 2, err.getvalue())
            self.assertIn("--timeout takes a number of seconds", err.getvalue())

    def test_real_node(self) -> None:
        """
        ``dspring stop`` stops a real ``twistd -n dspring`` process, which
        has shut down cleanly when it returns (twistd then ends itself with
        the signal it got, hence -15), and says which process it stopped.
        """
        node = NodeProcess(FilePath(self.mktemp()), "a")
        self.addCleanup(node.stop)
        node.wait_ready()
        stopped = node.dspring("stop")
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(
            stopped.stdout,
            f"stopped the node on {node.data_dir.path} (process {node.proc.pid})\n",
        )
        self.assertEqual(node.proc.poll(), -15)
        self.assertIn("Server Shut Down.", node.stop())
