# -*- test-case-name: tests.test_storage_sqlite -*-
"""
The store the nodes people run use: one SQLite file, ``DATA_DIR/node.db``.

One connection, used by one thread: a Twisted thread pool of exactly one
worker, which queues every read and write in the order they were asked and
runs them off the reactor thread.  The connection is made with
``check_same_thread=False`` only because the pool, not Python, guarantees
that a single thread uses it at a time.  One writer means no lock waits, no
``SQLITE_BUSY``, and a checkpoint that nothing reading can hold back.

The connection runs in WAL mode with ``synchronous=FULL``: a transaction is
on disk (the log is synced) when its Deferred fires, so what the node
acknowledges after a commit survives a power cut, not only a crash of the
process (``NORMAL`` would only promise the latter in WAL mode).  See
``docs/storage.rst``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..identity import PeerID
from ._errors import (
    AlreadyStored,
    DamagedDatabase,
    MigrationFailed,
    NotStored,
    PeerBlocked,
    StorageError,
    StoreClosed,
)
from ._interfaces import IStore
from ._rules import check_chain, check_mailbox_groups, check_mailbox_quota, check_quota
from ._schema import MIGRATIONS, check_header, check_key, migrate, validate
from ._sealing import row_identity, seal, unseal
from ._values import (
    AddEpoch,
    AddFragment,
    AddGroup,
    AddInvitation,
    AddPrekeys,
    Block,
    ChainState,
    Change,
    ChangeEdges,
    CloseEpoch,
    CommitReceived,
    CommitSent,
    CountAttempt,
    DeleteGroup,
    DeletePrekey,
    DeliveryState,
    DepositNotification,
    Dequeue,
    DropFragments,
    DropInvitation,
    DropMessage,
    DropQueued,
    Edge,
    Enqueue,
    Epoch,
    EpochClose,
    ExpireHeld,
    ExpirePrekeys,
    ForgetEpochKeys,
    ForgetRecipient,
    Group,
    HeldMessage,
    HoldMessage,
    HoldSealed,
    Invitation,
    KeepOnlySigningSecret,
    MailboxTerms,
    MailboxUsage,
    MarkDelivered,
    Member,
    NotifyMember,
    OutboxEntry,
    Prekey,
    PutBundle,
    PutMember,
    RecordOpened,
    RefuseNotification,
    RegisterNotifyMember,
    RevealSigningSecret,
    SetGroupState,
    SetMailboxes,
    SetMailboxTerms,
    SetNeighbours,
    SetPetname,
    SetSetting,
    StartMessage,
    StoredBundle,
    StoredMessage,
    StoreLimits,
    TakeNotifications,
    TakeSealed,
    Unblock,
    UnregisterNotifyMember,
    edge,
)

#: The database's file name in the data directory.
DATABASE_NAME = "node.db"

_T = TypeVar("_T")
_Cursor = sqlite3.Connection


def open_sqlite_store(
    reactor: IReactorFromThreads,
    data_dir: FilePath[str],
    key: bytes,
    limits: StoreLimits | None = None,
    migrations: tuple[str, ...] = MIGRATIONS,
) -> Deferred[SQLiteStore]:
    """
    Open the node's database in ``data_dir``, creating it (mode 0600, as
    its ``-wal`` and ``-shm`` files then are) or migrating it forward.

    An existing file is checked before anything writes to it; a file that
    fails a check is left exactly as it is.

    :param key: the storage key (:func:`~digitalspring.storage.storage_key`).
    :param migrations: the schema's migrations (tests add their own).
    :returns: a Deferred that fires with the open store.  It fails with
        :class:`~digitalspring.storage.NotADatabase`,
        :class:`~digitalspring.storage.DamagedDatabase`,
        :class:`~digitalspring.storage.NewerDatabase`,
        :class:`~digitalspring.storage.WrongStorageKey` or
        :class:`~digitalspring.storage.MigrationFailed`.
    """
    pool = ThreadPool(minthreads=1, maxthreads=1, name="dspring-store")
    pool.start()
    # As adbapi does: a reactor that stops without the store being closed
    # still joins the thread, instead of hanging the process at exit.
    trigger = IReactorCore(reactor).addSystemEventTrigger("during", "shutdown", pool.stop)
    path = data_dir.child(DATABASE_NAME).path

    def opened(connection: sqlite3.Connection) -> SQLiteStore:
        return SQLiteStore(reactor, pool, trigger, connection, key, limits or StoreLimits(), path)

    def failed(reason: Any) -> Any:
        IReactorCore(reactor).removeSystemEventTrigger(trigger)
        pool.stop()
        return reason

    d = deferToThreadPool(reactor, pool, _connect, path, key, migrations)
    return d.addCallbacks(opened, failed)


def _connect(path: str, key: bytes, migrations: tuple[str, ...]) -> sqlite3.Connection:
    version = 0
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        if os.path.getsize(path):
            check_header(path)
            version = validate(path, key, migrations)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise DamagedDatabase(f"{path} cannot be put in WAL mode (it is in {mode} mode)")
        for pragma in (
            "synchronous = FULL",
            "foreign_keys = ON",
            "secure_delete = ON",
            "cell_size_check = ON",
        ):
            connection.execute(f"PRAGMA {pragma}")
        try:
            migrate(connection, version, key, migrations)
        except sqlite3.Error as e:
            raise MigrationFailed(
                f"upgrading {path} from version {version} failed ({e}); it is unchanged"
            ) from None
        check_key(connection, path, key)
    except BaseException:
        connection.close()
        raise
    return connection


def _sealed(value: bytes | None, key: bytes, row: bytes) -> bytes | None:
    return None if value is None else seal(key, row, value)


def _unsealed(value: bytes | None, key: bytes, row: bytes) -> bytes | None:
    return None if value is None else unseal(key, row, value)


@implementer(IStore)
class SQLiteStore:
    """
    An :class:`~digitalspring.storage.IStore` in one SQLite file.  Make it
    with :func:`open_sqlite_store`.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        pool: ThreadPool,
        trigger: Any,
        connection: sqlite3.Connection,
        key: bytes,
        limits: StoreLimits,
        path: str,
    ) -> None:
        self._reactor = reactor
        self._pool = pool
        self._trigger = trigger
        self._db = connection
        self._key = key
        self._limits = limits
        self.path = path
        self._closed = False

    # --- the worker --------------------------------------------------------

    def _run(self, function: Callable[..., _T], *args: Any) -> Deferred[_T]:
        if self._closed:
            return fail(StoreClosed("the store is closed"))
        return deferToThreadPool(
            self._reactor,
            self._pool,
            self._guarded,
            function,
            *args,
        )

    def _guarded(self, function: Callable[..., _T], *args: Any) -> _T:
        try:
            return function(*args)
        except sqlite3.IntegrityError as e:
            raise StorageError(f"the store refused a change: {e}") from None
        except sqlite3.DatabaseError as e:
            raise DamagedDatabase(
                f"{self.path} is damaged ({e}); restore it from a backup"
            ) from None

    def close(self) -> Deferred[None]:
        if self._closed:
            return succeed(None)
        d = self._run(self._db.close)
        self._closed = True

        def stop(result: object) -> object:
            IReactorCore(self._reactor).removeSystemEventTrigger(self._trigger)
            self._pool.stop()
            return result

        return d.addBoth(stop)

    # --- row helpers ---------------------------------------------------------

    def _gid(self, group_id: bytes) -> int:
        row = self._db.execute("SELECT gid FROM groups WHERE group_id = ?", (group_id,)).fetchone()
        if row is None:
            raise NotStored(f"no group {group_id.hex()}")
        gid: int = row[0]
        return gid

    def _mid(self, gid: int, group_id: bytes, peer: PeerID) -> int:
        row = self._db.execute(
            "SELECT mid FROM members WHERE gid = ? AND peer = ?", (gid, peer.public_key)
        ).fetchone()
        if row is None:
            raise NotStored(f"{peer} is not a member of group {group_id.hex()}")
        mid: int = row[0]
        return mid

    def _msg(self, group_id: bytes, epoch: int, index: int) -> tuple[int, str]:
        row = self._db.execute(
            "SELECT msg, messages.state FROM messages JOIN groups USING (gid)"
            " WHERE group_id = ? AND epoch = ? AND idx = ?",
            (group_id, epoch, index),
        ).fetchone()
        if row is None:
            raise NotStored(f"no message {epoch}/{index} in group {group_id.hex()}")
        return row[0], row[1]

    def _read_epoch(self, group_id: bytes, epoch: int | None) -> Epoch:
        gid = self._gid(group_id)
        query = (
            "SELECT epoch, signing_public, created, chain_key, next_index, signing_secret,"
            " access_key, close_last_index, close_last_hash, revealed_secret FROM epochs"
            " WHERE gid = ?"
        )
        if epoch is None:
            row = self._db.execute(query + " ORDER BY epoch DESC LIMIT 1", (gid,)).fetchone()
        else:
            row = self._db.execute(query + " AND epoch = ?", (gid, epoch)).fetchone()
        if row is None:
            raise NotStored(f"no epoch {epoch} in group {group_id.hex()}")
        number, public, created, chain_key, next_index, secret, access, last, last_hash, rev = row
        key = self._key

        def unsealed(column: str, value: bytes | None) -> bytes | None:
            return _unsealed(value, key, row_identity("epochs", column, group_id, number))

        chain = None
        if chain_key is not None:
            ad = row_identity("epochs", "chain_key", group_id, number, next_index)
            chain = ChainState(unseal(key, ad, chain_key), next_index)
        return Epoch(
            group_id,
            number,
            public,
            created,
            chain=chain,
            signing_secret=unsealed("signing_secret", secret),
            access_key=unsealed("access_key", access),
            close=None if last is None else EpochClose(last, last_hash),
            revealed_secret=unsealed("revealed_secret", rev),
        )

    def _message_value(self, group_id: bytes, row: tuple[Any, ...]) -> StoredMessage:
        epoch, index, manifest, state, content, sent_at, from_peer, message_key, expires = row
        ad = row_identity("messages", "content", group_id, epoch, index)
        key_ad = row_identity("messages", "message_key", group_id, epoch, index)
        return StoredMessage(
            group_id,
            epoch,
            index,
            manifest,
            state,
            _unsealed(content, self._key, ad),
            sent_at,
            None if from_peer is None else PeerID(from_peer),
            _unsealed(message_key, self._key, key_ad),
            expires,
        )

    # --- reads -----------------------------------------------------------------

    def group(self, group_id: bytes) -> Deferred[Group]:
        def read() -> Group:
            row = self._db.execute(
                "SELECT group_id, name, owner, role, strategy, degree, created, petname, state"
                " FROM groups WHERE group_id = ?",
                (group_id,),
            ).fetchone()
            if row is None:
                raise NotStored(f"no group {group_id.hex()}")
            return _group(row)

        return self._run(read)

    def groups(self) -> Deferred[list[Group]]:
        def read() -> list[Group]:
            rows = self._db.execute(
                "SELECT group_id, name, owner, role, strategy, degree, created, petname, state"
                " FROM groups ORDER BY created, group_id"
            ).fetchall()
            return [_group(row) for row in rows]

        return self._run(read)

    def members(self, group_id: bytes) -> Deferred[list[Member]]:
        def read() -> list[Member]:
            rows = self._db.execute(
                "SELECT peer, members.role, status FROM members JOIN groups USING (gid)"
                " WHERE group_id = ? ORDER BY mid",
                (group_id,),
            ).fetchall()
            return [Member(PeerID(peer), role, status) for peer, role, status in rows]

        return self._run(read)

    def edges(self, group_id: bytes) -> Deferred[frozenset[Edge]]:
        def read() -> frozenset[Edge]:
            rows = self._db.execute(
                "SELECT ma.peer, mb.peer FROM edges JOIN groups USING (gid)"
                " JOIN members AS ma ON ma.mid = a JOIN members AS mb ON mb.mid = b"
                " WHERE group_id = ?",
                (group_id,),
            ).fetchall()
            return frozenset(edge(PeerID(a), PeerID(b)) for a, b in rows)

        return self._run(read)

    def neighbours(self, group_id: bytes) -> Deferred[frozenset[PeerID]]:
        def read() -> frozenset[PeerID]:
            rows = self._db.execute(
                "SELECT peer FROM neighbours JOIN groups USING (gid) WHERE group_id = ?",
                (group_id,),
            ).fetchall()
            return frozenset(PeerID(peer) for (peer,) in rows)

        return self._run(read)

    def mailboxes(self, group_id: bytes) -> Deferred[frozenset[PeerID]]:
        def read() -> frozenset[PeerID]:
            rows = self._db.execute(
                "SELECT peer FROM mailboxes JOIN groups USING (gid) WHERE group_id = ?",
                (group_id,),
            ).fetchall()
            return frozenset(PeerID(peer) for (peer,) in rows)

        return self._run(read)

    def mailbox_terms(self, group_id: bytes) -> Deferred[MailboxTerms]:
        def read() -> MailboxTerms:
            row = self._db.execute(
                "SELECT retention, floor_epoch, floor_index FROM mailbox_terms"
                " JOIN groups USING (gid) WHERE group_id = ?",
                (group_id,),
            ).fetchone()
            if row is None:
                raise NotStored(f"this node is no mailbox of group {group_id.hex()}")
            return MailboxTerms(row[0], (row[1], row[2]))

        return self._run(read)

    def mailbox_usage(self) -> Deferred[list[MailboxUsage]]:
        def read() -> list[MailboxUsage]:
            rows = self._db.execute(
                "SELECT group_id, owner, retention, count(msg), coalesce(sum(charged), 0),"
                " min(expires) FROM groups JOIN mailbox_terms USING (gid)"
                " LEFT JOIN messages USING (gid)"
                " GROUP BY gid ORDER BY groups.created, group_id"
            ).fetchall()
            return [
                MailboxUsage(group_id, PeerID(owner), count, size, retention, expiry)
                for group_id, owner, retention, count, size, expiry in rows
            ]

        return self._run(read)

    def next_expiry(self) -> Deferred[float | None]:
        def read() -> float | None:
            row = self._db.execute(
                "SELECT min(expires) FROM (SELECT expires FROM messages"
                " WHERE expires IS NOT NULL UNION ALL SELECT expires FROM sealed_items"
                " WHERE expires IS NOT NULL)"
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return self._run(read)

    def epoch(self, group_id: bytes, epoch: int | None = None) -> Deferred[Epoch]:
        return self._run(self._read_epoch, group_id, epoch)

    def message(self, group_id: bytes, epoch: int, index: int) -> Deferred[StoredMessage]:
        def read() -> StoredMessage:
            row = self._db.execute(
                "SELECT epoch, idx, manifest, messages.state, content, sent_at, from_peer,"
                " message_key, expires"
                " FROM messages JOIN groups USING (gid)"
                " WHERE group_id = ? AND epoch = ? AND idx = ?",
                (group_id, epoch, index),
            ).fetchone()
            if row is None:
                raise NotStored(f"no message {epoch}/{index} in group {group_id.hex()}")
            return self._message_value(group_id, row)

        return self._run(read)

    def manifest(self, group_id: bytes, epoch: int, index: int) -> Deferred[bytes]:
        def read() -> bytes:
            row = self._db.execute(
                "SELECT manifest FROM messages JOIN groups USING (gid)"
                " WHERE group_id = ? AND epoch = ? AND idx = ?",
                (group_id, epoch, index),
            ).fetchone()
            if row is None:
                raise NotStored(f"no message {epoch}/{index} in group {group_id.hex()}")
            manifest: bytes = row[0]
            return manifest

        return self._run(read)

    def history(
        self, group_id: bytes, after: tuple[int, int] | None = None, limit: int = 100
    ) -> Deferred[list[StoredMessage]]:
        start = after if after is not None else (-1, -1)

        def read() -> list[StoredMessage]:
            rows = self._db.execute(
                "SELECT epoch, idx, manifest, messages.state, content, sent_at, from_peer,"
                " message_key, expires"
                " FROM messages JOIN groups USING (gid)"
                " WHERE group_id = ? AND messages.state = 'complete' AND (epoch, idx) > (?, ?)"
                " ORDER BY epoch, idx LIMIT ?",
                (group_id, *start, limit),
            ).fetchall()
            return [self._message_value(group_id, row) for row in rows]

        return self._run(read)

    def _held(self, row: tuple[Any, ...]) -> HeldMessage:
        msg, epoch, index, manifest, state = row
        numbers = self._db.execute("SELECT number FROM fragments WHERE msg = ?", (msg,)).fetchall()
        return HeldMessage(epoch, index, manifest, state, frozenset(n for (n,) in numbers))

    def held_after(
        self, group_id: bytes, after: tuple[int, int], limit: int
    ) -> Deferred[list[HeldMessage]]:
        def read() -> list[HeldMessage]:
            rows = self._db.execute(
                "SELECT msg, epoch, idx, manifest, messages.state FROM messages"
                " JOIN groups USING (gid) WHERE group_id = ? AND (epoch, idx) > (?, ?)"
                " ORDER BY epoch, idx LIMIT ?",
                (group_id, *after, limit),
            ).fetchall()
            return [self._held(row) for row in rows]

        return self._run(read)

    def newest(self, group_id: bytes) -> Deferred[HeldMessage | None]:
        def read() -> HeldMessage | None:
            row = self._db.execute(
                "SELECT msg, epoch, idx, manifest, messages.state FROM messages"
                " JOIN groups USING (gid) WHERE group_id = ?"
                " ORDER BY epoch DESC, idx DESC LIMIT 1",
                (group_id,),
            ).fetchone()
            return None if row is None else self._held(row)

        return self._run(read)

    def fragment(self, group_id: bytes, epoch: int, index: int, number: int) -> Deferred[bytes]:
        def read() -> bytes:
            row = self._db.execute(
                "SELECT data FROM fragments JOIN messages USING (msg) JOIN groups USING (gid)"
                " WHERE group_id = ? AND epoch = ? AND idx = ? AND number = ?",
                (group_id, epoch, index, number),
            ).fetchone()
            if row is None:
                raise NotStored(f"fragment {number} of {epoch}/{index} is not kept")
            data: bytes = row[0]
            return data

        return self._run(read)

    def partial_messages(self, group_id: bytes) -> Deferred[list[StoredMessage]]:
        def read() -> list[StoredMessage]:
            rows = self._db.execute(
                "SELECT epoch, idx, manifest, messages.state, content, sent_at, from_peer,"
                " message_key, expires"
                " FROM messages JOIN groups USING (gid)"
                " WHERE group_id = ? AND messages.state = 'partial' ORDER BY epoch, idx",
                (group_id,),
            ).fetchall()
            return [self._message_value(group_id, row) for row in rows]

        return self._run(read)

    def fragments(self, group_id: bytes, epoch: int, index: int) -> Deferred[dict[int, bytes]]:
        def read() -> dict[int, bytes]:
            rows = self._db.execute(
                "SELECT number, data FROM fragments JOIN messages USING (msg)"
                " JOIN groups USING (gid) WHERE group_id = ? AND epoch = ? AND idx = ?",
                (group_id, epoch, index),
            ).fetchall()
            return dict(rows)

        return self._run(read)

    def deliveries(
        self, group_id: bytes, epoch: int, index: int
    ) -> Deferred[dict[PeerID, DeliveryState]]:
        def read() -> dict[PeerID, DeliveryState]:
            rows = self._db.execute(
                "SELECT peer, deliveries.state FROM deliveries JOIN members USING (mid)"
                " JOIN messages USING (msg) JOIN groups ON groups.gid = messages.gid"
                " WHERE group_id = ? AND epoch = ? AND idx = ?",
                (group_id, epoch, index),
            ).fetchall()
            return {PeerID(peer): state for peer, state in rows}

        return self._run(read)

    def undelivered(self, group_id: bytes, peer: PeerID) -> Deferred[list[tuple[int, int]]]:
        def read() -> list[tuple[int, int]]:
            rows = self._db.execute(
                "SELECT epoch, idx FROM deliveries JOIN members USING (mid)"
                " JOIN messages USING (msg) JOIN groups ON groups.gid = messages.gid"
                " WHERE group_id = ? AND peer = ? AND deliveries.state = 'pending'"
                " ORDER BY epoch, idx",
                (group_id, peer.public_key),
            ).fetchall()
            return [(epoch, index) for epoch, index in rows]

        return self._run(read)

    _OUTBOX = "SELECT id, kind, payload, created, attempts, group_id FROM outbox WHERE peer = ?"

    def _outbox_entries(self, peer: PeerID, rows: list[tuple[Any, ...]]) -> list[OutboxEntry]:
        return [
            OutboxEntry(
                entry_id,
                peer,
                kind,
                unseal(self._key, _outbox_row(peer, kind, created, group_id), payload),
                created,
                attempts,
                group_id,
            )
            for entry_id, kind, payload, created, attempts, group_id in rows
        ]

    def outbox(self, peer: PeerID) -> Deferred[list[OutboxEntry]]:
        def read() -> list[OutboxEntry]:
            rows = self._db.execute(self._OUTBOX + " ORDER BY id", (peer.public_key,))
            return self._outbox_entries(peer, rows.fetchall())

        return self._run(read)

    def queued(self, peer: PeerID, kind: str, group_id: bytes) -> Deferred[list[OutboxEntry]]:
        def read() -> list[OutboxEntry]:
            rows = self._db.execute(
                self._OUTBOX + " AND group_id = ? AND kind = ? ORDER BY id",
                (peer.public_key, group_id, kind),
            )
            return self._outbox_entries(peer, rows.fetchall())

        return self._run(read)

    def member_of(self, peer: PeerID) -> Deferred[list[bytes]]:
        def read() -> list[bytes]:
            rows = self._db.execute(
                "SELECT group_id FROM members JOIN groups USING (gid)"
                " WHERE peer = ? AND status != 'removed' ORDER BY gid",
                (peer.public_key,),
            ).fetchall()
            return [group_id for (group_id,) in rows]

        return self._run(read)

    def outbox_peers(self) -> Deferred[frozenset[PeerID]]:
        def read() -> frozenset[PeerID]:
            rows = self._db.execute("SELECT DISTINCT peer FROM outbox").fetchall()
            return frozenset(PeerID(peer) for (peer,) in rows)

        return self._run(read)

    def invitations(self) -> Deferred[list[Invitation]]:
        def read() -> list[Invitation]:
            rows = self._db.execute(
                "SELECT from_peer, group_id, payload, received FROM invitations ORDER BY received"
            ).fetchall()
            return [
                Invitation(
                    PeerID(peer),
                    group_id,
                    unseal(self._key, _invitation_row(peer, group_id), payload),
                    received,
                )
                for peer, group_id, payload, received in rows
            ]

        return self._run(read)

    def blocked(self) -> Deferred[frozenset[PeerID]]:
        def read() -> frozenset[PeerID]:
            rows = self._db.execute("SELECT peer FROM blocked").fetchall()
            return frozenset(PeerID(peer) for (peer,) in rows)

        return self._run(read)

    def setting(self, name: str) -> Deferred[str | None]:
        def read() -> str | None:
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            return None if row is None else str(row[0])

        return self._run(read)

    def _prekey(self, row: tuple[Any, ...]) -> Prekey:
        public, secret, audience, expires = row
        return Prekey(
            public,
            unseal(self._key, _prekey_row(public, audience, expires), secret),
            None if audience is None else PeerID(audience),
            expires,
        )

    def prekey(self, public: bytes) -> Deferred[Prekey]:
        def read() -> Prekey:
            row = self._db.execute(
                "SELECT public, secret, audience, expires FROM prekeys WHERE public = ?",
                (public,),
            ).fetchone()
            if row is None:
                raise NotStored(f"no prekey {public.hex()}")
            return self._prekey(row)

        return self._run(read)

    def prekeys(self) -> Deferred[list[Prekey]]:
        def read() -> list[Prekey]:
            rows = self._db.execute(
                "SELECT public, secret, audience, expires FROM prekeys"
                " ORDER BY audience IS NOT NULL, expires, audience, public"
            ).fetchall()
            return [self._prekey(row) for row in rows]

        return self._run(read)

    def bundle(self, peer: PeerID) -> Deferred[StoredBundle]:
        def read() -> StoredBundle:
            row = self._db.execute(
                "SELECT serial, expires, data, handed_out FROM key_bundles WHERE peer = ?",
                (peer.public_key,),
            ).fetchone()
            if row is None:
                raise NotStored(f"no key bundle of {peer}")
            serial, expires, data, handed_out = row
            keys = frozenset(handed_out[i : i + 32] for i in range(0, len(handed_out), 32))
            return StoredBundle(peer, serial, expires, data, keys)

        return self._run(read)

    def sealed(self, group_id: bytes, recipient: PeerID, limit: int) -> Deferred[list[bytes]]:
        def read() -> list[bytes]:
            rows = self._db.execute(
                "SELECT item FROM sealed_items JOIN groups USING (gid)"
                " WHERE group_id = ? AND recipient = ? ORDER BY id LIMIT ?",
                (group_id, recipient.public_key, limit),
            ).fetchall()
            return [item for (item,) in rows]

        return self._run(read)

    def notify_member(self, peer: PeerID) -> Deferred[NotifyMember]:
        def read() -> NotifyMember:
            found = self._notify_members(peer.public_key)
            if not found:
                raise NotStored(f"{peer} is no member of this notification box")
            return found[0]

        return self._run(read)

    def notify_members(self) -> Deferred[list[NotifyMember]]:
        return self._run(self._notify_members, None)

    def _notify_members(self, peer: bytes | None) -> list[NotifyMember]:
        rows = self._db.execute(
            "SELECT peer, registered, refused,"
            " (SELECT count(*) FROM notifications WHERE recipient = peer)"
            " FROM notify_members WHERE ? IS NULL OR peer = ? ORDER BY peer",
            (peer, peer),
        ).fetchall()
        return [
            NotifyMember(PeerID(p), registered, held, refused)
            for p, registered, refused, held in rows
        ]

    def notifications(self, recipient: PeerID, limit: int) -> Deferred[list[bytes]]:
        def read() -> list[bytes]:
            rows = self._db.execute(
                "SELECT item FROM notifications WHERE recipient = ? ORDER BY id LIMIT ?",
                (recipient.public_key, limit),
            ).fetchall()
            return [item for (item,) in rows]

        return self._run(read)

    # --- writes ----------------------------------------------------------------

    def commit(self, *changes: Change) -> Deferred[None]:
        return self._run(self._transaction, changes)

    def _transaction(self, changes: tuple[Change, ...]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for change in changes:
                _APPLY[type(change)](self, change)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if any(change.erases for change in changes):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _add_group(self, change: AddGroup) -> None:
        g = change.group
        if self._db.execute("SELECT 1 FROM groups WHERE group_id = ?", (g.group_id,)).fetchone():
            raise AlreadyStored(f"group {g.group_id.hex()} is already stored")
        if g.role == "mailbox":
            (owned,) = self._db.execute(
                "SELECT count(*) FROM groups WHERE role = 'mailbox' AND owner = ?",
                (g.owner.public_key,),
            ).fetchone()
            (total,) = self._db.execute(
                "SELECT count(*) FROM groups WHERE role = 'mailbox'"
            ).fetchone()
            check_mailbox_groups(g.owner, owned + 1, total + 1, self._limits)
        self._db.execute(
            "INSERT INTO groups (group_id, name, owner, role, strategy, degree, created,"
            " petname, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                g.group_id,
                g.name,
                g.owner.public_key,
                g.role,
                g.strategy,
                g.degree,
                g.created,
                g.petname,
                g.state,
            ),
        )

    def _set_petname(self, change: SetPetname) -> None:
        gid = self._gid(change.group_id)
        self._db.execute("UPDATE groups SET petname = ? WHERE gid = ?", (change.petname, gid))

    def _set_group_state(self, change: SetGroupState) -> None:
        gid = self._gid(change.group_id)
        self._db.execute("UPDATE groups SET state = ? WHERE gid = ?", (change.state, gid))

    def _delete_group(self, change: DeleteGroup) -> None:
        self._db.execute("DELETE FROM groups WHERE group_id = ?", (change.group_id,))

    def _put_member(self, change: PutMember) -> None:
        gid = self._gid(change.group_id)
        m = change.member
        self._db.execute(
            "INSERT INTO members (gid, peer, role, status) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (gid, peer) DO UPDATE SET role = excluded.role,"
            " status = excluded.status",
            (gid, m.peer.public_key, m.role, m.status),
        )

    def _change_edges(self, change: ChangeEdges) -> None:
        gid = self._gid(change.group_id)
        for pair, sql in (
            (change.remove, "DELETE FROM edges WHERE gid = ? AND a = ? AND b = ?"),
            (change.add, "INSERT OR IGNORE INTO edges (gid, a, b) VALUES (?, ?, ?)"),
        ):
            for a, b in pair:
                ends = sorted(self._mid(gid, change.group_id, peer) for peer in (a, b))
                self._db.execute(sql, (gid, *ends))

    def _set_neighbours(self, change: SetNeighbours) -> None:
        gid = self._gid(change.group_id)
        self._db.execute("DELETE FROM neighbours WHERE gid = ?", (gid,))
        self._db.executemany(
            "INSERT INTO neighbours (gid, peer) VALUES (?, ?)",
            [(gid, peer.public_key) for peer in change.peers],
        )

    def _set_mailboxes(self, change: SetMailboxes) -> None:
        gid = self._gid(change.group_id)
        self._db.execute("DELETE FROM mailboxes WHERE gid = ?", (gid,))
        self._db.executemany(
            "INSERT INTO mailboxes (gid, peer) VALUES (?, ?)",
            [(gid, peer.public_key) for peer in change.peers],
        )

    def _set_mailbox_terms(self, change: SetMailboxTerms) -> None:
        gid = self._gid(change.group_id)
        terms = change.terms
        self._db.execute(
            "INSERT OR REPLACE INTO mailbox_terms (gid, retention, floor_epoch, floor_index)"
            " VALUES (?, ?, ?, ?)",
            (gid, terms.retention, *terms.floor),
        )

    def _add_epoch(self, change: AddEpoch) -> None:
        e = change.epoch
        gid = self._gid(e.group_id)
        if self._db.execute(
            "SELECT 1 FROM epochs WHERE gid = ? AND epoch = ?", (gid, e.epoch)
        ).fetchone():
            raise AlreadyStored(f"epoch {e.epoch} is already stored")
        key = self._key

        def sealed(column: str, value: bytes | None) -> bytes | None:
            return _sealed(value, key, row_identity("epochs", column, e.group_id, e.epoch))

        self._db.execute(
            "INSERT INTO epochs (gid, epoch, signing_public, created, signing_secret,"
            " access_key, close_last_index, close_last_hash, revealed_secret)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                gid,
                e.epoch,
                e.signing_public,
                e.created,
                sealed("signing_secret", e.signing_secret),
                sealed("access_key", e.access_key),
                None if e.close is None else e.close.last_index,
                None if e.close is None else e.close.last_manifest_hash,
                sealed("revealed_secret", e.revealed_secret),
            ),
        )
        if e.chain is not None:
            self._set_chain(gid, e.group_id, e.epoch, e.chain)

    def _set_chain(self, gid: int, group_id: bytes, epoch: int, chain: ChainState) -> None:
        ad = row_identity("epochs", "chain_key", group_id, epoch, chain.next_index)
        self._db.execute(
            "UPDATE epochs SET chain_key = ?, next_index = ? WHERE gid = ? AND epoch = ?",
            (seal(self._key, ad, chain.key), chain.next_index, gid, epoch),
        )

    def _update_epoch(self, group_id: bytes, epoch: int, update: str, *values: Any) -> int:
        gid = self._gid(group_id)
        cursor = self._db.execute(update + " WHERE gid = ? AND epoch = ?", (*values, gid, epoch))
        if cursor.rowcount != 1:
            raise NotStored(f"no epoch {epoch} in group {group_id.hex()}")
        return gid

    def _close_epoch(self, change: CloseEpoch) -> None:
        self._update_epoch(
            change.group_id,
            change.epoch,
            "UPDATE epochs SET close_last_index = ?, close_last_hash = ?",
            change.close.last_index,
            change.close.last_manifest_hash,
        )

    def _reveal(self, change: RevealSigningSecret) -> None:
        ad = row_identity("epochs", "revealed_secret", change.group_id, change.epoch)
        self._update_epoch(
            change.group_id,
            change.epoch,
            "UPDATE epochs SET revealed_secret = ?",
            seal(self._key, ad, change.secret),
        )

    def _forget(self, change: ForgetEpochKeys) -> None:
        self._update_epoch(
            change.group_id,
            change.epoch,
            "UPDATE epochs SET chain_key = NULL, next_index = NULL, signing_secret = NULL,"
            " access_key = NULL",
        )

    def _keep_only_signing(self, change: KeepOnlySigningSecret) -> None:
        self._update_epoch(
            change.group_id,
            change.epoch,
            "UPDATE epochs SET chain_key = NULL, next_index = NULL",
        )

    def _insert_message(
        self,
        gid: int,
        group_id: bytes,
        change: CommitSent | StartMessage,
        state: str,
        content: bytes | None,
        sent_at: float | None,
        from_peer: bytes | None,
        expires: float | None = None,
    ) -> int:
        ad = row_identity("messages", "content", group_id, change.epoch, change.index)
        try:
            cursor = self._db.execute(
                "INSERT INTO messages (gid, epoch, idx, manifest, state, content, sent_at,"
                " from_peer, charged, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    gid,
                    change.epoch,
                    change.index,
                    change.manifest,
                    state,
                    _sealed(content, self._key, ad),
                    sent_at,
                    from_peer,
                    0 if from_peer is None else len(change.manifest),
                    expires,
                ),
            )
        except sqlite3.IntegrityError:
            raise AlreadyStored(
                f"message {change.epoch}/{change.index} is already stored"
            ) from None
        msg: int = cursor.lastrowid  # type: ignore[assignment]
        return msg

    def _commit_sent(self, change: CommitSent) -> None:
        epoch = self._read_epoch(change.group_id, change.epoch)
        check_chain(epoch, change.index, change.chain, exact=True)
        gid = self._gid(change.group_id)
        msg = self._insert_message(
            gid, change.group_id, change, "complete", change.content, change.sent_at, None
        )
        if change.message_key is not None:
            ad = row_identity(
                "messages", "message_key", change.group_id, change.epoch, change.index
            )
            self._db.execute(
                "UPDATE messages SET message_key = ? WHERE msg = ?",
                (seal(self._key, ad, change.message_key), msg),
            )
        self._set_chain(gid, change.group_id, change.epoch, change.chain)
        self._db.executemany(
            "INSERT INTO fragments (msg, number, data) VALUES (?, ?, ?)",
            [(msg, number, data) for number, data in enumerate(change.fragments)],
        )
        self._db.executemany(
            "INSERT INTO deliveries (msg, mid, state) VALUES (?, ?, 'pending')",
            [(msg, self._mid(gid, change.group_id, peer)) for peer in change.recipients],
        )

    def _check_not_blocked(self, peer: PeerID) -> None:
        if self._db.execute("SELECT 1 FROM blocked WHERE peer = ?", (peer.public_key,)).fetchone():
            raise PeerBlocked(f"{peer} is blocked")

    def _check_partial_quota(self, peer: PeerID, size: int, new_message: bool) -> None:
        limits = self._limits
        peer_count, peer_bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(charged), 0) FROM messages"
            " WHERE from_peer = ? AND state = 'partial'",
            (peer.public_key,),
        ).fetchone()
        count, total = self._db.execute(
            "SELECT count(*), coalesce(sum(charged), 0) FROM messages"
            " WHERE from_peer IS NOT NULL AND state = 'partial'"
        ).fetchone()
        check_quota(
            "partial messages",
            peer,
            peer_count + new_message,
            count + new_message,
            limits.partial_messages_per_peer,
            limits.partial_messages_total,
        )
        check_quota(
            "partial bytes",
            peer,
            peer_bytes + size,
            total + size,
            limits.partial_bytes_per_peer,
            limits.partial_bytes_total,
        )

    def _start_message(self, change: StartMessage) -> None:
        self._check_not_blocked(change.from_peer)
        self._read_epoch(change.group_id, change.epoch)
        gid = self._gid(change.group_id)
        self._check_partial_quota(change.from_peer, len(change.manifest), True)
        self._check_mailbox_quota(gid, change.group_id, len(change.manifest))
        self._insert_message(
            gid,
            change.group_id,
            change,
            "partial",
            None,
            None,
            change.from_peer.public_key,
            change.expires,
        )

    def _check_mailbox_quota(self, gid: int, group_id: bytes, size: int) -> None:
        """
        In a group we serve as a mailbox, refuse ``size`` more bytes past
        the bounds per group, per owner and in all.
        """
        row = self._db.execute(
            "SELECT owner FROM groups WHERE gid = ? AND role = 'mailbox'", (gid,)
        ).fetchone()
        if row is None:
            return
        owner = row[0]
        (in_group,) = self._db.execute(
            "SELECT coalesce(sum(charged), 0) FROM messages WHERE gid = ?", (gid,)
        ).fetchone()
        (of_owner,) = self._db.execute(
            "SELECT coalesce(sum(charged), 0) FROM messages JOIN groups USING (gid)"
            " WHERE groups.role = 'mailbox' AND owner = ?",
            (owner,),
        ).fetchone()
        (total,) = self._db.execute(
            "SELECT coalesce(sum(charged), 0) FROM messages JOIN groups USING (gid)"
            " WHERE groups.role = 'mailbox'"
        ).fetchone()
        check_mailbox_quota(
            group_id, PeerID(owner), in_group + size, of_owner + size, total + size, self._limits
        )

    def _partial(self, group_id: bytes, epoch: int, index: int) -> int:
        try:
            msg, state = self._msg(group_id, epoch, index)
        except NotStored:
            state = "absent"
        if state != "partial":
            raise NotStored(f"message {epoch}/{index} is not arriving here")
        return msg

    def _add_fragment(self, change: AddFragment) -> None:
        self._check_not_blocked(change.from_peer)
        msg = self._partial(change.group_id, change.epoch, change.index)
        if self._db.execute(
            "SELECT 1 FROM fragments WHERE msg = ? AND number = ?", (msg, change.number)
        ).fetchone():
            return
        self._check_partial_quota(change.from_peer, len(change.data), False)
        self._check_mailbox_quota(self._gid(change.group_id), change.group_id, len(change.data))
        self._db.execute(
            "INSERT INTO fragments (msg, number, data) VALUES (?, ?, ?)",
            (msg, change.number, change.data),
        )
        self._db.execute(
            "UPDATE messages SET charged = charged + ? WHERE msg = ?", (len(change.data), msg)
        )

    def _commit_received(self, change: CommitReceived) -> None:
        msg = self._partial(change.group_id, change.epoch, change.index)
        epoch = self._read_epoch(change.group_id, change.epoch)
        check_chain(epoch, change.index, change.chain, exact=False)
        gid = self._gid(change.group_id)
        ad = row_identity("messages", "content", change.group_id, change.epoch, change.index)
        self._db.execute(
            "UPDATE messages SET state = 'complete', content = ?, sent_at = ?,"
            " from_peer = NULL, charged = 0 WHERE msg = ?",
            (seal(self._key, ad, change.content), change.sent_at, msg),
        )
        self._db.execute("DELETE FROM fragments WHERE msg = ?", (msg,))
        self._set_chain(gid, change.group_id, change.epoch, change.chain)

    def _hold_message(self, change: HoldMessage) -> None:
        msg = self._partial(change.group_id, change.epoch, change.index)
        self._db.execute(
            "UPDATE messages SET state = 'complete', from_peer = NULL WHERE msg = ?", (msg,)
        )

    def _expire_held(self, change: ExpireHeld) -> None:
        rows = self._db.execute(
            "SELECT msg, gid, epoch, idx FROM messages WHERE expires IS NOT NULL"
            " AND expires <= ? ORDER BY gid, epoch, idx",
            (change.now,),
        ).fetchall()
        last: dict[int, tuple[int, int]] = {}
        for _, gid, epoch, index in rows:
            last[gid] = (epoch, index + 1)
        for gid, floor in last.items():
            self._db.execute(
                "UPDATE mailbox_terms SET floor_epoch = ?, floor_index = ?"
                " WHERE gid = ? AND (floor_epoch, floor_index) < (?, ?)",
                (*floor, gid, *floor),
            )
        self._db.executemany("DELETE FROM messages WHERE msg = ?", [(r[0],) for r in rows])
        self._db.execute(
            "DELETE FROM sealed_items WHERE expires IS NOT NULL AND expires <= ?", (change.now,)
        )

    def _drop_message(self, change: DropMessage) -> None:
        try:
            msg, _ = self._msg(change.group_id, change.epoch, change.index)
        except NotStored:
            return
        self._db.execute("DELETE FROM messages WHERE msg = ?", (msg,))

    def _drop_fragments(self, change: DropFragments) -> None:
        try:
            msg, state = self._msg(change.group_id, change.epoch, change.index)
        except NotStored:
            return
        if state == "complete":
            self._drop_kept_fragments(msg)

    def _drop_kept_fragments(self, msg: int) -> None:
        """
        Delete the fragments of a message we sent, unless they are our copy.
        """
        self._db.execute(
            "DELETE FROM fragments WHERE msg = ?"
            " AND (SELECT message_key IS NULL FROM messages WHERE msg = ?)",
            (msg, msg),
        )

    def _forget_recipient(self, change: ForgetRecipient) -> None:
        gid = self._gid(change.group_id)
        try:
            mid = self._mid(gid, change.group_id, change.peer)
        except NotStored:
            return
        pending = [
            msg
            for (msg,) in self._db.execute(
                "SELECT msg FROM deliveries WHERE mid = ? AND state = 'pending'", (mid,)
            ).fetchall()
        ]
        self._db.execute("DELETE FROM deliveries WHERE mid = ? AND state = 'pending'", (mid,))
        for msg in pending:
            if not self._db.execute(
                "SELECT 1 FROM deliveries WHERE msg = ? AND state = 'pending'", (msg,)
            ).fetchone():
                self._drop_kept_fragments(msg)

    def _mark_delivered(self, change: MarkDelivered) -> None:
        cursor = self._db.execute(
            "UPDATE deliveries SET state = 'committed' WHERE msg = (SELECT msg FROM messages"
            " JOIN groups USING (gid) WHERE group_id = ? AND epoch = ? AND idx = ?)"
            " AND mid = (SELECT mid FROM members JOIN groups USING (gid)"
            " WHERE group_id = ? AND peer = ?)",
            (
                change.group_id,
                change.epoch,
                change.index,
                change.group_id,
                change.peer.public_key,
            ),
        )
        if cursor.rowcount != 1:
            raise NotStored(f"{change.peer} is not a recipient of {change.epoch}/{change.index}")

    def _enqueue(self, change: Enqueue) -> None:
        limits = self._limits
        peer = change.peer.public_key
        size = len(change.payload)
        peer_count, peer_bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE peer = ?", (peer,)
        ).fetchone()
        count, total = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM outbox"
        ).fetchone()
        check_quota(
            "outbox entries",
            change.peer,
            peer_count + 1,
            count + 1,
            limits.outbox_entries_per_peer,
            limits.outbox_entries_total,
        )
        check_quota(
            "outbox bytes",
            change.peer,
            peer_bytes + size,
            total + size,
            limits.outbox_bytes_per_peer,
            limits.outbox_bytes_total,
        )
        row = _outbox_row(change.peer, change.kind, change.created, change.group_id)
        sealed = seal(self._key, row, change.payload)
        self._db.execute(
            "INSERT INTO outbox (peer, kind, payload, size, created, group_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (peer, change.kind, sealed, size, change.created, change.group_id),
        )

    def _dequeue(self, change: Dequeue) -> None:
        self._db.execute("DELETE FROM outbox WHERE id = ?", (change.entry_id,))

    def _drop_queued(self, change: DropQueued) -> None:
        self._db.executemany(
            "DELETE FROM outbox WHERE peer = ? AND group_id = ? AND kind = ?",
            [(change.peer.public_key, change.group_id, kind) for kind in sorted(change.kinds)],
        )

    def _count_attempt(self, change: CountAttempt) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (change.entry_id,)
        )

    def _add_invitation(self, change: AddInvitation) -> None:
        invitation = change.invitation
        peer = invitation.from_peer
        self._check_not_blocked(peer)
        limits = self._limits
        check_quota(
            "invitation bytes",
            peer,
            len(invitation.payload),
            0,
            limits.invitation_bytes,
            limits.invitation_bytes,
        )
        replacing = self._db.execute(
            "SELECT count(*) FROM invitations WHERE from_peer = ? AND group_id = ?",
            (peer.public_key, invitation.group_id),
        ).fetchone()[0]
        (peer_count,) = self._db.execute(
            "SELECT count(*) FROM invitations WHERE from_peer = ?", (peer.public_key,)
        ).fetchone()
        (count,) = self._db.execute("SELECT count(*) FROM invitations").fetchone()
        check_quota(
            "invitations",
            peer,
            peer_count + 1 - replacing,
            count + 1 - replacing,
            limits.invitations_per_peer,
            limits.invitations_total,
        )
        sealed = seal(
            self._key,
            _invitation_row(peer.public_key, invitation.group_id),
            invitation.payload,
        )
        self._db.execute(
            "INSERT OR REPLACE INTO invitations (from_peer, group_id, payload, received)"
            " VALUES (?, ?, ?, ?)",
            (peer.public_key, invitation.group_id, sealed, invitation.received),
        )

    def _drop_invitation(self, change: DropInvitation) -> None:
        self._db.execute(
            "DELETE FROM invitations WHERE from_peer = ? AND group_id = ?",
            (change.from_peer.public_key, change.group_id),
        )

    def _block(self, change: Block) -> None:
        peer = change.peer.public_key
        self._db.execute(
            "INSERT OR REPLACE INTO blocked (peer, since) VALUES (?, ?)", (peer, change.since)
        )
        self._db.execute("DELETE FROM invitations WHERE from_peer = ?", (peer,))
        self._db.execute("DELETE FROM messages WHERE from_peer = ? AND state = 'partial'", (peer,))

    def _unblock(self, change: Unblock) -> None:
        self._db.execute("DELETE FROM blocked WHERE peer = ?", (change.peer.public_key,))

    def _set_setting(self, change: SetSetting) -> None:
        if change.value is None:
            self._db.execute("DELETE FROM settings WHERE name = ?", (change.name,))
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)",
                (change.name, change.value),
            )

    def _add_prekeys(self, change: AddPrekeys) -> None:
        limits = self._limits
        for prekey in change.prekeys:
            if self._db.execute(
                "SELECT 1 FROM prekeys WHERE public = ?", (prekey.public,)
            ).fetchone():
                raise AlreadyStored(f"prekey {prekey.public.hex()} is already stored")
            audience = None if prekey.audience is None else prekey.audience.public_key
            if prekey.audience is not None:
                (mine,) = self._db.execute(
                    "SELECT count(*) FROM prekeys WHERE audience = ?", (audience,)
                ).fetchone()
                (total,) = self._db.execute(
                    "SELECT count(*) FROM prekeys WHERE audience IS NOT NULL"
                ).fetchone()
                check_quota(
                    "one-time prekeys",
                    prekey.audience,
                    mine + 1,
                    total + 1,
                    limits.one_time_prekeys_per_peer,
                    limits.one_time_prekeys_total,
                )
            row = _prekey_row(prekey.public, audience, prekey.expires)
            self._db.execute(
                "INSERT INTO prekeys (public, secret, audience, expires) VALUES (?, ?, ?, ?)",
                (prekey.public, seal(self._key, row, prekey.secret), audience, prekey.expires),
            )

    def _delete_prekey(self, change: DeletePrekey) -> None:
        self._db.execute("DELETE FROM prekeys WHERE public = ?", (change.public,))

    def _expire_prekeys(self, change: ExpirePrekeys) -> None:
        self._db.execute(
            "DELETE FROM prekeys WHERE expires IS NOT NULL AND expires <= ?", (change.before,)
        )

    def _record_opened(self, change: RecordOpened) -> None:
        if not self._db.execute(
            "SELECT 1 FROM prekeys WHERE public = ? AND expires IS NOT NULL", (change.prekey,)
        ).fetchone():
            raise NotStored(f"no signed prekey {change.prekey.hex()}")
        if self._db.execute(
            "SELECT 1 FROM prekeys_opened WHERE prekey = ? AND ephemeral = ?",
            (change.prekey, change.ephemeral),
        ).fetchone():
            raise AlreadyStored("that sealed item was opened before")
        self._db.execute(
            "INSERT INTO prekeys_opened (prekey, ephemeral) VALUES (?, ?)",
            (change.prekey, change.ephemeral),
        )

    def _put_bundle(self, change: PutBundle) -> None:
        b = change.bundle
        peer = b.peer.public_key
        held = self._db.execute("SELECT 1 FROM key_bundles WHERE peer = ?", (peer,)).fetchone()
        (count,) = self._db.execute("SELECT count(*) FROM key_bundles").fetchone()
        check_quota(
            "key bundles",
            b.peer,
            1,
            count + (held is None),
            1,
            self._limits.key_bundles_total,
        )
        self._db.execute(
            "INSERT OR REPLACE INTO key_bundles (peer, serial, expires, data, handed_out)"
            " VALUES (?, ?, ?, ?, ?)",
            (peer, b.serial, b.expires, b.data, b"".join(sorted(b.handed_out))),
        )

    def _hold_sealed(self, change: HoldSealed) -> None:
        gid = self._gid(change.group_id)
        recipient = change.recipient.public_key
        (mine,) = self._db.execute(
            "SELECT count(*) FROM sealed_items WHERE gid = ? AND recipient = ?", (gid, recipient)
        ).fetchone()
        (total,) = self._db.execute("SELECT count(*) FROM sealed_items").fetchone()
        (owner, by_owner) = self._db.execute(
            "SELECT owner, (SELECT count(*) FROM sealed_items JOIN groups AS g USING (gid)"
            " WHERE g.owner = groups.owner) FROM groups WHERE gid = ?",
            (gid,),
        ).fetchone()
        check_quota(
            "sealed items",
            change.recipient,
            mine + 1,
            total + 1,
            self._limits.sealed_items_per_member,
            self._limits.sealed_items_total,
        )
        check_quota(
            "sealed items left by one owner",
            PeerID(owner),
            by_owner + 1,
            total + 1,
            self._limits.sealed_items_per_owner,
            self._limits.sealed_items_total,
        )
        self._db.execute(
            "INSERT INTO sealed_items (gid, recipient, item, expires) VALUES (?, ?, ?, ?)",
            (gid, recipient, change.item, change.expires),
        )

    def _take_sealed(self, change: TakeSealed) -> None:
        self._db.execute(
            "DELETE FROM sealed_items WHERE id IN (SELECT id FROM sealed_items"
            " JOIN groups USING (gid) WHERE group_id = ? AND recipient = ? ORDER BY id LIMIT ?)",
            (change.group_id, change.recipient.public_key, change.count),
        )

    def _register_notify_member(self, change: RegisterNotifyMember) -> None:
        peer = change.peer.public_key
        if self._db.execute("SELECT 1 FROM notify_members WHERE peer = ?", (peer,)).fetchone():
            return
        (total,) = self._db.execute("SELECT count(*) FROM notify_members").fetchone()
        check_quota(
            "notification box members",
            change.peer,
            1,
            total + 1,
            1,
            self._limits.notify_members_total,
        )
        self._db.execute(
            "INSERT INTO notify_members (peer, registered) VALUES (?, ?)", (peer, change.when)
        )

    def _unregister_notify_member(self, change: UnregisterNotifyMember) -> None:
        self._db.execute("DELETE FROM notify_members WHERE peer = ?", (change.peer.public_key,))

    def _deposit_notification(self, change: DepositNotification) -> None:
        recipient = change.recipient.public_key
        if not self._db.execute(
            "SELECT 1 FROM notify_members WHERE peer = ?", (recipient,)
        ).fetchone():
            raise NotStored(f"{change.recipient} is no member of this notification box")
        (mine,) = self._db.execute(
            "SELECT count(*) FROM notifications WHERE recipient = ?", (recipient,)
        ).fetchone()
        (total,) = self._db.execute("SELECT count(*) FROM notifications").fetchone()
        check_quota(
            "notifications",
            change.recipient,
            mine + 1,
            total + 1,
            self._limits.notifications_per_member,
            self._limits.notifications_total,
        )
        self._db.execute(
            "INSERT INTO notifications (recipient, item) VALUES (?, ?)", (recipient, change.item)
        )

    def _refuse_notification(self, change: RefuseNotification) -> None:
        self._db.execute(
            "UPDATE notify_members SET refused = refused + 1 WHERE peer = ?",
            (change.recipient.public_key,),
        )

    def _take_notifications(self, change: TakeNotifications) -> None:
        recipient = change.recipient.public_key
        self._db.execute(
            "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications"
            " WHERE recipient = ? ORDER BY id LIMIT ?)",
            (recipient, change.count),
        )
        self._db.execute("UPDATE notify_members SET refused = 0 WHERE peer = ?", (recipient,))


