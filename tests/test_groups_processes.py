"""
Groups end to end with real ``twistd -n dspring`` processes over TCP on
loopback addresses, driven with the ``dspring`` command as a user would.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from typing import IO, Any

from twisted.internet.defer import ensureDeferred
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from digitalspring.identity import load_identity
from digitalspring.multicast._context import decode_stored
from digitalspring.storage import DATABASE_NAME, NotStored, open_sqlite_store, storage_key

from ._nodes import NodeProcess, burst_data, burst_then_kill

#: The size of the file sent: large enough to take many fragments.
FILE_SIZE = 5 * 1024 * 1024


class _Follower:
    """
    A ``dspring follow`` process, its output read by a thread so that a
    wait for a line can time out.
    """

    def __init__(self, node: NodeProcess, *argv: str) -> None:
        self.lines: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digitalspring", "-d", node.data_dir.path, "follow", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None and self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        ready = self.proc.stderr.readline()
        assert "following" in ready, ready + self.proc.stderr.read()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """
        Read the output until a line matches ``pattern``.
        """
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if found := re.search(pattern, line):
                return found
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(
            f"follow printed no line matching {pattern!r}:\n{''.join(self.lines)}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=30)
        while not self._lines.empty():
            self.lines.append(self._lines.get())


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout


class GroupProcessTests(TestCase):
    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()

    def start(self, name: str) -> NodeProcess:
        node = NodeProcess(self.workdir, name)
        self.addCleanup(node.stop)
        node.wait_ready()
        return node

    def follow(self, node: NodeProcess, *argv: str) -> _Follower:
        follower = _Follower(node, *argv)
        self.addCleanup(follower.stop)
        return follower

    def wait_active(self, owner: NodeProcess, group: str, members: int) -> dict[str, Any]:
        """
        Poll ``group show`` until ``members`` members took their invitation.
        """
        deadline = time.monotonic() + 60
        while True:
            shown = json.loads(_ok(owner.dspring("group", "show", "--json", group)))
            active = [m for m in shown["members"] if m["status"] == "active"]
            if len(active) >= members or time.monotonic() > deadline:
                return shown
            time.sleep(0.1)

    async def test_group_send_follow_and_removal(self) -> None:
        """
        A creates a group with B and C (each has A as a contact, so each
        accepts unasked) and sends a text and a 5 MiB file: ``dspring
        follow`` on B and on C prints the text and saves the file, byte
        for byte, in ``DATA_DIR/received/``; ``send`` says both members
        have each.  A removes C and sends again: B's follower prints it,
        and C's node.db holds nothing that decrypts it: through the store,
        C is out of the group with no key of any epoch and only the first
        two messages; in the raw database and WAL, none of the new epoch's
        public key nor of the new message's manifest.
        """
        a, b, c = self.start("a"), self.start("b"), self.start("c")
        _ok(a.dspring("contacts", "add", "--name", "bob", f"{b.peer_id}@{b.address}"))
        _ok(a.dspring("contacts", "add", "--name", "carol", f"{c.peer_id}@{c.address}"))
        for member in (b, c):
            _ok(member.dspring("contacts", "add", "--name", "alice", f"{a.peer_id}@{a.address}"))
        created = _ok(a.dspring("group", "create", "friends"))
        group = re.search(r"created group friends  ([0-9a-f]{64})", created)
        assert group is not None, created
        group_id = group.group(1)
        _ok(a.dspring("group", "add", "friends", "bob"))
        _ok(a.dspring("group", "add", "friends", "carol"))
        shown = self.wait_active(a, "friends", 2)
        self.assertEqual({m["status"] for m in shown["members"]}, {"active"}, shown)
        follow_b, follow_c = self.follow(b, group_id), self.follow(c, group_id)

        sent = _ok(a.dspring("send", "friends", "hello", "friends"))
        self.assertIn("delivered to 2 of 2 members", sent)
        for follower in (follow_b, follow_c):
            follower.wait_for(r"\[\"friends\" [0-9a-f]{8}\] alice: hello friends$")

        data = os.urandom(FILE_SIZE)
        path = self.workdir.child("report.bin")
        path.setContent(data)
        sent = _ok(a.dspring("send", "friends", "--file", path.path, timeout=120))
        self.assertIn("delivered to 2 of 2 members", sent)
        for node, follower in ((b, follow_b), (c, follow_c)):
            follower.wait_for(rf"alice: file 'report.bin' \({FILE_SIZE} bytes\)")
            saved = follower.wait_for(r"saved to (.*)$").group(1)
            self.assertEqual(saved, node.data_dir.child("received").child("report.bin").path)
            self.assertEqual(FilePath(saved).getContent(), data)

        _ok(a.dspring("group", "remove", "friends", "carol"))
        sent = _ok(a.dspring("send", "friends", "after carol"))
        self.assertIn("delivered to 1 of 1 members", sent)
        follow_b.wait_for(r"alice: after carol$")

        # Wait until C has taken its removal, then stop A and C to read
        # their stores.
        deadline = time.monotonic() + 60
        while "removed" not in _ok(c.dspring("group", "list")) and time.monotonic() < deadline:
            time.sleep(0.1)
        follow_c.stop()
        self.assertNotIn("after carol", "".join(follow_c.lines))
        a.stop()
        c.stop()
        await ensureDeferred(self.check_nothing_decrypts(a, c, bytes.fromhex(group_id)))

    async def check_nothing_decrypts(self, a: NodeProcess, c: NodeProcess, group: bytes) -> None:
        from twisted.internet import reactor

        owner = await open_sqlite_store(
            reactor, a.data_dir, storage_key(load_identity(a.data_dir, None))
        )
        try:
            new_epoch = await owner.epoch(group, 1)
            [new_message] = await owner.history(group, (1, -1), 10)
        finally:
            await owner.close()

        removed = await open_sqlite_store(
            reactor, c.data_dir, storage_key(load_identity(c.data_dir, None))
        )
        try:
            stored = await removed.group(group)
            self.assertEqual(stored.state, "removed")
            old = await removed.epoch(group, 0)
            self.assertEqual((old.chain, old.access_key), (None, None))
            with self.assertRaises(NotStored):
                await removed.epoch(group, 1)
            kept = await removed.history(group)
            self.assertEqual([(m.epoch, m.index) for m in kept], [(0, 0), (0, 1)])
        finally:
            await removed.close()

        raw = b"".join(
            c.data_dir.child(name).getContent()
            for name in (DATABASE_NAME, DATABASE_NAME + "-wal")
            if c.data_dir.child(name).exists()
        )
        self.assertNotIn(new_epoch.signing_public, raw)
        self.assertNotIn(new_message.manifest, raw)


class StoreStartupTests(TestCase):
    def test_unusable_database_stops_the_start(self) -> None:
        """
        A ``node.db`` that is not a database stops ``twistd -n dspring``
        before it listens: exit status 1, one ``dspring: error:`` line
        naming the file, and the file left byte for byte as it was.
        """
        workdir = FilePath(self.mktemp())
        data_dir = workdir.child("a").child("data")
        data_dir.makedirs()
        garbage = b"this is not an SQLite database\n" * 100
        data_dir.child(DATABASE_NAME).setContent(garbage)
        node = NodeProcess(workdir, "a")
        self.addCleanup(node.stop)
        assert node.proc.stdout is not None
        output = node.proc.stdout.read()
        self.assertEqual(node.proc.wait(timeout=60), 1, output)
        errors = [line for line in output.splitlines() if line.startswith("dspring: error:")]
        self.assertEqual(
            errors,
            [
                f"dspring: error: {data_dir.child(DATABASE_NAME).path} is not an SQLite "
                "database; it was left as it is"
            ],
        )
        self.assertNotIn("ready at", output)
        self.assertNotIn("Traceback", output)
        self.assertEqual(data_dir.child(DATABASE_NAME).getContent(), garbage)


#: Messages in the burst.
BURST = 60


class KilledMemberTests(TestCase):
    timeout = 600

    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()

    def start(self, name: str, host: str = "", port: int = 0) -> NodeProcess:
        node = NodeProcess(self.workdir, name, host=host, port=port)
        self.addCleanup(node.stop)
        node.wait_ready()
        return node

    async def test_sigkill_mid_burst(self) -> None:
        """
        A member's real node process (``twistd -n dspring``) killed with
        SIGKILL while a burst of 60 messages of 150 kB (three fragments
        each, sent as files) arrives from the owner over TCP: every message
        the owner's store counts as committed by the member is in the
        member's node.db after the kill, whole (byte for byte what was sent) and
        complete, and the member's store holds no complete message that
        is not whole; restarted where the owner knows it, the member gets
        the rest from the owner, and ``dspring inbox`` shows all 60, each
        once, in order.
        """
        a, b = self.start("a"), self.start("b")
        _ok(a.dspring("contacts", "add", "--name", "bob", f"{b.peer_id}@{b.address}"))
        _ok(b.dspring("contacts", "add", "--name", "alice", f"{a.peer_id}@{a.address}"))
        created = _ok(a.dspring("group", "create", "burst"))
        found = re.search(r"([0-9a-f]{64})", created)
        assert found is not None, created
        group = bytes.fromhex(found.group(1))
        _ok(a.dspring("group", "add", "burst", "bob"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = json.loads(_ok(a.dspring("group", "show", "--json", "burst")))
            if [m["status"] for m in shown["members"]] == ["active"]:
                break
            time.sleep(0.1)
        else:
            self.fail(f"bob never took the invitation: {shown}")

        driver = burst_then_kill(a, "burst", b, self.workdir, BURST)
        self.assertEqual(driver.returncode, 0, driver.stdout + driver.stderr)
        self.assertEqual(b.proc.wait(timeout=30), -9)
        b.stop()
        # The owner stops too, so that its store can be read; an
        # acknowledgement it took but had not committed counts as pending.
        a.stop()

        from twisted.internet import reactor

        owner = await open_sqlite_store(
            reactor, a.data_dir, storage_key(load_identity(a.data_dir, None))
        )
        try:
            member = next(p for p in await owner.members(group) if str(p.peer) == b.peer_id)
            pending = set(await owner.undelivered(group, member.peer))
            sent = [(m.epoch, m.index) for m in await owner.history(group, None, 1000)]
        finally:
            await owner.close()
        self.assertEqual(len(sent), BURST)
        acknowledged = [key for key in sent if key not in pending]
        self.assertGreaterEqual(len(acknowledged), 3, driver.stdout)
        # The kill fell in the middle of the burst.
        self.assertTrue(pending, driver.stdout)

        kept = await self.read_member(b, group)
        self.assertLessEqual(set(acknowledged), set(kept))
        for (epoch, index), data in kept.items():
            self.assertEqual(data, burst_data(index), f"message {epoch}.{index} is not whole")

        a = self.start("a", a.host, int(a.address.rsplit(":", 1)[1]))
        b = self.start("b", b.host, int(b.address.rsplit(":", 1)[1]))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            shown = json.loads(_ok(a.dspring("group", "show", "--json", "burst")))
            if shown["members"][0]["undelivered"] == 0:
                break
            time.sleep(0.2)
        else:
            self.fail(f"bob never caught up: {shown}")
        inbox = json.loads(_ok(b.dspring("inbox", "--json", "-n", "1000", group.hex())))
        self.assertEqual(
            [(m["index"], m["size"]) for m in inbox["messages"]],
            [(i, len(burst_data(i))) for i in range(BURST)],
        )
        a.stop()
        b.stop()
        kept = await self.read_member(b, group)
        self.assertEqual(kept, {key: burst_data(key[1]) for key in sent}, "after the catch-up")

    async def read_member(self, node: NodeProcess, group: bytes) -> dict[tuple[int, int], bytes]:
        """
        The complete messages of ``group`` in ``node``'s store (opened
        with its integrity checked), their data by (epoch, index); a partial
        message is left to the owner's catch-up.
        """
        from twisted.internet import reactor

        store = await open_sqlite_store(
            reactor, node.data_dir, storage_key(load_identity(node.data_dir, None))
        )
        try:
            kept = {}
            for message in await store.history(group, None, 1000):
                self.assertEqual(message.state, "complete")
                assert message.content is not None
                content = decode_stored(message.content, int(message.sent_at or 0))
                kept[message.epoch, message.index] = content.data
            return kept
        finally:
            await store.close()
