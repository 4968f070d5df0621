# -*- test-case-name: tests.test_multicast_service -*-
"""
Membership proofs on each connection, and the routing of the strategies'
commands to the group they name.

A connection records the groups (and epochs) in which the peer on it
proved membership.  The dialler proves first; the listener answers with
its own proof.  A strategy's command for a group is routed to that group's
strategy only over a connection on which membership of the group's current
epoch was proven; every refusal looks the same from outside.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred
from twisted.protocols import amp
from zope.interface import implementer

from ..channel import ISecureChannel, PeerConnection
from ..identity import PeerID
from ..storage import Group, NotStored, StoreClosed
from ._catchup_serve import CatchUpResponder
from ._commands import CollectSealed, GroupNotice, ProveMembership
from ._core import NotInGroup, ServiceCore, deferred
from ._epoch import EpochKeys
from ._interfaces import IMulticastStrategy, IMulticastStrategyPlugin, IStrategyRouter
from ._membership import MembershipNotProven, Role, check_proof, make_proof
from ._notify import DepositRefused, NotifyCollect, NotifyDeposit, NotifyRegister, NotifyWork

if TYPE_CHECKING:
    from ._service import MulticastService

_REFUSED = "the peer did not prove membership of the group"


class _Session:
    """
    What one connection has proven: the groups (and their epochs) in which
    the peer on it proved membership, and the proofs being checked (a
    command that came right behind a proof waits for it).
    """

    __slots__ = ("__weakref__", "checking", "proven")

    def __init__(self) -> None:
        self.proven: dict[bytes, int] = {}
        self.checking: dict[bytes, list[Deferred[None]]] = {}


@implementer(IStrategyRouter)
class _PluginRouter:
    """
    The router one plugin's responders get: it refuses groups of other
    strategies.
    """

    def __init__(self, service: MembershipRouter, name: str) -> None:
        self._service = service
        self._name = name

    def strategy(
        self, connection: PeerConnection, group_id: bytes
    ) -> Deferred[IMulticastStrategy]:
        return Deferred.fromCoroutine(self._service.route(connection, group_id, self._name))


class _Responder(amp.CommandLocator):
    """
    The service's commands on one connection.
    """

    def __init__(self, service: MulticastService, connection: PeerConnection) -> None:
        self.service = service
        self.connection = connection
        self.deposited = False

    @ProveMembership.responder
    async def prove(self, group: bytes, epoch: int, proof: bytes) -> dict[str, bytes]:
        return {"proof": await self.service.answer_proof(self.connection, group, epoch, proof)}

    @GroupNotice.responder
    async def notice(self, kind: str, payload: bytes) -> dict[str, Any]:
        await self.service.receive_notice(self.connection.peer_id, kind, payload)
        return {}

    @CollectSealed.responder
    async def collect_sealed(self, group: bytes) -> dict[str, bytes]:
        return {"items": await self.service.give_sealed(self.connection.peer_id, group)}

    # A notification box's commands (``_notify.py``).  A deposit is one per
    # connection: its proof of work is bound to the connection.

    @NotifyRegister.responder
    async def notify_register(self, use: bool) -> dict[str, Any]:
        await self.service.box_register(self.connection.peer_id, use)
        return {}

    @NotifyWork.responder
    def notify_work(self) -> dict[str, int]:
        return {"bits": self.service.box_work()}

    @NotifyDeposit.responder
    async def notify_deposit(self, recipient: bytes, item: bytes, nonce: bytes) -> dict[str, Any]:
        if self.deposited:
            raise DepositRefused("one deposit per connection")
        self.deposited = True
        await self.service.box_deposit(self.connection, recipient, item, nonce)
        return {}

    @NotifyCollect.responder
    async def notify_collect(self) -> dict[str, Any]:
        items, refused = await self.service.box_collect(self.connection.peer_id)
        return {"items": items, "refused": refused}


@implementer(IStrategyRouter)
class MembershipRouter(ServiceCore):
    """
    The part of the service that proves membership and routes the
    strategies' commands.
    """

    _sessions: weakref.WeakKeyDictionary[PeerConnection, _Session]

    def _locator(self, connection: PeerConnection) -> amp.CommandLocator:
        self._sessions[connection] = _Session()
        # What waits for the peer goes on the next turn of the clock, not
        # now: the connection is still being made.
        self.outbox.reachable(connection.peer_id)
        cast("MulticastService", self).seen(connection.peer_id)
        cast("MulticastService", self).source_seen(connection.peer_id)
        return _Responder(cast("MulticastService", self), connection)

    def _plugin_locator(
        self, plugin: IMulticastStrategyPlugin, connection: PeerConnection
    ) -> amp.CommandLocator:
        locator: amp.CommandLocator = plugin.locator(connection, _PluginRouter(self, plugin.name))
        return locator

    def _catch_up_locator(self, connection: PeerConnection) -> amp.CommandLocator:
        return CatchUpResponder(cast("MulticastService", self), connection)

    def _all_locators(self) -> list[Any]:
        """
        The service's own locator, catch-up's, and each plugin's, for the
        pool.
        """
        locators: list[Any] = [self._locator, self._catch_up_locator]
        for plugin in self.plugins().values():
            locators.append(functools.partial(self._plugin_locator, plugin))
        return locators

    @deferred
    async def proven_connection(self, group_id: bytes, peer: PeerID) -> PeerConnection:
        """
        A connection to ``peer`` on which both sides proved membership of
        the group in its current epoch (see
        :meth:`IStrategyContext.connect`).
        """
        connection = await self.pool.connect(peer)
        epoch = await self.store.epoch(group_id)
        session = self._sessions.get(connection)
        if session is None or epoch.access_key is None:
            raise MembershipNotProven(_REFUSED)
        if session.proven.get(group_id) == epoch.epoch:
            return connection
        access = EpochKeys(group_id, epoch.epoch, b"", b"", epoch.access_key).access
        channel = ISecureChannel(connection.transport)
        ours = Role.DIALLER if connection.initiator else Role.LISTENER
        theirs = Role.LISTENER if connection.initiator else Role.DIALLER
        answer = await connection.callRemote(
            ProveMembership,
            group=group_id,
            epoch=epoch.epoch,
            proof=make_proof(access, ours, channel.handshake_hash),
        )
        check_proof(access, theirs, channel.handshake_hash, answer["proof"])
        session.proven[group_id] = epoch.epoch
        return connection

    @deferred
    async def call_proven(
        self,
        group_id: bytes,
        peer: PeerID,
        command: type[amp.Command],
        arguments: Callable[[PeerConnection], dict[str, Any] | None],
    ) -> tuple[PeerConnection, dict[str, Any] | None]:
        """
        Send ``command`` to ``peer`` on a connection on which both sides
        prove membership of the group (as :meth:`proven_connection`), but
        right behind this side's proof rather than after the peer's answer:
        the peer checks the proof before it acts on the command (see
        :meth:`check_proven`), and the answer is returned only once the
        peer's own proof checked.  A round trip less on a new connection.

        :param arguments: called with the connection once it is up, for
            the command's arguments; ``None`` sends nothing.
        """
        connection = await self.pool.connect(peer)
        epoch = await self.store.epoch(group_id)
        session = self._sessions.get(connection)
        if session is None or epoch.access_key is None:
            raise MembershipNotProven(_REFUSED)
        proven = session.proven.get(group_id) == epoch.epoch
        kwargs = arguments(connection)
        if proven or kwargs is None:
            if not proven:
                await self.proven_connection(group_id, peer)
            if kwargs is None:
                return connection, None
            return connection, await connection.callRemote(command, **kwargs)
        access = EpochKeys(group_id, epoch.epoch, b"", b"", epoch.access_key).access
        channel = ISecureChannel(connection.transport)
        ours = Role.DIALLER if connection.initiator else Role.LISTENER
        theirs = Role.LISTENER if connection.initiator else Role.DIALLER
        proved = connection.callRemote(
            ProveMembership,
            group=group_id,
            epoch=epoch.epoch,
            proof=make_proof(access, ours, channel.handshake_hash),
        )
        # Taken at once: the answer may come before the proof's (the peer
        # acts on the command as soon as the proof checked), and AMP drops
        # an error answer its caller has not attached to yet.
        answered: Deferred[dict[str, Any]] = Deferred()
        connection.callRemote(command, **kwargs).addBoth(answered.callback)
        try:
            proof = await proved
            check_proof(access, theirs, channel.handshake_hash, proof["proof"])
        except BaseException:
            answered.addErrback(lambda _: None)
            raise
        # Proven from now on: what the peer sends on before its answer to
        # the command (an acknowledgement) is taken.
        session.proven[group_id] = epoch.epoch
        answer = await answered
        return connection, answer

    async def answer_proof(
        self, connection: PeerConnection, group_id: bytes, number: int, proof: bytes
    ) -> bytes:
        """
        Check the proof the dialler of ``connection`` made, and answer
        with ours.

        :raises MembershipNotProven: for every refusal alike.
        """
        session = self._sessions.get(connection)
        if session is None or connection.peer_id in self._blocked:
            raise MembershipNotProven(_REFUSED)
        # Registered before the first wait: a command that came right
        # behind the proof waits for its check (see check_proven).
        waiting = session.checking.setdefault(group_id, [])
        try:
            try:
                await self._group(group_id)
                epoch = await self.store.epoch(group_id)
            except (NotInGroup, NotStored):
                raise MembershipNotProven(_REFUSED) from None
            if epoch.epoch != number or epoch.access_key is None:
                raise MembershipNotProven(_REFUSED)
            access = EpochKeys(group_id, epoch.epoch, b"", b"", epoch.access_key).access
            channel = ISecureChannel(connection.transport)
            theirs = Role.LISTENER if connection.initiator else Role.DIALLER
            ours = Role.DIALLER if connection.initiator else Role.LISTENER
            check_proof(access, theirs, channel.handshake_hash, proof)
            session.proven[group_id] = epoch.epoch
            return make_proof(access, ours, channel.handshake_hash)
        finally:
            if session.checking.get(group_id) is waiting:
                del session.checking[group_id]
            waiters, waiting[:] = list(waiting), []
            for d in waiters:
                d.callback(None)

    def strategy(
        self, connection: PeerConnection, group_id: bytes
    ) -> Deferred[IMulticastStrategy]:
        return Deferred.fromCoroutine(self.route(connection, group_id, None))

    async def route(
        self, connection: PeerConnection, group_id: bytes, name: str | None
    ) -> IMulticastStrategy:
        """
        The strategy of a group for a command that came on ``connection``
        (of the plugin called ``name``, or any).

        :raises MembershipNotProven: unless the peer proved membership of
            the group's current epoch on it.
        """
        try:
            group = await self.check_proven(connection, group_id)
            if name is not None and group.strategy != name:
                raise MembershipNotProven(_REFUSED)
            return await self.strategy_of(group_id)
        except (NotInGroup, NotStored):
            raise MembershipNotProven(_REFUSED) from None
        except StoreClosed:
            # A command that came as the node stopped: refused as the
            # command declares, not an unhandled error AMP would log.
            raise MembershipNotProven("this node is stopping") from None

    async def check_proven(self, connection: PeerConnection, group_id: bytes) -> Group:
        """
        The group, for a command that came on ``connection``.

        :raises MembershipNotProven: unless the peer proved membership of
            the group's current epoch on it (and is not blocked).
        """
        session = self._sessions.get(connection)
        if session is not None and group_id in session.checking:
            # A proof of the group on this connection is being checked:
            # this command came right behind it.
            d: Deferred[None] = Deferred()
            session.checking[group_id].append(d)
            await d
        try:
            if session is None or connection.peer_id in self._blocked:
                raise MembershipNotProven(_REFUSED)
            group = await self._group(group_id)
            epoch = await self.store.epoch(group_id)
        except (NotInGroup, NotStored):
            raise MembershipNotProven(_REFUSED) from None
        if session.proven.get(group_id) != epoch.epoch:
            raise MembershipNotProven(_REFUSED)
        return group
