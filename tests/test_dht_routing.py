"""
Tests for node IDs and the routing table, on ``task.Clock``.
"""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.dht import (
    Contact,
    RoutingTable,
    bucket_index,
    node_id,
    random_id_in_bucket,
    subnets,
)
from digitalspring.identity import Identity, PeerID

OWN = Identity.from_seed(b"o" * 32).peer_id


def peer(n: int) -> PeerID:
    return Identity.from_seed(hashlib.sha256(b"peer %d" % n).digest()).peer_id


def contact(n: int, address: str | None = None) -> Contact:
    return Contact(peer(n), (address or f"memory:h{n}:1",))


def in_bucket(index: int, count: int, start: int = 0) -> list[Contact]:
    """
    ``count`` contacts whose bucket in OWN's table is ``index``.
    """
    own = node_id(OWN)
    found = []
    n = start
    while len(found) < count:
        n += 1
        candidate = contact(n)
        if bucket_index(own, candidate.node_id) == index:
            found.append(candidate)
    return found


class Pings:
    """
    A ping function whose answers the test decides.
    """

    def __init__(self) -> None:
        self.asked: list[tuple[Contact, Deferred[None]]] = []

    def __call__(self, contact: Contact) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.asked.append((contact, d))
        return d


class IdTests(SynchronousTestCase):
    def test_node_id(self) -> None:
        """
        A node ID is BLAKE2b-256 of the peer's public key.
        """
        expected = hashlib.blake2b(OWN.public_key, digest_size=32).digest()
        self.assertEqual(node_id(OWN), int.from_bytes(expected, "big"))

    @given(st.integers(0, 2**256 - 1), st.integers(0, 255))
    def test_random_id_in_bucket(self, own: int, index: int) -> None:
        """
        A refresh target falls in the bucket it was made for.
        """
        self.assertEqual(bucket_index(own, random_id_in_bucket(own, index)), index)

    def test_subnets(self) -> None:
        """
        IPv4 addresses count in their /24, IPv6 ones in their /48, memory
        hosts each on their own; DNS names and onion services in none.
        """
        c = Contact(
            OWN,
            (
                "tcp:10.1.2.3:7000",
                "tcp:[2001:db8:1:2::7]:7000",
                "tcp:example.com:1",
                "memory:a:1",
                "tor:" + "a" * 56 + ".onion:1",
            ),
        )
        self.assertEqual(subnets(c), frozenset({"10.1.2", "2001:db8:1::/48", "memory:a"}))


def near_and_far(target: int) -> list[int]:
    """
    ``target``, and targets whose first bit apart from OWN's ID ranges from
    the full buckets far from it to the sparse ones near it, and beyond.
    """
    own = node_id(OWN)
    return [target, *(own ^ (target >> shift) for shift in (1, 2, 3, 4, 6, 200))]


class RoutingTableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.pings = Pings()
        self.table = RoutingTable(OWN, self.clock, self.pings, k=4, replacements=3)

    def test_observe_and_closest(self) -> None:
        """
        Observed contacts are in the table; closest() gives them nearest
        first by XOR distance.
        """
        contacts = [contact(n) for n in range(10)]
        for c in contacts:
            self.table.observe(c)
        target = contacts[3].node_id
        closest = self.table.closest(target, 3)
        self.assertEqual(closest[0], contacts[3])
        distances = [c.node_id ^ target for c in closest]
        self.assertEqual(distances, sorted(distances))

    def many_buckets(self) -> tuple[RoutingTable, list[Contact]]:
        """
        A table of 120 contacts in buckets of 8: full far from us, sparse
        near us; and its contacts.
        """
        table = RoutingTable(OWN, self.clock, self.pings, k=8)
        for n in range(120):
            table.observe(contact(n))
        return table, table.contacts()

    @given(st.integers(min_value=0, max_value=2**256 - 1), st.integers(1, 40))
    def test_closest_as_a_full_sort(self, target: int, count: int) -> None:
        """
        closest() gives what sorting every contact by distance gives, for
        targets near us and far in a table of many buckets, whichever
        buckets it visits and in whatever order.
        """
        table, held = self.many_buckets()
        for t in (*near_and_far(target), node_id(OWN)):
            ordered = sorted(held, key=lambda c: c.node_id ^ t)
            self.assertEqual(table.closest(t, count), ordered[:count])

    @given(st.integers(min_value=0, max_value=2**256 - 1), st.integers(1, 25))
    def test_closer_than_self(self, target: int, limit: int) -> None:
        """
        closer_than_self counts, up to its limit, the contacts closer to the
        target than we are, leaving out the one it is told to, for targets
        near us and far.
        """
        table, held = self.many_buckets()
        own = node_id(OWN)
        for t in near_and_far(target):
            closer = [c for c in held if c.node_id ^ t < own ^ t]
            self.assertEqual(table.closer_than_self(t, limit), min(len(closer), limit))
            for left_out in (closer[:1] or held[:1]) + [contact(999)]:
                expected = sum(1 for c in closer if c != left_out)
                self.assertEqual(
                    table.closer_than_self(t, limit, exclude=left_out.peer_id),
                    min(expected, limit),
                )
        self.assertEqual(table.closer_than_self(own, limit), 0)

    @given(st.integers(min_value=0, max_value=2**256 - 1), st.integers(1, 25))
    def test_rank_of(self, target: int, limit: int) -> None:
        """
        rank_of counts, up to its limit, the other contacts closer to the
        target than the one asked about, for every contact of a table with
        many buckets, and for targets near us and far.
        """
        table = RoutingTable(OWN, self.clock, self.pings, k=8)
        contacts = [contact(n) for n in range(120)]
        for c in contacts:
            table.observe(c)
        held = table.contacts()
        for t in (target, node_id(OWN) ^ (target >> 200), node_id(OWN)):
            for c in held:
                closer = sum(1 for other in held if other.node_id ^ t < c.node_id ^ t)
                self.assertEqual(table.rank_of(c, t, limit), min(closer, limit))

    def test_not_self_nor_unreachable(self) -> None:
        """
        The node never enters its own table, nor does a contact with no
        address to dial.
        """
        self.assertFalse(self.table.observe(Contact(OWN, ("memory:me:1",))))
        self.assertFalse(self.table.observe(Contact(peer(1), ())))
        self.assertEqual(len(self.table), 0)

    def test_full_bucket_keeps_live_contacts(self) -> None:
        """
        A newcomer to a full bucket whose contacts were seen recently goes
        to the replacement cache; nobody is pinged or evicted.
        """
        members = in_bucket(255, 6)
        for c in members[:4]:
            self.assertTrue(self.table.observe(c))
        self.assertFalse(self.table.observe(members[4]))
        self.clock.advance(0)
        self.assertEqual(self.pings.asked, [])
        self.assertEqual(self.table.buckets[255].contacts(), members[:4])
        self.assertEqual([e.contact for e in self.table.buckets[255].replacements], [members[4]])

    def test_stale_oldest_answers(self) -> None:
        """
        When the least-recently-seen contact is stale, a newcomer makes the
        table ping it; it answers, so it stays (now most recent) and the
        newcomer waits.
        """
        members = in_bucket(255, 5)
        for c in members[:4]:
            self.table.observe(c)
        self.clock.advance(self.table.stale_after)
        self.table.observe(members[4])
        self.clock.advance(0)
        self.assertEqual([c for c, _ in self.pings.asked], [members[0]])
        self.pings.asked[0][1].callback(None)
        self.assertEqual(self.table.buckets[255].contacts(), [*members[1:4], members[0]])
        self.assertNotIn(members[4].peer_id, self.table)

    def test_stale_oldest_silent(self) -> None:
        """
        A stale contact that does not answer the ping is replaced by the
        newest waiting contact.
        """
        members = in_bucket(255, 5)
        for c in members[:4]:
            self.table.observe(c)
        self.clock.advance(self.table.stale_after)
        self.table.observe(members[4])
        self.clock.advance(0)
        self.pings.asked[0][1].errback(Exception("timeout"))
        self.assertNotIn(members[0].peer_id, self.table)
        self.assertIn(members[4].peer_id, self.table)

    def test_one_ping_at_a_time(self) -> None:
        """
        Many newcomers to a full, stale bucket cause one ping, not one each.
        """
        members = in_bucket(255, 10)
        for c in members[:4]:
            self.table.observe(c)
        self.clock.advance(self.table.stale_after)
        for c in members[4:]:
            self.table.observe(c)
        self.clock.advance(0)
        self.assertEqual(len(self.pings.asked), 1)

    def test_replacement_cache_bounded(self) -> None:
        """
        The replacement cache keeps the most recent newcomers, at most its
        size.
        """
        members = in_bucket(255, 10)
        for c in members:
            self.table.observe(c)
        waiting = [e.contact for e in self.table.buckets[255].replacements]
        self.assertEqual(waiting, members[7:])

    def test_failures_evict_when_replaced(self) -> None:
        """
        A contact that fails max_failures requests in a row gives its place
        to a waiting one; an answer in between resets the count.
        """
        members = in_bucket(255, 5)
        for c in members:
            self.table.observe(c)
        self.table.failed(members[0].peer_id)
        self.table.observe(members[0])
        self.table.failed(members[0].peer_id)
        self.assertIn(members[0].peer_id, self.table)
        self.table.failed(members[0].peer_id)
        self.assertNotIn(members[0].peer_id, self.table)
        self.assertIn(members[4].peer_id, self.table)

    def test_failures_without_replacement(self) -> None:
        """
        Without a replacement a failing contact stays for a while (we may be
        the ones offline), and goes after five times max_failures.
        """
        c = contact(1)
        self.table.observe(c)
        for _ in range(9):
            self.table.failed(c.peer_id)
        self.assertIn(c.peer_id, self.table)
        self.table.failed(c.peer_id)
        self.assertNotIn(c.peer_id, self.table)

    def test_observe_moves_to_tail_and_updates_addresses(self) -> None:
        """
        Hearing from a known contact makes it the most recently seen and
        takes its new addresses.
        """
        members = in_bucket(255, 3)
        for c in members:
            self.table.observe(c)
        moved = Contact(members[0].peer_id, ("memory:elsewhere:1",))
        self.table.observe(moved)
        self.assertEqual(self.table.buckets[255].contacts()[-1].addresses, moved.addresses)

    def test_stale_buckets(self) -> None:
        """
        A bucket no lookup touched for the refresh interval is stale; a
        lookup into it makes it fresh.
        """
        c = in_bucket(255, 1)[0]
        self.table.observe(c)
        self.assertEqual(self.table.stale_buckets(3600), [])
        self.clock.advance(3600)
        self.assertEqual(self.table.stale_buckets(3600), [255])
        self.table.touch(c.node_id)
        self.assertEqual(self.table.stale_buckets(3600), [])

    def test_heard_from_is_fresh(self) -> None:
        """
        Hearing from a contact of a bucket keeps the bucket fresh as a
        lookup into it does (BEP 5): traffic spares it a refresh.  A bucket
        nobody in it talked to goes stale.
        """
        busy, quiet = in_bucket(255, 1)[0], in_bucket(254, 1)[0]
        self.table.observe(busy)
        self.table.observe(quiet)
        self.clock.advance(3000)
        self.table.observe(busy)
        self.clock.advance(600)
        self.assertEqual(self.table.stale_buckets(3600), [254])

    def test_subnet_limit(self) -> None:
        """
        A bucket takes at most two contacts with TCP addresses in one IPv4
        /24, and its replacement cache no more.
        """
        table = RoutingTable(OWN, self.clock, self.pings, k=20)
        attackers = [
            Contact(c.peer_id, (f"tcp:10.9.9.{n}:7000",))
            for n, c in enumerate(in_bucket(255, 30), 1)
        ]
        for c in attackers:
            table.observe(c)
        self.assertEqual(len(table), 2)
        other = Contact(in_bucket(255, 1, start=10_000)[0].peer_id, ("tcp:10.9.10.1:7000",))
        self.assertTrue(table.observe(other))

    def test_eclipse_attempt(self) -> None:
        """
        A node with live contacts is flooded by 500 fresh IDs from one /24,
        each talking to it and staying in touch: every live contact
        survives, and the flood holds at most two places per bucket.
        """
        table = RoutingTable(OWN, self.clock, succeed, k=20)
        honest = [
            Contact(c.peer_id, (f"tcp:192.0.{n}.1:7000",))
            for n, c in enumerate([contact(n) for n in range(200)])
        ]
        for c in honest:
            table.observe(c)
        before = {c.peer_id for c in table.contacts()}
        attackers = [
            Contact(peer(100_000 + n), (f"tcp:203.0.113.{n % 250 + 1}:7000",)) for n in range(500)
        ]
        for _ in range(3):
            self.clock.advance(table.stale_after)
            for c in honest:
                if c.peer_id in before:
                    table.observe(c)
            for c in attackers:
                table.observe(c)
            self.clock.advance(0)
        after = {c.peer_id for c in table.contacts()}
        self.assertTrue(before <= after)
        for bucket in table.buckets.values():
            flood = [e for e in bucket.entries if "203.0.113" in e.nets]
            self.assertLessEqual(len(flood), 2)

    def test_eclipse_replaces_only_silent_contacts(self) -> None:
        """
        A full bucket of stale contacts that still answer pings is not
        taken over by a flood of newcomers from many networks either.
        """
        answers: list[Contact] = []

        def ping(c: Contact) -> Deferred[None]:
            answers.append(c)
            return succeed(None)

        table = RoutingTable(OWN, self.clock, ping, k=4)
        members = in_bucket(255, 4)
        for c in members:
            table.observe(c)
        for n, newcomer in enumerate(in_bucket(255, 50, start=50_000)):
            self.clock.advance(table.stale_after)
            table.observe(Contact(newcomer.peer_id, (f"tcp:10.{n}.0.1:7000",)))
            self.clock.advance(0)
        self.assertEqual(set(table.buckets[255].contacts()), set(members))
        self.assertTrue(answers)

    def test_evict_failed_ping(self) -> None:
        """
        A ping that fails at once (an unreachable peer) evicts at once.
        """
        table = RoutingTable(OWN, self.clock, lambda c: fail(Exception("no")), k=1)
        first, second = in_bucket(255, 2)
        table.observe(first)
        self.clock.advance(table.stale_after)
        table.observe(second)
        self.clock.advance(0)
        self.assertEqual(table.contacts(), [second])

    def test_added_callback(self) -> None:
        """
        The added callbacks hear of each contact that enters the table,
        once.
        """
        seen: list[Contact] = []
        self.table.added.append(seen.append)
        c = contact(1)
        self.table.observe(c)
        self.table.observe(c)
        self.assertEqual(seen, [c])
