# -*- test-case-name: tests.test_spring -*-
# mypy: disallow-untyped-calls=False
"""
The ``spring`` strategy: the whitepaper's transmission phase.

The owner activates up to :data:`DIRECT` members itself, each with a
different share of the fragments, which it pushes to them; every member
activated passes the activation on to its neighbours (the neighbour graph
the owner keeps), so activations spread along the graph, and the
activation tree (who activated whom) is the seed of the distribution
graph: each member keeps the connections to the peers it activated and
was activated by, up to :data:`MAX_PEERS` (it starts at most :data:`D`
itself).  A member that holds a fragment announces it to its peers, and
sends it to those that ask, as its upload budget allows (lowest latency
first, refusing when its queue is full, so that requests spread over the
holders).  A request a holder leaves unanswered too long is asked of
another holder too.  A message of one fragment rides on the activations
themselves; in a group of at most :data:`ALL_DIRECT_SMALL` members the
owner activates every member with it, and nobody passes it on.

Acknowledgements go back up the activation tree: each member sends its
own, and those of the members it activated, to its activator, so the
owner gets them over the connections of its direct activations alone.
They are MACs that only the owner can check, so a forwarder learns nothing
from them and cannot forge one.  An owner that has heard nothing for a
while activates directly the members whose acknowledgements it lacks: a
forwarder that dropped them, or peers that failed a member, delay it then,
but do not stop it.

A transmission ends at a member once it holds every fragment and its
peers do too (or after :data:`STALL_TIMEOUT` without progress, which also
frees an incomplete one); at the owner once every recipient has
acknowledged, or after a quiet spell proportional to the message's size.
Nothing of it is left then: no timer, and connections the pool closes once
idle.  ``docs/multicast.rst`` describes it in full.

Here are the strategy of one group at one node, the responders of its
commands and its plugin; each message's transmission is a state machine of
its own, in ``_spring_transmission.py`` with the constants named above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.protocols import amp
from zope.interface import implementer

from ..errors import DigitalSpringError
from ..identity import PeerID
from ..storage import NotStored
from ._interfaces import (
    IAcknowledgementCarrier,
    IAcknowledgementRelay,
    IMulticastStrategy,
    IMulticastStrategyPlugin,
    IStrategyContext,
    IStrategyRouter,
    TransmissionReport,
)
from ._membership import MembershipNotProven
from ._spring_teardown import Teardown
from ._spring_transmission import (
    ALL_DIRECT_SMALL,
    DIRECT,
    DIRECT_SMALL,
    HINT_GRACE,
    MAX_TRANSMISSIONS,
    PUSH_GRACE,
    REQUEST_TIMEOUT,
    Transmission,
)
from ._spring_upload import DEFAULT_UPLOAD_BUDGET, UploadBudget
from ._spring_wire import (
    SpringAcks,
    SpringActivate,
    SpringHave,
    SpringPush,
    SpringRefused,
    SpringRequest,
    decode_bitmap,
    split_macs,
)

if TYPE_CHECKING:
    from ._message import SealedMessage


@implementer(IMulticastStrategy, IAcknowledgementCarrier)
class SpringStrategy:
    """
    One group's ``spring`` strategy at one node.

    :param budget: the node's upload budget, shared by its groups.
    """

    log = Logger()

    def __init__(self, context: IStrategyContext, budget: UploadBudget) -> None:
        self.context = context
        self.budget = budget
        self.teardown = Teardown(context.clock)
        self._transmissions: dict[tuple[int, int], Transmission] = {}
        self._stopped = False
        self._logged = 0.0

    def rlog(self, format: str, **kw: Any) -> None:
        """
        Log a peer's misbehaviour, at most once a second.
        """
        now = self.context.clock.seconds()
        if now - self._logged >= 1.0:
            self._logged = now
            self.log.info(format, **kw)

    def log_failure(self, failure: Any) -> None:
        self.log.failure("spring", failure)

    def transmission(self, epoch: int, index: int) -> Transmission:
        t = self._transmissions.get((epoch, index))
        if t is None:
            raise SpringRefused("no such transmission here")
        return t

    def ended(self, transmission: Transmission) -> None:
        if self._transmissions.get(transmission.key) is transmission:
            del self._transmissions[transmission.key]

    def used(self, epoch: int, index: int, peer: PeerID, connection: Any) -> None:
        """
        ``connection`` with ``peer`` carried something of a transmission:
        see :meth:`Transmission.used`.
        """
        t = self._transmissions.get((epoch, index))
        if t is not None and connection is not None:
            t.used(peer, connection)

    @property
    def transmissions(self) -> int:
        """
        How many transmissions are under way here.
        """
        return len(self._transmissions)

    # --- the owner --------------------------------------------------------

    def publish(self, message: SealedMessage) -> Deferred[TransmissionReport]:
        return Deferred.fromCoroutine(self._publish(message))

    async def _publish(self, message: SealedMessage) -> TransmissionReport:
        context = self.context
        manifest = message.manifest
        key = (manifest.epoch, manifest.index)
        states = await context.store.deliveries(context.group_id, *key)
        members = context.members() or frozenset()
        targets = {p for p in members if states.get(p) == "pending"}
        if self._stopped or not targets:
            return TransmissionReport(frozenset(), frozenset(targets))
        t = self._transmissions.get(key)
        # The first time a message goes out every recipient is pending, and
        # the owner activates DIRECT of them; a message sent again (a
        # catch-up) goes to each pending member directly, since members no
        # longer hold what they committed, and its Deferred fires once
        # those members acknowledged it or could not be activated.
        first = t is None and all(s == "pending" for s in states.values())
        if t is None:
            t = Transmission(self, manifest, message.signed_manifest, None)
            t.data = dict(enumerate(message.fragments))
            t.held = t.full
            self._transmissions[key] = t
        again = sorted(targets - t.acked - t.activating)
        t.targets |= targets
        t.failed -= targets
        t.touch()
        t.random.shuffle(again)
        if t.count == 1:
            most = len(again) if len(again) <= ALL_DIRECT_SMALL else DIRECT_SMALL
        else:
            most = DIRECT
        direct = again[:most] if first else again
        # A message of one fragment rides on the activations: once the
        # owner activates every member itself, a member passing it on
        # would only send it to members that have it.
        t.relay = t.relay and not (t.count == 1 and len(direct) == len(again))
        watch = targets if first else set(direct) | (targets & t.activating)
        d: Deferred[TransmissionReport] = Deferred()
        t.waiters.append((frozenset(watch), d))
        t.push_until = max(
            t.push_until,
            context.clock.seconds() + PUSH_GRACE + manifest.ciphertext_size / self.budget.rate,
        )
        if t.count > 1 and direct:
            t.plan_shares(len(direct))
        for peer in direct:
            t.activate(peer, share=t.count > 1)
        t.wake(2.0)
        return await d

    async def send_acks(
        self, key: tuple[int, int], targets: list[PeerID | None], macs: list[bytes]
    ) -> None:
        """
        Send acknowledgement MACs to the first of ``targets`` that takes
        them; if none does, the owner will send the message again to those
        whose acknowledgements it lacks, and they acknowledge it again.
        """
        tried: set[PeerID] = set()
        for target in targets:
            if target is None or target in tried:
                continue
            tried.add(target)
            try:
                connection = await self.context.connect(target)
                self.used(*key, target, connection)
                await connection.callRemote(
                    SpringAcks,
                    group=self.context.group_id,
                    epoch=key[0],
                    index=key[1],
                    macs=b"".join(macs),
                ).addTimeout(REQUEST_TIMEOUT, self.context.clock)
                return
            except Exception as e:
                self.log.debug("spring: acks to {p} failed: {e}", p=str(target), e=str(e))
        self.log.debug("spring: {n} acknowledgements dropped", n=len(macs))

    async def acknowledgements(
        self, peer: PeerID, epoch: int, index: int, macs: list[bytes]
    ) -> None:
        """
        Acknowledgements from ``peer``: counted at the owner, forwarded
        towards it elsewhere.
        """
        if self.context.role != "owner":
            self.transmission(epoch, index).forwarded(peer, macs)
            return
        relay = IAcknowledgementRelay(self.context, None)
        if relay is None:
            raise SpringRefused("this owner cannot count acknowledgements")
        found = await relay.acknowledged(epoch, index, macs)
        t = self._transmissions.get((epoch, index))
        if t is not None and found:
            t.acked |= found
            t.touch()
            t.settle()

    # --- a member ---------------------------------------------------------

    async def activated(
        self,
        peer: PeerID,
        signed: bytes,
        have: bytes,
        hint: bytes,
        data: bytes | None,
        connection: Any = None,
        passed_on: bool | None = None,
    ) -> tuple[bytes, bool]:
        """
        An activation from ``peer`` (on ``connection``): acted on only once
        its manifest verifies, and only once per transmission.  It is
        passed on to the neighbours unless the owner, activating every
        member itself, said not to (``passed_on`` false: the command's
        ``relay``).

        :returns: what this node holds of the message, and whether it
            committed it already.
        """
        context = self.context
        # A mailbox is activated as a member is: it forwards what it holds.
        if self._stopped or context.role == "owner":
            raise SpringRefused("not taking activations")
        manifest = await context.accept_manifest(signed)
        key = (manifest.epoch, manifest.index)
        stored = await context.store.message(context.group_id, *key)
        if stored.state == "complete":
            # Committed already.  The owner asks again when it lacks our
            # acknowledgement (lost on the way, or swallowed by a hostile
            # forwarder): it gets it directly.  Anyone else learns only
            # that we hold it.
            relay = IAcknowledgementRelay(context, None)
            if peer == context.owner and relay is not None:
                await self.send_acks(key, [peer], [relay.acknowledgement(*key)])
            t = self._transmissions.get(key)
            if t is None:
                return b"", True
        t = self._transmissions.get(key)
        new = False
        if t is None:
            if len(self._transmissions) >= MAX_TRANSMISSIONS:
                raise SpringRefused("too many transmissions under way")
            t = Transmission(self, manifest, signed, peer)
            self._transmissions[key] = t
            try:
                held = await context.store.fragments(context.group_id, *key)
            except NotStored:
                held = {}
            for number, fragment in held.items():
                t.held |= 1 << number
                t.data[number] = fragment
            if t.complete:
                t.completed_at = t.clock.seconds()
                # Whole in the store yet not committed (the node stopped
                # between its last fragment and the commit): offered again,
                # a fragment commits it if it is next in line.
                await context.accept_fragment(manifest, 0, t.data[0])
            new = True
        state = t.peer(peer)
        self.used(*key, peer, connection)
        if state is not None:
            state.have |= decode_bitmap(have, t.count)
            if peer == context.owner:
                t.hinted |= decode_bitmap(hint, t.count)
                t.hint_until = t.clock.seconds() + HINT_GRACE
        bad = None
        if data is not None and t.count == 1 and not t.complete:
            try:
                await t.accept(0, data)
            except DigitalSpringError as e:
                bad = e
        if new:
            # Passed on once the fragment riding on it is held, so that it
            # rides on the activations passed on too.
            alone = passed_on is False and peer == context.owner
            t.start(frozenset() if alone else context.neighbours(), {peer, context.owner})
        if bad is not None:
            t.drop(peer, f"sent a fragment that did not check out: {bad}")
            raise SpringRefused("the fragment did not check out")
        if state is not None:
            # The answer tells the activator what this node holds.
            state.sent |= t.held
        t.announce()
        t.pump()
        return t.bitmap(), False

    def carry_acknowledgement(self, epoch: int, index: int, mac: bytes) -> bool:
        t = self._transmissions.get((epoch, index))
        if t is None or t.ended or t.parent is None:
            return False
        t.carry([mac])
        return True

    def stop(self) -> Deferred[None]:
        self._stopped = True
        for t in list(self._transmissions.values()):
            t.end("stopped")
        self.teardown.stop()
        return succeed(None)


class SpringResponder(amp.CommandLocator):
    """
    The ``spring`` commands on one connection.
    """

    def __init__(self, connection: Any, router: IStrategyRouter) -> None:
        self.connection = connection
        self.router = router

    async def _strategy(self, group: bytes) -> SpringStrategy:
        strategy = await self.router.strategy(self.connection, group)
        if not isinstance(strategy, SpringStrategy):
            raise MembershipNotProven("the peer did not prove membership of the group")
        return strategy

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
        strategy = await self._strategy(group)
        try:
            held, complete = await strategy.activated(
                self.connection.peer_id, manifest, have, hint, data, self.connection, relay
            )
        except SpringRefused:
            raise
        except DigitalSpringError as e:
            raise SpringRefused(str(e)) from None
        return {"have": held, "complete": complete}

    @SpringHave.responder
    async def have(self, group: bytes, epoch: int, index: int, have: bytes) -> dict[str, Any]:
        strategy = await self._strategy(group)
        strategy.transmission(epoch, index).announced(self.connection.peer_id, have)
        strategy.used(epoch, index, self.connection.peer_id, self.connection)
        return {}

    @SpringRequest.responder
    async def request(self, group: bytes, epoch: int, index: int, number: int) -> dict[str, Any]:
        strategy = await self._strategy(group)
        transmission = strategy.transmission(epoch, index)
        data = await transmission.serve(self.connection.peer_id, number)
        transmission.used(self.connection.peer_id, self.connection)
        return {"data": data}

    @SpringPush.responder
    async def push(
        self, group: bytes, epoch: int, index: int, number: int, data: bytes
    ) -> dict[str, Any]:
        strategy = await self._strategy(group)
        transmission = strategy.transmission(epoch, index)
        try:
            new = await transmission.pushed(self.connection.peer_id, number, data)
            transmission.used(self.connection.peer_id, self.connection)
            return {"new": new}
        except SpringRefused:
            raise
        except DigitalSpringError as e:
            transmission.drop(self.connection.peer_id, str(e))
            raise SpringRefused(str(e)) from None

    @SpringAcks.responder
    async def acks(self, group: bytes, epoch: int, index: int, macs: bytes) -> dict[str, Any]:
        strategy = await self._strategy(group)
        await strategy.acknowledgements(self.connection.peer_id, epoch, index, split_macs(macs))
        strategy.used(epoch, index, self.connection.peer_id, self.connection)
        return {}


@implementer(IPlugin, IMulticastStrategyPlugin)
class SpringStrategyPlugin:
    """
    The ``spring`` strategy, as a plugin.

    :param upload_budget: what each node serves to other members, in
        bytes per second, shared by its groups.
    """

    name = "spring"
    description = (
        "The whitepaper's transmission phase: activations spread along the neighbour "
        "graph, members announce and forward fragments to each other."
    )

    def __init__(self, upload_budget: float = DEFAULT_UPLOAD_BUDGET) -> None:
        self.upload_budget = upload_budget
        self._budgets: dict[tuple[PeerID, int], UploadBudget] = {}

    def budget(self, context: IStrategyContext) -> UploadBudget:
        """
        The upload budget of the node ``context`` is at (one per node, and
        per clock, for simulations that run many in one process).
        """
        key = (context.local, id(context.clock))
        budget = self._budgets.get(key)
        if budget is None or budget.clock is not context.clock:
            budget = self._budgets[key] = UploadBudget(context.clock, self.upload_budget)
        return budget

    def make_strategy(self, context: IStrategyContext) -> IMulticastStrategy:
        return SpringStrategy(context, self.budget(context))

    def locator(self, connection: Any, router: IStrategyRouter) -> amp.CommandLocator:
        return SpringResponder(connection, router)
