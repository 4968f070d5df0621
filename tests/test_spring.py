"""
The ``spring`` strategy: it passes the strategy conformance tests, is found
as a plugin and is the default, and moves a message through its members
rather than from the owner to each.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from digitalspring.identity import Identity
from digitalspring.multicast import (
    DEFAULT_STRATEGY,
    IMulticastStrategyPlugin,
    MulticastService,
    SpringStrategyPlugin,
    UploadBudget,
    _spring,
    get_strategy,
)
from digitalspring.multicast._spring import SpringStrategy
from digitalspring.multicast._spring_teardown import CLOSE_QUIET, CLOSE_WITHIN, Teardown
from digitalspring.multicast._spring_transmission import LINGER, STALL_TIMEOUT, Transmission
from digitalspring.multicast._spring_upload import MAX_WAITING
from digitalspring.multicast._spring_wire import SpringBusy
from digitalspring.testing import GroupNetwork, StrategyConformanceMixin


class SpringConformanceTests(StrategyConformanceMixin, SynchronousTestCase):
    def make_plugin(self) -> IMulticastStrategyPlugin:
        return SpringStrategyPlugin()


class SpringPluginTests(SynchronousTestCase):
    def test_found(self) -> None:
        """
        ``spring`` is an installed strategy plugin, a verified
        IMulticastStrategyPlugin, and the default strategy.
        """
        plugin = get_strategy("spring")
        self.assertIsInstance(plugin, SpringStrategyPlugin)
        verifyObject(IMulticastStrategyPlugin, plugin)
        self.assertEqual(DEFAULT_STRATEGY, "spring")


class UploadBudgetTests(SynchronousTestCase):
    def test_rate_kept(self) -> None:
        """
        Grants follow the rate: after a burst, 20 fragments of 100,000
        bytes at 100,000 bytes/s are granted over about 20 s, none early,
        and no timer is left once nothing waits.
        """
        clock = Clock()
        budget = UploadBudget(clock, 100_000, burst=100_000)
        granted: list[float] = []
        for _ in range(20):
            budget.reserve(100_000, 0.1, refuse=False).addCallback(
                lambda _: granted.append(clock.seconds())
            )
        while clock.getDelayedCalls():
            clock.advance(0.05)
        self.assertEqual(len(granted), 20)
        for i, when in enumerate(granted):
            # Tokens may go below zero by one grant: the i-th waits for i-1
            # fragments' worth of refill.
            self.assertGreaterEqual(when, (i - 1) * 1.0 - 1e-6)
        self.assertLess(granted[-1], 20.0)
        self.assertEqual(budget.granted, 20 * 100_000)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lowest_latency_first(self) -> None:
        """
        What waits goes to the peer of lowest latency first, whatever the
        order it was asked in.
        """
        clock = Clock()
        budget = UploadBudget(clock, 100_000, burst=100_000)
        budget.reserve(200_000, 0.0)
        order: list[float] = []
        for latency in (0.3, 0.1, 0.2):
            budget.reserve(1000, latency).addCallback(lambda _, seen=latency: order.append(seen))
        clock.pump([0.5] * 10)
        self.assertEqual(order, [0.1, 0.2, 0.3])

    def test_full_queue_refuses(self) -> None:
        """
        A request that finds :data:`MAX_WAITING` grants waiting is refused
        at once (BUSY: ask another holder), while the owner's own pushes
        (``refuse=False``) still wait.
        """
        clock = Clock()
        budget = UploadBudget(clock, 1000, burst=1000)
        budget.reserve(10_000, 0.1)
        for _ in range(MAX_WAITING):
            budget.reserve(1000, 0.1)
        self.assertRaises(SpringBusy, budget.reserve, 1000, 0.1)
        pushed = budget.reserve(1000, 0.1, refuse=False)
        self.assertEqual(budget.waiting, MAX_WAITING + 1)
        clock.pump([0.5] * 60)
        self.assertIsNone(self.successResultOf(pushed))
        self.assertEqual(budget.waiting, 0)


def _strategy(net: GroupNetwork, service: MulticastService, group_id: bytes) -> SpringStrategy:
    strategy = net.result(service.strategy_of(group_id))
    assert isinstance(strategy, SpringStrategy)
    return strategy


def _served(test: SynchronousTestCase) -> list[tuple[bool, int]]:
    """
    Record every request any node serves (or refuses as BUSY): whether the
    owner served it, and the fragment.
    """
    served: list[tuple[bool, int]] = []
    serve = Transmission.serve

    def spy(t: Transmission, peer: Any, number: int) -> Any:
        served.append((t.owner, number))
        return serve(t, peer, number)

    test.patch(Transmission, "serve", spy)
    return served


def _staggered(source: str, target: str) -> float:
    """
    One-way latencies for members ``m0``, ``m1``, ...: 10 ms between
    members, and from the owner 50 ms more for each member's number, so
    that the owner's activations reach the members one after the other
    and a member's can reach its neighbours first.
    """
    if "owner" not in (source, target):
        return 0.01
    member = target if source == "owner" else source
    return 0.05 * (1 + int(member.lstrip("m")))


class TransmissionTests(SynchronousTestCase):
    def test_members_end_once_all_complete(self) -> None:
        """
        Once every member holds a message of several fragments, each
        member's part of the transmission ends within seconds, because a
        member that holds everything tells its peers so: not after
        :data:`STALL_TIMEOUT`, as when a member that held everything
        already never heard that its peers did too.
        """
        net = GroupNetwork({"spring": SpringStrategyPlugin()})
        owner = net.node("owner")
        members = [net.node(f"m{i}") for i in range(10)]
        group_id = net.group(owner, *members, strategy="spring")
        got = [net.subscribe(m, group_id) for m in members]
        net.result(owner.publish(group_id, bytes(range(256)) * 1024, "f.bin"))
        net.clock.run_until(lambda: all(got), limit=30)
        net.run(LINGER + 3)
        self.assertLess(LINGER + 3, STALL_TIMEOUT)
        self.assertEqual([_strategy(net, m, group_id).transmissions for m in members], [0] * 10)

    def test_small_message_rides_on_every_activation(self) -> None:
        """
        A message of one fragment rides on the activations the members
        pass on too, not only on the owner's: nobody asks anybody for it.
        """
        served = _served(self)
        self.patch(_spring, "DIRECT_SMALL", 2)
        self.patch(_spring, "ALL_DIRECT_SMALL", 2)
        net = GroupNetwork({"spring": SpringStrategyPlugin()})
        owner = net.node("owner")
        members = [net.node(f"m{i}") for i in range(12)]
        group_id = net.group(owner, *members, strategy="spring")
        got = [net.subscribe(m, group_id) for m in members]
        net.result(net.result(owner.publish(group_id, b"hello", "f.txt")).settled(), limit=30)
        self.assertEqual([[m.data for m in g] for g in got], [[b"hello"]] * 12)
        self.assertEqual(served, [])

    def test_small_message_not_passed_on_when_all_are_direct(self) -> None:
        """
        When the owner activates every member itself (a message of one
        fragment, no more members than ``ALL_DIRECT_SMALL``), it says so
        and no member passes the activation on: each member gets the
        message once, from the owner, and no member dials another.  In a
        larger group, where the owner activates ``DIRECT_SMALL`` members,
        they pass it on.
        """
        activators: list[tuple[bool, Any]] = []
        activated = SpringStrategy.activated

        def spy(strategy: SpringStrategy, peer: Any, *args: Any) -> Any:
            activators.append((peer == strategy.context.owner, strategy.context.local))
            return activated(strategy, peer, *args)

        self.patch(SpringStrategy, "activated", spy)
        for all_direct, passed_on in [(12, False), (11, True)]:
            self.patch(_spring, "ALL_DIRECT_SMALL", all_direct)
            self.patch(_spring, "DIRECT_SMALL", 4)
            del activators[:]
            net = GroupNetwork({"spring": SpringStrategyPlugin()}, latency=_staggered)
            owner = net.node("owner")
            members = [net.node(f"m{i}") for i in range(12)]
            group_id = net.group(owner, *members, strategy="spring")
            got = [net.subscribe(m, group_id) for m in members]
            # Neighbour lists reach the members.
            net.run(5)
            report = net.result(owner.publish(group_id, b"hello", "f.txt"))
            net.result(report.settled(), limit=30)
            self.assertEqual([[m.data for m in g] for g in got], [[b"hello"]] * 12)
            from_owner = sorted(str(local) for by_owner, local in activators if by_owner)
            from_members = [local for by_owner, local in activators if not by_owner]
            self.assertEqual(bool(from_members), passed_on, all_direct)
            if not passed_on:
                self.assertEqual(from_owner, sorted(str(m.local) for m in members))

    def test_owner_left_alone_while_it_pushes(self) -> None:
        """
        The members the owner activates ask it for nothing while it pushes
        their shares of a 1 MiB message (it would only answer BUSY).
        """
        served = _served(self)
        net = GroupNetwork({"spring": SpringStrategyPlugin()}, latency=0.05)
        owner = net.node("owner", upload_bps=10e6, download_bps=50e6)
        members = [net.node(f"m{i}", upload_bps=10e6, download_bps=50e6) for i in range(10)]
        group_id = net.group(owner, *members, strategy="spring")
        got = [net.subscribe(m, group_id) for m in members]
        net.result(owner.publish(group_id, bytes(range(256)) * 4096, "big.bin"))
        net.clock.run_until(lambda: all(got), limit=30)
        self.assertTrue(served)
        self.assertEqual([number for by_owner, number in served if by_owner], [])


class _Transport:
    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def loseConnection(self) -> None:
        self.connection.closed = True


class _Connection:
    """
    What :class:`Teardown` reads of a connection.
    """

    def __init__(self, pool: _Pool, clock: Clock) -> None:
        self.pool = pool
        self.last_active = clock.seconds()
        self.requests_in_flight = 0
        self.closed = False
        self.transport = _Transport(self)


class _Pool:
    def __init__(self) -> None:
        self.live: dict[object, _Connection] = {}

    def connections(self) -> dict[object, _Connection]:
        return {p: c for p, c in self.live.items() if not c.closed}


class TeardownTests(SynchronousTestCase):
    def test_connections_close_after_transmission(self) -> None:
        """
        Once a transmission is over at every node, the connections it used
        close within seconds, long before the pool's idle timeout (an hour
        here), and no timer is left.
        """
        net = GroupNetwork({"spring": SpringStrategyPlugin()}, idle_timeout=3600)
        owner = net.node("owner")
        members = [net.node(f"m{i}") for i in range(10)]
        group_id = net.group(owner, *members, strategy="spring")
        net.run(net.idle_timeout + 10)
        got = [net.subscribe(m, group_id) for m in members]
        report = net.result(owner.publish(group_id, bytes(range(256)) * 1024, "f.bin"))
        net.result(report.settled(), limit=60)
        self.assertTrue(all(got))
        self.assertTrue(any(m.pool.connections() for m in members))
        net.run(30)
        for service in [owner, *members]:
            self.assertEqual(service.pool.connections(), {})
        self.assertEqual(net.clock.getDelayedCalls(), [])

    def test_closes_once_unused_and_quiet(self) -> None:
        """
        A connection is closed once no transmission exchanges with its
        peer and it has been quiet for :data:`CLOSE_QUIET` seconds, with no
        request under way; it is the pool's connection with the peer that
        is closed, whichever the transmissions used.
        """
        clock = Clock()
        pool = _Pool()
        used = _Connection(pool, clock)
        kept = pool.live["p"] = _Connection(pool, clock)
        teardown = Teardown(clock)
        teardown.use("t1", "p", used)
        teardown.use("t2", "p", used)
        teardown.release("t1", ["p"])
        clock.advance(CLOSE_QUIET * 2)
        self.assertFalse(kept.closed)
        self.assertEqual(teardown.waiting, 0)
        kept.last_active = clock.seconds()
        teardown.release("t2", ["p"])
        self.assertEqual(teardown.waiting, 1)
        clock.advance(CLOSE_QUIET - 1)
        # Something else uses it meanwhile; then a request is under way.
        kept.last_active = clock.seconds()
        kept.requests_in_flight = 1
        clock.pump([0.5] * int(CLOSE_QUIET * 4))
        self.assertFalse(kept.closed)
        kept.requests_in_flight = 0
        clock.pump([0.5] * int(CLOSE_QUIET * 2 + 2))
        self.assertTrue(kept.closed)
        self.assertFalse(used.closed)
        self.assertEqual((teardown.closed, teardown.waiting, clock.getDelayedCalls()), (1, 0, []))

    def test_busy_connection_left_to_the_pool(self) -> None:
        """
        A connection that does not fall quiet within :data:`CLOSE_WITHIN`
        of its last transmission's end is left to the pool's idle timeout:
        no timer is left for it.
        """
        clock = Clock()
        pool = _Pool()
        busy = pool.live["p"] = _Connection(pool, clock)
        teardown = Teardown(clock)
        teardown.use("t", "p", busy)
        teardown.release("t", ["p"])
        for _ in range(int(CLOSE_WITHIN) * 2):
            busy.last_active = clock.seconds()
            clock.advance(1)
        self.assertFalse(busy.closed)
        self.assertEqual((teardown.waiting, clock.getDelayedCalls()), (0, []))


class ChurnTests(SynchronousTestCase):
    def _churn(self, seed: int) -> None:
        """
        30 members on 10 Mbit/s uplinks, 3 of them (10 %) offline; while a
        1 MiB message goes out, 9 of the others (30 %) go offline one every
        0.2 s, and the 3 come online halfway: every member online at the
        end commits the message within 30 s.
        """
        net = GroupNetwork({"spring": SpringStrategyPlugin()}, latency=0.05)

        def node(name: str) -> MulticastService:
            seeded = hashlib.blake2b(f"{seed} {name}".encode(), digest_size=32).digest()
            return net.node(
                name, identity=Identity.from_seed(seeded), upload_bps=10e6, download_bps=50e6
            )

        owner = node("owner")
        members = [node(f"m{i}") for i in range(30)]
        group_id = net.group(owner, *members, strategy="spring")
        net.run(5)
        late = [0, 3, 6]
        leaving = [1, 4, 7, 10, 13, 16, 19, 22, 25]
        for i in late:
            net.network.take_offline(f"m{i}", refuse=True)
        got = [net.subscribe(m, group_id) for m in members]
        data = bytes(range(256)) * 4096
        start = net.clock.seconds()
        net.result(owner.publish(group_id, data, "big.bin"))
        for k, i in enumerate(leaving):
            net.run(start + 0.2 * (k + 1) - net.clock.seconds())
            net.network.take_offline(f"m{i}")
            if k == len(leaving) // 2:
                for j in late:
                    net.network.bring_online(f"m{j}")
        # The churn fell within the transmission.
        self.assertFalse(any(got))
        online = [i for i in range(len(members)) if i not in leaving]
        net.clock.run_until(lambda: all(got[i] for i in online), limit=30)
        self.assertEqual(
            [i for i in online if [m.data for m in got[i]] != [data]], [], f"seed {seed}"
        )

    def test_churn(self) -> None:
        """
        See :meth:`_churn`; three groups.
        """
        for seed in range(3):
            self._churn(seed)
