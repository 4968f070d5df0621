"""
Tests for the address book: contacts, their names and their addresses.
"""

import json

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from digitalspring.directory import (
    AddressBook,
    BadContactsFile,
    BadName,
    Contact,
    IPeerDirectory,
    UnknownContact,
    UnknownPeer,
    check_address,
)
from digitalspring.identity import Identity
from digitalspring.transport import InvalidAddress, UnknownTransport, onion_host

ALICE = Identity.from_seed(bytes(32)).peer_id
BOB = Identity.from_seed(bytes(range(32))).peer_id


class CheckAddressTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        """
        A ``tcp`` address is read as the TCP transport reads what it dials:
        a host and a port; a misspelt port, a missing port or a host that is
        not one are refused, naming the address.
        """
        for good in ["tcp:127.0.0.1:7702", "tcp:localhost:7702", "tcp:[::1]:7702"]:
            self.assertEqual(check_address(good), good)
        for bad, reason in [
            ("tcp:localhost:77o2", "'77o2' is not a port number"),
            ("tcp:127.0.0.1", "not of the form HOST:PORT"),
            ("tcp:127.0.0.1:70000", "out of range"),
            ("tcp:bad_host:7702", "not a host name"),
        ]:
            e = self.assertRaises(InvalidAddress, check_address, bad)
            self.assertIn(bad, str(e))
            self.assertIn(reason, str(e))

    def test_tor(self) -> None:
        """
        A ``tor`` address must be a version 3 onion address and a port.
        """
        onion = onion_host(bytes(32))
        self.assertEqual(check_address(f"tor:{onion}:7655"), f"tor:{onion}:7655")
        for bad, reason in [
            ("tor:example.com:7655", "not an onion address"),
            ("tor:expyuzz4wqqyqhjn.onion:80", "version 2"),
            (f"tor:{onion}", "ONION.onion:PORT"),
            (f"tor:{onion[:55]}b.onion:7655", "onion"),
        ]:
            e = self.assertRaises(InvalidAddress, check_address, bad)
            self.assertIn(reason, str(e))

    def test_unknown_transport(self) -> None:
        """
        A misspelt transport name is refused, naming the installed ones.
        """
        e = self.assertRaises(UnknownTransport, check_address, "tpc:127.0.0.1:7702")
        self.assertIn("'tpc'", str(e))
        self.assertIn("tcp", e.installed)


class AddressBookTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = FilePath(self.mktemp())
        self.book = AddressBook(self.path)

    def test_provides_directory(self) -> None:
        """
        The address book is a peer directory.
        """
        self.assertTrue(verifyObject(IPeerDirectory, self.book))

    def test_add_checks_address(self) -> None:
        """
        An address its transport would not dial is refused before anything
        is written.
        """
        self.assertRaises(InvalidAddress, self.book.add, ALICE, "tcp:127.0.0.1")
        self.assertRaises(UnknownTransport, self.book.add, ALICE, "tpc:127.0.0.1:7702")
        self.assertFalse(self.path.exists())

    def test_names(self) -> None:
        """
        A contact can be named when added or later; the name finds its peer
        ID, in any case, and a peer ID finds itself.
        """
        self.book.add(ALICE, "tcp:127.0.0.1:7702", name="alice")
        self.book.set_name(BOB, "Bob")
        self.assertEqual(self.book.find("Alice"), ALICE)
        self.assertEqual(self.book.find("bob"), BOB)
        self.assertEqual(self.book.find(str(BOB)), BOB)
        self.assertEqual(
            AddressBook(self.path).contacts(),
            [Contact(ALICE, "alice", ("tcp:127.0.0.1:7702",)), Contact(BOB, "Bob", ())],
        )

    def test_name_taken(self) -> None:
        """
        Names are one namespace: a name another contact has (in any case)
        is refused; renaming a contact to its own name is not.
        """
        self.book.set_name(ALICE, "alice")
        self.assertRaises(BadName, self.book.set_name, BOB, "ALICE")
        self.assertRaises(BadName, self.book.add, BOB, "tcp:127.0.0.1:1", name="alice")
        self.book.set_name(ALICE, "Alice")
        self.assertEqual(self.book.find("alice"), ALICE)

    def test_bad_names(self) -> None:
        """
        A name cannot look like a peer ID or an address, nor be empty.
        """
        for bad in ["", str(BOB), "alice@tcp", "a:b", "1st", "x" * 33]:
            self.assertRaises(BadName, self.book.set_name, ALICE, bad)

    def test_find_unknown(self) -> None:
        """
        Text that is neither a name nor a peer ID says which it looks like.
        """
        e = self.assertRaises(UnknownContact, self.book.find, "carol")
        self.assertIn("no contact is named 'carol'", str(e))
        e = self.assertRaises(UnknownContact, self.book.find, str(ALICE)[:-1] + "a")
        self.assertIn("neither", str(e))

    def test_remove(self) -> None:
        """
        Removing a contact forgets its name and addresses; removing a peer
        not in the book fails.
        """
        self.book.add(ALICE, "tcp:127.0.0.1:7702", name="alice")
        self.assertEqual(self.book.remove(ALICE).name, "alice")
        self.assertEqual(self.book.contacts(), [])
        self.assertIsInstance(self.failureResultOf(self.book.resolve(ALICE)).value, UnknownPeer)
        self.assertRaises(UnknownContact, self.book.remove, ALICE)

    def test_named_without_address(self) -> None:
        """
        A peer that is only named has no address to resolve.
        """
        self.book.set_name(ALICE, "alice")
        self.assertIsInstance(self.failureResultOf(self.book.resolve(ALICE)).value, UnknownPeer)

    def test_version_1(self) -> None:
        """
        A version 1 file (no names) is read, and rewritten as version 2 on
        the first change, keeping its addresses.
        """
        self.path.setContent(
            json.dumps(
                {"version": 1, "peers": {str(ALICE): {"addresses": ["tcp:127.0.0.1:7702"]}}}
            ).encode()
        )
        self.assertEqual(self.book.contacts(), [Contact(ALICE, None, ("tcp:127.0.0.1:7702",))])
        self.book.set_name(ALICE, "alice")
        document = json.loads(self.path.getContent())
        self.assertEqual(document["version"], 2)
        self.assertEqual(
            document["peers"][str(ALICE)], {"name": "alice", "addresses": ["tcp:127.0.0.1:7702"]}
        )

    def test_newer_version(self) -> None:
        """
        A file of a later version is refused rather than misread.
        """
        self.path.setContent(b'{"version": 3, "peers": {}}')
        e = self.assertRaises(BadContactsFile, self.book.contacts)
        self.assertIn("newer", str(e))

    def test_damaged_names(self) -> None:
        """
        A file where two contacts share a name is damaged.
        """
        self.path.setContent(
            json.dumps(
                {
                    "version": 2,
                    "peers": {
                        str(ALICE): {"name": "x", "addresses": []},
                        str(BOB): {"name": "X", "addresses": []},
                    },
                }
            ).encode()
        )
        self.assertRaises(BadContactsFile, self.book.contacts)
