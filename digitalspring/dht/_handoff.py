# -*- test-case-name: tests.test_dht_hostile -*-
"""
Handing newcomers the records they should hold, a bounded amount of work at
a time.

When a contact enters the routing table, Kademlia has the node closest to a
key hand the newcomer each record it now ought to hold (it is among the
``k`` closest to the key).  Finding those records means looking at every
record held, so the work grows with the store: done in one go for each
newcomer, a store of 20,000 records stalled the reactor for half a second
per newcomer.  :class:`Handoff` does it in passes over the store, each pass
for all the newcomers that arrived before it, and does at most ``batch``
(record, newcomer) checks per reactor turn before it yields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall

from ._routing import Contact, RoutingTable
from ._store import StoredRecord, ValueStore


class Handoff:
    """
    The records owed to newcomers, looked for ``batch`` checks per turn.

    :param send: stores a record at a contact.
    :param batch: the most (record, newcomer) checks in one reactor turn.
    :param max_waiting: the most newcomers waiting for a pass; more are
        not welcomed (re-replication and republishing reach them later).
    :ivar counts: ``checks`` and ``handed`` so far, ``dropped`` newcomers,
        and ``most_checks_in_a_turn``.
    """

    def __init__(
        self,
        clock: Any,
        table: RoutingTable,
        store: ValueStore,
        k: int,
        send: Callable[[Contact, StoredRecord], object],
        batch: int = 256,
        max_waiting: int = 1024,
    ) -> None:
        self.clock = clock
        self.table = table
        self.store = store
        self.k = k
        self.send = send
        self.batch = batch
        self.max_waiting = max_waiting
        self.counts = {"checks": 0, "handed": 0, "dropped": 0, "most_checks_in_a_turn": 0}
        self._waiting: list[Contact] = []
        self._pass: list[Contact] = []
        self._keys: list[int] = []
        self._position = 0
        self._call: IDelayedCall | None = None

    def welcome(self, contact: Contact) -> None:
        """
        ``contact`` entered the routing table: hand it what it should hold,
        in the turns to come.
        """
        if len(self._waiting) >= self.max_waiting:
            self.counts["dropped"] += 1
            return
        self._waiting.append(contact)
        self._schedule()

    def stop(self) -> None:
        """
        Forget the newcomers and the pass in progress.
        """
        self._waiting = []
        self._pass = []
        self._keys = []
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        if self._call is None or not self._call.active():
            self._call = self.clock.callLater(0, self._turn)

    def _turn(self) -> None:
        self._call = None
        budget = self.batch
        checks = 0
        records = self.store.records
        while budget >= max(1, len(self._pass)):
            if self._position >= len(self._keys):
                if not self._waiting:
                    self._keys = []
                    break
                self._pass = self._waiting[: self.batch]
                del self._waiting[: self.batch]
                # A copy of the keys (a C-level copy, microseconds for 10,000)
                # lets the store change between turns.
                self._keys = list(records)
                self._position = 0
                continue
            key = self._keys[self._position]
            self._position += 1
            held = records.get(key)
            if held is None:
                continue
            for contact in self._pass:
                budget -= 1
                checks += 1
                if contact.peer_id in self.table and self._owed(contact, key):
                    self.counts["handed"] += 1
                    self.send(contact, held)
        self.counts["checks"] += checks
        self.counts["most_checks_in_a_turn"] = max(self.counts["most_checks_in_a_turn"], checks)
        if self._position < len(self._keys) or self._waiting:
            self._schedule()

    def _owed(self, contact: Contact, key: int) -> bool:
        """
        Whether ``contact`` should get the record under ``key`` from us: no
        one else we know is closer to the key than we are, and the newcomer
        is among the ``k`` closest we know.
        """
        if self.table.closer_than_self(key, 1, exclude=contact.peer_id):
            return False
        return self.table.rank_of(contact, key, self.k) < self.k
