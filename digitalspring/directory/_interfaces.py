# -*- test-case-name: tests.test_contacts -*-
"""
What a peer directory is: the way from a peer ID to addresses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from ..identity import PeerID


class IPeerDirectory(Interface):
    """
    Finds where a peer can be reached.  The static address book and the
    Kademlia DHT both provide it.
    """

    def resolve(peer_id: PeerID) -> Deferred[list[str]]:
        """
        The addresses of a peer.

        :returns: a Deferred that fires with a non-empty ``list`` of
            ``TRANSPORT:ADDRESS`` strings, best first.
        :raises UnknownPeer: (through the Deferred) when the directory knows
            no address for the peer.
        """
