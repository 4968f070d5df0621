# -*- test-case-name: tests.test_dht_record -*-
"""
What one node keeps for the DHT: verified peer records and small values,
each until it expires.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

from attrs import frozen

from ..errors import DigitalSpringError
from ..identity import PeerID
from ._ids import node_id
from ._record import CLOCK_SKEW, MAX_LIFETIME, MalformedRecord, PeerRecord, verify_record
from ._value import DEFAULT_DIFFICULTY, MAX_VALUE_TTL, MailboxValue, ValueRejected, check_value

#: What the store counts for one item besides its bytes: the objects that
#: hold it (measured at about 400 bytes for a small record), rounded up.
ITEM_OVERHEAD = 512


class StoreRefused(DigitalSpringError):
    """
    This node will not keep that record or value; the nodes closest to its
    key should.
    """


class NotAmongClosest(StoreRefused):
    """
    This node is not among the nodes closest to the key it was asked to
    keep something under.
    """


class QuotaExceeded(StoreRefused):
    """
    The peer (or its network) already has as many records or values kept
    at this node as it may.
    """


class StoreRateLimited(StoreRefused):
    """
    This node takes no more stores from that peer or network, or from
    anyone, for now; try again in a few seconds.
    """


class StoreFull(StoreRefused, ValueRejected):
    """
    The node keeps no more DHT records or values now.
    """


@frozen
class StoredRecord:
    """
    A verified record and the exact bytes it came in.
    """

    record: PeerRecord
    signed: bytes
    received: float


@frozen
class Quotas:
    """
    How much one node keeps for others.

    :ivar peer_records: records one storing peer may have kept here.
    :ivar peer_values: values one storing peer may have kept here.
    :ivar source_records: records the peers of one source address may have
        kept here.
    :ivar source_values: values the peers of one source address may have
        kept here.
    :ivar records: records in all.
    :ivar values: values in all.
    :ivar record_bytes: what the records may cost in all, counted as twice
        their size (the bytes and the decoded record) plus
        :data:`ITEM_OVERHEAD` each.
    :ivar value_bytes: the same for values.
    :ivar values_per_key: values under one key.
    :ivar key_values_per_peer: values one storing peer may have kept under
        one key: a depositor (a member's group owner notifying it, say)
        cannot fill a key others use.
    :ivar key_values_per_source: the same for the peers of one source
        address (new identities are free; addresses are not).
    """

    peer_records: int = 64
    peer_values: int = 256
    source_records: int = 256
    source_values: int = 1024
    records: int = 10_000
    values: int = 10_000
    record_bytes: int = 16 * 1024 * 1024
    value_bytes: int = 8 * 1024 * 1024
    values_per_key: int = 16
    key_values_per_peer: int = 2
    key_values_per_source: int = 4


def _cost(data: bytes) -> int:
    return 2 * len(data) + ITEM_OVERHEAD


class _Usage:
    __slots__ = ("records", "values")

    def __init__(self) -> None:
        self.records = 0
        self.values = 0


_Charge = tuple[str | None, str | None, int]


def record_key(signed: bytes) -> int | None:
    """
    The key a signed record would be kept under (the node ID of the public
    key after its version byte), read before the record is verified so
    that a refusal costs no signature check; ``None`` if it is too short
    to be a record (it will not verify).
    """
    if len(signed) < 33:
        return None
    return int.from_bytes(hashlib.blake2b(signed[1:33], digest_size=32).digest(), "big")


class ValueStore:
    """
    The records and values a node holds, keyed by 256-bit DHT key, each
    charged to the peer that stored it and to that peer's source address
    (see :class:`Quotas`).

    :param clock: an ``IReactorTime`` whose ``seconds()`` is Unix time (or
        a simulation's time).
    :param difficulty: the proof of work asked of values.
    :param max_records: overrides ``quotas.records``.
    :param max_values: overrides ``quotas.values``.
    :param values_per_key: overrides ``quotas.values_per_key``.
    :ivar refused: refusals so far, by reason.
    """

    def __init__(
        self,
        clock: Any,
        skew: float = CLOCK_SKEW,
        max_lifetime: float = MAX_LIFETIME,
        difficulty: int = DEFAULT_DIFFICULTY,
        max_value_ttl: float = MAX_VALUE_TTL,
        max_records: int | None = None,
        max_values: int | None = None,
        values_per_key: int | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        quotas = quotas or Quotas()
        self.clock = clock
        self.skew = skew
        self.max_lifetime = max_lifetime
        self.difficulty = difficulty
        self.max_value_ttl = max_value_ttl
        self.quotas = quotas
        self.max_records = quotas.records if max_records is None else max_records
        self.max_values = quotas.values if max_values is None else max_values
        self.values_per_key = quotas.values_per_key if values_per_key is None else values_per_key
        self.records: dict[int, StoredRecord] = {}
        self.values: dict[int, dict[bytes, MailboxValue]] = {}
        self.record_bytes = 0
        self.value_bytes = 0
        self.refused = {"peer_quota": 0, "source_quota": 0, "full": 0}
        self._value_count = 0
        self._record_charges: dict[int, _Charge] = {}
        self._value_charges: dict[tuple[int, bytes], _Charge] = {}
        self._usage: dict[str, _Usage] = {}
        #: Values under each key by account (see :meth:`usage`), for the
        #: per-key bounds of one depositor.
        self._key_usage: dict[tuple[int, str], int] = {}
        #: No record or value expires before this.
        self._next_expiry = math.inf
        #: Called with the key of each record kept, new or a newer version.
        self.kept: list[Callable[[int], None]] = []

    # -- accounting --------------------------------------------------------------------

    def usage(self, account: str) -> tuple[int, int]:
        """
        The records and values charged to ``account``: ``"peer:PEER_ID"``
        or ``"source:SOURCE"``.
        """
        found = self._usage.get(account)
        return (0, 0) if found is None else (found.records, found.values)

    def _admit(self, storer: PeerID | None, source: str | None, records: bool) -> _Charge:
        q = self.quotas
        peer = None if storer is None else f"peer:{storer}"
        net = None if source is None else f"source:{source}"
        for account, limit, reason in (
            (peer, q.peer_records if records else q.peer_values, "peer_quota"),
            (net, q.source_records if records else q.source_values, "source_quota"),
        ):
            if account is None:
                continue
            used = self._usage.get(account)
            if used is not None and (used.records if records else used.values) >= limit:
                self.refused[reason] += 1
                who = "peer" if reason == "peer_quota" else "network"
                kind = "records" if records else "values"
                raise QuotaExceeded(f"this {who} has {limit} {kind} kept here already")
        return peer, net, 0

    def _charge(self, charge: _Charge, records: bool, sign: int) -> None:
        for account in charge[:2]:
            if account is None:
                continue
            used = self._usage.get(account)
            if used is None:
                used = self._usage[account] = _Usage()
            if records:
                used.records += sign
            else:
                used.values += sign
            if not used.records and not used.values:
                del self._usage[account]

    # -- records -----------------------------------------------------------------------

    def put_record(
        self, signed: bytes, storer: PeerID | None = None, source: str | None = None
    ) -> tuple[PeerRecord, bool]:
        """
        Keep a signed peer record if it is valid and newer than the one we
        hold (the highest sequence number wins).  A new key is charged to
        ``storer`` and ``source``; a newer version of a record held stays
        charged to whoever stored the first.

        :param storer: the peer that asked (``None``: this node itself).
        :param source: the source address it asked from, if known.
        :returns: the record, and whether it was kept.
        :raises RecordRejected: (a subclass saying why) when it is not valid.
        :raises StoreRefused: (a subclass saying why) when it is valid but
            beyond a quota.
        """
        now = self.clock.seconds()
        key = record_key(signed)
        if key is None:
            raise MalformedRecord("the record is truncated")
        held = self.get_record(key)
        if held is not None:
            record = self._verify(signed, now, key)
            if held.record.sequence > record.sequence:
                return record, False
            if held.record.sequence == record.sequence:
                return record, held.signed == signed
            old = self._record_charges.get(key, (None, None, 0))
            charge = (old[0], old[1], _cost(signed))
            if self.record_bytes - old[2] + charge[2] > self.quotas.record_bytes:
                self._full("records")
            self.record_bytes += charge[2] - old[2]
            self._record_charges[key] = charge
            self._keep(key, StoredRecord(record, signed, now))
            return record, True
        # A new key: the quotas and the room are checked before the
        # signature, so that a refusal costs a hash and a few lookups.
        charge = self._admit(storer, source, records=True)
        charge = (charge[0], charge[1], _cost(signed))
        if not self._record_room(charge[2]):
            self.expire()
            if not self._record_room(charge[2]):
                self._full("records")
        record = self._verify(signed, now, key)
        self._record_charges[key] = charge
        self.record_bytes += charge[2]
        self._charge(charge, True, 1)
        self._keep(key, StoredRecord(record, signed, now))
        return record, True

    def _keep(self, key: int, held: StoredRecord) -> None:
        self.records[key] = held
        self._expiring(held.record.expires)
        for callback in self.kept:
            callback(key)

    def _verify(self, signed: bytes, now: float, key: int) -> PeerRecord:
        record = verify_record(signed, now, self.skew, self.max_lifetime)
        if node_id(record.peer_id) != key:
            # Not for a record that verified: its key follows the version.
            raise MalformedRecord(f"the record of {record.peer_id} is laid out wrongly")
        return record

    def _record_room(self, cost: int) -> bool:
        return (
            len(self.records) < self.max_records
            and self.record_bytes + cost <= self.quotas.record_bytes
        )

    def _expiring(self, expires: float) -> None:
        self._next_expiry = min(self._next_expiry, expires)

    def _full(self, what: str) -> None:
        self.refused["full"] += 1
        raise StoreFull(f"this node holds as many DHT {what} as it will")

    def _drop_record(self, key: int) -> None:
        del self.records[key]
        charge = self._record_charges.pop(key, (None, None, 0))
        self.record_bytes -= charge[2]
        self._charge(charge, True, -1)

    def get_record(self, key: int) -> StoredRecord | None:
        """
        The record held under ``key``, unless it expired.
        """
        held = self.records.get(key)
        if held is not None and held.record.expires <= self.clock.seconds():
            self._drop_record(key)
            return None
        return held

    def record_of(self, peer_id: PeerID) -> StoredRecord | None:
        """
        The record of ``peer_id``, if this node holds a live one.
        """
        return self.get_record(node_id(peer_id))

    # -- values ------------------------------------------------------------------------

    def put_value(
        self, data: bytes, storer: PeerID | None = None, source: str | None = None
    ) -> MailboxValue:
        """
        Keep a small value if its size, expiry and proof of work are right,
        charged to ``storer`` and ``source``.

        :returns: the value.
        :raises ValueRejected: (a subclass saying why) otherwise.
        :raises StoreRefused: (a subclass saying why) when it is valid but
            beyond a quota.
        """
        value = check_value(data, self.clock.seconds(), self.difficulty, self.max_value_ttl)
        key = int.from_bytes(value.key, "big")
        held = self.values.get(key)
        if held is not None and data in held:
            return value
        charge = self._admit(storer, source, records=False)
        charge = (charge[0], charge[1], _cost(data))
        self.expire()
        self._admit_under_key(key, charge)
        if not self._value_room(key, charge[2]):
            self._full("values")
        self.values.setdefault(key, {})[data] = value
        self._value_charges[key, data] = charge
        self._value_count += 1
        self.value_bytes += charge[2]
        self._charge(charge, False, 1)
        self._charge_key(key, charge, 1)
        self._expiring(value.expires)
        return value

    def _admit_under_key(self, key: int, charge: _Charge) -> None:
        """
        :raises QuotaExceeded: when the storer, or its source address,
            already has as many values under ``key`` as one may.
        """
        q = self.quotas
        for account, limit, reason in (
            (charge[0], q.key_values_per_peer, "peer_quota"),
            (charge[1], q.key_values_per_source, "source_quota"),
        ):
            if account is not None and self._key_usage.get((key, account), 0) >= limit:
                self.refused[reason] += 1
                who = "peer" if reason == "peer_quota" else "network"
                raise QuotaExceeded(
                    f"this {who} has {limit} values kept under that key here already"
                )

    def _charge_key(self, key: int, charge: _Charge, sign: int) -> None:
        for account in charge[:2]:
            if account is None:
                continue
            count = self._key_usage.get((key, account), 0) + sign
            if count:
                self._key_usage[key, account] = count
            else:
                self._key_usage.pop((key, account), None)

    def _value_room(self, key: int, cost: int) -> bool:
        return (
            len(self.values.get(key, ())) < self.values_per_key
            and self._value_count < self.max_values
            and self.value_bytes + cost <= self.quotas.value_bytes
        )

    def get_values(self, key: int) -> list[bytes]:
        """
        The live values under ``key``, in their wire form.
        """
        now = self.clock.seconds()
        return [data for data, value in self.values.get(key, {}).items() if value.expires > now]

    def expire(self) -> None:
        """
        Forget everything that expired.  Nothing is looked at before the
        first expiry: a full store refusing a flood does not walk its
        records for each refusal.
        """
        now = self.clock.seconds()
        if now < self._next_expiry:
            return
        for key in [k for k, r in self.records.items() if r.record.expires <= now]:
            self._drop_record(key)
        for key in list(self.values):
            held = self.values[key]
            for data in [d for d, v in held.items() if v.expires <= now]:
                del held[data]
                charge = self._value_charges.pop((key, data), (None, None, 0))
                self._value_count -= 1
                self.value_bytes -= charge[2]
                self._charge(charge, False, -1)
                self._charge_key(key, charge, -1)
            if not held:
                del self.values[key]
        self._next_expiry = min(
            (
                *(held.record.expires for held in self.records.values()),
                *(v.expires for held in self.values.values() for v in held.values()),
            ),
            default=math.inf,
        )
