"""
Hostile storage (issue 12, item 6): a mailbox that drops, reorders,
replays, alters or withholds what it holds can deny service, but cannot
make a member accept anything false or miss anything silently; gaps are
detected and fetched elsewhere, and the member's report names the source.
And the bounds of what one peer can make a node do when it asks it for a
catch-up.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.cli._network import _caught_up
from digitalspring.identity import Identity, PeerID
from digitalspring.multicast import (
    FRAGMENT_SIZE,
    MembershipNotProven,
    MulticastService,
    SpringStrategyPlugin,
)
from digitalspring.multicast._catchup import SHORT_RETRY, CatchUpReport
from digitalspring.multicast._catchup_serve import MAX_SERVING, MAX_SERVING_PER_PEER, CatchUpServer
from digitalspring.multicast._catchup_wire import (
    CatchUpBusy,
    CatchUpFragment,
    CatchUpRefused,
    CatchUpSince,
    decode_entries,
    encode_entry,
)
from digitalspring.multicast._manifest import decode_manifest
from digitalspring.multicast._spring_upload import MAX_WAITING
from digitalspring.storage import StoreLimits
from digitalspring.testing import GroupNetwork

#: What the owner sends while the member is away: texts and a file of
#: three fragments.
SENT = [b"one", b"two", bytes(range(256)) * (2 * FRAGMENT_SIZE // 256 + 10), b"four"]


def _entries(entries: bytes) -> list[tuple[bytes, int]]:
    return decode_entries(entries)


def _pack(entries: list[tuple[bytes, int]]) -> bytes:
    return b"".join(
        encode_entry(m, frozenset(n for n in range(bits.bit_length()) if bits >> n & 1))
        for m, bits in entries
    )


class Dropping(CatchUpServer):
    """
    Leaves message 1 out of its answers, and shows message 0 as the newest
    it holds.
    """

    async def since(
        self, peer: PeerID, group_id: bytes, after: tuple[int, int]
    ) -> tuple[bytes, bytes | None]:
        entries, _newest = await super().since(peer, group_id, after)
        kept = [(m, b) for m, b in _entries(entries) if decode_manifest(m).index != 1]
        first = await super().since(peer, group_id, (0, -1))
        return _pack(kept), _pack(_entries(first[0])[:1])


class Reordering(CatchUpServer):
    """
    Answers with the messages in reverse order.
    """

    async def since(
        self, peer: PeerID, group_id: bytes, after: tuple[int, int]
    ) -> tuple[bytes, bytes | None]:
        entries, newest = await super().since(peer, group_id, after)
        return _pack(list(reversed(_entries(entries)))), newest


class Replaying(CatchUpServer):
    """
    Answers with every message it holds, from the first, whatever it is
    asked.
    """

    async def since(
        self, peer: PeerID, group_id: bytes, after: tuple[int, int]
    ) -> tuple[bytes, bytes | None]:
        return await super().since(peer, group_id, (0, -1))


class AlteringManifests(CatchUpServer):
    """
    Changes one byte of every manifest it sends (in its content's size).
    """

    async def since(
        self, peer: PeerID, group_id: bytes, after: tuple[int, int]
    ) -> tuple[bytes, bytes | None]:
        entries, newest = await super().since(peer, group_id, after)
        altered = []
        for manifest, bits in _entries(entries):
            changed = bytearray(manifest)
            changed[-70] ^= 1
            altered.append((bytes(changed), bits))
        return _pack(altered), newest


class AlteringFragments(CatchUpServer):
    """
    Changes one byte of every fragment it sends.
    """

    async def fragment(
        self, peer: PeerID, group_id: bytes, epoch: int, index: int, number: int
    ) -> bytes:
        data = bytearray(await super().fragment(peer, group_id, epoch, index, number))
        data[0] ^= 1
        return bytes(data)


class Truncating(CatchUpServer):
    """
    Hides the newest message: answers, consistently, as though it held
    nothing after message 2 (no gap, a signed newest of its own).
    """

    async def since(
        self, peer: PeerID, group_id: bytes, after: tuple[int, int]
    ) -> tuple[bytes, bytes | None]:
        entries, _newest = await super().since(peer, group_id, after)
        kept = [(m, b) for m, b in _entries(entries) if decode_manifest(m).index <= 2]
        everything, _ = await super().since(peer, group_id, (0, -1))
        shown = [(m, b) for m, b in _entries(everything) if decode_manifest(m).index == 2]
        return _pack(kept), _pack(shown)


class Withholding(CatchUpServer):
    """
    Says what it holds, and then gives no fragment of it: one request is
    refused, the next never answered.
    """

    asked = 0

    def fragment(self, peer: PeerID, group_id: bytes, epoch: int, index: int, number: int) -> Any:
        self.asked += 1
        if self.asked % 2:
            raise CatchUpRefused("no")
        return Deferred()


def _network() -> GroupNetwork:
    return GroupNetwork({"spring": SpringStrategyPlugin()})


class HostileMailboxTests(SynchronousTestCase):
    """
    A member catching up while the owner is away, from a hostile mailbox,
    its neighbour (a member that committed everything, so it holds the
    manifests and no fragment) and, in some cases, an honest mailbox.
    """

    def _catch_up(
        self, hostile: type[CatchUpServer], honest: bool
    ) -> tuple[MulticastService, list[Any], CatchUpReport, MulticastService]:
        net = _network()
        owner, member, neighbour = net.node("owner"), net.node("member"), net.node("neighbour")
        bad = net.node("bad", mailbox=StoreLimits())
        group_id = net.group(owner, member, neighbour, strategy="spring")
        net.add_mailbox(owner, group_id, bad)
        if honest:
            net.add_mailbox(owner, group_id, net.node("good", mailbox=StoreLimits()))
        net.run(60)
        net.down("member")
        for data in SENT:
            report = net.result(owner.publish(group_id, data, "f.bin"))
            net.clock.run_until(
                lambda r=report: bad.local in r.committed and neighbour.local in r.committed,
                limit=600,
            )
        net.run(600)
        net.down("owner")
        bad.catch_up_server = hostile(bad.store, net.clock, 1_250_000)
        member = net.up("member")
        got = net.subscribe(member, group_id)
        net.run(600)
        report = member.caught_up[group_id]
        # Whatever it got is the owner's, whole, in order.
        self.assertEqual([m.data for m in got], SENT[: len(got)])
        self.assertEqual([m.index for m in got], list(range(len(got))))
        history = net.result(member.history(group_id))
        self.assertEqual([m.data for m in history], SENT[: len(got)])
        return member, got, report, bad

    def _all_from_the_honest_one(self, hostile: type[CatchUpServer]) -> CatchUpReport:
        _member, got, report, _bad = self._catch_up(hostile, honest=True)
        self.assertEqual([m.data for m in got], SENT)
        self.assertTrue(report.caught_up)
        self.assertEqual(report.newest, (0, 3))
        return report

    def test_dropping_mailbox(self) -> None:
        """
        A mailbox that leaves a message out and hides its newest: with an
        honest mailbox the member gets everything; alone, the gap is found
        (the neighbour shows the newest message under the owner's
        signature), the message left out and those after it are reported
        missing, and the mailbox is named for its gap.
        """
        report = self._all_from_the_honest_one(Dropping)
        self.assertIn(self._bad_peer(report), report.gaps)
        _member, got, report, bad = self._catch_up(Dropping, honest=False)
        self.assertEqual([m.data for m in got], SENT[:1])
        self.assertEqual(report.newest, (0, 3))
        self.assertEqual(report.missing, ((0, 1), (0, 2), (0, 3)))
        self.assertFalse(report.caught_up)
        self.assertEqual(report.gaps, frozenset({bad.local}))

    def _bad_peer(self, report: CatchUpReport) -> PeerID:
        [peer] = report.gaps | report.misbehaved | report.held_back
        return peer

    def test_reordering_mailbox(self) -> None:
        """
        A mailbox that answers out of order changes nothing: the member
        commits every message in order, each once, from it alone.
        """
        _member, got, report, _bad = self._catch_up(Reordering, honest=False)
        self.assertEqual([m.data for m in got], SENT)
        self.assertTrue(report.caught_up)
        self.assertEqual(report.misbehaved | report.held_back, frozenset())

    def test_replaying_mailbox(self) -> None:
        """
        A mailbox that replays messages the member has, whatever it is
        asked, is named and ignored: nothing is committed twice, and the
        member gets the rest from the honest mailbox.
        """
        _member, got, report, bad = self._catch_up(Replaying, honest=True)
        self.assertEqual([m.data for m in got], SENT)
        self.assertTrue(report.caught_up)
        # It answered honestly the first time (nothing was committed yet);
        # its replay in the next round named it.
        self.assertEqual(report.misbehaved, frozenset({bad.local}))

    def test_altering_mailbox(self) -> None:
        """
        A mailbox that changes manifests, or fragments, is named and
        ignored: nothing it changed is accepted, and the member gets every
        message from the honest mailbox; alone, it gets none, and the
        report names the mailbox and what is missing.
        """
        for hostile in (AlteringManifests, AlteringFragments):
            report = self._all_from_the_honest_one(hostile)
            self.assertEqual(len(report.misbehaved), 1)
            _member, got, report, bad = self._catch_up(hostile, honest=False)
            self.assertEqual(got, [])
            self.assertEqual(report.misbehaved, frozenset({bad.local}))
            self.assertEqual(report.missing, ((0, 0), (0, 1), (0, 2), (0, 3)))

    def test_withholding_mailbox(self) -> None:
        """
        A mailbox that says it holds fragments and gives none (refusing,
        or never answering) is named as holding back; the member fetches
        them from the honest mailbox, and alone it reports them missing.
        """
        report = self._all_from_the_honest_one(Withholding)
        self.assertEqual(len(report.held_back), 1)
        _member, got, report, bad = self._catch_up(Withholding, honest=False)
        self.assertEqual(got, [])
        self.assertEqual(report.held_back, frozenset({bad.local}))
        self.assertEqual(report.missing, ((0, 0), (0, 1), (0, 2), (0, 3)))


def _notifications(box: MulticastService, member: MulticastService) -> list[bytes]:
    found: list[bytes] = []
    box.store.notifications(member.local, 100).addCallback(found.extend)
    return found


class HiddenNewestTests(SynchronousTestCase):
    """
    A mailbox that hides the newest messages, alone online with the member
    (the owner and the neighbours away): the index a notification names is
    the catch-up's target, so the hiding is found, reported and undone.
    """

    def _away(
        self, boxes: bool
    ) -> tuple[GroupNetwork, MulticastService, MulticastService, bytes]:
        """
        The member away while the owner sends SENT; then only the hostile
        mailbox (and the member's notification box) online.
        """
        net = _network()
        owner, member, neighbour = net.node("owner"), net.node("member"), net.node("neighbour")
        bad = net.node("bad", mailbox=StoreLimits())
        good = net.node("good", mailbox=StoreLimits())
        notify = net.node("notify", notify_box=4)
        group_id = net.group(owner, member, neighbour, strategy="spring")
        net.add_mailbox(owner, group_id, bad)
        net.add_mailbox(owner, group_id, good)
        if boxes:
            net.result(member.add_notify_box(notify.local))
        net.run(60)
        net.down("member")
        for data in SENT:
            report = net.result(owner.publish(group_id, data, "f.bin"))
            net.clock.run_until(
                lambda r=report: {bad.local, good.local} <= set(r.committed), limit=600
            )
        net.run(600)
        if boxes:
            # The owner's first notification named message 0; its outbox,
            # failing again, left one naming message 3.
            self.assertEqual(len(_notifications(notify, member)), 2)
        for name in ("owner", "neighbour", "good"):
            net.down(name)
        bad.catch_up_server = Truncating(bad.store, net.clock, 1_250_000)
        return net, member, bad, group_id

    def test_withholding_mailbox_caught_by_notification_index(self) -> None:
        """
        The member's notification names message 3; the mailbox shows 2 as
        its newest and gives 0 to 2.  The report's target is 3, message 3
        is missing, and the mailbox is named as behind, in the log too.
        The member keeps asking: once the honest mailbox is back, the next
        run (on its timer) gets message 3, and the target is forgotten.
        """
        net, member, bad, group_id = self._away(boxes=True)
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        member = net.up("member")
        got = net.subscribe(member, group_id)
        net.run(30)
        report = member.caught_up[group_id]
        self.assertEqual([m.data for m in got], SENT[:3])
        self.assertEqual(report.newest, (0, 3))
        self.assertEqual(report.missing, ((0, 3),))
        self.assertFalse(report.caught_up)
        self.assertEqual(report.behind, frozenset({bad.local}))
        self.assertEqual(report.as_json()["behind"], [str(bad.local)])
        status = {"groups": 1, "messages": 3, "at_start": None, "incomplete": [report.as_json()]}
        self.assertEqual(
            _caught_up(status),
            "caught up:   3 messages in 1 group since start; "
            f"1 not whole (held back by {bad.local}): see --json\n",
        )
        lines = [
            e["log_format"].format(**e)
            for e in logged
            if e.get("log_format", "").startswith("caught up group")
        ]
        self.assertIn(f"held back by {bad.local}", lines[-1])
        self.assertIn("1 missing up to 0/3", lines[-1])
        net.up("good")
        net.run(2 * SHORT_RETRY)
        self.assertEqual([m.data for m in got], SENT)
        report = member.caught_up[group_id]
        self.assertTrue(report.caught_up)
        self.assertEqual((report.committed, report.position), (1, (0, 3)))
        self.assertEqual((member._targets, member._short), ({}, {}))

    def test_hidden_without_notification(self) -> None:
        """
        Without boxes nothing names message 3, so the same mailbox alone
        hides it: the member's report says it caught up to message 2 (what
        the notification's index prevents).  The test shows the scenario
        bites.
        """
        net, member, _bad, group_id = self._away(boxes=False)
        member = net.up("member")
        got = net.subscribe(member, group_id)
        net.run(30)
        self.assertEqual([m.data for m in got], SENT[:3])
        report = member.caught_up[group_id]
        self.assertEqual((report.newest, report.missing), ((0, 2), ()))

    def test_short_catch_up_retried_when_a_source_connects(self) -> None:
        """
        A catch-up that ended short runs again as soon as one of the
        group's sources connects (the honest mailbox, back, dialling the
        member), not only on its timer.
        """
        net, member, _bad, group_id = self._away(boxes=True)
        member = net.up("member")
        start = net.clock.seconds()
        got = net.subscribe(member, group_id)
        net.run(30)
        self.assertFalse(member.caught_up[group_id].caught_up)
        runs: list[bytes] = []
        original = member.catch_up_group

        def counted(group: bytes) -> Deferred[CatchUpReport]:
            runs.append(group)
            return original(group)

        member.catch_up_group = counted  # type: ignore[method-assign]
        good = net.up("good")
        net.result(good.pool.connect(member.local))
        net.run(1)
        self.assertLess(net.clock.seconds() - start, SHORT_RETRY)
        self.assertEqual(runs, [group_id])
        self.assertEqual([m.data for m in got], SENT)
        self.assertTrue(member.caught_up[group_id].caught_up)


class _SlowStore:
    """
    A store whose catch-up reads wait until :meth:`release`.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reads: list[tuple[Deferred[Any], Deferred[Any]]] = []

    def _held(self, d: Deferred[Any]) -> Deferred[Any]:
        waiting: Deferred[Any] = Deferred()
        self.reads.append((waiting, d))
        return waiting

    def held_after(self, *args: Any) -> Deferred[Any]:
        return self._held(self.store.held_after(*args))

    def fragment(self, *args: Any) -> Deferred[Any]:
        return self._held(self.store.fragment(*args))

    def newest(self, *args: Any) -> Deferred[Any]:
        return self.store.newest(*args)

    def release(self) -> None:
        reads, self.reads = self.reads, []
        for waiting, d in reads:
            d.chainDeferred(waiting)


class ServingBoundsTests(SynchronousTestCase):
    """
    What one peer can make a node do by asking it for a catch-up.
    """

    def _served(self) -> tuple[GroupNetwork, MulticastService, MulticastService, bytes]:
        net = _network()
        owner, member = net.node("owner"), net.node("member")
        box = net.node("box", mailbox=StoreLimits())
        group_id = net.group(owner, member, strategy="spring")
        net.add_mailbox(owner, group_id, box)
        for data in SENT:
            net.result(net.result(owner.publish(group_id, data, "f.bin")).settled())
        return net, member, box, group_id

    def test_non_member_refused(self) -> None:
        """
        A peer that did not prove membership of the group on its
        connection gets neither manifests nor fragments.
        """
        net, _member, box, group_id = self._served()
        outsider = net.node("outsider")
        connection = net.result(outsider.pool.connect(box.local))
        for command, args in (
            (CatchUpSince, {"epoch": 0, "index": -1}),
            (CatchUpFragment, {"epoch": 0, "index": 0, "number": 0}),
        ):
            with self.assertRaises(MembershipNotProven):
                net.result(connection.callRemote(command, group=group_id, **args))

    def test_requests_at_once_bounded(self) -> None:
        """
        A node serves at most MAX_SERVING_PER_PEER catch-up requests of one
        peer at once, and MAX_SERVING of all: past them it answers BUSY at
        once, before reading anything; once they are served it serves
        again.
        """
        net, _member, box, group_id = self._served()
        store = _SlowStore(box.store)
        server = CatchUpServer(store, net.clock, rate=1_250_000)  # type: ignore[arg-type]
        peers = [Identity.from_seed(bytes([n + 1]) * 32).peer_id for n in range(MAX_SERVING)]
        first = [
            Deferred.fromCoroutine(server.since(peers[0], group_id, (0, -1)))
            for _ in range(MAX_SERVING_PER_PEER)
        ]
        with self.assertRaises(CatchUpBusy):
            net.result(Deferred.fromCoroutine(server.fragment(peers[0], group_id, 0, 0, 0)))
        others = [
            Deferred.fromCoroutine(server.fragment(peer, group_id, 0, 0, 0))
            for peer in peers[1 : MAX_SERVING - 1]
        ]
        with self.assertRaises(CatchUpBusy):
            net.result(Deferred.fromCoroutine(server.since(peers[-1], group_id, (0, -1))))
        self.assertEqual(len(store.reads), MAX_SERVING)
        store.release()
        for d in first + others:
            self.assertTrue(net.result(d))
        self.assertEqual(server._serving, {})
        again = Deferred.fromCoroutine(server.since(peers[-1], group_id, (0, -1)))
        store.release()
        self.assertTrue(net.result(again))

    def test_upload_bounded(self) -> None:
        """
        What a node sends members catching up goes through an upload
        budget: fragments beyond what it lets go wait in a short queue, and
        requests past the queue are BUSY; all those taken are served, at
        the budget's rate.
        """
        net, _member, box, group_id = self._served()
        server = CatchUpServer(box.store, net.clock, rate=65_000)
        peers = [Identity.from_seed(bytes([n + 1]) * 32).peer_id for n in range(MAX_SERVING)]
        asked = [
            Deferred.fromCoroutine(server.fragment(peer, group_id, 0, 2, 0)) for peer in peers
        ]
        busy: list[Any] = []
        for d in asked:
            d.addErrback(lambda f: busy.append(f.trap(CatchUpBusy)))
        self.assertEqual(len(busy), MAX_SERVING - 3 - MAX_WAITING)
        net.run(MAX_WAITING + 1)
        self.assertEqual(sum(1 for d in asked if d.called), MAX_SERVING)
        self.assertEqual(server.budget.granted, (3 + MAX_WAITING) * FRAGMENT_SIZE)

    def test_bad_requests_refused(self) -> None:
        """
        A request for a message or fragment the node does not hold, or with
        numbers out of any range, is refused.
        """
        net, member, box, group_id = self._served()
        connection = net.result(member.proven_connection(group_id, box.local))
        for args in (
            {"epoch": 0, "index": 9, "number": 0},
            {"epoch": 0, "index": 0, "number": 5},
            {"epoch": -1, "index": 0, "number": 0},
            {"epoch": 2**70, "index": 0, "number": 0},
        ):
            with self.assertRaises(CatchUpRefused):
                net.result(connection.callRemote(CatchUpFragment, group=group_id, **args))
        with self.assertRaises(CatchUpRefused):
            net.result(connection.callRemote(CatchUpSince, group=group_id, epoch=0, index=-2))
        answer = net.result(connection.callRemote(CatchUpSince, group=group_id, epoch=0, index=3))
        self.assertEqual(answer["entries"], b"")
