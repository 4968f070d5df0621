"""
Tests of the multicast service on the memory network and a simulated
clock: owner operations, epochs on removal and departure, the outbox for
offline members, consent, blocking, membership proofs, notices and idle
cost.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from digitalspring.channel import ISecureChannel
from digitalspring.identity import Identity
from digitalspring.multicast import (
    FRAGMENT_SIZE,
    EpochKeys,
    GroupAccess,
    GroupError,
    IStrategyContext,
    IStrategyRouter,
    MembershipNotProven,
    MulticastService,
    NotOwner,
    SpringStrategyPlugin,
    UnicastStrategyPlugin,
    UnknownStrategy,
    _epoch,
    make_proof,
)
from digitalspring.multicast._commands import GroupNotice, NoticeRefused, ProveMembership
from digitalspring.multicast._membership import Role
from digitalspring.multicast._notices import (
    ACK_MAC_SIZE,
    ACKNOWLEDGEMENT,
    MalformedNotice,
    acknowledgement_key,
    acknowledgement_valid,
    decode_acknowledgement,
    decode_invitation,
    make_acknowledgement,
)
from digitalspring.multicast._spring_wire import SpringHave, SpringRefused
from digitalspring.storage import (
    AddFragment,
    Change,
    CommitReceived,
    MemoryStore,
    StartMessage,
    StoreClosed,
)
from digitalspring.testing import GroupNetwork


def network() -> GroupNetwork:
    return GroupNetwork({"unicast": UnicastStrategyPlugin(), "spring": SpringStrategyPlugin()})


class OwnerOperationTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """
        The service is a verified IStrategyRouter and its group contexts
        verified IStrategyContexts.
        """
        net = network()
        owner, member = net.node("owner"), net.node("member")
        group_id = net.group(owner, member, strategy="unicast")
        verifyObject(IStrategyRouter, owner)
        verifyObject(IStrategyContext, net.result(owner.context(group_id)))
        verifyObject(IStrategyContext, net.result(member.context(group_id)))

    def test_create_list_show(self) -> None:
        """
        A created group has a random 32-byte ID, its name and strategy; it
        is listed, and show gives its members, epoch and neighbours.
        """
        net = network()
        owner, a, b = net.node("owner"), net.node("a"), net.node("b")
        group_id = net.group(owner, a, b, strategy="unicast")
        self.assertEqual(len(group_id), 32)
        net.run(1)
        [group] = net.result(owner.group_list())
        self.assertEqual(
            (group.name, group.strategy, group.role), ("test group", "unicast", "owner")
        )
        shown = net.result(owner.show(group_id))
        self.assertEqual(shown["epoch"], 0)
        self.assertEqual(
            sorted(m["peer"] for m in shown["members"]), sorted([str(a.local), str(b.local)])
        )
        self.assertEqual({m["status"] for m in shown["members"]}, {"active"})
        self.assertEqual(net.result(a.show(group_id))["neighbours"], [str(b.local)])

    def test_member_knows_neighbours_not_the_group(self) -> None:
        """
        A member knows its neighbours and whom it meets, not the whole
        group: in a group of 10 members of degree 3, each member's store
        holds no member list and 3 neighbours, and ``show`` at a member
        gives those alone; the owner alone holds the 10 members.
        """
        net = network()
        owner = net.node("owner")
        members = [net.node(f"m{i}") for i in range(10)]
        group_id = net.result(owner.create_group("g", "unicast", 3))
        for member in members:
            net.result(owner.add_member(group_id, member.local))
        net.run(30)
        self.assertEqual(len(net.result(owner.store.members(group_id))), 10)
        everyone = {m.local for m in members}
        for member in members:
            self.assertEqual(net.result(member.store.members(group_id)), [])
            neighbours = net.result(member.store.neighbours(group_id))
            self.assertEqual(len(neighbours), 3)
            self.assertLess(neighbours, everyone - {member.local})
            shown = net.result(member.show(group_id))
            self.assertNotIn("members", shown)
            self.assertEqual(shown["neighbours"], sorted(str(p) for p in neighbours))

    def test_padded_to_a_bucket_on_the_wire(self) -> None:
        """
        Contents are padded to size buckets: texts of 1 and 40 bytes, and
        of 1,000,000 and 1,010,000 bytes, make manifests with the same
        padded size and fragments of the same sizes, so a forwarder
        learns a bucket, not a length.
        """
        net = network()
        owner, b = net.node("owner"), net.node("b")
        group_id = net.group(owner, b, strategy="unicast")

        def on_the_wire(text: str) -> tuple[int, list[int]]:
            report = net.result(owner.publish(group_id, text))
            sealed = net.result(owner.sealed_message(group_id, report.epoch, report.index))
            return sealed.manifest.padded_size, [len(f) for f in sealed.fragments]

        self.assertEqual(on_the_wire("x"), on_the_wire("x" * 40))
        self.assertEqual(on_the_wire("x" * 1_000_000), on_the_wire("x" * 1_010_000))

    def test_unknown_strategy(self) -> None:
        """
        Creating a group with a strategy nobody installed fails, naming the
        installed ones.
        """
        net = network()
        owner = net.node("owner")
        with self.assertRaises(UnknownStrategy):
            net.result(owner.create_group("g", "carrier-pigeon"))

    def test_only_owner_publishes(self) -> None:
        """
        A member cannot publish to a group it does not own.
        """
        net = network()
        owner, member = net.node("owner"), net.node("member")
        group_id = net.group(owner, member, strategy="unicast")
        with self.assertRaises(NotOwner):
            net.result(member.publish(group_id, "hello"))

    def test_report_followed_as_it_progresses(self) -> None:
        """
        A delivery report can be followed: the follower sees fragments
        go out to each member and each member counted as it commits, in
        that order, until no one is pending; after ``stop`` it sees no
        more.
        """
        net = network()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c")
        group_id = net.group(owner, b, c, strategy="unicast")
        report = net.result(owner.publish(group_id, "x" * 200_000))
        seen: list[tuple[frozenset[Any], dict[Any, int]]] = []
        report.follow(lambda r: seen.append((r.committed, dict(r.progress))))
        net.result(report.settled())
        self.assertEqual(seen[-1][0], frozenset([b.local, c.local]))
        committed_counts = [len(committed) for committed, _ in seen]
        self.assertEqual(committed_counts, sorted(committed_counts))
        self.assertEqual(sorted(set(committed_counts)), [0, 1, 2])
        self.assertTrue(any(progress for committed, progress in seen if not committed))
        stopped: list[object] = []
        report = net.result(owner.publish(group_id, "next"))
        stop = report.follow(stopped.append)
        stop()
        net.result(report.settled())
        self.assertEqual(stopped, [])

    def test_mailbox_role_recorded(self) -> None:
        """
        A mailbox added to a group is listed with its role and is a
        recipient of its messages (``tests.test_mailbox`` has what it
        does); a node that does not serve as a mailbox holds nothing of the
        group, neither key nor invitation, and never counts as having a
        message; a role other than member or mailbox is refused.
        """
        net = network()
        owner, b, box = net.node("owner"), net.node("b"), net.node("box")
        group_id = net.group(owner, b, strategy="unicast")
        net.result(owner.add_member(group_id, box.local, "mailbox"))
        report = net.result(owner.publish(group_id, "hi"))
        net.run(60)
        self.assertEqual(report.committed, frozenset([b.local]))
        self.assertEqual(report.pending, frozenset([box.local]))
        shown = {m["peer"]: m["role"] for m in net.result(owner.show(group_id))["members"]}
        self.assertEqual(shown, {str(b.local): "member", str(box.local): "mailbox"})
        net.run(60)
        self.assertEqual(net.result(box.store.groups()), [])
        self.assertEqual(net.result(box.invitations()), [])
        with self.assertRaises(GroupError):
            net.result(owner.add_member(group_id, net.node("d").local, "admin"))

    def test_history(self) -> None:
        """
        The stored history gives the messages by index, at the member and
        at the owner, after a given index.
        """
        net = network()
        owner, member = net.node("owner"), net.node("member")
        group_id = net.group(owner, member, strategy="unicast")
        for text in ["one", "two", "three"]:
            net.result(net.result(owner.publish(group_id, text)).settled())
        got = net.result(member.history(group_id))
        self.assertEqual([m.data for m in got], [b"one", b"two", b"three"])
        later = net.result(owner.history(group_id, after=(0, 0)))
        self.assertEqual([m.data for m in later], [b"two", b"three"])


class EpochTests(SynchronousTestCase):
    def test_removed_member_cannot_read_what_follows(self) -> None:
        """
        Removing a member ends the epoch: the others get the next epoch's
        keys and read the next message; the removed member's store holds
        no key of the new epoch, nor the message, and marks the group
        removed.
        """
        net = network()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c")
        group_id = net.group(owner, b, c, strategy="unicast")
        net.result(net.result(owner.publish(group_id, "before")).settled())
        net.result(owner.remove_member(group_id, c.local))
        net.run(5)
        report = net.result(owner.publish(group_id, "after"))
        net.result(report.settled())
        self.assertEqual(report.committed, frozenset([b.local]))
        self.assertEqual(report.epoch, 1)
        self.assertEqual([m.data for m in net.result(b.history(group_id))], [b"before", b"after"])
        self.assertEqual([m.data for m in net.result(c.history(group_id))], [b"before"])
        self.assertEqual(net.result(c.store.group(group_id)).state, "removed")
        epoch = net.result(c.store.epoch(group_id))
        self.assertEqual(epoch.epoch, 0)
        self.assertIsNone(epoch.chain)
        self.assertIsNone(epoch.access_key)
        close = net.result(b.store.epoch(group_id, 0)).close
        self.assertEqual(close.last_index, 0)

    def test_owner_keeps_only_signing_secret_of_closed_epoch(self) -> None:
        """
        Once a removal closes epoch 0, the owner holds no chain key of it,
        only its signing secret (to reveal later) and its access key (to
        authenticate notifications to members still in it); once the next
        removal closes epoch 1, both of epoch 0 are gone too (the secret
        revealed to the members), and epoch 1 is as epoch 0 was.
        """
        net = network()
        owner, b, c, d = net.node("owner"), net.node("b"), net.node("c"), net.node("d")
        group_id = net.group(owner, b, c, d, strategy="unicast")
        net.result(net.result(owner.publish(group_id, "one")).settled())
        net.result(owner.remove_member(group_id, d.local))
        zero = net.result(owner.store.epoch(group_id, 0))
        self.assertIsNone(zero.chain)
        self.assertIsNotNone(zero.access_key)
        self.assertIsNotNone(zero.signing_secret)
        self.assertIsNotNone(zero.close)
        net.result(owner.remove_member(group_id, c.local))
        zero = net.result(owner.store.epoch(group_id, 0))
        self.assertEqual((zero.chain, zero.access_key, zero.signing_secret), (None, None, None))
        one = net.result(owner.store.epoch(group_id, 1))
        self.assertIsNone(one.chain)
        self.assertIsNotNone(one.access_key)
        self.assertIsNotNone(one.signing_secret)
        self.assertIsNotNone(net.result(owner.store.epoch(group_id, 2)).chain)

    def test_removed_offline_member_leaves_nothing_pending(self) -> None:
        """
        A member removed while offline, with a message and a neighbour
        change waiting for it, is pending for nothing: its delivery states
        are gone, the only thing waiting for it is the removal, and the
        owner's own copy of the message (its fragments and key) stays.
        """
        net = network()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c")
        group_id = net.group(owner, b, c, strategy="unicast")
        net.network.take_offline("c")
        report = net.result(owner.publish(group_id, "while away"))
        net.result(report.transmitted)
        net.run(1)
        self.assertEqual(net.result(owner.store.undelivered(group_id, c.local)), [(0, 0)])
        net.result(owner.remove_member(group_id, c.local))
        net.run(1)
        self.assertEqual(net.result(owner.store.undelivered(group_id, c.local)), [])
        self.assertEqual(
            net.result(owner.store.deliveries(group_id, 0, 0)), {b.local: "committed"}
        )
        self.assertEqual([m.data for m in net.result(owner.history(group_id))], [b"while away"])
        self.assertEqual(report.pending, frozenset())
        self.assertEqual([e.kind for e in net.result(owner.store.outbox(c.local))], ["remove"])

    def test_age_and_count_end_the_epoch_at_next_send(self) -> None:
        """
        Over the service, an epoch ends at the first send after it is 7
        days old, and at the first send after it holds the most messages
        (3 here, for the test): the member gets each next epoch's keys
        with the close statement of the old one and reads every message.
        An epoch that sends nothing is not ended while it idles.
        """
        self.patch(_epoch, "EPOCH_MAX_MESSAGES", 3)
        net = network()
        owner, b = net.node("owner"), net.node("b")
        group_id = net.group(owner, b, strategy="unicast")
        net.result(net.result(owner.publish(group_id, "first")).settled())
        for _ in range(7 * 24):
            net.run(3600)
        self.assertEqual(net.result(owner.store.epoch(group_id)).epoch, 0)
        report = net.result(owner.publish(group_id, "a week later"))
        net.result(report.settled())
        self.assertEqual((report.epoch, report.index), (1, 0))
        self.assertEqual(net.result(b.store.epoch(group_id, 0)).close.last_index, 0)
        for text in ("two", "three"):
            net.result(net.result(owner.publish(group_id, text)).settled())
        report = net.result(owner.publish(group_id, "fourth of epoch 1"))
        net.result(report.settled())
        self.assertEqual((report.epoch, report.index), (2, 0))
        self.assertEqual(net.result(b.store.epoch(group_id, 1)).close.last_index, 2)
        self.assertEqual(
            [m.data for m in net.result(b.history(group_id))],
            [b"first", b"a week later", b"two", b"three", b"fourth of epoch 1"],
        )

    def test_delete_group(self) -> None:
        """
        An owner deleting a group keeps nothing of it and tells its
        members, who mark it removed and forget its keys; a member deleting
        a group leaves it first, so its owner removes it and starts a new
        epoch for the others.
        """
        net = network()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c")
        group_id = net.group(owner, b, c, strategy="unicast")
        net.result(c.delete_group(group_id))
        net.run(5)
        self.assertEqual(net.result(c.store.groups()), [])
        members = {m.peer: m.status for m in net.result(owner.store.members(group_id))}
        self.assertEqual(members[c.local], "removed")
        self.assertEqual(net.result(owner.store.epoch(group_id)).epoch, 1)

        net.result(owner.delete_group(group_id))
        net.run(5)
        self.assertEqual(net.result(owner.store.groups()), [])
        self.assertEqual(net.result(b.store.group(group_id)).state, "removed")
        self.assertIsNone(net.result(b.store.epoch(group_id)).access_key)

    def test_leave(self) -> None:
        """
        A member that leaves forgets the group's keys; its owner removes it
        and starts a new epoch for the others.
        """
        net = network()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c")
        group_id = net.group(owner, b, c, strategy="unicast")
        net.result(c.leave_group(group_id))
        net.run(5)
        members = {m.peer: m.status for m in net.result(owner.store.members(group_id))}
        self.assertEqual(members[c.local], "removed")
        self.assertEqual(net.result(owner.store.epoch(group_id)).epoch, 1)
        self.assertEqual(net.result(b.store.epoch(group_id)).epoch, 1)
        self.assertIsNone(net.result(c.store.epoch(group_id)).access_key)

    def test_deniability_reveal(self) -> None:
        """
        Two epochs after an epoch began, its members get its signing secret,
        checked against its public key.
        """
        net = network()
        owner, b, c, d = net.node("owner"), net.node("b"), net.node("c"), net.node("d")
        group_id = net.group(owner, b, c, d, strategy="unicast")
        net.result(owner.remove_member(group_id, d.local))
        net.run(5)
        net.result(owner.remove_member(group_id, c.local))
        net.run(5)
        revealed = net.result(b.store.epoch(group_id, 0)).revealed_secret
        self.assertIsNotNone(revealed)
        self.assertIsNone(net.result(b.store.epoch(group_id, 1)).revealed_secret)


class OutboxTests(SynchronousTestCase):
    def _away(self) -> tuple[GroupNetwork, MulticastService, MulticastService, bytes, Any]:
        """
        An owner with member ``b``, and ``c`` invited and sent a message
        while offline, then back online; the owner's first retry is 15 to
        45 s away (30 s, jittered).
        """
        net = network()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c")
        group_id = net.group(owner, b, strategy="unicast")
        net.network.take_offline("c")
        net.result(owner.add_member(group_id, c.local))
        report = net.result(owner.publish(group_id, "while away"))
        net.result(report.transmitted)
        self.assertEqual(report.committed, frozenset([b.local]))
        self.assertEqual(report.pending, frozenset([c.local]))
        net.run(1)
        [retry] = owner.outbox.timers.values()
        self.assertGreater(retry.getTime(), net.clock.seconds() + 10)
        net.network.bring_online("c")
        return net, owner, c, group_id, report

    def test_offline_member_connecting_gets_everything_at_once(self) -> None:
        """
        A member back online that connects to the owner (for anything) gets
        its invitation, then the message it missed, within seconds, not on
        the 30 s retry; the delivery report counts it then, and nothing is
        left waiting, no timer held.
        """
        net, owner, c, group_id, report = self._away()
        got = net.subscribe(c, group_id)
        net.result(c.pool.connect(owner.local))
        net.result(report.settled(), limit=5)
        self.assertEqual([m.data for m in got], [b"while away"])
        net.run(1)
        self.assertEqual(net.result(owner.store.outbox(c.local)), [])
        self.assertEqual(owner.outbox.timers, {})

    def test_owner_told_member_reachable_sends_at_once(self) -> None:
        """
        When the owner's node learns the member is reachable
        (``reachable``), what waits for it goes at once, catch-up included.
        """
        net, owner, c, group_id, report = self._away()
        got = net.subscribe(c, group_id)
        owner.reachable(c.local)
        net.result(report.settled(), limit=5)
        self.assertEqual([m.data for m in got], [b"while away"])

    def test_retry_interval_chosen_by_the_owner(self) -> None:
        """
        An owner run with a retry interval of 10 minutes tries a member it
        cannot reach on the outbox's schedule capped there (30 s, 2 min,
        then 10 min however long it stays away), each jittered; with the
        default, the waits grow past an hour.
        """

        def waits(**kwargs: Any) -> list[float]:
            net = network()
            owner = net.node("owner", **kwargs)
            b, c = net.node("b"), net.node("c")
            group_id = net.group(owner, b, c, strategy="unicast")
            net.network.take_offline("c", refuse=True)
            net.result(net.result(owner.publish(group_id, "while away")).transmitted)
            found = []
            for _ in range(6):
                [retry] = owner.outbox.timers.values()
                found.append(retry.getTime() - net.clock.seconds())
                net.run(retry.getTime() - net.clock.seconds() + 1)
            return found

        capped = waits(retry_interval=600.0)
        # The first failure queues the entry for 30 s; its first retry that
        # fails waits 30 s again, then the schedule goes on.
        for wait, nominal in zip(capped, [30, 30, 120, 600, 600, 600], strict=True):
            self.assertTrue(nominal * 0.5 - 2 <= wait <= nominal * 1.5, (wait, nominal))
        self.assertGreater(max(waits()), 3600 * 0.5)

    def test_offline_member_gets_everything_on_retry(self) -> None:
        """
        A member back online that nobody hears from still gets everything
        on the owner's retry schedule.
        """
        net, _, c, group_id, report = self._away()
        got = net.subscribe(c, group_id)
        net.result(report.settled(), limit=3 * 3600)
        self.assertEqual([m.data for m in got], [b"while away"])

    def _missed_then_epoch(self, strategy: str) -> None:
        """
        A member away while a message went out, and while another member
        was removed (a new epoch), gets both once back: the catch-up of
        the old epoch's message waited in the outbox ahead of the new
        epoch, yet it can only go once the member holds the new epoch (the
        owner proves membership in it), so it goes last.
        """
        net = network()
        owner, b, c, d = net.node("owner"), net.node("b"), net.node("c"), net.node("d")
        group_id = net.group(owner, b, c, d, strategy=strategy)
        net.network.take_offline("c", refuse=True)
        report = net.result(owner.publish(group_id, "while away"))
        net.result(report.transmitted)
        net.result(owner.remove_member(group_id, d.local))
        net.run(1)
        net.network.bring_online("c")
        got = net.subscribe(c, group_id)
        net.result(c.pool.connect(owner.local))
        net.result(report.settled(), limit=10)
        self.assertEqual([m.data for m in got], [b"while away"])
        self.assertEqual(net.result(c.store.epoch(group_id)).epoch, 1)

    def test_missed_then_epoch_unicast(self) -> None:
        """
        With ``unicast``: see :meth:`_missed_then_epoch`.
        """
        self._missed_then_epoch("unicast")

    def test_missed_then_epoch_spring(self) -> None:
        """
        With ``spring``: see :meth:`_missed_then_epoch`.
        """
        self._missed_then_epoch("spring")

    def test_no_timer_without_outbox(self) -> None:
        """
        With nothing waiting in the outbox the service holds no timer.
        """
        net = network()
        owner, b = net.node("owner"), net.node("b")
        group_id = net.group(owner, b, strategy="unicast")
        net.result(net.result(owner.publish(group_id, "x")).settled())
        self.assertEqual(owner.outbox.timers, {})
        self.assertEqual(b.outbox.timers, {})


class RestartTests(SynchronousTestCase):
    def _killed_mid_burst(self, strategy: str) -> None:
        """
        A member killed while a burst arrived, holding message 0 whole but
        not committed (killed between its last fragment and the commit)
        and message 2 whole while 1 was missing, restarted with its store:
        once back, the owner's catch-up gets it all three committed, in
        order.
        """
        net = network()
        owner, b = net.node("owner"), net.node("b")
        group_id = net.group(owner, b, strategy=strategy)
        net.network.take_offline("b", refuse=True)
        data = [bytes([i]) * (2 * FRAGMENT_SIZE) for i in range(3)]
        reports = [net.result(owner.publish(group_id, d, f"f{i}")) for i, d in enumerate(data)]
        for report in reports:
            net.result(report.transmitted)
        sealed = [net.result(owner.sealed_message(group_id, 0, i)) for i in range(3)]
        for i in (0, 2):
            changes: list[Any] = [
                StartMessage(group_id, 0, i, sealed[i].signed_manifest, from_peer=owner.local)
            ]
            changes += [
                AddFragment(group_id, 0, i, n, f, from_peer=owner.local)
                for n, f in enumerate(sealed[i].fragments)
            ]
            net.result(b.store.commit(*changes))
        b = net.restart("b")
        got = net.subscribe(b, group_id)
        net.result(b.pool.connect(owner.local))
        for report in reports:
            net.result(report.settled(), limit=60)
        self.assertEqual([m.data for m in got], data)
        self.assertEqual(net.result(b.store.partial_messages(group_id)), [])

    def test_killed_mid_burst_unicast(self) -> None:
        """
        With ``unicast``: see :meth:`_killed_mid_burst`.
        """
        self._killed_mid_burst("unicast")

    def test_killed_mid_burst_spring(self) -> None:
        """
        With ``spring``: see :meth:`_killed_mid_burst`.
        """
        self._killed_mid_burst("spring")


class StoppedTests(SynchronousTestCase):
    def test_store_closed_after_stop(self) -> None:
        """
        Work cut short because the node stopped and closed its store (the
        catch-up it queues for members a message did not reach, say) logs
        an info line, not a failure that a test or an operator would take
        for a bug; while the node runs, the same error is a failure.
        """
        net = network()
        running, stopped = net.node("running"), net.node("stopped")
        stopped.stopService()
        stopped._log_failure(Failure(StoreClosed("the store is closed")))
        self.assertEqual(self.flushLoggedErrors(StoreClosed), [])
        running._log_failure(Failure(StoreClosed("the store is closed")))
        self.assertEqual(len(self.flushLoggedErrors(StoreClosed)), 1)

    def test_command_after_stop_refused(self) -> None:
        """
        A command from a member that reaches a node whose store closed as
        it stopped is refused as the commands declare (so AMP logs no
        unhandled error, which failed a Tor test once), not with
        ``StoreClosed``.
        """
        net = network()
        owner, b = net.node("owner"), net.node("b")
        group_id = net.group(owner, b, strategy="spring")
        net.result(b.pool.connect(owner.local))
        connection = b.pool.connections()[owner.local]
        b.stopService()
        net.result(b.store.close())
        with self.assertRaises(MembershipNotProven) as refused:
            net.result(Deferred.fromCoroutine(b.route(connection, group_id, None)))
        self.assertIn("stopping", str(refused.exception))


class ConsentTests(SynchronousTestCase):
    def test_invitation_from_stranger_waits(self) -> None:
        """
        An invitation from a peer who is not a contact waits as pending;
        the node joins only once the user accepts it.
        """
        net = network()
        net.contacts = False
        owner, b = net.node("owner"), net.node("b")
        group_id = net.result(owner.create_group("g"))
        net.result(owner.add_member(group_id, b.local))
        net.run(5)
        self.assertEqual(net.result(b.store.groups()), [])
        [pending] = net.result(b.invitations())
        self.assertEqual((pending["name"], pending["from"]), ("g", str(owner.local)))
        net.result(b.accept_invitation(owner.local, group_id))
        self.assertEqual(net.result(b.invitations()), [])
        report = net.result(owner.publish(group_id, "hi"))
        net.result(report.settled())
        self.assertEqual([m.data for m in net.result(b.history(group_id))], [b"hi"])

    def test_auto_accept_off(self) -> None:
        """
        With auto-accept turned off, even a contact's invitation waits.
        """
        net = network()
        owner, b = net.node("owner"), net.node("b")
        net.result(b.set_auto_accept(False))
        group_id = net.result(owner.create_group("g"))
        net.result(owner.add_member(group_id, b.local))
        net.run(5)
        self.assertEqual(net.result(b.store.groups()), [])
        self.assertEqual(len(net.result(b.invitations())), 1)

    def test_blocked_peer_refused(self) -> None:
        """
        A blocked peer's invitations are refused and it cannot prove
        membership.
        """
        net = network()
        owner, b = net.node("owner"), net.node("b")
        net.result(b.block(owner.local))
        group_id = net.result(owner.create_group("g"))
        net.result(owner.add_member(group_id, b.local))
        net.run(5)
        self.assertEqual(net.result(b.store.groups()), [])
        self.assertEqual(net.result(b.invitations()), [])

    def test_invitation_quota(self) -> None:
        """
        A stranger's invitations are kept up to the store's bound per
        sender; beyond it they are refused.
        """
        net = network()
        net.contacts = False
        owner, b = net.node("owner"), net.node("b")
        for _ in range(12):
            group_id = net.result(owner.create_group("g"))
            net.result(owner.add_member(group_id, b.local))
        net.run(5)
        self.assertEqual(len(net.result(b.invitations())), 8)


class ProofTests(SynchronousTestCase):
    def _setup(self) -> tuple[GroupNetwork, MulticastService, MulticastService, bytes]:
        net = network()
        owner, member = net.node("owner"), net.node("member")
        group_id = net.group(owner, member, strategy="unicast")
        return net, owner, member, group_id

    def _prove(
        self,
        net: GroupNetwork,
        dialler: MulticastService,
        target: MulticastService,
        proof: bytes,
        group_id: bytes,
        epoch: int = 0,
    ) -> None:
        connection = net.result(dialler.pool.connect(target.local))
        net.result(
            connection.callRemote(ProveMembership, group=group_id, epoch=epoch, proof=proof)
        )

    def test_stranger_refused(self) -> None:
        """
        A proof made without the access key is refused.
        """
        net, _, member, group_id = self._setup()
        outsider = net.node("outsider")
        with self.assertRaises(MembershipNotProven):
            self._prove(net, outsider, member, bytes(32), group_id)

    def test_reflected_and_replayed_refused(self) -> None:
        """
        The member's own proof reflected back (listener role) and a proof
        made for another connection's handshake are refused.
        """
        net, owner, member, group_id = self._setup()
        epoch = net.result(owner.store.epoch(group_id))
        access = _access(group_id, epoch.access_key)
        connection = net.result(owner.pool.connect(member.local))
        channel = ISecureChannel(connection.transport)
        role = Role.DIALLER if connection.initiator else Role.LISTENER
        other = Role.LISTENER if role is Role.DIALLER else Role.DIALLER
        reflected = make_proof(access, other, channel.handshake_hash)
        with self.assertRaises(MembershipNotProven):
            net.result(
                connection.callRemote(ProveMembership, group=group_id, epoch=0, proof=reflected)
            )
        replayed = make_proof(access, role, b"another handshake hash".ljust(32, b"\0"))
        with self.assertRaises(MembershipNotProven):
            net.result(
                connection.callRemote(ProveMembership, group=group_id, epoch=0, proof=replayed)
            )
        good = make_proof(access, role, channel.handshake_hash)
        net.result(connection.callRemote(ProveMembership, group=group_id, epoch=0, proof=good))

    def test_other_group_and_old_epoch_refused(self) -> None:
        """
        A proof for another group, and one from an epoch that has ended,
        are refused alike.
        """
        net, owner, member, group_id = self._setup()
        third = net.node("third")
        net.result(owner.add_member(group_id, third.local))
        net.run(5)
        old = net.result(owner.store.epoch(group_id)).access_key
        net.result(owner.remove_member(group_id, third.local))
        net.run(5)
        connection = net.result(third.pool.connect(member.local))
        channel = ISecureChannel(connection.transport)
        role = Role.DIALLER if connection.initiator else Role.LISTENER
        stale = make_proof(_access(group_id, old), role, channel.handshake_hash)
        with self.assertRaises(MembershipNotProven):
            net.result(
                connection.callRemote(ProveMembership, group=group_id, epoch=0, proof=stale)
            )
        with self.assertRaises(MembershipNotProven):
            net.result(
                connection.callRemote(ProveMembership, group=bytes(32), epoch=0, proof=stale)
            )


def _access(group_id: bytes, key: bytes) -> GroupAccess:
    return EpochKeys(group_id, 0, b"", b"", key).access


class _SlowEpochStore(MemoryStore):
    """
    A store whose epoch lookups wait in :attr:`held`, while
    :attr:`holding`, until the test fires them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.held: list[Deferred[None]] = []

    def epoch(self, group_id: bytes) -> Any:
        looked_up = super().epoch(group_id)
        if not self.holding:
            return looked_up
        waiting: Deferred[None] = Deferred()
        self.held.append(waiting)
        return waiting.addCallback(lambda ignored: looked_up)


