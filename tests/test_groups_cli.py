"""
Tests of the node's groups as the user reaches them: the node opening its
store before it listens, the group routes of the control API on two
in-process nodes over TCP (conversations with a contact, petnames, refusals),
and the ``dspring`` commands' parsing and display of what peers send.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import sys
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock, deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.channel import ConnectionPool
from digitalspring.cli import Options as CLIOptions
from digitalspring.cli._display import (
    MAX_SAVED_NAME,
    message_lines,
    parse_message_id,
    printable,
    safe_file_name,
    save_received,
)
from digitalspring.cli._groups import report_lines
from digitalspring.cli._messages import BAR_WIDTH, _Delivery
from digitalspring.control import ControlClient, ControlError, NodeGone
from digitalspring.dht import DirectoryChain
from digitalspring.directory import AddressBook
from digitalspring.identity import Identity
from digitalspring.multicast import FRAGMENT_SIZE
from digitalspring.node import Node, StartFailed
from digitalspring.node._groups import RECEIVING_INTERVAL
from digitalspring.storage import DamagedDatabase, IStore, MemoryStore
from digitalspring.transport import MemoryNetwork

from ._nodes import node_in_process


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class NodeStoreTests(SynchronousTestCase):
    """
    The node opens its store at start-up, before it listens.
    """

    def node(self, open_store: Any) -> tuple[Node, MemoryNetwork]:
        clock = Clock()
        network = MemoryNetwork(clock)
        network.add_host("a")
        identity = Identity.generate()
        transports = {"memory": network.transport("a")}
        pool = ConnectionPool(identity, clock, transports, DirectoryChain([]))
        node = Node(identity, clock, transports, ["memory:1"], pool, open_store=open_store)
        return node, network

    def test_groups_start_before_listening(self) -> None:
        """
        With a store, the node starts its multicast service on it, whose
        commands are in the pool, and only then listens; on stop the
        store is closed.
        """
        store = MemoryStore()
        node, _ = self.node(lambda: succeed(store))
        node.startService()
        assert node.multicast is not None
        self.assertTrue(node.multicast.running)
        self.assertIs(node.store, store)
        self.assertTrue(node.pool.locators)
        services = list(node)
        self.assertLess(services.index(node.multicast), services.index(node._listeners[0]))
        self.successResultOf(node.stopService())
        self.assertTrue(store._closed)

    def test_store_refused(self) -> None:
        """
        A store that cannot be opened (damaged, newer, the wrong key) stops
        the start: ``ready`` fails with its reason, and the node never
        listens nor runs groups.
        """
        reason = "/d/node.db is damaged (file is not a database); restore it from a backup"
        node, _ = self.node(lambda: fail(DamagedDatabase(reason)))
        node.startService()
        failure = self.failureResultOf(node.ready, StartFailed)
        self.assertEqual(str(failure.value), reason)
        self.assertIsNone(node.multicast)
        self.assertFalse([listener for listener in node._listeners if listener.running])
        self.successResultOf(node.stopService())

    def test_stopped_while_opening(self) -> None:
        """
        A node stopped while its store is still opening closes the store
        once it opens, and starts nothing on it.
        """
        store = MemoryStore()
        opening: Deferred[IStore] = Deferred()
        node, _ = self.node(lambda: opening)
        node.startService()
        self.successResultOf(node.stopService())
        opening.callback(store)
        self.assertIsNone(node.multicast)
        self.assertTrue(store._closed)


class DisplayTests(SynchronousTestCase):
    """
    What peers send is shown and saved safely.
    """

    def test_control_characters_stripped(self) -> None:
        """
        Escape sequences, other C0 and C1 controls, DEL and bidirectional
        overrides are removed from what is printed; a text keeps its own
        newlines, a one-line field does not.
        """
        hostile = "a\x1b]0;pwned\x07b\x1b[2Jc\x9b31md\x7fe\u202ef\rg\nh"
        self.assertEqual(printable(hostile), "a]0;pwnedb[2Jc31mdefg h")
        self.assertEqual(printable(hostile, lines=True), "a]0;pwnedb[2Jc31mdefg\nh")
        message = {
            "group": "ab" * 32,
            "epoch": 0,
            "index": 0,
            "group_name": None,
            "proposed_name": "evil\x1b[31m",
            "sent_at": 0,
            "sender": "peer",
            "sender_name": None,
            "type": "file",
            "file_name": "x\x1b[1A.txt",
            "size": 3,
        }
        for line in message_lines(message):
            self.assertNotIn("\x1b", line)

    def test_file_names_sanitised(self) -> None:
        """
        A proposed file name loses its directories, its leading dots and
        its control characters, never is empty, and is cut to a length a
        file system takes, keeping its extension.
        """
        self.assertEqual(safe_file_name("../../etc/passwd"), "_.._etc_passwd")
        self.assertEqual(safe_file_name(".."), "file")
        self.assertEqual(safe_file_name("."), "file")
        self.assertEqual(safe_file_name(""), "file")
        self.assertEqual(safe_file_name(".bashrc"), "bashrc")
        self.assertEqual(safe_file_name("a\\b/c\x00d"), "a_b_cd")
        long = safe_file_name("x" * 300 + ".pdf")
        self.assertEqual(len(long.encode()), MAX_SAVED_NAME)
        self.assertTrue(long.endswith(".pdf"))

    def test_never_overwrites(self) -> None:
        """
        Saving files of one name keeps each: the next gets ``-1``, ``-2``
        before its extension; nothing is written outside
        ``DATA_DIR/received/``, and a symbolic link there is not followed.
        """
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        first = save_received(data_dir, "report.pdf", b"one")
        second = save_received(data_dir, "../report.pdf", b"two")
        third = save_received(data_dir, "report.pdf", b"three")
        received = data_dir.child("received")
        self.assertEqual(
            [p.basename() for p in (first, second, third)],
            ["report.pdf", "_report.pdf", "report-1.pdf"],
        )
        self.assertEqual(first.getContent(), b"one")
        self.assertEqual(third.getContent(), b"three")
        self.assertEqual({p.parent() for p in (first, second, third)}, {received})
        target = data_dir.child("target")
        target.setContent(b"keep")
        os.symlink(target.path, received.child("link").path)
        saved = save_received(data_dir, "link", b"evil")
        self.assertEqual(saved.basename(), "link-1")
        self.assertEqual(target.getContent(), b"keep")
        self.assertEqual(os.stat(saved.path).st_mode & 0o777, 0o600)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class CommandTests(SynchronousTestCase):
    """
    Parsing and progress of the commands.
    """

    def test_options_after_arguments(self) -> None:
        """
        ``send GROUP --file PATH`` and ``group add GROUP PEER --role
        mailbox`` read their options after the arguments; after ``--``,
        an option is text.
        """
        options = CLIOptions()
        options.parseOptions(["send", "friends", "--file", "/tmp/f"])
        self.assertEqual(
            (options.subOptions["to"], options.subOptions["file"]), ("friends", "/tmp/f")
        )
        options = CLIOptions()
        options.parseOptions(["group", "add", "friends", "bob", "--role", "mailbox"])
        self.assertEqual(options.subOptions.subOptions["role"], "mailbox")
        options = CLIOptions()
        options.parseOptions(["send", "friends", "--", "--file", "x"])
        self.assertEqual(options.subOptions["text"], "--file x")

    def test_strategy_option(self) -> None:
        """
        ``group create`` takes ``--strategy`` (``spring`` unless given),
        before or after the name.
        """
        options = CLIOptions()
        options.parseOptions(["group", "create", "friends"])
        self.assertEqual(options.subOptions.subOptions["strategy"], "spring")
        options = CLIOptions()
        options.parseOptions(["group", "create", "friends", "--strategy", "unicast"])
        self.assertEqual(
            (options.subOptions.subOptions["name"], options.subOptions.subOptions["strategy"]),
            ("friends", "unicast"),
        )

    def test_catch_up_report_names_sources(self) -> None:
        """
        A catch-up's report names each source by its contact's name when
        the report gives one, else by its peer ID.
        """
        report = {
            "committed": 1,
            "position": [0, 1],
            "newest": None,
            "missing": [],
            "needs_keys": None,
            "held_back": ["p1"],
            "gaps": [],
            "misbehaved": [],
            "unreachable": ["p2", "p3"],
            "names": {"p1": "bob", "p2": "carol\x1b[2J"},
        }
        lines = report_lines(report)
        self.assertIn("  held back: bob", lines)
        self.assertIn("  not reachable: carol[2J", lines)
        self.assertIn("  not reachable: p3", lines)

    def test_message_ids(self) -> None:
        """
        A file's line in ``inbox`` ends with the ID ``save`` takes: its
        group's first 8 digits, epoch and index; anything else is no ID.
        """
        message = {
            "group": "ab" * 32,
            "epoch": 2,
            "index": 7,
            "sent_at": 0,
            "sender": "peer",
            "sender_name": "alice",
            "group_name": "friends",
            "type": "file",
            "file_name": "a.pdf",
            "size": 3,
        }
        [line] = message_lines(message)
        self.assertTrue(line.endswith("alice: file 'a.pdf' (3 bytes)  id abababab:2/7"), line)
        self.assertEqual(parse_message_id("ABABABAB:2/7"), ("abababab", 2, 7))
        for wrong in ("abababab", "abababab:2", "xyz:1/2", ":1/2", "ab:1/-2"):
            self.assertRaises(ValueError, parse_message_id, wrong)
        self.assertRaises(usage.UsageError, CLIOptions().parseOptions, ["save", "nope"])

    def test_mailbox_retention(self) -> None:
        """
        ``group add --role mailbox --retention`` takes seconds, or minutes,
        hours or days; a retention for a member, or one that is not a
        duration, is a usage error.
        """
        for text, seconds in [("3600", 3600), ("90m", 5400), ("12h", 43200), ("30d", 2592000)]:
            options = CLIOptions()
            options.parseOptions(
                ["group", "add", "g", "bob", "--role", "mailbox", "--retention", text]
            )
            self.assertEqual(options.subOptions.subOptions["retention"], seconds)
        for argv in (
            ["--retention", "30d"],
            ["--role", "mailbox", "--retention", "0"],
            ["--role", "mailbox", "--retention", "soon"],
            ["--role", "mailbox", "--retention", "-1d"],
        ):
            self.assertRaises(
                usage.UsageError, CLIOptions().parseOptions, ["group", "add", "g", "bob", *argv]
            )
        options = CLIOptions()
        options.parseOptions(["mailbox"])
        self.assertEqual(options.subOptions.subCommand, "status")

    def state(self, **changes: Any) -> dict[str, Any]:
        state: dict[str, Any] = {
            "group": "ab" * 32,
            "epoch": 0,
            "index": 3,
            "fragments": 10,
            "committed": [],
            "pending": ["b", "c"],
            "unreached": [],
            "progress": {},
        }
        state.update(changes)
        return state

    def test_progress_bar_on_a_terminal(self) -> None:
        """
        On a terminal the bar redraws on each change; it is done once every
        member committed, and the summary says who has it.
        """
        out = _Terminal()
        delivery = _Delivery(self.state(), out)
        delivery.update(self.state(progress={"b": 5, "c": 5}))
        self.assertIn(f"\r[{'#' * (BAR_WIDTH // 2)}", out.getvalue())
        self.assertFalse(delivery.done.called)
        delivery.update(self.state(committed=["b", "c"], pending=[]))
        self.assertTrue(delivery.done.called)
        self.assertIn("100%  2/2 members", out.getvalue())
        summary = delivery.summary({"b": "bob"})
        self.assertEqual(summary[0], "message 0/3 (10 fragments): delivered to 2 of 2 members")
        self.assertIn("  delivered: bob", summary)

    def test_summary_counts_mailboxes_apart(self) -> None:
        """
        A group's mailboxes are counted apart from its members in the
        summary: "held by" them, not "delivered to" them.
        """
        state = self.state(committed=["b", "box"], pending=["c"], mailboxes=["box"])
        delivery = _Delivery(state, io.StringIO())
        summary = delivery.summary({"b": "bob", "box": "box"})
        self.assertEqual(
            summary[0],
            "message 0/3 (10 fragments): delivered to 1 of 2 members, held by 1 of 1 mailboxes",
        )
        self.assertIn("  held:      box", summary)
        self.assertIn("  delivered: bob", summary)

    def test_no_bar_in_a_pipe(self) -> None:
        """
        Not on a terminal nothing is drawn; a member out of reach ends the
        wait once the transmission ended, and is named pending.
        """
        out = io.StringIO()
        delivery = _Delivery(self.state(), out)
        delivery.update(self.state(committed=["b"], pending=["c"], unreached=["c"]))
        self.assertFalse(delivery.done.called)
        delivery.update(
            self.state(committed=["b"], pending=["c"], unreached=["c"], transmitted=True)
        )
        self.assertTrue(delivery.done.called)
        self.assertEqual(out.getvalue(), "")
        self.assertIn(
            "  pending:   c (not reachable now; it gets the message when it is back)",
            delivery.summary({}),
        )


class GroupRouteTests(TestCase):
    """
    The group routes of two real nodes over TCP on loopback.
    """

    async def contacts(self) -> tuple[Node, ControlClient, Node, ControlClient]:
        a, client_a = await node_in_process(self, "a")
        b, client_b = await node_in_process(self, "b")
        assert a.groups is not None and b.groups is not None
        AddressBook.in_data_dir(a.groups._book.path.parent()).add(
            b.peer_id, b.addresses()[0], "bob"
        )
        AddressBook.in_data_dir(b.groups._book.path.parent()).add(
            a.peer_id, a.addresses()[0], "alice"
        )
        return a, client_a, b, client_b

    async def test_conversation(self) -> None:
        """
        ``send`` to a contact makes a two-member group on first use (and
        reuses it); the contact answers through its own; each side's
        inbox of the contact shows both as one conversation.
        """
        _, client_a, _, client_b = await self.contacts()
        first = await client_a.call("send", {"to": "bob", "text": "hi bob"})
        self.assertTrue(first["created"])
        await self.settled(client_a, first)
        again = await client_a.call("send", {"to": "bob", "text": "still there?"})
        self.assertFalse(again["created"])
        self.assertEqual(again["group"], first["group"])
        await self.settled(client_a, again)
        answer = await client_b.call("send", {"to": "alice", "text": "hi alice"})
        self.assertTrue(answer["created"])
        await self.settled(client_b, answer)
        # Interleaved by send time, to the second: within one second,
        # each side's own order holds.
        inbox_a = (await client_a.call("inbox", {"to": "bob"}))["messages"]
        self.assertEqual([m["text"] for m in inbox_a if m["outgoing"]], ["hi bob", "still there?"])
        self.assertEqual([m["text"] for m in inbox_a if not m["outgoing"]], ["hi alice"])
        self.assertEqual({m["conversation_name"] for m in inbox_a}, {"bob"})
        inbox_b = (await client_b.call("inbox", {"to": "alice"}))["messages"]
        self.assertEqual(
            [m["text"] for m in inbox_b if not m["outgoing"]], ["hi bob", "still there?"]
        )
        self.assertEqual([m["text"] for m in inbox_b if m["outgoing"]], ["hi alice"])
        listed = (await client_b.call("group-list"))["groups"]
        self.assertEqual({g["conversation_name"] for g in listed}, {"alice"})

    async def settled(self, client: ControlClient, sent: dict[str, Any]) -> None:
        """
        Wait until the recipient committed a sent message.
        """
        from twisted.internet.task import deferLater

        for _ in range(200):
            shown = await client.call("group-show", {"group": sent["group"]})
            if all(m["undelivered"] == 0 and m["status"] == "active" for m in shown["members"]):
                return
            await deferLater(_reactor(), 0.05, lambda: None)
        self.fail(f"not delivered: {shown}")

    async def test_names_and_refusals(self) -> None:
        """
        A group is named by its ID or its petname; a petname a contact has
        is refused, as is a group a contact's name stands for, a name both
        a group and a contact (named later) have, sending to a group this
        node does not own, and a relative file path.
        """
        a, client_a, _, client_b = await self.contacts()
        created = await client_a.call("group-create", {"name": "friends"})
        by_name = await client_a.call("group-show", {"group": "friends"})
        by_id = await client_a.call("group-show", {"group": created["group"]})
        self.assertEqual(by_name["group"], by_id["group"])
        with self.assertRaises(ControlError) as caught:
            await client_a.call("group-create", {"name": "Bob"})
        self.assertIn("contact", str(caught.exception))
        with self.assertRaises(ControlError) as caught:
            await client_a.call("group-create", {"name": "FRIENDS"})
        self.assertIn("already a group's", str(caught.exception))
        with self.assertRaises(ControlError) as caught:
            await client_a.call("group-show", {"group": "bob"})
        self.assertIn("is a contact, not a group", str(caught.exception))
        assert a.groups is not None
        AddressBook.in_data_dir(a.groups._book.path.parent()).add(
            Identity.generate().peer_id, "tcp:127.0.0.1:9", "Friends"
        )
        with self.assertRaises(ControlError) as caught:
            await client_a.call("send", {"to": "friends", "text": "hi"})
        self.assertIn("names both a group and a contact", str(caught.exception))
        await client_a.call("send", {"to": created["group"], "text": "by ID it goes"})
        with self.assertRaises(ControlError) as caught:
            await client_a.call("send", {"to": created["group"], "path": "relative.txt"})
        self.assertIn("absolute path", str(caught.exception))
        await client_a.call("group-add", {"group": created["group"], "peer": "bob"})
        for _ in range(200):
            groups = (await client_b.call("group-list"))["groups"]
            if groups:
                break
            from twisted.internet.task import deferLater

            await deferLater(_reactor(), 0.05, lambda: None)
        [group] = groups
        with self.assertRaises(ControlError) as caught:
            await client_b.call("send", {"to": group["group"], "text": "hi"})
        self.assertIn("only a group's owner sends", str(caught.exception))
        named = await client_b.call("group-name", {"group": group["group"], "name": "alices"})
        self.assertEqual(named["petname"], "alices")
        shown = await client_b.call("group-show", {"group": "alices"})
        self.assertEqual(json.dumps(shown["neighbours"]), "[]")

    async def test_consent(self) -> None:
        """
        An invitation from a peer who is not a contact waits in
        ``invitations`` (its proposed name as sent) until ``accept`` with
        the start of the group's ID joins it; ``block`` and ``unblock``
        answer with the peer.
        """
        from twisted.internet.task import deferLater

        a, client_a = await node_in_process(self, "a")
        b, client_b = await node_in_process(self, "b")
        assert a.groups is not None
        AddressBook.in_data_dir(a.groups._book.path.parent()).add(
            b.peer_id, b.addresses()[0], "bob"
        )
        created = await client_a.call("group-create", {"name": "club"})
        await client_a.call("group-add", {"group": "club", "peer": "bob"})
        for _ in range(200):
            waiting = (await client_b.call("invitations"))["invitations"]
            if waiting:
                break
            await deferLater(_reactor(), 0.05, lambda: None)
        [invitation] = waiting
        self.assertEqual(
            (invitation["from"], invitation["group"], invitation["name"]),
            (str(a.peer_id), created["group"], "club"),
        )
        self.assertEqual((await client_b.call("group-list"))["groups"], [])
        with self.assertRaises(ControlError):
            await client_b.call("accept", {"group": "0" * 64})
        joined = await client_b.call("accept", {"group": created["group"][:8]})
        self.assertEqual(joined["group"], created["group"])
        [group] = (await client_b.call("group-list"))["groups"]
        self.assertEqual((group["group"], group["role"]), (created["group"], "member"))
        self.assertEqual((await client_b.call("invitations"))["invitations"], [])
        blocked = await client_b.call("block", {"peer": str(a.peer_id)})
        self.assertEqual(blocked["peer"], str(a.peer_id))
        unblocked = await client_b.call("unblock", {"peer": str(a.peer_id)})
        self.assertEqual(unblocked["peer"], str(a.peer_id))

    async def group_with_bob(self) -> tuple[Node, ControlClient, Node, ControlClient, str]:
        """
        A owns group ``friends`` with B (who has A as a contact) a member,
        active: its ID.
        """
        a, client_a, b, client_b = await self.contacts()
        group = (await client_a.call("group-create", {"name": "friends"}))["group"]
        await client_a.call("group-add", {"group": group, "peer": "bob"})
        for _ in range(200):
            shown = await client_a.call("group-show", {"group": group})
            if [m["status"] for m in shown["members"]] == ["active"]:
                return a, client_a, b, client_b, group
            await deferLater(_reactor(), 0.05, lambda: None)
        self.fail(f"bob did not join: {shown}")

    async def test_strategy(self) -> None:
        """
        ``group-create`` makes a group of the strategy named (``spring``
        unless named), and refuses a strategy no plugin of the node has,
        listing those it has; the group is not made.
        """
        _, client_a, _, _ = await self.contacts()
        made = await client_a.call("group-create", {"name": "plain", "strategy": "unicast"})
        self.assertEqual(made["strategy"], "unicast")
        self.assertEqual(
            (await client_a.call("group-show", {"group": "plain"}))["strategy"], "unicast"
        )
        default = await client_a.call("group-create", {"name": "usual"})
        self.assertEqual(default["strategy"], "spring")
        for wrong in ("flood", 3):
            with self.assertRaises(ControlError) as caught:
                await client_a.call("group-create", {"name": "other", "strategy": wrong})
            self.assertRegex(
                str(caught.exception),
                r"unknown multicast strategy .*; installed strategies: .*spring.*unicast",
            )
        names = [g["petname"] for g in (await client_a.call("group-list"))["groups"]]
        self.assertEqual(sorted(names), ["plain", "usual"])

    async def test_receiving_events(self) -> None:
        """
        A member's event stream tells how much of a file it holds as the
        fragments reach it (its own count, growing to the message's
        fragments), spaced by ``RECEIVING_INTERVAL`` but for the last,
        which comes before the message itself.
        """
        _, client_a, b, client_b, group = await self.group_with_bob()
        events: list[tuple[str, dict[str, Any]]] = []
        opened: Deferred[None] = Deferred()

        def on_event(event: str, data: dict[str, Any]) -> None:
            events.append((event, data))
            if event == "message":
                assert b.groups is not None
                for sink in list(b.groups._sinks):
                    sink.close()

        stream = Deferred.fromCoroutine(
            client_b.stream("events", {"to": group}, on_event, lambda: opened.callback(None))
        )
        await opened
        path = FilePath(self.mktemp())
        path.setContent(os.urandom(20 * FRAGMENT_SIZE))
        sent = await client_a.call("send", {"to": group, "path": path.path})
        with self.assertRaises(NodeGone):
            await stream
        await self.settled(client_a, sent)
        self.assertEqual(events[-1][0], "message")
        receiving = [data for event, data in events if event == "receiving"]
        self.assertEqual(
            {(d["group"], d["epoch"], d["index"]) for d in receiving}, {(group, 0, 0)}
        )
        self.assertEqual({d["total"] for d in receiving}, {sent["fragments"]})
        counts = [d["fragments"] for d in receiving]
        self.assertEqual(counts, sorted(set(counts)))
        self.assertEqual(counts[-1], sent["fragments"])
        times = [d["at"] for d in receiving[:-1]]
        for before, after in itertools.pairwise(times):
            self.assertGreaterEqual(after - before, RECEIVING_INTERVAL)

    async def test_catch_up_names_sources(self) -> None:
        """
        A catch-up's report names each source it lists by the member's
        name for it: the owner, away, is "not reachable: alice".
        """
        a, _, _, client_b, group = await self.group_with_bob()
        await a.stopService()
        report = await client_b.call("group-catch-up", {"group": group})
        self.assertIn(str(a.peer_id), report["unreachable"])
        self.assertEqual(report["names"], {str(a.peer_id): "alice"})
        self.assertIn("  not reachable: alice", report_lines(report))

    async def dspring(self, data_dir: FilePath[str], *argv: str) -> tuple[bytes, bytes, int]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "digitalspring", "--data-dir", data_dir.path, *argv],
            env=dict(os.environ),
        )
        return out, err, code

    async def test_save(self) -> None:
        """
        ``dspring save ID PATH`` writes a file received earlier, by the ID
        ``inbox`` shows, to PATH (never over a file), into a directory
        under its safe name, to stdout with ``-``, or by default into
        ``DATA_DIR/received/``; an ID naming no message is an error.
        """
        _, client_a, b, _, group = await self.group_with_bob()
        data = os.urandom(3 * FRAGMENT_SIZE)
        path = FilePath(self.mktemp())
        path.makedirs()
        source = path.child("report.pdf")
        source.setContent(data)
        sent = await client_a.call("send", {"to": group, "path": source.path})
        await self.settled(client_a, sent)
        assert b.groups is not None
        data_dir = b.groups._book.path.parent()
        for _ in range(200):
            out, err, code = await self.dspring(data_dir, "inbox")
            if b"report.pdf" in out:
                break
            await deferLater(_reactor(), 0.05, lambda: None)
        found = re.search(rb"file 'report.pdf' \(\d+ bytes\)  id ([0-9a-f]{8}:0/0)\n", out)
        assert found is not None, out
        message = found.group(1).decode()
        self.assertEqual(message, f"{group[:8]}:0/0")

        target = FilePath(self.mktemp())
        out, err, code = await self.dspring(data_dir, "save", message, target.path)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.decode(), f"saved {len(data)} bytes to {target.path}\n")
        self.assertEqual(target.getContent(), data)
        out, err, code = await self.dspring(data_dir, "save", message, target.path)
        self.assertEqual(code, 1)
        self.assertIn(b"cannot write", err)
        self.assertEqual(target.getContent(), data)

        out, err, code = await self.dspring(data_dir, "save", message, path.path)
        self.assertEqual(
            (code, out.decode()),
            (0, f"saved {len(data)} bytes to {path.child('report-1.pdf').path}\n"),
        )
        out, err, code = await self.dspring(data_dir, "save", message, "-")
        self.assertEqual((code, out), (0, data))
        out, err, code = await self.dspring(data_dir, "save", message)
        self.assertEqual(code, 0, err)
        self.assertEqual(data_dir.child("received").child("report.pdf").getContent(), data)

        out, err, code = await self.dspring(data_dir, "save", f"{group[:8]}:0/9")
        self.assertEqual(code, 1)
        self.assertIn(b"holds no message 0/9", err)
        out, err, code = await self.dspring(data_dir, "save", "00000000:0/0")
        self.assertEqual(code, 1)
        self.assertIn(b"no group's ID starts with 00000000", err)
