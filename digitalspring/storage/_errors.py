# -*- test-case-name: tests.test_storage -*-
"""
What can go wrong with the node's store.

Errors about the file itself (:class:`DatabaseUnusable` and its subclasses)
stop the node at start-up with one line; it never overwrites or changes the
file that caused them.  The rest are refusals of one transaction, which
leaves the store as it was.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from ..errors import DigitalSpringError


class StorageError(DigitalSpringError):
    """
    The node's store refused an operation or could not be used.
    """


class DatabaseUnusable(StorageError):
    """
    The node's database cannot be used; it was left exactly as it is.
    """


class NotADatabase(DatabaseUnusable):
    """
    The node's database file is not an SQLite database.
    """


class DamagedDatabase(DatabaseUnusable):
    """
    The node's database is damaged (truncated, or it fails SQLite's
    integrity check); restore it from a backup.
    """


class TamperedRow(DamagedDatabase):
    """
    An encrypted value in the node's database does not authenticate: it was
    changed, or moved from another row, outside Digital Spring.
    """


class NewerDatabase(DatabaseUnusable):
    """
    The node's database was written by a newer version of Digital Spring;
    upgrade Digital Spring to use it.
    """


class WrongStorageKey(DatabaseUnusable):
    """
    The node's database was encrypted under another identity's key: it
    belongs to another identity, or the key file was replaced.
    """


class MigrationFailed(DatabaseUnusable):
    """
    Upgrading the node's database to this version failed; the file was left
    at its old version.
    """


class StoreClosed(StorageError):
    """
    The store was used after it was closed.
    """


def closed_by_stopping(failure: Failure, running: object) -> bool:
    """
    Whether ``failure`` is work cut short as its service stopped: the store
    closed under it (what it did not commit is done again at the next
    start), which a service logs as an info line rather than a failure.

    :param running: whether the service that did the work still runs
        (``Service.running``).
    """
    return not running and isinstance(failure.value, StoreClosed)


class NotStored(StorageError):
    """
    The group, member, epoch, message or entry named is not in the store.
    """


class AlreadyStored(StorageError):
    """
    The group, epoch or message is already in the store; it is never
    replaced by another copy.
    """


class ChainOutOfOrder(StorageError):
    """
    A chain key would move backwards, or a message was committed at an index
    its chain is not at: an index is never reused.
    """


class PeerBlocked(StorageError):
    """
    The peer is blocked: nothing it sends is kept.
    """


class QuotaExceeded(StorageError):
    """
    Storing this would go past a bound on what peers can make the store
    hold.

    :ivar what: which bound (``"partial bytes"``, ``"outbox entries"``...).
    :ivar limit: its value.
    """

    def __init__(self, message: str, what: str, limit: int) -> None:
        super().__init__(message)
        self.what = what
        self.limit = limit


class PeerQuotaExceeded(QuotaExceeded):
    """
    This peer already has as much stored as one peer may.
    """


class TotalQuotaExceeded(QuotaExceeded):
    """
    All peers together already have as much stored as the node keeps.
    """


class GroupQuotaExceeded(QuotaExceeded):
    """
    This mailbox already holds as much of this group as it keeps of one
    group.
    """
