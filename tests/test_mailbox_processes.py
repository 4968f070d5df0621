"""
Mailboxes end to end (issue 12) with real ``twistd -n dspring`` processes
over TCP on loopback addresses: what a mailbox's database holds, a member
catching up from it while the owner is away, and a mailbox killed with
SIGKILL mid-transfer losing nothing it acknowledged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from digitalspring.identity import load_identity
from digitalspring.multicast import check_fragment, decode_manifest
from digitalspring.storage import DATABASE_NAME, open_sqlite_store, storage_key

from ._nodes import NodeProcess, burst_then_kill

#: A file sent through the mailbox: several fragments.
FILE_SIZE = 1024 * 1024


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout


def _wait(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s")
        time.sleep(0.2)


async def _open(node: NodeProcess) -> Any:
    from twisted.internet import reactor

    return await open_sqlite_store(
        reactor, node.data_dir, storage_key(load_identity(node.data_dir, None))
    )


class _ProcessTest(TestCase):
    timeout = 600

    def setUp(self) -> None:
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()

    def start(self, name: str, *extra: str, host: str = "", port: int = 0) -> NodeProcess:
        node = NodeProcess(self.workdir, name, *extra, host=host, port=port)
        self.addCleanup(node.stop)
        node.wait_ready()
        return node

    def again(self, node: NodeProcess, name: str, *extra: str) -> NodeProcess:
        """
        Start ``node`` again where its peers know it.
        """
        return self.start(name, *extra, host=node.host, port=int(node.address.rsplit(":", 1)[1]))

    def befriend(self, *nodes: tuple[str, NodeProcess]) -> None:
        """
        Every node has every other in its address book, by name.
        """
        for _, node in nodes:
            for name, other in nodes:
                if other is not node:
                    _ok(
                        node.dspring(
                            "contacts", "add", "--name", name, f"{other.peer_id}@{other.address}"
                        )
                    )

    def group(self, owner: NodeProcess, name: str, *members: tuple[str, str]) -> str:
        created = _ok(owner.dspring("group", "create", name))
        found = re.search(r"([0-9a-f]{64})", created)
        assert found is not None, created
        for member, role in members:
            _ok(owner.dspring("group", "add", name, member, "--role", role))
        _wait(
            "every member's taking its invitation",
            lambda: all(
                m["status"] == "active"
                for m in json.loads(_ok(owner.dspring("group", "show", "--json", name)))["members"]
            ),
        )
        return found.group(1)

    def undelivered(self, owner: NodeProcess, group: str, peer: str) -> int:
        shown = json.loads(_ok(owner.dspring("group", "show", "--json", group)))
        [entry] = [m for m in shown["members"] if m["peer"] == peer]
        count: int = entry["undelivered"]
        return count


class MailboxDatabaseTests(_ProcessTest):
    async def test_only_ciphertext_and_manifests(self) -> None:
        """
        A (owner), B (member) and M (``--mailbox``): while B is away, A
        sends a text and a 1 MiB file, which M holds; A goes away, B comes
        back and gets both from M (``dspring inbox``; ``dspring status``
        says what it caught up).  ``dspring mailbox status`` shows what M
        holds.  M's node.db holds the group's access key and signing public
        key and no other key; each message as its signed manifest and
        ciphertext fragments that match it, with no content; and neither
        the text nor any part of the file, nor any of A's message or chain
        keys, appears in M's database or log files.
        """
        a, b = self.start("a"), self.start("b")
        m = self.start("m", "--mailbox")
        self.befriend(("alice", a), ("bob", b), ("box", m))
        group = self.group(a, "letters", ("bob", "member"), ("box", "mailbox"))
        _wait(
            "B's learning the mailbox", lambda: b.dspring("group", "show", group).returncode == 0
        )
        time.sleep(1)
        b.stop()
        text = "the golden jubilee is on the 12th"
        data = os.urandom(FILE_SIZE)
        path = self.workdir.child("invitation.pdf")
        path.setContent(data)
        _ok(a.dspring("send", "letters", text, "--timeout", "5"))
        _ok(a.dspring("send", "letters", "--file", path.path, "--timeout", "5"))
        _wait("M's holding both", lambda: self.undelivered(a, "letters", m.peer_id) == 0)
        status = json.loads(_ok(m.dspring("mailbox", "status", "--json")))
        self.assertEqual((status["messages"], len(status["groups"])), (2, 1))
        self.assertEqual(status["groups"][0]["owner"], a.peer_id)
        self.assertGreater(status["bytes"], FILE_SIZE)
        self.assertIn("holding:  2 messages", _ok(m.dspring("mailbox", "status")))
        a.stop()

        b = self.again(b, "b")
        inbox = _wait(
            "B's catching up",
            lambda: (
                found
                if len(found := json.loads(_ok(b.dspring("inbox", "--json", group)))["messages"])
                == 2
                else None
            ),
        )
        self.assertEqual(inbox[0]["text"], text)
        self.assertEqual((inbox[1]["file_name"], inbox[1]["size"]), ("invitation.pdf", FILE_SIZE))
        self.assertIn("caught up:   2 messages in 1 group", _ok(b.dspring("status")))
        b.stop()
        m.stop()
        await ensureDeferred(self.check_mailbox_files(a, m, bytes.fromhex(group), text, data))

    async def check_mailbox_files(
        self, a: NodeProcess, m: NodeProcess, group: bytes, text: str, data: bytes
    ) -> None:
        owner = await _open(a)
        try:
            owner_epoch = await owner.epoch(group)
            keys = [(await owner.message(group, 0, index)).message_key for index in range(2)]
            owner_fragments = [await owner.fragments(group, 0, index) for index in range(2)]
        finally:
            await owner.close()
        box = await _open(m)
        try:
            epoch = await box.epoch(group)
            self.assertEqual(
                (epoch.chain, epoch.signing_secret, epoch.revealed_secret), (None, None, None)
            )
            self.assertEqual(epoch.access_key, owner_epoch.access_key)
            self.assertEqual(epoch.signing_public, owner_epoch.signing_public)
            for index in range(2):
                stored = await box.message(group, 0, index)
                self.assertEqual((stored.state, stored.content), ("complete", None))
                manifest = decode_manifest(stored.manifest)
                fragments = await box.fragments(group, 0, index)
                self.assertEqual(fragments, owner_fragments[index])
                for number, fragment in fragments.items():
                    check_fragment(manifest, number, fragment)
                self.assertEqual(len(fragments), len(manifest.fragment_hashes))
        finally:
            await box.close()
        raw = b"".join(
            m.data_dir.child(name).getContent()
            for name in (DATABASE_NAME, DATABASE_NAME + "-wal")
            if m.data_dir.child(name).exists()
        )
        self.assertNotIn(text.encode(), raw)
        for start in range(0, len(data), 4096):
            self.assertNotIn(data[start : start + 32], raw)
        assert owner_epoch.chain is not None
        for secret in [owner_epoch.chain.key, *keys]:
            assert secret is not None
            self.assertNotIn(secret, raw)


#: Messages in the burst.
BURST = 40


class KilledMailboxTests(_ProcessTest):
    async def test_sigkill_mid_transfer(self) -> None:
        """
        A mailbox's real node process killed with SIGKILL while a burst of
        40 messages of 150 kB arrives over TCP loses nothing it
        acknowledged: every message the owner's store counts as held by the
        mailbox is in the mailbox's node.db after the kill, whole (its
        fragments the owner's, matching the manifest); restarted where the
        owner knows it, it gets the rest, and holds all 40, each once.
        """
        a = self.start("a")
        m = self.start("m", "--mailbox")
        self.befriend(("alice", a), ("box", m))
        group = self.group(a, "burst", ("box", "mailbox"))
        driver = burst_then_kill(a, "burst", m, self.workdir, BURST)
        self.assertEqual(driver.returncode, 0, driver.stdout + driver.stderr)
        self.assertEqual(m.proc.wait(timeout=30), -9)
        m.stop()
        a.stop()
        group_id = bytes.fromhex(group)
        owner = await _open(a)
        try:
            box_peer = next(
                p.peer for p in await owner.members(group_id) if str(p.peer) == m.peer_id
            )
            pending = set(await owner.undelivered(group_id, box_peer))
            sent = {
                (s.epoch, s.index): await owner.fragments(group_id, s.epoch, s.index)
                for s in await owner.history(group_id, None, 1000)
            }
        finally:
            await owner.close()
        self.assertEqual(len(sent), BURST)
        acknowledged = [key for key in sent if key not in pending]
        self.assertGreaterEqual(len(acknowledged), 3, driver.stdout)
        self.assertTrue(pending, driver.stdout)
        held = await self.held(m, group_id)
        self.assertLessEqual(set(acknowledged), set(held))
        for key, fragments in held.items():
            self.assertEqual(fragments, sent[key], f"message {key} is not whole")

        a = self.again(a, "a")
        m = self.again(m, "m", "--mailbox")
        _wait(
            "the mailbox's getting the rest",
            lambda: self.undelivered(a, "burst", m.peer_id) == 0,
            timeout=180,
        )
        a.stop()
        m.stop()
        self.assertEqual(await self.held(m, group_id), sent)

    async def held(
        self, node: NodeProcess, group: bytes
    ) -> dict[tuple[int, int], dict[int, bytes]]:
        """
        What a mailbox holds whole of ``group``, its fragments by (epoch,
        index), each checked against its manifest; what is still arriving
        is left to the owner's catch-up.
        """
        store = await _open(node)
        try:
            held = {}
            for message in await store.held_after(group, (-1, -1), 1000):
                if message.state != "complete":
                    continue
                manifest = decode_manifest(message.manifest)
                fragments = await store.fragments(group, message.epoch, message.index)
                self.assertEqual(len(fragments), len(manifest.fragment_hashes))
                for number, fragment in fragments.items():
                    check_fragment(manifest, number, fragment)
                held[message.epoch, message.index] = fragments
            return held
        finally:
            await store.close()
