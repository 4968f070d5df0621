# -*- test-case-name: tests.test_cli -*-
"""
The ``dspring`` command.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from twisted.python import usage

from ..errors import DigitalSpringError
from ..node._options import DEFAULT_DATA_DIR, data_dir_path
from ._base import CommandOptions
from ._dht import DhtOptions
from ._identity import ExportOptions, IdOptions, ImportOptions, InitOptions
from ._network import ContactsOptions, PingOptions, StatusOptions


class Options(CommandOptions):
    """
    The options of ``dspring``, and its subcommands.
    """

    synopsis = "dspring [--data-dir DIR] COMMAND [options]"
    longdesc = "Manage a Digital Spring node: its identity, contacts and messages."
    optParameters = [
        [
            "data-dir",
            "d",
            DEFAULT_DATA_DIR,
            "Directory that holds the node's identity and state.",
        ],
    ]
    subCommands = [
        ["init", None, InitOptions, "Create the node's identity."],
        ["id", None, IdOptions, "Print the node's peer ID."],
        ["export", None, ExportOptions, "Write an encrypted backup of the identity."],
        ["import", None, ImportOptions, "Restore an identity from a backup."],
        ["contacts", None, ContactsOptions, "Manage the address book of peers."],
        ["ping", None, PingOptions, "Ping a peer through the running node."],
        ["status", None, StatusOptions, "Show the running node's status."],
        ["dht", None, DhtOptions, "Look into the running node's DHT."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is needed")


def main(
    argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """
    Run ``dspring`` with ``argv`` (``sys.argv[1:]`` by default).

    :returns: the exit status: 0 on success, 1 for an error, 2 for a usage
        error.  Errors are one line on ``stderr``.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else list(argv))
    except usage.UsageError as e:
        err.write(f"dspring: {e}\n(see 'dspring --help')\n")
        return 2
    try:
        options.subOptions.run(data_dir_path(options["data-dir"]), out)
    except DigitalSpringError as e:
        err.write(f"dspring: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        err.write("dspring: interrupted\n")
        return 130
    return 0


__all__ = ["Options", "main"]
