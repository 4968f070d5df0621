# -*- test-case-name: tests.test_groups_cli -*-
"""
``dspring send``, ``follow`` and ``inbox`` (messages), and ``invitations``,
``accept``, ``decline``, ``block`` and ``unblock`` (consent), through the
running node's control API.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from typing import Any, TextIO

from twisted.internet.defer import Deferred, DeferredList, DeferredLock, FirstError
from twisted.python import usage
from twisted.python.filepath import FilePath

from ..control import ControlClient
from ..errors import DigitalSpringError
from ._base import CommandOptions, run_async
from ._display import (
    message_lines,
    parse_message_id,
    peer_name,
    printable,
    save_in,
    save_received,
)
from ._groups import call

#: Width of the progress bar, in characters.
BAR_WIDTH = 30


def _number(options: usage.Options, name: str) -> int:
    try:
        value = int(options[name])
    except ValueError:
        raise usage.UsageError(f"--{name} takes a whole number, not {options[name]!r}") from None
    if value < 0:
        raise usage.UsageError(f"--{name} takes a number from 0")
    options[name] = value
    return value


class _Delivery:
    """
    Where a sent message stands, from the ``send`` answer and the
    ``delivery`` events after it: drawn as a progress bar on a terminal.
    """

    def __init__(self, answer: dict[str, Any], out: TextIO) -> None:
        self.key = (answer["group"], answer["epoch"], answer["index"])
        self.fragments: int = answer["fragments"]
        self.recipients = set(answer["committed"]) | set(answer["pending"])
        self.mailboxes = set(answer.get("mailboxes", ()))
        self.state = answer
        self.created = bool(answer.get("created"))
        self.done: Deferred[None] = Deferred()
        self._out = out
        self._bar = out.isatty()
        self.update(answer)

    def update(self, state: dict[str, Any]) -> None:
        if (state["group"], state["epoch"], state["index"]) != self.key or self.done.called:
            return
        self.state = state
        if self._bar:
            self._draw()
        pending, unreached = set(state["pending"]), set(state["unreached"])
        if not pending or (state.get("transmitted") and pending <= unreached):
            self.done.callback(None)

    def _draw(self) -> None:
        total = self.fragments * max(len(self.recipients), 1)
        committed = set(self.state["committed"])
        progress = self.state.get("progress", {})
        moved = sum(
            self.fragments if peer in committed else min(progress.get(peer, 0), self.fragments)
            for peer in self.recipients
        )
        share = moved / total if total else 1.0
        filled = int(share * BAR_WIDTH)
        self._out.write(
            f"\r[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {share:4.0%}  "
            f"{len(committed)}/{len(self.recipients)} members"
        )
        self._out.flush()

    def summary(self, names: dict[str, str]) -> list[str]:
        state = self.state
        committed, pending = state["committed"], state["pending"]
        unreached = set(state["unreached"])
        members = self.recipients - self.mailboxes
        line = (
            f"message {state['epoch']}/{state['index']} ({self.fragments} fragments): "
            f"delivered to {len(members & set(committed))} of {len(members)} members"
        )
        if self.mailboxes:
            line += (
                f", held by {len(self.mailboxes & set(committed))} of "
                f"{len(self.mailboxes)} mailboxes"
            )
        lines = [line]
        for peer in committed:
            what = "held:     " if peer in self.mailboxes else "delivered:"
            lines.append(f"  {what} {peer_name(peer, names.get(peer))}")
        for peer in pending:
            why = (
                "not reachable now; it gets the message when it is back"
                if peer in unreached
                else "not yet confirmed"
            )
            lines.append(f"  pending:   {peer_name(peer, names.get(peer))} ({why})")
        return lines


class SendOptions(CommandOptions):
    """
    ``dspring send GROUP|CONTACT TEXT`` and ``dspring send GROUP --file PATH``.
    """

    synopsis = "[--file PATH] [--timeout SECONDS] GROUP|CONTACT [TEXT...]"
    longdesc = (
        "Send a text or a file to a group you own, and wait until its members have it: a "
        "progress bar on a terminal, then who has it. To a contact (a name or peer ID), "
        "it goes to your conversation with that peer: a two-member group made on first "
        "use, where the contact answers through its own. Members out of reach get it when "
        "they are back."
    )
    optParameters = [
        ["file", "f", None, "Send this file (the node reads it)."],
        ["timeout", "t", 300, "Stop waiting after this many seconds (0: never)."],
    ]

    def parseArgs(self, to: str, *text: str) -> None:  # type: ignore[override]
        self["to"] = to
        self["text"] = " ".join(text) if text else None

    def postOptions(self) -> None:
        _number(self, "timeout")
        if (self["file"] is None) == (self["text"] is None):
            raise usage.UsageError("give a TEXT or --file PATH (not both)")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        body: dict[str, Any] = {"to": self["to"]}
        if self["file"] is not None:
            body["path"] = os.path.abspath(self["file"])
        else:
            body["text"] = self["text"]
        delivery: list[_Delivery] = []

        async def sending(reactor: Any) -> None:
            client = ControlClient(reactor, data_dir)
            opened: Deferred[None] = Deferred()
            early: list[dict[str, Any]] = []

            def on_event(event: str, data: dict[str, Any]) -> None:
                if event != "delivery":
                    return
                if delivery:
                    delivery[0].update(data)
                else:
                    early.append(data)

            stream = Deferred.fromCoroutine(
                client.stream(
                    "events", {"to": self["to"]}, on_event, lambda: opened.callback(None)
                )
            )
            await _first(opened, stream)
            answer = await client.call("send", body)
            delivery.append(_Delivery(answer, out))
            for data in early:
                delivery[0].update(data)
            waiting = [delivery[0].done, stream]
            if self["timeout"]:
                waiting.append(_later(reactor, self["timeout"]))
            await _first(*waiting)
            shown = await client.call("group-show", {"group": delivery[0].key[0]})
            names.update(shown.get("names", {}))

        names: dict[str, str] = {}
        run_async(sending)
        if out.isatty():
            out.write("\n")
        if delivery[0].created:
            out.write(f"started a conversation with {printable(self['to'])}\n")
        for line in delivery[0].summary(names):
            out.write(line + "\n")


def _later(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    call = reactor.callLater(seconds, d.callback, None)
    d.addBoth(lambda result: call.cancel() if call.active() else None)
    return d


async def _first(*waiting: Deferred[Any]) -> None:
    """
    Wait for the first of ``waiting`` to fire; raise its error if it fails.
    """
    try:
        await DeferredList(
            list(waiting), fireOnOneCallback=True, fireOnOneErrback=True, consumeErrors=True
        )
    except FirstError as e:
        e.subFailure.raiseException()


class FollowOptions(CommandOptions):
    """
    ``dspring follow [GROUP|CONTACT]``.
    """

    synopsis = "[-n COUNT] [GROUP|CONTACT]"
    longdesc = (
        "Print messages as they arrive, like tail -f: of every group, or of one group or "
        "conversation. Received files are saved to DATA_DIR/received/ under their name "
        "made safe (no directories, and a number added rather than overwrite a file). "
        "Stops when the node stops, or with Ctrl-C."
    )
    optParameters = [["lines", "n", 10, "Print the last COUNT messages first (0 to 1000)."]]

    def parseArgs(self, to: str | None = None) -> None:
        self["to"] = to

    def postOptions(self) -> None:
        if _number(self, "lines") > 1000:
            raise usage.UsageError("--lines takes a number from 0 to 1000")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        async def following(reactor: Any) -> None:
            client = ControlClient(reactor, data_dir)
            query = {} if self["to"] is None else {"to": self["to"]}
            lock = DeferredLock()
            shown: set[tuple[str, int, int]] = set()
            opened: Deferred[None] = Deferred()
            await lock.acquire()

            async def show(message: dict[str, Any]) -> None:
                key = (message["group"], message["epoch"], message["index"])
                if key in shown:
                    return
                shown.add(key)
                if message["type"] == "file" or message.get("text") is None:
                    message = await client.call(
                        "message",
                        {"group": key[0], "epoch": key[1], "index": key[2]},
                    )
                for line in message_lines(message):
                    out.write(line + "\n")
                if message["type"] == "file":
                    path = save_received(
                        data_dir, str(message["file_name"]), base64.b64decode(message["data"])
                    )
                    out.write(f"    saved to {printable(path.path)}\n")
                out.flush()

            def on_event(event: str, data: dict[str, Any]) -> None:
                if event == "message":
                    lock.run(lambda: Deferred.fromCoroutine(show(data)))

            stream = Deferred.fromCoroutine(
                client.stream("events", query, on_event, lambda: opened.callback(None))
            )
            await _first(opened, stream)
            # On stderr, so that the messages alone go to a pipe.
            sys.stderr.write("dspring: following; Ctrl-C stops\n")
            sys.stderr.flush()
            if self["lines"]:
                body: dict[str, Any] = {"limit": self["lines"]}
                if self["to"] is not None:
                    body["to"] = self["to"]
                for message in (await client.call("inbox", body))["messages"]:
                    shown.add((message["group"], message["epoch"], message["index"]))
                    for line in message_lines(message):
                        out.write(line + "\n")
                out.flush()
            lock.release()
            await stream

        run_async(following)


class InboxOptions(CommandOptions):
    """
    ``dspring inbox [GROUP|CONTACT]``.
    """

    synopsis = "[-n COUNT] [--json] [GROUP|CONTACT]"
    longdesc = (
        "Show the messages this node holds, oldest first: of every group, or of one group "
        "or conversation (what you sent and what the contact sent, as one)."
    )
    optParameters = [["lines", "n", 100, "Show the last COUNT messages."]]
    optFlags = [["json", None, "Print the messages as JSON."]]

    def parseArgs(self, to: str | None = None) -> None:
        self["to"] = to

    def postOptions(self) -> None:
        if not 1 <= _number(self, "lines") <= 1000:
            raise usage.UsageError("--lines takes a number from 1 to 1000")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        body: dict[str, Any] = {"limit": self["lines"]}
        if self["to"] is not None:
            body["to"] = self["to"]
        answer = call(data_dir, "inbox", body)
        if self["json"]:
            out.write(json.dumps(answer, indent=1) + "\n")
            return
        for message in answer["messages"]:
            for line in message_lines(message):
                out.write(line + "\n")


class SaveOptions(CommandOptions):
    """
    ``dspring save ID [PATH|-]``.
    """

    synopsis = "ID [PATH|-]"
    longdesc = (
        "Save a file this node received or sent, after the fact: ID is what 'dspring inbox' "
        "shows after it (the first digits of its group's ID, its epoch and index: "
        "3fa2b1c4:0/3). It goes to PATH, which must not exist yet; into PATH under its "
        "proposed name made safe when PATH is a directory; to standard output with -; by "
        "default into DATA_DIR/received/, as 'dspring follow' saves files. Nothing is "
        "overwritten. A text is saved as UTF-8."
    )

    def parseArgs(self, message: str, path: str | None = None) -> None:  # type: ignore[override]
        try:
            self["id"] = parse_message_id(message)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["path"] = path

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        digits, epoch, index = self["id"]
        message: dict[str, Any] = {}

        async def fetch(reactor: Any) -> None:
            client = ControlClient(reactor, data_dir)
            groups = [g["group"] for g in (await client.call("group-list"))["groups"]]
            matching = [g for g in groups if g.startswith(digits)]
            if len(matching) != 1:
                raise DigitalSpringError(
                    f"no group's ID starts with {digits} (see 'dspring inbox')"
                    if not matching
                    else f"several groups' IDs start with {digits}: give more of its digits"
                )
            where = {"group": matching[0], "epoch": epoch, "index": index}
            message.update(await client.call("message", where))

        run_async(fetch)
        if message["type"] == "file":
            name = str(message["file_name"])
            data = base64.b64decode(message["data"])
        else:
            name = f"message-{epoch}-{index}.txt"
            data = str(message["text"]).encode("utf-8")
        path = self["path"]
        if path == "-":
            binary = getattr(out, "buffer", None)
            if binary is None:
                raise DigitalSpringError("standard output takes no bytes here")
            out.flush()
            binary.write(data)
            binary.flush()
            return
        if path is None:
            saved = save_received(data_dir, name, data)
        elif os.path.isdir(path):
            saved = save_in(FilePath(path), name, data)
        else:
            saved = FilePath(os.path.abspath(path))
            try:
                fd = os.open(
                    saved.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
                )
            except OSError as e:
                raise DigitalSpringError(f"cannot write {path}: {e.strerror}") from None
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        out.write(f"saved {len(data)} bytes to {printable(saved.path)}\n")


class InvitationsOptions(CommandOptions):
    """
    ``dspring invitations``.
    """

    synopsis = "[--json]"
    longdesc = (
        "List the invitations waiting for your consent: from peers who are not your "
        "contacts (or from anyone, once auto-accept is off). Accept one with 'dspring "
        "accept GROUP', refuse it with 'dspring decline GROUP', or refuse everything from "
        "its sender with 'dspring block PEER'."
    )
    optFlags = [["json", None, "Print the invitations as JSON."]]

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "invitations")
        if self["json"]:
            out.write(json.dumps(answer, indent=1) + "\n")
            return
        if not answer["invitations"]:
            out.write("no invitations wait\n")
        for invitation in answer["invitations"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(invitation["received"]))
            out.write(
                f'{invitation["group"]}  "{printable(invitation["name"])}"  from '
                f"{peer_name(invitation['from'], invitation.get('from_name'))}  {when}\n"
            )


class _InvitationCommand(CommandOptions):
    synopsis = "[--from PEER_ID|NAME] GROUP_ID"
    optParameters = [["from", None, None, "The peer that invited you, if several did."]]

    def parseArgs(self, group: str) -> None:  # type: ignore[override]
        self["group"] = group

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"group": self["group"]}
        if self["from"] is not None:
            body["peer"] = self["from"]
        return body


class AcceptOptions(_InvitationCommand):
    """
    ``dspring accept GROUP``.
    """

    longdesc = (
        "Join a group you were invited into (GROUP_ID, or its first digits, as "
        "'dspring invitations' shows it)."
    )

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "accept", self.body())
        out.write(f"joined {answer['group']} (owner {answer['from']})\n")


class DeclineOptions(_InvitationCommand):
    """
    ``dspring decline GROUP``.
    """

    longdesc = "Forget an invitation without joining."

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, "decline", self.body())
        out.write(f"declined {answer['group']} (from {answer['from']})\n")


class BlockOptions(CommandOptions):
    """
    ``dspring block PEER`` (and ``unblock``).
    """

    synopsis = "PEER_ID|NAME"
    longdesc = (
        "Refuse everything from a peer: its invitations and unfinished messages are "
        "dropped, and nothing more from it is kept."
    )
    route = "block"

    def parseArgs(self, peer: str) -> None:  # type: ignore[override]
        self["peer"] = peer

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer = call(data_dir, self.route, {"peer": self["peer"]})
        out.write(f"{self.route}ed {answer['peer']}\n")


class UnblockOptions(BlockOptions):
    """
    ``dspring unblock PEER``.
    """

    longdesc = "Stop blocking a peer."
    route = "unblock"
