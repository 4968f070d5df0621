"""
Tests for :mod:`digitalspring.storage`: both stores pass the conformance
mixin.  The SQLite store's own properties (files, durability, secrets at
rest, migrations) are in ``tests.test_storage_sqlite``.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.identity import Identity
from digitalspring.storage import (
    IStore,
    MemoryStore,
    SetSetting,
    StoreLimits,
    open_sqlite_store,
    storage_key,
)
from digitalspring.testing import StoreConformanceMixin


class MemoryStoreTests(StoreConformanceMixin, TestCase):
    """
    The memory store passes the conformance tests.
    """

    def make_store(self, limits: StoreLimits) -> Deferred[IStore]:
        return succeed(MemoryStore(limits))


class SQLiteStoreTests(StoreConformanceMixin, TestCase):
    """
    The SQLite store passes the conformance tests.
    """

    def make_store(self, limits: StoreLimits) -> Deferred[IStore]:
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        d = open_sqlite_store(reactor, data_dir, b"k" * 32, limits)

        def opened(store: IStore) -> IStore:
            self.addCleanup(store.close)
            return store

        return d.addCallback(opened)


class MemoryStoreSynchronousTests(SynchronousTestCase):
    """
    The memory store answers at once, so a simulation needs no reactor.
    """

    def test_fired(self) -> None:
        """
        Its Deferreds have fired when they are returned.
        """
        store = MemoryStore()
        self.successResultOf(store.commit(SetSetting("a", "b")))
        self.assertEqual(self.successResultOf(store.setting("a")), "b")


class StorageKeyTests(SynchronousTestCase):
    """
    The storage key comes from the identity.
    """

    def test_per_identity(self) -> None:
        """
        The same identity always gives the same key; another identity
        another key; and the key is not the seed.
        """
        one = Identity.from_seed(b"1" * 32)
        two = Identity.from_seed(b"2" * 32)
        self.assertEqual(storage_key(one), storage_key(Identity.from_seed(b"1" * 32)))
        self.assertNotEqual(storage_key(one), storage_key(two))
        self.assertNotEqual(storage_key(one), one.seed)
        self.assertEqual(len(storage_key(one)), 32)
