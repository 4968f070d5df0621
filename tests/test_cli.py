"""
Tests for the ``dspring`` command.
"""

import io
import os
import subprocess
import sys
from collections.abc import Sequence

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.cli import main
from digitalspring.identity import PeerID, load_identity, read_key_file


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
        passphrase.
        """
        status, out, err = self.run_cli("init", "--passphrase-file", self.pw)
        self.assertEqual((status, err), (0, ""))
        peer_id = PeerID.parse(out.strip())
        status, out, err = self.run_cli("id")
        self.assertEqual((status, out, err), (0, f"{peer_id}\n", ""))
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
        self.assertEqual(self.run_cli("id")[1], first)

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
        self.assertEqual(self.run_cli("id")[1], peer_id)

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

    def test_import_foreign_file(self) -> None:
        """
        Importing a file that is not a backup fails in one line.
        """
        self.assertFailsWith(["import", "--no-passphrase", self.pw], 1, "not a Digital Spring")

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
        from digitalspring.cli import Options

        for name, _, options_class, _ in [("dspring", None, Options, None), *Options.subCommands]:
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
