"""
The ``spring`` strategy against hostile members and bad input (issue 11):
each case of the issue's list is a named test, on the memory network and a
simulated clock.

A hostile member is arbitrary code behind the protocol: here, a plugin
that runs ``spring`` at honest nodes and, at the nodes named hostile,
answers the same commands as they choose.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, succeed
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from digitalspring.identity import Identity, PeerID
from digitalspring.multicast import (
    FRAGMENT_SIZE,
    IMulticastStrategy,
    IMulticastStrategyPlugin,
    IStrategyContext,
    IStrategyRouter,
    MembershipNotProven,
    MulticastService,
    SpringStrategyPlugin,
    TransmissionReport,
)
from digitalspring.multicast._manifest import decode_manifest, sign_manifest
from digitalspring.multicast._spring import SpringResponder, SpringStrategy
from digitalspring.multicast._spring_transmission import (
    MAX_ACKS,
    MAX_ACKS_PER_PEER,
    MAX_PEERS,
    MAX_SERVING_PER_PEER,
    STALL_TIMEOUT,
)
from digitalspring.multicast._spring_wire import (
    MAX_ACKS_PER_BOX,
    SpringAcks,
    SpringActivate,
    SpringBusy,
    SpringHave,
    SpringPush,
    SpringRefused,
    SpringRequest,
    encode_bitmap,
)
from digitalspring.storage import AddFragment, NotStored
from digitalspring.testing import GroupNetwork


@implementer(IMulticastStrategy)
class Dropper:
    """
    A member that forwards nothing: it takes every activation and says it
    holds every fragment (so that others ask it), answers no request (or,
    with ``corrupts``, answers with bytes of its own), takes pushes and
    acknowledgements and drops them, and dials nobody (with ``activates``,
    it passes activations on).
    """

    def __init__(self, context: IStrategyContext, activates: bool, corrupts: bool) -> None:
        self.context = context
        self.activates = activates
        self.corrupts = corrupts
        self.hanging: list[Deferred[Any]] = []
        self.activated: set[bytes] = set()

    def activate_neighbours(self, signed: bytes, full: int) -> None:
        """
        With :attr:`activates`, pass an activation on to every neighbour,
        once: so as to be their activator, whose acknowledgements it then
        drops.
        """
        if not self.activates or signed in self.activated:
            return
        self.activated.add(signed)
        for peer in self.context.neighbours():
            self.context.connect(peer).addCallback(
                lambda connection: connection.callRemote(
                    SpringActivate,
                    group=self.context.group_id,
                    manifest=signed,
                    have=encode_bitmap(full),
                    hint=b"",
                    data=None,
                )
            ).addErrback(lambda _: None)

    def publish(self, message: Any) -> Deferred[TransmissionReport]:
        raise NotImplementedError

    def stop(self) -> Deferred[None]:
        return succeed(None)


class HostileResponder(SpringResponder):
    """
    ``spring``'s commands, answered by a :class:`Dropper` where the node's
    strategy is one.

    :cvar served: every fragment an honest node served, as (number, data).
    """

    served: ClassVar[list[tuple[int, bytes]]] = []

    @SpringActivate.responder
    async def activate(
        self,
        group: bytes,
        manifest: bytes,
        have: bytes,
        hint: bytes,
        data: bytes | None = None,
        relay: bool | None = None,
    ) -> dict[str, Any]:
        strategy = await self.router.strategy(self.connection, group)
        if isinstance(strategy, Dropper):
            found = await strategy.context.accept_manifest(manifest)
            full = (1 << len(found.fragment_hashes)) - 1
            strategy.activate_neighbours(manifest, full)
            return {"have": encode_bitmap(full), "complete": False}
        return await super().activate(group, manifest, have, hint, data, relay)

    @SpringHave.responder
    async def have(self, group: bytes, epoch: int, index: int, have: bytes) -> dict[str, Any]:
        strategy = await self.router.strategy(self.connection, group)
        if isinstance(strategy, Dropper):
            return {}
        return await super().have(group, epoch, index, have)

    @SpringRequest.responder
    async def request(self, group: bytes, epoch: int, index: int, number: int) -> dict[str, Any]:
        strategy = await self.router.strategy(self.connection, group)
        if isinstance(strategy, Dropper):
            if strategy.corrupts:
                return {"data": bytes([number]) * FRAGMENT_SIZE}
            never: Deferred[dict[str, Any]] = Deferred()
            strategy.hanging.append(never)
            return await never
        answer = await super().request(group, epoch, index, number)
        self.served.append((number, answer["data"]))
        return answer

    @SpringPush.responder
    async def push(
        self, group: bytes, epoch: int, index: int, number: int, data: bytes
    ) -> dict[str, Any]:
        strategy = await self.router.strategy(self.connection, group)
        if isinstance(strategy, Dropper):
            return {"new": True}
        return await super().push(group, epoch, index, number, data)

    @SpringAcks.responder
    async def acks(self, group: bytes, epoch: int, index: int, macs: bytes) -> dict[str, Any]:
        strategy = await self.router.strategy(self.connection, group)
        if isinstance(strategy, Dropper):
            return {}
        return await super().acks(group, epoch, index, macs)


@implementer(IMulticastStrategyPlugin)
class HostilePlugin:
    """
    ``spring`` at every node but those in :attr:`droppers`.
    """

    name = "spring"
    description = "spring, with some members hostile"

    def __init__(self, activates: bool = False, corrupts: bool = False) -> None:
        self.honest = SpringStrategyPlugin()
        self.activates = activates
        self.corrupts = corrupts
        self.droppers: set[PeerID] = set()
        HostileResponder.served = []

    def make_strategy(self, context: IStrategyContext) -> IMulticastStrategy:
        if context.local in self.droppers:
            return Dropper(context, self.activates, self.corrupts)
        return self.honest.make_strategy(context)

    def locator(self, connection: Any, router: IStrategyRouter) -> amp.CommandLocator:
        return HostileResponder(connection, router)


def _seeded(net: GroupNetwork, name: str, seed: int) -> MulticastService:
    """
    A node whose identity comes from ``seed`` and its name: one run, one
    group, whatever the test's order.
    """
    return net.node(name, identity=Identity.from_seed(blake2b(f"{seed} {name}".encode())))


def blake2b(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


#: Seconds after publishing by which every honest online member must have
#: committed a 1 MiB message, with 30 % of the members hostile; and by which
#: the owner's delivery report must count them all.
DEADLINE = 30.0
REPORT_DEADLINE = 60.0


class DropperTests(SynchronousTestCase):
    def _droppers(self, activates: bool, seed: int) -> None:
        """
        6 of 20 members drop everything they should forward; with
        ``activates``, they also pass activations on to their neighbours,
        so as to be the activator whose acknowledgements they drop.
        """
        plugin = HostilePlugin(activates)
        net = GroupNetwork({"spring": plugin})
        owner = _seeded(net, "owner", seed)
        members = [_seeded(net, f"m{i}", seed) for i in range(20)]
        droppers, honest = members[:6], members[6:]
        group_id = net.group(owner, *members, strategy="spring")
        plugin.droppers |= {m.local for m in droppers}
        got = [net.subscribe(m, group_id) for m in honest]
        data = bytes(range(256)) * 4096
        started = net.clock.seconds()
        report = net.result(owner.publish(group_id, data, "big.bin"))
        net.clock.run_until(lambda: all(got), limit=DEADLINE)
        took = net.clock.seconds() - started
        self.assertEqual([len(g) for g in got], [1] * len(honest), f"seed {seed}, {took:.1f} s")
        for messages in got:
            self.assertEqual(messages[0].data, data)
        everyone = frozenset(m.local for m in honest)
        net.clock.run_until(lambda: everyone <= report.committed, limit=REPORT_DEADLINE)
        self.assertEqual(report.committed, everyone, f"seed {seed}")

    def test_droppers_do_not_stop_honest_members(self) -> None:
        """
        With 30 % of the members dropping everything they should forward
        (they take activations, say they hold every fragment so that others
        ask them, answer no request, drop pushes and acknowledgements),
        every honest member commits a 1 MiB message within
        :data:`DEADLINE`, and the owner's report counts each of them within
        :data:`REPORT_DEADLINE` (three groups).
        """
        for seed in range(3):
            self._droppers(False, seed)

    def test_droppers_that_activate_do_not_stop_honest_members(self) -> None:
        """
        The same when the droppers also pass activations on, to become the
        activator of honest members and swallow their acknowledgements:
        the owner asks the members it has not heard from directly.
        """
        for seed in range(3):
            self._droppers(True, seed)


def _spring(service: MulticastService, group_id: bytes) -> SpringStrategy:
    got: list[Any] = []
    service.strategy_of(group_id).addCallback(got.append)
    [strategy] = got
    assert isinstance(strategy, SpringStrategy), strategy
    return strategy


def _dials(service: MulticastService) -> list[PeerID]:
    """
    Record the peers ``service``'s strategies open a connection to (rather
    than reuse one the peer opened), in the returned list.
    """
    dialled: list[PeerID] = []
    proven_connection = service.proven_connection
    call_proven = service.call_proven

    def spy(group_id: bytes, peer: PeerID) -> Deferred[Any]:
        if peer not in service.pool.connections():
            dialled.append(peer)
        return proven_connection(group_id, peer)

    def spy_call(group_id: bytes, peer: PeerID, *args: Any) -> Deferred[Any]:
        if peer not in service.pool.connections():
            dialled.append(peer)
        return call_proven(group_id, peer, *args)

    service.proven_connection = spy  # type: ignore[method-assign]
    service.call_proven = spy_call  # type: ignore[method-assign]
    return dialled


def _failures(net: GroupNetwork, calls: list[Deferred[Any]]) -> list[Any]:
    """
    Run the clock until every call has an answer: each answer's result,
    or the type of its error.
    """
    results: list[Any] = [None] * len(calls)
    done: list[int] = []

    def record(result: Any, i: int) -> None:
        results[i] = result.type if isinstance(result, Failure) else result
        done.append(i)

    for i, d in enumerate(calls):
        d.addBoth(record, i)
    net.clock.run_until(lambda: len(done) == len(calls), limit=60)
    return results


class _Replayed:
    """
    Member ``a`` of an owner's group was offline while a 3-fragment
    message went out; ``h``, another member, got it.  Back online, ``a``
    is activated by ``h`` alone, which says it holds nothing: ``a`` runs
    a transmission in which ``h`` is its only peer, and ``h`` can do as
    it pleases.
    """

    def __init__(self, others: int = 0, activate: bool = True, away: float = 0.0) -> None:
        """
        :param others: how many more members the group has.
        :param activate: whether ``h`` activates ``a``.
        :param away: seconds ``a`` stays away after the others have the
            message (past their transmissions, once over 20 s).
        """
        self.net = net = GroupNetwork({"spring": SpringStrategyPlugin()})
        self.owner = _seeded(net, "owner", 0)
        self.a, self.h = _seeded(net, "a", 0), _seeded(net, "h", 0)
        self.others = [_seeded(net, f"o{i}", 0) for i in range(others)]
        self.group_id = net.group(self.owner, self.a, self.h, *self.others, strategy="spring")
        # Neighbour lists reach the members.
        net.run(5)
        net.network.take_offline("a", refuse=True)
        report = net.result(self.owner.publish(self.group_id, bytes(3 * FRAGMENT_SIZE), "f"))
        self.sealed = net.result(self.owner.sealed_message(self.group_id, 0, 0))
        net.result(report.transmitted)
        # The others' part is over: none of them tries to reach ``a`` again
        # (they would, for 20 s), so that ``h`` alone activates it.
        for member in [self.h, *self.others]:
            for transmission in list(_spring(member, self.group_id)._transmissions.values()):
                transmission.end("over")
        net.run(away)
        net.network.bring_online("a")
        # Past the pool's back-off from the attempts made while it was away.
        net.run(2)
        self.dialled = _dials(self.a)
        self.connection = net.result(self.h.proven_connection(self.group_id, self.a.local))
        if activate:
            self.activate()
            self.transmission = _spring(self.a, self.group_id).transmission(0, 0)

    def activate(self, manifest: bytes | None = None, **more: Any) -> Any:
        """
        ``h`` activates ``a`` with ``manifest`` (the genuine one by
        default), saying it holds nothing: the answer, or the error's type.

        :param more: more arguments of ``spring-activate``.
        """
        [answer] = _failures(
            self.net,
            self.calls(
                1,
                SpringActivate,
                manifest=self.sealed.signed_manifest if manifest is None else manifest,
                have=b"",
                hint=b"",
                **more,
            ),
        )
        return answer

    def call(self, command: type[amp.Command], **arguments: Any) -> Any:
        return self.net.result(self.calls(1, command, **arguments)[0])

    def calls(self, n: int, command: type[amp.Command], **arguments: Any) -> list[Any]:
        return [
            self.connection.callRemote(command, group=self.group_id, **arguments) for _ in range(n)
        ]


class FloodTests(SynchronousTestCase):
    def test_announcement_flood_refused(self) -> None:
        """
        A peer's announcements of one transmission are bounded (twice the
        fragments, and 16): beyond, it is refused and dropped from the
        transmission, and everything else it sends is refused too; what
        the member keeps of it does not grow with the flood.
        """
        replayed = _Replayed()
        count = len(replayed.sealed.fragments)
        bound = 2 * count + 16
        answers = _failures(
            replayed.net,
            replayed.calls(1000, SpringHave, epoch=0, index=0, have=encode_bitmap(1)),
        )
        self.assertEqual(answers[:bound], [{}] * bound)
        self.assertEqual(set(answers[bound:]), {SpringRefused})
        state = replayed.transmission.peers[replayed.h.local]
        self.assertTrue(state.bad)
        self.assertEqual(state.announces, bound + 1)
        [request] = _failures(
            replayed.net, replayed.calls(1, SpringRequest, epoch=0, index=0, number=0)
        )
        self.assertIs(request, SpringRefused)

    def test_request_flood_refused(self) -> None:
        """
        A peer's requests in one transmission are bounded (three times the
        fragments, and 16), and the member serves at most 2 of its
        requests at once (BUSY beyond): a flood is refused and its sender
        dropped.
        """
        replayed = _Replayed()
        count = len(replayed.sealed.fragments)
        bound = 3 * count + 16
        answers = _failures(
            replayed.net,
            replayed.calls(1000, SpringRequest, epoch=0, index=0, number=0),
        )
        self.assertEqual(set(answers), {SpringRefused})
        state = replayed.transmission.peers[replayed.h.local]
        self.assertTrue(state.bad)
        self.assertEqual(state.requests, bound + 1)
        self.assertEqual(state.serving, 0)

    def test_serving_per_peer_bounded(self) -> None:
        """
        Of a burst of requests for fragments the member holds, it serves
        at most :data:`MAX_SERVING_PER_PEER` at once and says BUSY to the
        rest (its upload budget is full), so that one peer cannot queue up
        the member's whole upload.
        """
        replayed = _Replayed()
        net = replayed.net
        # The member holds every fragment, and its upload budget is spent
        # for a while.
        transmission = replayed.transmission
        for number, fragment in enumerate(replayed.sealed.fragments):
            transmission.data[number] = fragment
            transmission.held |= 1 << number
        _spring(replayed.a, replayed.group_id).budget.reserve(10 * FRAGMENT_SIZE, 0.0)
        answers = _failures(net, replayed.calls(10, SpringRequest, epoch=0, index=0, number=1))
        served = [x for x in answers if isinstance(x, dict)]
        self.assertEqual(len(served), MAX_SERVING_PER_PEER)
        self.assertEqual(answers.count(SpringBusy), 10 - MAX_SERVING_PER_PEER)
        for answer in served:
            self.assertEqual(answer["data"], replayed.sealed.fragments[1])

    def test_peer_places_taken_still_leave_room_for_owner(self) -> None:
        """
        Members that fill every place for peers of a member's transmission
        (:data:`MAX_PEERS`, by announcing that they hold nothing) do not
        cut it off from the owner: the owner's catch-up still gets it the
        message.
        """
        # Away past the others' transmissions, and past the owner's first
        # retry (the next is two minutes later), so that nobody but ``h``
        # has activated it.
        replayed = _Replayed(others=MAX_PEERS, away=100)
        net, a = replayed.net, replayed.a
        got = net.subscribe(a, replayed.group_id)
        for other in replayed.others:
            connection = net.result(other.proven_connection(replayed.group_id, a.local))
            _failures(
                net,
                [
                    connection.callRemote(
                        SpringHave, group=replayed.group_id, epoch=0, index=0, have=b""
                    )
                ],
            )
        self.assertEqual(len(replayed.transmission.peers), MAX_PEERS)
        self.assertNotIn(replayed.owner.local, replayed.transmission.peers)
        self.assertEqual(replayed.transmission.held, 0)
        net.result(a.pool.connect(replayed.owner.local))
        # Sooner than the transmission would stall and start afresh.
        net.clock.run_until(lambda: bool(got), limit=STALL_TIMEOUT / 2)
        self.assertEqual([m.data for m in got], [bytes(3 * FRAGMENT_SIZE)])

    def test_acknowledgement_flood_refused(self) -> None:
        """
        Acknowledgements a peer gives a member to carry to the owner are
        bounded per peer (:data:`MAX_ACKS_PER_PEER`) and in all
        (:data:`MAX_ACKS`, duplicates counted once): a flood is refused and
        its sender dropped.
        """
        replayed = _Replayed()
        box = [bytes([i % 256, i // 256]) * 16 for i in range(MAX_ACKS_PER_BOX)]
        answers = _failures(
            replayed.net,
            [
                replayed.connection.callRemote(
                    SpringAcks,
                    group=replayed.group_id,
                    epoch=0,
                    index=0,
                    macs=b"".join(box),
                )
                for _ in range(MAX_ACKS_PER_PEER // MAX_ACKS_PER_BOX + 3)
            ],
        )
        per_peer = MAX_ACKS_PER_PEER // MAX_ACKS_PER_BOX
        self.assertEqual(answers[:per_peer], [{}] * per_peer)
        self.assertEqual(set(answers[per_peer:]), {SpringRefused})
        self.assertTrue(replayed.transmission.peers[replayed.h.local].bad)
        self.assertLessEqual(len(replayed.transmission.acks_seen), MAX_ACKS)


class BadFragmentTests(SynchronousTestCase):
    def test_fragments_checked_before_stored_or_forwarded(self) -> None:
        """
        Members that answer requests with bytes of their own (3 of 10, who
        say they hold every fragment): every honest member commits the
        genuine message, stores only fragments that match the signed
        manifest, serves only those, and drops the liars it asked.
        """
        plugin = HostilePlugin(corrupts=True)
        net = GroupNetwork({"spring": plugin})
        owner = _seeded(net, "owner", 0)
        members = [_seeded(net, f"m{i}", 0) for i in range(10)]
        liars, honest = members[:3], members[3:]
        group_id = net.group(owner, *members, strategy="spring")
        plugin.droppers |= {m.local for m in liars}
        stored: list[AddFragment] = []
        for member in honest:
            commit = member.store.commit

            def spy(*changes: Any, commit: Any = commit) -> Deferred[None]:
                stored.extend(c for c in changes if isinstance(c, AddFragment))
                return commit(*changes)

            member.store.commit = spy  # type: ignore[method-assign]
        got = [net.subscribe(m, group_id) for m in honest]
        data = bytes(range(256)) * 4096
        report = net.result(owner.publish(group_id, data, "big.bin"))
        sealed = net.result(owner.sealed_message(group_id, 0, 0))
        net.clock.run_until(lambda: all(got), limit=DEADLINE)
        self.assertEqual([[m.data for m in g] for g in got], [[data]] * len(honest))
        self.assertTrue(stored)
        for change in stored:
            self.assertEqual(change.data, sealed.fragments[change.number])
        self.assertTrue(HostileResponder.served)
        for number, fragment in HostileResponder.served:
            self.assertEqual(fragment, sealed.fragments[number])
        dropped = [
            peer
            for member in honest
            for t in _spring(member, group_id)._transmissions.values()
            for peer, state in t.peers.items()
            if state.bad
        ]
        self.assertLessEqual(set(dropped), {m.local for m in liars})
        everyone = frozenset(m.local for m in honest)
        net.clock.run_until(lambda: everyone <= report.committed, limit=REPORT_DEADLINE)
        self.assertEqual(report.committed, everyone)

    def test_push_only_from_owner(self) -> None:
        """
        A fragment pushed unasked by anyone but the owner is refused and
        not stored, even a genuine one.
        """
        replayed = _Replayed()
        [answer] = _failures(
            replayed.net,
            replayed.calls(
                1, SpringPush, epoch=0, index=0, number=0, data=replayed.sealed.fragments[0]
            ),
        )
        self.assertIs(answer, SpringRefused)
        self.assertEqual(replayed.transmission.held, 0)
        self.assertEqual(
            replayed.net.result(replayed.a.store.fragments(replayed.group_id, 0, 0)), {}
        )

    def test_bad_fragment_on_activation_refused(self) -> None:
        """
        A message of one fragment rides on the activation: with bytes that
        do not match its manifest, the activation is refused and nothing
        is stored.
        """
        net = GroupNetwork({"spring": SpringStrategyPlugin()})
        owner = _seeded(net, "owner", 0)
        a, h = _seeded(net, "a", 0), _seeded(net, "h", 0)
        group_id = net.group(owner, a, h, strategy="spring")
        net.network.take_offline("a", refuse=True)
        report = net.result(owner.publish(group_id, b"short"))
        sealed = net.result(owner.sealed_message(group_id, 0, 0))
        net.result(report.transmitted)
        net.network.bring_online("a")
        net.run(2)
        connection = net.result(h.proven_connection(group_id, a.local))
        bad = bytes(len(sealed.fragments[0]))
        [answer] = _failures(
            net,
            [
                connection.callRemote(
                    SpringActivate,
                    group=group_id,
                    manifest=sealed.signed_manifest,
                    have=encode_bitmap(1),
                    hint=b"",
                    data=bad,
                )
            ],
        )
        self.assertIs(answer, SpringRefused)
        self.assertEqual(net.result(a.store.fragments(group_id, 0, 0)), {})


class TimeoutTests(SynchronousTestCase):
    def test_stalled_transfer_times_out_and_frees_memory(self) -> None:
        """
        The owner goes offline before every fragment left it, so no
        member can complete: after :data:`STALL_TIMEOUT` without progress
        each member's transmission ends, its fragments dropped from
        memory and its timers gone, and once the connections went idle no
        member holds a connection or a timer of its upload budget.  The
        owner, back, still gets the
        message to everyone (its catch-up).
        """
        net = GroupNetwork({"spring": SpringStrategyPlugin()})
        owner = _seeded(net, "owner", 0)
        members = [_seeded(net, f"m{i}", 0) for i in range(5)]
        group_id = net.group(owner, *members, strategy="spring")
        got = [net.subscribe(m, group_id) for m in members]
        net.result(owner.publish(group_id, bytes(range(256)) * 4096, "big.bin"))
        strategies = [_spring(m, group_id) for m in members]

        def started() -> bool:
            return any(t.held for s in strategies for t in s._transmissions.values())

        net.clock.run_until(started, limit=10)
        net.network.take_offline("owner")
        transmissions = [t for s in strategies for t in s._transmissions.values()]
        self.assertTrue(transmissions)
        self.assertFalse(any(t.complete for t in transmissions))
        net.run(STALL_TIMEOUT + 10)
        self.assertEqual([s.transmissions for s in strategies], [0] * len(members))
        for t in transmissions:
            self.assertTrue(t.ended)
            self.assertEqual((t.data, t.peers, t._timer), ({}, {}, None))
        self.assertEqual(got, [[]] * len(members))
        net.run(net.idle_timeout * 2)
        for member, strategy in zip(members, strategies, strict=True):
            self.assertEqual(member.pool.connections(), {})
            self.assertIsNone(strategy.budget._timer)
        net.network.bring_online("owner")
        net.clock.run_until(lambda: all(got), limit=3 * 3600)
        self.assertEqual([len(g) for g in got], [1] * len(members))

    def test_owner_ends_transmission_nobody_takes(self) -> None:
        """
        At the owner, a transmission whose members are all offline ends
        (its report says they were not reached) and leaves no transmission
        and no timer of its own.
        """
        net = GroupNetwork({"spring": SpringStrategyPlugin()})
        owner = _seeded(net, "owner", 0)
        members = [_seeded(net, f"m{i}", 0) for i in range(3)]
        group_id = net.group(owner, *members, strategy="spring")
        for i in range(len(members)):
            net.network.take_offline(f"m{i}")
        report = net.result(owner.publish(group_id, bytes(3 * FRAGMENT_SIZE), "f"))
        net.result(report.transmitted, limit=600)
        self.assertEqual(report.unreached, frozenset(m.local for m in members))
        strategy = _spring(owner, group_id)
        net.clock.run_until(lambda: strategy.transmissions == 0, limit=600)
        self.assertEqual(strategy.transmissions, 0)


class MembershipTests(SynchronousTestCase):
    def test_no_fragment_without_membership_proof(self) -> None:
        """
        A member serves a fragment it holds to a member that proved
        membership on the connection, and to nobody else: a stranger, a
        member of another group proven for that group, and a member
        removed since it proved (its proof is of the old epoch) all get
        the same NOT_PROVEN, for every ``spring`` command.
        """
        replayed = _Replayed()
        net, a, h = replayed.net, replayed.a, replayed.h
        transmission = replayed.transmission
        for number, fragment in enumerate(replayed.sealed.fragments):
            transmission.data[number] = fragment
            transmission.held |= 1 << number
        request = {"group": replayed.group_id, "epoch": 0, "index": 0, "number": 1}
        answer = net.result(replayed.connection.callRemote(SpringRequest, **request))
        self.assertEqual(answer["data"], replayed.sealed.fragments[1])

        def refused_everything(connection: Any) -> None:
            group = replayed.group_id
            calls = [
                connection.callRemote(SpringRequest, **request),
                connection.callRemote(
                    SpringActivate,
                    group=group,
                    manifest=replayed.sealed.signed_manifest,
                    have=b"",
                    hint=b"",
                ),
                connection.callRemote(SpringHave, group=group, epoch=0, index=0, have=b""),
                connection.callRemote(
                    SpringPush, group=group, epoch=0, index=0, number=1, data=b"x"
                ),
                connection.callRemote(SpringAcks, group=group, epoch=0, index=0, macs=bytes(32)),
            ]
            self.assertEqual(_failures(net, calls), [MembershipNotProven] * len(calls))

        stranger = _seeded(net, "stranger", 0)
        refused_everything(net.result(stranger.pool.connect(a.local)))
        other_owner = _seeded(net, "other", 0)
        other = net.group(other_owner, stranger, a, strategy="spring")
        refused_everything(net.result(stranger.proven_connection(other, a.local)))
        net.result(replayed.owner.remove_member(replayed.group_id, h.local))
        # Connecting, a gets what the owner keeps for it at once.
        net.result(a.pool.connect(replayed.owner.local))
        net.clock.run_until(
            lambda: net.result(a.store.epoch(replayed.group_id)).epoch == 1, limit=60
        )
        refused_everything(replayed.connection)


class ActivationTests(SynchronousTestCase):
    def test_acted_on_only_once_manifest_verifies(self) -> None:
        """
        An activation whose manifest is not the owner's (signed by another
        key, its signature changed, of another group, or not a manifest)
        is refused: the member keeps no message and no transmission, and
        dials nobody.
        """
        replayed = _Replayed(others=3, activate=False)
        net, a = replayed.net, replayed.a
        genuine = replayed.sealed.signed_manifest
        manifest = decode_manifest(genuine)
        changed = bytearray(genuine)
        changed[-1] ^= 1
        other_owner = _seeded(net, "other", 0)
        other = net.group(other_owner, replayed.h, a, strategy="spring")
        net.result(net.result(other_owner.publish(other, bytes(3 * FRAGMENT_SIZE), "f")).settled())
        elsewhere = net.result(other_owner.sealed_message(other, 0, 0)).signed_manifest
        for forged in [
            sign_manifest(manifest, bytes(32)),
            bytes(changed),
            elsewhere,
            b"not a manifest",
        ]:
            self.assertIs(replayed.activate(forged), SpringRefused)
        self.assertEqual(_spring(a, replayed.group_id).transmissions, 0)
        self.assertRaises(NotStored, net.result, a.store.message(replayed.group_id, 0, 0))
        self.assertEqual(replayed.dialled, [])

    def test_only_the_owner_stops_an_activation_passing_on(self) -> None:
        """
        ``relay`` false on an activation from another member is not
        heeded (only the owner, which activates every member itself when
        it sets it, may say so): the member passes the activation on to
        each of its neighbours as usual, so a hostile member cannot cut
        off the members behind the one it activates.
        """
        activations: list[PeerID] = []
        replayed = _Replayed(others=4, activate=False)
        for other in replayed.others:
            strategy = _spring(other, replayed.group_id)

            def spy(peer: PeerID, *args: Any, activated: Any = strategy.activated) -> Any:
                activations.append(peer)
                return activated(peer, *args)

            strategy.activated = spy  # type: ignore[method-assign]
        self.assertIsInstance(replayed.activate(relay=False), dict)
        replayed.net.run(1)
        self.assertEqual(activations.count(replayed.a.local), len(replayed.others))

    def test_replayed_activation_changes_nothing(self) -> None:
        """
        The same activation again, five times, while the transmission runs:
        the same transmission, the same peers, and no activation passed on
        again; once the member committed the message, and after it is
        killed and restarted, a replayed activation from a member is
        answered "complete" and starts nothing: no transmission, no
        connection.
        """
        activations: list[PeerID] = []
        replayed = _Replayed(others=4, activate=False)
        net, a = replayed.net, replayed.a
        for other in replayed.others:
            strategy = _spring(other, replayed.group_id)

            def spy(peer: PeerID, *args: Any, activated: Any = strategy.activated) -> Any:
                activations.append(peer)
                return activated(peer, *args)

            strategy.activated = spy  # type: ignore[method-assign]
        self.assertIsInstance(replayed.activate(), dict)
        transmission = _spring(a, replayed.group_id).transmission(0, 0)
        net.run(1)
        passed_on = activations.count(a.local)
        self.assertEqual(passed_on, len(replayed.others))
        peers = dict(transmission.peers)
        for _ in range(5):
            self.assertIsInstance(replayed.activate(), dict)
        net.run(1)
        self.assertIs(_spring(a, replayed.group_id).transmission(0, 0), transmission)
        self.assertEqual(transmission.peers.keys(), peers.keys())
        self.assertEqual(activations.count(a.local), passed_on)
        got = net.subscribe(a, replayed.group_id)
        net.result(a.pool.connect(replayed.owner.local))
        net.clock.run_until(lambda: bool(got), limit=60)
        net.clock.run_until(lambda: _spring(a, replayed.group_id).transmissions == 0, limit=120)
        # The transmission's connections closed with it.
        net.run(10)
        replayed.connection = net.result(replayed.h.proven_connection(replayed.group_id, a.local))
        self.assertEqual(replayed.activate(), {"have": b"", "complete": True})
        self.assertEqual(_spring(a, replayed.group_id).transmissions, 0)
        a = replayed.a = net.restart("a")
        dialled = _dials(a)
        net.run(2)
        replayed.connection = net.result(replayed.h.proven_connection(replayed.group_id, a.local))
        self.assertEqual(replayed.activate(), {"have": b"", "complete": True})
        self.assertEqual(_spring(a, replayed.group_id).transmissions, 0)
        self.assertEqual(dialled, [])

    def test_dials_only_owner_named_neighbours(self) -> None:
        """
        Throughout a transmission to 12 members, a member opens
        connections (and so proves membership first) only to neighbours
        the owner named and to the owner: whoever activates it or asks it
        for fragments, it talks to others only over connections they
        opened.
        """
        net = GroupNetwork({"spring": SpringStrategyPlugin()})
        owner = _seeded(net, "owner", 0)
        members = [_seeded(net, f"m{i}", 0) for i in range(12)]
        group_id = net.group(owner, *members, strategy="spring")
        dialled = {m.local: _dials(m) for m in members}
        report = net.result(owner.publish(group_id, bytes(range(256)) * 4096, "big.bin"))
        net.result(report.settled(), limit=60)
        self.assertTrue(any(dialled.values()))
        for member in members:
            named = net.result(member.context(group_id)).neighbours() | {owner.local}
            self.assertLessEqual(set(dialled[member.local]), named)
