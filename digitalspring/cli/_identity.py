# -*- test-case-name: tests.test_cli -*-
"""
``dspring init``, ``id``, ``export`` and ``import``.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from twisted.python import usage
from twisted.python.filepath import FilePath

from ..control import CONTROL_FILE_NAME, ControlClient, NodeNotRunning
from ..errors import DigitalSpringError
from ..identity import (
    KeyFile,
    NoKeyFile,
    create_identity,
    export_identity,
    import_identity,
    load_identity,
    read_key_file,
)
from ..identity import key_file_path as _key_file_path
from ..node import DataDirLock
from ._base import CommandOptions, run_async
from ._passphrase import ask_passphrase


class NoBackup(DigitalSpringError):
    """
    There is no backup file where one was named.
    """


def _read_backup(path: FilePath[str]) -> KeyFile:
    try:
        return read_key_file(path)
    except NoKeyFile:
        raise NoBackup(f"no such file: {path.path}") from None


class _NewKeyFileOptions(CommandOptions):
    """
    Options for writing a key file: a passphrase, or explicitly none.
    """

    optParameters = [
        [
            "passphrase-file",
            None,
            None,
            "File whose first line is the key file's passphrase (default: ask).",
        ],
    ]
    optFlags = [
        ["no-passphrase", None, "Write the key file unencrypted (for servers and tests)."],
    ]

    def postOptions(self) -> None:
        if self["passphrase-file"] and self["no-passphrase"]:
            raise usage.UsageError("give either --passphrase-file or --no-passphrase, not both")

    def new_passphrase(self) -> bytes | None:
        if self["no-passphrase"]:
            return None
        return ask_passphrase("New passphrase", self["passphrase-file"], confirm=True)


class InitOptions(_NewKeyFileOptions):
    """
    ``dspring init``: create the node's identity.
    """

    synopsis = "[--passphrase-file FILE | --no-passphrase]"
    longdesc = "Create a new identity in the data directory and print its peer ID."

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        identity = create_identity(data_dir, self.new_passphrase())
        out.write(f"{identity.peer_id}\n")


class IdOptions(CommandOptions):
    """
    ``dspring id``: print the peer ID, and the addresses of the running node.
    """

    synopsis = ""
    longdesc = (
        "Print the peer ID of the identity in the data directory (needs no passphrase), "
        "then, when its node runs, one PEER_ID@ADDRESS line for each address it "
        "publishes: what others give to 'dspring contacts add' or --bootstrap. Why "
        "there are no addresses goes to stderr, so that stdout holds only these lines."
    )

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        peer_id = read_key_file(_key_file_path(data_dir)).peer_id
        out.write(f"{peer_id}\n")
        if not data_dir.child(CONTROL_FILE_NAME).exists():
            _note(f"no node is running for {data_dir.path}")
            return
        status: dict[str, Any] = {}

        async def ask(reactor: Any) -> None:
            status.update(await ControlClient(reactor, data_dir).call("status"))

        try:
            run_async(ask)
        except NodeNotRunning as e:
            _note(str(e))
            return
        if status["peer_id"] != str(peer_id):
            _note(f"the node running for {data_dir.path} is {status['peer_id']}")
            return
        for address in status["addresses"]:
            out.write(f"{peer_id}@{address}\n")
        if not status["addresses"]:
            _note("the node listens nowhere")


def _note(text: str) -> None:
    """
    Say why ``dspring id`` prints no addresses, on stderr: its stdout is
    read by scripts (``$(dspring id | tail -n 1)``).
    """
    sys.stderr.write(f"dspring: no addresses: {text}\n")


class ExportOptions(CommandOptions):
    """
    ``dspring export FILE``: write an encrypted backup of the identity.
    """

    synopsis = "[options] FILE"
    longdesc = (
        "Write a backup of the identity to FILE, encrypted under a backup passphrase. "
        "'dspring import' restores it, on this or another device."
    )
    optParameters = [
        [
            "passphrase-file",
            None,
            None,
            "File whose first line is the key file's passphrase (default: ask if needed).",
        ],
        [
            "backup-passphrase-file",
            None,
            None,
            "File whose first line is the backup's passphrase (default: ask).",
        ],
    ]

    def parseArgs(self, backup: str) -> None:  # type: ignore[override]
        self["backup"] = FilePath(backup)

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        passphrase = None
        if read_key_file(_key_file_path(data_dir)).encrypted:
            passphrase = ask_passphrase("Passphrase", self["passphrase-file"])
        # Open the key file before asking for a new passphrase, so a wrong
        # one is reported first.
        load_identity(data_dir, passphrase)
        backup_passphrase = ask_passphrase(
            "Backup passphrase",
            self["backup-passphrase-file"],
            confirm=True,
            option="--backup-passphrase-file",
        )
        identity = export_identity(data_dir, passphrase, self["backup"], backup_passphrase)
        out.write(f"wrote a backup of {identity.peer_id} to {self['backup'].path}\n")


class ImportOptions(_NewKeyFileOptions):
    """
    ``dspring import FILE``: restore an identity from a backup.
    """

    synopsis = "[--passphrase-file FILE | --no-passphrase] [--force] FILE"
    longdesc = (
        "Restore the identity in the backup FILE into the data directory, under a new "
        "key file passphrase."
    )
    optParameters = [
        [
            "backup-passphrase-file",
            None,
            None,
            "File whose first line is the backup's passphrase (default: ask).",
        ],
    ]
    optFlags = [
        ["force", None, "Replace another identity that is in the data directory."],
    ]

    def parseArgs(self, backup: str) -> None:  # type: ignore[override]
        self["backup"] = FilePath(backup)

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        # A running node holds the lock and its identity in memory: refuse,
        # before any prompt, to change the key file under it.
        lock = DataDirLock.acquire(data_dir) if data_dir.isdir() else None
        try:
            self._import(data_dir, out)
        finally:
            if lock is not None:
                lock.release()

    def _import(self, data_dir: FilePath[str], out: TextIO) -> None:
        backup_passphrase = None
        if _read_backup(self["backup"]).encrypted:
            backup_passphrase = ask_passphrase(
                "Backup passphrase",
                self["backup-passphrase-file"],
                option="--backup-passphrase-file",
            )
        # Check the backup's passphrase before asking for a new one.
        read_key_file(self["backup"]).open(backup_passphrase)
        identity = import_identity(
            data_dir,
            self["backup"],
            backup_passphrase,
            self.new_passphrase(),
            replace=self["force"],
        )
        out.write(f"{identity.peer_id}\n")
