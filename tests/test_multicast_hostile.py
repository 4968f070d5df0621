"""
Bad input to the multicast service, over the real service on the memory
network: duplicate messages, forged manifests, fragments that do not match
their hash, a far-future index, messages out of order, and a member posing
as the owner.  Each test performs the attack from a peer that proved
membership (the strongest position short of the owner's keys) and shows
that nothing reaches the application or the store.
"""

from __future__ import annotations

import os
from typing import Any

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.multicast import ReceivedMessage, UnicastStrategyPlugin, _context
from digitalspring.multicast._chain import SendingChain
from digitalspring.multicast._commands import GroupNotice, NoticeRefused
from digitalspring.multicast._content import text_content
from digitalspring.multicast._context import MAX_OUT_OF_ORDER
from digitalspring.multicast._epoch import (
    EpochKeys,
    OwnerEpoch,
    invitation_delivery,
    new_epoch_delivery,
    next_epoch,
)
from digitalspring.multicast._manifest import NO_PREVIOUS, decode_manifest, sign_manifest
from digitalspring.multicast._membership import MembershipNotProven
from digitalspring.multicast._message import SealedMessage, seal
from digitalspring.multicast._notices import (
    GroupInvitation,
    encode_invitation,
    encode_neighbours,
    encode_new_epoch,
)
from digitalspring.multicast._unicast import FragmentRefused, UnicastFragment
from digitalspring.storage import Epoch, MemoryStore, StoreLimits
from digitalspring.testing import GroupNetwork


class _Attack:
    """
    A group of an owner and members ``b`` (the attacker, a member) and
    ``c`` (the target), with ``c``'s subscription.
    """

    def __init__(self, c_limits: StoreLimits | None = None) -> None:
        self.net = GroupNetwork({"unicast": UnicastStrategyPlugin()})
        net = self.net
        self.owner, self.b = net.node("owner"), net.node("b")
        self.c = net.node("c", MemoryStore(c_limits))
        self.group_id = net.group(self.owner, self.b, self.c, strategy="unicast")
        self.got: list[ReceivedMessage] = net.subscribe(self.c, self.group_id)

    def send(self, sealed: SealedMessage, number: int = 0, data: bytes | None = None) -> Any:
        """
        ``b`` sends ``c`` a fragment over a connection on which both proved
        membership.
        """
        connection = self.net.result(self.b.proven_connection(self.group_id, self.c.local))
        return self.net.result(
            connection.callRemote(
                UnicastFragment,
                group=self.group_id,
                manifest=sealed.signed_manifest,
                number=number,
                data=sealed.fragments[number] if data is None else data,
            )
        )

    def publish_unseen(self, *texts: str) -> list[SealedMessage]:
        """
        The owner publishes ``texts`` while ``c`` is away, and the messages
        as they were sealed (``c`` gets them only from the attacker).
        """
        self.net.network.take_offline("c")
        sealed = []
        for text in texts:
            report = self.net.result(self.owner.publish(self.group_id, text))
            sealed.append(
                self.net.result(self.owner.sealed_message(self.group_id, 0, report.index))
            )
            self.net.result(report.transmitted)
        self.net.network.bring_online("c")
        return sealed

    def forged(self, text: str) -> SealedMessage:
        """
        The next message as ``b`` can make it: the right chain key (every
        member holds it) but signed with an epoch key of its own.
        """
        epoch = self.net.result(self.b.store.epoch(self.group_id))
        chain = epoch.chain
        assert chain is not None
        keys = EpochKeys(self.group_id, 0, chain.key, os.urandom(32), bytes(32))
        previous = NO_PREVIOUS
        if chain.next_index:
            stored = self.net.result(self.b.store.message(self.group_id, 0, chain.next_index - 1))
            previous = decode_manifest(stored.manifest).hash
        owner = OwnerEpoch(keys, SendingChain(chain.next_index, chain.key), 0, previous)
        sealed, _ = seal(owner, text_content(0, text))
        return sealed

    def c_holds_nothing_more(self, test: SynchronousTestCase, messages: int) -> None:
        """
        ``c`` committed ``messages`` messages, no partial message and no
        fragment, and its application got only those.
        """
        net, c = self.net, self.c
        test.assertEqual(len(self.got), messages)
        test.assertEqual(len(net.result(c.store.history(self.group_id))), messages)
        test.assertEqual(net.result(c.store.partial_messages(self.group_id)), [])
        test.assertEqual(net.result(c.store.epoch(self.group_id)).chain.next_index, messages)


