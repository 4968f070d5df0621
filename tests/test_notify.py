"""
Notification boxes (issue 12, item 3): a member back from an absence
collects its notifications and catches up the groups with news, and no
others; a box keeps only opaque, bounded deposits.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from nacl.bindings import crypto_scalarmult_base
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.identity import Identity
from digitalspring.multicast import MulticastService, SpringStrategyPlugin, _notify_side
from digitalspring.multicast._notify import (
    ITEM_SIZE,
    BoxFull,
    DepositRefused,
    InsufficientWork,
    NotABox,
    NotificationRefused,
    check_deposit,
    decode_notification,
    encode_notification,
    item_prekey,
    make_notification,
    notification_valid,
    open_notification,
    seal_notification,
    solve_deposit,
)
from digitalspring.multicast._prekeys import decode_bundle
from digitalspring.multicast._router import _Responder
from digitalspring.storage import (
    DATABASE_NAME,
    DepositNotification,
    MemoryStore,
    RegisterNotifyMember,
    StoreLimits,
    open_sqlite_store,
    storage_key,
)
from digitalspring.testing import GroupNetwork

#: Little work, so that the tests run fast; the box asks it all the same.
WORK = 4


def _network() -> GroupNetwork:
    return GroupNetwork({"spring": SpringStrategyPlugin()})


def _notifications(box: MulticastService, member: MulticastService) -> list[bytes]:
    found: list[bytes] = []
    box.store.notifications(member.local, 100).addCallback(found.extend)
    return found


def _registered(box: MulticastService, member: MulticastService) -> bool:
    found: list[object] = []
    box.store.notify_members().addCallback(found.extend)
    return any(getattr(m, "peer", None) == member.local for m in found)


def _boxes_known(net: GroupNetwork, owner: MulticastService, member: MulticastService) -> bool:
    held: list[object] = []
    owner.store.bundle(member.local).addCallbacks(held.append, lambda f: None)
    return bool(held) and bool(decode_bundle(held[0].data).notify_boxes)  # type: ignore[attr-defined]


class _Setup:
    """
    An owner with one group with news and ``quiet`` others, a member in all
    of them with one notification box, a neighbour in each.
    """

    def __init__(self, quiet: int = 3, box_store: MemoryStore | None = None) -> None:
        self.net = net = _network()
        self.owner = net.node("owner")
        self.member = net.node("member")
        self.other = net.node("other")
        self.box = net.node("box", store=box_store, notify_box=WORK)
        self.news = net.group(self.owner, self.member, self.other, strategy="spring")
        self.quiet = [
            net.group(self.owner, self.member, self.other, strategy="spring") for _ in range(quiet)
        ]
        net.result(self.member.add_notify_box(self.box.local))
        net.clock.run_until(
            lambda: (
                _registered(self.box, self.member) and _boxes_known(net, self.owner, self.member)
            ),
            limit=600,
        )


class NotificationTests(SynchronousTestCase):
    def test_sealed_and_opened(self) -> None:
        """
        A notification sealed to a member's prekey opens with its secret
        and the member's identity, and not with another's; every item has
        one size; its MAC checks under the access key and not another.
        """
        member = Identity.generate()
        secret = os.urandom(32)
        public = crypto_scalarmult_base(secret)
        key = os.urandom(32)
        note = make_notification(member.peer_id, b"g" * 32, (3, 7), {3: key})
        item = seal_notification(member.peer_id, public, note)
        self.assertEqual((len(item), item_prekey(item)), (ITEM_SIZE, public))
        opened = open_notification(member, secret, item)
        self.assertEqual(opened, note)
        self.assertTrue(notification_valid(opened, member.peer_id, {3: key}))
        self.assertFalse(notification_valid(opened, member.peer_id, {3: os.urandom(32)}))
        self.assertFalse(notification_valid(opened, Identity.generate().peer_id, {3: key}))
        self.assertFalse(notification_valid(opened, member.peer_id, {2: key}))
        self.assertRaises(
            NotificationRefused, open_notification, Identity.generate(), secret, item
        )
        changed = item[:-1] + bytes([item[-1] ^ 1])
        self.assertRaises(NotificationRefused, open_notification, member, secret, changed)
        self.assertEqual(decode_notification(encode_notification(note)), note)

    def test_proof_of_work(self) -> None:
        """
        A deposit's proof of work checks for its box, connection, recipient
        and item, and for no other.
        """
        box, recipient = Identity.generate().peer_id, Identity.generate().peer_id
        item = bytes(ITEM_SIZE)
        nonce = solve_deposit(box, b"h" * 32, recipient, item, 8)
        check_deposit(box, b"h" * 32, recipient, item, nonce, 8)
        with self.assertRaises(InsufficientWork):
            for binding in (b"i" * 32, b"j" * 32, b"k" * 32):
                check_deposit(box, binding, recipient, item, nonce, 8)


class NotificationBoxTests(SynchronousTestCase):
    def test_only_groups_with_news_caught_up(self) -> None:
        """
        A member away while a message goes to one of its four groups finds
        one notification at its box, which the box no longer holds once
        collected; it catches up that group alone (the others are not
        contacted) and gets the message.
        """
        s = _Setup(quiet=3)
        net = s.net
        net.down("member")
        report = net.result(s.owner.publish(s.news, "while you were away"))
        net.result(report.transmitted)
        net.clock.run_until(lambda: len(_notifications(s.box, s.member)) == 1, limit=600)
        net.run(60)
        self.assertEqual(len(_notifications(s.box, s.member)), 1)
        member = net.up("member")
        got = net.subscribe(member, s.news)
        net.run(120)
        self.assertEqual([m.data for m in got], [b"while you were away"])
        self.assertEqual(set(member.caught_up), {s.news})
        self.assertEqual(_notifications(s.box, member), [])

    def test_without_boxes_every_group(self) -> None:
        """
        A member without a box (or that removed its box) catches up every
        group when it starts, as before.
        """
        s = _Setup(quiet=2)
        net = s.net
        net.result(s.member.remove_notify_box(s.box.local))
        net.clock.run_until(lambda: not _registered(s.box, s.member), limit=600)
        self.assertEqual(net.result(Deferred.fromCoroutine(s.member.notify_boxes())), [])
        net.down("member")
        net.result(net.result(s.owner.publish(s.news, "hello")).transmitted)
        net.run(60)
        member = net.up("member")
        net.run(120)
        self.assertEqual(set(member.caught_up), {s.news, *s.quiet})

    def test_forged_notification_triggers_nothing(self) -> None:
        """
        A notification deposited by a peer outside the group, sealed to the
        member's real prekey but with a MAC under a key it made up, opens
        and triggers no catch-up; nor does a replay of one for a message
        the member already has.
        """
        s = _Setup(quiet=1)
        net = s.net
        bundle = decode_bundle(net.result(s.owner.store.bundle(s.member.local)).data)
        outsider = net.node("outsider")
        forged = make_notification(s.member.local, s.news, (0, 5), {0: os.urandom(32)})
        item = seal_notification(s.member.local, bundle.signed_prekey, forged)
        net.result(outsider.deposit(s.box.local, s.member.local, item))
        access = net.result(s.owner.store.epoch(s.news)).access_key
        stale = make_notification(s.member.local, s.news, (0, -1), {0: access})
        item = seal_notification(s.member.local, bundle.signed_prekey, stale)
        net.result(outsider.deposit(s.box.local, s.member.local, item))
        self.assertEqual(len(_notifications(s.box, s.member)), 2)
        net.down("member")
        member = net.up("member")
        net.run(120)
        self.assertEqual(member.caught_up, {})
        self.assertEqual(_notifications(s.box, member), [])

    def test_box_bounds(self) -> None:
        """
        A box refuses, each with a clear error: deposits past its quota for
        one member (and the member, told so, catches up every group), for a
        member it does not serve, without the work it asks, and anything
        when it does not serve at all.
        """
        s = _Setup(quiet=1, box_store=MemoryStore(StoreLimits(notifications_per_member=2)))
        net = s.net
        bundle = decode_bundle(net.result(s.owner.store.bundle(s.member.local)).data)
        outsider = net.node("outsider")
        note = make_notification(s.member.local, s.news, (0, 0), {0: os.urandom(32)})
        item = seal_notification(s.member.local, bundle.signed_prekey, note)
        for _ in range(2):
            net.result(outsider.deposit(s.box.local, s.member.local, item))
        error = self.assertRaises(
            BoxFull, net.result, outsider.deposit(s.box.local, s.member.local, item)
        )
        self.assertIn("for this member", str(error))
        error = self.assertRaises(
            DepositRefused, net.result, outsider.deposit(s.box.local, outsider.local, item)
        )
        self.assertIn("serves no such member", str(error))
        self.assertRaises(
            NotABox, net.result, outsider.deposit(s.other.local, s.member.local, item)
        )
        self.patch(_notify_side, "solve_deposit", _unsolved)
        self.assertRaises(
            InsufficientWork, net.result, outsider.deposit(s.box.local, s.member.local, item)
        )
        self.assertEqual(len(_notifications(s.box, s.member)), 2)
        net.down("member")
        member = net.up("member")
        net.run(120)
        self.assertEqual(set(member.caught_up), {s.news, *s.quiet})
        self.assertEqual(_notifications(s.box, member), [])

    def test_one_deposit_per_connection(self) -> None:
        """
        A box takes one deposit per connection (its proof of work is bound
        to the connection): a second is refused, whatever the first became.
        """
        s = _Setup(quiet=0)
        responder = _Responder(s.box, None)  # type: ignore[arg-type]
        first = Deferred.fromCoroutine(
            responder.notify_deposit(s.member.local.public_key, b"short", bytes(8))
        )
        error = self.assertRaises(DepositRefused, s.net.result, first)
        self.assertIn(f"has {ITEM_SIZE} bytes", str(error))
        second = Deferred.fromCoroutine(
            responder.notify_deposit(s.member.local.public_key, bytes(ITEM_SIZE), bytes(8))
        )
        error = self.assertRaises(DepositRefused, s.net.result, second)
        self.assertIn("one deposit per connection", str(error))

    def test_box_learns_nothing(self) -> None:
        """
        What a box holds of a notification is an item of fixed size in which
        neither the group's ID, nor the owner's, nor the index appears; and
        it was deposited by a peer whose ID is not the owner's.
        """
        s = _Setup(quiet=0)
        net = s.net
        seen: list[object] = []
        original = _notify_side.NotifySide.box_deposit

        async def box_deposit(self, connection, recipient, item, nonce):  # type: ignore[no-untyped-def]
            seen.append(connection.peer_id)
            await original(self, connection, recipient, item, nonce)

        self.patch(_notify_side.NotifySide, "box_deposit", box_deposit)
        net.down("member")
        net.result(net.result(s.owner.publish(s.news, "hello")).transmitted)
        net.clock.run_until(lambda: len(_notifications(s.box, s.member)) == 1, limit=600)
        [item] = _notifications(s.box, s.member)
        self.assertEqual(len(item), ITEM_SIZE)
        for secret in (s.news, s.owner.local.public_key):
            self.assertNotIn(secret, item)
        self.assertEqual(len(seen), 1)
        self.assertNotEqual(seen[0], s.owner.local)


class BoxDatabaseTests(TestCase):
    async def test_database_holds_no_group(self) -> None:
        """
        A box's ``node.db`` holding a deposited notification holds neither
        the group's ID nor the owner's, in the database or its log.
        """
        s = _Setup(quiet=0)
        net = s.net
        net.down("member")
        net.result(net.result(s.owner.publish(s.news, "hello")).transmitted)
        net.clock.run_until(lambda: len(_notifications(s.box, s.member)) == 1, limit=600)
        [item] = _notifications(s.box, s.member)
        data_dir = FilePath(self.mktemp())
        data_dir.makedirs()
        store = await open_sqlite_store(reactor, data_dir, storage_key(s.box.identity))
        await store.commit(RegisterNotifyMember(s.member.local, 1.0))
        await store.commit(DepositNotification(s.member.local, item))
        files = b""
        for name in (DATABASE_NAME, DATABASE_NAME + "-wal"):
            path = data_dir.child(name)
            if path.exists():
                files += path.getContent()
        await store.close()
        self.assertIn(item, files)
        for secret in (s.news, s.owner.local.public_key):
            self.assertNotIn(secret, files)


def _unsolved(box: Any, binding: bytes, recipient: Any, item: bytes, bits: int) -> bytes:
    """
    A nonce that does not make the deposit's proof of work (a fixed one
    would, once in ``2 ** bits`` runs).
    """
    for counter in itertools.count():
        nonce = counter.to_bytes(8, "big")
        try:
            check_deposit(box, binding, recipient, item, nonce, bits)
        except InsufficientWork:
            return nonce
    raise AssertionError("unreachable")
