# -*- test-case-name: tests.test_multicast_service -*-
"""
Delivery reports: who has a message the owner sent, and who not yet, as it
changes.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ..identity import PeerID


@frozen
class ReceivedMessage:
    """
    A message as a subscriber gets it: verified, complete and committed.

    :ivar sent_at: the owner's send time (its word: nothing checks it).
    :ivar content_type: ``"text"`` or ``"file"``.
    :ivar file_name: the name the owner gave a file, unsanitised (empty for
        a text).
    """

    group_id: bytes
    epoch: int
    index: int
    sender: PeerID
    sent_at: int
    content_type: str
    data: bytes
    file_name: str = ""


@frozen
class Arrival:
    """
    A fragment of a message stored at this node as it arrives: how much of
    the message the node holds now, for progress bars (a member's own
    count, not the owner's guess).

    :ivar fragments: the fragments of the message this node holds now.
    :ivar total: the message's fragments.
    :ivar at: when the fragment was stored, on the service's clock.
    """

    group_id: bytes
    epoch: int
    index: int
    fragments: int
    total: int
    at: float


class DeliveryReport:
    """
    Where one message the owner sent stands: which members committed it
    (:attr:`committed`), which not yet (:attr:`pending`), and which the
    strategy could not reach in its last transmission (:attr:`unreached`,
    a subset of ``pending``; they get it when they come back).

    A member counts as having it only once it acknowledged committing it,
    under a key only it and the owner hold.  :meth:`follow` calls back on
    every change; :meth:`settled` fires once no one is pending.
    """

    log = Logger()

    def __init__(
        self, group_id: bytes, epoch: int, index: int, recipients: frozenset[PeerID]
    ) -> None:
        self.group_id = group_id
        self.epoch = epoch
        self.index = index
        self.committed: frozenset[PeerID] = frozenset()
        self.pending: frozenset[PeerID] = recipients
        self.unreached: frozenset[PeerID] = frozenset()
        self.progress: dict[PeerID, int] = {}
        self._followers: list[Callable[[DeliveryReport], object]] = []
        self._settled: list[Deferred[DeliveryReport]] = []
        #: Fires with this report once the strategy's transmission ended.
        self.transmitted: Deferred[DeliveryReport] = succeed(self)

    def __repr__(self) -> str:
        return (
            f"<DeliveryReport {self.group_id.hex()[:8]} {self.epoch}/{self.index}: "
            f"{len(self.committed)} committed, {len(self.pending)} pending>"
        )

    def follow(self, callback: Callable[[DeliveryReport], object]) -> Callable[[], None]:
        """
        Call ``callback`` with this report on every change from now on.

        :returns: a function that stops following.
        """
        self._followers.append(callback)

        def stop() -> None:
            if callback in self._followers:
                self._followers.remove(callback)

        return stop

    def settled(self) -> Deferred[DeliveryReport]:
        """
        :returns: a Deferred that fires with this report once every
            recipient has committed the message.
        """
        if not self.pending:
            return succeed(self)
        d: Deferred[DeliveryReport] = Deferred()
        self._settled.append(d)
        return d

    def as_json(self) -> dict[str, object]:
        """
        The report for the control API.
        """
        return {
            "group": self.group_id.hex(),
            "epoch": self.epoch,
            "index": self.index,
            "committed": sorted(str(p) for p in self.committed),
            "pending": sorted(str(p) for p in self.pending),
            "unreached": sorted(str(p) for p in self.unreached),
        }

    def _changed(self) -> None:
        for callback in list(self._followers):
            try:
                callback(self)
            except Exception:
                self.log.failure("a delivery report's follower failed")
        if not self.pending:
            waiting, self._settled = self._settled, []
            for d in waiting:
                d.callback(self)

    def mark_committed(self, peer: PeerID) -> None:
        """
        Count ``peer`` as having committed the message.
        """
        if peer in self.pending:
            self.pending -= {peer}
            self.unreached -= {peer}
            self.committed |= {peer}
            self._changed()

    def mark_unreached(self, peers: frozenset[PeerID]) -> None:
        """
        Record which pending recipients the last transmission did not reach.
        """
        unreached = peers & self.pending
        if unreached != self.unreached:
            self.unreached = unreached
            self._changed()

    def mark_progress(self, peer: PeerID, fragments: int) -> None:
        """
        Record that ``peer`` has taken ``fragments`` fragments so far.
        """
        if peer in self.pending and self.progress.get(peer) != fragments:
            self.progress[peer] = fragments
            self._changed()

    def drop(self, peer: PeerID) -> None:
        """
        Stop waiting for ``peer`` (it was removed or left).
        """
        if peer in self.pending:
            self.pending -= {peer}
            self.unreached -= {peer}
            self._changed()