class BadMessageTests(SynchronousTestCase):
    def test_duplicate_message(self) -> None:
        """
        A message delivered again, every fragment of it, is taken as
        nothing new: the application got it once and the store holds it
        once.
        """
        attack = _Attack()
        [sealed] = attack.publish_unseen("once")
        attack.owner.reachable(attack.c.local)
        attack.net.run(5)
        attack.c_holds_nothing_more(self, 1)
        self.assertEqual(attack.send(sealed), {"new": False})
        attack.net.run(5)
        attack.c_holds_nothing_more(self, 1)
        self.assertEqual([m.data for m in attack.got], [b"once"])

    def test_forged_manifest(self) -> None:
        """
        A member that holds the chain key makes the next message, correctly
        encrypted, but cannot sign it with the epoch's key: the target
        refuses the manifest and keeps nothing, and the owner's real next
        message is still read.
        """
        attack = _Attack()
        with self.assertRaises(FragmentRefused):
            attack.send(attack.forged("I am the owner"))
        attack.c_holds_nothing_more(self, 0)
        attack.net.result(
            attack.net.result(attack.owner.publish(attack.group_id, "real")).settled()
        )
        self.assertEqual([m.data for m in attack.got], [b"real"])

    def test_fragment_not_matching_hash(self) -> None:
        """
        A genuine manifest with a fragment changed on the way: the fragment
        is refused before it is stored, the application gets nothing, and
        the genuine fragment is then taken.
        """
        attack = _Attack()
        [sealed] = attack.publish_unseen("genuine")
        # Only the attacker's fragments reach c: the owner, whose catch-up
        # may come as soon as c is reachable again, is away.
        attack.net.network.take_offline("owner")
        bad = bytearray(sealed.fragments[0])
        bad[-1] ^= 1
        with self.assertRaises(FragmentRefused):
            attack.send(sealed, data=bytes(bad))
        net, c = attack.net, attack.c
        self.assertEqual(net.result(c.store.fragments(attack.group_id, 0, 0)), {})
        self.assertEqual(attack.got, [])
        self.assertEqual(attack.send(sealed), {"new": True})
        self.assertEqual([m.data for m in attack.got], [b"genuine"])

    def test_far_future_index_refused_cheaply(self) -> None:
        """
        A manifest whose index is MAX_OUT_OF_ORDER or more ahead of what the
        target has read is refused with one comparison: no signature is
        checked, nothing is stored.
        """
        attack = _Attack()
        genuine = attack.forged("x")
        far = evolve(genuine.manifest, index=MAX_OUT_OF_ORDER)
        signed = sign_manifest(far, os.urandom(32))
        checked: list[bytes] = []
        original = _context.verify_manifest

        def counting(signed: bytes, key: bytes) -> Any:
            checked.append(signed)
            return original(signed, key)

        _context.verify_manifest = counting  # type: ignore[assignment]
        self.addCleanup(setattr, _context, "verify_manifest", original)
        with self.assertRaises(FragmentRefused):
            attack.send(SealedMessage(far, signed, genuine.fragments))
        self.assertEqual(checked, [])
        attack.c_holds_nothing_more(self, 0)

    def test_out_of_order_within_bound_kept(self) -> None:
        """
        Messages 2 and 1 arriving before 0 are kept, as partial messages
        the application does not see; once 0 arrives, all three are
        committed and handed over in order.
        """
        attack = _Attack()
        sealed = attack.publish_unseen("zero", "one", "two")
        for message in (sealed[2], sealed[1]):
            self.assertEqual(attack.send(message), {"new": True})
        net, c = attack.net, attack.c
        waiting = net.result(c.store.partial_messages(attack.group_id))
        self.assertEqual([m.index for m in waiting], [1, 2])
        self.assertEqual(attack.got, [])
        self.assertEqual(attack.send(sealed[0]), {"new": True})
        self.assertEqual([m.data for m in attack.got], [b"zero", b"one", b"two"])
        attack.c_holds_nothing_more(self, 3)


