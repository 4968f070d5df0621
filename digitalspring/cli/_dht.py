# -*- test-case-name: tests.test_cli -*-
"""
``dspring dht``: looking into the running node's DHT.
"""

from __future__ import annotations

import json
import time
from typing import Any, TextIO

from twisted.python import usage
from twisted.python.filepath import FilePath

from ..control import ControlClient
from ..directory import AddressBook, check_address
from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID
from ..transport import TransportError
from ._base import CommandOptions, plural, run_async


class LookupFailed(DigitalSpringError):
    """
    The DHT has no record of the peer.
    """


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class DhtLookupOptions(CommandOptions):
    """
    ``dspring dht lookup PEER``.
    """

    synopsis = "[--json] PEER_ID|NAME"
    longdesc = (
        "Look up a peer's signed record in the DHT through the running node, and print "
        "the record and the hops the lookup took."
    )
    optFlags = [["json", None, "Print the answer as JSON."]]

    def parseArgs(self, peer: str) -> None:  # type: ignore[override]
        self["peer"] = peer

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        book = AddressBook.in_data_dir(data_dir)
        self["peer"] = book.find(self["peer"])
        answer: dict[str, Any] = {}

        async def ask(reactor: Any) -> None:
            client = ControlClient(reactor, data_dir)
            body = {"peer": str(self["peer"])}
            answer.update(await client.call("dht-lookup", body))

        run_async(ask)
        if self["json"]:
            out.write(json.dumps(answer, indent=1) + "\n")
        else:
            self._print(answer, out)
        if not answer["found"]:
            reason = f"the DHT has no record of {self['peer']}"
            if self["peer"] in book.peers():
                reason += "; it is in your contacts, which the node does not share with the DHT"
            raise LookupFailed(reason)

    def _print(self, answer: dict[str, Any], out: TextIO) -> None:
        record = answer["record"]
        if record is not None:
            out.write(f"peer ID:   {record['peer_id']}\n")
            out.write(f"sequence:  {record['sequence']}\n")
            out.write(f"issued:    {_when(record['issued'])}\n")
            out.write(f"expires:   {_when(record['expires'])}\n")
            out.write(f"addresses: {' '.join(record['addresses']) or '(none)'}\n")
        out.write(
            f"lookup:    {'found' if answer['found'] else 'not found'} in "
            f"{plural(answer['hops'], 'hop')}, {plural(answer['rpcs'], 'request')}, "
            f"{answer['duration_ms']:.1f} ms\n"
        )
        for hop in answer["path"]:
            row = f"  hop {hop['hop']}  {hop['peer']}  {hop['outcome']:<10}"
            if hop["outcome"] == "unanswered":
                # No answer, so no round trip: how long it was waited for is
                # not one.
                out.write(f"{row.rstrip()}\n")
            else:
                out.write(f"{row} {hop['rtt_ms']:8.1f} ms\n")


class DhtJoinOptions(CommandOptions):
    """
    ``dspring dht join PEER_ID@TRANSPORT:ADDRESS``.
    """

    synopsis = "[--json] PEER_ID@TRANSPORT:ADDRESS"
    longdesc = (
        "Join the DHT through a peer while the node runs, as --bootstrap does at start: "
        "the node dials the address expecting that peer ID, adds the peer to its routing "
        "table, looks up its own ID and refreshes its buckets, then publishes its record. "
        "'PEER_ID TRANSPORT:ADDRESS' works too."
    )
    optFlags = [["json", None, "Print the answer as JSON."]]

    def parseArgs(self, peer: str, address: str | None = None) -> None:  # type: ignore[override]
        if address is None:
            peer, sep, address = peer.partition("@")
            if not sep:
                raise usage.UsageError(f"{peer!r} is not of the form PEER_ID@TRANSPORT:ADDRESS")
        try:
            self["peer"] = PeerID.parse(peer)
            self["address"] = check_address(address)
        except (InvalidPeerID, TransportError) as e:
            raise usage.UsageError(str(e)) from None

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer: dict[str, Any] = {}

        async def ask(reactor: Any) -> None:
            client = ControlClient(reactor, data_dir)
            body = {"peer": str(self["peer"]), "address": self["address"]}
            answer.update(await client.call("dht-join", body))

        run_async(ask)
        if self["json"]:
            out.write(json.dumps(answer, indent=1) + "\n")
            return
        out.write(
            f"joined the DHT through {answer['peer']} at {answer['address']}: "
            f"{plural(answer['contacts'], 'contact')} in the routing table, "
            f"record stored at {plural(answer['published_to'], 'node')}\n"
        )


class DhtOptions(CommandOptions):
    """
    ``dspring dht``.
    """

    synopsis = "lookup|join [options]"
    longdesc = "Look into the running node's DHT, or join it through a peer."
    subCommands = [
        ["lookup", None, DhtLookupOptions, "Look up a peer's record and show the hops."],
        ["join", None, DhtJoinOptions, "Join the DHT through a peer, without a restart."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("dht needs a command: lookup or join")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        self.subOptions.run(data_dir, out)
