# -*- test-case-name: tests.test_dht -*-
"""
Peer directories on top of the DHT: resolving a peer ID through it, and
trying several directories in turn (the address book first, then the DHT).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from ..directory import IPeerDirectory, UnknownPeer
from ..errors import DigitalSpringError
from ..identity import PeerID
from ._dht import DHT
from ._record import PeerRecord


@implementer(IPeerDirectory)
class DHTDirectory:
    """
    Addresses from signed peer records found in the DHT, each cached until
    its record expires.

    The order: a cached record; a record this node holds as a replica; a
    contact of the routing table (which we talked to, at those addresses);
    a lookup in the network.

    :param cache_size: the most records cached.
    """

    log = Logger()

    def __init__(self, dht: DHT, cache_size: int = 1024) -> None:
        self.dht = dht
        self.cache_size = cache_size
        self._cache: dict[PeerID, PeerRecord] = {}

    def resolve(self, peer_id: PeerID) -> Deferred[list[str]]:
        return Deferred.fromCoroutine(self._resolve(peer_id))

    def _remember(self, record: PeerRecord) -> list[str]:
        self._cache.pop(record.peer_id, None)
        self._cache[record.peer_id] = record
        while len(self._cache) > self.cache_size:
            del self._cache[next(iter(self._cache))]
        return list(record.addresses)

    async def _resolve(self, peer_id: PeerID) -> list[str]:
        now = self.dht.clock.seconds()
        cached = self._cache.get(peer_id)
        if cached is not None:
            if cached.expires > now and cached.addresses:
                return list(cached.addresses)
            del self._cache[peer_id]
        held = self.dht.store.record_of(peer_id)
        if held is not None and held.record.addresses:
            return self._remember(held.record)
        contact = self.dht.table.get(peer_id)
        if contact is not None and contact.addresses:
            return list(contact.addresses)
        result = await self.dht.find_peer(peer_id)
        if result.found is not None and result.found.record.addresses:
            self.log.debug(
                "found the record of {peer} in {hops} hops",
                peer=str(peer_id),
                hops=result.hops,
            )
            return self._remember(result.found.record)
        raise UnknownPeer(
            f"no address is known for {peer_id}: the DHT has no record of it "
            f"({result.rpcs} nodes asked)"
        )


@implementer(IPeerDirectory)
class DirectoryChain:
    """
    Several directories asked in turn: the first that knows the peer
    answers.  A node uses its address book first, then the DHT.
    """

    log = Logger()

    def __init__(self, directories: Sequence[IPeerDirectory]) -> None:
        self.directories = list(directories)

    def resolve(self, peer_id: PeerID) -> Deferred[list[str]]:
        return Deferred.fromCoroutine(self._resolve(peer_id))

    async def _resolve(self, peer_id: PeerID) -> list[str]:
        errors: list[DigitalSpringError] = []
        for directory in self.directories:
            try:
                return await directory.resolve(peer_id)
            except UnknownPeer as e:
                errors.append(e)
            except DigitalSpringError as e:
                self.log.warn(
                    "{directory} could not resolve {peer}: {reason}",
                    directory=directory.__class__.__name__,
                    peer=str(peer_id),
                    reason=str(e),
                )
                errors.append(e)
        if not errors:
            raise UnknownPeer(f"no address is known for {peer_id}")
        unexpected = [e for e in errors if not isinstance(e, UnknownPeer)]
        if unexpected:
            raise unexpected[0]
        raise errors[-1]
