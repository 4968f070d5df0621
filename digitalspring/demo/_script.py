# -*- test-case-name: tests.test_demo -*-
"""
``dspring demo``: five real nodes on 127.0.0.1, a group, a text and a
2 MiB file sent to it, a member away who catches up through the group's
mailbox, told step by step with what each step cost and took.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath

from ..control import ControlError
from ..directory import AddressBook
from ..errors import DigitalSpringError
from ..identity import PeerID
from ._nodes import DemoNode
from ._screen import Screen, names_text, plural, size_text

#: The file sent to the whole group.
FILE_SIZE = 2 * 1024 * 1024
#: The file sent while a member is away.
SMALL_FILE_SIZE = 256 * 1024

GROUP = "friends"
OWNER = "alice"
MEMBERS = ("bob", "carol", "dave")
MAILBOX = "box"
#: The member who goes away.
AWAY = "dave"

TEXT = "Hello friends! Photos from Saturday are coming next."
AWAY_TEXT = "Dinner at eight on Friday; the menu is attached."

#: Where the owner serves its web client with ``--keep``: a free port on
#: loopback.
WEB = "tcp:0:interface=127.0.0.1"

#: Seconds a delivery, or the catch-up, may take before the demo gives up.
DELIVERY_TIMEOUT = 120.0
#: Seconds after its start before a member that has not caught up is asked
#: to catch up again.
ASK_AGAIN = 10.0
#: Seconds the catch-up's report may come after its last message.
REPORT_WAIT = 10.0
#: How often the catch-up is looked at, in seconds.
POLL = 0.1


class DemoFailed(DigitalSpringError):
    """
    Something the demo shows did not happen.
    """


async def _all(*work: Any) -> list[Any]:
    results: list[Any] = await gatherResults(
        [Deferred.fromCoroutine(w) for w in work], consumeErrors=True
    )
    return results


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Watch:
    """
    Where one message sent stands: from the owner's ``delivery`` events,
    who committed it (the owner has their acknowledgements), and from each
    recipient's own ``receiving`` and ``message`` events, how much of it
    that recipient holds.
    """

    def __init__(self, sent_at: float, name_of: Callable[[str], str]) -> None:
        self.sent_at = sent_at
        self._name_of = name_of
        self.key: tuple[str, int, int] | None = None
        self.state: dict[str, Any] = {}
        self.done: Deferred[None] = Deferred()
        #: When the owner had each recipient's acknowledgement, by name.
        self.committed_at: dict[str, float] = {}
        #: Each recipient's share of the message, 0 to 1, by its own count.
        self.shares: dict[str, float] = {}
        #: When each recipient held it whole, by its own events.
        self.held_at: dict[str, float] = {}
        #: The fragment counts each recipient reported, in order.
        self.reported: dict[str, list[int]] = {}
        self.on_change: Callable[[], object] = lambda: None
        # A recipient's events that came before the owner said which
        # message this is.
        self._early: list[tuple[str, str, dict[str, Any], float]] = []

    def sent(self, key: tuple[str, int, int]) -> None:
        """
        The owner sent the message ``key`` (group, epoch, index).
        """
        self.key = key
        early, self._early = self._early, []
        for name, event, data, now in early:
            self.arrived(name, event, data, now)

    def update(self, state: dict[str, Any], now: float) -> None:
        if self.key is None or (state["group"], state["epoch"], state["index"]) != self.key:
            return
        self.state = state
        for peer in state["committed"]:
            self.committed_at.setdefault(self._name_of(peer), now - self.sent_at)
        self.on_change()
        pending, unreached = set(state["pending"]), set(state["unreached"])
        if state["transmitted"] and pending <= unreached and not self.done.called:
            self.done.callback(None)

    def arrived(self, name: str, event: str, data: dict[str, Any], now: float) -> None:
        """
        Recipient ``name`` told of a message: how much it holds
        (``receiving``), or that it committed it (``message``).
        """
        if self.key is None:
            self._early.append((name, event, data, now))
            return
        if (data["group"], data["epoch"], data["index"]) != self.key:
            return
        if event == "receiving":
            self.reported.setdefault(name, []).append(data["fragments"])
            self.shares[name] = max(self.shares.get(name, 0.0), data["fragments"] / data["total"])
            if data["fragments"] >= data["total"]:
                self.held_at.setdefault(name, float(data["at"]) - self.sent_at)
        elif event == "message":
            self.shares[name] = 1.0
            self.held_at.setdefault(name, now - self.sent_at)
        self.on_change()

    def has_it(self) -> dict[str, float]:
        """
        When each recipient that has the message whole had it, in seconds
        since it was sent: by its own word, or by the owner's (its
        acknowledgement), whichever came first.
        """
        done = dict(self.held_at)
        for name, seconds in self.committed_at.items():
            done[name] = min(seconds, done.get(name, seconds))
        return done


class Demo:
    """
    The demo, run on ``reactor`` in ``root`` (a directory of its own,
    empty), telling ``screen`` what happens.

    :ivar summary: what the demo did and measured, as ``--summary`` writes
        it.
    """

    def __init__(self, reactor: Any, root: FilePath[str], screen: Screen, keep: bool) -> None:
        self.reactor = reactor
        self.root = root
        self.screen = screen
        self.keep = keep
        self.nodes: dict[str, DemoNode] = {}
        # The owner serves the web client when it is kept running.
        web = ("--web", WEB) if keep else ()
        self.nodes[OWNER] = DemoNode(reactor, root, OWNER, *web)
        for name in MEMBERS:
            self.nodes[name] = DemoNode(reactor, root, name)
        self.nodes[MAILBOX] = DemoNode(reactor, root, MAILBOX, "--mailbox")
        self.group = ""
        #: A one-time login link to the owner's web client (``--keep``).
        self.web_url: str | None = None
        self._watch: _Watch | None = None
        self._events: Deferred[None] | None = None
        self.summary: dict[str, Any] = {"directory": root.path, "steps": [], "messages": []}
        self._started = reactor.seconds()

    def _now(self) -> float:
        return float(self.reactor.seconds())

    def _name(self, peer: str) -> str:
        for name, node in self.nodes.items():
            if node.peer_id == peer:
                return name
        return peer

    def _step(self, title: str) -> float:
        self.screen.step(title)
        return self._now()

    def _took(self, title: str, started: float) -> None:
        seconds = self._now() - started
        self.screen.took(seconds)
        self.summary["steps"].append({"title": title, "seconds": round(seconds, 3)})

    async def run(self) -> None:
        """
        Every step, from starting the nodes to the catch-up.
        """
        screen = self.screen
        screen.out.write(
            "Digital Spring demo: five nodes on this machine talk over TCP on 127.0.0.1,\n"
            "encrypted end to end, as they would across the internet.\n"
            f"Everything lives in {self.root.path}"
            + (
                " (kept, with the nodes running, at the end).\n"
                if self.keep
                else " (removed at the end; --keep keeps it).\n"
            )
        )
        await self.start_nodes()
        await self.make_group()
        await self.send_text()
        await self.send_file()
        await self.send_while_away()
        await self.catch_up()
        total = self._now() - self._started
        self.summary["seconds"] = round(total, 3)
        screen.out.write(f"\nThe demo ran in {total:.1f} s.\n")

    # --- the steps -------------------------------------------------------------

    async def start_nodes(self) -> None:
        title = "Five nodes start, each a real `twistd dspring` process"
        started = self._step(title)
        await _all(*(node.start() for node in self.nodes.values()))
        roles = {
            OWNER: "will own the group and send",
            MAILBOX: "the group's mailbox",
        }
        width = max(len(name) for name in self.nodes)
        for name, node in self.nodes.items():
            self.screen.say(
                f"{name:<{width}}  {node.address:<22}  peer {node.peer_id[:12]}...  "
                f"{roles.get(name, 'a member')}"
            )
        self.screen.say(
            "Each has its own identity (an Ed25519 key pair; the public key is its peer ID), "
            f"database and log, in {self.root.path}/NAME/. A mailbox keeps what members "
            "miss while they are away, as ciphertext it has no key to read."
        )
        self.summary["nodes"] = {
            name: {
                "peer_id": node.peer_id,
                "address": node.address,
                "data_dir": node.data_dir.path,
                "role": "owner" if name == OWNER else "mailbox" if name == MAILBOX else "member",
            }
            for name, node in self.nodes.items()
        }
        self._took(title, started)

    async def make_group(self) -> None:
        title = (
            f'{OWNER} makes the group "{GROUP}": {names_text(list(MEMBERS))} as members, '
            f"{MAILBOX} as its mailbox"
        )
        started = self._step(title)
        for node in self.nodes.values():
            book = AddressBook.in_data_dir(node.data_dir)
            for name, other in self.nodes.items():
                if other is not node:
                    book.add(PeerID.parse(other.peer_id), other.address, name)
        self.screen.say(
            "The five have each other's PEER_ID@ADDRESS in their contacts (`dspring contacts "
            f"add`), so each takes {OWNER}'s invitation without asking."
        )
        owner = self.nodes[OWNER]
        created = await owner.call("group-create", {"name": GROUP})
        self.group = created["group"]
        # The mailbox first: the members' invitations then name it.
        await owner.call("group-add", {"group": GROUP, "peer": MAILBOX, "role": "mailbox"})
        for name in MEMBERS:
            await owner.call("group-add", {"group": GROUP, "peer": name, "role": "member"})
        self._follow_owner()
        await self._until(
            "every member's taking its invitation",
            self._all_active,
        )
        for name in (*MEMBERS, MAILBOX):
            await self._until(
                f"{name}'s holding the group",
                lambda name=name: self._holds_group(name),  # type: ignore[misc]
            )
        await _all(*(self._follow_recipient(name) for name in (*MEMBERS, MAILBOX)))
        self.screen.say(
            f"Group {self.group[:16]}...: {len(MEMBERS)} members and a mailbox, all active."
        )
        self.summary["group"] = self.group
        self._took(title, started)

    async def send_text(self) -> None:
        title = f'{OWNER} sends a text to the group: "{TEXT}"'
        started = self._step(title)
        await self._send({"text": TEXT}, TEXT.encode("utf-8"), "text", None)
        self._took(title, started)

    async def send_file(self) -> None:
        path = self.root.child("photos.zip")
        data = os.urandom(FILE_SIZE)
        path.setContent(data)
        title = f"{OWNER} sends a {size_text(FILE_SIZE)} file, photos.zip, to the group"
        started = self._step(title)
        await self._send({"path": path.path}, data, "file", "photos.zip")
        self._took(title, started)

    async def send_while_away(self) -> None:
        away = self.nodes[AWAY]
        title = f"{AWAY} goes offline; {OWNER} sends a text and a file anyway"
        started = self._step(title)
        await away.stop()
        self.screen.say(f'{AWAY}\'s node stopped. The text: "{AWAY_TEXT}"')
        await self._send({"text": AWAY_TEXT}, AWAY_TEXT.encode("utf-8"), "text", None)
        path = self.root.child("menu.pdf")
        data = os.urandom(SMALL_FILE_SIZE)
        path.setContent(data)
        self.screen.say(f"The file: menu.pdf, {size_text(SMALL_FILE_SIZE)}.")
        await self._send({"path": path.path}, data, "file", "menu.pdf")
        self._took(title, started)

    async def catch_up(self) -> None:
        title = (
            f"Everyone but the mailbox goes offline; {AWAY} comes back and catches up "
            f"from {MAILBOX}"
        )
        started = self._step(title)
        others = [self.nodes[name] for name in (OWNER, *MEMBERS) if name != AWAY]
        await _all(*(node.stop() for node in others))
        self.screen.say(
            f"{names_text([n.name for n in others])} stopped: only {MAILBOX} holds what "
            f"{AWAY} missed."
        )
        box, away = self.nodes[MAILBOX], self.nodes[AWAY]
        held = await box.call("mailbox-status")
        before = await box.bytes_sent()
        missed = [m for m in self.summary["messages"] if AWAY in m["pending"]]
        back = self._now()
        await away.start()
        ready = self._now()
        asked: list[float] = []

        async def caught_up_yet() -> list[dict[str, Any]] | None:
            found = await self._holds(away, len(self.summary["messages"]))
            if not found and not asked and self._now() - ready > ASK_AGAIN:
                # What a user would do: ask for a catch-up (dspring group
                # catch-up), in case the one at start came too early.
                asked.append(self._now() - ready)
                await away.call("group-catch-up", {"group": self.group})
            return found

        inbox = await self._until(f"{AWAY}'s catching up", caught_up_yet)
        caught_up = self._now() - ready
        if asked:
            self.screen.say(
                f"{AWAY} had not caught up {asked[0]:.0f} s after it started; the demo asked "
                "it to catch up again (`dspring group catch-up`)."
            )
        carried = await box.bytes_sent() - before
        # The catch-up commits each message as it comes, and its report (what
        # the node's status counts) once it has asked every source.
        status = await away.call("status")
        deadline = self._now() + REPORT_WAIT
        while status["catch_up"]["messages"] < len(missed) and self._now() < deadline:
            await deferLater(self.reactor, POLL, lambda: None)
            status = await away.call("status")
        await self._verify(away, missed)
        size = sum(m["size"] for m in missed)
        self.screen.say(
            f"{AWAY}'s node started in {ready - back:.1f} s and asked the group's mailbox, its "
            f"neighbours and {OWNER} for what it missed; only {MAILBOX} answered. "
            f"{caught_up:.1f} s later {AWAY} had the {len(missed)} messages it missed "
            f"({size_text(size)}; its node counts {status['catch_up']['messages']} caught up)."
        )
        self.screen.say(
            f"{MAILBOX} held {held['messages']} messages of the group, "
            f"{size_text(held['bytes'])} of ciphertext and signed manifests. Its link carried "
            f"{carried:,} bytes to {AWAY}: {carried / size:.2f} x what {AWAY} missed."
        )
        self.screen.say(
            f"Checked: {AWAY} holds all {len(inbox)} messages, those it missed byte for byte."
        )
        self.summary["catch_up"] = {
            "member": AWAY,
            "source": MAILBOX,
            "messages": len(missed),
            "bytes": size,
            "mailbox_bytes_sent": carried,
            "mailbox_held": held["messages"],
            "seconds": round(caught_up, 3),
            "asked_again": bool(asked),
            "status": status["catch_up"],
            "inbox": len(inbox),
        }
        self._took(title, started)

    async def keep_running(self) -> None:
        """
        Start again every node the demo stopped, so that all five run when
        it ends (``--keep``).
        """
        stopped = [node for node in self.nodes.values() if not node.running]
        await _all(*(node.start() for node in stopped))
        owner = self.nodes[OWNER]

        async def login() -> dict[str, Any] | None:
            try:
                return await owner.call("web-login", {})
            except ControlError:
                return None  # not listening yet

        self.web_url = (await self._until(f"{OWNER}'s web client", login))["url"]

    # --- sending ---------------------------------------------------------------

    def _follow_owner(self) -> None:
        """
        Follow the owner's ``delivery`` events while it runs.
        """
        owner = self.nodes[OWNER]

        def on_event(event: str, data: dict[str, Any]) -> None:
            if event == "delivery" and self._watch is not None:
                self._watch.update(data, self._now())

        opened: Deferred[None] = Deferred()
        self._events = Deferred.fromCoroutine(
            owner.client().stream("events", {"to": GROUP}, on_event, lambda: opened.callback(None))
        )
        # The stream ends when the owner stops; nothing waits on it.
        self._events.addErrback(lambda failure: None)

    async def _follow_recipient(self, name: str) -> None:
        """
        Follow a recipient's own events of the group while it runs: how
        much of each message it holds, as the bars show it.
        """
        node = self.nodes[name]

        def on_event(event: str, data: dict[str, Any]) -> None:
            if event in ("receiving", "message") and self._watch is not None:
                self._watch.arrived(name, event, data, self._now())

        opened: Deferred[None] = Deferred()
        stream = Deferred.fromCoroutine(
            node.client().stream(
                "events", {"to": self.group}, on_event, lambda: opened.callback(None)
            )
        )

        def ended(failure: Any) -> None:
            # It ends when the node stops; one that never opened fails the step.
            if not opened.called:
                opened.errback(failure)

        stream.addErrback(ended)
        await opened

    async def _traffic(self) -> dict[str, int]:
        running = [node for node in self.nodes.values() if node.running]
        counts = await _all(*(node.bytes_sent() for node in running))
        return {node.name: count for node, count in zip(running, counts, strict=True)}

    async def _send(
        self, body: dict[str, Any], data: bytes, kind: str, file_name: str | None
    ) -> None:
        owner = self.nodes[OWNER]
        recipients = [*MEMBERS, MAILBOX]
        before = await self._traffic()
        watch = self._watch = _Watch(self._now(), self._name)
        answer = await owner.call("send", {"to": GROUP, **body})
        fragments = answer["fragments"]
        bars = self.screen.bars(recipients)

        def redraw() -> None:
            bars.update(dict(watch.shares), watch.has_it())

        watch.on_change = redraw
        watch.sent((answer["group"], answer["epoch"], answer["index"]))
        watch.update(answer, self._now())
        redraw()

        def too_late() -> None:
            if not watch.done.called:
                watch.done.errback(
                    DemoFailed(f"the message was not delivered in {DELIVERY_TIMEOUT:g} s")
                )

        timeout = self.reactor.callLater(DELIVERY_TIMEOUT, too_late)
        try:
            await watch.done
        finally:
            if timeout.active():
                timeout.cancel()
        self._watch = None
        seconds = self._now() - watch.sent_at
        after = await self._traffic()
        state = watch.state
        committed = sorted(self._name(p) for p in state["committed"])
        pending = sorted(self._name(p) for p in state["pending"])
        sent = {name: after[name] - before.get(name, 0) for name in after}
        size = len(data)
        unicast = size * len(recipients)
        carried = sent[OWNER]
        members = [name for name in committed if name != MAILBOX]
        line = f"{names_text(members)} {'has' if len(members) == 1 else 'have'} it"
        if MAILBOX in committed:
            line += f", {MAILBOX} holds it"
        if pending:
            line += f"; {names_text(pending)} {'is' if len(pending) == 1 else 'are'} away"
            line += " and will get it when back"
        what = "the text" if kind == "text" else "the file"
        say = self.screen.say
        say(f"{line} ({seconds:.1f} s; {plural(fragments, 'fragment')}).")
        say(f"{OWNER}'s link carried {carried:,} bytes: {carried / size:.2f} x {what}.")
        say(
            f"Unicast, one copy to each of the {len(recipients)} recipients, needs at least "
            f"{unicast:,} bytes ({len(recipients)} x {size:,}): {OWNER}'s link carried "
            f"{carried / unicast:.2f} x that"
            + (
                "; for a short text, reaching each member costs more than the text itself."
                if carried > unicast
                else "."
            )
        )
        helpers = [name for name in MEMBERS if sent.get(name, 0) > 0]
        if kind == "file" and helpers:
            say(
                "The members passed fragments on to each other: "
                + ", ".join(f"{name} sent {size_text(sent[name])}" for name in helpers)
                + "."
            )
        record = {
            "kind": kind,
            "file_name": file_name,
            "size": size,
            "sha256": _sha256(data),
            "epoch": answer["epoch"],
            "index": answer["index"],
            "fragments": fragments,
            "committed": committed,
            "pending": pending,
            "seconds": round(seconds, 3),
            "sender_bytes": carried,
            "unicast_bytes": unicast,
            "bytes_sent": sent,
            "reported": {name: watch.reported.get(name, []) for name in recipients},
            "has_it": {name: round(t, 3) for name, t in watch.has_it().items()},
        }
        self.summary["messages"].append(record)
        await self._verify_all(record, members)

    async def _verify_all(self, record: dict[str, Any], members: list[str]) -> None:
        await _all(*(self._verify(self.nodes[name], [record]) for name in members))
        self.screen.say(
            f"Checked: {names_text(members)} {'holds' if len(members) == 1 else 'hold'} "
            f"it byte for byte (SHA-256 {record['sha256'][:16]}...)."
        )

    async def _verify(self, node: DemoNode, records: list[dict[str, Any]]) -> None:
        """
        Check that ``node`` holds each message of ``records`` byte for byte.

        :raises DemoFailed: when it does not.
        """
        for record in records:
            where = {"group": self.group, "epoch": record["epoch"], "index": record["index"]}
            shown = await node.call("message", where)
            data = (
                base64.b64decode(shown["data"])
                if shown["type"] == "file"
                else shown["text"].encode("utf-8")
            )
            if _sha256(data) != record["sha256"]:
                raise DemoFailed(
                    f"{node.name} holds message {record['epoch']}/{record['index']}, "
                    "but not byte for byte what was sent"
                )

    # --- waiting ---------------------------------------------------------------

    async def _until(self, what: str, check: Callable[[], Any]) -> Any:
        deadline = self._now() + DELIVERY_TIMEOUT
        while True:
            found = await check()
            if found:
                return found
            if self._now() > deadline:
                raise DemoFailed(f"{what} did not happen in {DELIVERY_TIMEOUT:g} s")
            await deferLater(self.reactor, POLL, lambda: None)

    async def _all_active(self) -> bool:
        shown = await self.nodes[OWNER].call("group-show", {"group": GROUP})
        members = shown["members"]
        return len(members) == len(MEMBERS) + 1 and all(m["status"] == "active" for m in members)

    async def _holds_group(self, name: str) -> bool:
        listed = await self.nodes[name].call("group-list")
        return any(g["group"] == self.group for g in listed["groups"])

    async def _holds(self, node: DemoNode, count: int) -> list[dict[str, Any]] | None:
        inbox = await node.call("inbox", {"to": self.group})
        messages: list[dict[str, Any]] = inbox["messages"]
        return messages if len(messages) >= count else None

    # --- the end ---------------------------------------------------------------

    def write_summary(self, path: FilePath[str]) -> None:
        """
        Write :attr:`summary` to ``path`` as JSON, with the ID of every
        process the demo started, by node.
        """
        self.summary["processes"] = {name: node.pids for name, node in self.nodes.items()}
        path.setContent(json.dumps(self.summary, indent=1).encode("utf-8") + b"\n")

    async def stop_all(self) -> None:
        """
        Stop every node still running, and wait until each has ended.
        """
        await DeferredList(
            [Deferred.fromCoroutine(node.stop()) for node in self.nodes.values()],
            consumeErrors=True,
        )

    def kill_all(self) -> None:
        """
        End at once every node process still running.
        """
        for node in self.nodes.values():
            node.kill()
