# -*- test-case-name: tests.test_cli -*-
"""
``dspring contacts``, ``ping`` and ``status``: commands about other peers,
the last two through the running node's control API.
"""

from __future__ import annotations

import json
import math
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react
from twisted.python import usage
from twisted.python.filepath import FilePath

from ..control import ControlClient
from ..directory import AddressBook
from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID
from ..transport import InvalidAddress, split_address
from ._base import CommandOptions


def _peer_id(text: str) -> PeerID:
    try:
        return PeerID.parse(text)
    except InvalidPeerID as e:
        raise usage.UsageError(str(e)) from None


class ContactsAddOptions(CommandOptions):
    """
    ``dspring contacts add PEER_ID ADDRESS``.
    """

    synopsis = "PEER_ID TRANSPORT:ADDRESS"
    longdesc = "Remember where a peer can be reached, e.g. tcp:127.0.0.1:7655."

    def parseArgs(self, peer: str, address: str) -> None:  # type: ignore[override]
        self["peer"] = _peer_id(peer)
        try:
            split_address(address)
        except InvalidAddress as e:
            raise usage.UsageError(str(e)) from None
        self["address"] = address

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        AddressBook.in_data_dir(data_dir).add(self["peer"], self["address"])
        out.write(f"{self['peer']} {self['address']}\n")


class ContactsListOptions(CommandOptions):
    """
    ``dspring contacts list``.
    """

    synopsis = ""
    longdesc = "List the peers in the address book with their addresses."

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        for peer, addresses in sorted(
            AddressBook.in_data_dir(data_dir).peers().items(), key=lambda item: str(item[0])
        ):
            out.write(f"{peer} {' '.join(addresses)}\n")


class ContactsOptions(CommandOptions):
    """
    ``dspring contacts``: the address book.
    """

    synopsis = "add|list"
    subCommands = [
        ["add", None, ContactsAddOptions, "Add a peer's address."],
        ["list", None, ContactsListOptions, "List known peers."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("contacts needs a command: add or list")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        self.subOptions.run(data_dir, out)


def _run_async(work: Any) -> None:
    """
    Run a coroutine function of the reactor to completion, turning errors
    into exceptions the caller handles.
    """
    outcome: list[Any] = []

    def main(reactor: Any) -> Deferred[None]:
        d = Deferred.fromCoroutine(work(reactor))
        d.addErrback(outcome.append)
        return d

    try:
        react(main)
    except SystemExit as e:
        if outcome:
            outcome[0].raiseException()
        if e.code:
            raise


class PingFailed(DigitalSpringError):
    """
    No ping was answered.
    """


class PingOptions(CommandOptions):
    """
    ``dspring ping PEER_ID``.
    """

    synopsis = "[-c COUNT] [-i SECONDS] PEER_ID"
    longdesc = (
        "Ping a peer through the running node's secure channel and print round-trip "
        "times, like ping(8). The node finds the peer's address in its address book, "
        "or else in the DHT."
    )
    optParameters = [
        ["count", "c", 4, "Number of pings to send (0: until interrupted).", int],
        ["interval", "i", 1.0, "Seconds between pings.", float],
        ["size", "s", 56, "Bytes of data in each ping (at most 1024).", int],
    ]

    def parseArgs(self, peer: str) -> None:  # type: ignore[override]
        self["peer"] = _peer_id(peer)

    def postOptions(self) -> None:
        if self["count"] < 0 or self["interval"] <= 0:
            raise usage.UsageError("--count must be 0 or more and --interval positive")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        peer = str(self["peer"])
        rtts: list[float] = []
        sent = 0

        async def pings(reactor: Any) -> None:
            nonlocal sent
            client = ControlClient(reactor, data_dir)
            out.write(f"PING {peer}: {self['size']} data bytes\n")
            while self["count"] == 0 or sent < self["count"]:
                if sent:
                    await deferLater(reactor, self["interval"], lambda: None)
                sent += 1
                try:
                    answer = await client.call("ping", {"peer": peer, "size": self["size"]})
                except DigitalSpringError as e:
                    out.write(f"seq={sent} {e}\n")
                    continue
                rtts.append(answer["rtt_ms"])
                extra = f" (connected in {answer['connect_ms']:.1f} ms)" if answer["new"] else ""
                out.write(
                    f"{self['size']} bytes from {peer}: seq={sent} "
                    f"time={answer['rtt_ms']:.2f} ms{extra}\n"
                )
                out.flush()

        try:
            _run_async(pings)
        finally:
            if sent:
                lost = sent - len(rtts)
                out.write(f"--- {peer} ping statistics ---\n")
                out.write(
                    f"{sent} sent, {len(rtts)} received, {100 * lost / sent:.0f}% packet loss\n"
                )
                if rtts:
                    mean = sum(rtts) / len(rtts)
                    mdev = math.sqrt(sum((r - mean) ** 2 for r in rtts) / len(rtts))
                    out.write(
                        f"rtt min/avg/max/mdev = {min(rtts):.3f}/{mean:.3f}/"
                        f"{max(rtts):.3f}/{mdev:.3f} ms\n"
                    )
        if not rtts:
            raise PingFailed(f"no answer from {peer}")


def _counts(counts: dict[str, int]) -> str:
    """
    ``"12 (address-rate 10, handshakes 2)"``: a total and its parts.
    """
    parts = ", ".join(f"{name} {count}" for name, count in counts.items())
    return f"{sum(counts.values())} ({parts})" if parts else "0"


class StatusOptions(CommandOptions):
    """
    ``dspring status``.
    """

    synopsis = ""
    longdesc = (
        "Show the running node's peer ID, addresses and connected peers, the connections "
        "it refused (by reason) or trimmed and the secure channels that failed (by error), "
        "and the size of its DHT routing table with the peers in it."
    )
    optFlags = [["json", None, "Print the status as JSON."]]

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        status: dict[str, Any] = {}

        async def ask(reactor: Any) -> None:
            status.update(await ControlClient(reactor, data_dir).call("status"))

        _run_async(ask)
        if self["json"]:
            out.write(json.dumps(status, indent=1) + "\n")
            return
        out.write(f"peer ID:     {status['peer_id']}\n")
        out.write(f"addresses:   {' '.join(status['addresses']) or '(none)'}\n")
        network = status.get("network")
        if network is None:
            out.write(f"connections: {len(status['connections'])}\n")
        else:
            out.write(
                f"connections: {len(status['connections'])} ({network['inbound']} inbound, "
                f"{network['outbound']} outbound; {network['handshaking']} inbound handshakes)\n"
            )
        for peer in status["connections"]:
            out.write(f"  {peer}\n")
        if network is not None:
            out.write(f"refused:     {_counts(network['refused'])}\n")
            out.write(f"trimmed:     {network['trimmed']} idle connections\n")
            out.write(f"failed channels: {_counts(network['channel_failures'])}\n")
        dht = status.get("dht")
        if dht is not None:
            out.write(
                f"DHT:         {dht['routing_table']} contacts in {dht['buckets']} buckets, "
                f"{dht['records']} records held\n"
            )
            own = dht["own_record"]
            if own is not None:
                out.write(
                    f"own record:  sequence {own['sequence']}, "
                    f"stored at {own['stored_at']} nodes\n"
                )
            out.write(f"known peers: {len(dht['known_peers'])}\n")
            for peer in dht["known_peers"]:
                out.write(f"  {peer}\n")
