"""
Tests for the DHT service: real nodes with pools and Noise channels on the
memory network and a simulated clock.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from digitalspring.channel import PeerConnection
from digitalspring.dht import (
    MAILBOX,
    RECORD,
    RECORD_DOMAIN,
    Contact,
    DHTDirectory,
    DHTSettings,
    DirectoryChain,
    IDistributedHashTable,
    PeerRecord,
    RecordRejected,
    Store,
    ValueRejected,
    ValueTooLarge,
    decode_contacts,
    encode_contacts,
    encode_record,
    node_id,
    sign_record,
)
from digitalspring.dht._dht import replicate_factor
from digitalspring.dht._rpc import Origin
from digitalspring.dht._simulation import DHTSimulation
from digitalspring.directory import IPeerDirectory, UnknownPeer
from digitalspring.identity import Identity, PeerID

SETTINGS = DHTSettings(k=4, rpc_timeout=2.0, lookup_deadline=20.0, pow_difficulty=4)
#: For re-replication: ten-minute waits, upkeep every 10 s, owners that do
#: not republish.
REPLICATING = DHTSettings(
    k=8,
    rpc_timeout=1.0,
    replicate_interval=600,
    maintenance_interval=10,
    record_lifetime=20_000,
    republish_interval=20_000,
)


def network(count: int, settings: DHTSettings = SETTINGS, join: bool = True) -> DHTSimulation:
    sim = DHTSimulation(count, settings, seed=count, latency=0.01)
    if join:
        sim.join_all()
    return sim


def rejections(test: SynchronousTestCase) -> list[LogEvent]:
    """
    The log events of refused records and values, from now until the end
    of the test.
    """
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if "rejection" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


class InterfaceTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """
        The DHT provides IDistributedHashTable; its directory and the chain
        of directories provide IPeerDirectory.
        """
        sim = network(1, join=False)
        dht = sim.nodes[0].dht
        verifyObject(IDistributedHashTable, dht)
        verifyObject(IPeerDirectory, DHTDirectory(dht))
        verifyObject(IPeerDirectory, DirectoryChain([DHTDirectory(dht)]))


class ServiceTests(SynchronousTestCase):
    def test_join_and_resolve(self) -> None:
        """
        Eight nodes join one by one through the first; each publishes its
        record; then any node dials any other by peer ID alone, resolving it
        through the DHT.
        """
        sim = network(8)
        for node in sim.nodes:
            self.assertGreaterEqual(len(node.dht.table), 4)
            self.assertGreater(sim.run(node.dht.publish()), 0)
        first, last = sim.nodes[1], sim.nodes[7]
        sim.clock.advance(30)  # idle connections close
        self.assertNotIn(last.identity.peer_id, first.pool.connections())
        connection = sim.run(first.pool.connect(last.identity.peer_id))
        self.assertIsInstance(connection, PeerConnection)
        self.assertEqual(connection.peer_id, last.identity.peer_id)

    def test_find_peer_reports_hops(self) -> None:
        """
        find_peer gives the verified record, and the path of the lookup.
        """
        sim = network(12)
        target = sim.nodes[5]
        sim.run(target.dht.publish())
        result = sim.run(sim.nodes[9].dht.find_peer(target.identity.peer_id))
        self.assertEqual(result.found.record.peer_id, target.identity.peer_id)
        self.assertEqual(result.found.record.addresses, (f"memory:{target.host}:1",))
        self.assertGreaterEqual(result.hops, 1)
        self.assertEqual(len(result.path), result.rpcs)

    def test_unknown_peer(self) -> None:
        """
        Resolving a peer nobody published fails with UnknownPeer, saying no
        address is known.
        """
        sim = network(6)
        stranger = Identity.from_seed(b"s" * 32).peer_id
        d = DHTDirectory(sim.nodes[2].dht).resolve(stranger)
        failure = self.failureResultOf_(sim, d)
        self.assertIsInstance(failure, UnknownPeer)
        self.assertIn("no address is known", str(failure))

    def failureResultOf_(self, sim: DHTSimulation, d: Deferred[Any]) -> BaseException:
        try:
            sim.run(d)
        except Exception as e:
            return e
        self.fail("no failure")

    def test_directory_caches_until_expiry(self) -> None:
        """
        A resolved record is cached: resolving again asks nobody, until the
        record expires.
        """
        settings = DHTSettings(k=4, record_lifetime=600, maintenance_interval=1e9)
        sim = network(8, settings)
        target = sim.nodes[3]
        sim.run(target.dht.publish())
        directory = DHTDirectory(sim.nodes[6].dht)
        # Make sure the looking node has neither a replica nor a contact.
        sim.nodes[6].dht.store.records.clear()
        sim.nodes[6].dht.table._evict(target.identity.peer_id)
        sent: list[Contact] = []
        original = sim.nodes[6].dht._call

        def counting(contact: Contact, command: Any, **kw: Any) -> Deferred[Any]:
            sent.append(contact)
            return original(contact, command, **kw)

        sim.nodes[6].dht._call = counting  # type: ignore[method-assign]
        self.assertEqual(
            sim.run(directory.resolve(target.identity.peer_id)), [f"memory:{target.host}:1"]
        )
        asked = len(sent)
        self.assertGreater(asked, 0)
        sim.run(directory.resolve(target.identity.peer_id))
        self.assertEqual(len(sent), asked)
        sim.clock.advance(601)
        sim.nodes[6].dht.table._evict(target.identity.peer_id)
        self.failureResultOf_(sim, directory.resolve(target.identity.peer_id))
        self.assertGreater(len(sent), asked)

    def test_directory_chain(self) -> None:
        """
        The chain answers from the first directory that knows the peer, and
        says the peer is unknown when none does.
        """
        sim = network(6)
        target = sim.nodes[4]
        sim.run(target.dht.publish())

        class Book:
            def resolve(self, peer_id: PeerID) -> Deferred[list[str]]:
                if peer_id == target.identity.peer_id:
                    return Deferred.fromCoroutine(_value(["memory:book:1"]))
                return Deferred.fromCoroutine(_unknown(peer_id))

        chain = DirectoryChain([Book(), DHTDirectory(sim.nodes[1].dht)])
        self.assertEqual(sim.run(chain.resolve(target.identity.peer_id)), ["memory:book:1"])
        other = sim.nodes[2]
        sim.run(other.dht.publish())
        self.assertEqual(
            sim.run(chain.resolve(other.identity.peer_id)), [f"memory:{other.host}:1"]
        )
        stranger = Identity.from_seed(b"z" * 32).peer_id
        self.assertIsInstance(self.failureResultOf_(sim, chain.resolve(stranger)), UnknownPeer)

    def test_lone_node(self) -> None:
        """
        A node without bootstrap peers runs alone without errors (its
        publish reaches nobody); a node that bootstraps from it later finds
        it, and the lone node's record then reaches the newcomer.
        """
        sim = network(2, join=False)
        lone, late = sim.nodes
        sim.start([0])
        sim.run(lone.dht.joined)
        self.assertEqual(sim.run(lone.dht.publish()), 0)
        late.dht.bootstrap_contacts = [lone.contact]
        sim.start([1])
        sim.run(late.dht.joined)
        sim.clock.advance(1)  # the lone node dials the newcomer back
        self.assertIn(late.identity.peer_id, lone.dht.table)
        self.assertIn(lone.identity.peer_id, late.dht.table)
        sim.clock.advance(5)
        self.assertEqual(lone.dht.published_to, 1)
        self.assertIsNotNone(late.dht.store.record_of(lone.identity.peer_id))

    def test_bootstrap_retry(self) -> None:
        """
        A node whose bootstrap peer is down keeps trying, and joins once the
        peer is back.
        """
        sim = network(2, join=False)
        seed, joiner = sim.nodes
        sim.network.take_offline(seed.host)
        sim.start([0])
        joiner.dht.bootstrap_contacts = [seed.contact]
        sim.start([1])
        sim.run(joiner.dht.joined)
        self.assertEqual(len(joiner.dht.table), 0)
        sim.network.bring_online(seed.host)
        sim.clock.advance(SETTINGS.bootstrap_retry + 10)
        self.assertIn(seed.identity.peer_id, joiner.dht.table)

    def test_republish_when_addresses_change(self) -> None:
        """
        When a node listens somewhere new, its upkeep publishes a record
        with a higher sequence number and the new address.
        """
        sim = network(6)
        node = sim.nodes[2]
        sim.run(node.dht.publish())
        first = node.dht.own_record
        assert first is not None
        node.transport.listen("2", node.pool.server_factory)
        sim.clock.advance(SETTINGS.maintenance_interval + 5)
        second = node.dht.own_record
        assert second is not None
        self.assertGreater(second.record.sequence, first.record.sequence)
        self.assertIn(f"memory:{node.host}:2", second.record.addresses)
        result = sim.run(sim.nodes[5].dht.find_peer(node.identity.peer_id))
        self.assertEqual(result.found.record.sequence, second.record.sequence)

    def test_republish_before_expiry(self) -> None:
        """
        A node signs and stores a new record every republish interval, so
        its record never expires while it runs.
        """
        settings = DHTSettings(
            k=4, record_lifetime=900, republish_interval=300, maintenance_interval=60
        )
        sim = network(5, settings)
        node = sim.nodes[1]
        sim.clock.advance(61)
        first = node.dht.own_record
        assert first is not None
        sim.clock.advance(2000)
        last = node.dht.own_record
        assert last is not None
        self.assertGreater(last.record.sequence, first.record.sequence)
        self.assertGreater(last.record.expires, sim.clock.seconds())
        held = sim.nodes[3].dht.store.record_of(node.identity.peer_id)
        assert held is not None
        self.assertEqual(held.record.sequence, last.record.sequence)

    def test_rereplication(self) -> None:
        """
        When the owner and half the holders of a record go away, the
        surviving holders store it again at the k closest live nodes.
        """
        settings = DHTSettings(
            k=4,
            rpc_timeout=1.0,
            replicate_interval=600,
            maintenance_interval=60,
            record_lifetime=20_000,
            republish_interval=20_000,
        )
        sim = network(16, settings)
        owner = sim.nodes[0]
        sim.run(owner.dht.publish())
        key = node_id(owner.identity.peer_id)

        def holders() -> list[int]:
            return [
                i
                for i, node in enumerate(sim.nodes)
                if i not in sim.dead and i != 0 and key in node.dht.store.records
            ]

        before = holders()
        self.assertGreaterEqual(len(before), 4)
        gone = {0, *before[: len(before) // 2]}
        for i in gone:
            sim.network.take_offline(sim.nodes[i].host)
        sim.dead |= gone
        self.assertLess(len(holders()), 4)
        sim.clock.advance(2000)
        self.assertGreaterEqual(len(holders()), 4)

    def test_rereplication_on_time_after_idle_runs(self) -> None:
        """
        Upkeep looks only at records that may be due, yet a record that
        arrives after a run that found nothing due is stored again as soon
        as its own wait ends: the first holder whose wait ends does so
        within one upkeep interval of it.
        """
        sim = network(24, REPLICATING)
        # Holding nothing, each node's upkeep finds nothing due; the
        # record comes soon after those runs.
        sim.clock.advance(120)
        for node in sim.nodes:
            for held in list(node.dht.store.records):
                node.dht.store._drop_record(held)
        sim.clock.advance(30)
        owner = sim.nodes[0]
        sim.run(owner.dht.publish())
        key = node_id(owner.identity.peer_id)
        sim.network.take_offline(owner.host)
        sim.dead.add(0)
        due = []
        for node in sim.nodes[1:]:
            held = node.dht.store.records.get(key)
            if held is not None:
                due.append(held.received + 600 * replicate_factor(key, node.dht.own_id))
        self.assertGreaterEqual(len(due), 6)
        first: list[float] = []
        for node in sim.nodes:
            replicate = node.dht._replicate

            def timed(k: int, kind: str, data: bytes, replicate: Any = replicate) -> Any:
                if k == key and not first:
                    first.append(sim.clock.seconds())
                return replicate(k, kind, data)

            node.dht._replicate = timed  # type: ignore[method-assign]
        sim.clock.advance(max(due) - sim.clock.seconds() + 20)
        self.assertEqual(len(first), 1)
        self.assertGreaterEqual(first[0], min(due))
        self.assertLessEqual(first[0], min(due) + 10)

    def test_rereplication_by_one_holder(self) -> None:
        """
        The holders of a record whose owner is gone got it at the same
        moment, but do not all store it again: the first one due stores it
        at the others, whose wait starts over (Kademlia's rule), so the
        record is re-replicated by about one holder per interval, not by
        each of the ``k`` (``k`` lookups and ``k`` squared stores).
        """
        sim = network(24, REPLICATING)
        owner = sim.nodes[0]
        sim.run(owner.dht.publish())
        key = node_id(owner.identity.peer_id)
        holders = [node for node in sim.nodes[1:] if key in node.dht.store.records]
        self.assertGreaterEqual(len(holders), 6)
        sim.network.take_offline(owner.host)
        sim.dead.add(0)
        replicating: list[int] = []
        for i, node in enumerate(sim.nodes):
            replicate = node.dht._replicate

            def counted(
                k: int, kind: str, data: bytes, i: int = i, replicate: Any = replicate
            ) -> Any:
                if k == key:
                    replicating.append(i)
                return replicate(k, kind, data)

            node.dht._replicate = counted  # type: ignore[method-assign]
        # Two intervals and their spread (1.05 to 1.3 intervals each).
        sim.clock.advance(2 * 1.3 * 600)
        self.assertGreaterEqual(len(replicating), 1)
        self.assertLessEqual(len(replicating), 4, replicating)
        self.assertGreaterEqual(len([n for n in holders if key in n.dht.store.records]), 6)

    def test_handoff_to_closer_newcomer(self) -> None:
        """
        A node that joins and is among the closest to a stored key receives
        the record from the closest holder.
        """
        sim = network(10, join=False)
        owner = sim.nodes[0]
        key = node_id(owner.identity.peer_id)
        # The four nodes farthest from the key form the network first.
        order = sorted(range(1, 10), key=lambda i: sim.nodes[i].dht.own_id ^ key)
        early = [0, *order[4:]]
        for i in early[1:]:
            sim.nodes[i].dht.bootstrap_contacts = [owner.contact]
        sim.start([0])
        for i in early[1:]:
            sim.start([i])
            sim.run(sim.nodes[i].dht.joined)
        sim.run(owner.dht.publish())
        newcomer = sim.nodes[order[0]]
        newcomer.dht.bootstrap_contacts = [sim.nodes[order[4]].contact]
        sim.start([order[0]])
        sim.run(newcomer.dht.joined)
        sim.clock.advance(5)
        self.assertIsNotNone(newcomer.dht.store.record_of(owner.identity.peer_id))


async def _value(addresses: list[str]) -> list[str]:
    return addresses


async def _unknown(peer_id: PeerID) -> list[str]:
    raise UnknownPeer(f"no address is known for {peer_id}")


class BadRecordOverTheWireTests(SynchronousTestCase):
    """
    Each bad record sent with STORE is refused with a DHT_RECORD_REJECTED
    error and a logged reason, and the receiver keeps nothing.
    """

    def setUp(self) -> None:
        self.sim = network(2)
        self.sim.clock.advance(1000)
        self.sender, self.receiver = self.sim.nodes
        self.now = int(self.sim.clock.seconds())
        self.events = rejections(self)
        self.alice = Identity.from_seed(b"a" * 32)

    def record(self, **changes: Any) -> PeerRecord:
        fields: dict[str, Any] = {
            "peer_id": self.alice.peer_id,
            "sequence": 1,
            "issued": self.now,
            "expires": self.now + 600,
            "addresses": ("memory:x:1",),
        }
        fields.update(changes)
        return PeerRecord(**fields)

    def assert_refused(self, data: bytes, rejection: str) -> None:
        d = self.sender.dht._call(self.receiver.contact, Store, kind=RECORD, data=data)
        failure: list[Any] = []
        d.addErrback(failure.append)
        self.sim.clock.run_until(lambda: bool(failure), limit=10)
        self.assertTrue(failure)
        self.assertTrue(failure[0].check(RecordRejected))
        self.assertEqual([e["rejection"] for e in self.events], [rejection])
        self.assertTrue(self.events[0]["reason"])
        self.assertEqual(self.events[0]["peer"], str(self.sender.identity.peer_id))
        self.assertIsNone(self.receiver.dht.store.record_of(self.alice.peer_id))
        # A refusal is an answer: the sender still counts as a live contact.
        self.assertIn(self.receiver.identity.peer_id, self.sender.dht.table)

    def test_expired(self) -> None:
        """
        An expired record is refused over the wire.
        """
        signed = sign_record(
            self.record(issued=self.now - 700, expires=self.now - 100), self.alice
        )
        self.assert_refused(signed, "RecordExpired")

    def test_from_future(self) -> None:
        """
        A record dated beyond the clock skew in the future is refused.
        """
        signed = sign_record(
            self.record(issued=self.now + 3600, expires=self.now + 7200), self.alice
        )
        self.assert_refused(signed, "RecordFromFuture")

    def test_other_key(self) -> None:
        """
        A record signed by a key other than its peer's is refused.
        """
        body = encode_record(self.record())
        mallory = Identity.from_seed(b"m" * 32)
        self.assert_refused(body + mallory.sign(RECORD_DOMAIN + body), "BadRecordSignature")

    def test_other_domain(self) -> None:
        """
        A record signed by its peer for another domain is refused.
        """
        body = encode_record(self.record())
        signed = body + self.alice.sign(b"digitalspring something else\0" + body)
        self.assert_refused(signed, "BadRecordSignature")

    def test_non_canonical(self) -> None:
        """
        A signed, non-canonical re-encoding of a record is refused.
        """
        body = encode_record(self.record(sequence=5))
        padded = body[:33] + b"\x85\x80\x00" + body[34:]
        self.assert_refused(padded + self.alice.sign(RECORD_DOMAIN + padded), "NonCanonicalRecord")

    def test_oversized(self) -> None:
        """
        A record over the size limit is refused.
        """
        many = tuple(f"tcp:h{i}.{'x' * 240}.example:7655" for i in range(16))
        self.assert_refused(sign_record(self.record(addresses=many), self.alice), "RecordTooLarge")

    def test_good_record_kept(self) -> None:
        """
        The same path keeps a good record, and logs no rejection.
        """
        signed = sign_record(self.record(), self.alice)
        answer = self.sim.run(
            self.sender.dht._call(self.receiver.contact, Store, kind=RECORD, data=signed)
        )
        self.assertEqual(answer, {"stored": True})
        self.assertEqual(self.events, [])
        self.assertIsNotNone(self.receiver.dht.store.record_of(self.alice.peer_id))


class ValueTests(SynchronousTestCase):
    def test_put_and_get(self) -> None:
        """
        A small value put under a key is found by another node.
        """
        sim = network(8)
        key = bytes(range(32))
        self.assertGreater(sim.run(sim.nodes[1].dht.put(key, b"hello", 3600)), 0)
        self.assertEqual(sim.run(sim.nodes[6].dht.get(key)), [b"hello"])
        self.assertEqual(sim.run(sim.nodes[6].dht.get(bytes(32))), [])

    def test_refusals(self) -> None:
        """
        Values too large, or without enough work, are refused with a logged
        reason.
        """
        sim = network(2)
        events = rejections(self)
        sender, receiver = sim.nodes
        self.assertRaises(ValueTooLarge, sim.run, sender.dht.put(bytes(32), b"x" * 1025, 60))
        d = sender.dht._call(receiver.contact, Store, kind=MAILBOX, data=_weakest(sim))
        self.assertRaises(ValueRejected, sim.run, d)
        self.assertEqual([e["rejection"] for e in events], ["InsufficientWork"])


def _weakest(sim: DHTSimulation) -> bytes:
    """
    A value whose proof of work has no leading zero bit at all.
    """
    from digitalspring.dht import MailboxValue, leading_zero_bits, work_hash

    expires = int(sim.clock.seconds()) + 60
    for counter in range(100):
        nonce = counter.to_bytes(8, "big")
        if leading_zero_bits(work_hash(bytes(32), b"x", expires, nonce)) == 0:
            return MailboxValue(bytes(32), b"x", expires, nonce).encode()
    raise AssertionError("no weak nonce")


class ContactsCodecTests(SynchronousTestCase):
    @given(
        st.lists(
            st.tuples(
                st.binary(min_size=32, max_size=32).map(
                    lambda seed: Identity.from_seed(seed).peer_id.public_key
                ),
                st.lists(st.text(min_size=1, max_size=60), max_size=8),
            ),
            max_size=32,
        )
    )
    def test_round_trip(self, entries: list[tuple[bytes, list[str]]]) -> None:
        """
        Up to 32 contacts with up to 8 addresses each decode to what was
        encoded.
        """
        contacts = [Contact(PeerID(key), addresses) for key, addresses in entries]
        decoded = decode_contacts(encode_contacts(contacts))
        self.assertEqual(
            [(c.peer_id, c.addresses) for c in decoded],
            [(c.peer_id, c.addresses) for c in contacts],
        )

    @given(st.binary(max_size=2000))
    def test_garbage(self, data: bytes) -> None:
        """
        Any bytes decode to a list of contacts (maybe empty) without an
        exception, and what decodes encodes back to a prefix of the input's
        meaning.
        """
        contacts = decode_contacts(data)
        self.assertLessEqual(len(contacts), 32)
        decode_contacts(encode_contacts(contacts))

    @given(st.lists(st.text(max_size=80), max_size=12))
    def test_origin(self, addresses: list[str]) -> None:
        """
        The origin argument keeps at most 8 addresses and round-trips them.
        """
        origin = Origin()
        self.assertEqual(origin.fromString(origin.toString(addresses)), tuple(addresses[:8]))
