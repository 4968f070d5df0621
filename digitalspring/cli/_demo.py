# -*- test-case-name: tests.test_demo -*-
"""
``dspring demo``: see :mod:`digitalspring.demo`.
"""

from __future__ import annotations

import os
from typing import TextIO

from twisted.python import usage
from twisted.python.filepath import FilePath

from ..demo import run_demo
from ._base import CommandOptions


class DemoOptions(CommandOptions):
    """
    ``dspring demo [--keep]``.
    """

    synopsis = "[--keep] [--dir DIR] [--summary FILE]"
    longdesc = (
        "Start five nodes on 127.0.0.1 (real twistd dspring processes: an owner, three "
        "members and a mailbox), make a group, send it a text and a 2 MiB file, take a "
        "member offline, send again, and bring it back to catch up through the mailbox, "
        "saying at each step who sent what to whom, how many bytes the sender's link "
        "carried against unicast, and how long it took. Then stop the nodes and remove "
        "everything, unless --keep."
    )
    optFlags = [
        ["keep", "k", "Leave the nodes running and their directory in place at the end."],
    ]
    optParameters = [
        ["dir", None, None, "Work in this directory (made; it must not exist yet)."],
        ["summary", None, None, "Write what was done and measured to this file, as JSON."],
    ]

    def parseArgs(self) -> None:
        pass

    def postOptions(self) -> None:
        if self["dir"] is not None and os.path.exists(self["dir"]):
            raise usage.UsageError(f"--dir {self['dir']} exists already")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        run_demo(out, self["keep"], self["dir"], self["summary"])