class PipelinedProofTests(SynchronousTestCase):
    """
    ``call_proven`` (``IStrategyContext.call``): a command sent right
    behind the dialler's membership proof.
    """

    def _have(self, group_id: bytes) -> Any:
        return lambda connection: {"group": group_id, "epoch": 0, "index": 0, "have": b""}

    def test_command_waits_for_the_proof(self) -> None:
        """
        The listener acts on the command only once the proof in front of
        it checked, however long that takes: the command reaches the
        group's strategy (which refuses it, as no transmission runs), not
        a refusal for want of a proof, even when the command's own lookups
        finish first.  Both ends count the connection as proven after it.
        """
        net = network()
        owner = net.node("owner")
        store = _SlowEpochStore()
        member = net.node("member", store=store)
        group_id = net.group(owner, member, strategy="spring")
        net.run(400)
        self.assertEqual(owner.pool.connections(), {})
        store.holding = True
        answer = owner.call_proven(group_id, member.local, SpringHave, self._have(group_id))
        net.clock.run_until(lambda: bool(store.held), limit=10)
        net.run(1)
        store.holding = False
        held, store.held = store.held, []
        # The latest lookups first: the proof's comes last.
        for waiting in reversed(held):
            waiting.callback(None)
        with self.assertRaises(SpringRefused):
            net.result(answer)
        proofs: list[object] = []
        answer_proof = member.answer_proof
        member.answer_proof = lambda *a: proofs.append(a) or answer_proof(*a)  # type: ignore[method-assign]
        with self.assertRaises(SpringRefused):
            net.result(owner.call_proven(group_id, member.local, SpringHave, self._have(group_id)))
        net.result(member.proven_connection(group_id, owner.local))
        self.assertEqual(proofs, [])

    def test_command_behind_refused_proof_refused(self) -> None:
        """
        A command right behind a proof the listener refuses (it is not in
        the group) is refused as every command without a proof is, and so
        is the call.
        """
        net = network()
        owner, member = net.node("owner"), net.node("member")
        net.group(owner, member, strategy="spring")
        outsider, friend = net.node("outsider"), net.node("friend")
        other = net.group(outsider, friend, strategy="spring")
        with self.assertRaises(MembershipNotProven):
            net.result(outsider.call_proven(other, member.local, SpringHave, self._have(other)))
        self.assertEqual(member._sessions[member.pool.connections()[outsider.local]].proven, {})


