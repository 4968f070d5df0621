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
from ..directory import AddressBook
from ..errors import DigitalSpringError
from ._base import CommandOptions, call_node, run_async


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
            answer.update(await call_node(client, data_dir, "dht-lookup", body))

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
            f"lookup:    {'found' if answer['found'] else 'not found'} in {answer['hops']} hops, "
            f"{answer['rpcs']} requests, {answer['duration_ms']:.1f} ms\n"
        )
        for hop in answer["path"]:
            out.write(
                f"  hop {hop['hop']}  {hop['peer']}  {hop['outcome']:<10} "
                f"{hop['rtt_ms']:8.1f} ms\n"
            )


class DhtOptions(CommandOptions):
    """
    ``dspring dht``.
    """

    synopsis = "lookup [options]"
    longdesc = "Look into the running node's DHT."
    subCommands = [
        ["lookup", None, DhtLookupOptions, "Look up a peer's record and show the hops."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("dht needs a command: lookup")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        self.subOptions.run(data_dir, out)
