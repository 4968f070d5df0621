# -*- test-case-name: tests.test_dht_record -*-
"""
What one node keeps for the DHT: verified peer records and small values,
each until it expires.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from ..identity import PeerID
from ._ids import node_id
from ._record import CLOCK_SKEW, MAX_LIFETIME, PeerRecord, verify_record
from ._value import DEFAULT_DIFFICULTY, MAX_VALUE_TTL, MailboxValue, ValueRejected, check_value


class StoreFull(ValueRejected):
    """
    The node keeps no more DHT values now.
    """


@frozen
class StoredRecord:
    """
    A verified record and the exact bytes it came in.
    """

    record: PeerRecord
    signed: bytes
    received: float


class ValueStore:
    """
    The records and values a node holds, keyed by 256-bit DHT key.

    :param clock: an ``IReactorTime`` whose ``seconds()`` is Unix time (or
        a simulation's time).
    :param difficulty: the proof of work asked of values.
    """

    def __init__(
        self,
        clock: Any,
        skew: float = CLOCK_SKEW,
        max_lifetime: float = MAX_LIFETIME,
        difficulty: int = DEFAULT_DIFFICULTY,
        max_value_ttl: float = MAX_VALUE_TTL,
        max_records: int = 100_000,
        max_values: int = 10_000,
        values_per_key: int = 16,
    ) -> None:
        self.clock = clock
        self.skew = skew
        self.max_lifetime = max_lifetime
        self.difficulty = difficulty
        self.max_value_ttl = max_value_ttl
        self.max_records = max_records
        self.max_values = max_values
        self.values_per_key = values_per_key
        self.records: dict[int, StoredRecord] = {}
        self.values: dict[int, dict[bytes, MailboxValue]] = {}
        self._value_count = 0

    def put_record(self, signed: bytes) -> tuple[PeerRecord, bool]:
        """
        Keep a signed peer record if it is valid and newer than the one we
        hold (the highest sequence number wins).

        :returns: the record, and whether it was kept.
        :raises RecordRejected: (a subclass saying why) when it is not valid.
        """
        now = self.clock.seconds()
        record = verify_record(signed, now, self.skew, self.max_lifetime)
        key = node_id(record.peer_id)
        held = self.get_record(key)
        if held is not None and held.record.sequence >= record.sequence:
            return record, held.signed == signed
        if held is None and len(self.records) >= self.max_records:
            self.expire()
            if len(self.records) >= self.max_records:
                return record, False
        self.records[key] = StoredRecord(record, signed, now)
        return record, True

    def get_record(self, key: int) -> StoredRecord | None:
        """
        The record held under ``key``, unless it expired.
        """
        held = self.records.get(key)
        if held is not None and held.record.expires <= self.clock.seconds():
            del self.records[key]
            return None
        return held

    def record_of(self, peer_id: PeerID) -> StoredRecord | None:
        """
        The record of ``peer_id``, if this node holds a live one.
        """
        return self.get_record(node_id(peer_id))

    def put_value(self, data: bytes) -> MailboxValue:
        """
        Keep a small value if its size, expiry and proof of work are right.

        :returns: the value.
        :raises ValueRejected: (a subclass saying why) otherwise.
        """
        value = check_value(data, self.clock.seconds(), self.difficulty, self.max_value_ttl)
        key = int.from_bytes(value.key, "big")
        held = self.values.setdefault(key, {})
        if data in held:
            return value
        if len(held) >= self.values_per_key or self._value_count >= self.max_values:
            self.expire()
            held = self.values.setdefault(key, {})
            if len(held) >= self.values_per_key or self._value_count >= self.max_values:
                if not held:
                    del self.values[key]
                raise StoreFull("this node holds as many DHT values as it will")
        held[data] = value
        self._value_count += 1
        return value

    def get_values(self, key: int) -> list[bytes]:
        """
        The live values under ``key``, in their wire form.
        """
        now = self.clock.seconds()
        return [data for data, value in self.values.get(key, {}).items() if value.expires > now]

    def expire(self) -> None:
        """
        Forget everything that expired.
        """
        now = self.clock.seconds()
        self.records = {k: r for k, r in self.records.items() if r.record.expires > now}
        for key in list(self.values):
            held = {d: v for d, v in self.values[key].items() if v.expires > now}
            if held:
                self.values[key] = held
            else:
                del self.values[key]
        self._value_count = sum(len(held) for held in self.values.values())
