"""
Tests for the ``dspring`` command.
"""

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.channel import MAX_PING_DATA
from digitalspring.cli import Options, main
from digitalspring.control import CONTROL_FILE_NAME, ControlService
from digitalspring.identity import Identity, PeerID, load_identity, read_key_file
from digitalspring.node import DataDirLock

STRANGER = str(Identity.from_seed(bytes(range(32))).peer_id)


def _help(argv: Sequence[str]) -> str:
    """
    What ``dspring ARGV --help`` prints.
    """
    out = io.StringIO()
    stdout, sys.stdout = sys.stdout, out
    try:
        Options().parseOptions([*argv, "--help"])
    except SystemExit:
        pass
    finally:
        sys.stdout = stdout
    return out.getvalue()


class CLITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = FilePath(self.mktemp())
        self.pw = self._file("pw", b"secret\n")
        self.backup_pw = self._file("backup-pw", b"backup secret\n")

    def _file(self, name: str, content: bytes) -> str:
        path = FilePath(self.mktemp())
        path.setContent(content)
        return path.path

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = main(["--data-dir", self.data_dir.path, *argv], out, err)
        return status, out.getvalue(), err.getvalue()

    def assertFailsWith(self, argv: Sequence[str], status: int, text: str) -> None:
        code, out, err = self.run_cli(*argv)
        self.assertEqual(code, status, err)
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1 if status == 1 else 2, err)
        self.assertIn(text, err)

    def test_init_and_id(self) -> None:
        """
        ``init`` prints a new peer ID; ``id`` prints the same one without a
        passphrase, and only it on stdout (what ``$(dspring id | tail -n
        1)`` reads): that no node runs, so there are no addresses, goes to
        stderr.
        """
        status, out, err = self.run_cli("init", "--passphrase-file", self.pw)
        self.assertEqual((status, err), (0, ""))
        peer_id = PeerID.parse(out.strip())
        note = io.StringIO()
        self.patch(sys, "stderr", note)
        status, out, err = self.run_cli("id")
        self.assertEqual((status, out, err), (0, f"{peer_id}\n", ""))
        self.assertEqual(
            note.getvalue(),
            f"dspring: no addresses: no node is running for {self.data_dir.path}\n",
        )
        self.assertEqual(load_identity(self.data_dir, b"secret").peer_id, peer_id)

    def test_init_no_passphrase(self) -> None:
        """
        ``init --no-passphrase`` writes an unencrypted key file.
        """
        self.assertEqual(self.run_cli("init", "--no-passphrase")[0], 0)
        self.assertFalse(read_key_file(self.data_dir.child("identity.key")).encrypted)

    def test_init_twice(self) -> None:
        """
        A second ``init`` fails with one line and keeps the first identity.
        """
        _, first, _ = self.run_cli("init", "--no-passphrase")
        self.assertFailsWith(["init", "--no-passphrase"], 1, "exists already")
        self.assertEqual(self.run_cli("id")[1].splitlines()[0], first.strip())

    def test_id_without_identity(self) -> None:
        """
        ``id`` with no identity says how to make one.
        """
        self.assertFailsWith(["id"], 1, "dspring init")

    def test_no_terminal(self) -> None:
        """
        Without a passphrase file and without a terminal, ``init`` says which
        option to give instead of hanging.
        """
        stdin = sys.stdin
        sys.stdin = io.StringIO()
        self.addCleanup(setattr, sys, "stdin", stdin)
        self.assertFailsWith(["init"], 1, "--passphrase-file")

    def test_export_import(self) -> None:
        """
        ``export`` then ``import`` into another data directory restores the
        same peer ID.
        """
        _, peer_id, _ = self.run_cli("init", "--passphrase-file", self.pw)
        backup = FilePath(self.mktemp())
        status, out, err = self.run_cli(
            "export",
            "--passphrase-file",
            self.pw,
            "--backup-passphrase-file",
            self.backup_pw,
            backup.path,
        )
        self.assertEqual((status, err), (0, ""))
        self.assertIn(peer_id.strip(), out)
        self.data_dir = FilePath(self.mktemp())
        status, out, err = self.run_cli(
            "import", "--backup-passphrase-file", self.backup_pw, "--no-passphrase", backup.path
        )
        self.assertEqual((status, out, err), (0, peer_id, ""))
        self.assertEqual(self.run_cli("id")[1].splitlines()[0], peer_id.strip())

    def test_export_wrong_passphrase(self) -> None:
        """
        ``export`` with a wrong passphrase fails in one line and writes
        nothing.
        """
        self.run_cli("init", "--passphrase-file", self.pw)
        backup = FilePath(self.mktemp())
        self.assertFailsWith(
            [
                "export",
                "--passphrase-file",
                self.backup_pw,
                "--backup-passphrase-file",
                self.backup_pw,
                backup.path,
            ],
            1,
            "wrong passphrase",
        )
        self.assertFalse(backup.exists())

    def test_import_refused_under_running_node(self) -> None:
        """
        ``import --force`` while a node holds the data directory's lock is
        refused in one line naming the node's process, before any prompt,
        and leaves the node's key file as it was.
        """
        self.run_cli("init", "--no-passphrase")
        key = self.data_dir.child("identity.key")
        before = key.getContent()
        other = FilePath(self.mktemp())
        self.assertEqual(main(["-d", other.path, "init", "--no-passphrase"], io.StringIO()), 0)
        backup = FilePath(self.mktemp())
        main(
            ["-d", other.path, "export", "--backup-passphrase-file", self.backup_pw, backup.path],
            io.StringIO(),
        )
        lock = DataDirLock.acquire(self.data_dir)
        self.addCleanup(lock.release)
        self.assertFailsWith(
            ["import", "--force", "--no-passphrase", backup.path],
            1,
            f"another node (process {os.getpid()}) is running on {self.data_dir.path}",
        )
        self.assertEqual(key.getContent(), before)
        lock.release()
        status, _, err = self.run_cli(
            "import",
            "--force",
            "--no-passphrase",
            "--backup-passphrase-file",
            self.backup_pw,
            backup.path,
        )
        self.assertEqual((status, err), (0, ""))
        self.assertNotEqual(key.getContent(), before)

    def test_import_foreign_file(self) -> None:
        """
        Importing a file that is not a backup fails in one line.
        """
        self.assertFailsWith(["import", "--no-passphrase", self.pw], 1, "not a Digital Spring")

    def test_import_missing_backup(self) -> None:
        """
        Importing a backup that is not there says there is no such file,
        not how to create an identity.
        """
        missing = FilePath(self.mktemp()).child("nosuch.bak")
        self.assertFailsWith(["import", "--no-passphrase", missing.path], 1, "no such file")
        _, _, err = self.run_cli("import", "--no-passphrase", missing.path)
        self.assertIn(missing.path, err)
        self.assertNotIn("dspring init", err)

    def test_data_dir_after_command(self) -> None:
        """
        ``--data-dir`` (and ``-d``) may follow the command, at any depth.
        """
        out, err = io.StringIO(), io.StringIO()
        status = main(["init", "--data-dir", self.data_dir.path, "--no-passphrase"], out, err)
        self.assertEqual((status, err.getvalue()), (0, ""))
        peer_id = out.getvalue().strip()
        self.assertEqual(load_identity(self.data_dir, None).peer_id, PeerID.parse(peer_id))
        out = io.StringIO()
        status = main(
            ["contacts", "add", "-d", self.data_dir.path, f"{STRANGER}@tcp:127.0.0.1:7702"],
            out,
            err,
        )
        self.assertEqual((status, err.getvalue()), (0, ""))
        self.assertTrue(self.data_dir.child("contacts.json").exists())

    def test_data_dir_from_environment(self) -> None:
        """
        ``DSPRING_DIR`` names the data directory when no ``--data-dir`` is
        given; ``--data-dir`` wins over it.
        """
        self.patch(os, "environ", dict(os.environ, DSPRING_DIR=self.data_dir.path))
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["init", "--no-passphrase"], out, err), 0, err.getvalue())
        self.assertTrue(self.data_dir.child("identity.key").exists())
        other = FilePath(self.mktemp())
        self.assertEqual(main(["init", "--no-passphrase", "-d", other.path], out, err), 0)
        self.assertTrue(other.child("identity.key").exists())

    def test_usage_lines(self) -> None:
        """
        A command's usage line names the command once, with its own
        arguments, and ``dspring --help`` promises only commands that exist.
        """
        self.assertTrue(
            _help(["dht", "lookup"]).startswith(
                "Usage: dspring dht lookup [--json] PEER_ID|NAME\n"
            )
        )
        self.assertTrue(
            _help(["contacts", "add"]).startswith(
                "Usage: dspring contacts add [--name NAME] PEER_ID@TRANSPORT:ADDRESS\n"
            )
        )
        self.assertTrue(_help(["contacts"]).startswith("Usage: dspring contacts add|name"))
        top = _help([])
        self.assertTrue(top.startswith("Usage: dspring [--data-dir DIR] COMMAND"))
        self.assertNotIn("message", top)
        self.assertNotIn("python -m", _help(["contacts"]))

    def test_ping_bad_numbers(self) -> None:
        """
        Numbers that are not numbers are named in plain words, with the
        option and the value.
        """
        for argv, text in [
            (["-c", "abc"], "--count takes a whole number, not 'abc'"),
            (["-i", "soon"], "--interval takes a number, not 'soon'"),
            (["-s", "1.5"], "--size takes a whole number, not '1.5'"),
            (["-c", "-1"], "--count must be 0 or more"),
            (["-i", "0"], "--interval must be more than 0"),
        ]:
            self.assertFailsWith(["ping", *argv, STRANGER], 2, text)
            self.assertNotIn("enforcement", self.run_cli("ping", *argv, STRANGER)[2])

    def test_ping_oversize(self) -> None:
        """
        A ping larger than the channel carries is refused before any
        attempt; the largest it carries is accepted.
        """
        self.assertFailsWith(
            ["ping", "-s", str(MAX_PING_DATA + 1), STRANGER], 2, f"from 0 to {MAX_PING_DATA}"
        )
        options = Options()
        options.parseOptions(["ping", "-s", str(MAX_PING_DATA), STRANGER])
        self.assertEqual(options.subOptions["size"], MAX_PING_DATA)

    def test_ping_self(self) -> None:
        """
        Pinging the node's own peer ID, or a name for it, is refused before
        the first attempt (no ``PING`` line, no node contacted).
        """
        _, own, _ = self.run_cli("init", "--no-passphrase")
        own = own.strip()
        self.assertFailsWith(["ping", own], 1, "this node's own peer ID")
        self.run_cli("contacts", "add", "--name", "me", f"{own}@tcp:127.0.0.1:7702")
        self.assertFailsWith(["ping", "me"], 1, "this node's own peer ID")

    def test_unknown_name(self) -> None:
        """
        Where a peer ID is taken, text that is neither a peer ID nor a
        contact's name fails before the node is contacted.
        """
        for argv in (
            ["ping", "carol"],
            ["dht", "lookup", "carol"],
            ["contacts", "remove", "carol"],
        ):
            self.assertFailsWith(argv, 1, "no contact is named 'carol'")

    def test_contacts(self) -> None:
        """
        ``contacts add`` takes ``PEER_ID@ADDRESS`` (as ``--bootstrap`` does)
        or the peer ID and address apart, and a name; ``contacts name``
        names or renames; ``contacts list`` shows names and
        ``PEER_ID@ADDRESS``; ``contacts remove`` takes a name or a peer ID.
        """
        bob = str(Identity.from_seed(bytes(31) + b"\x01").peer_id)
        code, out, err = self.run_cli(
            "contacts", "add", "--name", "alice", f"{STRANGER}@tcp:127.0.0.1:7702"
        )
        self.assertEqual((code, out, err), (0, f"alice  {STRANGER}@tcp:127.0.0.1:7702\n", ""))
        self.assertEqual(self.run_cli("contacts", "add", bob, "tcp:[::1]:7703")[0], 0)
        self.assertEqual(self.run_cli("contacts", "add", f"{bob}@tcp:localhost:7704")[0], 0)
        self.assertEqual(
            self.run_cli("contacts", "list")[1],
            f"alice  {STRANGER}@tcp:127.0.0.1:7702\n"
            f"-  {bob}@tcp:localhost:7704\n"
            f"-  {bob}@tcp:[::1]:7703\n",
        )
        self.assertEqual(self.run_cli("contacts", "name", bob, "bob")[0], 0)
        self.assertFailsWith(["contacts", "name", "alice", "bob"], 1, "already")
        self.assertEqual(self.run_cli("contacts", "remove", "alice")[0], 0)
        self.assertEqual(self.run_cli("contacts", "remove", bob)[0], 0)
        self.assertEqual(self.run_cli("contacts", "list")[1], "no contacts\n")
        self.assertFailsWith(["contacts", "remove", bob], 1, "not in the contacts")

    def test_contacts_list_empty(self) -> None:
        """
        ``contacts list`` with no contacts says so, rather than print
        nothing.
        """
        self.assertEqual(self.run_cli("contacts", "list"), (0, "no contacts\n", ""))

    def test_contacts_add_checks_address(self) -> None:
        """
        An address is checked when it is added, as its transport will read
        it: a misspelt transport, a misspelt or missing port, and a missing
        peer ID are refused with what is wrong, and nothing is written.
        """
        for address, text in [
            (f"{STRANGER}@tpc:127.0.0.1:7702", "unknown transport 'tpc'"),
            (f"{STRANGER}@tcp:localhost:77o2", "'77o2' is not a port number"),
            (f"{STRANGER}@tcp:127.0.0.1", "is not of the form HOST:PORT"),
            (f"{STRANGER}@tor:example.com:7655", "not an onion address"),
            ("tcp:127.0.0.1:7702", "not of the form PEER_ID@TRANSPORT:ADDRESS"),
        ]:
            self.assertFailsWith(["contacts", "add", address], 2, text)
        self.assertFailsWith(
            ["contacts", "add", "--name", "1st", f"{STRANGER}@tcp:h:1"], 2, "name"
        )
        self.assertFalse(self.data_dir.child("contacts.json").exists())

    def test_usage_errors(self) -> None:
        """
        Unknown commands and conflicting options are usage errors (status 2).
        """
        self.assertFailsWith(["frobnicate"], 2, "frobnicate")
        self.assertFailsWith(
            ["init", "--no-passphrase", "--passphrase-file", self.pw], 2, "not both"
        )
        self.assertFailsWith([], 2, "command")

    def test_every_option_has_help(self) -> None:
        """
        Every option of every command has a help text.
        """
        commands = [("dspring", None, Options, None), *Options.subCommands]
        for command in list(commands):
            commands.extend(getattr(command[2], "subCommands", []))
        for name, _, options_class, _ in commands:
            options = options_class()
            for parameter in getattr(options, "optParameters", []):
                self.assertTrue(parameter[3], f"{name} --{parameter[0]}")
            for flag in getattr(options, "optFlags", []):
                self.assertTrue(flag[2], f"{name} --{flag[0]}")


