"""
A member collects its notifications while it runs (issue 12, item 3): on a
jittered timer, sooner after a collection that reached no box, and at once
when a connection shows it is back on the network; on the memory network
and a simulated clock.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from digitalspring.multicast import MulticastService
from digitalspring.multicast._notify_side import COLLECT_JITTER, COLLECT_RETRY
from digitalspring.storage import StoreLimits

from .test_notify import _notifications, _Setup


def _away_while_news(s: _Setup) -> tuple[MulticastService, float]:
    """
    Cut the member off the network (its node runs on), send a message to
    its group with news until the owner left a notification at the box,
    take the owner down (so that it cannot bring the news itself), and
    return the member, still cut off two minutes later, and when it last
    collected (just before it was cut off).
    """
    net = s.net
    # A member that committed a message keeps its manifest, not its
    # fragments: with the owner gone, a mailbox serves the catch-up.
    mailbox = net.node("mailbox", mailbox=StoreLimits())
    net.add_mailbox(s.owner, s.news, mailbox)
    net.run(60)
    net.result(s.member.collect_soon())
    collected = net.clock.seconds()
    net.network.take_offline("member")
    net.result(net.result(s.owner.publish(s.news, "while you were away")).transmitted)
    net.clock.run_until(lambda: len(_notifications(s.box, s.member)) == 1, limit=600)
    net.down("owner")
    # Long enough for what was on its way to time out.
    net.run(120)
    return s.member, collected


class RunningCollectionTests(SynchronousTestCase):
    def test_collects_on_its_timer(self) -> None:
        """
        A member whose network was down a moment while news came, and whose
        node never stopped, collects the notification on its timer (within
        the interval's jitter of its last collection, not before) and
        catches up the group, from its mailbox, with the owner gone.
        """
        s = _Setup(quiet=1)
        net = s.net
        interval = s.member.collect_interval
        member, start = _away_while_news(s)
        got = net.subscribe(member, s.news)
        net.network.bring_online("member")
        earliest = start + interval * (1 - COLLECT_JITTER)
        self.assertLess(net.clock.seconds(), earliest)
        net.run(earliest - net.clock.seconds() - 1)
        self.assertEqual(got, [])
        self.assertEqual(len(_notifications(s.box, member)), 1)
        net.run(interval * 2 * COLLECT_JITTER + 60)
        self.assertEqual([m.data for m in got], [b"while you were away"])
        self.assertEqual(_notifications(s.box, member), [])
        self.assertEqual(set(member.caught_up), {s.news})

    def test_collects_when_back_on_the_network(self) -> None:
        """
        A member whose collections reached no box tries again sooner (30 s,
        doubling up to the interval), and collects at once when a
        connection shows it is back, without waiting for its timer.
        """
        s = _Setup(quiet=1)
        net = s.net
        member, _ = _away_while_news(s)
        got = net.subscribe(member, s.news)
        # Until two collections have failed, at a moment when the next is
        # not due for a while: what follows is the connection's doing.
        net.run(member.collect_interval * (1 - COLLECT_JITTER))
        while member._collect_failures < 2 or _due_in(member, net) < 10:
            net.run(1)
        self.assertLessEqual(
            _due_in(member, net), COLLECT_RETRY * 2 ** (member._collect_failures - 1)
        )
        net.network.bring_online("member")
        net.result(s.other.pool.connect(member.local))
        net.run(5)
        self.assertEqual([m.data for m in got], [b"while you were away"])
        self.assertEqual(member._collect_failures, 0)
        self.assertEqual(_notifications(s.box, member), [])

    def test_timer_jittered_and_only_with_boxes(self) -> None:
        """
        Each wait is drawn within the jitter of the interval, not the same
        each time; a member without boxes holds no collection timer, nor
        one that removed its last.
        """
        s = _Setup(quiet=0)
        member = s.member
        waits = set()
        for _ in range(20):
            member.schedule_collection()
            timer = member._collect_timer
            assert timer is not None
            waits.add(timer.getTime() - s.net.clock.seconds())
        interval = member.collect_interval
        self.assertTrue(
            all(
                interval * (1 - COLLECT_JITTER) <= w <= interval * (1 + COLLECT_JITTER)
                for w in waits
            )
        )
        self.assertGreater(len(waits), 1)
        s.net.result(member.remove_notify_box(s.box.local))
        s.net.run(interval * 2)
        self.assertIsNone(member._collect_timer)
        self.assertIsNone(s.other._collect_timer)


def _sealed(mailbox: MulticastService, s: _Setup) -> bool:
    found: list[bytes] = []
    mailbox.store.sealed(s.news, s.member.local, 10).addCallback(found.extend)
    return bool(found)


class RemovalNotifiedTests(SynchronousTestCase):
    def test_removal_notified(self) -> None:
        """
        A member with a box, removed from a group with a mailbox while
        its node was down, finds a notification of that group at its box
        (its MAC under the epoch it still holds) and so takes the removal
        the owner sealed at the mailbox, with the owner away: it collects
        only the groups its box names, and would not have otherwise.  Its
        quiet group is not contacted.
        """
        s = _Setup(quiet=1)
        net = s.net
        mailbox = net.node("mailbox", mailbox=StoreLimits())
        net.add_mailbox(s.owner, s.news, mailbox)
        net.run(60)
        net.down("member")
        net.result(s.owner.remove_member(s.news, s.member.local))
        net.clock.run_until(
            lambda: len(_notifications(s.box, s.member)) == 1 and _sealed(mailbox, s), limit=600
        )
        net.down("owner")
        member = net.up("member")
        net.run(60)
        self.assertEqual(net.result(member.store.group(s.news)).state, "removed")
        self.assertEqual(_notifications(s.box, member), [])
        self.assertNotIn(s.quiet[0], member.caught_up)


def _due_in(member: Any, net: Any) -> float:
    # Seconds until the member's next collection, 0 while one runs.
    timer = member._collect_timer
    if timer is None or not timer.active():
        return 0.0
    return float(timer.getTime() - net.clock.seconds())
