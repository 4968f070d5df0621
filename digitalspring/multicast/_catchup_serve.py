# -*- test-case-name: tests.test_catchup -*-
"""
The answering side of catch-up: what any node of a group (a mailbox, a
member, the owner) tells a member that asks what it holds, and the
fragments it sends, from its store.

Bounded per peer and in total: requests of one peer served at once, of all
peers at once, and the bytes sent, through an upload budget of its own
(requests past them are ``BUSY``, and their senders ask another holder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from ..identity import PeerID
from ..storage import IStore, NotStored
from ._catchup_wire import (
    MAX_ENTRIES_SIZE,
    MAX_SINCE,
    CatchUpBusy,
    CatchUpFragment,
    CatchUpRefused,
    CatchUpSince,
    encode_entry,
)
from ._spring_upload import UploadBudget
from ._spring_wire import SpringBusy

if TYPE_CHECKING:
    from ..channel import PeerConnection
    from ._service import MulticastService

#: The most catch-up requests of one peer served at once, and of all.
MAX_SERVING_PER_PEER = 2
MAX_SERVING = 16
#: The largest epoch and index a request may name (an index is below 1,000
#: in any manifest; -1 asks from the first).
_MAX_EPOCH = 2**62
_MAX_INDEX = 2**31


class CatchUpServer:
    """
    What this node answers catch-up requests with.

    :param rate: the bytes per second it uploads to members catching up,
        all groups together.
    """

    def __init__(self, store: IStore, clock: Any, rate: float) -> None:
        self.store = store
        self.budget = UploadBudget(clock, rate)
        self._serving: dict[PeerID, int] = {}

    def _begin(self, peer: PeerID) -> None:
        if (
            self._serving.get(peer, 0) >= MAX_SERVING_PER_PEER
            or sum(self._serving.values()) >= MAX_SERVING
        ):
            raise CatchUpBusy("catch-up requests of this peer, or of all, are under way")
        self._serving[peer] = self._serving.get(peer, 0) + 1

    def _end(self, peer: PeerID) -> None:
        left = self._serving.pop(peer, 1) - 1
        if left:
            self._serving[peer] = left

    async def since(
        self, peer: PeerID, group_id: bytes, after: tuple[int, int]
    ) -> tuple[bytes, bytes | None]:
        """
        The messages of a group this node holds after ``after``, as
        entries, and the newest it holds.
        """
        self._begin(peer)
        try:
            held = await self.store.held_after(group_id, after, MAX_SINCE)
            entries = b""
            for message in held:
                entry = encode_entry(message.manifest, message.fragments)
                if entries and len(entries) + len(entry) > MAX_ENTRIES_SIZE:
                    break
                entries += entry
            newest = await self.store.newest(group_id)
        finally:
            self._end(peer)
        return entries, None if newest is None else encode_entry(newest.manifest, newest.fragments)

    async def fragment(
        self, peer: PeerID, group_id: bytes, epoch: int, index: int, number: int
    ) -> bytes:
        """
        One fragment this node holds, once its upload budget lets it go.
        """
        self._begin(peer)
        try:
            try:
                data = await self.store.fragment(group_id, epoch, index, number)
            except NotStored:
                raise CatchUpRefused("a fragment this node does not hold") from None
            try:
                await self.budget.reserve(len(data), 1.0)
            except SpringBusy:
                raise CatchUpBusy("the upload queue is full") from None
        finally:
            self._end(peer)
        return data


def _checked(epoch: int, index: int) -> tuple[int, int]:
    if not (0 <= epoch < _MAX_EPOCH and -1 <= index < _MAX_INDEX):
        raise CatchUpRefused("no such message")
    return epoch, index


class CatchUpResponder(amp.CommandLocator):
    """
    The catch-up commands on one connection: refused unless the peer
    proved membership of the group's current epoch on it.
    """

    def __init__(self, service: MulticastService, connection: PeerConnection) -> None:
        self.service = service
        self.connection = connection

    @CatchUpSince.responder
    def since(self, group: bytes, epoch: int, index: int) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(self._since(group, epoch, index))

    async def _since(self, group: bytes, epoch: int, index: int) -> dict[str, Any]:
        after = _checked(epoch, index)
        await self.service.check_proven(self.connection, group)
        server = self.service.catch_up_server
        entries, newest = await server.since(self.connection.peer_id, group, after)
        return {"entries": entries, "newest": newest}

    @CatchUpFragment.responder
    def fragment(
        self, group: bytes, epoch: int, index: int, number: int
    ) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(self._fragment(group, epoch, index, number))

    async def _fragment(self, group: bytes, epoch: int, index: int, number: int) -> dict[str, Any]:
        _checked(epoch, index)
        if not 0 <= number < _MAX_INDEX:
            raise CatchUpRefused("no such fragment")
        await self.service.check_proven(self.connection, group)
        server = self.service.catch_up_server
        data = await server.fragment(self.connection.peer_id, group, epoch, index, number)
        return {"data": data}
