"""
Tests for ``twistd dspring``: its options, ``makeService``, the installed
dropin, and a real node process.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.identity import FAST_KDF, Identity, PeerID, create_identity
from digitalspring.multicast import DEFAULT_UPLOAD_BUDGET, SpringStrategyPlugin
from digitalspring.node import Node
from digitalspring.storage import StoreLimits
from digitalspring.tap import Options, makeService, store_limits

_TWISTD = "from twisted.scripts.twistd import run; run()"


class _Context:
    """
    What :meth:`SpringStrategyPlugin.budget` reads of a strategy context.
    """

    def __init__(self, local: PeerID, clock: MemoryReactorClock) -> None:
        self.local = local
        self.clock = clock


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        Without options the node uses ~/.dspring and listens on tcp:7655.
        """
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "DSPRING_DIR"})
        options = _parse()
        self.assertEqual(options["data-dir"].path, os.path.expanduser("~/.dspring"))
        self.assertEqual(options["listen"], ["tcp:7655"])
        self.assertEqual(options["bootstrap"], [])

    def test_repeatable(self) -> None:
        """
        --listen and --bootstrap may be given several times.
        """
        peer = str(Identity.from_seed(bytes(32)).peer_id)
        options = _parse(
            "--listen",
            "tcp:1",
            "--listen",
            "tcp:2:interface=127.0.0.1",
            "--bootstrap",
            f"{peer}@tcp:127.0.0.1:1",
            "--bootstrap",
            f"{peer}@tcp:127.0.0.1:2",
        )
        self.assertEqual(options["listen"], ["tcp:1", "tcp:2:interface=127.0.0.1"])
        self.assertEqual(
            [str(b) for b in options["bootstrap"]],
            [f"{peer}@tcp:127.0.0.1:1", f"{peer}@tcp:127.0.0.1:2"],
        )

    def test_bad_values(self) -> None:
        """
        Malformed --listen and --bootstrap values, and contradictory
        passphrase options, are usage errors that say what is wrong.
        """
        for argv, text in [
            (["--listen", "7655"], "TRANSPORT:ADDRESS"),
            (["--bootstrap", "nonsense"], "PEER_ID@"),
            (["--bootstrap", "abc@tcp:127.0.0.1:1"], "56 characters"),
            (["--no-passphrase", "--passphrase-file", "x"], "only one of"),
            (["--passphrase-fd", "3", "--passphrase-credential", "x"], "only one of"),
            (["--passphrase-fd", "-1"], "file descriptor"),
        ]:
            e = self.assertRaises(usage.UsageError, _parse, *argv)
            self.assertIn(text, str(e))

    def test_help_single_spaced(self) -> None:
        """
        Every option's help text is one single-spaced line: the docstrings
        of ``opt_`` methods (``--listen``, ``--bootstrap``) kept their line
        breaks and indentation, which ``--help`` showed as runs of spaces
        ("more in         DATA_DIR/bootstrap.txt").
        """
        docs = Options().docs
        self.assertIn("bootstrap", docs)
        for name, text in docs.items():
            self.assertEqual(text, " ".join(text.split()), f"--{name}")

    def test_dspring_dir(self) -> None:
        """
        ``DSPRING_DIR`` names the data directory when ``--data-dir`` is not
        given, as it does for ``dspring``; ``--data-dir`` wins.
        """
        here = FilePath(self.mktemp())
        self.patch(os, "environ", dict(os.environ, DSPRING_DIR=here.path))
        self.assertEqual(_parse()["data-dir"], here)
        self.assertEqual(_parse("--data-dir", "/elsewhere")["data-dir"].path, "/elsewhere")

    def test_numbers_in_plain_words(self) -> None:
        """
        A number option given something else says so in plain words.
        """
        for argv, text in [
            (["--idle-timeout", "abc"], "--idle-timeout takes a number, not 'abc'"),
            (["--dht-difficulty", "1.5"], "--dht-difficulty takes a whole number, not '1.5'"),
            (["--passphrase-fd", "x"], "--passphrase-fd takes a whole number, not 'x'"),
        ]:
            e = self.assertRaises(usage.UsageError, _parse, *argv)
            self.assertEqual(str(e), text)

    def test_upload_budget(self) -> None:
        """
        --upload-budget is a rate in bytes per second, 1.25 MB/s (10 Mbit/s)
        by default, with k, M or G for thousands, millions, billions; what
        is not a positive finite rate is a usage error naming the option.
        """
        self.assertEqual(_parse()["upload-budget"], DEFAULT_UPLOAD_BUDGET)
        self.assertEqual(DEFAULT_UPLOAD_BUDGET, 1_250_000)
        for text, rate in [("500000", 500_000), ("500k", 500_000), ("1.5M", 1_500_000)]:
            self.assertEqual(_parse("--upload-budget", text)["upload-budget"], rate)
        for text in ["0", "-1k", "abc", "1.5X", "M", "inf", "nan", ""]:
            e = self.assertRaises(usage.UsageError, _parse, "--upload-budget", text)
            self.assertIn("--upload-budget", str(e))
            self.assertIn("bytes per second", str(e))

    def test_mailbox(self) -> None:
        """
        ``--mailbox`` makes the node serve as a mailbox, with quotas per
        group, per owner and in all (sizes with k, M or G), which its store
        enforces; the quotas without ``--mailbox``, or a size that is none,
        are usage errors naming the option.
        """
        options = _parse()
        self.assertFalse(options["mailbox"])
        self.assertEqual(store_limits(options), StoreLimits())
        options = _parse(
            "--mailbox",
            "--mailbox-quota",
            "2G",
            "--mailbox-group-quota",
            "100M",
            "--mailbox-owner-quota",
            "500000k",
        )
        self.assertEqual(
            store_limits(options),
            StoreLimits(
                mailbox_bytes_total=2_000_000_000,
                mailbox_bytes_per_group=100_000_000,
                mailbox_bytes_per_owner=500_000_000,
            ),
        )
        e = self.assertRaises(usage.UsageError, _parse, "--mailbox-quota", "1G")
        self.assertIn("--mailbox-quota is for a node run with --mailbox", str(e))
        for text in ["0", "abc", "-1M", "inf"]:
            e = self.assertRaises(usage.UsageError, _parse, "--mailbox", "--mailbox-quota", text)
            self.assertIn("--mailbox-quota", str(e))
            self.assertIn("size in bytes", str(e))


