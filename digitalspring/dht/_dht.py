# -*- test-case-name: tests.test_dht -*-
"""
The DHT service: Kademlia over the connection pool's secure channels.

It answers the DHT's AMP commands on every connection of the pool, keeps
the routing table and what this node stores for others, publishes the
node's own signed record (on start, when its addresses change, and before
the record expires), and on the injected clock refreshes idle buckets and
re-replicates the records it holds.  Given a data directory, it saves its
contacts and what it holds there (on stop and periodically), and starts
from them: see :mod:`digitalspring.dht._state`.

Every peer may be hostile.  A contact enters the routing table only with
addresses this node proved (:mod:`digitalspring.dht._origin`); a store is
kept only when this node is among the nodes closest to its key, within the
storing peer's quota and the store's (:class:`~digitalspring.dht.Quotas`);
newcomers get the records they should hold a bounded amount of work per
reactor turn (:mod:`digitalspring.dht._handoff`); and only records this
node is responsible for are re-replicated, a few per upkeep run.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from random import Random, SystemRandom
from typing import Any

from attrs import field, frozen
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.defer import TimeoutError as RequestTimedOut
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from .._ratelimit import RateLimitedLog
from ..identity import PeerID, atomic_write
from ..transport import InvalidAddress, split_address
from ._anonymous import get_anonymously
from ._handoff import Handoff
from ._ids import bucket_index, id_bytes, id_from_bytes, node_id, random_id_in_bucket
from ._interfaces import IDistributedHashTable, RequestConnection, RequestPool
from ._join import Joined, JoinFailed, NotADHTNode, dial_expecting
from ._lookup import Answer, Lookup, LookupResult
from ._origin import (
    DialBackFailed,
    DialBacks,
    check_origin,
    dialled_address,
    source_network,
    source_of,
)
from ._rates import StoreLimiter, StoreRates
from ._record import CLOCK_SKEW, MAX_LIFETIME, PeerRecord, RecordRejected, sign_record
from ._record import verify_record as _verify_record
from ._routing import Contact, RoutingTable
from ._rpc import (
    MAILBOX,
    MAX_ADDRESSES,
    RECORD,
    BadDHTRequest,
    DHTPing,
    FindNode,
    FindValue,
    Store,
)
from ._state import (
    CONTACTS_FILE_NAME,
    MAX_SAVED_RECORDS,
    MAX_SAVED_VALUES,
    MAX_STATE_FILE_SIZE,
    RECORDS_FILE_NAME,
    DamagedStateFile,
    SavedContact,
    SavedRecords,
    decode_contacts_file,
    decode_records_file,
    encode_contacts_file,
    encode_records_file,
)
from ._store import (
    NotAmongClosest,
    Quotas,
    StoredRecord,
    StoreRateLimited,
    StoreRefused,
    ValueStore,
    record_key,
)
from ._value import (
    DEFAULT_DIFFICULTY,
    MAX_VALUE_SIZE,
    MAX_VALUE_TTL,
    ValueRejected,
    ValueTooLarge,
    ValueTTLTooLong,
    check_value,
    decode_value,
    solve,
)

#: The most bytes of values one FindValue answer carries.
_MAX_VALUES_ANSWER = 48 * 1024

#: Errors that are answers: the peer is alive, if not agreeable.
_ANSWERS = (RecordRejected, ValueRejected, BadDHTRequest, StoreRefused)


@frozen
class DHTSettings:
    """
    The DHT's parameters.

    :ivar k: bucket size and replication factor.
    :ivar alpha: requests in flight per lookup.
    :ivar rpc_timeout: seconds a request (dialling included) may take.
    :ivar lookup_deadline: seconds a whole lookup may take.
    :ivar record_lifetime: how long this node's records are valid.
    :ivar republish_interval: how often this node signs a new record anyway
        (well within ``record_lifetime``).
    :ivar refresh_interval: a bucket no lookup touched for this long is
        refreshed with a lookup of a random ID in it.
    :ivar replicate_interval: a record held for others and not stored again
        by anyone for this long is stored again at the ``k`` closest nodes.
    :ivar maintenance_interval: how often the checks above run.
    :ivar stale_after: see :class:`~digitalspring.dht.RoutingTable`.
    :ivar replacements: newcomers remembered per full bucket.
    :ivar subnet_limit: contacts per IPv4 /24 per bucket (``None``: no
        limit).
    :ivar max_failures: failed requests in a row before a contact is
        replaced.
    :ivar clock_skew: how far in the future a record may be dated.
    :ivar max_record_lifetime: the longest validity of a record accepted.
    :ivar pow_difficulty: leading zero bits asked of small values.
    :ivar bootstrap_retry: seconds between attempts to join while no
        bootstrap peer answers.
    :ivar save_interval: how often a node with a data directory saves its
        contacts and what it holds (it also saves on stop, and whenever it
        signs a record).
    :ivar store_slack: a store is refused when ``k + store_slack`` contacts
        of the routing table are closer to its key than this node.
    :ivar quotas: how much the node keeps for others, per peer, per source
        address and in all.
    :ivar store_rates: how many stores the node takes, per peer, per source
        address and in all.
    :ivar replicate_per_run: the most records re-replicated per upkeep run.
    :ivar handoff_batch: the most (record, newcomer) checks per reactor
        turn when handing newcomers their records.
    :ivar dialback_rate: dial-backs per second in all, after a burst of
        ``dialback_burst``.
    :ivar dialback_source_burst: dial-backs for claims from one source
        address at once, then one per ``dialback_source_interval`` seconds.
    :ivar dialback_queue: the most dial-backs waiting.
    :ivar dialback_concurrency: the most dial-backs at once.
    """

    k: int = 20
    alpha: int = 3
    rpc_timeout: float = 5.0
    lookup_deadline: float = 30.0
    record_lifetime: float = 4 * 3600.0
    republish_interval: float = 3600.0
    refresh_interval: float = 3600.0
    replicate_interval: float = 3600.0
    maintenance_interval: float = 60.0
    stale_after: float = 900.0
    replacements: int = 10
    subnet_limit: int | None = 2
    max_failures: int = 2
    clock_skew: float = CLOCK_SKEW
    max_record_lifetime: float = MAX_LIFETIME
    pow_difficulty: int = DEFAULT_DIFFICULTY
    bootstrap_retry: float = 60.0
    save_interval: float = 600.0
    store_slack: int = 10
    quotas: Quotas = field(factory=Quotas)
    store_rates: StoreRates = field(factory=StoreRates)
    replicate_per_run: int = 8
    handoff_batch: int = 256
    dialback_rate: float = 2.0
    dialback_burst: int = 16
    dialback_source_burst: int = 4
    dialback_source_interval: float = 30.0
    dialback_queue: int = 64
    dialback_concurrency: int = 4


class DHTResponder(amp.CommandLocator):
    """
    The DHT's commands on one connection of the pool.
    """

    log = Logger()

    def __init__(self, dht: DHT, connection: RequestConnection) -> None:
        self.dht = dht
        self.connection = connection

    def _heard(self, origin: tuple[str, ...]) -> None:
        self.dht.talked(self.connection, origin)

    def _key(self, key: bytes) -> int:
        try:
            return id_from_bytes(key)
        except ValueError as e:
            raise BadDHTRequest(str(e)) from None

    @DHTPing.responder
    def ping(self, origin: tuple[str, ...]) -> dict[str, Any]:
        self._heard(origin)
        return {}

    @FindNode.responder
    def find_node(self, key: bytes, origin: tuple[str, ...]) -> dict[str, Any]:
        target = self._key(key)
        self._heard(origin)
        return {"contacts": self.dht.table.closest(target)}

    @FindValue.responder
    def find_value(self, key: bytes, kind: str, origin: tuple[str, ...]) -> dict[str, Any]:
        target = self._key(key)
        self._heard(origin)
        record = None
        values: list[bytes] = []
        if kind == RECORD:
            held = self.dht.store.get_record(target)
            record = None if held is None else held.signed
        elif kind == MAILBOX:
            size = 0
            for value in self.dht.store.get_values(target):
                size += len(value) + 2
                if size > _MAX_VALUES_ANSWER:
                    break
                values.append(value)
        else:
            raise BadDHTRequest(f"no such kind of DHT value: {kind[:40]!r}")
        return {"record": record, "values": values, "contacts": self.dht.table.closest(target)}

    @Store.responder
    def store(self, kind: str, data: bytes, origin: tuple[str, ...]) -> dict[str, Any]:
        dht = self.dht
        storer = self.connection.peer_id
        peer = str(storer)
        there = _peer_address(self.connection)
        source = None if there is None else source_of(there)
        # The cheapest refusal first: before the origin, the table or the
        # store is looked at.
        empty = dht.store_limiter.admit(storer, source)
        if empty is not None:
            dht.refused["store_rate"] += 1
            dht.peer_log.info(
                "StoreRateLimited",
                "refused a DHT store from {peer}: too many from the {bucket}",
                peer=peer,
                bucket={"total": "whole network"}.get(empty, empty),
            )
            raise StoreRateLimited(f"this node takes no more stores from this {empty} for now")
        self._heard(origin)
        if kind == RECORD:
            try:
                dht.check_closest(record_key(data), dht.store.records)
                record, kept = dht.store.put_record(data, storer, source)
            except (RecordRejected, StoreRefused) as e:
                dht.peer_log.info(
                    e.__class__.__name__,
                    "rejected a peer record from {peer}: {reason}",
                    peer=peer,
                    reason=str(e),
                    rejection=e.__class__.__name__,
                )
                raise
            dht.peer_log.emit(
                LogLevel.debug,
                "record_stored",
                "record {sequence} of {owner} from {peer}: {outcome}",
                sequence=record.sequence,
                owner=str(record.peer_id),
                peer=peer,
                outcome="kept" if kept else "not newer",
            )
            if kept:
                # Stored again by someone, who (Kademlia assumes) stored it
                # at the other closest nodes too: this holder need not.
                dht.stored_again(node_id(record.peer_id))
            return {"stored": kept}
        if kind == MAILBOX:
            try:
                if len(data) >= 32:
                    dht.check_closest(int.from_bytes(data[:32], "big"), dht.store.values)
                dht.store.put_value(data, storer, source)
            except (ValueRejected, StoreRefused) as e:
                dht.peer_log.info(
                    e.__class__.__name__,
                    "rejected a DHT value from {peer}: {reason}",
                    peer=peer,
                    reason=str(e),
                    rejection=e.__class__.__name__,
                )
                raise
            return {"stored": True}
        raise BadDHTRequest(f"no such kind of DHT value: {kind[:40]!r}")


def replicate_factor(key: int, own_id: int) -> float:
    """
    How many ``replicate_interval`` a holder waits before it stores a
    record again at the closest nodes: between 1.05 and 1.3, a different
    fraction for each holder of a key.

    The ``k`` holders of a record got it at the same moment (its owner's
    publish), so with one interval they would all store it again in the
    same upkeep run, ``k`` lookups and ``k**2`` stores where one of each
    does (Kademlia's rule: a holder that receives a store assumes the
    others did too, and waits another interval).  Spread over a quarter of
    an interval, the first holder's stores reach the others before they
    are due.  Above 1, so that an owner online, who republishes every
    ``republish_interval`` (an hour, as ``replicate_interval``), is never
    raced by its holders.
    """
    return 1.05 + ((key ^ own_id) & 0xFF) / 1024


def _peer_address(connection: RequestConnection) -> IAddress | None:
    transport = connection.transport
    return None if transport is None else transport.getPeer()


@implementer(IDistributedHashTable)
class DHT(Service):
    """
    A Kademlia node.

    :param pool: the connection pool whose secure connections carry the
        requests; the DHT adds its commands to the pool's locators, so build
        it before the pool starts.
    :param settings: the DHT's parameters.
    :param bootstrap: peers to join the network through.
    :param state_dir: the directory of the files that keep the DHT's
        knowledge across restarts, or ``None`` to keep nothing.
    :param random: where bucket refreshes draw their targets: the operating
        system's generator, unless a simulation passes a seeded one so that
        a run repeats exactly.
    :ivar table: the :class:`~digitalspring.dht.RoutingTable`.
    :ivar saved_contacts: the contacts saved by the last run, tried when
        joining like bootstrap peers; each enters the table only once it
        answers.
    :ivar store: what this node holds for others (and its own record).
    :ivar joined: fires once the first attempt to join has ended.
    """

    log = Logger()

    def __init__(
        self,
        pool: RequestPool,
        settings: DHTSettings | None = None,
        bootstrap: Iterable[Contact] = (),
        state_dir: FilePath[str] | None = None,
        random: Random | None = None,
    ) -> None:
        self.pool = pool
        self.random = random or SystemRandom()
        self.identity = pool.identity
        self.peer_id = pool.identity.peer_id
        self.clock = pool.clock
        self.settings = settings = settings or DHTSettings()
        self.own_id = node_id(self.peer_id)
        self.table = RoutingTable(
            self.peer_id,
            self.clock,
            self._ping,
            k=settings.k,
            replacements=settings.replacements,
            subnet_limit=settings.subnet_limit,
            stale_after=settings.stale_after,
            max_failures=settings.max_failures,
        )
        self.table.added.append(self._contact_added)
        self.store = ValueStore(
            self.clock,
            skew=settings.clock_skew,
            max_lifetime=settings.max_record_lifetime,
            difficulty=settings.pow_difficulty,
            quotas=settings.quotas,
        )
        self.store.kept.append(self._record_kept)
        self.handoff = Handoff(
            self.clock,
            self.table,
            self.store,
            settings.k,
            self._hand_over,
            batch=settings.handoff_batch,
        )
        self.dialbacks = DialBacks(
            self.clock,
            self._dial_back,
            self._dialled_back,
            rate=settings.dialback_rate,
            burst=settings.dialback_burst,
            source_burst=settings.dialback_source_burst,
            source_interval=settings.dialback_source_interval,
            max_pending=settings.dialback_queue,
            concurrency=settings.dialback_concurrency,
            connected=lambda peer_id: peer_id in self.pool.connections(),
        )
        #: Log lines that peers cause, at a bounded rate.
        self.peer_log = RateLimitedLog(self.log, self.clock)
        #: Refusals and dropped claims so far, by reason (see ``status()``).
        self.refused = {"not_closest": 0, "origin_addresses": 0, "store_rate": 0}
        self.store_limiter = StoreLimiter(self.clock, settings.store_rates)
        self.bootstrap_contacts = list(bootstrap)
        self.state_dir = state_dir
        self.saved_contacts: list[SavedContact] = []
        self.own_record: StoredRecord | None = None
        self.published_at: float = -math.inf
        self.published_to = 0
        self.joined: Deferred[None] = Deferred()
        self._origin: tuple[str, ...] = ()
        self._published_addresses: tuple[str, ...] | None = None
        self._sequence = 0
        #: Joins under way (at start, and through ``dht join``): publishing
        #: waits for them, to store the record at the nodes they find.
        self._joining = 0
        self._publishing = False
        self._publish_wanted = False
        self._publish_call: Any = None
        self._replicated: dict[int, float] = {}
        #: When each record held comes due for re-replication (at the
        #: latest: a store again only makes its wait longer), one entry per
        #: key in ``_due_at`` and in the heap ``_due``.
        self._due: list[tuple[float, int]] = []
        self._due_at: dict[int, float] = {}
        self._loop: LoopingCall | None = None
        self._save_loop: LoopingCall | None = None
        pool.locators.append(self._locator)

    def _locator(self, connection: RequestConnection) -> DHTResponder:
        return DHTResponder(self, connection)

    # -- this node's addresses ---------------------------------------------------------

    def addresses(self) -> list[str]:
        """
        Where this node can be dialled now, ``NAME:ADDRESS``: what it
        publishes.
        """
        return [
            f"{name}:{address}"
            for name, transport in sorted(self.pool.transports.items())
            for address in transport.published_addresses()
        ]

    def addresses_changed(self) -> None:
        """
        The node listens somewhere new (or no longer): publish a new record
        once joined.
        """
        self._origin = tuple(self.addresses())
        if tuple(self._origin) != self._published_addresses:
            self._publish_soon(0)

    # -- requests ------------------------------------------------------------------

    def _call(self, contact: Contact, command: type[amp.Command], **kw: Any) -> Deferred[Any]:
        # Callbacks rather than a coroutine: a node sends requests all the
        # time, and a simulation of thousands of nodes sends millions.
        asked = self.pool.request(
            contact.peer_id, command, contact.addresses, origin=self._origin, **kw
        )
        d: Deferred[Any] = ensureDeferred(asked)
        # The request's timeout as addTimeout's, with the timer stopped in
        # the callbacks that run anyway: two callbacks and three closures
        # fewer on every request.
        timer = self.clock.callLater(self.settings.rpc_timeout, d.cancel)
        d.addCallbacks(
            self._call_answered,
            self._call_refused,
            callbackArgs=(contact, timer),
            errbackArgs=(contact, timer),
        )
        d.addErrback(self._call_failed, contact)
        return d

    def _call_answered(
        self, answer: tuple[RequestConnection, Any], contact: Contact, timer: IDelayedCall
    ) -> Any:
        if timer.active():
            timer.cancel()
        # On the connection the answer came on: one we dialled proves the
        # address even when the pool has kept the peer's since.
        connection, result = answer
        self.talked(connection, contact.addresses)
        return result

    def _call_refused(self, failure: Failure, contact: Contact, timer: IDelayedCall) -> Failure:
        if timer.active():
            timer.cancel()
        elif failure.check(CancelledError):
            # The timer ran out and cancelled the request.
            return Failure(RequestTimedOut(self.settings.rpc_timeout, "Deferred"))
        if failure.check(*_ANSWERS):
            # It answered, if not what we hoped.
            self._talked_through_pool(contact)
        return failure

    def _talked_through_pool(self, contact: Contact) -> None:
        """
        ``contact`` answered a request with an error: :meth:`talked` over
        the connection the pool now holds with it.
        """
        connection = self.pool.connections().get(contact.peer_id)
        if connection is not None:
            self.talked(connection, contact.addresses)

    def _call_failed(self, failure: Failure, contact: Contact) -> Failure:
        if not failure.check(*_ANSWERS):
            self.table.failed(contact.peer_id)
        return failure

    def _ping(self, contact: Contact) -> Deferred[Any]:
        return self._call(contact, DHTPing)

    def _ask_nodes(self, key: bytes) -> Callable[[Contact], Deferred[Answer]]:
        def ask(contact: Contact) -> Deferred[Answer]:
            d = self._call(contact, FindNode, key=key)
            d.addCallback(lambda answer: Answer(tuple(answer["contacts"])))
            return d

        return ask

    def _ask_record(self, peer_id: PeerID) -> Callable[[Contact], Deferred[Answer]]:
        key = id_bytes(node_id(peer_id))

        def ask(contact: Contact) -> Deferred[Answer]:
            d = self._call(contact, FindValue, key=key, kind=RECORD)
            d.addCallback(self._record_answer, peer_id, contact)
            return d

        return ask

    def _record_answer(self, answer: dict[str, Any], peer_id: PeerID, contact: Contact) -> Answer:
        found = None
        signed = answer["record"]
        if signed is not None:
            now = self.clock.seconds()
            try:
                record = _verify_record(
                    signed, now, self.settings.clock_skew, self.settings.max_record_lifetime
                )
            except RecordRejected as e:
                self.log.info(
                    "{peer} answered with a record we reject: {reason}",
                    peer=str(contact.peer_id),
                    reason=str(e),
                )
            else:
                if record.peer_id == peer_id:
                    found = StoredRecord(record, signed, now)
                else:
                    self.log.info(
                        "{peer} answered with the record of another peer",
                        peer=str(contact.peer_id),
                    )
        return Answer(tuple(answer["contacts"]), found)

    def _ask_values(self, key: bytes) -> Callable[[Contact], Deferred[Answer]]:
        def ask(contact: Contact) -> Deferred[Answer]:
            d = self._call(contact, FindValue, key=key, kind=MAILBOX)
            d.addCallback(self.values_answer, key)
            return d

        return ask

    def values_answer(self, answer: dict[str, Any], key: bytes) -> Answer:
        """
        A ``dht-find-value`` answer for small values under ``key``: its
        contacts, and the values in it whose proof of work checks.
        """
        now = self.clock.seconds()
        values = []
        for data in answer["values"]:
            try:
                value = check_value(data, now, self.settings.pow_difficulty)
            except ValueRejected:
                continue
            if value.key == key:
                values.append(value.value)
        return Answer(tuple(answer["contacts"]), tuple(values) or None)

    # -- whom the table holds, and where -------------------------------------------

    def talked(self, connection: RequestConnection, claimed: tuple[str, ...]) -> None:
        """
        A peer answered us or asked us something over ``connection``,
        claiming (or being said by others) to listen at ``claimed``.

        A contact in the table with those addresses is just seen again.  On
        a connection we dialled, the address we reached is proved: the
        contact enters the table with it.  Otherwise the claim is checked
        against where the connection came from (see
        :func:`~digitalspring.dht._origin.check_origin`), and what is left is
        dialled back, if the table would take the contact, before it enters.
        """
        peer_id = connection.peer_id
        table = self.table
        known = table.get(peer_id)
        if known is not None and (not claimed or claimed == known.addresses):
            table.observe(known)
            return
        there = _peer_address(connection)
        if there is None:
            return
        if connection.initiator:
            reached = dialled_address(there)
            if reached is not None:
                others = () if known is None else known.addresses
                addresses = (reached, *(a for a in others if a != reached and a in claimed))
                table.observe(Contact(peer_id, addresses[:MAX_ADDRESSES]), source_network(there))
                return
        if known is not None:
            table.observe(known)
            claimed = tuple(a for a in claimed if a not in known.addresses)
            if not claimed:
                return
        elif not claimed:
            return
        kept, dropped = check_origin(claimed, there)
        self.refused["origin_addresses"] += dropped
        if dropped:
            self.peer_log.info(
                "origin-dropped",
                "{peer} claims addresses that are not where it connected from ({source})",
                peer=str(peer_id),
                source=str(there),
            )
        kept = tuple(a for a in kept if self._can_dial(a))
        if not kept:
            return
        nets = source_network(there)
        if known is None and not table.wants(Contact(peer_id, kept), nets):
            return
        self.dialbacks.request(peer_id, kept, source_of(there), nets)

    def _can_dial(self, address: str) -> bool:
        try:
            name, _ = split_address(address)
        except InvalidAddress:
            return False
        return name in self.pool.transports

    def _dial_back(
        self, peer_id: PeerID, address: str, pattern: str | None = None
    ) -> Deferred[IAddress]:
        """
        Dial ``address`` expecting ``peer_id`` (see
        :meth:`~digitalspring.channel.ConnectionPool.dial`), within a
        request's timeout.
        """
        d = self.pool.dial(peer_id, address, pattern)
        d.addTimeout(self.settings.rpc_timeout, self.clock)
        return d

    def _dialled_back(
        self, peer_id: PeerID, proved: tuple[str, ...], nets: frozenset[str]
    ) -> None:
        if not proved or not self.running:
            return
        known = self.table.get(peer_id)
        others = () if known is None else known.addresses
        addresses = (*proved, *(a for a in others if a not in proved))
        self.table.observe(Contact(peer_id, addresses[:MAX_ADDRESSES]), nets)

    def check_closest(self, key: int | None, held: Any) -> None:
        """
        Refuse to keep something under ``key`` unless this node is among the
        closest to it: fewer than ``k + store_slack`` contacts of the table
        are closer.  A key already held passes (it was close when first
        stored, and a newer version costs nothing more).

        :param held: the store's keys of that kind.
        :raises NotAmongClosest: otherwise.
        """
        if key is None or key in held:
            return
        limit = self.settings.k + self.settings.store_slack
        if self.table.closer_than_self(key, limit) >= limit:
            self.refused["not_closest"] += 1
            raise NotAmongClosest(
                f"this node knows {limit} nodes closer to that key; store it there"
            )

    def responsible_for(self, key: int) -> bool:
        """
        Whether this node is among the ``k`` closest to ``key`` that its
        table knows: whether it should keep re-replicating what it holds
        under ``key``.
        """
        k = self.settings.k
        return self.table.closer_than_self(key, k) < k

    # -- lookups -------------------------------------------------------------------

    def lookup(
        self,
        target: int,
        query: Callable[[Contact], Deferred[Answer]],
        find_value: bool = False,
        seeds: Sequence[Contact] = (),
    ) -> Deferred[LookupResult]:
        """
        Run an iterative lookup for ``target`` from our closest contacts.

        :param query: what to ask each node.
        :param find_value: whether to stop at the first answer holding a
            value.
        :param seeds: contacts to ask besides those of the table (a peer
            joined through, which a full bucket may not have taken).
        :returns: a Deferred that fires with the :class:`LookupResult`.
        """
        settings = self.settings
        self.table.touch(target)
        # Twice k seeds: when the closest contacts we know are dead, the
        # lookup goes on with the next ones instead of ending empty-handed.
        return Lookup(
            target,
            [*self.table.closest(target, 2 * settings.k), *seeds],
            query,
            self.clock,
            self.own_id,
            k=settings.k,
            alpha=settings.alpha,
            deadline=settings.lookup_deadline,
            find_value=find_value,
        ).start()

    def find_nodes(self, key: bytes) -> Deferred[LookupResult]:
        return self.lookup(id_from_bytes(key), self._ask_nodes(key))

    def find_peer(self, peer_id: PeerID) -> Deferred[LookupResult]:
        return self.lookup(node_id(peer_id), self._ask_record(peer_id), find_value=True)

    def get(self, key: bytes) -> Deferred[list[bytes]]:
        d = self.lookup(id_from_bytes(key), self._ask_values(key), find_value=True)
        return d.addCallback(lambda result: list(result.found or ()))

    def get_anonymously(self, key: bytes) -> Deferred[list[bytes]]:
        return Deferred.fromCoroutine(get_anonymously(self, key))

    def held_values(self, key: bytes) -> list[bytes]:
        """
        The small values this node holds under ``key`` (what a lookup asking
        it would find).
        """
        return [decode_value(data).value for data in self.store.get_values(id_from_bytes(key))]

    # -- storing -------------------------------------------------------------------

    async def _replicate(self, key: int, kind: str, data: bytes) -> int:
        result = await self.lookup(key, self._ask_nodes(id_bytes(key)))
        stores = [self._call(contact, Store, kind=kind, data=data) for contact in result.closest]
        outcomes = await DeferredList(stores, consumeErrors=True)
        return sum(1 for ok, answer in outcomes if ok and answer["stored"])

    def publish(self) -> Deferred[int]:
        return Deferred.fromCoroutine(self._publish())

    async def _publish(self) -> int:
        if self._publishing:
            self._publish_wanted = True
            return 0
        addresses = self.addresses()
        if not addresses:
            return 0
        self._publishing = True
        if self._publish_call is not None and self._publish_call.active():
            # This publication covers the one scheduled.
            self._publish_call.cancel()
            self._publish_call = None
        try:
            now = self.clock.seconds()
            # Milliseconds outbid the records of earlier runs; the saved
            # sequence and our record handed back by others do when the
            # clock went back.
            held = self.store.record_of(self.peer_id)
            self._sequence = max(
                self._sequence + 1,
                int(now * 1000),
                0 if held is None else held.record.sequence + 1,
            )
            record = PeerRecord(
                self.peer_id,
                self._sequence,
                int(now),
                int(now + self.settings.record_lifetime),
                addresses,
            )
            signed = sign_record(record, self.identity)
            self.store.put_record(signed)
            # Before anyone sees it: a crash must not lose the sequence.
            self.save_records()
            self.own_record = StoredRecord(record, signed, now)
            self._origin = self._published_addresses = tuple(addresses)
            self.published_at = now
            count = await self._replicate(self.own_id, RECORD, signed)
            self.published_to = count
            self.log.info(
                "published peer record {sequence} with {addresses} at {count} nodes",
                sequence=record.sequence,
                addresses=addresses,
                count=count,
            )
            return count
        finally:
            self._publishing = False
            if self._publish_wanted:
                self._publish_wanted = False
                self._publish_soon(0)

    def _publish_soon(self, delay: float) -> None:
        if not self.running:
            return
        if self._publish_call is not None and self._publish_call.active():
            return
        self._publish_call = self.clock.callLater(delay, self._publish_now)

    def _publish_now(self) -> None:
        self._publish_call = None
        if self._joining:
            self._publish_wanted = True
            return
        self.publish().addErrback(self._log_failure, "publishing the peer record")

    def put(self, key: bytes, value: bytes, ttl: float) -> Deferred[int]:
        return Deferred.fromCoroutine(self._put(key, value, ttl))

    async def _put(self, key: bytes, value: bytes, ttl: float) -> int:
        if len(value) > MAX_VALUE_SIZE:
            raise ValueTooLarge(
                f"a DHT value has at most {MAX_VALUE_SIZE} bytes, not {len(value)}"
            )
        if not 0 < ttl <= MAX_VALUE_TTL:
            raise ValueTTLTooLong(f"a DHT value is kept for at most {MAX_VALUE_TTL} s")
        expires = int(self.clock.seconds() + ttl)
        mailbox = solve(key, value, expires, self.settings.pow_difficulty)
        return await self._replicate(id_from_bytes(key), MAILBOX, mailbox.encode())

    # -- joining and upkeep --------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.load_state()
        self._origin = tuple(self.addresses())
        self._loop = LoopingCall(self._maintain)
        self._loop.clock = self.clock
        self._loop.start(self.settings.maintenance_interval, now=False).addErrback(
            self._log_failure, "DHT upkeep"
        )
        if self.state_dir is not None:
            self._save_loop = LoopingCall(self.save_state)
            self._save_loop.clock = self.clock
            self._save_loop.start(self.settings.save_interval, now=False).addErrback(
                self._log_failure, "saving the DHT's state"
            )
        self._join_network().chainDeferred(self.joined)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._save_loop is not None and self._save_loop.running:
            self._save_loop.stop()
        self.save_state()
        if self._publish_call is not None and self._publish_call.active():
            self._publish_call.cancel()
        self.handoff.stop()
        self.dialbacks.stop()
        return succeed(None)

    def _join_network(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._join())
        d.addErrback(self._log_failure, "joining the DHT")
        return d

    def join_candidates(self) -> list[Contact]:
        """
        Whom to greet when joining: the bootstrap peers, then the contacts
        saved by the last run (most recently seen first).
        """
        seen = {self.peer_id}
        candidates = []
        for contact in [*self.bootstrap_contacts, *(s.contact for s in self.saved_contacts)]:
            if contact.peer_id not in seen:
                seen.add(contact.peer_id)
                candidates.append(contact)
        return candidates

    async def _join(self) -> None:
        candidates = self.join_candidates()
        if not candidates:
            self.log.info("no DHT bootstrap peers: waiting for others to join through this node")
            return
        self._joining += 1
        try:
            bootstrap = {contact.peer_id for contact in self.bootstrap_contacts}
            pings = [
                self._greet(contact) if contact.peer_id in bootstrap else self._ping(contact)
                for contact in candidates
            ]
            answers = await DeferredList(pings, consumeErrors=True)
            answered = sum(1 for ok, _ in answers if ok)
            if not answered:
                self.log.warn(
                    "none of {count} DHT bootstrap peers and saved contacts answered; "
                    "trying again in {delay} s",
                    count=len(candidates),
                    delay=self.settings.bootstrap_retry,
                )
                self.clock.callLater(self.settings.bootstrap_retry, self._retry_join)
                return
            await self._join_lookups()
            self.log.info(
                "joined the DHT through {answered} of {count} bootstrap peers and saved "
                "contacts: {size} contacts",
                answered=answered,
                count=len(candidates),
                size=len(self.table),
            )
        finally:
            self._joined_once()

    def _greet(self, contact: Contact) -> Deferred[Any]:
        """
        Ping a bootstrap peer, dialling it first ourselves rather than
        through the pool, whose backoff grows to minutes while a peer is
        down: joining retries on its own schedule (``bootstrap_retry``), and
        a bootstrap peer that was down must be reached at the first retry
        after it is back.  (Saved contacts, up to 256 of them, keep the
        pool's backoff.)
        """

        async def greet() -> Any:
            if contact.peer_id not in self.pool.connections():
                errors = []
                for address in contact.addresses:
                    try:
                        await self._dial_back(contact.peer_id, address)
                        break
                    except Exception as e:
                        errors.append(f"{address}: {str(e) or e.__class__.__name__}")
                else:
                    raise DialBackFailed(f"cannot reach {contact.peer_id}: " + "; ".join(errors))
            return await self._ping(contact)

        return Deferred.fromCoroutine(greet())

    def _joined_once(self) -> None:
        # The contacts just met are what a restart rejoins through: save
        # them now, not only at the next upkeep or a clean stop, so a node
        # killed soon after joining still knows the network.
        self.save_state()
        self._joining -= 1
        if not self._joining and self._publish_wanted:
            self._publish_wanted = False
            self._publish_soon(0)

    async def _join_lookups(self, seeds: Sequence[Contact] = ()) -> None:
        """
        What a joining node looks up (Kademlia's join): its own ID, which
        fills the buckets near it and makes it known to the nodes closest to
        it, then a random ID in each bucket farther than its closest
        contact, which fills the rest of the table.  In a network of ``N``
        nodes that is about ``log2(N)`` lookups, run at once.

        :param seeds: contacts to start from besides the table's.
        """
        await self.lookup(self.own_id, self._ask_nodes(id_bytes(self.own_id)), seeds=seeds)
        nearest = self.table.closest(self.own_id, 1)
        if not nearest:
            return
        first = bucket_index(self.own_id, nearest[0].node_id) + 1
        targets = [
            random_id_in_bucket(self.own_id, index, self.random) for index in range(first, 256)
        ]
        await DeferredList([self.lookup(t, self._ask_nodes(id_bytes(t))) for t in targets])

    def join(self, peer_id: PeerID, address: str) -> Deferred[Joined]:
        return Deferred.fromCoroutine(self._join_through(peer_id, address))

    async def _join_through(self, peer_id: PeerID, address: str) -> Joined:
        """
        See :meth:`IDistributedHashTable.join`.  The address reached is proved
        by the handshake, as for any address this node dials; the peer enters
        the routing table once it answers a DHT ping, as a DHT node.
        """
        if peer_id == self.peer_id:
            raise JoinFailed("a node does not join the DHT through itself")
        if not self._can_dial(address):
            raise JoinFailed(f"this node has no transport that dials {address}")
        there = await dial_expecting(self._dial_back, peer_id, address)
        reached = dialled_address(there) or address
        contact = Contact(peer_id, (reached,))
        try:
            await self._call(contact, DHTPing)
        except Exception as e:
            raise NotADHTNode(
                f"the peer at {address} does not answer DHT requests "
                f"({str(e) or e.__class__.__name__})"
            ) from None
        if all(known.peer_id != peer_id for known in self.bootstrap_contacts):
            # Tried again, like a bootstrap peer, whenever the table empties.
            self.bootstrap_contacts.append(Contact(peer_id, (address,)))
        self._joining += 1
        try:
            await self._join_lookups(seeds=[contact])
        finally:
            self._publish_wanted = False
            self._joined_once()
        self.log.info(
            "joined the DHT through {peer} at {address}: {size} contacts",
            peer=str(peer_id),
            address=reached,
            size=len(self.table),
        )
        await self.publish()
        return Joined(peer_id, reached, len(self.table), self.published_to)

    def _retry_join(self) -> None:
        if self.running and not len(self.table) and not self._joining:
            self._join_network()

    def _contact_added(self, contact: Contact) -> None:
        """
        A contact entered the routing table: hand it what it should hold
        (see :class:`~digitalspring.dht._handoff.Handoff`), and publish our
        record if nobody has it yet.
        """
        if not self.running:
            return
        if self.own_record is not None and self.published_to == 0:
            self._publish_soon(1.0)
        self.handoff.welcome(contact)

    def _hand_over(self, contact: Contact, held: StoredRecord) -> None:
        self._call(contact, Store, kind=RECORD, data=held.signed).addErrback(lambda failure: None)

    def _maintain(self) -> None:
        if not self.running:
            return
        now = self.clock.seconds()
        self.store.expire()
        addresses = tuple(self.addresses())
        self._origin = addresses
        if addresses and (
            addresses != self._published_addresses
            or now >= self.published_at + self.settings.republish_interval
        ):
            self._publish_soon(0)
        for index in self.table.stale_buckets(self.settings.refresh_interval):
            target = random_id_in_bucket(self.own_id, index, self.random)
            self.lookup(target, self._ask_nodes(id_bytes(target)))
        self._rereplicate(now)
        if self.join_candidates() and not len(self.table) and not self._joining:
            self._join_network()

    def stored_again(self, key: int) -> None:
        """
        A peer stored here again the record held under ``key``: its wait
        for re-replication starts over.
        """
        if key in self.store.records:
            self._replicated[key] = self.clock.seconds()

    def _record_kept(self, key: int) -> None:
        if key not in self._due_at:
            self._due_on(key, self._due_after(key, self.clock.seconds()))
            if len(self._due) > 2 * len(self.store.records) + 64:
                self._forget_dropped()

    def _forget_dropped(self) -> None:
        """
        Forget the due times of records no longer held (each would be
        dropped when it came up): records that expired or gave way leave
        at most as many entries as the store holds records.
        """
        records = self.store.records
        # In place: a run of _rereplicate may hold these very objects.
        self._due[:] = [(at, key) for at, key in self._due if key in records]
        heapq.heapify(self._due)
        for table in (self._due_at, self._replicated):
            for key in [key for key in table if key not in records]:
                del table[key]

    def _due_after(self, key: int, last: float) -> float:
        """
        When the record under ``key``, last stored here at ``last``, is due.
        """
        return last + self.settings.replicate_interval * replicate_factor(key, self.own_id)

    def _due_on(self, key: int, at: float) -> None:
        self._due_at[key] = at
        heapq.heappush(self._due, (at, key))

    def _rereplicate(self, now: float) -> None:
        """
        Store again, at the ``k`` closest nodes, the records held for others
        that nobody stored here for ``replicate_interval`` (times this
        node's factor for the key, see :func:`replicate_factor`): the
        longest waiting first, at most ``replicate_per_run`` of them, and
        only those this node is responsible for (the others wait another
        interval without costing a lookup; at most sixteen times as many
        are looked at per run).  Only records that may be due are looked
        at, in the order of their due times.
        """
        heap, due_at = self._due, self._due_at
        records, replicated = self.store.records, self._replicated
        due = []
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            if due_at.get(key) != at:
                continue
            held = records.get(key)
            if held is None or held.record.peer_id == self.peer_id:
                del due_at[key]
                replicated.pop(key, None)
                continue
            last = max(held.received, replicated.get(key, -math.inf))
            at = self._due_after(key, last)
            if at > now:
                self._due_on(key, at)
            else:
                due.append((at, last, key, held))
        budget = self.settings.replicate_per_run
        # Junk that was close once waits its turn too, a bounded number of
        # responsibility checks per run.
        looks = 16 * budget
        due.sort(key=lambda item: item[1])
        for at, _, key, held in due:
            if not budget or not looks:
                # Still due: the next run looks again.
                self._due_on(key, at)
                continue
            looks -= 1
            replicated[key] = now
            self._due_on(key, self._due_after(key, now))
            if not self.responsible_for(key):
                continue
            budget -= 1
            Deferred.fromCoroutine(self._replicate(key, RECORD, held.signed)).addErrback(
                self._log_failure, "re-replicating a record"
            )

    # -- across restarts -----------------------------------------------------------

    def _read_state_file(self, name: str) -> bytes | None:
        assert self.state_dir is not None
        path = self.state_dir.child(name)
        try:
            with open(path.path, "rb") as f:
                data = f.read(MAX_STATE_FILE_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            self.log.warn("ignoring {path}: {reason}", path=path.path, reason=e.strerror)
            return None
        if len(data) > MAX_STATE_FILE_SIZE:
            self.log.warn(
                "ignoring {path}: larger than {size} bytes",
                path=path.path,
                size=MAX_STATE_FILE_SIZE,
            )
            return None
        return data

    def _write_state_file(self, name: str, data: bytes) -> None:
        assert self.state_dir is not None
        path = self.state_dir.child(name)
        try:
            self.state_dir.makedirs(ignoreExistingDirectory=True)
            atomic_write(path, data, replace=True)
        except OSError as e:
            self.log.warn("cannot save {path}: {reason}", path=path.path, reason=str(e))

    def load_state(self) -> None:
        """
        Read what the last run saved, if the DHT has a data directory: its
        contacts become join candidates, the records and values it held are
        verified again and kept (an invalid or expired one is dropped, with
        the reason logged), and its sequence number is never reused.  A
        damaged file, or another node's, is ignored with a warning.
        """
        if self.state_dir is None:
            return
        data = self._read_state_file(CONTACTS_FILE_NAME)
        if data is not None:
            try:
                saved = decode_contacts_file(data, self.peer_id)
            except DamagedStateFile as e:
                self._ignoring(CONTACTS_FILE_NAME, e)
            else:
                self.saved_contacts = [s for s in saved if s.contact.peer_id != self.peer_id]
                self.log.info("{count} saved DHT contacts to try", count=len(self.saved_contacts))
        data = self._read_state_file(RECORDS_FILE_NAME)
        if data is None:
            return
        try:
            held = decode_records_file(data, self.peer_id)
        except DamagedStateFile as e:
            self._ignoring(RECORDS_FILE_NAME, e)
            return
        self._sequence = max(self._sequence, held.sequence)
        kept = dropped = 0
        held_kinds: tuple[tuple[Any, Any, type[Exception], str], ...] = (
            (held.records, self.store.put_record, RecordRejected, "peer record"),
            (held.values, self.store.put_value, ValueRejected, "DHT value"),
        )
        for items, put, rejected, what in held_kinds:
            for item in items:
                try:
                    put(item)
                except rejected as e:
                    dropped += 1
                    self.log.info(
                        "dropping a saved {what}: {reason}",
                        what=what,
                        reason=str(e),
                        rejection=e.__class__.__name__,
                    )
                else:
                    kept += 1
        self.log.info(
            "loaded {kept} saved DHT records and values ({dropped} dropped)",
            kept=kept,
            dropped=dropped,
        )

    def _ignoring(self, name: str, reason: DamagedStateFile) -> None:
        assert self.state_dir is not None
        self.log.warn(
            "ignoring {path}: {reason}",
            path=self.state_dir.child(name).path,
            reason=str(reason),
        )

    def save_state(self) -> None:
        """
        Save the routing table's contacts and what the node holds, if the
        DHT has a data directory.  Saved contacts that have not answered
        this run are kept too, ranked by when they were last seen, so a run
        that never reached the network does not forget it.
        """
        if self.state_dir is None:
            return
        seen = {s.contact.peer_id: s for s in self.saved_contacts}
        for contact, last_seen in self.table.contacts_seen():
            seen[contact.peer_id] = SavedContact(contact, last_seen)
        now = self.clock.seconds()
        self._write_state_file(
            CONTACTS_FILE_NAME, encode_contacts_file(self.peer_id, seen.values(), now)
        )
        self.save_records()

    def save_records(self) -> None:
        """
        Save the records and values the node holds (the records closest to
        its ID first) and the sequence number of its own record.
        """
        if self.state_dir is None:
            return
        now = self.clock.seconds()
        live = [
            (key, held.signed)
            for key, held in self.store.records.items()
            if held.record.expires > now
        ]
        live.sort(key=lambda item: item[0] ^ self.own_id)
        values = [
            data
            for key in sorted(self.store.values, key=lambda key: key ^ self.own_id)
            for data in self.store.get_values(key)
        ]
        saved = SavedRecords(
            self._sequence,
            tuple(signed for _, signed in live[:MAX_SAVED_RECORDS]),
            tuple(values[:MAX_SAVED_VALUES]),
        )
        self._write_state_file(RECORDS_FILE_NAME, encode_records_file(self.peer_id, saved, now))

    def _log_failure(self, failure: Failure, what: str) -> None:
        self.log.failure("{what} failed", failure, what=what)

    # -- reporting -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        own = self.own_record
        return {
            "node_id": id_bytes(self.own_id).hex(),
            "routing_table": len(self.table),
            "buckets": sum(1 for bucket in self.table.buckets.values() if bucket.entries),
            "known_peers": [str(contact.peer_id) for contact in self.table.contacts()],
            "records": len(self.store.records),
            "values": sum(len(held) for held in self.store.values.values()),
            "store_bytes": self.store.record_bytes + self.store.value_bytes,
            "refused": {**self.refused, **self.store.refused},
            "dial_backs": {**self.dialbacks.counts, "waiting": len(self.dialbacks)},
            "own_record": None
            if own is None
            else {
                "sequence": own.record.sequence,
                "expires": own.record.expires,
                "stored_at": self.published_to,
            },
        }