class ScriptTests(SynchronousTestCase):
    def test_version(self) -> None:
        """
        ``dspring --version``, and a command's ``--version``, name Digital
        Spring's version, not Twisted's.
        """
        from digitalspring import __version__

        for argv in (["--version"], ["ping", "--version"]):
            result = subprocess.run(
                [sys.executable, "-m", "digitalspring", *argv],
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout, f"dspring (Digital Spring) {__version__}\n")

    def test_python_m(self) -> None:
        """
        ``python -m digitalspring`` runs the command with a real process
        exit status and a one-line error.
        """
        env = dict(os.environ, HOME=self.mktemp())
        result = subprocess.run(
            [sys.executable, "-m", "digitalspring", "id"],
            capture_output=True,
            env=env,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("no key file", result.stderr)

    def test_stale_control_file(self) -> None:
        """
        When the node of a data directory was killed (its control file is
        left, nothing listens), ``ping`` blames the local node at once, not
        the peer, and so do ``dht lookup`` and ``id``.
        """
        data_dir = FilePath(self.mktemp())
        self.assertEqual(main(["-d", data_dir.path, "init", "--no-passphrase"], io.StringIO()), 0)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        data_dir.child(CONTROL_FILE_NAME).setContent(
            json.dumps({"url": f"http://127.0.0.1:{port}/v1/", "token": "00"}).encode()
        )
        stale = f"no node is running for {data_dir.path} (stale control file"
        for argv in (["ping", "-c", "3", STRANGER], ["dht", "lookup", STRANGER]):
            result = subprocess.run(
                [sys.executable, "-m", "digitalspring", "-d", data_dir.path, *argv],
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
            self.assertIn(stale, result.stderr)
            self.assertNotIn("no answer from", result.stderr)
            self.assertNotIn("seq=2", result.stdout)
        result = subprocess.run(
            [sys.executable, "-m", "digitalspring", "-d", data_dir.path, "id"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0)
        self.assertEqual(len(result.stdout.splitlines()), 1, result.stdout)
        self.assertTrue(result.stderr.startswith(f"dspring: no addresses: {stale}"))
        # Once "(no node is running for DIR (stale control file ...), so no
        # addresses)": no parenthesis in a parenthesis.
        self.assertEqual(result.stderr.count("("), 1, result.stderr)


class RunningNodeTests(TestCase):
    """
    Commands against a control API served in this process, as a running
    node serves it, run as ``python -m digitalspring``.
    """

    async def serve(self, routes: dict[str, Any]) -> FilePath[str]:
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        self.assertEqual(main(["-d", data_dir.path, "init", "--no-passphrase"], io.StringIO()), 0)
        service = ControlService(self.reactor(), data_dir, routes)
        service.startService()
        self.addCleanup(service.stopService)
        assert service._starting is not None
        await service._starting
        return data_dir

    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    async def dspring(self, data_dir: FilePath[str], *argv: str) -> tuple[int, str, str]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "digitalspring", "--data-dir", data_dir.path, *argv],
            env=dict(os.environ),
            reactor=self.reactor(),
        )
        return code, out.decode(), err.decode()

    async def test_id_prints_addresses(self) -> None:
        """
        ``dspring id`` on a running node prints the peer ID, then one
        ``PEER_ID@ADDRESS`` line for each address the node publishes, in the
        form ``contacts add`` and ``--bootstrap`` take.
        """
        addresses = ["tcp:192.0.2.7:7655", f"tor:{'a' * 56}.onion:7655"]
        peer: list[str] = []

        async def status(body: dict[str, Any]) -> dict[str, Any]:
            return {"peer_id": peer[0], "addresses": addresses}

        data_dir = await self.serve({"status": (b"GET", status)})
        peer.append(str(read_key_file(data_dir.child("identity.key")).peer_id))
        code, out, err = await self.dspring(data_dir, "id")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines(), [peer[0], *(f"{peer[0]}@{a}" for a in addresses)])

    async def test_lookup_by_name(self) -> None:
        """
        ``dht lookup`` of a contact's name asks the node about the peer ID
        behind the name and, when the DHT has no record of it, says that the
        peer is in the contacts, which the DHT does not share.
        """
        asked: list[dict[str, Any]] = []

        async def lookup(body: dict[str, Any]) -> dict[str, Any]:
            asked.append(body)
            return {
                "peer": body["peer"],
                "found": False,
                "record": None,
                "hops": 0,
                "rpcs": 0,
                "duration_ms": 0.0,
                "path": [],
            }

        data_dir = await self.serve({"dht-lookup": (b"POST", lookup)})
        await self.dspring(data_dir, "contacts", "add", "-n", "carol", f"{STRANGER}@tcp:h:1")
        code, _, err = await self.dspring(data_dir, "dht", "lookup", "carol")
        self.assertEqual(code, 1)
        self.assertEqual(asked, [{"peer": STRANGER}])
        self.assertIn("it is in your contacts", err)
        self.assertEqual(len(err.splitlines()), 1, err)

    async def test_ping_by_name(self) -> None:
        """
        ``ping bob`` names bob and his peer ID in its first line, as
        ping(8) names the host and its address, and bob in its statistics.
        """

        async def ping(body: dict[str, Any]) -> dict[str, Any]:
            return {"rtt_ms": 0.5, "connect_ms": 2.0, "new": False}

        data_dir = await self.serve({"ping": (b"POST", ping)})
        await self.dspring(data_dir, "contacts", "add", "-n", "bob", f"{STRANGER}@tcp:h:1")
        code, out, err = await self.dspring(data_dir, "ping", "-c", "1", "bob")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0], f"PING bob ({STRANGER}): 56 data bytes")
        self.assertEqual(lines[2], "--- bob ping statistics ---")
        code, out, err = await self.dspring(data_dir, "ping", "-c", "1", STRANGER)
        self.assertEqual(out.splitlines()[0], f"PING {STRANGER}: 56 data bytes")

    async def test_counts_in_the_right_number(self) -> None:
        """
        Counts of one read "1 hop", "1 request", "1 contact", "1 node" (not
        "1 hops", "1 contacts"); a request still unanswered when a lookup
        ended shows no time, since it had no round trip.
        """

        async def lookup(body: dict[str, Any]) -> dict[str, Any]:
            return {
                "peer": body["peer"],
                "found": False,
                "record": None,
                "hops": 1,
                "rpcs": 1,
                "duration_ms": 3.0,
                "path": [
                    {"peer": STRANGER, "hop": 1, "outcome": "answered", "rtt_ms": 1.25},
                    {"peer": STRANGER, "hop": 1, "outcome": "unanswered", "rtt_ms": 2.5},
                ],
            }

        async def join(body: dict[str, Any]) -> dict[str, Any]:
            return {**body, "contacts": 1, "published_to": 1}

        async def status(body: dict[str, Any]) -> dict[str, Any]:
            return {
                "peer_id": STRANGER,
                "addresses": [],
                "connections": [],
                "network": {
                    "inbound": 0,
                    "outbound": 0,
                    "handshaking": 1,
                    "refused": {},
                    "trimmed": 1,
                    "channel_failures": {},
                    "bytes_sent": 1234567,
                    "bytes_received": 89,
                },
                "dht": {
                    "routing_table": 1,
                    "buckets": 1,
                    "records": 1,
                    "own_record": {"sequence": 1, "stored_at": 1},
                    "known_peers": [],
                },
            }

        data_dir = await self.serve(
            {
                "dht-lookup": (b"POST", lookup),
                "dht-join": (b"POST", join),
                "status": (b"GET", status),
            }
        )
        _, out, _ = await self.dspring(data_dir, "dht", "lookup", STRANGER)
        lines = out.splitlines()
        self.assertIn("not found in 1 hop, 1 request, 3.0 ms", lines[0])
        self.assertRegex(lines[1], r"answered +1\.2 ms$")
        self.assertEqual(lines[2], f"  hop 1  {STRANGER}  unanswered")
        _, out, err = await self.dspring(data_dir, "dht", "join", f"{STRANGER}@tcp:h:1")
        self.assertIn("1 contact in the routing table, record stored at 1 node\n", out, err)
        _, out, err = await self.dspring(data_dir, "status")
        for text in (
            "1 inbound handshake)",
            "1 idle connection\n",
            "traffic:     1,234,567 bytes sent, 89 received\n",
            "1 contact in 1 bucket, 1 record held",
            "stored at 1 node\n",
        ):
            self.assertIn(text, out, err)
