# -*- test-case-name: tests.test_dht -*-
"""
What the DHT offers the layers above it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IAddress
    from twisted.protocols import amp

    from ..identity import Identity, PeerID
    from ._join import Joined
    from ._lookup import LookupResult


class IDistributedHashTable(Interface):
    """
    A Kademlia DHT over secure channels: signed peer records and small
    values with proof of work.
    """

    def find_peer(peer_id: PeerID) -> Deferred[LookupResult]:
        """
        Look up a peer's signed record in the network.

        :returns: a Deferred that fires with a
            :class:`~digitalspring.dht.LookupResult` whose ``found`` is the
            verified :class:`~digitalspring.dht.PeerRecord`, or ``None`` when
            no node had it before the lookup ended.  It never fails.
        """

    def find_nodes(key: bytes) -> Deferred[LookupResult]:
        """
        Look up the nodes closest to a 32-byte key.

        :returns: a Deferred that fires with a
            :class:`~digitalspring.dht.LookupResult` whose ``closest`` lists
            them.  It never fails.
        """

    def join(peer_id: PeerID, address: str) -> Deferred[Joined]:
        """
        Join the network through a peer while running (``dspring dht
        join``): dial ``address`` expecting ``peer_id``, greet it with a DHT
        ping (it enters the routing table as any node that answers, at the
        address the handshake proved), look up this node's own ID and a
        random ID in each bucket farther than its closest contact, then
        publish this node's record.  The peer is also tried again, like a
        bootstrap peer, whenever the routing table is empty.

        :returns: a Deferred that fires with the
            :class:`~digitalspring.dht.Joined` counts.
        :raises WrongPeer: (through the Deferred) when another peer answers
            at ``address``, naming it.
        :raises JoinPeerUnreachable: (through the Deferred) when nothing
            there completes a handshake.
        :raises NotADHTNode: (through the Deferred) when the peer does not
            answer DHT requests.
        :raises JoinFailed: (through the Deferred) for this node itself or
            an address no transport of this node dials.
        """

    def publish() -> Deferred[int]:
        """
        Sign a new record of this node's addresses and store it at the
        ``k`` nodes closest to its ID.

        :returns: a Deferred that fires with how many nodes stored it (0
            for a node alone, or one with no address to publish).
        """

    def put(key: bytes, value: bytes, ttl: float) -> Deferred[int]:
        """
        Leave a small value under a 32-byte key, with a proof of work.

        :param ttl: seconds to keep it, at most 24 hours.
        :returns: a Deferred that fires with how many nodes stored it.
        :raises ValueRejected: (through the Deferred) when the value is too
            large or the TTL too long.
        """

    def get(key: bytes) -> Deferred[list[bytes]]:
        """
        The small values under a 32-byte key.

        :returns: a Deferred that fires with the values found (possibly
            none).  It never fails.
        """

    def get_anonymously(key: bytes) -> Deferred[list[bytes]]:
        """
        The small values under a 32-byte key, asked of the nodes closest
        to it with an identity made for this lookup alone (Noise XX, no
        address claimed), so that no node learns who reads the key; every
        value of the ``k`` closest, not only the first node's.

        :raises NoAnswer: (through the Deferred) when no node answered.
        """

    def status() -> dict[str, object]:
        """
        Routing-table size, known peers and stored items, as JSON values.
        """


class RequestConnection(Protocol):
    """
    One connection with a peer, as the DHT sees it: a
    :class:`~digitalspring.channel.PeerConnection` in a node.
    """

    @property
    def peer_id(self) -> PeerID:
        """
        The peer, as the handshake proved it.
        """

    @property
    def initiator(self) -> bool:
        """
        Whether this side dialled.
        """

    @property
    def transport(self) -> Any:
        """
        The transport under it, whose ``getPeer()`` is where the other end
        sits (``None`` once closed).
        """


class RequestPool(Protocol):
    """
    What the DHT needs of a connection pool: a
    :class:`~digitalspring.channel.ConnectionPool` in a node, or a lighter
    stand-in in large simulations (:mod:`digitalspring.dht._requestnet`).
    """

    identity: Identity
    clock: Any
    #: Transports by name; the DHT reads their ``published_addresses()``.
    transports: Mapping[str, Any]
    #: Callables that give each connection a layer's command locator.
    locators: list[Callable[[Any], Any]]

    def connections(self) -> Mapping[PeerID, RequestConnection]:
        """
        The live connection of every connected peer.
        """

    def request(
        self,
        peer_id: PeerID,
        command: type[amp.Command],
        addresses: Sequence[str] | None = None,
        **arguments: Any,
    ) -> Deferred[tuple[Any, Any]] | Coroutine[Any, Any, tuple[RequestConnection, Any]]:
        """
        Send ``command`` to ``peer_id`` and wait for its answer, connecting
        first if need be: the connection the answer came on (a
        :class:`RequestConnection`), and the answer; as a Deferred, or a
        coroutine the DHT wraps in one.
        """

    def dial(
        self, peer_id: PeerID, address: str, pattern: str | None = None
    ) -> Deferred[IAddress]:
        """
        Dial ``address`` expecting ``peer_id``: fires with the other end's
        address once the handshake proved the peer.
        """