class SenderBoundTests(SynchronousTestCase):
    def test_receive_quota_per_sender(self) -> None:
        """
        Each sender has a receive quota, charged to the message's sender
        (the group's owner, who signed it) whoever forwards its fragments:
        a member sending another member the first fragment of more
        two-fragment messages than the target's
        ``partial_messages_per_peer`` (2 here) gets the one past it
        refused, and the target holds 2 partial messages charged to the
        owner.  Another sender (the member, owner of a group of its own)
        still gets a two-fragment message through, and the owner's own
        delivery completes all three, since a completed message no longer
        counts.
        """
        attack = _Attack(StoreLimits(partial_messages_per_peer=2))
        net, owner, b, c = attack.net, attack.owner, attack.b, attack.c
        sealed = attack.publish_unseen(*(str(i) * 70_000 for i in range(3)))
        self.assertEqual({len(s.fragments) for s in sealed}, {2})
        self.assertEqual(attack.send(sealed[0]), {"new": True})
        self.assertEqual(attack.send(sealed[1]), {"new": True})
        with self.assertRaises(FragmentRefused):
            attack.send(sealed[2])
        partial = net.result(c.store.partial_messages(attack.group_id))
        self.assertEqual(
            [(m.index, m.from_peer) for m in partial], [(0, owner.local), (1, owner.local)]
        )
        self.assertEqual(attack.got, [])

        other = net.group(b, c, strategy="unicast")
        report = net.result(b.publish(other, "b" * 70_000))
        net.result(report.settled())
        [got] = net.result(c.history(other))
        self.assertEqual(got.data, b"b" * 70_000)

        net.run(60)
        self.assertEqual(
            [m.data for m in attack.got], [str(i).encode() * 70_000 for i in range(3)]
        )
        attack.c_holds_nothing_more(self, 3)

    def test_blocked_peer_refused_everything(self) -> None:
        """
        ``block`` refuses everything from a peer, not only its
        invitations: a member that blocks its group's owner gets none of
        the owner's messages (the owner's report keeps it pending) and
        keeps its group when the owner removes it; a member it blocks
        cannot prove membership to it.  Unblocked, the owner's message
        arrives, so the block was all that stopped it.
        """
        attack = _Attack()
        net, owner, b, c, group_id = attack.net, attack.owner, attack.b, attack.c, attack.group_id
        net.result(c.block(owner.local))
        net.result(c.block(b.local))
        report = net.result(owner.publish(group_id, "blocked"))
        net.run(60)
        attack.c_holds_nothing_more(self, 0)
        self.assertEqual(report.pending, frozenset([c.local]))
        with self.assertRaises(MembershipNotProven):
            net.result(b.proven_connection(group_id, c.local))

        net.result(c.unblock(owner.local))
        # On the owner's next retry (jittered, minutes at most).
        net.result(report.settled(), limit=3600)
        self.assertEqual([m.data for m in attack.got], [b"blocked"])
        self.assertEqual(report.pending, frozenset())

        net.result(c.block(owner.local))
        net.result(owner.remove_member(group_id, c.local))
        net.run(60)
        self.assertEqual(net.result(c.store.group(group_id)).state, "active")


class PosingAsOwnerTests(SynchronousTestCase):
    def test_member_claiming_to_be_owner(self) -> None:
        """
        A member sending another member what only the owner sends -- new
        neighbours, a removal, and an invitation into the same group with
        itself as owner -- and new epoch keys, is refused each time; the target's group, its
        neighbours and keys are unchanged, and a message it signs as the
        owner is refused (test_forged_manifest).
        """
        attack = _Attack()
        net, b, c, group_id = attack.net, attack.b, attack.c, attack.group_id
        before = (
            net.result(c.store.group(group_id)),
            net.result(c.store.neighbours(group_id)),
            net.result(c.store.epoch(group_id)),
        )
        connection = net.result(b.pool.connect(c.local))
        epoch = net.result(b.store.epoch(group_id))
        posing = _posing_owner(epoch)
        invitation = GroupInvitation(
            group_id, "mine", "unicast", 6, frozenset(), invitation_delivery(posing)
        )
        for kind, payload in [
            ("epoch", encode_new_epoch(new_epoch_delivery(next_epoch(posing, 0)))),
            ("neighbours", encode_neighbours(group_id, frozenset([b.local]))),
            ("remove", group_id),
            ("invite", encode_invitation(invitation)),
        ]:
            with self.assertRaises(NoticeRefused):
                net.result(connection.callRemote(GroupNotice, kind=kind, payload=payload))
        after = (
            net.result(c.store.group(group_id)),
            net.result(c.store.neighbours(group_id)),
            net.result(c.store.epoch(group_id)),
        )
        self.assertEqual(after, before)
        self.assertEqual(net.result(c.invitations()), [])


def _posing_owner(epoch: Epoch) -> OwnerEpoch:
    """
    The owner's state as a member can make it up: the chain key it holds,
    an epoch key of its own.
    """
    assert epoch.chain is not None
    keys = EpochKeys(epoch.group_id, epoch.epoch, epoch.chain.key, os.urandom(32), bytes(32))
    return OwnerEpoch(keys, SendingChain(0, epoch.chain.key), 0, NO_PREVIOUS)