class TwistdUsageTests(SynchronousTestCase):
    def test_one_line_usage_error(self) -> None:
        """
        A bad option to ``twistd dspring`` is one line saying what is wrong
        and one pointing at ``--help`` (twistd printed its whole help text
        first), with exit status 1.
        """
        for argv, text in [
            (["--listen", "7655"], "bad --listen value"),
            (["--bogus"], "option --bogus not recognized"),
            (["--idle-timeout", "abc"], "--idle-timeout takes a number"),
        ]:
            result = subprocess.run(
                [sys.executable, "-c", _TWISTD, "-n", "dspring", *argv],
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertEqual(result.stdout, "")
            lines = result.stderr.splitlines()
            self.assertEqual(len(lines), 2, result.stderr)
            self.assertTrue(lines[0].startswith("twistd dspring: "), lines[0])
            self.assertIn(text, lines[0])
            self.assertEqual(lines[1], "(see 'twistd dspring --help' for every option)")

    def test_bad_addresses_before_anything(self) -> None:
        """
        A --listen, --bootstrap or --advertise value its transport cannot
        read is refused by ``twistd dspring`` in one line, with exit status
        1, before anything starts: the data directory is not made, so no
        identity.key or dht-*.json is left behind.  ``--listen tcp:77o1``
        was found only by the tcp transport once the reactor ran.
        """
        peer = str(Identity.from_seed(bytes(32)).peer_id)
        for argv, text in [
            (["--listen", "tcp:77o1"], "'77o1' is not a port number"),
            (["--listen", "tcp:7655:bogus=1"], "bad tcp listening description"),
            (["--listen", "tor:77o1"], "bad tor listening description"),
            (["--bootstrap", f"{peer}@tcp:localhost:77o2"], "bad tcp address"),
            (["--bootstrap", f"{peer}@tpc:127.0.0.1:7702"], "unknown transport 'tpc'"),
            (["--advertise", "not a host"], "tcp option 'advertise'"),
        ]:
            data_dir = FilePath(self.mktemp())
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _TWISTD,
                    "-n",
                    "--pidfile=",
                    "dspring",
                    "--data-dir",
                    data_dir.path,
                    "--no-passphrase",
                    *argv,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual(result.returncode, 1, result.stderr)
            lines = result.stderr.splitlines()
            self.assertEqual(len(lines), 2, result.stderr)
            self.assertIn(text, lines[0])
            self.assertFalse(data_dir.exists(), argv)


class MakeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = FilePath(self.mktemp())

    def test_creates_identity(self) -> None:
        """
        makeService with --no-passphrase creates an identity and builds a
        Node with tcp among its transports, without starting anything.
        """
        reactor = MemoryReactorClock()
        node = makeService(_parse("--data-dir", self.data_dir.path, "--no-passphrase"), reactor)
        self.assertIsInstance(node, Node)
        assert isinstance(node, Node) and node.lock is not None
        self.addCleanup(node.lock.release)
        self.assertIn("tcp", node.transports)
        self.assertEqual(reactor.tcpServers, [])
        self.assertTrue(self.data_dir.child("identity.key").exists())

    def test_upload_budget_reaches_spring(self) -> None:
        """
        The node built from ``--upload-budget 300k`` runs ``spring`` with
        that budget (its strategies are the installed ones, unicast among
        them), so each of its spring strategies uploads at most 300,000
        bytes/s.
        """
        reactor = MemoryReactorClock()
        node = makeService(
            _parse("--data-dir", self.data_dir.path, "--no-passphrase", "--upload-budget", "300k"),
            reactor,
        )
        assert isinstance(node, Node) and node.lock is not None
        self.addCleanup(node.lock.release)
        assert node.strategies is not None
        self.assertIn("unicast", node.strategies)
        spring = node.strategies["spring"]
        assert isinstance(spring, SpringStrategyPlugin)
        self.assertEqual(spring.upload_budget, 300_000)
        context = _Context(node.peer_id, reactor)
        self.assertEqual(spring.budget(context).rate, 300_000)

    def test_mailbox_reaches_the_node(self) -> None:
        """
        The node built from ``--mailbox`` serves as one with the quotas of
        its options; without it, it serves none.
        """
        for argv, limits in (
            ((), None),
            (
                ("--mailbox", "--mailbox-group-quota", "1M"),
                StoreLimits(mailbox_bytes_per_group=1_000_000),
            ),
        ):
            data_dir = FilePath(self.mktemp())
            node = makeService(
                _parse("--data-dir", data_dir.path, "--no-passphrase", *argv),
                MemoryReactorClock(),
            )
            assert isinstance(node, Node) and node.lock is not None
            self.addCleanup(node.lock.release)
            self.assertEqual(node.mailbox, limits)

    def test_retry_interval_reaches_the_node(self) -> None:
        """
        ``--retry-interval`` is the longest wait between two tries of a
        peer the node cannot reach, a day unless told; what is not a number
        of seconds above 0 is a usage error naming the option.
        """
        self.assertEqual(_parse()["retry-interval"], 86400.0)
        node = makeService(
            _parse("--data-dir", self.data_dir.path, "--no-passphrase", "--retry-interval", "600"),
            MemoryReactorClock(),
        )
        assert isinstance(node, Node) and node.lock is not None
        self.addCleanup(node.lock.release)
        self.assertEqual(node.retry_interval, 600.0)
        for text in ["0", "-5", "abc"]:
            e = self.assertRaises(usage.UsageError, _parse, "--retry-interval", text)
            self.assertIn("--retry-interval takes", str(e))

    def test_passphrase_needed(self) -> None:
        """
        Without any passphrase option, makeService refuses to create an
        identity, with one line of explanation and no traceback.
        """
        e = self.assertRaises(
            SystemExit, makeService, _parse("--data-dir", self.data_dir.path), MemoryReactorClock()
        )
        self.assertIn("--no-passphrase", str(e))
        self.assertFalse(self.data_dir.child("identity.key").exists())

    def test_encrypted(self) -> None:
        """
        An encrypted identity opens with --passphrase-file, and a wrong
        passphrase ends with a one-line error.
        """
        identity = create_identity(self.data_dir, b"right", FAST_KDF)
        good, bad = FilePath(self.mktemp()), FilePath(self.mktemp())
        good.setContent(b"right\n")
        bad.setContent(b"wrong\n")
        node = makeService(
            _parse("--data-dir", self.data_dir.path, "--passphrase-file", good.path),
            MemoryReactorClock(),
        )
        self.assertEqual(node.peer_id, identity.peer_id)
        assert node.lock is not None
        node.lock.release()
        e = self.assertRaises(
            SystemExit,
            makeService,
            _parse("--data-dir", self.data_dir.path, "--passphrase-file", bad.path),
            MemoryReactorClock(),
        )
        self.assertIn("wrong passphrase", str(e))

    def test_unknown_transport(self) -> None:
        """
        Listening on an unknown transport is a usage error naming the
        installed ones, before a data directory is made.
        """
        e = self.assertRaises(
            usage.UsageError,
            _parse,
            "--data-dir",
            self.data_dir.path,
            "--no-passphrase",
            "--listen",
            "carrier:1",
        )
        self.assertIn("unknown transport 'carrier'", str(e))
        self.assertIn("tcp", str(e))
        self.assertFalse(self.data_dir.exists())


class InstalledTests(SynchronousTestCase):
    def _python(self, *argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        # Outside the source tree, with no PYTHONPATH: only what is
        # installed can be found.
        cwd = FilePath(self.mktemp())
        cwd.makedirs()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(
            [sys.executable, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd.path,
            env=env,
            **kwargs,  # type: ignore[call-overload]
        )

    def test_dropin_discovered(self) -> None:
        """
        From a directory outside the source tree, Twisted's plugin system
        finds the ``dspring`` twistd plugin and the built-in transports of
        the installed package.
        """
        result = self._python(
            "-c",
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "from digitalspring.transport import transport_plugins\n"
            "print(sorted(p.tapname for p in getPlugins(IServiceMaker)))\n"
            "print(sorted(transport_plugins()))\n",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        tapnames, transports = result.stdout.splitlines()
        self.assertIn("'dspring'", tapnames)
        self.assertIn("'memory'", transports)
        self.assertIn("'tcp'", transports)

    def test_help(self) -> None:
        """
        ``twistd -n dspring --help`` lists the node's options.
        """
        result = self._python("-c", _TWISTD, "-n", "dspring", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in (
            "--data-dir",
            "--listen",
            "--bootstrap",
            "--passphrase-file",
            "--no-passphrase",
        ):
            self.assertIn(option, result.stdout)


class ProcessTests(SynchronousTestCase):
    """
    A real ``twistd -n dspring`` process on 127.0.0.1.
    """

    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()
        self.data_dir = self.workdir.child("node")

    def _twistd(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                _TWISTD,
                "-n",
                "--pidfile",
                self.workdir.child("twistd.pid").path,
                "dspring",
                "--data-dir",
                self.data_dir.path,
                *argv,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.workdir.path,
        )

    def test_start_listen_stop(self) -> None:
        """
        A node started with --no-passphrase creates its identity, logs its
        peer ID and listening address, accepts a TCP connection there, and
        on SIGTERM shuts down cleanly with no traceback (twistd then ends
        itself with the same signal, as a daemon should).
        """
        proc = self._twistd("--no-passphrase", "--listen", "tcp:0:interface=127.0.0.1")
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        port = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"listening on tcp:127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        output = "".join(lines)
        self.assertIsNotNone(port, output)
        peer_ids = re.findall(r"node ([a-z2-7]{56}) starting", output)
        self.assertEqual(len(peer_ids), 1, output)
        PeerID.parse(peer_ids[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        self.assertIn(proc.returncode, (0, -signal.SIGTERM), output + rest)
        self.assertNotIn("Traceback", output + rest)
        self.assertIn("Main loop terminated", rest)
        self.assertIn("Server Shut Down", rest)
        self.assertFalse(self.data_dir.child("control.json").exists())

    def test_refuses_without_passphrase(self) -> None:
        """
        A first start without a passphrase option exits non-zero with a
        clear message, and creates no key file.
        """
        proc = self._twistd()
        output, _ = proc.communicate(timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("--no-passphrase", output)
        self.assertNotIn("Traceback", output)
        self.assertFalse(self.data_dir.child("identity.key").exists())
