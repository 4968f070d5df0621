"""
Peer directories: from a peer ID to the addresses where it can be reached.
"""

from ._addressbook import CONTACTS_FILE_NAME, AddressBook, BadContactsFile, UnknownPeer
from ._interfaces import IPeerDirectory

__all__ = ["CONTACTS_FILE_NAME", "AddressBook", "BadContactsFile", "IPeerDirectory", "UnknownPeer"]
