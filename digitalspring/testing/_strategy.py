# -*- test-case-name: tests.test_unicast -*-
"""
Groups on the memory network, and the conformance tests every multicast
strategy must pass.

A third party runs them against its own plugin::

    from twisted.trial.unittest import SynchronousTestCase
    from digitalspring.testing import StrategyConformanceMixin

    class AcmeConformance(StrategyConformanceMixin, SynchronousTestCase):
        def make_plugin(self):
            return AcmeStrategyPlugin()
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from ..channel import ConnectionPool
from ..dht import DHT, Contact, DHTSettings
from ..directory import IPeerDirectory, UnknownPeer
from ..identity import Identity, PeerID
from ..multicast import (
    FRAGMENT_SIZE,
    FragmentRejected,
    IMulticastStrategyPlugin,
    ManifestOutOfChain,
    MembershipNotProven,
    MulticastService,
    ReceivedMessage,
)
from ..multicast._notices import KEY_BUNDLE
from ..multicast._outbox import RETRY_DELAYS
from ..storage import MemoryStore, StoreLimits
from ..transport import MemoryNetwork, SimulatedClock
from ..transport._memory import MemoryConnection


@implementer(IPeerDirectory)
class _Directory:
    def __init__(self) -> None:
        self.addresses: dict[PeerID, list[str]] = {}

    def resolve(self, peer_id: PeerID) -> Deferred[list[str]]:
        if peer_id not in self.addresses:
            return fail(UnknownPeer(str(peer_id)))
        return succeed(self.addresses[peer_id])


class GroupNetwork:
    """
    Nodes running the multicast service on one memory network and one
    simulated clock, each with a :class:`~digitalspring.storage.MemoryStore`.

    :param latency: the one-way delay in seconds, or a function of the two
        nodes' names that gives it (see :class:`MemoryNetwork`).
    :param dht: when given, every node runs a DHT with these settings
        (joining through the first node made), which its groups use.
    :ivar contacts: whether every node counts every other as a contact
        (so invitations are accepted unasked).
    :ivar sent: the bytes written on every memory connection so far.
    """

    def __init__(
        self,
        plugins: dict[str, IMulticastStrategyPlugin] | None = None,
        latency: float | Callable[[str, str], float] = 0.01,
        idle_timeout: float = 60.0,
        dht: DHTSettings | None = None,
    ) -> None:
        self.clock = SimulatedClock()
        self.dht_settings = dht
        self.dhts: dict[str, DHT] = {}
        self._bootstrap: list[Contact] = []
        self.network = MemoryNetwork(self.clock, latency=latency, seed=1)
        self.directory = _Directory()
        self.plugins = plugins
        self.idle_timeout = idle_timeout
        self.contacts = True
        self.sent = 0
        self.services: dict[str, MulticastService] = {}
        self._listeners: dict[str, Any] = {}
        self._unpatch: Callable[[], None] | None = None

    def count_bytes(self) -> Callable[[], None]:
        """
        Count into :attr:`sent` every byte written on a memory connection.

        :returns: a function that stops counting.
        """
        original = MemoryConnection.write

        def write(connection: MemoryConnection, data: bytes) -> None:
            self.sent += len(data)
            original(connection, data)

        MemoryConnection.write = write  # type: ignore[method-assign,assignment]

        def restore() -> None:
            MemoryConnection.write = original  # type: ignore[method-assign]

        return restore

    def node(
        self,
        name: str,
        store: MemoryStore | None = None,
        identity: Identity | None = None,
        upload_bps: float | None = None,
        download_bps: float | None = None,
        mailbox: StoreLimits | None = None,
        notify_box: int | None = None,
        retry_interval: float = RETRY_DELAYS[-1],
    ) -> MulticastService:
        """
        A new node called ``name``, started.

        :param identity: its identity; a new one by default.
        :param mailbox: its store's limits, for a node that serves as a
            mailbox (a new store gets them).
        :param notify_box: the proof of work it asks of a deposit, for a
            node that serves as a notification box.
        :param retry_interval: the longest wait of its outbox between two
            tries of a peer.
        :param upload_bps: its host's upload rate in bits per second (see
            :meth:`MemoryNetwork.add_host`); unlimited by default, likewise
            ``download_bps``.
        """
        if name not in self.network.hosts:
            self.network.add_host(name, upload_bps=upload_bps, download_bps=download_bps)
        transport = self.network.transport(name)
        identity = identity or Identity.generate()
        pool = ConnectionPool(
            identity,
            self.clock,
            {"memory": transport},
            self.directory,
            idle_timeout=self.idle_timeout,
        )
        transport.listen("1", pool.server_factory).addCallback(
            lambda port: self._listeners.__setitem__(name, port)
        )
        self.directory.addresses[identity.peer_id] = [f"memory:{name}:1"]
        dht = None
        if self.dht_settings is not None:
            dht = self.dhts[name] = DHT(pool, self.dht_settings, bootstrap=self._bootstrap)
            if not self._bootstrap:
                self._bootstrap.append(Contact(identity.peer_id, (f"memory:{name}:1",)))
        service = MulticastService(
            identity,
            self.clock,
            pool,
            store or MemoryStore(mailbox),
            is_contact=lambda peer: self.contacts,
            strategies=self.plugins,
            mailbox=mailbox,
            notify_box=notify_box,
            dht=dht,
            retry_interval=retry_interval,
            # Its jitter drawn the same in every run, so that a test's
            # timing does not change from one run to the next.
            random_source=random.Random(name),  # noqa: S311 (a test network)
        )
        pool.startService()
        if dht is not None:
            dht.startService()
        service.startService()
        self.services[name] = service
        return service

    def restart(self, name: str) -> MulticastService:
        """
        Kill node ``name`` and start it again, as a process killed and
        restarted: its connections are lost, nothing of it runs on, and it
        comes back with its identity and its store and nothing else.
        """
        self.down(name)
        return self.up(name)

    def down(self, name: str) -> None:
        """
        Kill node ``name``, as a process killed or a laptop closed: its
        connections are lost, nothing of it runs on, and connections to it
        are refused, until :meth:`up`.
        """
        old = self.services[name]
        self.network.take_offline(name, refuse=True)
        old.stopService()
        dht = self.dhts.pop(name, None)
        if dht is not None:
            dht.stopService()
        old.pool.stopService()
        self._listeners.pop(name).stopListening()

    def up(self, name: str) -> MulticastService:
        """
        Start node ``name`` again after :meth:`down`, with its identity and
        its store and nothing else.
        """
        old = self.services[name]
        self.network.bring_online(name)
        assert isinstance(old.store, MemoryStore)
        return self.node(
            name,
            old.store,
            old.identity,
            mailbox=old.mailbox_limits,
            notify_box=old.notify_box_work,
            retry_interval=old.retry_interval,
        )

    def result(self, d: Deferred[Any], limit: float = 600.0) -> Any:
        """
        Run the clock until ``d`` fires, and give its result (or raise its
        error).
        """
        results: list[Any] = []
        d.addBoth(results.append)
        self.clock.run_until(lambda: bool(results), limit=limit)
        if not results:
            raise AssertionError("nothing happened in time")
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def run(self, seconds: float) -> None:
        """
        Let ``seconds`` pass on the clock, running everything due.
        """
        self.clock.advance(seconds)

    def subscribe(
        self, service: MulticastService, group_id: bytes | None
    ) -> list[ReceivedMessage]:
        """
        A list that fills with what ``service`` gets of a group.
        """
        got: list[ReceivedMessage] = []
        service.subscribe(group_id, got.append)
        return got

    def group(self, owner: MulticastService, *members: MulticastService, strategy: str) -> bytes:
        """
        A group of ``owner`` with ``members``, each of which has taken its
        invitation and given the owner its key bundle (so that a test taking
        a member away right after finds it with nothing under way).
        """
        group_id: bytes = self.result(owner.create_group("test group", strategy))
        for member in members:
            self.result(owner.add_member(group_id, member.local))
        self.clock.run_until(
            lambda: all(group_id in _joined(m) and not _giving(m, owner) for m in members),
            limit=600,
        )
        return group_id

    def add_mailbox(
        self, owner: MulticastService, group_id: bytes, box: MulticastService, **kw: Any
    ) -> None:
        """
        Add ``box`` to a group of ``owner`` as a mailbox, and wait until it
        took its invitation.
        """
        self.result(owner.add_member(group_id, box.local, "mailbox", **kw))
        self.clock.run_until(lambda: group_id in _joined(box), limit=600)


def _giving(service: MulticastService, owner: MulticastService) -> bool:
    waiting: list[Any] = []
    service.store.outbox(owner.local).addCallback(waiting.extend)
    return any(entry.kind == KEY_BUNDLE for entry in waiting)


def _joined(service: MulticastService) -> set[bytes]:
    groups: list[Any] = []
    service.store.groups().addCallback(groups.extend)
    return {g.group_id for g in groups if g.state == "active"}


class StrategyConformanceMixin:
    """
    What every multicast strategy must do, on the memory network: mix into
    a trial ``SynchronousTestCase`` and define :meth:`make_plugin`.
    """

    def make_plugin(self) -> IMulticastStrategyPlugin:
        """
        The plugin under test.
        """
        raise NotImplementedError

    def _network(self) -> tuple[GroupNetwork, str]:
        plugin = self.make_plugin()
        return GroupNetwork({plugin.name: plugin}), plugin.name

    def test_every_member_gets_every_message(self) -> None:
        """
        Every online member gets every message (a text, a file of several
        fragments, more texts) intact and in order, and the owner's
        delivery report counts each member once it has committed it.
        """
        net, name = self._network()
        owner = net.node("owner")
        members = [net.node(f"m{i}") for i in range(5)]
        group_id = net.group(owner, *members, strategy=name)
        got = [net.subscribe(m, group_id) for m in members]
        big = bytes(range(256)) * (3 * FRAGMENT_SIZE // 256)
        sent = [b"first", big, b"third", b"fourth"]
        reports = []
        for data in sent:
            if data is big:
                reports.append(net.result(owner.publish(group_id, big, "big.bin")))
            else:
                reports.append(net.result(owner.publish(group_id, data)))
        for report in reports:
            net.result(report.settled())
            self.assertEqual(report.committed, frozenset(m.local for m in members))  # type: ignore[attr-defined]
            self.assertEqual(report.pending, frozenset())  # type: ignore[attr-defined]
        for messages in got:
            self.assertEqual([m.data for m in messages], sent)  # type: ignore[attr-defined]
            self.assertEqual([m.index for m in messages], [0, 1, 2, 3])  # type: ignore[attr-defined]
            self.assertEqual(messages[1].file_name, "big.bin")  # type: ignore[attr-defined]

    def test_no_member_gets_another_groups_message(self) -> None:
        """
        A member of two groups gets each group's messages under that group
        only, a member of one group nothing of the other, and a group's
        context refuses a manifest of another group.
        """
        net, name = self._network()
        owner = net.node("owner")
        both, only_a, only_b = net.node("both"), net.node("a"), net.node("b")
        group_a = net.group(owner, both, only_a, strategy=name)
        group_b = net.group(owner, both, only_b, strategy=name)
        got_a = net.subscribe(only_a, None)
        got_b = net.subscribe(only_b, None)
        got_both = net.subscribe(both, None)
        net.result(net.result(owner.publish(group_a, b"to a")).settled())
        net.result(net.result(owner.publish(group_b, b"to b")).settled())
        self.assertEqual([(m.group_id, m.data) for m in got_a], [(group_a, b"to a")])  # type: ignore[attr-defined]
        self.assertEqual([(m.group_id, m.data) for m in got_b], [(group_b, b"to b")])  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            sorted((m.group_id, m.data) for m in got_both),
            sorted([(group_a, b"to a"), (group_b, b"to b")]),
        )
        stored = net.result(owner.store.message(group_a, 0, 0))
        context = net.result(both.context(group_b))
        with self.assertRaises(ManifestOutOfChain):  # type: ignore[attr-defined]
            net.result(context.accept_manifest(stored.manifest))

    def test_non_member_gets_nothing(self) -> None:
        """
        A node outside the group gets none of its messages, and cannot
        prove membership to a member: the member refuses it.
        """
        net, name = self._network()
        owner = net.node("owner")
        member, outsider = net.node("member"), net.node("outsider")
        group_id = net.group(owner, member, strategy=name)
        got = net.subscribe(outsider, None)
        net.result(net.result(owner.publish(group_id, b"secret")).settled())
        self.assertEqual(got, [])  # type: ignore[attr-defined]
        self.assertEqual(net.result(outsider.store.groups()), [])  # type: ignore[attr-defined]
        with self.assertRaises(Exception) as raised:  # type: ignore[attr-defined]
            net.result(outsider.proven_connection(group_id, member.local))
        self.assertIsInstance(raised.exception, Exception)  # type: ignore[attr-defined]

    def test_fragments_verified_before_stored(self) -> None:
        """
        A fragment changed on the way is refused before it is stored: the
        member's context raises FragmentRejected, keeps no partial message,
        and its subscribers get only the genuine message.
        """
        net, name = self._network()
        owner = net.node("owner")
        members = [net.node(f"m{i}") for i in range(3)]
        group_id = net.group(owner, *members, strategy=name)
        got = [net.subscribe(m, group_id) for m in members]
        report = net.result(owner.publish(group_id, b"x" * (2 * FRAGMENT_SIZE), "f.bin"))
        # Read before the members acknowledge it and the owner drops them.
        sealed = net.result(owner.sealed_message(group_id, 0, 0))
        net.result(report.settled())
        bad = bytearray(sealed.fragments[1])
        bad[0] ^= 1
        for member in members:
            context = net.result(member.context(group_id))
            manifest = net.result(context.accept_manifest(sealed.signed_manifest))
            with self.assertRaises(FragmentRejected):  # type: ignore[attr-defined]
                net.result(context.accept_fragment(manifest, 1, bytes(bad)))
        for member, messages in zip(members, got, strict=True):
            self.assertEqual([m.data for m in messages], [b"x" * (2 * FRAGMENT_SIZE)])  # type: ignore[attr-defined]
            self.assertEqual(net.result(member.store.partial_messages(group_id)), [])  # type: ignore[attr-defined]

    def test_idle_costs_nothing(self) -> None:
        """
        Once a message is delivered and the connections have gone idle, a
        week of a quiet group sends 0 bytes, holds no connection and no
        timer of the strategy.
        """
        net, name = self._network()
        owner = net.node("owner")
        members = [net.node(f"m{i}") for i in range(4)]
        group_id = net.group(owner, *members, strategy=name)
        net.result(net.result(owner.publish(group_id, b"hello")).settled())
        net.run(net.idle_timeout * 3)
        restore = net.count_bytes()
        try:
            for _ in range(7 * 24):
                net.run(3600)
        finally:
            restore()
        self.assertEqual(net.sent, 0)  # type: ignore[attr-defined]
        for service in [owner, *members]:
            self.assertEqual(service.pool.connections(), {})  # type: ignore[attr-defined]
        self.assertEqual(net.clock.getDelayedCalls(), [])  # type: ignore[attr-defined]

    def test_non_member_refused_by_router(self) -> None:
        """
        A connection on which no membership was proven gets no strategy
        from the router of a member.
        """
        net, name = self._network()
        owner = net.node("owner")
        member, outsider = net.node("member"), net.node("outsider")
        group_id = net.group(owner, member, strategy=name)
        connection = net.result(outsider.pool.connect(member.local))
        net.run(1)
        theirs = member.pool.connections()[outsider.local]
        with self.assertRaises(MembershipNotProven):  # type: ignore[attr-defined]
            net.result(member.strategy(theirs, group_id))
        self.assertIsNotNone(connection)  # type: ignore[attr-defined]
