"""
Notifications in the DHT, for a member without notification boxes (issue
12, item 3, "Without boxes"): the owner puts a sealed notification under
the member's key of the day; the member reads today's and yesterday's keys
with a throwaway identity and catches up exactly the groups named; one
depositor cannot fill the key.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.dht import DHTSettings
from digitalspring.multicast import MulticastService, SpringStrategyPlugin
from digitalspring.multicast._notify import (
    DAY,
    DHT_TTL,
    ITEM_SIZE,
    day_key,
    make_notification,
    seal_notification,
)
from digitalspring.multicast._prekeys import decode_bundle
from digitalspring.storage import StoreLimits
from digitalspring.testing import GroupNetwork

SETTINGS = DHTSettings(k=4, rpc_timeout=2.0, lookup_deadline=20.0, pow_difficulty=4)


def _bundle_of(owner: MulticastService, member: MulticastService) -> Any:
    held: list[Any] = []
    owner.store.bundle(member.local).addCallbacks(held.append, lambda f: None)
    return decode_bundle(held[0].data) if held else None


class _Setup:
    """
    Five DHT nodes, an owner with a group with news (with a mailbox) and
    two quiet ones, a member of all three without boxes, a neighbour in
    each.  Every node runs a DHT.
    """

    def __init__(self) -> None:
        self.net = net = GroupNetwork({"spring": SpringStrategyPlugin()}, dht=SETTINGS)
        # Days since 1970, as in life.
        net.clock.advance(1_750_000_000)
        self.seeds = [net.node(f"dht{n}") for n in range(5)]
        net.run(30)
        self.owner = net.node("owner")
        self.member = net.node("member")
        self.other = net.node("other")
        net.run(30)
        self.mailbox = net.node("mailbox", mailbox=StoreLimits())
        self.news = net.group(self.owner, self.member, self.other, strategy="spring")
        net.add_mailbox(self.owner, self.news, self.mailbox)
        self.quiet = [
            net.group(self.owner, self.member, self.other, strategy="spring") for _ in range(2)
        ]
        net.clock.run_until(
            lambda: _bundle_of(self.owner, self.member) is not None, limit=600
        )
        bundle = _bundle_of(self.owner, self.member)
        assert bundle.notify_secret is not None and not bundle.notify_boxes
        self.secret: bytes = bundle.notify_secret

    def key(self, days_ago: int = 0) -> bytes:
        return day_key(self.secret, int(self.net.clock.seconds() // DAY) - days_ago)

    def held(self, key: bytes) -> list[bytes]:
        """
        The values any node holds under ``key``.
        """
        found: set[bytes] = set()
        for dht in self.net.dhts.values():
            found.update(dht.held_values(key))
        return sorted(found)

    def reads(self, member: MulticastService) -> list[bytes]:
        """
        The keys ``member`` reads anonymously from now on (its DHT's
        ``get``, over its own channels, fails the test).
        """
        assert member.dht is not None
        keys: list[bytes] = []
        original = member.dht.get_anonymously

        def reading(key: bytes) -> Deferred[list[bytes]]:
            keys.append(key)
            return original(key)

        def get(key: bytes) -> Deferred[list[bytes]]:
            raise AssertionError("read over the node's own channels")

        member.dht.get_anonymously = reading  # type: ignore[method-assign]
        member.dht.get = get  # type: ignore[method-assign]
        return keys


class DHTNotificationTests(SynchronousTestCase):
    def test_only_the_group_with_news_caught_up(self) -> None:
        """
        A member without boxes away while a message goes to one of its
        three groups: the owner puts one sealed notification (of a box's
        size) under the member's key of the day; the member, back, reads
        today's and yesterday's keys anonymously, catches up that group
        alone, and gets the message.
        """
        s = _Setup()
        net = s.net
        net.down("member")
        net.result(net.result(s.owner.publish(s.news, "while you were away")).transmitted)
        net.clock.run_until(lambda: bool(s.held(s.key())), limit=600)
        [item] = s.held(s.key())
        self.assertEqual(len(item), ITEM_SIZE)
        # Nothing in the value names the group, the member or the owner.
        for secret in (s.news, s.member.local.public_key, s.owner.local.public_key):
            self.assertNotIn(secret, item)
        # The owner away: the member learns of the news from the DHT alone.
        net.down("owner")
        member = net.up("member")
        keys = s.reads(member)
        got = net.subscribe(member, s.news)
        net.run(120)
        self.assertEqual([m.data for m in got], [b"while you were away"])
        self.assertEqual(set(member.caught_up), {s.news})
        self.assertEqual(keys[:2], [s.key(), s.key(1)])

    def test_no_news_no_group(self) -> None:
        """
        Back with nothing in the DHT for it, the member catches up no
        group (it polls none); while it runs it reads again on its
        collection timer.
        """
        s = _Setup()
        net = s.net
        net.down("member")
        net.run(60)
        member = net.up("member")
        keys = s.reads(member)
        net.run(120)
        self.assertEqual(member.caught_up, {})
        self.assertEqual(keys, [s.key(), s.key(1)])
        # The first collection comes 0.8 to 1.2 intervals after the start,
        # the second at least 1.6 after it.
        net.run(member.collect_interval * 1.4 - 120)
        self.assertEqual(len(keys), 4)

    def test_one_depositor_cannot_fill_the_key(self) -> None:
        """
        The owner of another of the member's groups, holding its secret,
        floods the member's key of the day with notifications of its own
        group: the DHT nodes keep 2 of them (the bound of one depositor
        under one key); the owner of the group with news still puts its
        notification, and the member catches up that group (the junk's
        MACs check: the flooder is its group's owner, so the member
        catches up that group too, and reports missing what it named).
        """
        s = _Setup()
        net = s.net
        hostile = net.node("hostile")
        net.run(30)
        theirs = net.group(hostile, s.member, strategy="spring")
        net.clock.run_until(lambda: _bundle_of(hostile, s.member) is not None, limit=600)
        bundle = _bundle_of(hostile, s.member)
        assert hostile.dht is not None
        access = net.result(hostile.store.epoch(theirs)).access_key
        stored = []
        for n in range(16):
            note = make_notification(s.member.local, theirs, (0, n), {0: access})
            item = seal_notification(s.member.local, bundle.signed_prekey, note)
            stored.append(net.result(hostile.dht.put(s.key(), item, DHT_TTL)))
        self.assertTrue(all(stored[:2]))
        self.assertEqual(stored[2:], [0] * 14)
        self.assertEqual(len(s.held(s.key())), 2)
        net.down("member")
        net.result(net.result(s.owner.publish(s.news, "still told")).transmitted)
        net.clock.run_until(lambda: len(s.held(s.key())) == 3, limit=600)
        net.down("owner")
        member = net.up("member")
        got = net.subscribe(member, s.news)
        net.run(120)
        self.assertEqual([m.data for m in got], [b"still told"])
        self.assertEqual(set(member.caught_up), {s.news, theirs})
        self.assertEqual(member.caught_up[theirs].newest, (0, 1))

    def test_boxes_in_the_bundle_not_the_record(self) -> None:
        """
        A member tells its owners its notification boxes in its bundle,
        not in its public DHT record (issue 12, item 3: its trust is not
        published): once it chose a box, the owner's bundle of it names the
        box, while the record of it that every DHT node holds, published
        after, names only its addresses, no box and no prekey.
        """
        s = _Setup()
        net = s.net
        box = net.node("box", notify_box=4)
        net.result(s.member.add_notify_box(box.local))
        net.clock.run_until(
            lambda: box.local in _bundle_of(s.owner, s.member).notify_boxes, limit=600
        )
        assert s.member.dht is not None
        self.assertGreater(net.result(s.member.dht.publish()), 0)
        records = [d.store.record_of(s.member.local) for d in net.dhts.values()]
        held = [r.record for r in records if r is not None]
        self.assertTrue(held)
        for record in held:
            self.assertEqual(record.addresses, ("memory:member:1",))
            self.assertEqual((record.boxes, record.prekeys), ((), ()))
