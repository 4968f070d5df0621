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
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from digitalspring.identity import Identity, PeerID
from digitalspring.multicast import (
    IMulticastStrategy,
    IMulticastStrategyPlugin,
    IStrategyContext,
    IStrategyRouter,
    MulticastService,
    SpringStrategyPlugin,
    TransmissionReport,
)
from digitalspring.multicast._spring import SpringResponder
from digitalspring.multicast._spring_wire import (
    SpringAcks,
    SpringActivate,
    SpringHave,
    SpringPush,
    SpringRequest,
    encode_bitmap,
)
from digitalspring.testing import GroupNetwork


@implementer(IMulticastStrategy)
class Dropper:
    """
    A member that forwards nothing: it takes every activation and says it
    holds every fragment (so that others ask it), answers no request,
    takes pushes and acknowledgements and drops them, and dials nobody.
    """

    def __init__(self, context: IStrategyContext, activates: bool) -> None:
        self.context = context
        self.activates = activates
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
    """

    @SpringActivate.responder
    async def activate(
        self, group: bytes, manifest: bytes, have: bytes, hint: bytes, data: bytes | None = None
    ) -> dict[str, Any]:
        strategy = await self.router.strategy(self.connection, group)
        if isinstance(strategy, Dropper):
            found = await strategy.context.accept_manifest(manifest)
            full = (1 << len(found.fragment_hashes)) - 1
            strategy.activate_neighbours(manifest, full)
            return {"have": encode_bitmap(full), "complete": False}
        return await super().activate(group, manifest, have, hint, data)

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
            never: Deferred[dict[str, Any]] = Deferred()
            strategy.hanging.append(never)
            return await never
        return await super().request(group, epoch, index, number)

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

    def __init__(self, activates: bool = False) -> None:
        self.honest = SpringStrategyPlugin()
        self.activates = activates
        self.droppers: set[PeerID] = set()

    def make_strategy(self, context: IStrategyContext) -> IMulticastStrategy:
        if context.local in self.droppers:
            return Dropper(context, self.activates)
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
