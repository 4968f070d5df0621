# -*- test-case-name: tests.test_cli -*-
"""
``dspring contacts``, ``ping`` and ``status``: commands about other peers,
the last two through the running node's control API.
"""

from __future__ import annotations

import json
import math
from typing import Any, TextIO

from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.python.filepath import FilePath

from ..channel import MAX_PING_DATA
from ..control import ControlClient, NodeNotRunning
from ..directory import AddressBook, Contact, check_address, check_name
from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID, key_file_path, read_key_file
from ..transport import TransportError
from ._base import CommandOptions, plural
from ._base import run_async as _run_async


def _peer_id(text: str) -> PeerID:
    try:
        return PeerID.parse(text)
    except InvalidPeerID as e:
        raise usage.UsageError(str(e)) from None


def _address(text: str) -> str:
    try:
        return check_address(text)
    except TransportError as e:
        raise usage.UsageError(str(e)) from None


def _name(text: str) -> str:
    try:
        return check_name(text)
    except DigitalSpringError as e:
        raise usage.UsageError(str(e)) from None


def _number(options: usage.Options, option: str, kind: type[int] | type[float]) -> Any:
    """
    Read a number option, with an error in plain words.
    """
    value = options[option]
    if isinstance(value, kind):
        return value
    try:
        options[option] = kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise usage.UsageError(f"--{option} takes {what}, not {value!r}") from None
    return options[option]


def _contact_lines(contact: Contact) -> list[str]:
    name = contact.name or "-"
    if not contact.addresses:
        return [f"{name}  {contact.peer_id} (no address)"]
    return [f"{name}  {contact.peer_id}@{address}" for address in contact.addresses]


class ContactsAddOptions(CommandOptions):
    """
    ``dspring contacts add [--name NAME] PEER_ID@TRANSPORT:ADDRESS``.
    """

    synopsis = "[--name NAME] PEER_ID@TRANSPORT:ADDRESS"
    longdesc = (
        "Remember where a peer can be reached, e.g. PEER_ID@tcp:192.0.2.7:7655, as "
        "'dspring id' prints it and --bootstrap takes it, and give the peer a name of "
        "your own. The address is checked as its transport will read it. "
        "'PEER_ID TRANSPORT:ADDRESS' works too."
    )
    optParameters = [
        ["name", "n", None, "Your name for the peer, usable wherever a peer ID is."],
    ]

    def parseArgs(self, peer: str, address: str | None = None) -> None:  # type: ignore[override]
        if address is None:
            peer, sep, address = peer.partition("@")
            if not sep:
                raise usage.UsageError(f"{peer!r} is not of the form PEER_ID@TRANSPORT:ADDRESS")
        self["peer"] = _peer_id(peer)
        self["address"] = _address(address)

    def postOptions(self) -> None:
        if self["name"] is not None:
            _name(self["name"])

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        contact = AddressBook.in_data_dir(data_dir).add(
            self["peer"], self["address"], self["name"]
        )
        out.write(f"{contact.name or '-'}  {contact.peer_id}@{self['address']}\n")


class ContactsNameOptions(CommandOptions):
    """
    ``dspring contacts name PEER NAME``.
    """

    synopsis = "PEER_ID|NAME NEW_NAME"
    longdesc = (
        "Give a peer a name of your own (or a new one), usable wherever a peer ID is. "
        "Names are yours alone: nothing a peer sends sets or changes them."
    )

    def parseArgs(self, peer: str, name: str) -> None:  # type: ignore[override]
        self["peer"] = peer
        self["name"] = _name(name)

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        book = AddressBook.in_data_dir(data_dir)
        contact = book.set_name(book.find(self["peer"]), self["name"])
        out.write(f"{contact.name}  {contact.peer_id}\n")


class ContactsRemoveOptions(CommandOptions):
    """
    ``dspring contacts remove PEER``.
    """

    synopsis = "PEER_ID|NAME"
    longdesc = "Forget a peer: its name and its addresses."

    def parseArgs(self, peer: str) -> None:  # type: ignore[override]
        self["peer"] = peer

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        book = AddressBook.in_data_dir(data_dir)
        contact = book.remove(book.find(self["peer"]))
        out.write(f"removed {contact.name or '-'}  {contact.peer_id}\n")


