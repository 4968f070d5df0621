# -*- test-case-name: tests.test_storage_sqlite -*-
"""
The SQLite schema, its forward migrations, and the checks made on a file
before anything writes to it.

``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``; a new
file runs them all.  The version is SQLite's ``PRAGMA user_version``.  A
migration is appended, never edited once released: files in the field were
made by the old text.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from urllib.parse import quote

from ._errors import (
    DamagedDatabase,
    DatabaseUnusable,
    NewerDatabase,
    NotADatabase,
    WrongStorageKey,
)
from ._sealing import row_identity, seal, unseal

_V1 = """
CREATE TABLE key_check (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sealed BLOB NOT NULL
);
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE groups (
    gid INTEGER PRIMARY KEY,
    group_id BLOB NOT NULL UNIQUE CHECK (length(group_id) = 32),
    name TEXT NOT NULL,
    petname TEXT,
    owner BLOB NOT NULL CHECK (length(owner) = 32),
    role TEXT NOT NULL CHECK (role IN ('owner', 'member', 'mailbox')),
    strategy TEXT NOT NULL,
    degree INTEGER NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'left', 'removed'))
);
CREATE TABLE members (
    mid INTEGER PRIMARY KEY,
    gid INTEGER NOT NULL REFERENCES groups (gid) ON DELETE CASCADE,
    peer BLOB NOT NULL CHECK (length(peer) = 32),
    role TEXT NOT NULL CHECK (role IN ('member', 'mailbox')),
    status TEXT NOT NULL CHECK (status IN ('invited', 'active', 'removed')),
    UNIQUE (gid, peer)
);
CREATE TABLE edges (
    gid INTEGER NOT NULL REFERENCES groups (gid) ON DELETE CASCADE,
    a INTEGER NOT NULL,
    b INTEGER NOT NULL,
    PRIMARY KEY (gid, a, b),
    CHECK (a < b)
) WITHOUT ROWID;
CREATE TABLE neighbours (
    gid INTEGER NOT NULL REFERENCES groups (gid) ON DELETE CASCADE,
    peer BLOB NOT NULL CHECK (length(peer) = 32),
    PRIMARY KEY (gid, peer)
) WITHOUT ROWID;
CREATE TABLE epochs (
    gid INTEGER NOT NULL REFERENCES groups (gid) ON DELETE CASCADE,
    epoch INTEGER NOT NULL CHECK (epoch >= 0),
    signing_public BLOB NOT NULL CHECK (length(signing_public) = 32),
    created REAL NOT NULL,
    chain_key BLOB,
    next_index INTEGER,
    signing_secret BLOB,
    access_key BLOB,
    close_last_index INTEGER,
    close_last_hash BLOB,
    revealed_secret BLOB,
    PRIMARY KEY (gid, epoch)
) WITHOUT ROWID;
CREATE TABLE messages (
    msg INTEGER PRIMARY KEY,
    gid INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    idx INTEGER NOT NULL CHECK (idx >= 0),
    manifest BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('partial', 'complete')),
    content BLOB,
    sent_at REAL,
    from_peer BLOB,
    charged INTEGER NOT NULL DEFAULT 0,
    UNIQUE (gid, epoch, idx),
    FOREIGN KEY (gid, epoch) REFERENCES epochs (gid, epoch) ON DELETE CASCADE
);
CREATE INDEX messages_partial ON messages (from_peer, charged) WHERE state = 'partial';
CREATE TABLE fragments (
    msg INTEGER NOT NULL REFERENCES messages (msg) ON DELETE CASCADE,
    number INTEGER NOT NULL CHECK (number >= 0),
    data BLOB NOT NULL,
    PRIMARY KEY (msg, number)
);
CREATE TABLE deliveries (
    msg INTEGER NOT NULL REFERENCES messages (msg) ON DELETE CASCADE,
    mid INTEGER NOT NULL REFERENCES members (mid) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'committed')),
    PRIMARY KEY (msg, mid)
) WITHOUT ROWID;
CREATE INDEX deliveries_member ON deliveries (mid, state);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer BLOB NOT NULL CHECK (length(peer) = 32),
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_peer ON outbox (peer, size);
CREATE TABLE invitations (
    from_peer BLOB NOT NULL CHECK (length(from_peer) = 32),
    group_id BLOB NOT NULL CHECK (length(group_id) = 32),
    payload BLOB NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (from_peer, group_id)
);
CREATE TABLE blocked (
    peer BLOB PRIMARY KEY CHECK (length(peer) = 32),
    since REAL NOT NULL
) WITHOUT ROWID;
"""

# Version 2: the group an outbox entry is about, so that the service finds
# and drops a peer's entries of one group and kind by an index instead of
# reading (and unsealing) the peer's whole outbox; and an index from a
# member to the groups it is in.  Entries queued by version 1 are about no
# group: they are still delivered, found only by reading the peer's outbox.
# And the key of a message we sent, sealed: the owner keeps a sent message
# as its ciphertext fragments and that key, not a second copy in clear.
_V2 = """
ALTER TABLE messages ADD COLUMN message_key BLOB;
ALTER TABLE outbox ADD COLUMN group_id BLOB CHECK (group_id IS NULL OR length(group_id) = 32);
CREATE INDEX outbox_group ON outbox (peer, group_id, kind);
CREATE INDEX members_peer ON members (peer);
"""

# Version 3: mailboxes (issue 12).  A member keeps the mailboxes of its
# groups (``mailboxes``); a node serving a group as a mailbox keeps how
# (``mailbox_terms``: the owner's retention, and the floor below which it
# stores nothing again), and when each message it holds is deleted
# (``messages.expires``, indexed for the one timer that deletes them).
_V3 = """
CREATE TABLE mailboxes (
    gid INTEGER NOT NULL REFERENCES groups (gid) ON DELETE CASCADE,
    peer BLOB NOT NULL CHECK (length(peer) = 32),
    PRIMARY KEY (gid, peer)
) WITHOUT ROWID;
CREATE TABLE mailbox_terms (
    gid INTEGER PRIMARY KEY REFERENCES groups (gid) ON DELETE CASCADE,
    retention REAL NOT NULL CHECK (retention > 0),
    floor_epoch INTEGER NOT NULL CHECK (floor_epoch >= 0),
    floor_index INTEGER NOT NULL CHECK (floor_index >= 0)
);
ALTER TABLE messages ADD COLUMN expires REAL;
CREATE INDEX messages_expires ON messages (expires) WHERE expires IS NOT NULL;
"""

# Version 4: key bundles (issue 12, item 4).  Our prekey pairs, each
# secret sealed (``prekeys``: a signed one with its expiry, or a one-time one
# with the peer it was given to), the ephemeral keys of the sealed items each
# signed prekey opened, deleted with it (``prekeys_opened``: replays are
# refused), the bundles peers gave us (``key_bundles``, one per peer), and,
# on a mailbox, the items owners sealed for members who were away
# (``sealed_items``, ciphertext only).
_V4 = """
CREATE TABLE prekeys (
    public BLOB PRIMARY KEY CHECK (length(public) = 32),
    secret BLOB NOT NULL,
    audience BLOB CHECK (audience IS NULL OR length(audience) = 32),
    expires INTEGER,
    CHECK ((audience IS NULL) <> (expires IS NULL))
) WITHOUT ROWID;
CREATE INDEX prekeys_audience ON prekeys (audience) WHERE audience IS NOT NULL;
CREATE TABLE prekeys_opened (
    prekey BLOB NOT NULL REFERENCES prekeys (public) ON DELETE CASCADE,
    ephemeral BLOB NOT NULL CHECK (length(ephemeral) = 32),
    PRIMARY KEY (prekey, ephemeral)
) WITHOUT ROWID;
CREATE TABLE sealed_items (
    id INTEGER PRIMARY KEY,
    gid INTEGER NOT NULL REFERENCES groups (gid) ON DELETE CASCADE,
    recipient BLOB NOT NULL CHECK (length(recipient) = 32),
    item BLOB NOT NULL
);
CREATE INDEX sealed_items_recipient ON sealed_items (gid, recipient, id);
CREATE TABLE key_bundles (
    peer BLOB PRIMARY KEY CHECK (length(peer) = 32),
    serial INTEGER NOT NULL CHECK (serial >= 0),
    expires INTEGER NOT NULL,
    data BLOB NOT NULL,
    handed_out BLOB NOT NULL CHECK (length(handed_out) % 32 = 0)
) WITHOUT ROWID;
"""

# Version 5: notification boxes (issue 12, item 3).  On a node serving as
# one, the members that registered with it (``notify_members``, with the
# deposits refused for each since it last collected) and the notifications
# left for each (``notifications``: sealed to the member, opaque here).
_V5 = """
CREATE TABLE notify_members (
    peer BLOB PRIMARY KEY CHECK (length(peer) = 32),
    registered REAL NOT NULL,
    refused INTEGER NOT NULL DEFAULT 0 CHECK (refused >= 0)
) WITHOUT ROWID;
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    recipient BLOB NOT NULL REFERENCES notify_members (peer) ON DELETE CASCADE,
    item BLOB NOT NULL
);
CREATE INDEX notifications_recipient ON notifications (recipient, id);
"""

# Version 6: a sealed item a mailbox holds is deleted once the group's
# retention is up, as its messages are (``expires``; items held before
# have none, and wait until taken, as they did).
_V6 = """
ALTER TABLE sealed_items ADD COLUMN expires REAL;
CREATE INDEX sealed_items_expires ON sealed_items (expires) WHERE expires IS NOT NULL;
"""

#: The forward migrations: ``MIGRATIONS[n]`` takes version ``n`` to ``n + 1``.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)

_MAGIC = b"SQLite format 3\0"
_KEY_CHECK = b"digitalspring storage key check"
_KEY_CHECK_ROW = row_identity("key_check", "sealed")


def check_header(path: str) -> None:
    """
    Check what can be checked of an existing file without SQLite: that it
    is an SQLite database, and not shorter than its header says unless a
    write-ahead log lies beside it.  A checkpoint writes the first page
    (and its page count) before the pages past the file's old end, so a
    process killed during one leaves a file shorter than its header says;
    SQLite completes it from the log, which it keeps until the checkpoint
    is over.  Whether it can is for SQLite's own checks (:func:`validate`).

    :raises NotADatabase: for a file that is not SQLite.
    :raises DamagedDatabase: for one that was truncated.
    """
    with open(path, "rb") as f:
        header = f.read(100)
        f.seek(0, 2)
        size = f.tell()
    if not header.startswith(_MAGIC) or len(header) < 100:
        raise NotADatabase(f"{path} is not an SQLite database; it was left as it is")
    page_size = int.from_bytes(header[16:18], "big")
    if page_size == 1:
        page_size = 65536
    pages = int.from_bytes(header[28:32], "big")
    pages_valid = header[92:96] == header[24:28]
    logged = os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 0
    if size % page_size or (pages_valid and not logged and size < pages * page_size):
        raise DamagedDatabase(
            f"{path} is truncated ({size} bytes; its header says"
            f" {pages} pages of {page_size}); restore it from a backup"
        )


def validate(path: str, key: bytes, migrations: tuple[str, ...]) -> int:
    """
    Check an existing database through a read-only connection, which
    changes nothing on disk: its version, SQLite's quick integrity check,
    and that ``key`` is the key its secrets are sealed under.

    :returns: its schema version.
    :raises NewerDatabase: when a newer version of Digital Spring wrote it.
    :raises DamagedDatabase: when it fails the integrity check.
    :raises WrongStorageKey: when its secrets are sealed under another key.
    :raises NotADatabase: when SQLite cannot read it as a database.
    """
    made = [f"{path}{suffix}" for suffix in ("-wal", "-shm") if not os.path.exists(path + suffix)]
    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise DamagedDatabase(f"{path} cannot be opened: {e}") from None
    try:
        version = _check_version(connection, path, migrations)
        problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise DamagedDatabase(
                f"{path} fails SQLite's integrity check ({problems[0]}); restore it from a backup"
            )
        if version >= 1:
            check_key(connection, path, key)
    except sqlite3.DatabaseError as e:
        connection.close()
        _remove_empty(made)
        if "not a database" in str(e):
            raise NotADatabase(f"{path} is not an SQLite database; it was left as it is") from None
        raise DamagedDatabase(f"{path} is damaged ({e}); restore it from a backup") from None
    except DatabaseUnusable:
        connection.close()
        _remove_empty(made)
        raise
    connection.close()
    return version


def _remove_empty(paths: list[str]) -> None:
    """
    Remove the ``-wal`` and ``-shm`` files a read-only connection made next
    to a database it refused, so the directory is left as it was.  The log
    of a read-only connection is always empty; it is removed only if so.
    """
    for path in paths:
        if path.endswith("-wal") and os.path.exists(path) and os.path.getsize(path):
            return
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _check_version(connection: sqlite3.Connection, path: str, migrations: tuple[str, ...]) -> int:
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        raise NewerDatabase(
            f"{path} is at schema version {version}, written by a newer Digital Spring"
            f" (this one knows up to {len(migrations)}); upgrade to use it"
        )
    return version


def check_key(connection: sqlite3.Connection, path: str, key: bytes) -> None:
    """
    :raises WrongStorageKey: unless ``key`` opens the key check row.
    """
    row = connection.execute("SELECT sealed FROM key_check WHERE id = 1").fetchone()
    try:
        if row is None or unseal(key, _KEY_CHECK_ROW, row[0]) != _KEY_CHECK:
            raise DatabaseUnusable()
    except DatabaseUnusable:
        raise WrongStorageKey(
            f"{path} is sealed under another identity's key: it is not this node's database"
        ) from None


def migrate(
    connection: sqlite3.Connection, version: int, key: bytes, migrations: tuple[str, ...]
) -> None:
    """
    Bring a database from ``version`` to the last of ``migrations`` in one
    transaction (a new one, at 0, also gets its key check row).

    :raises sqlite3.Error: when a migration fails; nothing was changed.
    """
    if version == len(migrations):
        return
    script = "".join(migrations[version:])
    try:
        connection.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {len(migrations)};"
        )
        if version == 0:
            connection.execute(
                "INSERT INTO key_check (id, sealed) VALUES (1, ?)",
                (seal(key, _KEY_CHECK_ROW, _KEY_CHECK),),
            )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
