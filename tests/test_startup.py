"""
Tests for a node's start: a start that fails ends the node with one line
and a non-zero status (also daemonized), one node per data directory, and
what the node warns about once it listens.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.channel import ConnectionPool
from digitalspring.control import ControlService
from digitalspring.dht import DirectoryChain
from digitalspring.identity import FAST_KDF, Identity, create_identity
from digitalspring.node import DataDirInUse, DataDirLock, ListenFailed, Node
from digitalspring.node._startup import StartupReport
from digitalspring.transport import TCPTransport

from ._nodes import TWISTD, NodeProcess, loopback_address


def _read_pipe(fd: int) -> bytes:
    try:
        return os.read(fd, 200)
    finally:
        os.close(fd)


class DataDirLockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = FilePath(self.mktemp())
        self.data_dir.makedirs()

    def test_second_lock_refused(self) -> None:
        """
        While one lock on a data directory is held (even by this process,
        through another open file), a second is refused with an error
        naming the PID of the holder; once released, it can be taken.
        """
        first = DataDirLock.acquire(self.data_dir)
        self.addCleanup(first.release)
        e = self.assertRaises(DataDirInUse, DataDirLock.acquire, self.data_dir)
        self.assertIn(f"(process {os.getpid()})", str(e))
        self.assertIn(self.data_dir.path, str(e))
        first.release()
        DataDirLock.acquire(self.data_dir).release()

    def test_pid_recorded(self) -> None:
        """
        The lock file holds the PID of the process that holds the lock.
        """
        lock = DataDirLock.acquire(self.data_dir)
        self.addCleanup(lock.release)
        self.assertEqual(lock.path.getContent(), f"{os.getpid()}\n".encode())


class StartupReportTests(SynchronousTestCase):
    """
    What twistd's parent process and the terminal are told about a start.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.ready: Deferred[None] = Deferred()
        self.stderr = io.StringIO()
        self.exits: list[int] = []

    def report(self, config: dict[str, Any] | None) -> StartupReport:
        report = StartupReport(self.reactor, self.ready, config, self.stderr, self.exits.append)
        report.startService()
        return report

    def daemonized(self) -> tuple[dict[str, Any], int]:
        read, write = os.pipe()
        return {"statusPipe": write}, read

    def test_pipe_taken_until_ready(self) -> None:
        """
        Daemonized, the status pipe is taken from twistd's options at start
        (so twistd does not say "0" before the node listens) and "0" is
        written only once the node is ready.
        """
        config, read = self.daemonized()
        self.report(config)
        self.assertIsNone(config["statusPipe"])
        os.set_blocking(read, False)
        self.assertRaises(BlockingIOError, os.read, read, 100)
        self.ready.callback(None)
        os.set_blocking(read, True)
        self.assertEqual(_read_pipe(read), b"0")
        self.assertEqual(self.exits, [])
        self.assertFalse(self.reactor.hasStopped)

    def test_pipe_failure(self) -> None:
        """
        Daemonized, a failed start is written to the status pipe as "1 "
        and the reason (which twistd's parent prints, then exits 1); the
        reactor is stopped and the exit status set to 1.
        """
        config, read = self.daemonized()
        self.report(config)
        self.ready.errback(ListenFailed("cannot listen on tcp:1: Address already in use"))
        self.assertEqual(_read_pipe(read), b"1 cannot listen on tcp:1: Address already in use")
        self.assertEqual(self.exits, [1])
        self.reactor.run()
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(self.stderr.getvalue(), "")

    def test_pipe_message_bounded(self) -> None:
        """
        The message fits the 100 bytes twistd's parent reads.
        """
        config, read = self.daemonized()
        self.report(config)
        self.ready.errback(ListenFailed("x" * 500))
        self.assertEqual(len(_read_pipe(read)), 100)

    def test_stopped_before_ready(self) -> None:
        """
        A node stopped (by a signal) before it is ready tells twistd's parent
        it did not start.
        """
        config, read = self.daemonized()
        report = self.report(config)
        report.stopService()
        self.assertEqual(_read_pipe(read), b"1 dspring: stopped before it started")

    def test_foreground_failure(self) -> None:
        """
        In the foreground a failed start is one line on stderr, then the
        reactor stops and the exit status is 1.
        """
        self.report({"nodaemon": True})
        self.ready.errback(ListenFailed("cannot listen on tcp:77o1: bad port"))
        self.assertEqual(
            self.stderr.getvalue(), "dspring: error: cannot listen on tcp:77o1: bad port\n"
        )
        self.assertEqual(self.exits, [1])
        self.reactor.run()
        self.assertTrue(self.reactor.hasStopped)

    def test_unexpected_failure(self) -> None:
        """
        An error that is not the user's to fix is logged with its traceback
        and reported as a failed start, pointing at the log.
        """
        self.report(None)
        self.ready.errback(Failure(ZeroDivisionError()))
        self.assertIn("see its log", self.stderr.getvalue())
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class UnreachableAddressTests(SynchronousTestCase):
    """
    The warning a node gives when it publishes an address only its own
    machine can reach.
    """

    def node(self, advertise: str | None) -> Node:
        reactor = MemoryReactorClock()
        identity = Identity.from_seed(bytes(32))
        tcp = TCPTransport(reactor, advertise=advertise)
        pool = ConnectionPool(identity, reactor, {"tcp": tcp}, DirectoryChain([]))
        node = Node(identity, reactor, {"tcp": tcp}, ["tcp:7655"], pool)
        node.startService()
        self.addCleanup(node.stopService)
        reactor.advance(0)
        self.successResultOf(node.ready)
        return node

    def test_every_interface_without_advertise(self) -> None:
        """
        A tcp port bound to every interface without --advertise publishes
        127.0.0.1: the node warns once, naming --advertise, and its status
        carries the warning.
        """
        node = self.node(None)
        self.assertEqual(node.addresses(), ["tcp:127.0.0.1:7655"])
        self.assertEqual(len(node.warnings), 1)
        self.assertIn("tcp:7655 listens on every interface", node.warnings[0])
        self.assertIn("publishes tcp:127.0.0.1:7655", node.warnings[0])
        self.assertIn("--advertise", node.warnings[0])
        self.assertEqual(node.status()["warnings"], node.warnings)

    def test_advertised(self) -> None:
        """
        With --advertise the published address is the advertised one, and
        there is nothing to warn about.
        """
        node = self.node("192.0.2.7")
        self.assertEqual(node.addresses(), ["tcp:192.0.2.7:7655"])
        self.assertEqual(node.warnings, [])


