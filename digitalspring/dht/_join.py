# -*- test-case-name: tests.test_dht_join -*-
"""
Joining the DHT through a peer the user names while the node runs
(``dspring dht join PEER_ID@ADDRESS``, like ``ipfs swarm connect``), and
errors that say which side is wrong: another peer at that address, nothing
there that completes a handshake, or a peer that runs no DHT.

The peer is dialled with the Noise IK handshake, expecting the peer ID
named.  IK encrypts the first message to that peer's key, so another peer
at the address cannot read it and hangs up without saying who it is; only
then is the address dialled again with XX, whose second message proves the
identity of whoever answers, so that the error can name it.  XX still
expects the peer named: the dial fails before this node says who it is.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress

from ..channel import HandshakeFailed, PeerMismatch
from ..errors import DigitalSpringError
from ..identity import PeerID


class JoinFailed(DigitalSpringError):
    """
    The node could not join the DHT through that peer.
    """


class WrongPeer(JoinFailed):
    """
    Another peer than the one named answers at that address: check the
    peer ID, or ask the peer where it listens now.
    """


class JoinPeerUnreachable(JoinFailed):
    """
    Nothing at that address completed a handshake with the peer named:
    check the address, and that the peer is running.
    """


class NotADHTNode(JoinFailed):
    """
    The peer answered at that address, but not to DHT requests: it runs
    without a DHT.
    """


@frozen
class Joined:
    """
    What joining through a peer gave.

    :ivar peer_id: the peer joined through.
    :ivar address: where this node reached it (what its routing table holds).
    :ivar contacts: the contacts the routing table holds after the join.
    :ivar published_to: how many nodes stored this node's record after it.
    """

    peer_id: PeerID
    address: str
    contacts: int
    published_to: int


#: Dials an address expecting a peer with a handshake pattern (``None``:
#: IK), firing with the other end's address once the peer is proved.
Dial = Callable[[PeerID, str, "str | None"], Deferred[IAddress]]


async def dial_expecting(dial: Dial, peer_id: PeerID, address: str) -> IAddress:
    """
    Dial ``address`` expecting ``peer_id``; the connection joins the pool.

    :returns: the other end's address, the handshake having proved the peer.
    :raises WrongPeer: naming the peer that answered instead.
    :raises JoinPeerUnreachable: with the reason, when nothing there
        completed a handshake.
    """
    try:
        return await dial(peer_id, address, None)
    except HandshakeFailed:
        # Another key at that address could not read our IK message; find
        # out whose it is.
        pass
    except Exception as e:
        raise JoinPeerUnreachable(f"cannot reach {peer_id} at {address}: {_reason(e)}") from None
    try:
        return await dial(peer_id, address, "XX")
    except PeerMismatch as e:
        raise WrongPeer(f"the peer at {address} is {e.actual}, not {peer_id}") from None
    except Exception as e:
        raise JoinPeerUnreachable(
            f"cannot reach {peer_id} at {address}: the handshake failed ({_reason(e)})"
        ) from None


def _reason(error: Exception) -> str:
    if isinstance(error, defer.TimeoutError):
        return "no answer in time"
    return str(error) or error.__class__.__name__
