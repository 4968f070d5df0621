# -*- test-case-name: tests.test_cli -*-
"""
The ``dspring`` command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

from twisted.python import usage

from ..errors import DigitalSpringError
from ..node._options import DEFAULT_DATA_DIR, data_dir_path
from ._base import CommandOptions
from ._demo import DemoOptions
from ._dht import DhtOptions
from ._groups import GroupOptions
from ._identity import ExportOptions, IdOptions, ImportOptions, InitOptions
from ._mailbox import MailboxOptions
from ._messages import (
    AcceptOptions,
    BlockOptions,
    DeclineOptions,
    FollowOptions,
    InboxOptions,
    InvitationsOptions,
    SaveOptions,
    SendOptions,
    UnblockOptions,
)
from ._network import ContactsOptions, PingOptions, StatusOptions
from ._notify import NotifyBoxesOptions
from ._stop import StopOptions
from ._web import WebOptions


class Options(CommandOptions):
    """
    The options of ``dspring``, and its subcommands.
    """

    synopsis = "[--data-dir DIR] COMMAND [options]"
    longdesc = (
        "Manage a Digital Spring node: its identity and contacts, and, through the "
        "running node, pings, its status, its DHT and its groups, sending and receiving. "
        "Run a node with 'twistd -n dspring'."
    )
    subCommands = [
        ["demo", None, DemoOptions, "See it work: five nodes on this machine, step by step."],
        ["init", None, InitOptions, "Create the node's identity."],
        ["id", None, IdOptions, "Print the node's peer ID and addresses."],
        ["export", None, ExportOptions, "Write an encrypted backup of the identity."],
        ["import", None, ImportOptions, "Restore an identity from a backup."],
        ["contacts", None, ContactsOptions, "Manage the address book of peers."],
        ["ping", None, PingOptions, "Ping a peer through the running node."],
        ["status", None, StatusOptions, "Show the running node's status."],
        ["stop", None, StopOptions, "Stop the running node and wait until it has stopped."],
        ["dht", None, DhtOptions, "Look into the running node's DHT."],
        ["group", None, GroupOptions, "Manage the running node's groups."],
        ["mailbox", None, MailboxOptions, "Show what the running node holds as a mailbox."],
        ["notify-boxes", None, NotifyBoxesOptions, "Manage the node's notification boxes."],
        ["send", None, SendOptions, "Send a text or a file to a group or a contact."],
        ["follow", None, FollowOptions, "Print what arrives, like tail -f."],
        ["inbox", None, InboxOptions, "Show what was sent and received."],
        ["save", None, SaveOptions, "Save a file received (or sent) to a path."],
        ["invitations", None, InvitationsOptions, "List invitations waiting for consent."],
        ["accept", None, AcceptOptions, "Join a group you were invited into."],
        ["decline", None, DeclineOptions, "Forget an invitation."],
        ["block", None, BlockOptions, "Refuse everything from a peer."],
        ["unblock", None, UnblockOptions, "Stop blocking a peer."],
        ["web", None, WebOptions, "Print a one-time login URL of the web client."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is needed")


def data_dir_option(options: usage.Options) -> str:
    """
    The data directory to use: the ``--data-dir`` given last on the command
    line (before or after the command), else ``$DSPRING_DIR``, else
    ``~/.dspring``.
    """
    chosen = None
    current: usage.Options | None = options
    while current is not None:
        if current.get("data-dir") is not None:
            chosen = current["data-dir"]
        current = getattr(current, "subOptions", None)
    return chosen or os.environ.get("DSPRING_DIR") or DEFAULT_DATA_DIR


def _command(options: usage.Options) -> str:
    """
    ``dspring contacts add``: the command that was being parsed.
    """
    names = ["dspring"]
    while getattr(options, "subCommand", None) is not None and hasattr(options, "subOptions"):
        names.append(str(options.subCommand))
        options = options.subOptions
    return " ".join(names)


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
    try:
        return _run(sys.argv[1:] if argv is None else list(argv), out, err)
    except BrokenPipeError:
        # The reader went away (``dspring --help | head``): nothing to say.
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _run(argv: list[str], out: TextIO, err: TextIO) -> int:
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        err.write(f"dspring: {e}\n(see '{_command(options)} --help')\n")
        return 2
    try:
        options.subOptions.run(data_dir_path(data_dir_option(options)), out)
    except DigitalSpringError as e:
        err.write(f"dspring: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        err.write("dspring: interrupted\n")
        return 130
    return 0


__all__ = ["Options", "data_dir_option", "main"]