def _twistd_argv(workdir: FilePath[str], data_dir: FilePath[str], *argv: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        TWISTD,
        "--pidfile",
        workdir.child("twistd.pid").path,
        "--logfile",
        workdir.child("twistd.log").path,
        "dspring",
        "--data-dir",
        data_dir.path,
        *argv,
    ]


class FailedStartProcessTests(SynchronousTestCase):
    """
    Real ``twistd dspring`` processes whose start fails, in the foreground
    (``-n``) and daemonized.
    """

    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()
        self.data_dir = self.workdir.child("node")
        self.host = loopback_address()

    def run_twistd(self, *argv: str, daemon: bool = False) -> subprocess.CompletedProcess[str]:
        command = _twistd_argv(self.workdir, self.data_dir, "--no-passphrase", *argv)
        if not daemon:
            command.insert(3, "-n")
        result = subprocess.run(command, capture_output=True, text=True, timeout=90)
        self.addCleanup(self.kill_daemon)
        return result

    def kill_daemon(self) -> None:
        pidfile = self.workdir.child("twistd.pid")
        try:
            # A daemon whose start failed removes its pid file, perhaps
            # while this reads it.
            os.kill(int(pidfile.getContent()), signal.SIGTERM)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass

    def busy_port(self) -> int:
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind((self.host, 0))
        busy.listen()
        port: int = busy.getsockname()[1]
        return port

    def assertOneLineFailure(
        self, result: subprocess.CompletedProcess[str], text: str
    ) -> None:
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("dspring: error: "), result.stderr)
        self.assertIn(text, result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_port_in_use(self) -> None:
        """
        ``twistd -n dspring`` on a port in use exits 1 with one line on
        stderr saying so, and removes its control file.
        """
        port = self.busy_port()
        result = self.run_twistd("--listen", f"tcp:{port}:interface={self.host}")
        self.assertOneLineFailure(
            result, f"cannot listen on tcp:{port}:interface={self.host}: Address already in use"
        )
        self.assertFalse(self.data_dir.child("control.json").exists())

    def test_interface_not_here(self) -> None:
        """
        ``--listen`` on an interface address this machine does not have
        (well formed, so only binding finds it) ends the node with one line
        and status 1.  (A malformed one, ``tcp:77o1``, is refused earlier,
        as the options are read: see ``tests.test_tap``.)
        """
        self.assertOneLineFailure(
            self.run_twistd("--listen", "tcp:0:interface=192.0.2.1"),
            "cannot listen on tcp:0:interface=192.0.2.1",
        )

    def test_missing_tor_binary(self) -> None:
        """
        A node told to launch a tor that does not exist exits 1 with one
        line, even when it listens on tcp only.
        """
        result = self.run_twistd(
            "--listen", f"tcp:0:interface={self.host}", "--tor-binary", "/nonexistent"
        )
        self.assertOneLineFailure(result, "cannot use tor: /nonexistent is not an executable")

    def test_no_tor_control(self) -> None:
        """
        ``--onion-only --tor-control`` with no tor at that port exits 1 (it
        exited 0), with one line.
        """
        closed = socket.socket()
        closed.bind((self.host, 0))
        port = closed.getsockname()[1]
        closed.close()
        result = self.run_twistd("--onion-only", "--tor-control", f"tcp:{self.host}:{port}")
        self.assertOneLineFailure(result, "cannot use the tor control port")

    def test_daemon_port_in_use(self) -> None:
        """
        Daemonized (no ``-n``), twistd does not report success before the
        node listens: with the port in use its parent exits 1 and prints the
        reason.
        """
        port = self.busy_port()
        result = self.run_twistd("--listen", f"tcp:{port}:interface={self.host}", daemon=True)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("Address already in use", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_daemon_identity_failure(self) -> None:
        """
        Daemonized, a wrong passphrase ends the start with one line and
        status 1, before twistd forks.
        """
        create_identity(self.data_dir, b"right", FAST_KDF)
        wrong = self.workdir.child("wrong")
        wrong.setContent(b"wrong\n")
        command = _twistd_argv(self.workdir, self.data_dir, "--passphrase-file", wrong.path)
        result = subprocess.run(command, capture_output=True, text=True, timeout=90)
        self.addCleanup(self.kill_daemon)
        self.assertOneLineFailure(result, "wrong passphrase")

    def test_daemon_listening_when_started(self) -> None:
        """
        Daemonized, twistd's parent exits 0 only once the node listens: at
        that moment the control file is written and its port accepts
        connections; the lock file names the daemon, not the parent.
        """
        result = self.run_twistd("--listen", f"tcp:0:interface={self.host}", daemon=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertTrue(self.data_dir.child("control.json").exists())
        log = self.workdir.child("twistd.log").getContent().decode()
        self.assertIn("ready at", log)
        pid = int(self.workdir.child("twistd.pid").getContent())
        self.assertEqual(int(self.data_dir.child("node.lock").getContent()), pid)
        status = subprocess.run(
            [sys.executable, "-m", "digitalspring", "-d", self.data_dir.path, "status"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(status.returncode, 0, status.stderr)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.workdir.child("twistd.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(self.workdir.child("twistd.pid").exists())


class OneNodePerDataDirTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()

    def start(self, name: str) -> NodeProcess:
        node = NodeProcess(self.workdir, name)
        self.addCleanup(node.stop)
        node.wait_ready()
        return node

    def test_second_node_refused(self) -> None:
        """
        A second node on a running node's data directory exits 1 with one
        line naming the first's PID, and leaves the first's control file
        alone: ``dspring status`` still reaches the first node.
        """
        first = self.start("first")
        # Its own pidfile (twistd would refuse a second on the first's), the
        # first's data directory (the last --data-dir counts).
        second = NodeProcess(self.workdir, "second", "--data-dir", first.data_dir.path)
        output, _ = second.proc.communicate(timeout=60)
        self.assertEqual(second.proc.returncode, 1, output)
        self.assertIn(f"another node (process {first.proc.pid}) is running on", output)
        self.assertNotIn("Traceback", output)
        self.assertTrue(first.data_dir.child("control.json").exists())
        status = first.dspring("status")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn(first.peer_id, status.stdout)

    def test_killed_node_does_not_block(self) -> None:
        """
        The lock of a node killed with SIGKILL (lock file and control file
        left behind) does not keep a new node from starting there.
        """
        first = self.start("node")
        first.proc.kill()
        first.proc.wait(timeout=30)
        self.assertTrue(first.data_dir.child("node.lock").exists())
        second = self.start("node")
        self.assertEqual(second.peer_id, first.peer_id)
        status = second.dspring("status")
        self.assertEqual(status.returncode, 0, status.stderr)


class StatusOutputTests(TestCase):
    """
    What ``dspring status`` shows of the addresses a node publishes.
    """

    async def test_published_and_warned(self) -> None:
        """
        ``dspring status`` labels the addresses as the published ones and
        prints the node's warning about an address only this machine can
        reach, naming --advertise.
        """
        from twisted.internet import reactor

        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        warning = (
            "tcp:7655 listens on every interface but publishes tcp:127.0.0.1:7655, which "
            "only this machine can reach: give --advertise HOST, ..."
        )
        status = {
            "peer_id": str(Identity.from_seed(bytes(32)).peer_id),
            "addresses": ["tcp:127.0.0.1:7655"],
            "warnings": [warning],
            "connections": [],
            "network": None,
            "dht": None,
        }

        async def answer(body: dict[str, Any]) -> dict[str, Any]:
            return status

        control = ControlService(reactor, data_dir, {"status": (b"GET", answer)})
        control.startService()
        self.addCleanup(control.stopService)
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "digitalspring", "-d", data_dir.path, "status"],
            env=dict(os.environ),
        )
        self.assertEqual(code, 0, err)
        lines = out.decode().splitlines()
        self.assertIn("addresses:   tcp:127.0.0.1:7655  (published)", lines)
        self.assertIn(f"warning:     {warning}", lines)

    def test_stale_control_file(self) -> None:
        """
        ``dspring status`` for a node killed without cleaning up (its
        control file left, nothing listening) says no node is running,
        in one line.
        """
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        data_dir.child("control.json").setContent(
            json.dumps({"url": f"http://127.0.0.1:{port}/v1/", "token": "00"}).encode()
        )
        result = subprocess.run(
            [sys.executable, "-m", "digitalspring", "-d", data_dir.path, "status"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn(
            f"no node is running for {data_dir.path} (stale control file", result.stderr
        )
