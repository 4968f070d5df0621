"""
Tests for the SQLite store's own properties: its files, its thread, what
it does with a damaged or newer file, migrations, secrets at rest read from
the raw files, and durability across a SIGKILL of a real process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from digitalspring.storage import (
    MIGRATIONS,
    AddEpoch,
    AddFragment,
    AddGroup,
    AddInvitation,
    AddPrekeys,
    ChainState,
    CommitReceived,
    CommitSent,
    DamagedDatabase,
    DatabaseUnusable,
    DeleteGroup,
    DeletePrekey,
    DepositNotification,
    Enqueue,
    Epoch,
    ExpireHeld,
    ExpirePrekeys,
    ForgetEpochKeys,
    Group,
    HoldSealed,
    Invitation,
    MailboxTerms,
    MigrationFailed,
    NewerDatabase,
    NotADatabase,
    Prekey,
    PutBundle,
    RecordOpened,
    RegisterNotifyMember,
    SetMailboxes,
    SetMailboxTerms,
    SetSetting,
    SQLiteStore,
    StartMessage,
    StoredBundle,
    StoreLimits,
    TamperedRow,
    WrongStorageKey,
    open_sqlite_store,
)
from digitalspring.storage._schema import check_header
from digitalspring.storage._sealing import row_identity, seal
from digitalspring.testing._store import (
    ALICE,
    GROUP_ID,
    OTHER_GROUP_ID,
    OWNER,
    epoch_keys,
    joined_group,
    owned_group,
)

KEY = b"k" * 32


def _raw(data_dir: FilePath[str]) -> bytes:
    """
    The bytes of the database and its write-ahead log, as a thief reads them.
    """
    out = b""
    for name in ("node.db", "node.db-wal"):
        path = data_dir.child(name)
        if path.exists():
            out += path.getContent()
    return out


def _peek(data_dir: FilePath[str], sql: str, *args: Any) -> list[Any]:
    """
    Read the database through a read-only connection of its own, which
    changes nothing on disk.
    """
    uri = f"file:{data_dir.child('node.db').path}?mode=ro"
    connection = sqlite3.connect(uri, uri=True)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def _content(index: int, size: int = 8192) -> bytes:
    block = hashlib.sha256(b"content %d" % index).digest()
    return (block * (size // 32 + 1))[:size]


def _chain_key(next_index: int) -> bytes:
    return hashlib.sha256(b"chain %d" % next_index).digest()


class SQLiteTestCase(TestCase):
    """
    Opens stores in a fresh data directory and closes them after the test.
    """

    def setUp(self) -> None:
        self.data_dir = FilePath(self.mktemp())
        self.data_dir.makedirs()

    def open(
        self, key: bytes = KEY, migrations: tuple[str, ...] = MIGRATIONS
    ) -> Deferred[SQLiteStore]:
        d = open_sqlite_store(reactor, self.data_dir, key, StoreLimits(), migrations)

        def opened(store: SQLiteStore) -> SQLiteStore:
            self.addCleanup(store.close)
            return store

        return d.addCallback(opened)

    async def receive(self, store: SQLiteStore, index: int, content: bytes) -> None:
        await store.commit(StartMessage(GROUP_ID, 0, index, b"signed manifest", OWNER))
        await store.commit(AddFragment(GROUP_ID, 0, index, 0, b"ciphertext", OWNER))
        await store.commit(
            CommitReceived(
                GROUP_ID, 0, index, content, 1.0, ChainState(_chain_key(index + 1), index + 1)
            )
        )


def inline(test: Any) -> Any:
    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(test(self))

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


class FileTests(SQLiteTestCase):
    """
    The database file, its settings and its thread.
    """

    @inline
    async def test_modes(self) -> None:
        """
        node.db and its -wal and -shm files are readable by their owner
        only.
        """
        store = await self.open()
        await store.commit(SetSetting("a", "b"))
        for name in ("node.db", "node.db-wal", "node.db-shm"):
            mode = os.stat(self.data_dir.child(name).path).st_mode & 0o777
            self.assertEqual(mode, 0o600, name)

    @inline
    async def test_pragmas(self) -> None:
        """
        The connection runs in WAL mode, syncs every commit (FULL), and has
        foreign keys and secure delete on.
        """
        store = await self.open()

        def pragmas() -> list[Any]:
            names = ("journal_mode", "synchronous", "foreign_keys", "secure_delete")
            return [store._db.execute(f"PRAGMA {name}").fetchone()[0] for name in names]

        self.assertEqual(await store._run(pragmas), ["wal", 2, 1, 1])

    @inline
    async def test_off_the_reactor_thread(self) -> None:
        """
        Every statement runs in the store's one thread, never in the
        reactor's.
        """
        store = await self.open()
        threads: set[int] = set()
        await store._run(
            store._db.set_trace_callback, lambda sql: threads.add(threading.get_ident())
        )
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await self.receive(store, 0, b"hello")
        await store.history(GROUP_ID)
        self.assertEqual(len(threads), 1)
        self.assertNotIn(threading.get_ident(), threads)

    @inline
    async def test_reopen(self) -> None:
        """
        What was committed is there after the store is closed and opened
        again, and decrypts under the same key.
        """
        store = await self.open()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await self.receive(store, 0, b"kept")
        await store.close()
        store = await self.open()
        self.assertEqual((await store.message(GROUP_ID, 0, 0)).content, b"kept")
        self.assertEqual((await store.epoch(GROUP_ID)).chain, ChainState(_chain_key(1), 1))


class UnusableFileTests(SQLiteTestCase):
    """
    A file the store cannot use stops it with one typed error, and is left
    exactly as it was.
    """

    async def made(self) -> FilePath[str]:
        store = await self.open()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        for n in range(200):
            await store.commit(SetSetting(f"setting {n}", "x" * 200))
        await store.close()
        return self.data_dir.child("node.db")

    async def refused(
        self,
        error: type[DatabaseUnusable],
        key: bytes = KEY,
        migrations: tuple[str, ...] = MIGRATIONS,
    ) -> str:
        path = self.data_dir.child("node.db")
        before = path.getContent()
        siblings = sorted(self.data_dir.listdir())
        try:
            await self.open(key, migrations)
        except error as e:
            message = str(e)
        else:
            self.fail(f"expected {error.__name__}")
        self.assertEqual(path.getContent(), before)
        self.assertEqual(sorted(self.data_dir.listdir()), siblings)
        self.assertNotIn("\n", message)
        return message

    @inline
    async def test_not_sqlite(self) -> None:
        """
        A file that is not SQLite is NotADatabase.
        """
        self.data_dir.child("node.db").setContent(b"this is not a database\n" * 20)
        message = await self.refused(NotADatabase)
        self.assertIn("not an SQLite database", message)

    @inline
    async def test_truncated(self) -> None:
        """
        A database cut short is DamagedDatabase.
        """
        path = await self.made()
        data = path.getContent()
        path.setContent(data[: len(data) // 2 // 4096 * 4096])
        self.assertIn("truncated", await self.refused(DamagedDatabase))

    @inline
    async def test_short_beside_its_log(self) -> None:
        """
        A database shorter than its header says is not refused as
        truncated while a write-ahead log lies beside it (a checkpoint cut
        off by a kill leaves it so, and SQLite completes it from the log);
        SQLite's own checks decide.  Without the log it is truncated.
        """
        path = await self.made()
        data = path.getContent()
        path.setContent(data[: len(data) // 2 // 4096 * 4096])
        log = self.data_dir.child("node.db-wal")
        log.setContent(b"\0" * 32)
        check_header(path.path)
        log.setContent(b"")
        self.assertRaises(DamagedDatabase, check_header, path.path)
        log.remove()
        self.assertRaises(DamagedDatabase, check_header, path.path)

    @inline
    async def test_integrity(self) -> None:
        """
        A database whose pages were scribbled over fails the integrity
        check: DamagedDatabase.
        """
        path = await self.made()
        data = bytearray(path.getContent())
        for page in range(2, len(data) // 4096):
            data[page * 4096 + 8 : page * 4096 + 40] = b"\xff" * 32
        path.setContent(bytes(data))
        message = await self.refused(DamagedDatabase)
        self.assertIn("restore it from a backup", message)

    @inline
    async def test_newer(self) -> None:
        """
        A database from a newer version is NewerDatabase.
        """
        await self.made()
        connection = sqlite3.connect(self.data_dir.child("node.db").path)
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        connection.close()
        self.assertIn("newer", await self.refused(NewerDatabase))

    @inline
    async def test_wrong_key(self) -> None:
        """
        A database sealed under another identity's key is WrongStorageKey.
        """
        await self.made()
        await self.refused(WrongStorageKey, key=b"o" * 32)


class MigrationTests(SQLiteTestCase):
    """
    Forward migrations.
    """

    def write_old_message(self, index: int, content: bytes) -> None:
        """
        Write a received message as an older version did, with the columns
        every version has (today's code writes the columns of today).
        """
        connection = sqlite3.connect(self.data_dir.child("node.db").path)
        ad = row_identity("messages", "content", GROUP_ID, 0, index)
        connection.execute(
            "INSERT INTO messages (gid, epoch, idx, manifest, state, content, sent_at)"
            " VALUES ((SELECT gid FROM groups WHERE group_id = ?), 0, ?, ?, 'complete', ?, 1.0)",
            (GROUP_ID, index, b"signed manifest", seal(KEY, ad, content)),
        )
        connection.commit()
        connection.close()

    def write_old_sealed(self, item: bytes) -> None:
        """
        Hold a sealed item for ALICE in GROUP_ID as versions 4 and 5 did
        (no expiry).
        """
        connection = sqlite3.connect(self.data_dir.child("node.db").path)
        connection.execute(
            "INSERT INTO sealed_items (gid, recipient, item)"
            " VALUES ((SELECT gid FROM groups WHERE group_id = ?), ?, ?)",
            (GROUP_ID, ALICE.public_key, item),
        )
        connection.commit()
        connection.close()

    @inline
    async def test_from_first_version(self) -> None:
        """
        A file of version 1 is migrated to the current one by MIGRATIONS[1]
        with its contents kept: a received message, a member, and an outbox
        entry queued by version 1 (about no group), which is still read and
        delivered; the new entries are found by group and kind, members by
        peer, each through the index the migration made.
        """
        store = await self.open(migrations=MIGRATIONS[:1])
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await store.close()
        self.write_old_message(0, b"from version 1")
        self.assertEqual(_peek(self.data_dir, "PRAGMA user_version"), [(1,)])
        # What version 1 wrote in its outbox (it had no group column).
        connection = sqlite3.connect(self.data_dir.child("node.db").path)
        row = row_identity("outbox", "payload", ALICE.public_key, "epoch", repr(2.0))
        connection.execute(
            "INSERT INTO outbox (peer, kind, payload, size, created) VALUES (?, ?, ?, ?, ?)",
            (ALICE.public_key, "epoch", seal(KEY, row, b"v1 entry"), 8, 2.0),
        )
        connection.commit()
        connection.close()
        store = await self.open()
        self.assertEqual(_peek(self.data_dir, "PRAGMA user_version"), [(len(MIGRATIONS),)])
        self.assertEqual(len(MIGRATIONS), 6)
        self.assertEqual((await store.message(GROUP_ID, 0, 0)).content, b"from version 1")
        [old] = await store.outbox(ALICE)
        self.assertEqual((old.kind, old.payload, old.group_id), ("epoch", b"v1 entry", None))
        await store.commit(Enqueue(ALICE, "epoch", b"v2 entry", 3.0, GROUP_ID))
        [new] = await store.queued(ALICE, "epoch", GROUP_ID)
        self.assertEqual(new.payload, b"v2 entry")
        self.assertEqual(
            [e.payload for e in await store.outbox(ALICE)], [b"v1 entry", b"v2 entry"]
        )
        plan = _peek(
            self.data_dir,
            "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE peer = ? AND group_id = ?"
            " AND kind = ?",
            ALICE.public_key,
            GROUP_ID,
            "epoch",
        )
        self.assertIn("outbox_group", str(plan))
        plan = _peek(
            self.data_dir, "EXPLAIN QUERY PLAN SELECT gid FROM members WHERE peer = ?", b"p" * 32
        )
        self.assertIn("members_peer", str(plan))

    @inline
    async def test_from_second_version(self) -> None:
        """
        A file of version 2 is migrated by MIGRATIONS[2] with its messages
        kept (they expire never), and takes mailboxes: a member's list of
        its group's mailboxes, and a mailbox's terms and expiring messages,
        whose next expiry is found through the index the migration made.
        """
        store = await self.open(migrations=MIGRATIONS[:2])
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await store.close()
        self.write_old_message(0, b"from version 2")
        store = await self.open()
        self.assertEqual(_peek(self.data_dir, "PRAGMA user_version"), [(len(MIGRATIONS),)])
        kept = await store.message(GROUP_ID, 0, 0)
        self.assertEqual((kept.content, kept.expires), (b"from version 2", None))
        await store.commit(SetMailboxes(GROUP_ID, frozenset({ALICE})))
        self.assertEqual(await store.mailboxes(GROUP_ID), frozenset({ALICE}))
        served = bytes(range(1, 33))
        await store.commit(
            AddGroup(Group(served, "", OWNER, "mailbox", "spring", 6, 1.0)),
            AddEpoch(Epoch(served, 0, b"P" * 32, 1.0, access_key=b"A" * 32)),
            SetMailboxTerms(served, MailboxTerms(60.0, (0, 0))),
            StartMessage(served, 0, 0, b"m", OWNER, expires=61.0),
        )
        self.assertEqual(await store.next_expiry(), 61.0)
        plan = _peek(
            self.data_dir,
            "EXPLAIN QUERY PLAN SELECT min(expires) FROM messages WHERE expires IS NOT NULL",
        )
        self.assertIn("messages_expires", str(plan))

    @inline
    async def test_from_third_version(self) -> None:
        """
        A file of version 3 is migrated by MIGRATIONS[3] with its messages
        kept, and takes prekeys, key bundles and sealed items.
        """
        store = await self.open(migrations=MIGRATIONS[:3])
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await store.close()
        self.write_old_message(0, b"from version 3")
        store = await self.open()
        self.assertEqual(_peek(self.data_dir, "PRAGMA user_version"), [(len(MIGRATIONS),)])
        self.assertEqual((await store.message(GROUP_ID, 0, 0)).content, b"from version 3")
        signed = Prekey(b"P" * 32, b"p" * 32, expires=100)
        await store.commit(AddPrekeys((signed,)), RecordOpened(b"P" * 32, b"e" * 32))
        self.assertEqual(await store.prekeys(), [signed])
        bundle = StoredBundle(ALICE, 1, 100, b"bundle")
        await store.commit(PutBundle(bundle))
        self.assertEqual(await store.bundle(ALICE), bundle)
        await store.commit(HoldSealed(GROUP_ID, ALICE, b"sealed item"))
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 10), [b"sealed item"])

    @inline
    async def test_from_fourth_version(self) -> None:
        """
        A file of version 4 is migrated by MIGRATIONS[4] with its sealed
        items kept, and takes a notification box's members and
        notifications.
        """
        store = await self.open(migrations=MIGRATIONS[:4])
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await store.close()
        self.write_old_sealed(b"sealed item")
        store = await self.open()
        self.assertEqual(_peek(self.data_dir, "PRAGMA user_version"), [(len(MIGRATIONS),)])
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 10), [b"sealed item"])
        await store.commit(RegisterNotifyMember(ALICE, 1.0), DepositNotification(ALICE, b"n"))
        self.assertEqual(await store.notifications(ALICE, 10), [b"n"])

    @inline
    async def test_from_fifth_version(self) -> None:
        """
        A file of version 5 is migrated by MIGRATIONS[5] with its sealed
        items kept, without an expiry (they wait until taken, as they
        did), and takes items that expire.
        """
        store = await self.open(migrations=MIGRATIONS[:5])
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await store.close()
        self.write_old_sealed(b"old item")
        store = await self.open()
        self.assertEqual(_peek(self.data_dir, "PRAGMA user_version"), [(6,)])
        await store.commit(HoldSealed(GROUP_ID, ALICE, b"new item", 50.0), ExpireHeld(60.0))
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 10), [b"old item"])

    @inline
    async def test_later_migration(self) -> None:
        """
        A migration appended after the current ones runs on a current file,
        and the file's version is the last migration's.
        """
        store = await self.open()
        await store.commit(SetSetting("a", "b"))
        await store.close()
        later = (*MIGRATIONS, "CREATE TABLE later (x INTEGER);")
        store = await self.open(migrations=later)
        self.assertEqual(await store.setting("a"), "b")
        await store.close()
        self.assertEqual(_peek(self.data_dir, "PRAGMA user_version"), [(len(later),)])
        self.assertEqual(_peek(self.data_dir, "SELECT count(*) FROM later"), [(0,)])

    @inline
    async def test_failed_migration(self) -> None:
        """
        A migration that fails leaves the file at its old version with all
        its contents, and stops with MigrationFailed.
        """
        store = await self.open()
        await store.commit(SetSetting("a", "b"))
        await store.close()
        broken = (*MIGRATIONS, "CREATE TABLE fine (x); INSERT INTO nowhere VALUES (1);")
        try:
            await self.open(migrations=broken)
        except MigrationFailed as e:
            self.assertIn("unchanged", str(e))
        else:
            self.fail("expected MigrationFailed")
        self.assertEqual(_peek(self.data_dir, "PRAGMA user_version"), [(len(MIGRATIONS),)])
        self.assertEqual(
            _peek(self.data_dir, "SELECT name FROM sqlite_master WHERE name = 'fine'"), []
        )
        store = await self.open()
        self.assertEqual(await store.setting("a"), "b")


class SecretsAtRestTests(SQLiteTestCase):
    """
    Keys and contents in the raw files.
    """

    @inline
    async def test_no_plaintext_in_files(self) -> None:
        """
        Neither message contents, nor any key (a sent message's key
        included), nor outbox and invitation payloads (which carry keys)
        appear in node.db or its WAL, even while they are stored.
        """
        store = await self.open()
        keys = epoch_keys()
        await store.commit(AddGroup(joined_group()), AddEpoch(keys))
        await store.commit(
            AddGroup(owned_group(OTHER_GROUP_ID)),
            AddEpoch(epoch_keys(OTHER_GROUP_ID)),
            CommitSent(
                OTHER_GROUP_ID,
                0,
                0,
                b"m",
                [b"c"],
                None,
                1.0,
                ChainState(b"n" * 32, 1),
                frozenset(),
                message_key=b"sent message key".ljust(32, b"!"),
            ),
        )
        secret = b"the secret message " * 10
        await self.receive(store, 0, secret)
        await store.commit(
            Enqueue(OWNER, "invite", b"outbox epoch keys", 1.0),
            AddInvitation(Invitation(OWNER, b"i" * 32, b"invitation epoch keys", 1.0)),
        )
        raw = _raw(self.data_dir)
        self.assertTrue(b"signed manifest" in raw)
        for plain in (
            secret[:19],
            keys.access_key,
            keys.signing_secret,
            _chain_key(1),
            b"outbox epoch keys",
            b"invitation epoch keys",
            b"sent message key",
        ):
            assert plain is not None
            self.assertFalse(plain in raw)

    @inline
    async def test_tampered_rows(self) -> None:
        """
        A sealed value moved to another row, or a chain key whose index was
        changed, fails with TamperedRow.
        """
        store = await self.open()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await self.receive(store, 0, b"first")
        await self.receive(store, 1, b"second")
        await store.close()
        connection = sqlite3.connect(self.data_dir.child("node.db").path)
        connection.execute(
            "UPDATE messages SET content = (SELECT content FROM messages WHERE idx = 1)"
            " WHERE idx = 0"
        )
        connection.execute("UPDATE epochs SET next_index = 7")
        connection.commit()
        connection.close()
        store = await self.open()
        await self.assertFailure(store.message(GROUP_ID, 0, 0), TamperedRow)
        self.assertEqual((await store.message(GROUP_ID, 0, 1)).content, b"second")
        await self.assertFailure(store.epoch(GROUP_ID), TamperedRow)

    @inline
    async def test_forgotten_keys_gone_from_files(self) -> None:
        """
        Once an epoch's keys are forgotten, no sealed copy of any of its
        chain keys (current or ratcheted away) nor of its other secrets is
        left in node.db or its WAL, and the WAL is truncated to nothing:
        even the storage key cannot recover them.
        """
        store = await self.open()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        sealed: set[bytes] = set()
        for index in range(5):
            await self.receive(store, index, b"message %d" % index)
            [(chain, secret, access)] = _peek(
                self.data_dir, "SELECT chain_key, signing_secret, access_key FROM epochs"
            )
            sealed.update(blob for blob in (chain, secret, access) if blob is not None)
        raw = _raw(self.data_dir)
        self.assertTrue(any(blob in raw for blob in sealed))
        await store.commit(ForgetEpochKeys(GROUP_ID, 0))
        raw = _raw(self.data_dir)
        self.assertFalse([blob for blob in sealed if blob in raw])
        self.assertEqual(self.data_dir.child("node.db-wal").getsize(), 0)

    @inline
    async def test_used_prekeys_gone_from_files(self) -> None:
        """
        A prekey secret is stored sealed, never in clear; once a one-time
        prekey is deleted (used) and a signed one expired, no sealed copy
        of either secret is left in node.db or its WAL, and the WAL is
        truncated to nothing: even the storage key cannot recover them.
        """
        store = await self.open()
        one_time = Prekey(b"O" * 32, b"one-time secret".ljust(32, b"!"), audience=ALICE)
        signed = Prekey(b"S" * 32, b"signed secret".ljust(32, b"!"), expires=100)
        await store.commit(AddPrekeys((one_time, signed)))
        await store.commit(RecordOpened(b"S" * 32, b"E" * 32))
        sealed = {blob for (blob,) in _peek(self.data_dir, "SELECT secret FROM prekeys")}
        raw = _raw(self.data_dir)
        self.assertFalse(b"one-time secret" in raw or b"signed secret" in raw)
        self.assertEqual(len(sealed), 2)
        self.assertTrue(all(blob in raw for blob in sealed))
        await store.commit(DeletePrekey(b"O" * 32), ExpirePrekeys(100.0))
        raw = _raw(self.data_dir)
        self.assertFalse([blob for blob in sealed if blob in raw])
        self.assertEqual(self.data_dir.child("node.db-wal").getsize(), 0)
        self.assertEqual(_peek(self.data_dir, "SELECT count(*) FROM prekeys_opened"), [(0,)])

    @inline
    async def test_deleted_group_gone_from_files(self) -> None:
        """
        Once a group is deleted, none of its sealed contents or keys is
        left in node.db or its WAL.
        """
        store = await self.open()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        for index in range(3):
            await self.receive(store, index, _content(index))
        sealed = {row[0] for row in _peek(self.data_dir, "SELECT content FROM messages")}
        sealed |= {row[0] for row in _peek(self.data_dir, "SELECT chain_key FROM epochs")}
        await store.commit(DeleteGroup(GROUP_ID))
        raw = _raw(self.data_dir)
        self.assertFalse([blob for blob in sealed if blob[24:] in raw])
        self.assertFalse(b"signed manifest" in raw)


_CHILD = """
import sys
from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.python.filepath import FilePath
from digitalspring.storage import (
    AddEpoch, AddFragment, AddGroup, ChainState, CommitReceived, StartMessage,
    open_sqlite_store,
)
from digitalspring.storage._schema import check_header
from digitalspring.storage._sealing import row_identity, seal
from digitalspring.testing._store import ALICE, GROUP_ID, OWNER, epoch_keys, joined_group
from tests.test_storage_sqlite import KEY, _chain_key, _content

async def burst(reactor):
    store = await open_sqlite_store(reactor, FilePath(sys.argv[1]), KEY)
    await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
    for i in range(100000):
        content = _content(i)
        await store.commit(StartMessage(GROUP_ID, 0, i, b"manifest %d" % i, OWNER))
        await store.commit(AddFragment(GROUP_ID, 0, i, 0, content[:4096], OWNER))
        await store.commit(AddFragment(GROUP_ID, 0, i, 1, content[4096:], OWNER))
        await store.commit(
            CommitReceived(GROUP_ID, 0, i, content, float(i), ChainState(_chain_key(i + 1), i + 1))
        )
        print(i, flush=True)

react(lambda reactor: Deferred.fromCoroutine(burst(reactor)))
"""


class DurabilityTests(SQLiteTestCase):
    """
    What was acknowledged survives a SIGKILL.
    """

    @inline
    async def test_sigkill_mid_burst(self) -> None:
        """
        A real process commits a burst of incoming messages (manifest,
        two fragments, then content and ratchet) and prints each one's
        index once its commit fired; it is killed with SIGKILL in the
        middle.  Reopened, every acknowledged message is there whole, the
        chain stands right after the last complete one, and whatever was
        in flight is either absent or a partial message with whole
        fragments.
        """
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self.data_dir.path],
            stdout=subprocess.PIPE,
            cwd=root,
        )
        assert child.stdout is not None
        acknowledged = []
        for line in child.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) == 40:
                child.send_signal(signal.SIGKILL)
                break
        acknowledged.extend(int(line) for line in child.stdout)
        child.wait()
        self.assertEqual(child.returncode, -signal.SIGKILL)
        self.assertEqual(acknowledged, list(range(len(acknowledged))))

        store = await self.open()
        complete = await store.history(GROUP_ID, limit=100000)
        self.assertGreaterEqual(len(complete), len(acknowledged))
        for index, message in enumerate(complete):
            self.assertEqual((message.index, message.content), (index, _content(index)))
            self.assertEqual(await store.fragments(GROUP_ID, 0, index), {})
        chain = (await store.epoch(GROUP_ID)).chain
        self.assertEqual(chain, ChainState(_chain_key(len(complete)), len(complete)))
        for partial in await store.partial_messages(GROUP_ID):
            self.assertEqual(partial.index, len(complete))
            content = _content(partial.index)
            expected = {0: content[:4096], 1: content[4096:]}
            fragments = await store.fragments(GROUP_ID, 0, partial.index)
            self.assertEqual(fragments, {n: expected[n] for n in fragments})
        self.assertEqual(_peek(self.data_dir, "PRAGMA integrity_check"), [("ok",)])
