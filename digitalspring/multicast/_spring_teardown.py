# -*- test-case-name: tests.test_spring -*-
"""
The connections of one group's ``spring`` transmissions at one node, closed
once no transmission uses them and they have been quiet for a moment.

A transmission opens a connection to each of its peers; the pool would
close them after its idle timeout (300 s by default), minutes after the
transmission ended.  A group is to be back to zero traffic and zero
connections once a transmission is over: each transmission says which
peers it exchanged with, and once the last transmission of the group that
exchanged with a peer has ended, the node's connection with that peer is
closed as soon as it has carried nothing for :data:`CLOSE_QUIET` seconds
and no request is under way on it either way.  Whatever else uses it (the
service, another group) keeps it busy, and so open; one not quiet within
:data:`CLOSE_WITHIN` is left to the pool's idle timeout.

It holds a timer only while a connection waits to be closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..identity import PeerID

#: Seconds a connection no transmission uses any more must have carried
#: nothing before it is closed: a few round trips, on Tor too, for what its
#: other end still sends (an acknowledgement on its way to the owner).
CLOSE_QUIET = 5.0
#: Seconds after its last transmission ended within which a connection is
#: closed if it falls quiet; after that the pool's idle timeout closes it.
CLOSE_WITHIN = 60.0


class Teardown:
    """
    The peers a group's transmissions exchange with, and those whose
    connection waits to be closed.

    Peers, not connections: when both ends dial each other at once, the
    pool keeps one of the two connections and closes the other, and the
    one kept may be the one no transmission sent anything on.

    :param clock: an ``IReactorTime``.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._pool: Any = None
        self._users: dict[PeerID, set[object]] = {}
        #: Peers no transmission exchanges with, and when the last one ended.
        self._waiting: dict[PeerID, float] = {}
        self._timer: Any = None
        #: How many connections it closed.
        self.closed = 0

    @property
    def waiting(self) -> int:
        """
        How many connections wait to be closed.
        """
        return len(self._waiting)

    def use(self, user: object, peer: PeerID, connection: Any) -> None:
        """
        ``user`` (a transmission) exchanges with ``peer``, over
        ``connection`` (a :class:`~digitalspring.channel.PeerConnection`,
        whose pool is the node's).
        """
        if self._pool is None:
            self._pool = connection.pool
        self._users.setdefault(peer, set()).add(user)
        self._waiting.pop(peer, None)

    def release(self, user: object, peers: Iterable[PeerID]) -> None:
        """
        ``user`` has ended: the connections with the ``peers`` no other
        user exchanges with are closed once quiet.
        """
        now = self.clock.seconds()
        for peer in peers:
            users = self._users.get(peer)
            if users is None:
                continue
            users.discard(user)
            if not users:
                del self._users[peer]
                self._waiting[peer] = now
        self._check()

    def _check(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._pool is None:
            return
        now = self.clock.seconds()
        live = self._pool.connections()
        due: float | None = None
        for peer, released in list(self._waiting.items()):
            connection = live.get(peer)
            if connection is None or now - released >= CLOSE_WITHIN:
                del self._waiting[peer]
                continue
            quiet_at = connection.last_active + CLOSE_QUIET
            if connection.requests_in_flight == 0 and now >= quiet_at:
                del self._waiting[peer]
                self.closed += 1
                connection.transport.loseConnection()
                continue
            when = max(quiet_at, now + CLOSE_QUIET / 5)
            due = when if due is None else min(due, when)
        if due is not None:
            self._timer = self.clock.callLater(due - now, self._check)

    def stop(self) -> None:
        """
        Forget everything and cancel the timer: the node is stopping, and
        its pool closes every connection.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._users.clear()
        self._waiting.clear()
