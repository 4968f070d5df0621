# -*- test-case-name: tests.test_directory -*-
"""
The static address book: peers and their addresses, kept in a file of the
data directory.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.filepath import FilePath
from zope.interface import implementer

from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID, atomic_write
from ..transport import InvalidAddress, split_address
from ._interfaces import IPeerDirectory

CONTACTS_FILE_NAME = "contacts.json"
_MAX_SIZE = 16 * 1024 * 1024


class UnknownPeer(DigitalSpringError):
    """
    No address is known for the peer.
    """


class BadContactsFile(DigitalSpringError):
    """
    The contacts file is damaged; fix or remove it.
    """


def _check_address(address: str) -> str:
    try:
        split_address(address)
    except InvalidAddress as e:
        raise BadContactsFile(str(e)) from None
    return address


@implementer(IPeerDirectory)
class AddressBook:
    """
    Peer addresses from ``DATA_DIR/contacts.json``::

        {"version": 1, "peers": {"PEER_ID": {"addresses": ["tcp:127.0.0.1:7655"]}}}

    The file is read again whenever it changes, so ``dspring contacts add``
    works while the node runs; it is written atomically.
    """

    def __init__(self, path: FilePath[str]) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._peers: dict[PeerID, list[str]] = {}

    @classmethod
    def in_data_dir(cls, data_dir: FilePath[str]) -> AddressBook:
        return cls(data_dir.child(CONTACTS_FILE_NAME))

    def _load(self) -> dict[PeerID, list[str]]:
        try:
            st = os.stat(self.path.path)
        except FileNotFoundError:
            self._stamp, self._peers = None, {}
            return self._peers
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return self._peers
        if st.st_size > _MAX_SIZE:
            raise BadContactsFile(f"{self.path.path} is larger than {_MAX_SIZE} bytes")
        try:
            document = json.loads(self.path.getContent().decode("utf-8"))
            entries: dict[str, Any] = document["peers"]
            peers = {
                PeerID.parse(peer): [_check_address(a) for a in entry["addresses"]]
                for peer, entry in entries.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError, InvalidPeerID) as e:
            raise BadContactsFile(f"{self.path.path} is damaged: {e}") from None
        self._stamp, self._peers = stamp, peers
        return peers

    def peers(self) -> dict[PeerID, list[str]]:
        """
        Every peer in the book with its addresses.

        :raises BadContactsFile: when the file is damaged.
        """
        return dict(self._load())

    def add(self, peer_id: PeerID, address: str) -> None:
        """
        Add an address for a peer (first in its list), and save the book.

        :raises InvalidAddress: when the address has no transport name.
        :raises BadContactsFile: when the file is damaged (it is left alone).
        """
        split_address(address)
        peers = self.peers()
        addresses = [address] + [a for a in peers.get(peer_id, []) if a != address]
        peers[peer_id] = addresses
        document = {
            "version": 1,
            "peers": {
                str(peer): {"addresses": addresses}
                for peer, addresses in sorted(peers.items(), key=lambda item: str(item[0]))
            },
        }
        self.path.parent().makedirs(ignoreExistingDirectory=True)
        atomic_write(
            self.path, json.dumps(document, indent=1).encode("utf-8") + b"\n", replace=True
        )

    def resolve(self, peer_id: PeerID) -> Deferred[list[str]]:
        try:
            addresses = self._load().get(peer_id)
        except BadContactsFile as e:
            return fail(e)
        if not addresses:
            return fail(UnknownPeer(f"no address is known for {peer_id}"))
        return succeed(list(addresses))
