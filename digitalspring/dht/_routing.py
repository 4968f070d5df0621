# -*- test-case-name: tests.test_dht_routing -*-
"""
The routing table: Kademlia's k-buckets, hardened against eclipse attempts.

A contact enters the table only when we talked to it ourselves (it answered
our request, or it sent us one through a channel that proved its key); a
contact some other node told us about is a candidate of a lookup until then.
The table prefers long-lived contacts: a full bucket keeps its contacts, and
a newcomer waits in the bucket's bounded replacement cache; only when the
least-recently-seen contact has not been heard from for ``stale_after``
seconds is it pinged, and only if it fails to answer is it replaced.  No
bucket (and no replacement cache) holds more than ``subnet_limit`` contacts
in one network (an IPv4 /24, an IPv6 /48, or one host of the memory
transport), so one network cannot fill a table with fresh identities.  The
networks counted are those of addresses the DHT proved (see
:mod:`digitalspring.dht._origin`), never what a peer claims.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..identity import PeerID
from ..transport import InvalidAddress, split_address
from ._ids import bucket_index, node_id


def _texts(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(items)


@frozen
class Contact:
    """
    A peer as the DHT knows it: its ID and the addresses it can be dialled
    at.  Its node ID is derived from the peer ID, never taken from a claim.
    """

    peer_id: PeerID
    addresses: tuple[str, ...] = field(converter=_texts, eq=False)
    node_id: int = field(init=False, repr=False, eq=False)

    @node_id.default
    def _derive_node_id(self) -> int:
        return node_id(self.peer_id)


_NONE: frozenset[str] = frozenset()


def network_of(name: str, host: str) -> str | None:
    """
    The network that the subnet limit counts a host in: ``"a.b.c"`` for
    the IPv4 /24 of a ``tcp`` address, ``"2001:db8:1::/48"`` for the /48
    of an IPv6 one, ``"memory:HOST"`` for a host
    of the memory transport (one simulated host, one network), and
    ``None`` for names nobody can count (DNS names, onion services).
    """
    if name == "tcp":
        if host.startswith("["):
            host = host[1:-1]
        if isIPAddress(host):
            return host.rsplit(".", 1)[0]
        if isIPv6Address(host) and "%" not in host:
            return str(ipaddress.IPv6Network((host, 48), strict=False))
        return None
    if name == "memory":
        return f"memory:{host}"
    return None


def subnets(contact: Contact) -> frozenset[str]:
    """
    The networks (see :func:`network_of`) of a contact's addresses.  DNS
    names and onion services have none.
    """
    found: set[str] = set()
    for address in contact.addresses:
        try:
            name, rest = split_address(address)
        except InvalidAddress:
            continue
        net = network_of(name, rest.rpartition(":")[0])
        if net is not None:
            found.add(net)
    return frozenset(found) if found else _NONE


@define
class _Entry:
    contact: Contact
    index: int
    last_seen: float
    failures: int = 0
    nets: frozenset[str] = _NONE


@define
class Bucket:
    """
    One k-bucket: contacts least recently seen first, and newcomers waiting
    for a place.
    """

    entries: list[_Entry] = field(factory=list)
    replacements: list[_Entry] = field(factory=list)
    touched: float = 0.0
    pinging: bool = False

    def contacts(self) -> list[Contact]:
        return [entry.contact for entry in self.entries]


def _crowded(entries: Iterable[_Entry], nets: frozenset[str], limit: int | None) -> bool:
    # Plain loops that stop at the limit: every request a node answers from
    # a newcomer asks this of a bucket or two.
    if limit is None or not nets:
        return False
    for net in nets:
        count = 0
        for entry in entries:
            if net in entry.nets:
                count += 1
                if count >= limit:
                    return True
    return False


def _by_distance(entries: list[_Entry], target: int, count: int) -> list[Contact]:
    """
    The ``count`` contacts of ``entries`` closest to ``target``, closest first.

    They are sorted as (distance, contact) pairs rather than with a key
    function, which would be a Python call per contact: every request a
    node answers sorts a bucket or two.  No two contacts are at the same
    distance, so the contacts themselves are never compared.
    """
    pairs = [(e.contact.node_id ^ target, e.contact) for e in entries]
    pairs.sort()
    return [contact for _, contact in pairs[:count]]


class RoutingTable:
    """
    The k-buckets of one node, on an injected clock.

    :param own: the node's own peer ID.
    :param clock: an ``IReactorTime``.
    :param ping: how to ask a contact whether it is alive: returns a
        Deferred that fires when it answers and fails when it does not.
    :param k: contacts per bucket.
    :param replacements: newcomers remembered per full bucket.
    :param subnet_limit: the most contacts per IPv4 /24 in a bucket (and in
        its replacement cache); ``None`` for no limit.
    :param stale_after: seconds of silence after which the
        least-recently-seen contact of a full bucket is pinged when a
        newcomer wants its place.
    :param max_failures: failed requests in a row after which a contact
        makes way for a replacement (five times as many evict it anyway).
    :ivar added: callables run with each contact that enters the table.
    """

    log = Logger()

    def __init__(
        self,
        own: PeerID,
        clock: Any,
        ping: Callable[[Contact], Deferred[Any]],
        k: int = 20,
        replacements: int = 10,
        subnet_limit: int | None = 2,
        stale_after: float = 900.0,
        max_failures: int = 2,
    ) -> None:
        self.own = own
        self.own_id = node_id(own)
        self.clock = clock
        self.ping = ping
        self.k = k
        self.replacement_size = replacements
        self.subnet_limit = subnet_limit
        self.stale_after = stale_after
        self.max_failures = max_failures
        self.buckets: dict[int, Bucket] = {}
        self.added: list[Callable[[Contact], object]] = []
        self._index: dict[PeerID, _Entry] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._index

    def get(self, peer_id: PeerID) -> Contact | None:
        """
        The contact with this peer ID, if it is in the table.
        """
        found = self._index.get(peer_id)
        return None if found is None else found.contact

    def contacts(self) -> list[Contact]:
        """
        Every contact, bucket by bucket, nearest bucket first.
        """
        return [
            entry.contact
            for index in sorted(self.buckets)
            for entry in self.buckets[index].entries
        ]

    def contacts_seen(self) -> list[tuple[Contact, float]]:
        """
        Every contact with the time we last heard from it.
        """
        return [(entry.contact, entry.last_seen) for entry in self._index.values()]

    def closest(self, target: int, count: int | None = None) -> list[Contact]:
        """
        The ``count`` (default ``k``) contacts closest to ``target``,
        closest first.

        Buckets are visited in order of distance, and only as many as it
        takes, so the work is about the contacts returned, not the whole
        table.  With ``x`` our ID XOR ``target`` and ``top`` its highest
        bit, the contacts of bucket ``top`` are the closest (below
        ``2**top`` away).  Those of a bucket ``i < top`` agree with us on
        every bit above ``i`` and differ at ``i``, so they are all nearer
        the target than those of the buckets below ``i`` when bit ``i`` of
        ``x`` is set, and all farther when it is not: the buckets below
        ``top`` whose bit is set come next, highest first, then those whose
        bit is clear, lowest first, then bucket ``top + 1``, ``top + 2``,
        and so on.
        """
        want = self.k if count is None else count
        x = self.own_id ^ target
        top = x.bit_length() - 1
        buckets = self.buckets
        below = sorted((i for i in buckets if i < top), reverse=True)
        order = [top]
        order += [i for i in below if x >> i & 1]
        order += [i for i in reversed(below) if not x >> i & 1]
        order += sorted(i for i in buckets if i > top)
        chosen: list[Contact] = []
        for index in order:
            bucket = buckets.get(index)
            if bucket is not None:
                chosen += _by_distance(bucket.entries, target, want - len(chosen))
                if len(chosen) >= want:
                    break
        return chosen

    def bucket_for(self, target: int) -> Bucket:
        """
        The bucket whose range holds ``target`` (made if missing).
        """
        index = bucket_index(self.own_id, target)
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket(touched=self.clock.seconds())
        return bucket

    def touch(self, target: int) -> None:
        """
        Note that a lookup for ``target`` ran now: its bucket needs no
        refresh for a while.  (So does a bucket one of whose contacts we
        just heard from, or that just took a contact: BitTorrent's DHT
        rule, BEP 5.  A bucket that traffic keeps fresh costs no lookups.)
        """
        if target != self.own_id:
            self.bucket_for(target).touched = self.clock.seconds()

    def stale_buckets(self, interval: float) -> list[int]:
        """
        The indices of buckets that neither a lookup nor a contact heard
        from has touched for ``interval`` seconds.
        """
        since = self.clock.seconds() - interval
        return sorted(i for i, bucket in self.buckets.items() if bucket.touched <= since)

    def closer_than_self(self, target: int, limit: int, exclude: PeerID | None = None) -> int:
        """
        How many contacts (counting up to ``limit``) are closer to
        ``target`` than this node is, counted by whole buckets: all those of
        the bucket that holds ``target``, and all those of each nearer
        bucket whose bit our ID and ``target`` differ at (see
        :meth:`closest`; the others are all farther).

        :param exclude: a peer not to count.
        """
        mine = self.own_id ^ target
        if not mine:
            return 0
        top = mine.bit_length() - 1

        def nearer(index: int) -> bool:
            return index == top or (index < top and bool(mine >> index & 1))

        count = sum(len(b.entries) for i, b in self.buckets.items() if nearer(i))
        if exclude is not None:
            left_out = self._index.get(exclude)
            if left_out is not None and nearer(left_out.index):
                count -= 1
        return min(count, limit)

    def rank_of(self, contact: Contact, target: int, limit: int) -> int:
        """
        How many other contacts (counting up to ``limit``) are closer to
        ``target`` than ``contact``.

        A bucket's contacts lie in one band of distance from ``target``
        (see :meth:`closest`), so a bucket whose band is wholly nearer
        counts whole, one wholly farther is skipped, and only the contacts
        of the bucket whose band holds ``contact``'s distance, or of the
        buckets below ``target``'s, are compared one by one.
        """
        theirs = contact.node_id ^ target
        top = (self.own_id ^ target).bit_length() - 1
        count = 0
        for index, bucket in self.buckets.items():
            if index == top:
                low, high = 0, 1 << top
            elif index < top:
                low, high = 1 << top, 1 << (top + 1)
            else:
                low, high = 1 << index, 1 << (index + 1)
            if low >= theirs:
                continue
            if high <= theirs:
                count += len(bucket.entries)
            else:
                for entry in bucket.entries:
                    if entry.contact.node_id ^ target < theirs:
                        count += 1
            if count >= limit:
                return limit
        return count

    def wants(self, contact: Contact, nets: frozenset[str] = _NONE) -> bool:
        """
        Whether ``contact`` (not in the table) would find a place in its
        bucket or the bucket's replacement cache, were its addresses proved:
        what makes it worth proving them.
        """
        if contact.node_id == self.own_id or contact.peer_id in self._index:
            return False
        nets = nets | subnets(contact)
        bucket = self.buckets.get(bucket_index(self.own_id, contact.node_id))
        if bucket is None:
            return True
        if _crowded(bucket.entries, nets, self.subnet_limit):
            return False
        if len(bucket.entries) < self.k:
            return True
        waiting = [e for e in bucket.replacements if e.contact.peer_id != contact.peer_id]
        return len(waiting) < self.replacement_size and not _crowded(
            waiting, nets, self.subnet_limit
        )

    def observe(self, contact: Contact, nets: frozenset[str] = _NONE) -> bool:
        """
        We just talked to ``contact``: it answered us, or asked us something.
        Its addresses must be proved ones (they are what the table serves
        to others).

        :param nets: networks to count it in besides those of its addresses
            (the network it connected from).
        :returns: whether it is in the table now.
        """
        if contact.node_id == self.own_id:
            return False
        now = self.clock.seconds()
        entry = self._index.get(contact.peer_id)
        if entry is not None:
            entry.last_seen = now
            entry.failures = 0
            if contact.addresses and contact.addresses != entry.contact.addresses:
                entry.contact = contact
                entry.nets = subnets(contact) | nets
            bucket = self.buckets[entry.index]
            bucket.touched = now
            entries = bucket.entries
            if entries[-1] is not entry:
                entries.remove(entry)
                entries.append(entry)
            return True
        if not contact.addresses:
            # Nobody could dial it: it cannot help anyone find anything.
            return False
        index = bucket_index(self.own_id, contact.node_id)
        bucket = self.bucket_for(contact.node_id)
        entry = _Entry(contact, index, now, nets=subnets(contact) | nets)
        if _crowded(bucket.entries, entry.nets, self.subnet_limit):
            self.log.debug(
                "not adding {peer}: bucket {index} has {limit} contacts from its network",
                peer=str(contact.peer_id),
                index=index,
                limit=self.subnet_limit,
            )
            return False
        if len(bucket.entries) < self.k:
            bucket.entries.append(entry)
            bucket.touched = now
            self._index[contact.peer_id] = entry
            for callback in self.added:
                callback(contact)
            return True
        self._remember(bucket, entry)
        oldest = bucket.entries[0]
        if not bucket.pinging and now - oldest.last_seen >= self.stale_after:
            bucket.pinging = True
            self.clock.callLater(0, self._ping_oldest, bucket, oldest)
        return False

    def _remember(self, bucket: Bucket, entry: _Entry) -> None:
        waiting = [e for e in bucket.replacements if e.contact.peer_id != entry.contact.peer_id]
        if _crowded(waiting, entry.nets, self.subnet_limit):
            return
        waiting.append(entry)
        bucket.replacements = waiting[-self.replacement_size :]

    def _ping_oldest(self, bucket: Bucket, oldest: _Entry) -> None:
        def answered(result: object) -> None:
            bucket.pinging = False
            if oldest.contact.peer_id in self._index:
                self.observe(oldest.contact)

        def silent(failure: Failure) -> None:
            bucket.pinging = False
            self.log.debug(
                "evicting {peer}, which did not answer a ping",
                peer=str(oldest.contact.peer_id),
            )
            self._evict(oldest.contact.peer_id)

        self.ping(oldest.contact).addCallbacks(answered, silent)

    def failed(self, peer_id: PeerID) -> None:
        """
        A request to ``peer_id`` got no answer.  After ``max_failures`` in a
        row it gives its place to a replacement if there is one.
        """
        entry = self._index.get(peer_id)
        if entry is None:
            return
        entry.failures += 1
        if entry.failures >= self.max_failures and (
            self.buckets[entry.index].replacements or entry.failures >= 5 * self.max_failures
        ):
            self._evict(peer_id)

    def _evict(self, peer_id: PeerID) -> None:
        entry = self._index.pop(peer_id, None)
        if entry is None:
            return
        bucket = self.buckets[entry.index]
        bucket.entries.remove(entry)
        while bucket.replacements:
            newcomer = bucket.replacements.pop()
            if newcomer.contact.peer_id in self._index or _crowded(
                bucket.entries, newcomer.nets, self.subnet_limit
            ):
                continue
            newcomer.failures = 0
            bucket.entries.append(newcomer)
            self._index[newcomer.contact.peer_id] = newcomer
            for callback in self.added:
                callback(newcomer.contact)
            break

    def insert_unchecked(self, contact: Contact, last_seen: float) -> None:
        """
        Put a contact in the table without talking to it, if its bucket has
        room: for simulations that build a network's tables directly.
        """
        if contact.peer_id in self._index or contact.node_id == self.own_id:
            return
        index = bucket_index(self.own_id, contact.node_id)
        bucket = self.bucket_for(contact.node_id)
        if len(bucket.entries) < self.k:
            entry = _Entry(contact, index, last_seen, nets=subnets(contact))
            bucket.entries.append(entry)
            self._index[contact.peer_id] = entry
