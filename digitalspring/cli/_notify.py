# -*- test-case-name: tests.test_notify_cli -*-
"""
``dspring notify-boxes``: the running node's notification boxes, and what
it holds as one.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from twisted.python.filepath import FilePath

from ._base import CommandOptions, plural
from ._groups import call


def _boxes(answer: dict[str, Any], out: TextIO) -> None:
    boxes = answer["boxes"]
    if not boxes:
        out.write("no notification boxes: every group is caught up at start\n")
    for box in boxes:
        out.write(f"{box}\n")


class _BoxCommand(CommandOptions):
    synopsis = "PEER_ID|NAME"
    optFlags = [["json", None, "Print the answer as JSON."]]

    def parseArgs(self, peer: str) -> None:  # type: ignore[override]
        self["peer"] = peer

    route = ""

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, self.route, {"peer": self["peer"]})
        if self["json"]:
            out.write(json.dumps(answer, indent=1) + "\n")
        else:
            _boxes(answer, out)


class NotifyBoxAddOptions(_BoxCommand):
    """
    ``dspring notify-boxes add PEER``.
    """

    longdesc = (
        "Use a peer (a node run with --notify-box, a friend's say) as a notification box: "
        "the owners of your groups learn it from your key bundles, and leave notifications "
        "there, sealed to you, when they cannot reach you; when the node starts it catches "
        "up only the groups they name. At most 8 boxes."
    )
    route = "notify-box-add"


class NotifyBoxRemoveOptions(_BoxCommand):
    """
    ``dspring notify-boxes remove PEER``.
    """

    longdesc = "Stop using a peer as a notification box (it is told, and forgets yours)."
    route = "notify-box-remove"


class NotifyBoxListOptions(CommandOptions):
    """
    ``dspring notify-boxes list``.
    """

    synopsis = ""
    longdesc = (
        "List your notification boxes, and whether the running node serves as one "
        "(twistd dspring --notify-box): the members it serves and what it holds for each."
    )
    optFlags = [["json", None, "Print the answer as JSON."]]

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "notify-boxes")
        if self["json"]:
            out.write(json.dumps(answer, indent=1) + "\n")
            return
        _boxes(answer, out)
        if not answer["serving"]:
            return
        members = answer["members"]
        out.write(
            f"serving:  yes; {answer['work_bits']} bits of work a deposit, "
            f"{plural(len(members), 'member')}\n"
        )
        for member in members:
            line = f"  {member['peer']}  {plural(member['held'], 'notification')}"
            if member["refused"]:
                line += f", {member['refused']} refused (full)"
            out.write(line + "\n")


class NotifyBoxesOptions(CommandOptions):
    """
    ``dspring notify-boxes``.
    """

    synopsis = "COMMAND"
    longdesc = "The peers that keep notifications for this node while it is away."
    subCommands = [
        ["add", None, NotifyBoxAddOptions, "Use a peer as a notification box."],
        ["remove", None, NotifyBoxRemoveOptions, "Stop using a peer as a notification box."],
        ["list", None, NotifyBoxListOptions, "List the boxes, and what this node serves."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            self.subCommand = "list"
            self.subOptions = NotifyBoxListOptions()
            self.subOptions.parseOptions([])

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        self.subOptions.run(data_dir, out)
