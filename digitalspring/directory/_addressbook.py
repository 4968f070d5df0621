# -*- test-case-name: tests.test_contacts -*-
"""
The static address book: the user's contacts, each a peer with the user's
own name for it and the addresses where it can be reached, kept in a file of
the data directory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.filepath import FilePath
from zope.interface import implementer

from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID, atomic_write
from ..transport import InvalidAddress, get_transport_plugin, parse_onion_address, split_address
from ..transport._address import parse_memory_address, parse_tcp_address
from ._interfaces import IPeerDirectory

CONTACTS_FILE_NAME = "contacts.json"

#: The version of the contacts file this code writes; it reads every
#: earlier one (version 1 had no names).
CONTACTS_VERSION = 2

_MAX_SIZE = 16 * 1024 * 1024

#: A petname: a letter, then up to 31 letters, digits, ``.``, ``_`` or
#: ``-``.  At most 32 characters, so that no name can be read as a peer ID
#: (56), and with no ``@`` or ``:``, so that none can be read as an address.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,31}\Z")

#: How each built-in transport reads the addresses it dials: the very
#: functions its ``connect`` calls.
_ADDRESS_CHECKS: dict[str, Callable[[str], object]] = {
    "tcp": parse_tcp_address,
    "tor": parse_onion_address,
    "memory": parse_memory_address,
}


class UnknownPeer(DigitalSpringError):
    """
    No address is known for the peer.
    """


class BadContactsFile(DigitalSpringError):
    """
    The contacts file is damaged; fix or remove it.
    """


class UnknownContact(DigitalSpringError):
    """
    The address book has no such contact (see ``dspring contacts list``).
    """


class BadName(DigitalSpringError):
    """
    A contact's name is malformed, or another contact has it already.
    """


def check_address(address: str) -> str:
    """
    Check ``TRANSPORT:ADDRESS`` as the transport that will dial it reads it:
    ``tcp`` wants ``HOST:PORT``, ``tor`` a version 3 ``ONION.onion:PORT``.
    An address of another installed transport is checked for its form only.

    :returns: ``address``.
    :raises InvalidAddress: saying what is wrong with it.
    :raises UnknownTransport: naming the installed transports, when none
        has its name.
    """
    name, rest = split_address(address)
    check = _ADDRESS_CHECKS.get(name)
    if check is None:
        get_transport_plugin(name)
        return address
    try:
        check(rest)
    except InvalidAddress as e:
        raise InvalidAddress(f"bad {name} address {address!r}: {e}") from None
    return address


def check_name(name: str) -> str:
    """
    :returns: ``name`` when it can be a contact's name.
    :raises BadName: otherwise.
    """
    if not _NAME.match(name):
        raise BadName(
            f"{name!r} cannot be a name: use a letter, then up to 31 letters, digits, "
            "'.', '_' or '-'"
        )
    return name


@frozen
class Contact:
    """
    One entry of the address book.

    :ivar name: the user's own name for the peer (a petname), or ``None``.
    :ivar addresses: ``TRANSPORT:ADDRESS`` strings, best first; may be
        empty for a peer the user only named.
    """

    peer_id: PeerID
    name: str | None
    addresses: tuple[str, ...]


def _read_contact(peer: str, entry: Any) -> Contact:
    name = entry.get("name")
    if name is not None:
        check_name(name)
    addresses = tuple(entry["addresses"])
    for address in addresses:
        split_address(address)
    return Contact(PeerID.parse(peer), name, addresses)


@implementer(IPeerDirectory)
class AddressBook:
    """
    The user's contacts, from ``DATA_DIR/contacts.json``::

        {"version": 2, "peers": {"PEER_ID": {"name": "alice",
                                             "addresses": ["tcp:192.0.2.7:7655"]}}}

    Names are the user's alone: only the ``dspring contacts`` commands write
    them, and nothing a peer sends reaches this file.  They form one local
    namespace, compared without regard to case.

    The file is read again whenever it changes, so ``dspring contacts add``
    works while the node runs; it is written atomically.  Version 1 files
    (no names) are read as they are, and written as version 2 on the first
    change.
    """

    def __init__(self, path: FilePath[str]) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._contacts: dict[PeerID, Contact] = {}

    @classmethod
    def in_data_dir(cls, data_dir: FilePath[str]) -> AddressBook:
        return cls(data_dir.child(CONTACTS_FILE_NAME))

    def _load(self) -> dict[PeerID, Contact]:
        try:
            st = os.stat(self.path.path)
        except FileNotFoundError:
            self._stamp, self._contacts = None, {}
            return self._contacts
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return self._contacts
        if st.st_size > _MAX_SIZE:
            raise BadContactsFile(f"{self.path.path} is larger than {_MAX_SIZE} bytes")
        try:
            document = json.loads(self.path.getContent().decode("utf-8"))
            version = document.get("version", 1)
            if not isinstance(version, int) or version > CONTACTS_VERSION:
                raise BadContactsFile(
                    f"{self.path.path} is of version {version!r}, newer than this "
                    f"Digital Spring reads ({CONTACTS_VERSION})"
                )
            entries: dict[str, Any] = document["peers"]
            contacts = [_read_contact(peer, entry) for peer, entry in entries.items()]
        except (ValueError, KeyError, TypeError, AttributeError, InvalidPeerID) as e:
            raise BadContactsFile(f"{self.path.path} is damaged: {e}") from None
        except (InvalidAddress, BadName) as e:
            raise BadContactsFile(f"{self.path.path} is damaged: {e}") from None
        names = [c.name.lower() for c in contacts if c.name is not None]
        if len(set(names)) != len(names):
            raise BadContactsFile(f"{self.path.path} is damaged: two contacts share a name")
        self._stamp, self._contacts = stamp, {c.peer_id: c for c in contacts}
        return self._contacts

    def _save(self, contacts: dict[PeerID, Contact]) -> None:
        peers: dict[str, Any] = {}
        for contact in sorted(contacts.values(), key=lambda c: str(c.peer_id)):
            entry: dict[str, Any] = {"addresses": list(contact.addresses)}
            if contact.name is not None:
                entry["name"] = contact.name
            peers[str(contact.peer_id)] = entry
        document = {"version": CONTACTS_VERSION, "peers": peers}
        self.path.parent().makedirs(ignoreExistingDirectory=True)
        atomic_write(
            self.path, json.dumps(document, indent=1).encode("utf-8") + b"\n", replace=True
        )

    def contacts(self) -> list[Contact]:
        """
        Every contact, the named ones first, by name, then by peer ID.

        :raises BadContactsFile: when the file is damaged.
        """
        return sorted(
            self._load().values(),
            key=lambda c: (c.name is None, (c.name or "").lower(), str(c.peer_id)),
        )

    def peers(self) -> dict[PeerID, list[str]]:
        """
        Every peer in the book with its addresses.

        :raises BadContactsFile: when the file is damaged.
        """
        return {peer: list(c.addresses) for peer, c in self._load().items()}

    def find(self, text: str) -> PeerID:
        """
        The peer that ``text`` names: a peer ID, or a contact's name.

        :raises UnknownContact: when ``text`` is neither.
        :raises BadContactsFile: when the file is damaged.
        """
        try:
            return PeerID.parse(text)
        except InvalidPeerID as e:
            reason = str(e)
        for contact in self._load().values():
            if contact.name is not None and contact.name.lower() == text.lower():
                return contact.peer_id
        if _NAME.match(text):
            raise UnknownContact(f"no contact is named {text!r} (see 'dspring contacts list')")
        raise UnknownContact(f"{text!r} is neither a contact's name nor a peer ID: {reason}")

    def _check_unused(self, contacts: dict[PeerID, Contact], peer_id: PeerID, name: str) -> None:
        check_name(name)
        for contact in contacts.values():
            if (
                contact.peer_id != peer_id
                and contact.name is not None
                and contact.name.lower() == name.lower()
            ):
                raise BadName(f"the name {contact.name!r} is already {contact.peer_id}'s")

    def add(self, peer_id: PeerID, address: str, name: str | None = None) -> Contact:
        """
        Add an address for a peer (first in its list), and name it if
        ``name`` is given, then save the book.

        :returns: the contact as saved.
        :raises InvalidAddress: when the transport would not read the
            address (see :func:`check_address`).
        :raises UnknownTransport: when no transport has its name.
        :raises BadName: when the name is malformed or taken.
        :raises BadContactsFile: when the file is damaged (it is left alone).
        """
        check_address(address)
        contacts = dict(self._load())
        old = contacts.get(peer_id, Contact(peer_id, None, ()))
        if name is not None:
            self._check_unused(contacts, peer_id, name)
        contact = Contact(
            peer_id,
            old.name if name is None else name,
            (address, *(a for a in old.addresses if a != address)),
        )
        contacts[peer_id] = contact
        self._save(contacts)
        return contact

    def set_name(self, peer_id: PeerID, name: str) -> Contact:
        """
        Name a peer (a peer not in the book yet becomes a contact with no
        address), replacing its old name, and save the book.

        :returns: the contact as saved.
        :raises BadName: when the name is malformed or another contact's.
        :raises BadContactsFile: when the file is damaged.
        """
        contacts = dict(self._load())
        self._check_unused(contacts, peer_id, name)
        old = contacts.get(peer_id, Contact(peer_id, None, ()))
        contacts[peer_id] = contact = Contact(peer_id, name, old.addresses)
        self._save(contacts)
        return contact

    def remove(self, peer_id: PeerID) -> Contact:
        """
        Forget a peer, with its name and addresses, and save the book.

        :returns: the contact removed.
        :raises UnknownContact: when the peer is not in the book.
        :raises BadContactsFile: when the file is damaged.
        """
        contacts = dict(self._load())
        try:
            contact = contacts.pop(peer_id)
        except KeyError:
            raise UnknownContact(f"{peer_id} is not in the contacts") from None
        self._save(contacts)
        return contact

    def resolve(self, peer_id: PeerID) -> Deferred[list[str]]:
        try:
            contact = self._load().get(peer_id)
        except BadContactsFile as e:
            return fail(e)
        if contact is None or not contact.addresses:
            return fail(UnknownPeer(f"no address is known for {peer_id}"))
        return succeed(list(contact.addresses))
