# twisted.protocols.amp is not annotated.
# mypy: disallow-untyped-calls=False
"""
``relay``: a multicast strategy where members forward to each other along
a binary tree the owner lays out for each message.  The example of
``docs/howto-strategy-plugin.rst``.

The owner sends each message to two members only, each with the list of
the members below it in the tree; a member that accepted a fragment sends
it on to the heads of its two halves, and answers with every member its
part of the tree reached.  So the owner's link carries the message about
twice, whatever the group's size, and it takes about log2(n) hops.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, gatherResults
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.protocols import amp
from zope.interface import implementer

from digitalspring.errors import DigitalSpringError
from digitalspring.identity import PeerID
from digitalspring.multicast import (
    IMulticastStrategy,
    IMulticastStrategyPlugin,
    IStrategyContext,
    IStrategyRouter,
    MembershipNotProven,
    SealedMessage,
    TransmissionReport,
)

#: How many members each node sends a message to.
FAN_OUT = 2

#: The most members one ``relay-fragment`` can ask to be forwarded to: the
#: list of their 32-byte keys fits in one AMP value (65,535 bytes).
MAX_FORWARD = 2000


class RelayRefused(DigitalSpringError):
    """
    The member refused a fragment: it did not check out, or its forwarding
    list was malformed.
    """


class RelayFragment(amp.Command):
    """
    Fragment ``number`` of the message whose signed manifest is
    ``manifest``, to keep and to forward to the members in ``forward``
    (their public keys, one after the other).  The answer lists the
    members reached, this one first.
    """

    commandName = b"relay-fragment"
    arguments = [
        (b"group", amp.String()),
        (b"manifest", amp.String()),
        (b"number", amp.Integer()),
        (b"data", amp.String()),
        (b"forward", amp.String()),
    ]
    response = [(b"reached", amp.String())]
    errors = {MembershipNotProven: b"NOT_PROVEN", RelayRefused: b"REFUSED"}


def pack(peers: list[PeerID]) -> bytes:
    return b"".join(peer.public_key for peer in peers)


def unpack(packed: bytes) -> list[PeerID]:
    """
    :raises RelayRefused: for anything but whole keys, at most
        :data:`MAX_FORWARD` of them.
    """
    if len(packed) % 32 or len(packed) // 32 > MAX_FORWARD:
        raise RelayRefused("malformed forwarding list")
    try:
        return [PeerID(packed[i : i + 32]) for i in range(0, len(packed), 32)]
    except ValueError:
        raise RelayRefused("malformed forwarding list") from None


def split(peers: list[PeerID]) -> list[list[PeerID]]:
    """
    ``peers`` in :data:`FAN_OUT` subtrees of about equal size; the first
    of each is its head.
    """
    size = -(-len(peers) // FAN_OUT)
    return [peers[i : i + size] for i in range(0, len(peers), size)] if peers else []


@implementer(IMulticastStrategy)
class RelayStrategy:
    """
    One group's ``relay`` strategy at one node.
    """

    log = Logger()

    def __init__(self, context: IStrategyContext) -> None:
        self.context = context
        self._stopped = False
        # One lane per peer sent to, so that each gets the messages in
        # order; dropped once empty (no state grows with the messages).
        self._lanes: dict[PeerID, DeferredLock] = {}
        self._running: set[Deferred[Any]] = set()

    def publish(self, message: SealedMessage) -> Deferred[TransmissionReport]:
        d = Deferred.fromCoroutine(self._publish(message))
        self._running.add(d)
        return d.addBoth(self._done, d)

    def _done(self, result: Any, d: Deferred[Any]) -> Any:
        self._running.discard(d)
        return result

    async def _publish(self, message: SealedMessage) -> TransmissionReport:
        manifest = message.manifest
        states = await self.context.store.deliveries(
            self.context.group_id, manifest.epoch, manifest.index
        )
        pending = sorted(p for p in self.context.members() or () if states.get(p) == "pending")
        reached: set[PeerID] = set()
        for number, fragment in enumerate(message.fragments):
            reached = await self.forward(message.signed_manifest, number, fragment, pending)
        return TransmissionReport(frozenset(reached), frozenset(pending) - reached)

    async def forward(
        self, signed_manifest: bytes, number: int, data: bytes, peers: list[PeerID]
    ) -> set[PeerID]:
        """
        Send a fragment down each subtree of ``peers``: to its head, or
        the next of them while one cannot be reached.

        :returns: the peers reached.
        """
        subtrees = split(peers)
        results = await gatherResults(
            [
                Deferred.fromCoroutine(self._down(signed_manifest, number, data, subtree))
                for subtree in subtrees
            ]
        )
        return set().union(*results)

    async def _down(
        self, signed_manifest: bytes, number: int, data: bytes, subtree: list[PeerID]
    ) -> set[PeerID]:
        for at, head in enumerate(subtree):
            lane = self._lanes.setdefault(head, DeferredLock())
            try:
                reached = await lane.run(
                    self._send, head, signed_manifest, number, data, subtree[at + 1 :]
                )
            finally:
                if not lane.locked and not lane.waiting and self._lanes.get(head) is lane:
                    del self._lanes[head]
            if reached is not None:
                return reached
        return set()

    async def _send(
        self, head: PeerID, signed_manifest: bytes, number: int, data: bytes, rest: list[PeerID]
    ) -> set[PeerID] | None:
        if self._stopped:
            return None
        try:
            connection = await self.context.connect(head)
            answer = await connection.callRemote(
                RelayFragment,
                group=self.context.group_id,
                manifest=signed_manifest,
                number=number,
                data=data,
                forward=pack(rest),
            )
            return set(unpack(answer["reached"]))
        except Exception as e:
            self.log.debug("relay to {peer} failed: {error}", peer=str(head), error=str(e))
            return None

    async def received(
        self, signed_manifest: bytes, number: int, data: bytes, forward: list[PeerID]
    ) -> set[PeerID]:
        """
        A fragment from the node above: checked and kept (and committed
        with its message once it completes it), then sent on.
        """
        manifest = await self.context.accept_manifest(signed_manifest)
        await self.context.accept_fragment(manifest, number, data)
        below = await self.forward(signed_manifest, number, data, forward)
        return {self.context.local} | below

    def stop(self) -> Deferred[None]:
        self._stopped = True
        running = list(self._running)
        return gatherResults(running, consumeErrors=True).addBoth(lambda _: None)


class RelayResponder(amp.CommandLocator):
    """
    The ``relay`` commands on one connection.
    """

    def __init__(self, connection: Any, router: IStrategyRouter) -> None:
        self.connection = connection
        self.router = router

    @RelayFragment.responder
    async def fragment(
        self, group: bytes, manifest: bytes, number: int, data: bytes, forward: bytes
    ) -> dict[str, bytes]:
        # The router gives the group's strategy only to a peer that proved
        # membership on this connection.
        strategy = await self.router.strategy(self.connection, group)
        if not isinstance(strategy, RelayStrategy):
            raise MembershipNotProven("the peer did not prove membership of the group")
        try:
            reached = await strategy.received(manifest, number, data, unpack(forward))
        except DigitalSpringError as e:
            raise RelayRefused(str(e)) from None
        return {"reached": pack(sorted(reached))}


@implementer(IPlugin, IMulticastStrategyPlugin)
class RelayStrategyPlugin:
    """
    The ``relay`` strategy, as a plugin.
    """

    name = "relay"
    description = "Members forward along a binary tree the owner lays out."

    def make_strategy(self, context: IStrategyContext) -> IMulticastStrategy:
        return RelayStrategy(context)

    def locator(self, connection: Any, router: IStrategyRouter) -> amp.CommandLocator:
        return RelayResponder(connection, router)
