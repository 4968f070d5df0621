"""
Catch-up (issue 12): a member back from an absence gets what it missed
from the group's mailboxes, its neighbours and the owner, in order, each
message once; on the memory network and a simulated clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from digitalspring.cli._network import _caught_up
from digitalspring.identity import PeerID
from digitalspring.multicast import (
    FRAGMENT_SIZE,
    ICatchUpFetcher,
    IMulticastStrategy,
    IStrategyContext,
    Manifest,
    MulticastService,
    SpringStrategyPlugin,
    UnicastStrategy,
    UnicastStrategyPlugin,
)
from digitalspring.multicast._catchup_wire import CatchUpFragment
from digitalspring.multicast._manifest import decode_manifest
from digitalspring.storage import StoreLimits
from digitalspring.testing import GroupNetwork

DAY = 24 * 3600


def _network() -> GroupNetwork:
    return GroupNetwork({"spring": SpringStrategyPlugin(), "unicast": UnicastStrategyPlugin()})


def _held_by(net: GroupNetwork, box: MulticastService, group_id: bytes, count: int) -> None:
    """
    Run the clock until ``box`` holds ``count`` messages of the group.
    """

    def held() -> bool:
        found: list[object] = []
        box.store.held_after(group_id, (-1, -1), 1000).addCallback(found.extend)
        return sum(1 for m in found if getattr(m, "state", "") == "complete") >= count

    net.clock.run_until(held, limit=600)


@implementer(ICatchUpFetcher)
class _Fetching(UnicastStrategy):
    """
    ``unicast``, fetching its catch-ups' fragments itself: it counts each
    fetch, and asks the holder with ``group-fragment`` over its context's
    connection, flipping a byte of what comes when told to.
    """

    def __init__(self, context: IStrategyContext, plugin: _FetchingPlugin) -> None:
        super().__init__(context)
        self.plugin = plugin

    def fetch_fragment(self, peer: PeerID, manifest: Manifest, number: int) -> Deferred[bytes]:
        self.plugin.fetched.append((peer, manifest.index, number))

        async def fetch() -> bytes:
            connection = await self.context.connect(peer)
            answer = await connection.callRemote(
                CatchUpFragment,
                group=self.context.group_id,
                epoch=manifest.epoch,
                index=manifest.index,
                number=number,
            )
            data: bytes = answer["data"]
            if self.plugin.alter:
                data = bytes([data[0] ^ 1]) + data[1:]
            return data

        return Deferred.fromCoroutine(fetch())


class _FetchingPlugin(UnicastStrategyPlugin):
    def __init__(self) -> None:
        self.fetched: list[tuple[PeerID, int, int]] = []
        self.alter = False

    def make_strategy(self, context: IStrategyContext) -> IMulticastStrategy:
        return _Fetching(context, self)


class StrategyFetchTests(SynchronousTestCase):
    """
    A strategy that provides ICatchUpFetcher gets its group's catch-up
    fragments itself; what it gets is checked against the manifests as
    always.
    """

    def _back(self, plugin: _FetchingPlugin) -> tuple[Any, MulticastService, bytes, list[Any]]:
        """
        A member away while two messages (one of five fragments) reach the
        group's mailbox, back when the owner is away.
        """
        net = GroupNetwork({"unicast": plugin})
        owner, member = net.node("owner"), net.node("member")
        box = net.node("box", mailbox=StoreLimits())
        group_id = net.group(owner, member, strategy="unicast")
        net.add_mailbox(owner, group_id, box)
        net.run(60)
        net.down("member")
        net.result(owner.publish(group_id, "small"))
        net.result(owner.publish(group_id, bytes(range(256)) * (5 * FRAGMENT_SIZE // 256), "b"))
        _held_by(net, box, group_id, 2)
        net.run(600)
        net.down("owner")
        del plugin.fetched[:]
        member = net.up("member")
        got = net.subscribe(member, group_id)
        net.run(120)
        return net, box, group_id, got

    def test_strategy_fetches_the_fragments(self) -> None:
        """
        Every fragment the member lacked came through the strategy's
        fetch_fragment, from the mailbox, and the member has both messages.
        """
        plugin = _FetchingPlugin()
        net, box, group_id, got = self._back(plugin)
        self.assertEqual([m.index for m in got], [0, 1])
        member = net.services["member"]
        self.assertTrue(member.caught_up[group_id].caught_up)
        manifests = [
            decode_manifest(net.result(member.store.manifest(group_id, 0, i))) for i in (0, 1)
        ]
        self.assertEqual(
            sorted((index, number) for _, index, number in plugin.fetched),
            [(m.index, n) for m in manifests for n in range(len(m.fragment_hashes))],
        )
        self.assertEqual({peer for peer, _, _ in plugin.fetched}, {box.local})

    def test_what_the_strategy_fetches_is_verified(self) -> None:
        """
        A fragment the strategy got that does not match its manifest is
        refused as any is: nothing is committed, and the source that gave
        it is named as misbehaving.
        """
        plugin = _FetchingPlugin()
        plugin.alter = True
        net, box, group_id, got = self._back(plugin)
        self.assertEqual(got, [])
        report = net.services["member"].caught_up[group_id]
        # Its first run, at start (later runs find the mailbox named).
        report = net.services["member"].caught_up_at_start[group_id]
        self.assertIn(box.local, report.misbehaved)
        self.assertFalse(report.caught_up)
        self.assertEqual(net.result(net.services["member"].history(group_id)), [])


class CatchUpTests(SynchronousTestCase):
    def test_two_members_online_in_turns(self) -> None:
        """
        Two old friends who are never online at the same time talk through
        a mailbox: each writes in its own group while the other is away,
        goes away, and the other, coming online, gets every message from
        the mailbox, in order, with nobody else to ask.
        """
        net = _network()
        alice, bob = net.node("alice"), net.node("bob")
        box = net.node("box", mailbox=StoreLimits())
        to_bob = net.group(alice, bob, strategy="spring")
        to_alice = net.group(bob, alice, strategy="spring")
        net.add_mailbox(alice, to_bob, box)
        net.add_mailbox(bob, to_alice, box)
        net.run(60)

        net.down("bob")
        letters = ["are you there?", "it has been years", "a file follows", bytes(150_000)]
        for letter in letters:
            if isinstance(letter, bytes):
                net.result(alice.publish(to_bob, letter, "photo.jpg"))
            else:
                net.result(alice.publish(to_bob, letter))
        _held_by(net, box, to_bob, len(letters))
        net.run(3600)
        net.down("alice")

        bob = net.up("bob")
        got = net.subscribe(bob, to_bob)
        net.run(120)
        self.assertEqual(
            [m.data for m in got], [x.encode() if isinstance(x, str) else x for x in letters]
        )
        self.assertEqual([m.index for m in got], [0, 1, 2, 3])
        report = bob.caught_up[to_bob]
        self.assertTrue(report.caught_up)
        self.assertEqual((report.committed, report.newest), (4, (0, 3)))
        self.assertIn(alice.local, report.unreachable)

        net.result(bob.publish(to_alice, "yes! the golden jubilee is on the 12th"))
        _held_by(net, box, to_alice, 1)
        net.run(3600)
        net.down("bob")

        alice = net.up("alice")
        got = net.subscribe(alice, to_alice)
        net.run(120)
        self.assertEqual([m.data for m in got], [b"yes! the golden jubilee is on the 12th"])
        self.assertEqual(alice.caught_up[to_alice].committed, 1)

    def test_member_offline_for_a_week(self) -> None:
        """
        A member offline for a week, while the owner sends 100 messages
        over six days, comes back when the owner is away and gets all 100
        from the mailbox, in order, each exactly once.
        """
        net = _network()
        owner, member, other = net.node("owner"), net.node("member"), net.node("other")
        box = net.node("box", mailbox=StoreLimits())
        group_id = net.group(owner, member, other, strategy="spring")
        net.add_mailbox(owner, group_id, box)
        net.run(60)
        start = net.clock.seconds()
        net.down("member")
        sent = [f"message {i}" for i in range(100)]
        for text in sent:
            net.result(owner.publish(group_id, text))
            net.run(5400)
        _held_by(net, box, group_id, 100)
        net.run(start + 7 * DAY - net.clock.seconds())
        net.down("owner")

        member = net.up("member")
        got = net.subscribe(member, group_id)
        net.run(600)
        self.assertEqual([m.data.decode() for m in got], sent)
        self.assertEqual([(m.epoch, m.index) for m in got], [(0, i) for i in range(100)])
        report = member.caught_up[group_id]
        self.assertTrue(report.caught_up)
        self.assertEqual((report.committed, report.position), (100, (0, 99)))
        history = net.result(member.history(group_id, None, 1000))
        self.assertEqual(len(history), 100)

    def test_neighbours_tell_what_is_missing(self) -> None:
        """
        With no mailbox and the owner away, a member coming back learns
        from a neighbour, under the owner's signature, which messages it
        missed, though nobody online holds them any more: its report says
        they are missing (nothing is missed silently), and once the owner
        is back it sends them.
        """
        net = _network()
        owner, member, neighbour = net.node("owner"), net.node("member"), net.node("neighbour")
        group_id = net.group(owner, member, neighbour, strategy="spring")
        net.run(60)
        net.down("member")
        for text in ("one", "two", "three"):
            report = net.result(owner.publish(group_id, text))
            net.clock.run_until(lambda r=report: neighbour.local in r.committed, limit=600)
        net.run(600)
        net.down("owner")
        member = net.up("member")
        got = net.subscribe(member, group_id)
        net.run(120)
        report = member.caught_up[group_id]
        self.assertEqual(got, [])
        self.assertEqual(report.newest, (0, 2))
        self.assertEqual(report.missing, ((0, 0), (0, 1), (0, 2)))
        self.assertFalse(report.caught_up)
        self.assertEqual(report.held_back | report.misbehaved, frozenset())
        net.up("owner")
        net.clock.run_until(lambda: len(got) == 3, limit=DAY)
        self.assertEqual([m.data for m in got], [b"one", b"two", b"three"])

    def test_several_mailboxes(self) -> None:
        """
        A member catches up from any mailbox that holds what it missed: with
        one of two mailboxes away (and the owner too), it gets everything
        from the other, large messages included, in a unicast group as in
        a spring one.
        """
        for strategy in ("unicast", "spring"):
            net = _network()
            owner, member = net.node("owner"), net.node("member")
            first = net.node("first", mailbox=StoreLimits())
            second = net.node("second", mailbox=StoreLimits())
            group_id = net.group(owner, member, strategy=strategy)
            net.add_mailbox(owner, group_id, first)
            net.add_mailbox(owner, group_id, second)
            net.run(60)
            net.down("member")
            sent = [b"small", bytes(range(256)) * (5 * FRAGMENT_SIZE // 256)]
            net.result(owner.publish(group_id, sent[0]))
            net.result(owner.publish(group_id, sent[1], "big.bin"))
            _held_by(net, first, group_id, 2)
            _held_by(net, second, group_id, 2)
            net.run(600)
            net.down("owner")
            net.down("first")
            member = net.up("member")
            got = net.subscribe(member, group_id)
            net.run(120)
            self.assertEqual([m.data for m in got], sent)
            report = member.caught_up[group_id]
            self.assertTrue(report.caught_up)
            self.assertEqual(report.unreachable, frozenset({owner.local, first.local}))

    def test_nothing_to_catch_up(self) -> None:
        """
        A member that missed nothing commits nothing and is caught up; the
        catch-up leaves no timer or connection behind.
        """
        net = _network()
        owner, member = net.node("owner"), net.node("member")
        box = net.node("box", mailbox=StoreLimits())
        group_id = net.group(owner, member, strategy="spring")
        net.add_mailbox(owner, group_id, box)
        net.result(net.result(owner.publish(group_id, "hello")).settled())
        got = net.subscribe(member, group_id)
        report = net.result(member.catch_up_group(group_id))
        self.assertTrue(report.caught_up)
        self.assertEqual((report.committed, report.position, report.newest), (0, (0, 0), (0, 0)))
        self.assertEqual(got, [])
        net.run(net.idle_timeout * 3)
        # The mailbox's one timer: when it deletes the message it holds.
        self.assertEqual([c.func for c in net.clock.getDelayedCalls()], [box._expire])
        self.assertEqual(member.pool.connections(), {})

    def test_stopped_mid_catch_up(self) -> None:
        """
        A node stopped in the middle of a catch-up ends it: what waits on
        it fails with CancelledError, and nothing more of it runs (no
        message is committed after the stop).
        """
        net = _network()
        owner, member = net.node("owner"), net.node("member")
        box = net.node("box", mailbox=StoreLimits())
        group_id = net.group(owner, member, strategy="spring")
        net.add_mailbox(owner, group_id, box)
        net.run(60)
        net.down("member")
        for text in ("one", "two", "three"):
            net.result(owner.publish(group_id, text))
        _held_by(net, box, group_id, 3)
        net.down("owner")
        member = net.up("member")
        waiting = member.catch_up_group(group_id)
        net.run(0.005)
        net.down("member")
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(member._catch_up_runs, set())
        net.run(600)
        self.assertEqual(net.result(member.history(group_id)), [])

    def test_owner_tells_news_and_mailboxes_serve(self) -> None:
        """
        A member back on the network (its node never stopped, so nothing
        made it catch up) is told by the owner's outbox that there is news,
        and fetches it from the mailbox that holds it: it gets every
        message, while the owner uploads a small part of one, not the
        messages again.  Without a mailbox that holds them, the owner sends
        them itself.
        """
        net = _network()
        owner, member = net.node("owner"), net.node("member")
        box = net.node("box", mailbox=StoreLimits())
        group_id = net.group(owner, member, strategy="spring")
        net.add_mailbox(owner, group_id, box)
        net.run(600)
        got = net.subscribe(member, group_id)
        net.network.take_offline("member")
        sent = [bytes([n]) * 100_000 for n in range(3)]
        for data in sent:
            net.result(owner.publish(group_id, data, "f.bin"))
        _held_by(net, box, group_id, 3)
        net.run(600)
        self.assertEqual(got, [])
        before = net.network.hosts["owner"].bytes_sent
        net.network.bring_online("member")
        net.clock.run_until(lambda: len(got) == 3, limit=DAY)
        self.assertEqual([m.data for m in got], sent)
        net.clock.run_until(lambda: group_id in member.caught_up, limit=600)
        self.assertLess(net.network.hosts["owner"].bytes_sent - before, 100_000)
        self.assertTrue(member.caught_up[group_id].caught_up)
        report = net.result(owner.report(group_id, 0, 2))
        net.clock.run_until(lambda: member.local in report.committed, limit=DAY)

        other = net.node("other")
        plain = net.group(owner, other, strategy="spring")
        net.run(600)
        got = net.subscribe(other, plain)
        net.network.take_offline("other")
        net.result(owner.publish(plain, b"no mailbox"))
        net.run(600)
        net.network.bring_online("other")
        net.clock.run_until(lambda: len(got) == 1, limit=DAY)
        self.assertNotIn(plain, other.caught_up)


class StartFiguresTests(SynchronousTestCase):
    def test_caught_up_at_start_kept_apart(self) -> None:
        """
        What the catch-up at start committed is kept per group and in all,
        apart from later catch-ups: a manual catch-up afterwards that finds
        nothing leaves it as it was (it used to show 0), and adds to the
        count since start only what it committed.  ``dspring status``
        says both.
        """
        net = _network()
        owner, member = net.node("owner"), net.node("member")
        box = net.node("box", mailbox=StoreLimits())
        group_id = net.group(owner, member, strategy="spring")
        net.add_mailbox(owner, group_id, box)
        net.run(60)
        net.down("member")
        for text in ("one", "two", "three"):
            net.result(owner.publish(group_id, text))
        _held_by(net, box, group_id, 3)
        net.down("owner")
        member = net.up("member")
        net.clock.run_until(lambda: member.at_start_finished, limit=600)
        assert member.caught_up_at_start is not None
        self.assertEqual(member.caught_up_at_start[group_id].committed, 3)
        again = net.result(member.catch_up_group(group_id))
        self.assertEqual(again.committed, 0)
        self.assertEqual(member.caught_up[group_id].committed, 0)
        self.assertEqual(member.caught_up_at_start[group_id].committed, 3)
        self.assertEqual(member.caught_up_since_start, {group_id: 3})
        status = {
            "groups": 1,
            "messages": 3,
            "at_start": {
                "finished": True,
                "groups": 1,
                "messages": 3,
                "committed": {group_id.hex(): 3},
            },
            "incomplete": [],
        }
        self.assertEqual(_caught_up(status), "caught up:   3 messages in 1 group at start\n")
        status["messages"] = 5
        status["at_start"]["finished"] = False  # type: ignore[index]
        self.assertEqual(
            _caught_up(status),
            "caught up:   3 messages in 1 group at start (still catching up); 2 messages since\n",
        )
