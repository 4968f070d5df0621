# -*- test-case-name: tests.test_multicast_service -*-
"""
The multicast service: a node's groups, as owner and as member.

It ties the pure parts together: the owner's epochs and keys
(``_epoch.py``), sealing and opening (``_message.py``), the neighbour graph
(``_neighbours.py``), membership proofs (``_membership.py``), the notices
of the pairwise channel (``_notices.py``), the store, and one strategy per
group (a plugin).  What waits for an offline peer waits in the store's
outbox; it goes out when the peer connects, or on a bounded retry schedule
that exists only while something waits: an idle node holds no timer and no
connection for its groups.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, ParamSpec, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from .._ratelimit import RateLimitedLog
from ..channel import ConnectionPool, ISecureChannel, PeerConnection
from ..errors import DigitalSpringError
from ..identity import Identity, PeerID
from ..storage import (
    AddEpoch,
    AddGroup,
    AddInvitation,
    Block,
    ChainState,
    ChangeEdges,
    CloseEpoch,
    CommitSent,
    CountAttempt,
    DeleteGroup,
    Dequeue,
    DropFragments,
    DropInvitation,
    Enqueue,
    Epoch,
    EpochClose,
    ForgetEpochKeys,
    Group,
    IStore,
    MarkDelivered,
    Member,
    NotStored,
    PutMember,
    RevealSigningSecret,
    SetGroupState,
    SetNeighbours,
    SetSetting,
    StorageError,
    Unblock,
)
from ..storage import Invitation as PendingInvitation
from ._chain import SendingChain
from ._commands import GroupNotice, NoticeRefused, ProveMembership
from ._content import Content, file_content, text_content
from ._context import GroupContext, decode_stored, encode_stored
from ._crypto import signing_public_key
from ._epoch import (
    EpochEnd,
    EpochKeys,
    OwnerEpoch,
    end_reason,
    invitation_delivery,
    new_epoch_delivery,
    next_epoch,
    start_group,
)
from ._interfaces import IMulticastStrategy, IMulticastStrategyPlugin, IStrategyRouter
from ._manifest import NO_PREVIOUS, Manifest, decode_manifest
from ._membership import MembershipNotProven, Role, check_proof, make_proof
from ._message import SealedMessage, seal
from ._neighbours import DEFAULT_DEGREE, NeighbourGraph
from ._notices import (
    ACKNOWLEDGEMENT,
    DEPARTURE,
    INVITATION,
    NEIGHBOURS,
    NEW_EPOCH,
    REMOVAL,
    GroupInvitation,
    acknowledgement_key,
    acknowledgement_valid,
    decode_acknowledgement,
    decode_bare,
    decode_invitation,
    decode_neighbours,
    decode_new_epoch,
    encode_invitation,
    encode_neighbours,
    encode_new_epoch,
    make_acknowledgement,
    notice_group,
)
from ._plugins import get_strategy, strategy_plugins
from ._report import DeliveryReport, ReceivedMessage

#: Seconds before each retry of an outbox entry a peer did not take; the
#: last one repeats.  After :data:`MAX_ATTEMPTS` the entry waits for the
#: peer to connect.
RETRY_DELAYS = (30.0, 120.0, 600.0, 3600.0, 6 * 3600.0, 24 * 3600.0)
MAX_ATTEMPTS = 20
#: The most delivery reports kept in memory to follow; older ones are
#: dropped (the store keeps every delivery state).
MAX_REPORTS = 1000
#: The setting that turns off accepting invitations from contacts unasked.
AUTO_ACCEPT_SETTING = "auto-accept-contacts"
#: Outbox kind of a catch-up: messages a member has not committed.
CATCH_UP = "catch-up"

_REFUSED = "the peer did not prove membership of the group"

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _deferred(
    function: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Deferred[_T]]:
    """
    A public method that returns a Deferred, written as a coroutine.
    """

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return Deferred.fromCoroutine(function(*args, **kwargs))

    return wrapper


class GroupError(DigitalSpringError):
    """
    A group operation cannot be done.
    """


class NotOwner(GroupError):
    """
    Only the owner of a group can do this, and this node is not its owner.
    """


class NotInGroup(GroupError):
    """
    This node is not (or no longer) in that group.
    """


class AlreadyMember(GroupError):
    """
    That peer is a member of the group already.
    """


class NotAMember(GroupError):
    """
    That peer is not a member of the group.
    """


class _Session:
    """
    What one connection has proven: the groups (and their epochs) in which
    the peer on it proved membership.
    """

    __slots__ = ("__weakref__", "proven")

    def __init__(self) -> None:
        self.proven: dict[bytes, int] = {}


@implementer(IStrategyRouter)
class _PluginRouter:
    """
    The router one plugin's responders get: it refuses groups of other
    strategies.
    """

    def __init__(self, service: MulticastService, name: str) -> None:
        self._service = service
        self._name = name

    def strategy(
        self, connection: PeerConnection, group_id: bytes
    ) -> Deferred[IMulticastStrategy]:
        return Deferred.fromCoroutine(self._service._route(connection, group_id, self._name))


class _Responder(amp.CommandLocator):
    """
    The service's commands on one connection.
    """

    def __init__(self, service: MulticastService, connection: PeerConnection) -> None:
        self.service = service
        self.connection = connection

    @ProveMembership.responder
    async def prove(self, group: bytes, epoch: int, proof: bytes) -> dict[str, bytes]:
        return {"proof": await self.service._answer_proof(self.connection, group, epoch, proof)}

    @GroupNotice.responder
    async def notice(self, kind: str, payload: bytes) -> dict[str, Any]:
        await self.service._receive_notice(self.connection.peer_id, kind, payload)
        return {}


@implementer(IStrategyRouter)
class MulticastService(Service):
    """
    A node's multicast groups: owner operations, pub/sub, invitations and
    consent, membership proofs, and the strategies that move messages.

    :param identity: this node's identity.
    :param clock: every timer runs on it.
    :param pool: the connection pool the service's commands and the
        strategies' travel on.
    :param store: the node's store.
    :param is_contact: whether a peer is in the user's address book
        (invitations from contacts are accepted unasked, unless the
        ``auto-accept-contacts`` setting is ``off``).
    :param strategies: the strategy plugins by name; by default the
        installed ones.
    """

    log = Logger()

    def __init__(
        self,
        identity: Identity,
        clock: Any,
        pool: ConnectionPool,
        store: IStore,
        is_contact: Callable[[PeerID], bool] = lambda peer: False,
        strategies: Mapping[str, IMulticastStrategyPlugin] | None = None,
    ) -> None:
        self.identity = identity
        self.clock = clock
        self.pool = pool
        self.store = store
        self.is_contact = is_contact
        self._plugins = dict(strategies) if strategies is not None else None
        self._rlog = RateLimitedLog(self.log, clock)
        self._sessions: weakref.WeakKeyDictionary[PeerConnection, _Session]
        self._sessions = weakref.WeakKeyDictionary()
        self._contexts: dict[bytes, GroupContext] = {}
        self._strategies: dict[bytes, IMulticastStrategy] = {}
        self._locks: dict[bytes, DeferredLock] = {}
        self._reports: dict[tuple[bytes, int, int], DeliveryReport] = {}
        self._subscribers: dict[bytes | None, list[Callable[[ReceivedMessage], object]]] = {}
        self._blocked: frozenset[PeerID] = frozenset()
        self._outbox_peers: set[PeerID] = set()
        self._flushing: dict[PeerID, bool] = {}
        self._retries: dict[PeerID, IDelayedCall] = {}
        self._locators: list[Callable[[PeerConnection], Any]] = []
        self.ready: Deferred[None] = Deferred()

    # --- the service -------------------------------------------------------

    @property
    def local(self) -> PeerID:
        return self.identity.peer_id

    def plugins(self) -> dict[str, IMulticastStrategyPlugin]:
        """
        The strategy plugins this service runs, by name.
        """
        if self._plugins is None:
            self._plugins = strategy_plugins()
        return self._plugins

    def startService(self) -> None:
        super().startService()
        self._locators = [self._locator]
        for plugin in self.plugins().values():
            self._locators.append(functools.partial(self._plugin_locator, plugin))
        self.pool.locators.extend(self._locators)
        Deferred.fromCoroutine(self._load()).addBoth(self._loaded)

    async def _load(self) -> None:
        self._blocked = await self.store.blocked()
        self._outbox_peers = set(await self.store.outbox_peers())
        for peer in self._outbox_peers:
            self._schedule_flush(peer, 0)

    def _loaded(self, result: object) -> None:
        if isinstance(result, Failure):
            self.log.failure("the multicast service could not load its state", result)
        self.ready.callback(None)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for locator in self._locators:
            if locator in self.pool.locators:
                self.pool.locators.remove(locator)
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()
        strategies, self._strategies = list(self._strategies.values()), {}
        self._contexts.clear()
        return Deferred.fromCoroutine(self._stop_all(strategies))

    async def _stop_all(self, strategies: list[IMulticastStrategy]) -> None:
        for strategy in strategies:
            await strategy.stop()

    def _plugin_locator(
        self, plugin: IMulticastStrategyPlugin, connection: PeerConnection
    ) -> amp.CommandLocator:
        locator: amp.CommandLocator = plugin.locator(connection, _PluginRouter(self, plugin.name))
        return locator

    def _locator(self, connection: PeerConnection) -> amp.CommandLocator:
        self._sessions[connection] = _Session()
        if connection.peer_id in self._outbox_peers:
            # Not now: the connection is still being made.
            self._schedule_flush(connection.peer_id, 0)
        return _Responder(self, connection)

    def _lock(self, group_id: bytes) -> DeferredLock:
        lock = self._locks.get(group_id)
        if lock is None:
            lock = self._locks[group_id] = DeferredLock()
        return lock

    def _now(self) -> int:
        return int(self.clock.seconds())

    # --- groups as the strategies see them -----------------------------------

    @_deferred
    async def context(self, group_id: bytes) -> GroupContext:
        """
        The strategy context of a group this node is active in.

        :raises NotInGroup: when it is not.
        """
        context = self._contexts.get(group_id)
        if context is not None:
            return context
        group = await self._group(group_id)
        members = None
        neighbours: frozenset[PeerID] = frozenset()
        if group.role == "owner":
            members = await self._recipients(group_id)
        else:
            neighbours = await self.store.neighbours(group_id)
        context = self._contexts.setdefault(
            group_id,
            GroupContext(
                self, group_id, group.owner, group.role, group.degree, neighbours, members
            ),
        )
        return context

    @_deferred
    async def strategy_of(self, group_id: bytes) -> IMulticastStrategy:
        """
        The strategy of a group this node is active in, made on first use.

        :raises NotInGroup: when it is not.
        :raises UnknownStrategy: when its plugin is not installed.
        """
        strategy = self._strategies.get(group_id)
        if strategy is not None:
            return strategy
        group = await self._group(group_id)
        plugin = self.plugins().get(group.strategy) or get_strategy(group.strategy)
        context = await self.context(group_id)
        return self._strategies.setdefault(group_id, plugin.make_strategy(context))

    async def _group(self, group_id: bytes) -> Group:
        try:
            group = await self.store.group(group_id)
        except NotStored:
            raise NotInGroup(f"this node is not in group {group_id.hex()}") from None
        if group.state != "active":
            raise NotInGroup(f"this node is no longer in group {group_id.hex()}")
        return group

    async def _owned(self, group_id: bytes) -> Group:
        group = await self._group(group_id)
        if group.role != "owner":
            raise NotOwner(f"this node does not own group {group_id.hex()}")
        return group

    def _forget_group(self, group_id: bytes) -> Deferred[None]:
        self._contexts.pop(group_id, None)
        strategy = self._strategies.pop(group_id, None)
        if strategy is None:
            return succeed(None)
        return strategy.stop()

    # --- membership proofs ---------------------------------------------------

    @_deferred
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

    async def _answer_proof(
        self, connection: PeerConnection, group_id: bytes, number: int, proof: bytes
    ) -> bytes:
        session = self._sessions.get(connection)
        try:
            if session is None or connection.peer_id in self._blocked:
                raise MembershipNotProven(_REFUSED)
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

    def strategy(
        self, connection: PeerConnection, group_id: bytes
    ) -> Deferred[IMulticastStrategy]:
        return Deferred.fromCoroutine(self._route(connection, group_id, None))

    async def _route(
        self, connection: PeerConnection, group_id: bytes, name: str | None
    ) -> IMulticastStrategy:
        session = self._sessions.get(connection)
        try:
            if session is None or connection.peer_id in self._blocked:
                raise MembershipNotProven(_REFUSED)
            group = await self._group(group_id)
            epoch = await self.store.epoch(group_id)
            if session.proven.get(group_id) != epoch.epoch:
                raise MembershipNotProven(_REFUSED)
            if name is not None and group.strategy != name:
                raise MembershipNotProven(_REFUSED)
            return await self.strategy_of(group_id)
        except (NotInGroup, NotStored):
            raise MembershipNotProven(_REFUSED) from None

    # --- owner operations ------------------------------------------------------

    @_deferred
    async def create_group(
        self, name: str, strategy: str = "unicast", degree: int = DEFAULT_DEGREE
    ) -> bytes:
        """
        Create a group owned by this node.

        :param name: its name, as members will be offered it.
        :param strategy: the name of its strategy plugin.
        :param degree: N, the number of neighbours of each member.
        :returns: its new random 32-byte ID.
        :raises UnknownStrategy: when no plugin has that name.
        """
        if strategy not in self.plugins():
            get_strategy(strategy)
        if not name or len(name.encode("utf-8")) > 255:
            raise GroupError("a group's name has 1 to 255 bytes")
        group_id = os.urandom(32)
        now = self._now()
        owner = start_group(group_id, now)
        await self.store.commit(
            AddGroup(Group(group_id, name, self.local, "owner", strategy, degree, now)),
            AddEpoch(self._owner_epoch_row(owner, now)),
        )
        return group_id

    def _owner_epoch_row(self, owner: OwnerEpoch, now: int) -> Epoch:
        keys = owner.keys
        return Epoch(
            keys.group_id,
            keys.epoch,
            keys.signing_public_key,
            now,
            chain=ChainState(keys.chain_key, 0),
            signing_secret=keys.signing_seed,
            access_key=keys.access_key,
        )

    async def _owner_state(self, group_id: bytes) -> OwnerEpoch:
        epoch = await self.store.epoch(group_id)
        assert epoch.chain is not None and epoch.signing_secret is not None
        assert epoch.access_key is not None
        last_hash = NO_PREVIOUS
        if epoch.chain.next_index:
            last = await self.store.message(group_id, epoch.epoch, epoch.chain.next_index - 1)
            last_hash = decode_manifest(last.manifest).hash
        held = None
        if epoch.epoch:
            held = (await self.store.epoch(group_id, epoch.epoch - 1)).signing_secret
        keys = EpochKeys(
            group_id, epoch.epoch, epoch.chain.key, epoch.signing_secret, epoch.access_key
        )
        return OwnerEpoch(
            keys,
            SendingChain(epoch.chain.next_index, epoch.chain.key),
            int(epoch.created),
            last_hash,
            held_seed=held,
        )

    async def _graph(self, group_id: bytes, degree: int) -> NeighbourGraph[PeerID]:
        members = await self._recipients(group_id)
        adjacency: dict[PeerID, set[PeerID]] = {m: set() for m in members}
        for a, b in await self.store.edges(group_id):
            if a in adjacency and b in adjacency:
                adjacency[a].add(b)
                adjacency[b].add(a)
        return NeighbourGraph.from_neighbours(adjacency, degree)

    async def _recipients(self, group_id: bytes) -> frozenset[PeerID]:
        return frozenset(
            m.peer
            for m in await self.store.members(group_id)
            if m.role == "member" and m.status != "removed"
        )

    @_deferred
    async def add_member(self, group_id: bytes, peer: PeerID, role: str = "member") -> None:
        """
        Add ``peer`` to a group this node owns, and invite it: the
        invitation waits in the outbox until the peer takes it.

        :param role: ``"member"``, or ``"mailbox"`` (recorded now; what a
            mailbox gets comes with the offline work).
        :raises NotOwner: for a group this node does not own.
        :raises AlreadyMember: when the peer is a member already.
        """
        group = await self._owned(group_id)
        if role not in ("member", "mailbox"):
            raise GroupError(f"a member's role is member or mailbox, not {role!r}")
        if peer == self.local:
            raise GroupError("the owner of a group is not one of its members")
        await self._lock(group_id).run(self._add_member, group, peer, role)
        self._refresh_members(group_id)
        self._flush_soon(peer)

    async def _add_member(self, group: Group, peer: PeerID, role: str) -> None:
        group_id = group.group_id
        existing = {m.peer: m for m in await self.store.members(group_id)}
        if peer in existing and existing[peer].status != "removed":
            raise AlreadyMember(f"{peer} is a member of the group already")
        if role == "mailbox":
            await self.store.commit(PutMember(group_id, Member(peer, "mailbox", "invited")))
            return
        change = (await self._graph(group_id, group.degree)).add_members([peer])
        owner = await self._owner_state(group_id)
        invitation = GroupInvitation(
            group_id,
            group.name,
            group.strategy,
            group.degree,
            change.graph.neighbours(peer),
            invitation_delivery(owner),
        )
        now = self._now()
        changes: list[Any] = [
            PutMember(group_id, Member(peer, "member", "invited")),
            ChangeEdges(group_id, frozenset(change.added), frozenset(change.removed)),
            Enqueue(peer, INVITATION, encode_invitation(invitation), now),
        ]
        changes += self._neighbour_notices(group_id, change.graph, change.affected - {peer}, now)
        await self.store.commit(*changes)
        self._outbox_peers |= change.affected | {peer}
        for other in change.affected - {peer}:
            self._flush_soon(other)

    def _neighbour_notices(
        self, group_id: bytes, graph: NeighbourGraph[PeerID], peers: frozenset[PeerID], now: int
    ) -> list[Any]:
        return [
            Enqueue(peer, NEIGHBOURS, encode_neighbours(group_id, graph.neighbours(peer)), now)
            for peer in sorted(peers)
        ]

    def _refresh_members(self, group_id: bytes) -> None:
        context = self._contexts.get(group_id)
        if context is not None:

            async def refresh() -> None:
                context.set_members(await self._recipients(group_id))

            Deferred.fromCoroutine(refresh()).addErrback(self._log_failure)

    @_deferred
    async def remove_member(self, group_id: bytes, peer: PeerID) -> None:
        """
        Remove ``peer`` from a group this node owns: it is told, its
        neighbours are mended, and the epoch ends at once, so that it
        cannot read what follows (the others get the new epoch's keys).

        :raises NotOwner: for a group this node does not own.
        :raises NotAMember: when the peer is not a member.
        """
        group = await self._owned(group_id)
        await self._lock(group_id).run(self._remove_member, group, peer, EpochEnd.MEMBER_REMOVED)

    async def _remove_member(self, group: Group, peer: PeerID, reason: EpochEnd) -> None:
        group_id = group.group_id
        members = {m.peer: m for m in await self.store.members(group_id)}
        member = members.get(peer)
        if member is None or member.status == "removed":
            raise NotAMember(f"{peer} is not a member of the group")
        now = self._now()
        changes: list[Any] = [PutMember(group_id, Member(peer, member.role, "removed"))]
        notified = {peer} if reason is EpochEnd.MEMBER_REMOVED else set()
        if reason is EpochEnd.MEMBER_REMOVED:
            changes.append(Enqueue(peer, REMOVAL, group_id, now))
        if member.role == "member":
            change = (await self._graph(group_id, group.degree)).remove_members([peer])
            changes.append(
                ChangeEdges(group_id, frozenset(change.added), frozenset(change.removed))
            )
            changes += self._neighbour_notices(group_id, change.graph, change.affected, now)
            notified |= change.affected
            remaining = frozenset(change.graph.members)
            rotate, _ = await self._rotation(group_id, remaining, now)
            changes += rotate
            notified |= remaining
        await self.store.commit(*changes)
        for report in self._reports.values():
            if report.group_id == group_id:
                report.drop(peer)
        context = self._contexts.get(group_id)
        if context is not None:
            context.set_members(await self._recipients(group_id))
        self._outbox_peers |= notified
        for other in notified:
            self._flush_soon(other)

    async def _rotation(
        self, group_id: bytes, remaining: frozenset[PeerID], now: int
    ) -> tuple[list[Any], OwnerEpoch]:
        """
        The changes that end the current epoch and start the next: its
        close, the new keys, the new-epoch notice to each remaining member,
        and the reveal of the signing secret of the epoch before.
        """
        owner = await self._owner_state(group_id)
        new = next_epoch(owner, now)
        notice = encode_new_epoch(new_epoch_delivery(new))
        old = owner.keys.epoch
        changes: list[Any] = [
            CloseEpoch(group_id, old, EpochClose(owner.chain.next_index - 1, owner.last_hash)),
            AddEpoch(self._owner_epoch_row(new, now)),
        ]
        if new.revealed_seed is not None:
            changes += [
                ForgetEpochKeys(group_id, old - 1),
                RevealSigningSecret(group_id, old - 1, new.revealed_seed),
            ]
        changes += [Enqueue(peer, NEW_EPOCH, notice, now) for peer in sorted(remaining)]
        return changes, new

    @_deferred
    async def group_list(self) -> list[Group]:
        """
        Every group this node is or was in, oldest first.
        """
        return await self.store.groups()

    @_deferred
    async def show(self, group_id: bytes) -> dict[str, Any]:
        """
        A group as ``dspring group show`` prints it: name, owner, role,
        strategy, epoch, and (at the owner) every member with its role,
        status, neighbours and the number of messages it has not
        committed; (at a member) its neighbours.

        :raises NotStored: for an unknown group.
        """
        group = await self.store.group(group_id)
        epoch = await self.store.epoch(group_id)
        shown: dict[str, Any] = {
            "group": group_id.hex(),
            "name": group.name,
            "petname": group.petname,
            "owner": str(group.owner),
            "role": group.role,
            "state": group.state,
            "strategy": group.strategy,
            "degree": group.degree,
            "epoch": epoch.epoch,
            "next_index": None if epoch.chain is None else epoch.chain.next_index,
        }
        if group.role == "owner":
            edges = await self.store.edges(group_id)
            members = []
            for member in await self.store.members(group_id):
                undelivered = await self.store.undelivered(group_id, member.peer)
                neighbours = sorted(
                    str(b if a == member.peer else a) for a, b in edges if member.peer in (a, b)
                )
                members.append(
                    {
                        "peer": str(member.peer),
                        "role": member.role,
                        "status": member.status,
                        "undelivered": len(undelivered),
                        "neighbours": neighbours,
                    }
                )
            shown["members"] = members
        else:
            shown["neighbours"] = sorted(str(p) for p in await self.store.neighbours(group_id))
        return shown

    @_deferred
    async def delete_group(self, group_id: bytes) -> None:
        """
        Delete a group and all this node holds of it.  An owner tells its
        members the group is gone; a member leaves it first.
        """
        group = await self.store.group(group_id)
        now = self._now()
        changes: list[Any] = []
        told: set[PeerID] = set()
        if group.role == "owner" and group.state == "active":
            for member in await self.store.members(group_id):
                if member.status != "removed":
                    changes.append(Enqueue(member.peer, REMOVAL, group_id, now))
                    told.add(member.peer)
        elif group.state == "active":
            changes.append(Enqueue(group.owner, DEPARTURE, group_id, now))
            told.add(group.owner)
        changes.append(DeleteGroup(group_id))
        await self.store.commit(*changes)
        await self._forget_group(group_id)
        self._outbox_peers |= told
        for peer in told:
            self._flush_soon(peer)

    @_deferred
    async def leave_group(self, group_id: bytes) -> None:
        """
        Leave a group this node is a member of: the owner is told (when it
        is reachable) and this node's keys of the group are deleted.

        :raises NotInGroup: when this node is not in it.
        :raises GroupError: for a group this node owns (delete it instead).
        """
        group = await self._group(group_id)
        if group.role == "owner":
            raise GroupError("the owner of a group deletes it instead of leaving it")
        changes: list[Any] = [
            SetGroupState(group_id, "left"),
            Enqueue(group.owner, DEPARTURE, group_id, self._now()),
        ]
        changes += await self._forget_all_keys(group_id)
        await self.store.commit(*changes)
        await self._forget_group(group_id)
        self._outbox_peers.add(group.owner)
        self._flush_soon(group.owner)

    async def _forget_all_keys(self, group_id: bytes) -> list[Any]:
        latest = await self.store.epoch(group_id)
        changes: list[Any] = []
        for number in range(latest.epoch + 1):
            try:
                epoch = await self.store.epoch(group_id, number)
            except NotStored:
                continue
            if epoch.chain is not None or epoch.access_key is not None:
                changes.append(ForgetEpochKeys(group_id, number))
        return changes

    # --- publishing -----------------------------------------------------------

    def publish(
        self, group_id: bytes, data: bytes | str, file_name: str | None = None
    ) -> Deferred[DeliveryReport]:
        """
        Send a message to a group this node owns: a text (``str``, or
        ``bytes`` of UTF-8 without ``file_name``) or a file.

        :returns: a Deferred that fires with the message's
            :class:`DeliveryReport` once it is sealed and committed here
            and its transmission has started; follow the report for its
            progress (``report.transmitted`` fires when the strategy's
            transmission ended, ``report.settled()`` once every member
            committed it).
        :raises NotOwner: for a group this node does not own.
        :raises ContentTooLarge: for a message over 64 MiB padded.
        """
        return Deferred.fromCoroutine(self._publish(group_id, data, file_name))

    async def _publish(
        self, group_id: bytes, data: bytes | str, file_name: str | None
    ) -> DeliveryReport:
        await self._owned(group_id)
        now = self._now()
        if file_name is not None:
            content = file_content(
                now, file_name, data.encode() if isinstance(data, str) else data
            )
        else:
            text = data if isinstance(data, str) else data.decode("utf-8")
            content = text_content(now, text)
        sealed, report = await self._lock(group_id).run(self._seal, group_id, content, now)
        strategy = await self.strategy_of(group_id)
        report.transmitted = strategy.publish(sealed).addCallback(self._transmitted, report)
        report.transmitted.addErrback(self._log_failure)
        return report

    async def _seal(
        self, group_id: bytes, content: Content, now: int
    ) -> tuple[SealedMessage, DeliveryReport]:
        owner = await self._owner_state(group_id)
        reason = end_reason(owner, now)
        if reason is not None:
            recipients = await self._recipients(group_id)
            changes, owner = await self._rotation(group_id, recipients, now)
            await self.store.commit(*changes)
            self._outbox_peers |= recipients
            for peer in recipients:
                self._flush_soon(peer)
        sealed, after = seal(owner, content)
        recipients = await self._recipients(group_id)
        manifest = sealed.manifest
        await self.store.commit(
            CommitSent(
                group_id,
                manifest.epoch,
                manifest.index,
                sealed.signed_manifest,
                sealed.fragments,
                encode_stored(content),
                now,
                ChainState(after.chain.chain_key, after.chain.next_index),
                recipients,
            )
        )
        report = DeliveryReport(group_id, manifest.epoch, manifest.index, recipients)
        self._keep_report(report)
        return sealed, report

    def _keep_report(self, report: DeliveryReport) -> None:
        self._reports[(report.group_id, report.epoch, report.index)] = report
        while len(self._reports) > MAX_REPORTS:
            del self._reports[next(iter(self._reports))]

    def _transmitted(self, transmission: Any, report: DeliveryReport) -> DeliveryReport:
        report.mark_unreached(transmission.unreached)
        if report.unreached:
            Deferred.fromCoroutine(self._queue_catch_up(report)).addErrback(self._log_failure)
        return report

    async def _queue_catch_up(self, report: DeliveryReport) -> None:
        now = self._now()
        changes = []
        for peer in sorted(report.unreached):
            waiting = await self.store.outbox(peer)
            if not any(e.kind == CATCH_UP and e.payload == report.group_id for e in waiting):
                changes.append(Enqueue(peer, CATCH_UP, report.group_id, now))
        if changes:
            await self.store.commit(*changes)
        for peer in report.unreached:
            self._outbox_peers.add(peer)
            self._schedule_flush(peer, RETRY_DELAYS[0])

    def transmission_progress(
        self, group_id: bytes, manifest: Manifest, peer: PeerID, fragments: int
    ) -> None:
        """
        What a strategy says of a transmission under way (see
        :meth:`IStrategyContext.progress`).
        """
        report = self._reports.get((group_id, manifest.epoch, manifest.index))
        if report is not None:
            report.mark_progress(peer, fragments)

    @_deferred
    async def sealed_message(self, group_id: bytes, epoch: int, index: int) -> SealedMessage:
        """
        A message this node sent, as its strategy sends it again.

        :raises NotStored: when its fragments are no longer kept.
        """
        stored = await self.store.message(group_id, epoch, index)
        fragments = await self.store.fragments(group_id, epoch, index)
        manifest = decode_manifest(stored.manifest)
        if len(fragments) != len(manifest.fragment_hashes):
            raise NotStored(f"the fragments of message {epoch}/{index} are no longer kept")
        return SealedMessage(
            manifest, stored.manifest, tuple(fragments[n] for n in range(len(fragments)))
        )

    @_deferred
    async def report(self, group_id: bytes, epoch: int, index: int) -> DeliveryReport:
        """
        The delivery report of a message this node sent: the live one if
        it is still followed, else one read from the store.
        """
        report = self._reports.get((group_id, epoch, index))
        if report is not None:
            return report
        states = await self.store.deliveries(group_id, epoch, index)
        report = DeliveryReport(group_id, epoch, index, frozenset(states))
        report.committed = frozenset(p for p, s in states.items() if s == "committed")
        report.pending = frozenset(p for p, s in states.items() if s == "pending")
        return report

    # --- receiving ------------------------------------------------------------

    def subscribe(
        self, group_id: bytes | None, callback: Callable[[ReceivedMessage], object]
    ) -> Callable[[], None]:
        """
        Call ``callback`` with every message of a group (of every group
        for ``None``) that this node commits from now on: verified,
        complete and committed, in order.

        :returns: a function that stops it.
        """
        self._subscribers.setdefault(group_id, []).append(callback)

        def stop() -> None:
            callbacks = self._subscribers.get(group_id, [])
            if callback in callbacks:
                callbacks.remove(callback)

        return stop

    @_deferred
    async def history(
        self, group_id: bytes, after: tuple[int, int] | None = None, limit: int = 100
    ) -> list[ReceivedMessage]:
        """
        The messages of a group this node holds, by (epoch, index).

        :param after: only those after this (epoch, index).
        """
        group = await self.store.group(group_id)
        found = []
        for stored in await self.store.history(group_id, after, limit):
            if stored.content is None:
                continue
            content = decode_stored(stored.content, int(stored.sent_at or 0))
            found.append(
                self._received(group_id, group.owner, stored.epoch, stored.index, content)
            )
        return found

    @staticmethod
    def _received(
        group_id: bytes, owner: PeerID, epoch: int, index: int, content: Content
    ) -> ReceivedMessage:
        return ReceivedMessage(
            group_id,
            epoch,
            index,
            owner,
            content.sent_at,
            content.content_type.name.lower(),
            content.data,
            content.file_name,
        )

    async def committed(
        self, context: GroupContext, epoch: int, index: int, content: Content
    ) -> None:
        """
        A member committed a message: hand it to the subscribers, then
        acknowledge it to the owner (through the outbox if the owner cannot
        be reached now).
        """
        group_id = context.group_id
        message = self._received(group_id, context.owner, epoch, index, content)
        for callback in self._subscribers.get(group_id, []) + self._subscribers.get(None, []):
            try:
                callback(message)
            except Exception:
                self.log.failure("a subscriber failed")
        key = acknowledgement_key(self.identity, context.owner, group_id)
        payload = make_acknowledgement(key, group_id, epoch, index)
        try:
            await self.pool.call(context.owner, GroupNotice, kind=ACKNOWLEDGEMENT, payload=payload)
        except Exception:
            await self.store.commit(Enqueue(context.owner, ACKNOWLEDGEMENT, payload, self._now()))
            self._outbox_peers.add(context.owner)
            self._schedule_flush(context.owner, RETRY_DELAYS[0])

    # --- notices ---------------------------------------------------------------

    async def _receive_notice(self, peer: PeerID, kind: str, payload: bytes) -> None:
        try:
            if peer in self._blocked:
                raise NoticeRefused("refused")
            await self._handle_notice(peer, kind, payload)
        except NoticeRefused:
            raise
        except DigitalSpringError as e:
            self._rlog.info(
                "notice-refused",
                "refused a group notice ({notice}) from {peer}: {error}",
                notice=kind[:16],
                peer=str(peer),
                error=str(e),
            )
            raise NoticeRefused("refused") from None

    async def _handle_notice(self, peer: PeerID, kind: str, payload: bytes) -> None:
        if kind == INVITATION:
            await self._invited(peer, payload)
            return
        group_id = notice_group(payload)
        group = await self._group(group_id)
        if kind == ACKNOWLEDGEMENT:
            await self._acknowledged(peer, group, payload)
        elif kind == DEPARTURE:
            if group.role != "owner":
                raise NotOwner("a departure goes to the owner")
            decode_bare(payload)
            await self._lock(group_id).run(self._remove_member, group, peer, EpochEnd.MEMBER_LEFT)
        else:
            if group.owner != peer or group.role == "owner":
                raise NotOwner("only a group's owner sends it keys, neighbours or removals")
            if kind == NEW_EPOCH:
                await self._new_epoch(group, payload)
            elif kind == NEIGHBOURS:
                _, neighbours = decode_neighbours(payload)
                await self.store.commit(SetNeighbours(group_id, neighbours))
                context = self._contexts.get(group_id)
                if context is not None:
                    context.set_neighbours(neighbours)
            elif kind == REMOVAL:
                decode_bare(payload)
                changes: list[Any] = [SetGroupState(group_id, "removed")]
                changes += await self._forget_all_keys(group_id)
                await self.store.commit(*changes)
                await self._forget_group(group_id)
            else:
                raise GroupError("an unknown kind of group notice")

    async def _invited(self, peer: PeerID, payload: bytes) -> None:
        invitation = decode_invitation(payload)
        try:
            existing = await self.store.group(invitation.group_id)
        except NotStored:
            existing = None
        if existing is not None:
            if existing.owner != peer:
                raise GroupError("an invitation into a group with another owner")
            return
        if invitation.strategy not in self.plugins():
            raise GroupError(f"an invitation into a group of strategy {invitation.strategy!r}")
        if self.is_contact(peer) and await self.auto_accept():
            await self._join(peer, invitation)
        else:
            await self.store.commit(
                AddInvitation(PendingInvitation(peer, invitation.group_id, payload, self._now()))
            )

    async def _join(self, owner: PeerID, invitation: GroupInvitation) -> None:
        member = invitation.delivery.member
        now = self._now()
        await self.store.commit(
            AddGroup(
                Group(
                    invitation.group_id,
                    invitation.name,
                    owner,
                    "member",
                    invitation.strategy,
                    invitation.degree,
                    now,
                )
            ),
            AddEpoch(
                Epoch(
                    member.group_id,
                    member.epoch,
                    member.signing_public_key,
                    now,
                    chain=ChainState(member.chain_key, member.first_index),
                    access_key=member.access_key,
                )
            ),
            SetNeighbours(invitation.group_id, invitation.neighbours),
        )

    async def _new_epoch(self, group: Group, payload: bytes) -> None:
        delivery = decode_new_epoch(payload)
        member = delivery.member
        group_id = group.group_id
        latest = await self.store.epoch(group_id)
        if member.epoch <= latest.epoch:
            return
        changes: list[Any] = []
        close = delivery.close
        if close is not None and close.epoch == latest.epoch:
            changes.append(
                CloseEpoch(group_id, close.epoch, EpochClose(close.count - 1, close.last_hash))
            )
            if latest.chain is not None and latest.chain.next_index >= close.count:
                changes.append(ForgetEpochKeys(group_id, close.epoch))
        if delivery.revealed_seed is not None:
            try:
                revealed = await self.store.epoch(group_id, member.epoch - 2)
            except NotStored:
                revealed = None
            if revealed is not None and (
                signing_public_key(delivery.revealed_seed) == revealed.signing_public
            ):
                changes.append(
                    RevealSigningSecret(group_id, member.epoch - 2, delivery.revealed_seed)
                )
        changes.append(
            AddEpoch(
                Epoch(
                    group_id,
                    member.epoch,
                    member.signing_public_key,
                    self._now(),
                    chain=ChainState(member.chain_key, member.first_index),
                    access_key=member.access_key,
                )
            )
        )
        await self.store.commit(*changes)

    async def _acknowledged(self, peer: PeerID, group: Group, payload: bytes) -> None:
        if group.role != "owner":
            raise NotOwner("an acknowledgement goes to the owner")
        ack = decode_acknowledgement(payload)
        key = acknowledgement_key(self.identity, peer, group.group_id)
        if not acknowledgement_valid(key, ack):
            raise GroupError("an acknowledgement under another key")
        states = await self.store.deliveries(group.group_id, ack.epoch, ack.index)
        if peer not in states:
            raise NotAMember("an acknowledgement of a message not sent to this peer")
        changes: list[Any] = [MarkDelivered(group.group_id, ack.epoch, ack.index, peer)]
        if all(s == "committed" for p, s in states.items() if p != peer):
            changes.append(DropFragments(group.group_id, ack.epoch, ack.index))
        await self.store.commit(*changes)
        report = self._reports.get((group.group_id, ack.epoch, ack.index))
        if report is not None:
            report.mark_committed(peer)
            if not report.pending:
                del self._reports[(group.group_id, ack.epoch, ack.index)]

    # --- consent ---------------------------------------------------------------

    @_deferred
    async def auto_accept(self) -> bool:
        """
        Whether invitations from contacts are accepted unasked.
        """
        return (await self.store.setting(AUTO_ACCEPT_SETTING)) != "off"

    @_deferred
    async def set_auto_accept(self, on: bool) -> None:
        """
        Accept invitations from contacts unasked, or not.
        """
        await self.store.commit(SetSetting(AUTO_ACCEPT_SETTING, None if on else "off"))

    @_deferred
    async def invitations(self) -> list[dict[str, Any]]:
        """
        The invitations waiting for the user's consent, oldest first.
        """
        shown = []
        for pending in await self.store.invitations():
            invitation = decode_invitation(pending.payload)
            shown.append(
                {
                    "from": str(pending.from_peer),
                    "group": pending.group_id.hex(),
                    "name": invitation.name,
                    "strategy": invitation.strategy,
                    "received": pending.received,
                }
            )
        return shown

    @_deferred
    async def accept_invitation(self, peer: PeerID, group_id: bytes) -> None:
        """
        Join the group ``peer`` invited this node into.

        :raises NotStored: when no such invitation waits.
        """
        for pending in await self.store.invitations():
            if pending.from_peer == peer and pending.group_id == group_id:
                await self._join(peer, decode_invitation(pending.payload))
                await self.store.commit(DropInvitation(peer, group_id))
                return
        raise NotStored("no such invitation waits")

    @_deferred
    async def decline_invitation(self, peer: PeerID, group_id: bytes) -> None:
        """
        Forget an invitation without joining.
        """
        await self.store.commit(DropInvitation(peer, group_id))

    @_deferred
    async def block(self, peer: PeerID) -> None:
        """
        Refuse everything from ``peer``: its invitations and partial
        messages go at once, and nothing more from it is kept.
        """
        await self.store.commit(Block(peer, self.clock.seconds()))
        self._blocked |= {peer}

    @_deferred
    async def unblock(self, peer: PeerID) -> None:
        """
        Stop blocking ``peer``.
        """
        await self.store.commit(Unblock(peer))
        self._blocked -= {peer}

    # --- the outbox ------------------------------------------------------------

    def _flush_soon(self, peer: PeerID) -> None:
        self._schedule_flush(peer, 0)

    def _schedule_flush(self, peer: PeerID, delay: float) -> None:
        if not self.running:
            return
        call = self._retries.get(peer)
        if call is not None and call.active():
            if call.getTime() <= self.clock.seconds() + delay:
                return
            call.cancel()
        self._retries[peer] = self.clock.callLater(delay, self._flush, peer)

    def _flush(self, peer: PeerID) -> None:
        self._retries.pop(peer, None)
        if peer in self._flushing:
            self._flushing[peer] = True
            return
        self._flushing[peer] = False
        Deferred.fromCoroutine(self._flush_outbox(peer)).addErrback(self._log_failure).addBoth(
            self._flushed, peer
        )

    def _flushed(self, result: object, peer: PeerID) -> None:
        again = self._flushing.pop(peer, False)
        if again:
            self._flush(peer)

    async def _flush_outbox(self, peer: PeerID) -> None:
        entries = await self.store.outbox(peer)
        for entry in entries:
            try:
                if entry.kind == CATCH_UP:
                    delivered = await self._catch_up(peer, entry.payload)
                else:
                    await self.pool.call(peer, GroupNotice, kind=entry.kind, payload=entry.payload)
                    delivered = True
            except NoticeRefused:
                self._rlog.info(
                    "outbox-refused",
                    "{peer} refused a group notice ({notice}); dropped it",
                    peer=str(peer),
                    notice=entry.kind,
                )
                delivered = True
            except Exception:
                delivered = False
            if not delivered:
                await self.store.commit(CountAttempt(entry.entry_id))
                if entry.attempts + 1 < MAX_ATTEMPTS:
                    delay = RETRY_DELAYS[min(entry.attempts, len(RETRY_DELAYS) - 1)]
                    self._schedule_flush(peer, delay)
                return
            await self.store.commit(Dequeue(entry.entry_id))
            if entry.kind == INVITATION:
                await self._invitation_taken(peer, entry.payload)
        self._outbox_peers.discard(peer)

    async def _invitation_taken(self, peer: PeerID, payload: bytes) -> None:
        group_id = notice_group(payload)
        try:
            members = {m.peer: m for m in await self.store.members(group_id)}
        except StorageError:
            return
        member = members.get(peer)
        if member is not None and member.status == "invited":
            await self.store.commit(PutMember(group_id, Member(peer, member.role, "active")))

    async def _catch_up(self, peer: PeerID, group_id: bytes) -> bool:
        """
        Send ``peer`` again the messages of the group it has not committed.

        :returns: whether it was reached (or the group is gone).
        """
        try:
            await self._owned(group_id)
        except GroupError:
            return True
        strategy = await self.strategy_of(group_id)
        for epoch, index in await self.store.undelivered(group_id, peer):
            try:
                message = await self.sealed_message(group_id, epoch, index)
            except NotStored:
                continue
            transmission = await strategy.publish(message)
            if peer in transmission.unreached:
                return False
        return True

    def _log_failure(self, failure: Any) -> None:
        self.log.failure("multicast service", failure)

    # --- for tests and the control API -------------------------------------------

    def encoded_id(self, group_id: bytes) -> str:
        """
        A group's ID as the CLI shows it.
        """
        return group_id.hex()

    @staticmethod
    def parse_id(text: str) -> bytes:
        """
        A group's ID from its hex form.

        :raises GroupError: when it is not 64 hex digits.
        """
        try:
            group_id = bytes.fromhex(text)
        except ValueError:
            group_id = b""
        if len(group_id) != 32:
            raise GroupError(f"a group ID is 64 hex digits, not {text!r}")
        return group_id
