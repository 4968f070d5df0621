# -*- test-case-name: tests.test_multicast_hostile -*-
"""
How often a peer may ask the multicast service for work that costs a
signature check or a write, whatever its quotas let it keep: key bundles
(a signature check, a write), ``group-sealed`` (a read, and a delete when
something is held), a notification box's ``notify-register`` and
``notify-collect`` (a write each).  A token bucket per peer and one for
all peers together (:class:`~digitalspring._ratelimit.PeerRates`); past
either, the request is answered ``BUSY`` (:class:`PeerBusy`) before any
other work, and the asker tries again later: a busy key bundle stays in
the member's outbox, on its retry schedule.

A member gives an owner a bundle when it joins a group and when its
signed prekey is renewed (every 30 days), one waiting per owner whatever
the group; it asks a mailbox for sealed notices when it starts, and boxes
for notifications when it starts, every few minutes and when it is back on
the network.  The rates leave room for that many times over, and hold a
flood to a few writes a second per peer.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from .._ratelimit import PeerRates, Rate
from ._commands import PeerBusy

#: Kinds of work paced.
BUNDLE = "bundle"
SEALED = "sealed"
BOX = "box"


@frozen
class RequestRates:
    """
    The rates of each kind of work, per peer and in all.

    :ivar bundle_peer: key bundles one peer gives us (a member joining
        many groups of ours at once: four, then one a minute).
    :ivar bundle_total: key bundles of all peers (an owner adding hundreds
        of members: 64, then 8 a second; the rest wait in the members'
        outboxes).
    :ivar sealed_peer: ``group-sealed`` requests of one peer (a member in
        64 groups that share this mailbox asks at start at once, then 2 a
        second).
    :ivar sealed_total: ``group-sealed`` requests of all peers.
    :ivar box_peer: ``notify-register`` and ``notify-collect`` requests of
        one peer (a member collects a few rounds at start, then every few
        minutes: 16, then one every 10 s).
    :ivar box_total: those of all peers.
    """

    bundle_peer: Rate = Rate(4, 1 / 60)
    bundle_total: Rate = Rate(64, 8.0)
    sealed_peer: Rate = Rate(64, 2.0)
    sealed_total: Rate = Rate(256, 32.0)
    box_peer: Rate = Rate(16, 0.1)
    box_total: Rate = Rate(256, 16.0)


class RequestLimiter:
    """
    The buckets of :class:`RequestRates` on one clock.
    """

    def __init__(self, clock: Any, rates: RequestRates) -> None:
        self._kinds = {
            BUNDLE: PeerRates(clock, rates.bundle_peer, rates.bundle_total),
            SEALED: PeerRates(clock, rates.sealed_peer, rates.sealed_total),
            BOX: PeerRates(clock, rates.box_peer, rates.box_total),
        }

    def admit(self, kind: str, peer: object) -> None:
        """
        Take a token for work of ``kind`` that ``peer`` asks.

        :raises PeerBusy: when ``peer``'s bucket, or all peers', is empty.
        """
        empty = self._kinds[kind].admit(peer)
        if empty is not None:
            whose = "yours" if empty == "peer" else "all peers'"
            raise PeerBusy(f"busy: {whose} {kind} requests are over their rate; try again later")
