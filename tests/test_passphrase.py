"""
Tests for the passphrase of a node's key file without a plaintext file:
asked at the terminal, read from a file descriptor, or from a systemd
credential.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

from twisted.internet.testing import MemoryReactorClock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.identity import FAST_KDF, Identity, create_identity, read_key_file
from digitalspring.node import Node
from digitalspring.node._options import BadOption, read_passphrase_fd, read_systemd_credential
from digitalspring.tap import Options, makeService

from ._nodes import TWISTD, loopback_address


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class _NoTerminal(io.StringIO):
    def isatty(self) -> bool:
        return False


class PassphraseSourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = FilePath(self.mktemp())
        self.identity = create_identity(self.data_dir, b"secret", FAST_KDF)
        self.patch(sys, "stdin", _NoTerminal())

    def make(self, *argv: str) -> Node:
        node = makeService(_parse("--data-dir", self.data_dir.path, *argv), MemoryReactorClock())
        assert isinstance(node, Node) and node.lock is not None
        node.lock.release()
        return node

    def test_credential(self) -> None:
        """
        ``--passphrase-credential NAME`` reads the passphrase from
        ``$CREDENTIALS_DIRECTORY/NAME``, where systemd puts a decrypted
        ``LoadCredentialEncrypted=`` for the service alone.
        """
        credentials = FilePath(self.mktemp())
        credentials.makedirs()
        credentials.child("dspring-passphrase").setContent(b"secret")
        self.patch(os, "environ", dict(os.environ, CREDENTIALS_DIRECTORY=credentials.path))
        node = self.make("--passphrase-credential", "dspring-passphrase")
        self.assertEqual(node.peer_id, self.identity.peer_id)

    def test_credential_errors(self) -> None:
        """
        Outside a service with credentials, a missing credential, and a name
        that is a path are each an error that says which.
        """
        self.patch(os, "environ", {k: v for k, v in os.environ.items()
                                   if k != "CREDENTIALS_DIRECTORY"})
        e = self.assertRaises(BadOption, read_systemd_credential, "x")
        self.assertIn("$CREDENTIALS_DIRECTORY is not set", str(e))
        credentials = FilePath(self.mktemp())
        credentials.makedirs()
        self.patch(os, "environ", dict(os.environ, CREDENTIALS_DIRECTORY=credentials.path))
        e = self.assertRaises(BadOption, read_systemd_credential, "missing")
        self.assertIn("cannot read the credential 'missing'", str(e))
        e = self.assertRaises(BadOption, read_systemd_credential, "../identity.key")
        self.assertIn("not a credential name", str(e))

    def test_fd(self) -> None:
        """
        ``--passphrase-fd N`` reads the passphrase's line from a pipe, and
        closes it.
        """
        read, write = os.pipe()
        os.write(write, b"secret\n")
        os.close(write)
        node = self.make("--passphrase-fd", str(read))
        self.assertEqual(node.peer_id, self.identity.peer_id)
        self.assertRaises(OSError, os.fstat, read)

    def test_fd_empty(self) -> None:
        """
        An empty pipe is an error, not an empty passphrase.
        """
        read, write = os.pipe()
        os.close(write)
        e = self.assertRaises(BadOption, read_passphrase_fd, read)
        self.assertIn("is empty", str(e))

    def test_no_terminal(self) -> None:
        """
        With an encrypted key file, no passphrase option and no terminal,
        the node refuses in one line naming every way to give one.
        """
        e = self.assertRaises(SystemExit, self.make)
        message = str(e)
        self.assertEqual(len(message.splitlines()), 1)
        for option in ("--passphrase-file", "--passphrase-fd", "--passphrase-credential"):
            self.assertIn(option, message)
        self.assertIn("no terminal", message)


class TerminalPromptTests(SynchronousTestCase):
    """
    A real ``twistd dspring`` at a terminal (a pseudo-terminal).
    """

    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()
        self.data_dir = self.workdir.child("node")
        self.output = b""

    def spawn(self, *argv: str) -> tuple[int, int]:
        host = loopback_address()
        command = [
            sys.executable,
            "-c",
            TWISTD,
            *argv,
            "--pidfile",
            self.workdir.child("twistd.pid").path,
            "--logfile",
            self.workdir.child("twistd.log").path,
            "dspring",
            "--data-dir",
            self.data_dir.path,
            "--listen",
            f"tcp:0:interface={host}",
        ]
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            os.execv(sys.executable, command)
        self.addCleanup(self.end, pid, fd)
        return pid, fd

    def end(self, pid: int, fd: int) -> None:
        pidfile = self.workdir.child("twistd.pid")
        if pidfile.exists():
            try:
                os.kill(int(pidfile.getContent()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        try:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass  # waited for already
        os.close(fd)

    def expect(self, fd: int, pattern: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.fail(f"no {pattern!r} in {self.output!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal's other end closed
                chunk = b""
            if not chunk:
                self.fail(f"no {pattern!r} in {self.output!r}")
            self.output += chunk

    def test_asks_at_terminal_then_daemonizes(self) -> None:
        """
        ``twistd dspring`` (daemonized) with an encrypted key file and no
        passphrase option asks for the passphrase at the terminal before it
        forks, the echo off, and its parent exits 0 once the node listens.
        """
        identity = create_identity(self.data_dir, b"secret", FAST_KDF)
        pid, fd = self.spawn()
        self.expect(fd, rb"Passphrase of .*identity\.key: ")
        os.write(fd, b"secret\n")
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, self.output)
        self.assertNotIn(b"secret", self.output)
        log = self.workdir.child("twistd.log").getContent().decode()
        self.assertIn(f"node {identity.peer_id} ready", log)

    def test_first_start_asks_twice(self) -> None:
        """
        ``twistd -n dspring`` at a terminal on a fresh data directory asks
        for a new passphrase twice and writes an encrypted key file.
        """
        _, fd = self.spawn("-n")
        self.expect(fd, rb"New passphrase for .*identity\.key: ")
        os.write(fd, b"fresh\n")
        self.expect(fd, rb"\(again\): ")
        os.write(fd, b"fresh\n")
        log = self.workdir.child("twistd.log")
        deadline = time.monotonic() + 60
        while not (log.exists() and b"ready at" in log.getContent()):
            self.assertLess(time.monotonic(), deadline, self.output)
            time.sleep(0.1)
        key = read_key_file(self.data_dir.child("identity.key"))
        self.assertTrue(key.encrypted)
        self.assertIsInstance(key.open(b"fresh"), Identity)


class DaemonizedFdTests(SynchronousTestCase):
    """
    A real daemonized ``twistd dspring`` reading its passphrase on its
    standard input.
    """

    def test_stdin_keeps_log(self) -> None:
        """
        ``--passphrase-fd 0`` with the passphrase piped in: the daemon's log
        file holds the node's own lines.  Closing fd 0 once read let
        twistd's log file take that number, which daemonizing then pointed
        at /dev/null, so the log held only twistd's two start-up lines.
        """
        workdir = FilePath(self.mktemp())
        workdir.makedirs()
        data_dir = workdir.child("node")
        identity = create_identity(data_dir, b"secret", FAST_KDF)
        pidfile = workdir.child("twistd.pid")
        log = workdir.child("twistd.log")
        self.addCleanup(_kill_daemon, pidfile)
        started = subprocess.run(
            [
                sys.executable, "-c", TWISTD,
                "--pidfile", pidfile.path,
                "--logfile", log.path,
                "dspring",
                "--data-dir", data_dir.path,
                "--passphrase-fd", "0",
                "--listen", f"tcp:0:interface={loopback_address()}",
            ],
            input=b"secret\n",
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(started.returncode, 0, started.stderr)
        self.assertIn(f"node {identity.peer_id} ready", log.getContent().decode())


def _kill_daemon(pidfile: FilePath[str]) -> None:
    try:
        os.kill(int(pidfile.getContent()), signal.SIGTERM)
    except (OSError, ValueError):
        pass  # gone already, or never started
