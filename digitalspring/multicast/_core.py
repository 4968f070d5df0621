# -*- test-case-name: tests.test_multicast_service -*-
"""
What every part of the multicast service shares: its state, the errors of
group operations, and the lookups each part makes (a group this node is
in, one it owns, its context and strategy, the members a message goes to).

:class:`~digitalspring.multicast.MulticastService` is put together from
parts, one idea each: owner operations (``_owner.py``), publishing and
delivery reports (``_publishing.py``), the member's side -- notices,
consent, receiving (``_member.py``), membership proofs and the routing of
strategy commands (``_router.py``), and the outbox (``_outbox.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.logger import Logger

from .._ratelimit import RateLimitedLog
from ..channel import ConnectionPool
from ..errors import DigitalSpringError
from ..identity import Identity, PeerID
from ..storage import Group, IStore, NotStored, closed_by_stopping
from ._context import GroupContext
from ._interfaces import IMulticastStrategy, IMulticastStrategyPlugin
from ._outbox import Outbox
from ._plugins import get_strategy, strategy_plugins
from ._rates import RequestLimiter
from ._report import Arrival, DeliveryReport, ReceivedMessage

if TYPE_CHECKING:
    from ._service import MulticastService

_P = ParamSpec("_P")
_T = TypeVar("_T")


def deferred(
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


class ServiceCore(Service):
    """
    The state the parts of the multicast service share, and the lookups
    they all make.  :class:`~digitalspring.multicast.MulticastService`
    sets it up.
    """

    log = Logger()

    identity: Identity
    clock: Any
    pool: ConnectionPool
    store: IStore
    is_contact: Callable[[PeerID], bool]
    outbox: Outbox
    _plugins: dict[str, IMulticastStrategyPlugin] | None
    _rlog: RateLimitedLog
    _request_rates: RequestLimiter
    _contexts: dict[bytes, GroupContext]
    _strategies: dict[bytes, IMulticastStrategy]
    _locks: dict[bytes, DeferredLock]
    _reports: dict[tuple[bytes, int, int], DeliveryReport]
    _subscribers: dict[bytes | None, list[Callable[[ReceivedMessage], object]]]
    _arrival_watchers: list[Callable[[Arrival], object]]
    _blocked: frozenset[PeerID]

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

    def _lock(self, group_id: bytes) -> DeferredLock:
        lock = self._locks.get(group_id)
        if lock is None:
            lock = self._locks[group_id] = DeferredLock()
        return lock

    def _now(self) -> int:
        return int(self.clock.seconds())

    def _log_failure(self, failure: Any) -> None:
        if closed_by_stopping(failure, self.running):
            self.log.info(
                "multicast service: work cut short as the node stopped ({error})",
                error=str(failure.value),
            )
            return
        self.log.failure("multicast service", failure)

    # --- groups as the strategies see them -----------------------------------

    @deferred
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
                cast("MulticastService", self),
                group_id,
                group.owner,
                group.role,
                group.degree,
                neighbours,
                members,
            ),
        )
        return context

    @deferred
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

    async def _recipients(self, group_id: bytes) -> frozenset[PeerID]:
        """
        The peers a message of a group we own goes to: its members and its
        mailboxes, not the removed ones.
        """
        return frozenset(
            m.peer for m in await self.store.members(group_id) if m.status != "removed"
        )

    def _forget_group(self, group_id: bytes) -> Deferred[None]:
        self._contexts.pop(group_id, None)
        strategy = self._strategies.pop(group_id, None)
        if strategy is None:
            return succeed(None)
        return strategy.stop()

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