class NoticeTests(SynchronousTestCase):
    def test_forged_acknowledgement_refused(self) -> None:
        """
        An acknowledgement under another key (one member acknowledging for
        another) is refused and counts no one.
        """
        net = network()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c")
        group_id = net.group(owner, b, c, strategy="unicast")
        net.network.take_offline("c")
        report = net.result(owner.publish(group_id, "x"))
        net.result(report.transmitted)
        key = acknowledgement_key(b.identity, owner.local, group_id)
        forged = make_acknowledgement(key, group_id, 0, 0)
        self.assertEqual(decode_acknowledgement(forged).index, 0)
        # b sends its own acknowledgement again, but c's is what is missing:
        # a forwarder cannot pass b's off as c's.
        connection = net.result(b.pool.connect(owner.local))
        net.result(connection.callRemote(GroupNotice, kind=ACKNOWLEDGEMENT, payload=forged))
        self.assertEqual(report.pending, frozenset([c.local]))
        other = acknowledgement_key(Identity.generate(), owner.local, group_id)
        with self.assertRaises(NoticeRefused):
            net.result(
                connection.callRemote(
                    GroupNotice,
                    kind=ACKNOWLEDGEMENT,
                    payload=make_acknowledgement(other, group_id, 0, 0),
                )
            )

    def test_acknowledgement_tells_others_nothing(self) -> None:
        """
        An acknowledgement names the message and carries a MAC under a key
        only the owner and the acknowledging member compute: it holds no
        peer ID, two members' acknowledgements of one message differ only
        in their MACs, and another member (as a forwarder would be) can
        neither verify it under its own key nor tell whose it is, while
        the owner verifies it under the key it shares with that member.
        """
        net = network()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c")
        group_id = net.group(owner, b, c, strategy="unicast")
        key_b = acknowledgement_key(b.identity, owner.local, group_id)
        key_c = acknowledgement_key(c.identity, owner.local, group_id)
        ack_b = make_acknowledgement(key_b, group_id, 0, 7)
        ack_c = make_acknowledgement(key_c, group_id, 0, 7)
        self.assertEqual(len(ack_b), len(ack_c))
        self.assertNotEqual(ack_b, ack_c)
        self.assertEqual(ack_b[:-ACK_MAC_SIZE], ack_c[:-ACK_MAC_SIZE])
        for peer in (owner, b, c):
            self.assertNotIn(peer.local.public_key, ack_b + ack_c)
        self.assertFalse(acknowledgement_valid(key_b, decode_acknowledgement(ack_c)))
        self.assertTrue(
            acknowledgement_valid(
                acknowledgement_key(owner.identity, c.local, group_id),
                decode_acknowledgement(ack_c),
            )
        )

    def test_report_counts_only_committed(self) -> None:
        """
        The owner's report counts a member only once that member has
        committed the message: with every fragment at ``c`` but ``c``'s
        commit held, ``c`` stays pending while ``b`` counts; once ``c``'s
        commit is done, its acknowledgement counts it.
        """
        net = network()
        held = _HeldStore()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c", held)
        group_id = net.group(owner, b, c, strategy="unicast")
        report = net.result(owner.publish(group_id, "x"))
        net.run(5)
        self.assertEqual(len(held.held), 1)
        self.assertEqual(report.committed, frozenset([b.local]))
        self.assertEqual(report.pending, frozenset([c.local]))
        held.held.pop().callback(None)
        net.run(5)
        self.assertEqual(report.committed, frozenset([b.local, c.local]))
        self.assertEqual(report.pending, frozenset())

    def test_member_claiming_owner_refused(self) -> None:
        """
        A member that sends another member a removal or new keys for the
        group, as if it were the owner, is refused.
        """
        net = network()
        owner, b, c = net.node("owner"), net.node("b"), net.node("c")
        group_id = net.group(owner, b, c, strategy="unicast")
        connection = net.result(b.pool.connect(c.local))
        with self.assertRaises(NoticeRefused):
            net.result(connection.callRemote(GroupNotice, kind="remove", payload=group_id))
        self.assertEqual(net.result(c.store.group(group_id)).state, "active")

    def test_malformed_invitation(self) -> None:
        """
        A damaged invitation is refused with a typed error.
        """
        with self.assertRaises(MalformedNotice):
            decode_invitation(b"\0" * 40)


class _HeldStore(MemoryStore):
    """
    A member's store whose commits of received messages wait in
    :attr:`held` until the test fires them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Deferred[None]] = []

    def commit(self, *changes: Change) -> Deferred[None]:
        if not any(isinstance(change, CommitReceived) for change in changes):
            return super().commit(*changes)
        waiting: Deferred[None] = Deferred()
        self.held.append(waiting)
        return waiting.addCallback(lambda ignored: MemoryStore.commit(self, *changes))


class IdleTests(SynchronousTestCase):
    def test_ten_thousand_groups_hold_no_connection(self) -> None:
        """
        A node in 10,000 groups, with nothing pending, opens no connection
        and sends 0 bytes through a week.
        """
        net = network()
        owner = net.node("owner")
        member = net.node("member")
        for _ in range(10_000):
            net.result(owner.create_group("g"))
        net.run(1)
        restore = net.count_bytes()
        try:
            for _ in range(7 * 24):
                net.run(3600)
        finally:
            restore()
        self.assertEqual(net.sent, 0)
        self.assertEqual(owner.pool.connections(), {})
        self.assertEqual(member.pool.connections(), {})
        self.assertEqual(len(net.result(owner.group_list())), 10_000)
