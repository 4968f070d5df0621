"""
Peer directories: from a peer ID to the addresses where it can be reached.
"""

from ._addressbook import (
    CONTACTS_FILE_NAME,
    CONTACTS_VERSION,
    AddressBook,
    BadContactsFile,
    BadName,
    Contact,
    UnknownContact,
    UnknownPeer,
    check_address,
    check_name,
)
from ._interfaces import IPeerDirectory

__all__ = [
    "CONTACTS_FILE_NAME",
    "CONTACTS_VERSION",
    "AddressBook",
    "BadContactsFile",
    "BadName",
    "Contact",
    "IPeerDirectory",
    "UnknownContact",
    "UnknownPeer",
    "check_address",
    "check_name",
]