class ContactsListOptions(CommandOptions):
    """
    ``dspring contacts list``.
    """

    synopsis = ""
    longdesc = (
        "List the contacts: your name for each (or -), then PEER_ID@ADDRESS for each "
        "of its addresses, best first."
    )

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        contacts = AddressBook.in_data_dir(data_dir).contacts()
        if not contacts:
            out.write("no contacts\n")
        for contact in contacts:
            for line in _contact_lines(contact):
                out.write(line + "\n")


class ContactsOptions(CommandOptions):
    """
    ``dspring contacts``: the address book.
    """

    synopsis = "add|name|remove|list [options]"
    longdesc = (
        "Manage the address book: the peers you know, your names for them and where "
        "they can be reached. The running node reads it on every change."
    )
    subCommands = [
        ["add", None, ContactsAddOptions, "Add a peer's address (and name it)."],
        ["name", None, ContactsNameOptions, "Name a peer."],
        ["remove", None, ContactsRemoveOptions, "Forget a peer."],
        ["list", None, ContactsListOptions, "List the contacts."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("contacts needs a command: add, name, remove or list")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        self.subOptions.run(data_dir, out)


class PingFailed(DigitalSpringError):
    """
    No ping was answered.
    """


class PingOptions(CommandOptions):
    """
    ``dspring ping PEER``.
    """

    synopsis = "[-c COUNT] [-i SECONDS] [-s SIZE] PEER_ID|NAME"
    longdesc = (
        "Ping a peer through the running node's secure channel and print round-trip "
        "times, like ping(8). The node finds the peer's address in its address book, "
        "or else in the DHT."
    )
    optParameters = [
        ["count", "c", 4, "Number of pings to send (0: until interrupted)."],
        ["interval", "i", 1.0, "Seconds between pings."],
        ["size", "s", 56, f"Bytes of data in each ping (at most {MAX_PING_DATA})."],
    ]

    def parseArgs(self, peer: str) -> None:  # type: ignore[override]
        self["peer"] = peer

    def postOptions(self) -> None:
        if _number(self, "count", int) < 0:
            raise usage.UsageError("--count must be 0 or more")
        if _number(self, "interval", float) <= 0:
            raise usage.UsageError("--interval must be more than 0 seconds")
        if not 0 <= _number(self, "size", int) <= MAX_PING_DATA:
            raise usage.UsageError(f"--size must be from 0 to {MAX_PING_DATA} bytes")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        peer_id = AddressBook.in_data_dir(data_dir).find(self["peer"])
        try:
            own = read_key_file(key_file_path(data_dir)).peer_id
        except DigitalSpringError:
            # No identity, so no node either: the control client says so.
            own = None
        if peer_id == own:
            raise PingFailed(f"{peer_id} is this node's own peer ID; ping another peer")
        peer = str(peer_id)
        # As ping(8) shows the host it was given and its address.
        target = peer if self["peer"] == peer else self["peer"]
        rtts: list[float] = []
        sent = 0

        async def pings(reactor: Any) -> None:
            nonlocal sent
            client = ControlClient(reactor, data_dir)
            shown = peer if target == peer else f"{target} ({peer})"
            out.write(f"PING {shown}: {self['size']} data bytes\n")
            while self["count"] == 0 or sent < self["count"]:
                if sent:
                    await deferLater(reactor, self["interval"], lambda: None)
                sent += 1
                try:
                    answer = await client.call("ping", {"peer": peer, "size": self["size"]})
                except NodeNotRunning:
                    raise
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
                out.write(f"--- {target} ping statistics ---\n")
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
            raise PingFailed(f"no answer from {target}")


def _counts(counts: dict[str, int]) -> str:
    """
    ``"12 (address-rate 10, handshakes 2)"``: a total and its parts.
    """
    parts = ", ".join(f"{name} {count}" for name, count in counts.items())
    return f"{sum(counts.values())} ({parts})" if parts else "0"


def _bootstrap_lines(name: str, report: dict[str, Any]) -> list[str]:
    """
    ``tor:         bootstrapping, 14% (Handshaking with a relay)``, and
    what tor complains of on a line of its own.
    """
    if report["progress"] is None:
        state = report["state"] if report["state"] == "ready" else "starting, no report yet"
    else:
        phase = report["summary"] or report["tag"]
        state = f"{report['state']}, {report['progress']}% ({phase})"
    lines = [f"{name + ':':<13}{state}"]
    if report["complaint"] and report["state"] != "ready":
        lines.append(f"{'':<13}{name} says: {report['complaint']}")
    return lines


class StatusOptions(CommandOptions):
    """
    ``dspring status``.
    """

    synopsis = ""
    longdesc = (
        "Show the running node's peer ID, the addresses it publishes (what other peers "
        "dial; on tcp they see this machine's IP address), what is wrong with them, how "
        "far tor has bootstrapped (with what tor complains of), its connected peers, the "
        "connections "
        "it refused (by reason) or trimmed, the secure channels that failed (by error), "
        "the bytes its channels sent and received, "
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
        published = " ".join(status["addresses"])
        out.write(f"addresses:   {published + '  (published)' if published else '(none)'}\n")
        for warning in status.get("warnings", []):
            out.write(f"warning:     {warning}\n")
        for name, report in sorted(status.get("bootstrap", {}).items()):
            for line in _bootstrap_lines(name, report):
                out.write(line + "\n")
        network = status.get("network")
        if network is None:
            out.write(f"connections: {len(status['connections'])}\n")
        else:
            out.write(
                f"connections: {len(status['connections'])} ({network['inbound']} inbound, "
                f"{network['outbound']} outbound; "
                f"{plural(network['handshaking'], 'inbound handshake')})\n"
            )
        for peer in status["connections"]:
            out.write(f"  {peer}\n")
        if network is not None:
            out.write(f"refused:     {_counts(network['refused'])}\n")
            out.write(f"trimmed:     {plural(network['trimmed'], 'idle connection')}\n")
            out.write(f"failed channels: {_counts(network['channel_failures'])}\n")
            out.write(
                f"traffic:     {network['bytes_sent']:,} bytes sent, "
                f"{network['bytes_received']:,} received\n"
            )
        catch_up = status.get("catch_up")
        if catch_up is not None:
            out.write(_caught_up(catch_up))
        dht = status.get("dht")
        if dht is not None:
            out.write(
                f"DHT:         {plural(dht['routing_table'], 'contact')} in "
                f"{plural(dht['buckets'], 'bucket')}, {plural(dht['records'], 'record')} held\n"
            )
            own = dht["own_record"]
            if own is not None:
                out.write(
                    f"own record:  sequence {own['sequence']}, "
                    f"stored at {plural(own['stored_at'], 'node')}\n"
                )
            out.write(f"known peers: {len(dht['known_peers'])}\n")
            for peer in dht["known_peers"]:
                out.write(f"  {peer}\n")


def _caught_up(catch_up: dict[str, Any]) -> str:
    """
    The status line of what the node caught up: at start, then since.
    """
    at_start = catch_up.get("at_start")
    parts = []
    if at_start is not None:
        parts.append(
            f"{plural(at_start['messages'], 'message')} in "
            f"{plural(at_start['groups'], 'group')} at start"
            + ("" if at_start["finished"] else " (still catching up)")
        )
        later = catch_up["messages"] - at_start["messages"]
        if later:
            parts.append(f"{plural(later, 'message')} since")
    else:
        parts.append(
            f"{plural(catch_up['messages'], 'message')} in "
            f"{plural(catch_up['groups'], 'group')} since start"
        )
    incomplete = catch_up["incomplete"]
    if incomplete:
        held = sorted(
            {
                peer
                for report in incomplete
                if report["missing"]
                for peer in (*report["held_back"], *report.get("behind", ()))
            }
        )
        by = f" (held back by {', '.join(held)})" if held else ""
        parts.append(f"{len(incomplete)} not whole{by}: see --json")
    return "caught up:   " + "; ".join(parts) + "\n"
