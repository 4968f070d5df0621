# -*- test-case-name: tests.test_unicast -*-
"""
The ``unicast`` strategy: the owner sends every member every fragment of a
message itself, over a connection on which both proved membership.

It is the baseline every other strategy is measured against, and the
simplest one that keeps the rules of
:class:`~digitalspring.multicast.IMulticastStrategy`: members forward
nothing; the owner sends a member the messages of a group one after the
other, in order; a member that is not reached gets them again when it
comes back (the service's catch-up), since the owner keeps a message's
fragments until every member has committed it.  It holds no timer at all,
and no state between transmissions.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, gatherResults
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.protocols import amp
from zope.interface import implementer

from ..errors import DigitalSpringError
from ..identity import PeerID
from ._commands import BoundedBytes
from ._interfaces import (
    IMulticastStrategy,
    IMulticastStrategyPlugin,
    IStrategyContext,
    IStrategyRouter,
    TransmissionReport,
)
from ._manifest import FRAGMENT_SIZE, MAX_MANIFEST_SIZE
from ._membership import MembershipNotProven
from ._message import SealedMessage


class FragmentRefused(DigitalSpringError):
    """
    The member refused a fragment: its manifest or its bytes did not check
    out, it was over the member's bounds, or the sender did not prove
    membership of the group.
    """


class UnicastFragment(amp.Command):
    """
    Fragment ``number`` of the message whose signed manifest is
    ``manifest``; the answer says whether it was new.
    """

    commandName = b"unicast-fragment"
    arguments = [
        (b"group", BoundedBytes(32)),
        (b"manifest", BoundedBytes(MAX_MANIFEST_SIZE)),
        (b"number", amp.Integer()),
        (b"data", BoundedBytes(FRAGMENT_SIZE)),
    ]
    response = [(b"new", amp.Boolean())]
    errors = {MembershipNotProven: b"NOT_PROVEN", FragmentRefused: b"REFUSED"}


@implementer(IMulticastStrategy)
class UnicastStrategy:
    """
    One group's ``unicast`` strategy at one node.
    """

    log = Logger()

    def __init__(self, context: IStrategyContext) -> None:
        self.context = context
        self._stopped = False
        # One lock per member being sent to, so that a member gets the
        # messages in order; dropped once nothing waits on it.
        self._lanes: dict[PeerID, DeferredLock] = {}
        self._running: set[Deferred[Any]] = set()

    def publish(self, message: SealedMessage) -> Deferred[TransmissionReport]:
        d = Deferred.fromCoroutine(self._publish(message))
        self._running.add(d)
        d.addBoth(self._done, d)
        return d

    def _done(self, result: Any, d: Deferred[Any]) -> Any:
        self._running.discard(d)
        return result

    async def _publish(self, message: SealedMessage) -> TransmissionReport:
        context = self.context
        members = context.members() or frozenset()
        manifest = message.manifest
        states = await context.store.deliveries(context.group_id, manifest.epoch, manifest.index)
        peers = sorted(p for p in members if states.get(p) == "pending")
        results = await gatherResults([self._to(peer, message) for peer in peers])
        return TransmissionReport(
            frozenset(p for p, ok in zip(peers, results, strict=True) if ok),
            frozenset(p for p, ok in zip(peers, results, strict=True) if not ok),
        )

    def _to(self, peer: PeerID, message: SealedMessage) -> Deferred[bool]:
        lane = self._lanes.get(peer)
        if lane is None:
            lane = self._lanes[peer] = DeferredLock()
        d: Deferred[bool] = lane.run(self._send, peer, message)

        def release(result: bool) -> bool:
            if not lane.locked and not lane.waiting and self._lanes.get(peer) is lane:
                del self._lanes[peer]
            return result

        return d.addCallback(release)

    async def _send(self, peer: PeerID, message: SealedMessage) -> bool:
        if self._stopped:
            return False

        def fragment(number: int) -> dict[str, Any]:
            return {
                "group": self.context.group_id,
                "manifest": message.signed_manifest,
                "number": number,
                "data": message.fragments[number],
            }

        try:
            # The first fragment goes right behind the membership proof, as
            # spring's activation does: the same round trip saved.
            connection, _ = await self.context.call(peer, UnicastFragment, fragment(0))
            self.context.progress(message.manifest, peer, 1)
            for number in range(1, len(message.fragments)):
                if self._stopped:
                    return False
                await connection.callRemote(UnicastFragment, **fragment(number))
                self.context.progress(message.manifest, peer, number + 1)
        except Exception as e:
            self.log.debug("unicast to {peer} stopped: {error}", peer=str(peer), error=str(e))
            return False
        return True

    async def received(self, signed_manifest: bytes, number: int, data: bytes) -> bool:
        """
        A fragment from the owner: checked, stored, and committed with its
        message when it completes it.
        """
        manifest = await self.context.accept_manifest(signed_manifest)
        return await self.context.accept_fragment(manifest, number, data)

    def stop(self) -> Deferred[None]:
        self._stopped = True
        running = list(self._running)
        return gatherResults(running, consumeErrors=True).addBoth(lambda _: None)


class UnicastResponder(amp.CommandLocator):
    """
    The ``unicast`` commands on one connection.
    """

    def __init__(self, connection: Any, router: IStrategyRouter) -> None:
        self.connection = connection
        self.router = router

    @UnicastFragment.responder
    async def fragment(
        self, group: bytes, manifest: bytes, number: int, data: bytes
    ) -> dict[str, bool]:
        strategy = await self.router.strategy(self.connection, group)
        if not isinstance(strategy, UnicastStrategy):
            raise MembershipNotProven("the peer did not prove membership of the group")
        try:
            return {"new": await strategy.received(manifest, number, data)}
        except DigitalSpringError as e:
            raise FragmentRefused(str(e)) from None


@implementer(IPlugin, IMulticastStrategyPlugin)
class UnicastStrategyPlugin:
    """
    The ``unicast`` strategy, as a plugin.
    """

    name = "unicast"
    description = "The owner sends every member every fragment itself."

    def make_strategy(self, context: IStrategyContext) -> IMulticastStrategy:
        return UnicastStrategy(context)

    def locator(self, connection: Any, router: IStrategyRouter) -> amp.CommandLocator:
        return UnicastResponder(connection, router)
