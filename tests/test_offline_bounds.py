"""
What a peer can make a node do through offline delivery (issue 12), bounded
per peer and in total: key bundles, ``group-sealed`` requests and a
notification box's register and collect are paced, and sealed items at a
mailbox last no longer than its retention.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from digitalspring._ratelimit import Rate
from digitalspring.multicast import MulticastService, UnicastStrategyPlugin
from digitalspring.multicast._commands import PeerBusy
from digitalspring.multicast._notices import INVITATION, KEY_BUNDLE, NEW_EPOCH, SEALED
from digitalspring.multicast._prekeys import encode_bundle, seal
from digitalspring.multicast._rates import RequestLimiter, RequestRates
from digitalspring.storage import NotStored, StoreLimits
from digitalspring.testing._strategy import GroupNetwork

DAY = 24 * 3600


def _network() -> tuple[GroupNetwork, MulticastService, list[MulticastService], bytes]:
    net = GroupNetwork({"unicast": UnicastStrategyPlugin()})
    owner = net.node("owner")
    members = [net.node(f"m{i}") for i in range(3)]
    group_id = net.group(owner, *members, strategy="unicast")
    net.run(10)
    return net, owner, members, group_id


def _pace(net: GroupNetwork, service: MulticastService, **rates: Rate) -> None:
    service._request_rates = RequestLimiter(net.clock, RequestRates(**rates))


class KeyBundleRateTests(SynchronousTestCase):
    """
    Key bundles cost the owner a signature check and a write each.
    """

    def _give(self, net: GroupNetwork, owner: Any, member: Any, group_id: bytes) -> Deferred[Any]:
        bundle = net.result(Deferred.fromCoroutine(member.prekeys.bundle(owner.local, 0)))
        payload = group_id + encode_bundle(bundle)
        return Deferred.fromCoroutine(owner.receive_notice(member.local, KEY_BUNDLE, payload))

    def test_bundles_of_one_member_paced(self) -> None:
        """
        A member that sends bundles as fast as it can gets its burst taken,
        then BUSY before anything is read, until its bucket refills; the
        other members' are taken meanwhile.
        """
        net, owner, members, group_id = _network()
        _pace(net, owner, bundle_peer=Rate(3, 1 / 60))
        for _ in range(3):
            self.successResultOf(self._give(net, owner, members[0], group_id))
        for _ in range(5):
            self.failureResultOf(self._give(net, owner, members[0], group_id), PeerBusy)
        self.successResultOf(self._give(net, owner, members[1], group_id))
        net.run(61)
        self.successResultOf(self._give(net, owner, members[0], group_id))
        self.failureResultOf(self._give(net, owner, members[0], group_id), PeerBusy)

    def test_bundles_of_all_members_paced(self) -> None:
        """
        Members together get no more taken than the total rate.
        """
        net, owner, members, group_id = _network()
        _pace(net, owner, bundle_total=Rate(2, 0.5))
        self.successResultOf(self._give(net, owner, members[0], group_id))
        self.successResultOf(self._give(net, owner, members[1], group_id))
        self.failureResultOf(self._give(net, owner, members[2], group_id), PeerBusy)
        net.run(2)
        self.successResultOf(self._give(net, owner, members[2], group_id))

    def test_busy_bundle_waits_in_outbox(self) -> None:
        """
        A bundle the owner answers BUSY is not dropped: it stays in the
        member's outbox and goes on its retry schedule.
        """
        net, owner, members, group_id = _network()
        _pace(net, owner, bundle_peer=Rate(1, 1 / 60))
        first = net.result(owner.store.bundle(members[0].local)).serial
        net.result(Deferred.fromCoroutine(members[0].give_bundle(owner.local, group_id)))
        net.run(1)
        net.result(Deferred.fromCoroutine(members[0].give_bundle(owner.local, group_id)))
        net.run(1)
        waiting = net.result(members[0].store.outbox(owner.local))
        self.assertEqual([e.kind for e in waiting], [KEY_BUNDLE])
        # Tried again at 30 s (too soon for its bucket), then 120 s later.
        net.run(200)
        self.assertEqual(net.result(members[0].store.outbox(owner.local)), [])
        self.assertEqual(net.result(owner.store.bundle(members[0].local)).serial, first + 2)


class SealedBoundsTests(SynchronousTestCase):
    """
    ``group-sealed`` needs no membership proof (the member may not hold
    the epoch): any peer can ask it, at a bounded rate.
    """

    def _mailbox(self, retention: float = 30 * DAY) -> tuple[GroupNetwork, Any, Any, bytes]:
        net, owner, _members, group_id = _network()
        box = net.node("box", mailbox=StoreLimits())
        net.add_mailbox(owner, group_id, box, retention=retention)
        net.run(60)
        return net, owner, box, group_id

    def test_sealed_requests_paced(self) -> None:
        """
        One peer's requests are answered up to its burst, then BUSY until
        its bucket refills; another peer is answered meanwhile, until the
        total is spent.
        """
        net, _owner, box, group_id = self._mailbox()
        _pace(net, box, sealed_peer=Rate(4, 1.0), sealed_total=Rate(6, 1.0))
        asker, other = net.services["m0"].local, net.services["m1"].local
        for _ in range(4):
            self.assertEqual(
                self.successResultOf(Deferred.fromCoroutine(box.give_sealed(asker, group_id))), b""
            )
        self.failureResultOf(Deferred.fromCoroutine(box.give_sealed(asker, group_id)), PeerBusy)
        for _ in range(2):
            self.successResultOf(Deferred.fromCoroutine(box.give_sealed(other, group_id)))
        self.failureResultOf(Deferred.fromCoroutine(box.give_sealed(other, group_id)), PeerBusy)
        net.run(1)
        self.successResultOf(Deferred.fromCoroutine(box.give_sealed(asker, group_id)))

    def test_sealed_items_kept_for_the_retention(self) -> None:
        """
        A sealed item the owner left at a mailbox is deleted once the
        group's retention is up, as its messages are, and not before.
        """
        net, owner, box, group_id = self._mailbox(retention=2 * DAY)
        m0 = net.services["m0"]
        now = int(net.clock.seconds())
        signed, one_time = net.result(
            Deferred.fromCoroutine(owner.bundles.prekeys(m0.local, now, 30 * DAY))
        )
        item = seal(owner.identity, m0.local, signed, one_time, group_id, 1, NEW_EPOCH, b"k")
        payload = group_id + m0.local.public_key + item
        net.result(Deferred.fromCoroutine(box.receive_notice(owner.local, SEALED, payload)))
        net.run(2 * DAY - 60)
        self.assertEqual(net.result(box.store.sealed(group_id, m0.local, 10)), [item])
        net.run(120)
        self.assertEqual(net.result(box.store.sealed(group_id, m0.local, 10)), [])
        self.assertIsNone(net.result(box.store.next_expiry()))


class BoxRateTests(SynchronousTestCase):
    """
    A notification box's register and collect each cost a write.
    """

    def test_box_requests_paced(self) -> None:
        """
        A member registering and collecting as fast as it can is answered
        up to its burst, then BUSY until its bucket refills; all members
        together no more than the total.
        """
        net = GroupNetwork({"unicast": UnicastStrategyPlugin()})
        box = net.node("box", notify_box=4)
        members = [net.node(f"m{i}") for i in range(3)]
        _pace(net, box, box_peer=Rate(3, 0.1), box_total=Rate(5, 1.0))
        m0, m1 = members[0].local, members[1].local
        net.result(Deferred.fromCoroutine(box.box_register(m0, True)))
        for _ in range(2):
            net.result(Deferred.fromCoroutine(box.box_collect(m0)))
        self.failureResultOf(Deferred.fromCoroutine(box.box_collect(m0)), PeerBusy)
        self.failureResultOf(Deferred.fromCoroutine(box.box_register(m0, False)), PeerBusy)
        net.result(Deferred.fromCoroutine(box.box_register(m1, True)))
        net.result(Deferred.fromCoroutine(box.box_collect(m1)))
        self.failureResultOf(Deferred.fromCoroutine(box.box_collect(m1)), PeerBusy)
        net.run(10)
        net.result(Deferred.fromCoroutine(box.box_collect(m0)))


class OfflineInvitationTests(SynchronousTestCase):
    def test_invitation_waits_in_outbox_until_online(self) -> None:
        """
        An invitation to a peer that never gave the owner a bundle is not
        sealed at the group's mailbox (there is nothing to seal it to): it
        waits in the owner's outbox, however long the peer is away, and
        goes once the peer connects; the peer joins and gives its bundle.
        """
        net, owner, _members, group_id = _network()
        box = net.node("box", mailbox=StoreLimits())
        net.add_mailbox(owner, group_id, box)
        net.run(60)
        newcomer = net.node("newcomer")
        net.down("newcomer")
        net.result(owner.add_member(group_id, newcomer.local))
        net.run(DAY)
        waiting = net.result(owner.store.outbox(newcomer.local))
        self.assertEqual([e.kind for e in waiting], [INVITATION])
        self.assertEqual(net.result(box.store.sealed(group_id, newcomer.local, 10)), [])
        self.failureResultOf(owner.store.bundle(newcomer.local), NotStored)
        newcomer = net.up("newcomer")
        net.result(newcomer.pool.connect(owner.local))
        net.run(10)
        self.assertEqual(net.result(owner.store.outbox(newcomer.local)), [])
        self.assertEqual(net.result(newcomer.store.group(group_id)).state, "active")
        net.result(owner.store.bundle(newcomer.local))
