# -*- test-case-name: tests.test_groups_cli -*-
"""
``dspring group``: the groups of the running node, through its control API.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from twisted.python import usage
from twisted.python.filepath import FilePath

from ..control import ControlClient
from ..multicast import DEFAULT_STRATEGY
from ._base import CommandOptions, plural, run_async
from ._display import peer_name, printable


def call(data_dir: FilePath[str], route: str, body: dict[str, Any] | None = None) -> Any:
    """
    One request to the running node's control API: its answer.
    """
    answer: dict[str, Any] = {}

    async def ask(reactor: Any) -> None:
        answer.update(await ControlClient(reactor, data_dir).call(route, body))

    run_async(ask)
    return answer


def group_title(group: dict[str, Any]) -> str:
    """
    A group as the user names it: its petname, the contact of a
    conversation, or the owner's proposed name in quotes.
    """
    if group.get("petname"):
        return str(group["petname"])
    if group.get("conversation"):
        name = peer_name(group["conversation"], group.get("conversation_name"))
        return f"(conversation with {name})"
    return f'"{printable(str(group["name"]))}"'


def report_lines(report: dict[str, Any]) -> list[str]:
    """
    A catch-up report as ``dspring group catch-up`` prints it, each
    source by its contact's name when it has one (the report's ``names``).
    """
    names: dict[str, str] = report.get("names", {})
    position = "/".join(str(n) for n in report["position"])
    lines = [f"caught up {plural(report['committed'], 'message')}; at message {position}"]
    if report["newest"] is not None:
        lines.append(f"newest the sources showed: {'/'.join(str(n) for n in report['newest'])}")
    if report["missing"]:
        missing = ", ".join("/".join(str(n) for n in key) for key in report["missing"][:10])
        more = "..." if len(report["missing"]) > 10 else ""
        lines.append(f"missing: {missing}{more}")
    if report["needs_keys"] is not None:
        lines.append(f"waiting for the owner's keys of epoch {report['needs_keys']}")
    for what, title in (
        ("held_back", "held back"),
        ("behind", "showed less than the newest known (lacks it, or hides it)"),
        ("gaps", "left gaps"),
        ("misbehaved", "sent false or unasked data"),
        ("unreachable", "not reachable"),
    ):
        for peer in report.get(what, ()):
            lines.append(f"  {title}: {printable(peer_name(peer, names.get(peer)))}")
    return lines


class _GroupCommand(CommandOptions):
    """
    A ``dspring group`` command that takes a group, by hex ID or petname.
    """

    optFlags = [["json", None, "Print the answer as JSON."]]

    def parseArgs(self, group: str) -> None:  # type: ignore[override]
        self["group"] = group

    def answer(self, answer: dict[str, Any], out: TextIO, line: str) -> None:
        out.write(json.dumps(answer, indent=1) + "\n" if self["json"] else line + "\n")


class GroupCreateOptions(CommandOptions):
    """
    ``dspring group create NAME``.
    """

    synopsis = "[--strategy NAME] NAME"
    longdesc = (
        "Create a group this node owns, named NAME: your name for it (usable wherever a "
        "group is, sharing one namespace with your contacts' names) and the name it is "
        "offered to members under. Add members with 'dspring group add'. Its messages go "
        "out by the multicast strategy given, one of the strategy plugins the node runs "
        "(the node refuses another, listing them)."
    )
    optParameters = [
        [
            "strategy",
            "s",
            DEFAULT_STRATEGY,
            "The multicast strategy: spring (the whitepaper's), unicast (the owner sends to "
            "each member), or another installed strategy plugin's name.",
        ]
    ]

    def parseArgs(self, name: str) -> None:  # type: ignore[override]
        self["name"] = name

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(
            data_dir, "group-create", {"name": self["name"], "strategy": self["strategy"]}
        )
        chosen = "" if answer["strategy"] == DEFAULT_STRATEGY else f"  ({answer['strategy']})"
        out.write(f"created group {answer['name']}  {answer['group']}{chosen}\n")


#: The units ``--retention`` takes, in seconds.
_DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """
    A whole number of seconds, or of minutes, hours or days with ``m``,
    ``h`` or ``d`` (``30d``).

    :raises usage.UsageError: for anything else, or 0.
    """
    value = text.strip()
    unit = value[-1:] if value[-1:] in _DURATIONS else "s"
    number = value[:-1] if value[-1:] in _DURATIONS else value
    if not number.isdigit() or int(number) == 0:
        raise usage.UsageError(
            f"--retention takes a number of seconds, or of m, h or d (30d), not {text!r}"
        )
    return int(number) * _DURATIONS[unit]


class GroupAddOptions(CommandOptions):
    """
    ``dspring group add GROUP PEER [--role mailbox [--retention 30d]]``.
    """

    synopsis = "[--role member|mailbox] [--retention DURATION] GROUP PEER_ID|NAME"
    longdesc = (
        "Add a peer to a group you own and invite it. The invitation waits until the peer "
        "is reachable; a peer that has you as a contact accepts it at once, any other "
        "decides with 'dspring invitations' and 'dspring accept'. A mailbox (a node run "
        "with --mailbox) keeps the group's messages, as ciphertext, for members who are "
        "away, each for the retention given (default 30 days)."
    )
    optParameters = [
        ["role", "r", "member", "member, or mailbox."],
        ["retention", None, None, "How long a mailbox keeps each message: 3600, 12h, 30d."],
    ]

    def parseArgs(self, group: str, peer: str) -> None:  # type: ignore[override]
        self["group"], self["peer"] = group, peer

    def postOptions(self) -> None:
        if self["role"] not in ("member", "mailbox"):
            raise usage.UsageError("--role is member or mailbox")
        if self["retention"] is not None:
            if self["role"] != "mailbox":
                raise usage.UsageError("--retention is for --role mailbox")
            self["retention"] = parse_duration(self["retention"])

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        body = {"group": self["group"], "peer": self["peer"], "role": self["role"]}
        if self["retention"] is not None:
            body["retention"] = self["retention"]
        answer = call(data_dir, "group-add", body)
        out.write(f"added {answer['peer']} to {self['group']} as {answer['role']}\n")


class GroupCatchUpOptions(_GroupCommand):
    """
    ``dspring group catch-up GROUP``.
    """

    synopsis = "GROUP"
    longdesc = (
        "Catch up a group you are a member of now (the node does at start): ask its "
        "mailboxes, your neighbours and its owner what you missed, fetch it, and say what "
        "was got, what is still missing and which sources held back."
    )

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "group-catch-up", {"group": self["group"]})
        self.answer(answer, out, "\n".join(report_lines(answer)))


class GroupRemoveOptions(CommandOptions):
    """
    ``dspring group remove GROUP PEER``.
    """

    synopsis = "GROUP PEER_ID|NAME"
    longdesc = (
        "Remove a member from a group you own. The group's epoch ends at once: the others "
        "get new keys, and the removed peer cannot read what follows."
    )

    def parseArgs(self, group: str, peer: str) -> None:  # type: ignore[override]
        self["group"], self["peer"] = group, peer

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "group-remove", {"group": self["group"], "peer": self["peer"]})
        out.write(f"removed {answer['peer']} from {self['group']}\n")


class GroupListOptions(CommandOptions):
    """
    ``dspring group list``.
    """

    synopsis = "[--json]"
    longdesc = "List the groups this node is or was in: name, your role, state, ID and owner."
    optFlags = [["json", None, "Print the groups as JSON."]]

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "group-list")
        if self["json"]:
            out.write(json.dumps(answer, indent=1) + "\n")
            return
        for group in answer["groups"]:
            owner = (
                "you"
                if group["role"] == "owner"
                else peer_name(group["owner"], group.get("owner_name"))
            )
            out.write(
                f"{group_title(group)}  {group['role']}  {group['state']}  {group['group']}  "
                f"owner {owner}\n"
            )


class GroupShowOptions(_GroupCommand):
    """
    ``dspring group show GROUP``.
    """

    synopsis = "[--json] GROUP"
    longdesc = (
        "Show a group: its name, ID, owner, strategy and epoch; at the owner, each member "
        "with its role, status, the messages it has not committed yet and its neighbours; "
        "at a member, its own neighbours."
    )

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        shown = call(data_dir, "group-show", {"group": self["group"]})
        if self["json"]:
            out.write(json.dumps(shown, indent=1) + "\n")
            return
        names: dict[str, str] = shown.get("names", {})

        def who(peer: str) -> str:
            return peer_name(peer, names.get(peer))

        out.write(f"group:      {group_title(shown)}  {shown['group']}\n")
        out.write(f'proposed:   "{printable(str(shown["name"]))}"\n')
        out.write(f"owner:      {'you' if shown['role'] == 'owner' else who(shown['owner'])}\n")
        out.write(f"role:       {shown['role']} ({shown['state']})\n")
        out.write(f"strategy:   {shown['strategy']}, {shown['degree']} neighbours each\n")
        next_index = shown.get("next_index")
        sent = "" if next_index is None else f", next message {next_index}"
        out.write(f"epoch:      {shown['epoch']}{sent}\n")
        if "members" in shown:
            out.write(f"members:    {len(shown['members'])}\n")
            for member in shown["members"]:
                neighbours = ", ".join(who(p) for p in member["neighbours"]) or "none"
                out.write(
                    f"  {who(member['peer'])}  {member['role']}  {member['status']}  "
                    f"{member['undelivered']} undelivered  neighbours: {neighbours}\n"
                )
        else:
            neighbours = ", ".join(who(p) for p in shown.get("neighbours", [])) or "none"
            out.write(f"neighbours: {neighbours}\n")


class GroupNameOptions(CommandOptions):
    """
    ``dspring group name GROUP NAME``.
    """

    synopsis = "GROUP NEW_NAME"
    longdesc = (
        "Give a group your own name (a petname), usable wherever a group is: for a group "
        "you were invited into, instead of its 64-digit ID."
    )

    def parseArgs(self, group: str, name: str) -> None:  # type: ignore[override]
        self["group"], self["name"] = group, name

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "group-name", {"group": self["group"], "name": self["name"]})
        out.write(f"named {answer['group']} {answer['petname']}\n")


class GroupLeaveOptions(_GroupCommand):
    """
    ``dspring group leave GROUP``.
    """

    synopsis = "GROUP"
    longdesc = "Leave a group you are a member of: its owner is told, its keys are deleted."

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "group-leave", {"group": self["group"]})
        self.answer(answer, out, f"left {answer['group']}")


class GroupDeleteOptions(_GroupCommand):
    """
    ``dspring group delete GROUP``.
    """

    synopsis = "GROUP"
    longdesc = (
        "Delete a group and everything this node holds of it. The owner's members are "
        "told the group is gone; a member leaves it first."
    )

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "group-delete", {"group": self["group"]})
        self.answer(answer, out, f"deleted {answer['group']}")


class GroupOptions(CommandOptions):
    """
    ``dspring group``.
    """

    synopsis = "create|add|remove|list|show|name|leave|delete [options]"
    longdesc = (
        "Manage the running node's groups. GROUP is a group's 64-digit ID or your name for "
        "it; PEER a peer ID or a contact's name."
    )
    subCommands = [
        ["create", None, GroupCreateOptions, "Create a group you own."],
        ["add", None, GroupAddOptions, "Add a member to a group you own."],
        ["remove", None, GroupRemoveOptions, "Remove a member from a group you own."],
        ["list", None, GroupListOptions, "List the groups."],
        ["show", None, GroupShowOptions, "Show a group's members, epoch and neighbours."],
        ["name", None, GroupNameOptions, "Give a group your own name."],
        ["leave", None, GroupLeaveOptions, "Leave a group you are a member of."],
        ["delete", None, GroupDeleteOptions, "Delete a group."],
        ["catch-up", None, GroupCatchUpOptions, "Get what you missed of a group now."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError(
                "group needs a command: create, add, remove, list, show, name, leave or delete"
            )

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        self.subOptions.run(data_dir, out)
