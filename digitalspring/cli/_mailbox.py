# -*- test-case-name: tests.test_groups_cli -*-
"""
``dspring mailbox``: what the running node holds as a mailbox.
"""

from __future__ import annotations

import json
import time
from typing import TextIO

from twisted.python.filepath import FilePath

from ._base import CommandOptions, plural
from ._groups import call


def size(count: float) -> str:
    """
    A number of bytes as people read it: 1.2 MB, 512 kB, 42 B.
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


def duration(seconds: float) -> str:
    """
    A span of time in its largest whole unit: 30 days, 12 hours, 5 minutes.
    """
    for unit, scale in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= scale:
            return plural(round(seconds / scale), unit)
    return plural(round(seconds), "second")


class MailboxStatusOptions(CommandOptions):
    """
    ``dspring mailbox status``.
    """

    synopsis = ""
    longdesc = (
        "Show whether the running node serves as a mailbox (twistd dspring --mailbox), its "
        "quotas, and for each group it serves: the owner, the messages and bytes it holds "
        "(ciphertext and manifests only), how long it keeps them, and when it next deletes "
        "one."
    )
    optFlags = [["json", None, "Print the status as JSON."]]

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        status = call(data_dir, "mailbox-status")
        if self["json"]:
            out.write(json.dumps(status, indent=1) + "\n")
            return
        quotas = status["quotas"]
        if quotas is None:
            out.write("serving:  no (run the node with twistd dspring --mailbox to serve)\n")
        else:
            out.write(
                f"serving:  yes; quotas {size(quotas['bytes_per_group'])} per group, "
                f"{size(quotas['bytes_per_owner'])} per owner, "
                f"{size(quotas['bytes_total'])} in all "
                f"({quotas['groups_per_owner']} groups per owner, "
                f"{quotas['groups_total']} in all)\n"
            )
        out.write(
            f"holding:  {plural(status['messages'], 'message')}, {size(status['bytes'])} in "
            f"{plural(len(status['groups']), 'group')}\n"
        )
        now = time.time()
        for group in status["groups"]:
            line = (
                f"  {group['group']}  owner {group['owner']}\n"
                f"    {plural(group['messages'], 'message')}, {size(group['bytes'])}, "
                f"each kept {duration(group['retention'])}"
            )
            if group["next_expiry"] is not None:
                line += f"; next deleted in {duration(max(0, group['next_expiry'] - now))}"
            out.write(line + "\n")


class MailboxOptions(CommandOptions):
    """
    ``dspring mailbox``.
    """

    synopsis = "COMMAND"
    longdesc = "What the running node holds as a mailbox of others' groups."
    subCommands = [
        ["status", None, MailboxStatusOptions, "Show the groups, bytes and quotas held."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            self.subCommand = "status"
            self.subOptions = MailboxStatusOptions()
            self.subOptions.parseOptions([])

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        self.subOptions.run(data_dir, out)