def _prekey_row(public: bytes, audience: bytes | None, expires: int | None) -> bytes:
    if audience is not None:
        return row_identity("prekeys", "secret", public, audience)
    assert expires is not None
    return row_identity("prekeys", "secret", public, expires)


def _group(row: tuple[Any, ...]) -> Group:
    group_id, name, owner, role, strategy, degree, created, petname, state = row
    return Group(
        group_id,
        name,
        PeerID(owner),
        role,
        strategy,
        degree,
        created,
        petname=petname,
        state=state,
    )


def _outbox_row(peer: PeerID, kind: str, created: float, group_id: bytes | None) -> bytes:
    about = () if group_id is None else (group_id,)
    # The column is REAL: bind the float SQLite gives back, whatever was given.
    return row_identity("outbox", "payload", peer.public_key, kind, repr(float(created)), *about)


def _invitation_row(peer: bytes, group_id: bytes) -> bytes:
    return row_identity("invitations", "payload", peer, group_id)


_APPLY: dict[type[Any], Callable[[SQLiteStore, Any], None]] = {
    AddGroup: SQLiteStore._add_group,
    SetPetname: SQLiteStore._set_petname,
    SetGroupState: SQLiteStore._set_group_state,
    DeleteGroup: SQLiteStore._delete_group,
    PutMember: SQLiteStore._put_member,
    ChangeEdges: SQLiteStore._change_edges,
    SetNeighbours: SQLiteStore._set_neighbours,
    SetMailboxes: SQLiteStore._set_mailboxes,
    SetMailboxTerms: SQLiteStore._set_mailbox_terms,
    AddEpoch: SQLiteStore._add_epoch,
    CloseEpoch: SQLiteStore._close_epoch,
    RevealSigningSecret: SQLiteStore._reveal,
    ForgetEpochKeys: SQLiteStore._forget,
    KeepOnlySigningSecret: SQLiteStore._keep_only_signing,
    CommitSent: SQLiteStore._commit_sent,
    StartMessage: SQLiteStore._start_message,
    AddFragment: SQLiteStore._add_fragment,
    CommitReceived: SQLiteStore._commit_received,
    HoldMessage: SQLiteStore._hold_message,
    ExpireHeld: SQLiteStore._expire_held,
    DropMessage: SQLiteStore._drop_message,
    DropFragments: SQLiteStore._drop_fragments,
    ForgetRecipient: SQLiteStore._forget_recipient,
    MarkDelivered: SQLiteStore._mark_delivered,
    Enqueue: SQLiteStore._enqueue,
    Dequeue: SQLiteStore._dequeue,
    DropQueued: SQLiteStore._drop_queued,
    CountAttempt: SQLiteStore._count_attempt,
    AddInvitation: SQLiteStore._add_invitation,
    DropInvitation: SQLiteStore._drop_invitation,
    Block: SQLiteStore._block,
    Unblock: SQLiteStore._unblock,
    SetSetting: SQLiteStore._set_setting,
    AddPrekeys: SQLiteStore._add_prekeys,
    DeletePrekey: SQLiteStore._delete_prekey,
    ExpirePrekeys: SQLiteStore._expire_prekeys,
    RecordOpened: SQLiteStore._record_opened,
    PutBundle: SQLiteStore._put_bundle,
    HoldSealed: SQLiteStore._hold_sealed,
    TakeSealed: SQLiteStore._take_sealed,
    RegisterNotifyMember: SQLiteStore._register_notify_member,
    UnregisterNotifyMember: SQLiteStore._unregister_notify_member,
    DepositNotification: SQLiteStore._deposit_notification,
    RefuseNotification: SQLiteStore._refuse_notification,
    TakeNotifications: SQLiteStore._take_notifications,
}
