"""
Mailboxes (issue 12): what an owner tells a mailbox and its members (the
encodings), and what a mailbox does in a group on the memory network.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.identity import Identity, PeerID
from digitalspring.multicast import (
    EPOCH_MAX_MESSAGES,
    CloseStatement,
    GroupAccess,
    MailboxEpoch,
    MalformedDelivery,
    ManifestOutOfChain,
    MulticastService,
    SpringStrategyPlugin,
    UnicastStrategyPlugin,
    start_group,
)
from digitalspring.multicast._commands import MAX_NOTICE_SIZE
from digitalspring.multicast._epoch import (
    MAX_MAILBOX_DELIVERY_SIZE,
    MailboxDelivery,
    decode_mailbox_delivery,
    encode_mailbox_delivery,
    invitation_delivery,
    mailbox_epoch_delivery,
    mailbox_invitation_delivery,
    next_epoch,
)
from digitalspring.multicast._notices import (
    MAX_MAILBOXES,
    MAX_RETENTION,
    GroupInvitation,
    MailboxInvitation,
    MalformedNotice,
    decode_invitation,
    decode_mailbox_epoch,
    decode_mailbox_invitation,
    decode_mailboxes,
    encode_invitation,
    encode_mailbox_epoch,
    encode_mailbox_invitation,
    encode_mailboxes,
)
from digitalspring.storage import StoreLimits
from digitalspring.testing import GroupNetwork

GROUP = bytes(range(32))
NOW = 1_700_000_000

keys32 = st.binary(min_size=32, max_size=32)
peers = st.builds(lambda seed: Identity.from_seed(seed).peer_id, keys32)


@st.composite
def mailbox_deliveries(draw: st.DrawFn) -> MailboxDelivery:
    epoch = draw(st.integers(0, 2**32))
    close = None
    if epoch and draw(st.booleans()):
        close = CloseStatement(
            GROUP, epoch - 1, draw(st.integers(0, EPOCH_MAX_MESSAGES)), draw(keys32)
        )
    return MailboxDelivery(
        MailboxEpoch(GroupAccess(GROUP, epoch, draw(keys32)), draw(keys32)),
        draw(st.integers(0, EPOCH_MAX_MESSAGES)),
        close,
    )


class MailboxDeliveryTests(SynchronousTestCase):
    """
    A mailbox's key delivery: the access key and the signing public key,
    never a chain key or a signing secret.
    """

    @given(mailbox_deliveries())
    def test_round_trip(self, delivery: MailboxDelivery) -> None:
        """
        Any mailbox delivery encodes to at most its bound and decodes to
        itself.
        """
        data = encode_mailbox_delivery(delivery)
        self.assertLessEqual(len(data), MAX_MAILBOX_DELIVERY_SIZE)
        self.assertEqual(decode_mailbox_delivery(data), delivery)

    @given(mailbox_deliveries(), st.data())
    def test_bit_flips(self, delivery: MailboxDelivery, data: st.DataObject) -> None:
        """
        A mailbox delivery with one bit flipped is refused, or is another
        one in canonical form (a flip inside a key).
        """
        encoded = encode_mailbox_delivery(delivery)
        bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
        flipped = bytearray(encoded)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            other = decode_mailbox_delivery(bytes(flipped))
        except MalformedDelivery:
            return
        self.assertEqual(encode_mailbox_delivery(other), bytes(flipped))

    def test_no_secret_of_the_epoch(self) -> None:
        """
        What the owner gives a mailbox holds the access key and the
        signing public key, and none of the chain key or signing seed.
        """
        owner = start_group(GROUP, NOW)
        for delivery in (
            mailbox_invitation_delivery(owner),
            mailbox_epoch_delivery(next_epoch(next_epoch(owner, NOW), NOW)),
        ):
            encoded = encode_mailbox_delivery(delivery)
            self.assertIn(delivery.mailbox.access.access_key, encoded)
            self.assertIn(delivery.mailbox.signing_public_key, encoded)
        encoded = encode_mailbox_delivery(mailbox_invitation_delivery(owner))
        self.assertNotIn(owner.keys.chain_key, encoded)
        self.assertNotIn(owner.keys.signing_seed, encoded)
        later = next_epoch(next_epoch(owner, NOW), NOW)
        encoded = encode_mailbox_delivery(mailbox_epoch_delivery(later))
        self.assertNotIn(later.keys.chain_key, encoded)
        assert later.revealed_seed is not None
        self.assertNotIn(later.revealed_seed, encoded)
        self.assertEqual(mailbox_epoch_delivery(later).close, later.close)

    def test_truncated_trailing_and_close_before_zero_refused(self) -> None:
        """
        A truncated delivery, one with bytes after it, and one closing an
        epoch before epoch 0 are refused.
        """
        encoded = encode_mailbox_delivery(mailbox_invitation_delivery(start_group(GROUP, NOW)))
        for bad in (encoded[:-1], encoded + b"\0", encoded[:-1] + b"\1\0" + bytes(32)):
            self.assertRaises(MalformedDelivery, decode_mailbox_delivery, bad)


class MailboxNoticeTests(SynchronousTestCase):
    """
    The notices of mailboxes: a mailbox's invitation and new epochs, and
    the list of mailboxes the members get.
    """

    @given(
        mailbox_deliveries(),
        st.frozensets(peers, max_size=64),
        st.integers(1, 64),
        st.integers(1, MAX_RETENTION),
    )
    def test_invitation_round_trip(
        self,
        delivery: MailboxDelivery,
        neighbours: frozenset[PeerID],
        degree: int,
        retention: int,
    ) -> None:
        """
        A mailbox's invitation decodes to itself, within a notice's bound.
        """
        invitation = MailboxInvitation(GROUP, "spring", degree, neighbours, retention, delivery)
        data = encode_mailbox_invitation(invitation)
        self.assertLessEqual(len(data), MAX_NOTICE_SIZE)
        self.assertEqual(decode_mailbox_invitation(data), invitation)

    @given(mailbox_deliveries())
    def test_epoch_round_trip(self, delivery: MailboxDelivery) -> None:
        """
        A mailbox's new-epoch notice decodes to itself.
        """
        self.assertEqual(decode_mailbox_epoch(encode_mailbox_epoch(delivery)), delivery)

    @given(st.frozensets(peers, max_size=MAX_MAILBOXES))
    def test_mailboxes_round_trip(self, mailboxes: frozenset[PeerID]) -> None:
        """
        A mailboxes notice decodes to its group and mailboxes.
        """
        self.assertEqual(decode_mailboxes(encode_mailboxes(GROUP, mailboxes)), (GROUP, mailboxes))

    def test_invitation_names_mailboxes(self) -> None:
        """
        A member's invitation into a group with mailboxes names them (its
        version 2); one into a group without is as version 1 wrote it, and
        a version 2 naming none is not canonical.
        """
        delivery = invitation_delivery(start_group(GROUP, NOW))
        box = Identity.from_seed(bytes(32)).peer_id
        plain = GroupInvitation(GROUP, "g", "spring", 6, frozenset(), delivery)
        boxed = GroupInvitation(GROUP, "g", "spring", 6, frozenset(), delivery, frozenset({box}))
        self.assertEqual(encode_invitation(plain)[32], 1)
        self.assertEqual(encode_invitation(boxed)[32], 2)
        for invitation in (plain, boxed):
            self.assertEqual(decode_invitation(encode_invitation(invitation)), invitation)
        two = bytearray(encode_invitation(plain) + b"\0")
        two[32] = 2
        self.assertRaises(MalformedNotice, decode_invitation, bytes(two))

    def test_invitation_naming_too_many_mailboxes(self) -> None:
        """
        An invitation naming more mailboxes than a group has is malformed
        (it raised ValueError, which AMP answers as an unknown error, with
        a traceback logged for each such notice).
        """
        delivery = invitation_delivery(start_group(GROUP, NOW))
        box = Identity.from_seed(bytes(32)).peer_id
        boxed = GroupInvitation(GROUP, "g", "spring", 6, frozenset(), delivery, frozenset({box}))
        many = sorted(
            Identity.from_seed(bytes([n]) * 32).peer_id.public_key
            for n in range(MAX_MAILBOXES + 1)
        )
        encoded = encode_invitation(boxed)
        too_many = encoded[:-33] + bytes([len(many)]) + b"".join(many)
        self.assertRaises(MalformedNotice, decode_invitation, too_many)

    def test_refused(self) -> None:
        """
        More mailboxes than a group has, a retention of 0 or past a year,
        keys of another group, and damaged notices are refused.
        """
        many = frozenset(
            Identity.from_seed(bytes([n]) * 32).peer_id for n in range(MAX_MAILBOXES + 1)
        )
        self.assertRaises(ValueError, encode_mailboxes, GROUP, many)
        self.assertRaises(
            MalformedNotice,
            decode_mailboxes,
            GROUP + b"\1" + bytes([len(many)]) + b"".join(sorted(p.public_key for p in many)),
        )
        delivery = mailbox_invitation_delivery(start_group(GROUP, NOW))
        for retention in (0, MAX_RETENTION + 1):
            invitation = MailboxInvitation(GROUP, "spring", 6, frozenset(), retention, delivery)
            self.assertRaises(ValueError, encode_mailbox_invitation, invitation)
        other = mailbox_invitation_delivery(start_group(bytes(32), NOW))
        encoded = encode_mailbox_invitation(
            MailboxInvitation(bytes(32), "spring", 6, frozenset(), 60, other)
        )
        self.assertRaises(MalformedNotice, decode_mailbox_invitation, GROUP + encoded[32:])
        for bad in (b"\0" * 40, GROUP + b"\1", encode_mailbox_epoch(delivery) + b"\0"):
            self.assertRaises(MalformedNotice, decode_mailbox_epoch, bad)


def _network(strategy: str = "spring") -> GroupNetwork:
    plugins = {"spring": SpringStrategyPlugin(), "unicast": UnicastStrategyPlugin()}
    return GroupNetwork(plugins)


SERVING = StoreLimits()


class MailboxGroupTests(SynchronousTestCase):
    """
    A mailbox in a group: what it gets, holds, forwards and deletes.
    """

    def _group(
        self, strategy: str = "spring", members: int = 3, **kw: Any
    ) -> tuple[GroupNetwork, MulticastService, list[MulticastService], MulticastService, bytes]:
        net = _network()
        owner = net.node("owner")
        others = [net.node(f"m{i}") for i in range(members)]
        box = net.node("box", mailbox=kw.pop("limits", SERVING))
        group_id = net.group(owner, *others, strategy=strategy)
        net.add_mailbox(owner, group_id, box, **kw)
        return net, owner, others, box, group_id

    def _held(self, net: GroupNetwork, box: MulticastService, group_id: bytes) -> list[Any]:
        return list(net.result(box.store.held_after(group_id, (-1, -1), 1000)))

    def test_holds_ciphertext_and_no_content_key(self) -> None:
        """
        A mailbox of a spring group gets the access key and the signing
        public key and no chain key or signing secret; it holds each
        message whole as the owner's ciphertext fragments and its signed
        manifest, with no content; it acknowledges each (the owner's report
        counts it), and the members still get every message.
        """
        for strategy in ("spring", "unicast"):
            net, owner, members, box, group_id = self._group(strategy)
            got = [net.subscribe(m, group_id) for m in members]
            boxed = net.subscribe(box, group_id)
            sent = [b"hello", bytes(range(256)) * 800]
            for data in sent:
                report = net.result(owner.publish(group_id, data, "f.bin"))
                net.result(report.settled())
                self.assertEqual(
                    report.committed, frozenset({box.local, *(m.local for m in members)})
                )
            epoch = net.result(box.store.epoch(group_id))
            self.assertEqual((epoch.chain, epoch.signing_secret), (None, None))
            self.assertEqual(epoch.access_key, net.result(owner.store.epoch(group_id)).access_key)
            group = net.result(box.store.group(group_id))
            self.assertEqual((group.role, group.owner, group.name), ("mailbox", owner.local, ""))
            held = self._held(net, box, group_id)
            self.assertEqual(
                [(h.index, h.state) for h in held], [(0, "complete"), (1, "complete")]
            )
            for h in held:
                sealed = net.result(owner.sealed_message(group_id, 0, h.index))
                self.assertEqual(h.manifest, sealed.signed_manifest)
                kept = net.result(box.store.fragments(group_id, 0, h.index))
                self.assertEqual([kept[n] for n in sorted(kept)], list(sealed.fragments))
                stored = net.result(box.store.message(group_id, 0, h.index))
                self.assertEqual((stored.content, stored.message_key), (None, None))
            self.assertEqual(boxed, [])
            for messages in got:
                self.assertEqual([m.data for m in messages], sent)

    def test_node_not_serving_refuses(self) -> None:
        """
        A node that does not serve as a mailbox refuses to be one: it keeps
        nothing of the group, and the owner's member list says it never
        took the invitation.
        """
        net = _network()
        owner, member, other = net.node("owner"), net.node("m"), net.node("other")
        group_id = net.group(owner, member, strategy="spring")
        net.result(owner.add_member(group_id, other.local, "mailbox"))
        net.run(60)
        self.assertEqual(net.result(other.store.groups()), [])
        shown = net.result(owner.show(group_id))
        self.assertEqual(
            [(m["role"], m["status"]) for m in shown["members"] if m["peer"] == str(other.local)],
            [("mailbox", "invited")],
        )

    def test_forwards_during_transmissions(self) -> None:
        """
        A mailbox is a vertex of the neighbour graph like any member, and
        in a spring transmission it serves fragments to members, through
        its upload budget.
        """
        net, owner, _members, box, group_id = self._group(members=8)
        edges = net.result(owner.store.edges(group_id))
        self.assertTrue(any(box.local in e for e in edges))
        self.assertTrue(net.result(box.store.neighbours(group_id)))
        for _ in range(3):
            report = net.result(owner.publish(group_id, bytes(200_000), "f.bin"))
            net.result(report.settled())
        strategy = net.result(box.strategy_of(group_id))
        self.assertGreater(strategy.budget.granted, 0)

    def test_members_know_the_mailboxes(self) -> None:
        """
        Every member is told the group's mailboxes, a member added later
        too; a mailbox removed is taken off the lists, the epoch ends (the
        other mailbox gets the new access key, not a content key), and the
        removed one deletes all it held of the group.
        """
        net, owner, members, box, group_id = self._group()
        second = net.node("box2", mailbox=SERVING)
        net.add_mailbox(owner, group_id, second)
        late = net.node("late")
        net.result(owner.add_member(group_id, late.local))
        net.run(30)
        for member in [*members, late]:
            self.assertEqual(
                net.result(member.store.mailboxes(group_id)),
                frozenset({box.local, second.local}),
            )
        net.result(net.result(owner.publish(group_id, b"kept")).settled())
        net.result(owner.remove_member(group_id, box.local))
        net.run(30)
        for member in [*members, late]:
            self.assertEqual(
                net.result(member.store.mailboxes(group_id)), frozenset({second.local})
            )
        self.assertEqual(net.result(box.store.groups()), [])
        epoch = net.result(second.store.epoch(group_id))
        self.assertEqual((epoch.epoch, epoch.chain), (1, None))
        self.assertEqual(epoch.access_key, net.result(owner.store.epoch(group_id)).access_key)
        self.assertIsNone(net.result(second.store.epoch(group_id, 0)).access_key)
        report = net.result(owner.publish(group_id, b"after"))
        net.result(report.settled())
        self.assertIn(second.local, report.committed)
        self.assertEqual(
            [(h.epoch, h.index) for h in self._held(net, second, group_id)], [(0, 0), (1, 0)]
        )

    def test_member_accepting_later_knows_the_mailboxes(self) -> None:
        """
        A member invited into a group with a mailbox, who accepts only
        later (the owner is no contact of it), learns the mailbox from its
        invitation.
        """
        net, owner, _members, box, group_id = self._group()
        net.contacts = False
        late = net.node("late")
        net.result(owner.add_member(group_id, late.local))
        net.run(30)
        net.result(late.accept_invitation(owner.local, group_id))
        self.assertEqual(net.result(late.store.mailboxes(group_id)), frozenset({box.local}))

    def test_deletes_after_retention(self) -> None:
        """
        A mailbox deletes each message once the owner's retention is up,
        and holds no timer once it holds nothing; a message it deleted is
        not stored again when it is offered again.
        """
        net, owner, _members, box, group_id = self._group(retention=3600)
        net.result(net.result(owner.publish(group_id, b"first")).settled())
        net.run(1800)
        net.result(net.result(owner.publish(group_id, b"second")).settled())
        self.assertEqual([h.index for h in self._held(net, box, group_id)], [0, 1])
        net.run(1801)
        self.assertEqual([h.index for h in self._held(net, box, group_id)], [1])
        net.run(1800)
        self.assertEqual(self._held(net, box, group_id), [])
        self.assertIsNone(box._expiry)
        sealed = net.result(owner.sealed_message(group_id, 0, 0))
        context = net.result(box.context(group_id))
        with self.assertRaises(ManifestOutOfChain):
            net.result(context.accept_manifest(sealed.signed_manifest))
        self.assertEqual(self._held(net, box, group_id), [])
        net.run(net.idle_timeout * 3)
        self.assertEqual(net.clock.getDelayedCalls(), [])

    def test_does_not_store_again(self) -> None:
        """
        A manifest or fragment the mailbox holds, offered again (another
        activation, a catch-up, a replay), is not stored again: the answer
        says it was not new and the store holds what it held.
        """
        net, owner, _members, box, group_id = self._group()
        net.result(net.result(owner.publish(group_id, bytes(150_000), "f.bin")).settled())
        sealed = net.result(owner.sealed_message(group_id, 0, 0))
        before = net.result(box.mailbox_status())
        context = net.result(box.context(group_id))
        manifest = net.result(context.accept_manifest(sealed.signed_manifest))
        for number, fragment in enumerate(sealed.fragments):
            self.assertFalse(net.result(context.accept_fragment(manifest, number, fragment)))
        report = net.result(owner.report(group_id, 0, 0))
        net.result(Deferred.fromCoroutine(owner.catch_up(box.local, group_id)))
        net.run(60)
        self.assertEqual(net.result(box.mailbox_status()), before)
        self.assertEqual(report.pending, frozenset())

    def test_quotas(self) -> None:
        """
        A mailbox holds no more of a group than its quota per group: the
        message past it is refused, never acknowledged (the owner's report
        shows the mailbox pending), while the members get it; its status
        names the quotas and what it holds.
        """
        limits = StoreLimits(mailbox_bytes_per_group=400_000)
        net, owner, members, box, group_id = self._group(limits=limits)
        reports = []
        for _ in range(4):
            report = net.result(owner.publish(group_id, bytes(150_000), "f.bin"))
            reports.append(report)
            net.run(120)
        held = self._held(net, box, group_id)
        status = net.result(box.mailbox_status())
        self.assertLessEqual(status["bytes"], 400_000)
        self.assertEqual([h.index for h in held if h.state == "complete"], [0, 1])
        self.assertEqual(status["quotas"]["bytes_per_group"], 400_000)
        self.assertEqual(
            [(g["group"], g["messages"]) for g in status["groups"]], [(group_id.hex(), len(held))]
        )
        for report in reports[2:]:
            self.assertEqual(report.pending, frozenset({box.local}))
        for member in members:
            self.assertEqual(len(net.result(member.history(group_id))), 4)

    def test_groups_per_owner_bounded(self) -> None:
        """
        An owner cannot make a mailbox serve more groups than its bound:
        the invitation past it is refused, and nothing of it kept.
        """
        limits = StoreLimits(mailbox_groups_per_owner=2)
        net = _network()
        owner, box = net.node("owner"), net.node("box", mailbox=limits)
        groups = [net.result(owner.create_group(f"g{n}")) for n in range(3)]
        for group_id in groups:
            net.result(owner.add_member(group_id, box.local, "mailbox"))
        net.run(60)
        served = {g.group_id for g in net.result(box.store.groups())}
        self.assertEqual(len(served), 2)
        self.assertLessEqual(served, set(groups))
