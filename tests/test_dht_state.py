"""
Tests for what a DHT node keeps across restarts: the codecs of its state
files, and restarted nodes on the memory network and a simulated clock.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import LogEvent, LogLevel, globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.channel import ConnectionPool
from digitalspring.dht import (
    CONTACTS_FILE_NAME,
    DHT,
    RECORD,
    RECORDS_FILE_NAME,
    Contact,
    DamagedStateFile,
    DHTDirectory,
    DHTSettings,
    DirectoryChain,
    FindValue,
    PeerRecord,
    SavedContact,
    SavedRecords,
    decode_contacts_file,
    decode_records_file,
    encode_contacts_file,
    encode_records_file,
    id_bytes,
    node_id,
    sign_record,
    solve,
)
from digitalspring.dht._simulation import PORT, DHTSimulation, SimulatedNode
from digitalspring.dht._state import MAX_SAVED_CONTACTS
from digitalspring.identity import Identity
from digitalspring.transport import MemoryNetwork, SimulatedClock

SETTINGS = DHTSettings(k=4, rpc_timeout=2.0, lookup_deadline=20.0, pow_difficulty=4)

ME = Identity.from_seed(b"m" * 32)
ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)


def log_events(test: SynchronousTestCase) -> list[LogEvent]:
    """
    The events logged from now until the end of the test.
    """
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def warnings(events: Iterable[LogEvent]) -> list[LogEvent]:
    return [e for e in events if e.get("log_level") == LogLevel.warn]


def saved(peer: Identity, address: str, last_seen: float) -> SavedContact:
    return SavedContact(Contact(peer.peer_id, (address,)), last_seen)


def record(peer: Identity, now: int, sequence: int = 1, lifetime: int = 3600) -> bytes:
    return sign_record(
        PeerRecord(peer.peer_id, sequence, now - 10, now + lifetime, ("memory:x:1",)), peer
    )


def network(count: int, join: bool = True) -> DHTSimulation:
    sim = DHTSimulation(count, SETTINGS, seed=count, latency=0.01)
    if join:
        sim.join_all()
    return sim


def restart(
    sim: DHTSimulation,
    i: int,
    state_dir: FilePath[str] | None,
    bootstrap: Iterable[Contact] = (),
) -> SimulatedNode:
    """
    Stop node ``i`` (its DHT saves its state), then start a new pool and DHT
    with its identity on its host and port, from ``state_dir``.
    """
    old = sim.nodes[i]
    old.dht.stopService()
    old.pool.stopService()  # type: ignore[no-untyped-call]
    old.transport.host.ports[PORT].stopListening()
    sim.clock.advance(1)
    directory = DirectoryChain([])
    pool = ConnectionPool(
        old.identity, sim.clock, {"memory": old.transport}, directory, idle_timeout=10.0
    )
    dht = DHT(pool, sim.settings, bootstrap, state_dir=state_dir)
    directory.directories.append(DHTDirectory(dht))
    old.transport.listen(str(PORT), pool.server_factory)
    node = sim.nodes[i] = SimulatedNode(old.host, old.identity, old.transport, pool, dht)
    pool.startService()  # type: ignore[no-untyped-call]
    dht.startService()
    return node


class ContactsFileTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        Saved contacts decode to what was encoded, most recently seen first.
        """
        contacts = [
            saved(ALICE, "tcp:127.0.0.1:7001", 100.0),
            SavedContact(Contact(BOB.peer_id, ("memory:b:1", "tcp:127.0.0.2:7")), 250.5),
        ]
        decoded = decode_contacts_file(encode_contacts_file(ME.peer_id, contacts, 300), ME.peer_id)
        self.assertEqual(
            [(s.contact.peer_id, s.contact.addresses, s.last_seen) for s in decoded],
            [
                (BOB.peer_id, ("memory:b:1", "tcp:127.0.0.2:7"), 250.5),
                (ALICE.peer_id, ("tcp:127.0.0.1:7001",), 100.0),
            ],
        )

    def test_bounded(self) -> None:
        """
        At most MAX_SAVED_CONTACTS are saved: the most recently seen.
        """
        contacts = [
            saved(Identity.from_seed(i.to_bytes(32, "big")), f"memory:h{i}:1", float(i))
            for i in range(MAX_SAVED_CONTACTS + 50)
        ]
        decoded = decode_contacts_file(encode_contacts_file(ME.peer_id, contacts, 0), ME.peer_id)
        self.assertEqual(len(decoded), MAX_SAVED_CONTACTS)
        self.assertEqual(decoded[-1].last_seen, 50.0)

    def test_truncated(self) -> None:
        """
        Every truncation of a contacts file is refused as damaged.
        """
        data = encode_contacts_file(ME.peer_id, [saved(ALICE, "memory:a:1", 1.0)], 2)
        for end in range(len(data) - 1):
            self.assertRaises(DamagedStateFile, decode_contacts_file, data[:end], ME.peer_id)

    def test_foreign(self) -> None:
        """
        Another node's contacts file, or a file of another format, is
        refused, saying why.
        """
        data = encode_contacts_file(ALICE.peer_id, [saved(BOB, "memory:b:1", 1.0)], 2)
        e = self.assertRaises(DamagedStateFile, decode_contacts_file, data, ME.peer_id)
        self.assertIn("another node", str(e))
        records = encode_records_file(ME.peer_id, SavedRecords(1), 2)
        e = self.assertRaises(DamagedStateFile, decode_contacts_file, records, ME.peer_id)
        self.assertIn("not a file of", str(e))

    def test_bad_entries(self) -> None:
        """
        A contact with a bad peer ID, an address without a transport, or a
        time that is not a number makes the file damaged.
        """
        good = {"peer_id": str(ALICE.peer_id), "addresses": ["memory:a:1"], "last_seen": 1}
        for bad in [
            {**good, "peer_id": "nobody"},
            {**good, "addresses": ["nowhere"]},
            {**good, "addresses": []},
            {**good, "last_seen": "yesterday"},
            {**good, "last_seen": True},
        ]:
            document = {
                "format": "digitalspring dht contacts",
                "version": 1,
                "peer_id": str(ME.peer_id),
                "contacts": [good, bad],
            }
            data = json.dumps(document).encode()
            self.assertRaises(DamagedStateFile, decode_contacts_file, data, ME.peer_id)

    @given(st.binary(max_size=500))
    def test_garbage(self, data: bytes) -> None:
        """
        Any bytes are either a contacts file or refused as damaged: never
        another exception.
        """
        try:
            decode_contacts_file(data, ME.peer_id)
        except DamagedStateFile:
            pass

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(st.text(max_size=10), children, max_size=4)
            ),
            max_leaves=20,
        )
    )
    def test_any_json(self, contacts: Any) -> None:
        """
        A well-formed header with any JSON as its contacts decodes or is
        refused as damaged: never another exception.
        """
        for entries in (
            contacts,
            [contacts],
            [{"peer_id": str(ALICE.peer_id), **{"x": contacts}}],
        ):
            document = {
                "format": "digitalspring dht contacts",
                "version": 1,
                "peer_id": str(ME.peer_id),
                "contacts": entries,
            }
            try:
                decode_contacts_file(json.dumps(document).encode(), ME.peer_id)
            except DamagedStateFile:
                pass


class RecordsFileTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        The sequence number, records and values decode to what was encoded.
        """
        held = SavedRecords(1234, (record(ALICE, 1000), b"\x00\xff"), (b"value",))
        self.assertEqual(
            decode_records_file(encode_records_file(ME.peer_id, held, 5), ME.peer_id), held
        )

    def test_truncated(self) -> None:
        """
        Every truncation of a records file is refused as damaged.
        """
        data = encode_records_file(ME.peer_id, SavedRecords(7, (record(ALICE, 1000),)), 5)
        for end in range(len(data) - 1):
            self.assertRaises(DamagedStateFile, decode_records_file, data[:end], ME.peer_id)

    def test_bad_fields(self) -> None:
        """
        A negative or missing sequence, or a record that is not base64,
        makes the file damaged; so does another node's file.
        """
        base = {
            "format": "digitalspring dht records",
            "version": 1,
            "peer_id": str(ME.peer_id),
            "sequence": 1,
            "records": [],
            "values": [],
        }
        for changes in [
            {"sequence": -1},
            {"sequence": None},
            {"sequence": 1.5},
            {"records": ["not base64!"]},
            {"records": [17]},
            {"values": "abc"},
            {"version": 2},
            {"peer_id": str(ALICE.peer_id)},
        ]:
            data = json.dumps({**base, **changes}).encode()
            self.assertRaises(DamagedStateFile, decode_records_file, data, ME.peer_id)
        self.assertEqual(
            decode_records_file(json.dumps(base).encode(), ME.peer_id), SavedRecords(1)
        )

    @given(st.binary(max_size=500))
    def test_garbage(self, data: bytes) -> None:
        """
        Any bytes are either a records file or refused as damaged.
        """
        try:
            decode_records_file(data, ME.peer_id)
        except DamagedStateFile:
            pass


class RestartTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.state_dir = FilePath(self.mktemp())

    def test_rejoin_without_bootstrap(self) -> None:
        """
        A node restarted with no bootstrap peer rejoins the network through
        the contacts it saved, serves the records it held, finds others and
        is found again.
        """
        sim = network(8, join=False)
        sim.nodes[7].dht.state_dir = self.state_dir
        sim.join_all()
        for node in sim.nodes:
            sim.run(node.dht.publish())
        sim.clock.advance(30)
        before = sim.nodes[7]
        known = {c.peer_id for c in before.dht.table.contacts()}
        held = dict(before.dht.store.records)
        self.assertGreater(len(held), 1)
        node = restart(sim, 7, self.state_dir)
        self.assertEqual(node.dht.bootstrap_contacts, [])
        self.assertEqual({s.contact.peer_id for s in node.dht.saved_contacts}, known)
        # Candidates, not contacts: none is in the table before it answers.
        self.assertEqual(len(node.dht.table), 0)
        self.assertEqual(set(node.dht.store.records), set(held))
        sim.run(node.dht.joined)
        self.assertEqual({c.peer_id for c in node.dht.table.contacts()}, known)
        # It serves what it held.
        other = next(k for k, r in held.items() if r.record.peer_id != node.identity.peer_id)
        answer = sim.run(
            sim.nodes[0].dht._call(node.contact, FindValue, key=id_bytes(other), kind=RECORD)
        )
        self.assertEqual(answer["record"], held[other].signed)
        # It finds others, and is found with the record it signs now.
        target = sim.nodes[3].identity.peer_id
        node.dht.store.records.pop(node_id(target), None)
        found = sim.run(node.dht.find_peer(target))
        self.assertEqual(found.found.record.peer_id, target)
        sim.clock.advance(SETTINGS.maintenance_interval + 5)
        own = node.dht.own_record
        assert own is not None
        result = sim.run(sim.nodes[1].dht.find_peer(node.identity.peer_id))
        self.assertEqual(result.found.record.sequence, own.record.sequence)

    def test_saved_contacts_must_answer(self) -> None:
        """
        Saved contacts that no longer answer never enter the table; the node
        keeps them for its next start rather than forgetting the network.
        """
        sim = network(4, join=False)
        sim.nodes[0].dht.state_dir = self.state_dir
        sim.join_all()
        events = log_events(self)
        known = {c.peer_id for c in sim.nodes[0].dht.table.contacts()}
        self.assertEqual(len(known), 3)
        for i in (1, 2, 3):
            sim.network.take_offline(sim.nodes[i].host)
        node = restart(sim, 0, self.state_dir)
        sim.run(node.dht.joined)
        self.assertEqual(len(node.dht.table), 0)
        self.assertTrue(any("none of" in e.get("log_format", "") for e in warnings(events)))
        node.dht.stopService()
        again = decode_contacts_file(
            self.state_dir.child(CONTACTS_FILE_NAME).getContent(), node.identity.peer_id
        )
        self.assertEqual({s.contact.peer_id for s in again}, known)

    def test_contacts_saved_once_joined(self) -> None:
        """
        A node saves the contacts it joined through as soon as the join is
        done, not only at its next upkeep or a clean stop: a node killed
        right after joining still rejoins through them.
        """
        sim = network(4, join=False)
        last = sim.nodes[3]
        last.dht.state_dir = self.state_dir
        sim.join_all()
        self.assertTrue(last.dht.running)
        saved = decode_contacts_file(
            self.state_dir.child(CONTACTS_FILE_NAME).getContent(), last.identity.peer_id
        )
        self.assertEqual(
            {s.contact.peer_id for s in saved}, {c.peer_id for c in last.dht.table.contacts()}
        )
        self.assertEqual(len(saved), 3)

    def check_ignored(self, contacts: bytes, records: bytes, reason: str) -> None:
        """
        A node whose state files hold ``contacts`` and ``records`` starts,
        logs two warnings with ``reason``, joins through its bootstrap peer,
        and replaces the files with good ones when it stops.
        """
        self.state_dir.makedirs(ignoreExistingDirectory=True)
        self.state_dir.child(CONTACTS_FILE_NAME).setContent(contacts)
        self.state_dir.child(RECORDS_FILE_NAME).setContent(records)
        sim = network(3, join=False)
        node = sim.nodes[2]
        node.dht.state_dir = self.state_dir
        events = log_events(self)
        sim.join_all()
        warned = [e for e in warnings(events) if e.get("log_format", "").startswith("ignoring")]
        self.assertEqual(len(warned), 2, warned)
        for event in warned:
            self.assertIn(reason, event["reason"])
        self.assertEqual(node.dht.saved_contacts, [])
        self.assertEqual(len(node.dht.table), 2)
        node.dht.stopService()
        peer = node.identity.peer_id
        self.assertEqual(
            len(decode_contacts_file(self.state_dir.child(CONTACTS_FILE_NAME).getContent(), peer)),
            2,
        )
        decode_records_file(self.state_dir.child(RECORDS_FILE_NAME).getContent(), peer)

    def test_truncated_files(self) -> None:
        """
        Truncated state files are ignored with a warning; the node starts.
        """
        contacts = encode_contacts_file(ME.peer_id, [saved(ALICE, "memory:a:1", 1.0)], 2)
        records = encode_records_file(ME.peer_id, SavedRecords(5, (record(ALICE, 1000),)), 2)
        self.check_ignored(contacts[:40], records[:-20], "not JSON")

    def test_garbage_files(self) -> None:
        """
        State files of random bytes are ignored with a warning.
        """
        garbage = bytes(range(256)) * 3
        self.check_ignored(garbage, garbage[::-1], "not JSON")

    def test_foreign_files(self) -> None:
        """
        Another node's state files are ignored with a warning.
        """
        contacts = encode_contacts_file(ME.peer_id, [saved(ALICE, "memory:a:1", 1.0)], 2)
        records = encode_records_file(ME.peer_id, SavedRecords(5, (record(ALICE, 1000),)), 2)
        self.check_ignored(contacts, records, "another node")

    def test_unreadable_files(self) -> None:
        """
        A state file the node cannot read (here, a directory) is ignored
        with a warning, and each save (once joined, and at the stop) says
        it cannot write it.
        """
        self.state_dir.child(CONTACTS_FILE_NAME).makedirs()
        self.state_dir.child(RECORDS_FILE_NAME).makedirs()
        sim = network(2, join=False)
        node = sim.nodes[1]
        node.dht.state_dir = self.state_dir
        events = log_events(self)
        sim.join_all()
        self.assertEqual(
            [e["log_format"].split(" ")[0] for e in warnings(events)],
            ["ignoring"] * 2 + ["cannot"] * 2,
        )
        self.assertEqual(len(node.dht.table), 1)
        node.dht.stopService()
        self.assertEqual(
            [e["log_format"] for e in warnings(events)[2:]], ["cannot save {path}: {reason}"] * 4
        )

    def test_expired_and_invalid_records_dropped(self) -> None:
        """
        Records are verified again when loaded: an expired one and a forged
        one are dropped with the reason logged; a good one and a value are
        kept.
        """
        sim = network(2, join=False)
        sim.clock.advance(100_000)
        now = int(sim.clock.seconds())
        node = sim.nodes[1]
        good = record(ALICE, now)
        expired = record(BOB, now - 7200)
        forged = bytearray(record(Identity.from_seed(b"c" * 32), now))
        forged[-1] ^= 1
        mailbox = solve(bytes(32), b"hello", now + 600, SETTINGS.pow_difficulty).encode()
        held = SavedRecords(3, (good, expired, bytes(forged), b"junk"), (mailbox,))
        self.state_dir.makedirs()
        self.state_dir.child(RECORDS_FILE_NAME).setContent(
            encode_records_file(node.identity.peer_id, held, now)
        )
        node.dht.state_dir = self.state_dir
        events = log_events(self)
        sim.start([1])
        dropped = [e["rejection"] for e in events if "rejection" in e]
        self.assertEqual(dropped, ["RecordExpired", "BadRecordSignature", "MalformedRecord"])
        self.assertIsNotNone(node.dht.store.record_of(ALICE.peer_id))
        self.assertIsNone(node.dht.store.record_of(BOB.peer_id))
        self.assertEqual(node.dht.store.get_values(0), [mailbox])
        self.assertEqual(node.dht._sequence, 3)
        self.assertEqual(warnings(events), [])

    def test_files_written_atomically(self) -> None:
        """
        Saving leaves exactly the two files, readable by the node's user
        only, and no temporary file.
        """
        sim = network(3, join=False)
        sim.nodes[0].dht.state_dir = self.state_dir
        sim.join_all()
        sim.nodes[0].dht.save_state()
        sim.nodes[0].dht.save_state()
        self.assertEqual(
            sorted(self.state_dir.listdir()), sorted([CONTACTS_FILE_NAME, RECORDS_FILE_NAME])
        )
        for name in (CONTACTS_FILE_NAME, RECORDS_FILE_NAME):
            mode = os.stat(self.state_dir.child(name).path).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o600)

    def test_saved_periodically(self) -> None:
        """
        A running node saves its contacts every save interval, on its clock.
        """
        sim = network(3, join=False)
        sim.nodes[0].dht.state_dir = self.state_dir
        sim.join_all()
        path = self.state_dir.child(CONTACTS_FILE_NAME)
        self.assertFalse(path.exists())
        sim.clock.advance(SETTINGS.save_interval + 1)
        contacts = decode_contacts_file(path.getContent(), sim.nodes[0].identity.peer_id)
        self.assertEqual(len(contacts), 2)

    def test_sequence_saved_when_signed(self) -> None:
        """
        The records file holds a new sequence number as soon as the record
        is signed, before the node stops: a crash cannot lose it.
        """
        sim = network(3, join=False)
        sim.nodes[0].dht.state_dir = self.state_dir
        sim.join_all()
        sim.run(sim.nodes[0].dht.publish())
        own = sim.nodes[0].dht.own_record
        assert own is not None
        held = decode_records_file(
            self.state_dir.child(RECORDS_FILE_NAME).getContent(), sim.nodes[0].identity.peer_id
        )
        self.assertEqual(held.sequence, own.record.sequence)
        self.assertIn(own.signed, held.records)


class SequenceTests(SynchronousTestCase):
    def alone(self, clock: SimulatedClock, state_dir: FilePath[str]) -> DHT:
        network = MemoryNetwork(clock)
        network.add_host("solo")
        transport = network.transport("solo")
        pool = ConnectionPool(ME, clock, {"memory": transport}, DirectoryChain([]))
        transport.listen("1", pool.server_factory)
        dht = DHT(pool, SETTINGS, state_dir=state_dir)
        pool.startService()  # type: ignore[no-untyped-call]
        dht.startService()
        return dht

    def test_monotonic_when_clock_goes_back(self) -> None:
        """
        A node restarted with its clock set a day back signs its next record
        with a higher sequence than any before (its old record, now dated
        in the future, is dropped with the reason logged).
        """
        state_dir = FilePath(self.mktemp())
        start = 1_700_000_000.0
        first = self.alone(SimulatedClock(start), state_dir)
        first.clock.advance(1)
        self.successResultOf(first.publish())
        own = first.own_record
        assert own is not None
        first.stopService()
        first.pool.stopService()  # type: ignore[no-untyped-call]
        earlier = start - 86_400
        # Without the saved sequence, the clock alone would go backwards.
        self.assertLess(int(earlier * 1000), own.record.sequence)
        events = log_events(self)
        second = self.alone(SimulatedClock(earlier), state_dir)
        self.assertEqual(
            [e["rejection"] for e in events if "rejection" in e], ["RecordFromFuture"]
        )
        second.clock.advance(1)
        self.successResultOf(second.publish())
        again = second.own_record
        assert again is not None
        self.assertGreater(again.record.sequence, own.record.sequence)
        second.stopService()
        second.pool.stopService()  # type: ignore[no-untyped-call]

    def test_above_our_record_handed_back(self) -> None:
        """
        Without any saved state, a node that holds its own record with a
        higher sequence (handed back by a peer) signs a higher one still.
        """
        clock = SimulatedClock(1_700_000_000.0)
        dht = self.alone(clock, FilePath(self.mktemp()))
        now = int(clock.seconds())
        high = int(clock.seconds() * 1000) + 10**9
        dht.store.put_record(record(ME, now, sequence=high))
        self.successResultOf(dht.publish())
        own = dht.own_record
        assert own is not None
        self.assertEqual(own.record.sequence, high + 1)
        dht.stopService()
        dht.pool.stopService()  # type: ignore[no-untyped-call]
