# -*- test-case-name: tests.test_tap -*-
"""
``twistd dspring``: the options of a node and the factory of its service tree.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.filepath import FilePath

from .channel import ConnectionPool
from .cli._passphrase import ask_passphrase
from .control import DEFAULT_CONTROL, BadControlEndpoint, check_control_endpoint, unix_control
from .dht import DHT, Contact, DHTDirectory, DHTSettings, DirectoryChain
from .directory import AddressBook, check_address
from .errors import DigitalSpringError
from .identity import (
    Identity,
    NoKeyFile,
    PassphraseRequired,
    PeerID,
    ensure_data_dir,
    key_file_path,
    load_or_create_identity,
    read_key_file,
)
from .multicast import (
    DEFAULT_DEPOSIT_WORK,
    DEFAULT_UPLOAD_BUDGET,
    MAX_DEPOSIT_WORK,
    RETRY_DELAYS,
    IMulticastStrategyPlugin,
    SpringStrategyPlugin,
    strategy_plugins,
)
from .node import DataDirLock, Node
from .node._options import (
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    DEFAULT_ONION_LISTEN,
    BadOption,
    BootstrapPeer,
    check_listen,
    data_dir_path,
    parse_rate,
    parse_size,
    read_bootstrap_file,
    read_passphrase_fd,
    read_passphrase_file,
    read_systemd_credential,
)
from .node._startup import StartupReport
from .storage import IStore, StoreLimits, open_sqlite_store, storage_key
from .transport import (
    BOOTSTRAP_WARNING,
    ITransport,
    ListenDescription,
    TransportContext,
    TransportError,
    get_transport_plugin,
    split_address,
)
from .transport._tcp import tcp_server_endpoint
from .web import DEFAULT_WEB, BadWebEndpoint, check_web_endpoint

log = Logger()


class Options(usage.Options):
    """
    The options of ``twistd dspring``.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a Digital Spring node. On first start it creates the node's identity in the "
        "data directory, encrypted under a passphrase (asked at the terminal, or given "
        "with --passphrase-file, --passphrase-fd or --passphrase-credential), or in clear "
        "with --no-passphrase, and logs its peer ID and addresses. One node runs per data "
        "directory."
    )
    optParameters = [
        [
            "data-dir",
            "d",
            None,
            "Directory that holds the node's identity and state (created if missing; "
            "default: $DSPRING_DIR, else ~/.dspring).",
        ],
        [
            "passphrase-file",
            None,
            None,
            "File whose first line is the passphrase of the node's key file.",
        ],
        [
            "passphrase-fd",
            None,
            None,
            "Read the passphrase's line from this open file descriptor (a pipe), so that it "
            "never is in a file.",
        ],
        [
            "passphrase-credential",
            None,
            None,
            "Read the passphrase from the systemd credential of this name "
            "($CREDENTIALS_DIRECTORY/NAME; see LoadCredentialEncrypted= in systemd.exec(5)).",
        ],
        [
            "control",
            None,
            None,
            "Endpoint of the local control API that the dspring command uses: on loopback "
            f"or a UNIX socket only (default {DEFAULT_CONTROL}; with --onion-only a UNIX "
            "socket only, default unix:DATA_DIR/control.sock). Its address and token go to "
            "DATA_DIR/control.json.",
        ],
        [
            "web",
            None,
            None,
            "Serve the web client at this endpoint, on loopback only "
            f"({DEFAULT_WEB} picks a free port); 'dspring web' prints a one-time login URL. "
            "Default: no web client.",
        ],
        [
            "idle-timeout",
            None,
            300.0,
            "Seconds after which a connection without traffic is closed.",
        ],
        [
            "retry-interval",
            None,
            RETRY_DELAYS[-1],
            "The most seconds between two tries to deliver what waits for a peer that "
            "cannot be reached (a group's messages, new epochs and notifications for a "
            "member away); the tries are 30 s, 2 min, 10 min, 1 h, 6 h, then daily, none "
            "longer than this (default 86400: a day).",
        ],
        [
            "upload-budget",
            None,
            DEFAULT_UPLOAD_BUDGET,
            "Bytes per second the node uploads to other members when it forwards a "
            "group's messages (spring), all groups together; k, M or G multiply by a "
            "thousand, million or billion (default 1.25M: 10 Mbit/s).",
        ],
        [
            "mailbox-quota",
            None,
            StoreLimits().mailbox_bytes_total,
            "With --mailbox: the bytes it keeps of all groups together (k, M or G multiply "
            "by a thousand, million or billion; default 1 GiB).",
        ],
        [
            "mailbox-group-quota",
            None,
            StoreLimits().mailbox_bytes_per_group,
            "With --mailbox: the bytes it keeps of one group (default 256 MiB).",
        ],
        [
            "mailbox-owner-quota",
            None,
            StoreLimits().mailbox_bytes_per_owner,
            "With --mailbox: the bytes it keeps of the groups of one owner together "
            "(default 512 MiB).",
        ],
        [
            "notify-box-work",
            None,
            DEFAULT_DEPOSIT_WORK,
            "With --notify-box: the proof of work (leading zero bits, at most 24) it asks "
            "of each deposit (default 16).",
        ],
        [
            "notify-box-members",
            None,
            StoreLimits().notify_members_total,
            "With --notify-box: the most members it serves (default 1024).",
        ],
        [
            "notify-box-quota",
            None,
            StoreLimits().notifications_per_member,
            "With --notify-box: the most notifications it keeps for one member until it "
            "collects them (default 64); in all it keeps 64 times --notify-box-members at "
            "most.",
        ],
        [
            "dht-difficulty",
            None,
            DHTSettings().pow_difficulty,
            "Proof of work (leading zero bits) asked of small values stored in the DHT.",
        ],
        [
            "advertise",
            None,
            None,
            "Host name or IP address to publish for tcp listeners on all interfaces "
            "(default: 127.0.0.1).",
        ],
        [
            "source-address",
            None,
            None,
            "IP address to open tcp connections from (default: the system's choice); "
            "peers count connections by the address they come from.",
        ],
        [
            "tor-control",
            None,
            None,
            "Use the running tor whose control port is this client endpoint "
            "(tcp:127.0.0.1:9051, unix:/run/tor/control) instead of launching one.",
        ],
        [
            "tor-control-password-file",
            None,
            None,
            "File whose first line is the tor control port's password "
            "(default: tor's cookie authentication).",
        ],
        [
            "tor-binary",
            None,
            None,
            "The tor program to launch (default: tor on PATH).",
        ],
        [
            "tor-bootstrap-warning",
            None,
            BOOTSTRAP_WARNING,
            "Seconds after which a tor that has not bootstrapped gets one warning in the "
            "log, quoting what tor complains of (the start fails at 180).",
        ],
    ]
    optFlags = [
        [
            "no-passphrase",
            None,
            "Keep the key file unencrypted (for servers and tests): no passphrase needed.",
        ],
        [
            "mailbox",
            None,
            "Serve as a mailbox: keep the messages of the groups whose owners add this node "
            "with the role mailbox, for their members who are away (ciphertext only: a "
            "mailbox gets no content key), within the --mailbox-*quota options.",
        ],
        [
            "notify-box",
            None,
            "Serve as a notification box: keep, for the members that register with this "
            "node, the sealed notifications their groups' owners leave while they are away "
            "(it learns neither group nor index), within the --notify-box-* options.",
        ],
        [
            "onion-only",
            None,
            "Reach and be reached through tor only: listen on onion services, publish no "
            "other address, and open no direct connection off this machine.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        # The help of an opt_ method is its docstring, line breaks and
        # indentation included: make it single-spaced, as the others are.
        self.docs = {name: " ".join((doc or "").split()) for name, doc in self.docs.items()}
        self["listen"] = []
        self["bootstrap"] = []
        self["tor-option"] = []

    def opt_listen(self, address: str) -> None:
        """
        Listen on TRANSPORT:DESCRIPTION, e.g. tcp:7655 or tcp:7655:interface=127.0.0.1
        (repeatable; default tcp:7655).
        """
        try:
            self["listen"].append(_check_listen(address))
        except (BadOption, TransportError) as e:
            raise usage.UsageError(str(e)) from None

    def opt_bootstrap(self, peer: str) -> None:
        """
        Join the network through PEER_ID@TRANSPORT:ADDRESS (repeatable; more in
        DATA_DIR/bootstrap.txt, one a line).
        """
        try:
            bootstrap = BootstrapPeer.parse(peer)
        except BadOption as e:
            raise usage.UsageError(str(e)) from None
        try:
            check_address(bootstrap.address)
        except TransportError as e:
            raise usage.UsageError(f"bad bootstrap peer {peer!r}: {e}") from None
        self["bootstrap"].append(bootstrap)

    def opt_tor_option(self, line: str) -> None:
        """
        Add the line "Key Value" to the torrc of the tor the node launches
        (repeatable), e.g. to join a private test network.
        """
        self["tor-option"].append(line)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Under twistd, a usage error is one line and a hint to ``--help``:
        twistd itself would print its whole help text first.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            raise SystemExit(
                f"twistd dspring: {e}\n(see 'twistd dspring --help' for every option)"
            ) from None

    def postOptions(self) -> None:
        sources = [
            f"--{name}"
            for name in ("passphrase-file", "passphrase-fd", "passphrase-credential")
            if self[name] is not None
        ]
        if self["no-passphrase"]:
            sources.append("--no-passphrase")
        if len(sources) > 1:
            raise usage.UsageError(f"give only one of {', '.join(sources)}")
        if self["passphrase-fd"] is not None and _number(self, "passphrase-fd", int) < 0:
            raise usage.UsageError("--passphrase-fd takes an open file descriptor, 0 or more")
        if _number(self, "idle-timeout", float) <= 0:
            raise usage.UsageError("--idle-timeout takes a number of seconds above 0")
        if _number(self, "retry-interval", float) <= 0:
            raise usage.UsageError("--retry-interval takes a number of seconds above 0")
        if _number(self, "tor-bootstrap-warning", float) <= 0:
            raise usage.UsageError("--tor-bootstrap-warning takes a number of seconds above 0")
        if isinstance(self["upload-budget"], str):
            try:
                self["upload-budget"] = parse_rate(self["upload-budget"])
            except BadOption as e:
                raise usage.UsageError(f"--upload-budget: {e}") from None
        for name in ("mailbox-quota", "mailbox-group-quota", "mailbox-owner-quota"):
            if isinstance(self[name], str):
                if not self["mailbox"]:
                    raise usage.UsageError(f"--{name} is for a node run with --mailbox")
                try:
                    self[name] = parse_size(self[name])
                except BadOption as e:
                    raise usage.UsageError(f"--{name}: {e}") from None
        for name in ("notify-box-work", "notify-box-members", "notify-box-quota"):
            if isinstance(self[name], str) and not self["notify-box"]:
                raise usage.UsageError(f"--{name} is for a node run with --notify-box")
        if not 0 <= _number(self, "notify-box-work", int) <= MAX_DEPOSIT_WORK:
            raise usage.UsageError(f"--notify-box-work takes 0 to {MAX_DEPOSIT_WORK} bits")
        if _number(self, "notify-box-members", int) < 1:
            raise usage.UsageError("--notify-box-members takes a number above 0")
        if _number(self, "notify-box-quota", int) < 1:
            raise usage.UsageError("--notify-box-quota takes a number above 0")
        if _number(self, "dht-difficulty", int) < 0:
            raise usage.UsageError("--dht-difficulty takes a number of bits, 0 or more")
        if not self["listen"]:
            self["listen"] = [DEFAULT_ONION_LISTEN if self["onion-only"] else DEFAULT_LISTEN]
        if self["onion-only"]:
            other = [a for a in self["listen"] if split_address(a)[0] != "tor"]
            if other:
                raise usage.UsageError(
                    "--onion-only listens on tor only, not on " + ", ".join(other)
                )
            if self["advertise"]:
                raise usage.UsageError("--advertise is for tcp, which --onion-only does not use")
            if self["source-address"]:
                raise usage.UsageError(
                    "--source-address is for tcp, which --onion-only does not use"
                )
        if not self["onion-only"]:
            try:
                # The tcp transport checks --advertise and --source-address
                # as it is made, which does nothing else.
                get_transport_plugin("tcp").make_transport(
                    TransportContext(None, None, _transport_options("tcp", self))
                )
            except TransportError as e:
                raise usage.UsageError(str(e)) from None
        self["data-dir"] = data_dir_path(
            self["data-dir"] or os.environ.get("DSPRING_DIR") or DEFAULT_DATA_DIR
        )
        if self["control"] is None:
            onion = self["onion-only"]
            self["control"] = unix_control(self["data-dir"]) if onion else DEFAULT_CONTROL
        try:
            check_control_endpoint(self["control"], onion_only=self["onion-only"])
        except BadControlEndpoint as e:
            raise usage.UsageError(str(e)) from None
        if self["web"] is not None:
            try:
                check_web_endpoint(self["web"])
            except BadWebEndpoint as e:
                raise usage.UsageError(f"--web: {e}") from None


def _check_listen(text: str) -> str:
    """
    A ``--listen`` value, checked as its transport will read it, so that a
    malformed one is refused before anything is created or started.

    :raises BadOption: when it is not ``TRANSPORT:DESCRIPTION``.
    :raises TransportError: when the transport is unknown or the
        description malformed.
    """
    name, description = split_address(check_listen(text))
    if name == "tcp":
        tcp_server_endpoint(None, description)
    elif name == "tor":
        ListenDescription.parse(description)
    else:
        get_transport_plugin(name)
    return text


def _number(options: Options, name: str, kind: type[int] | type[float]) -> Any:
    """
    Read a number option, with an error in plain words (Twisted's own says
    "Parameter type enforcement failed").
    """
    value = options[name]
    if not isinstance(value, str):
        return value
    try:
        options[name] = kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise usage.UsageError(f"--{name} takes {what}, not {value!r}") from None
    return options[name]


def _transport_options(name: str, options: Options) -> dict[str, Any]:
    if name == "tcp":
        tcp = {"advertise": options["advertise"], "source": options["source-address"]}
        return {key: value for key, value in tcp.items() if value}
    if name == "tor":
        tor: dict[str, Any] = {
            "control": options["tor-control"],
            "torrc": options["tor-option"],
            "tor_binary": options["tor-binary"],
            "onion_only": options["onion-only"],
            "bootstrap_warning": options["tor-bootstrap-warning"],
        }
        if options["tor-control-password-file"]:
            password = read_passphrase_file(options["tor-control-password-file"])
            tor["control_password"] = password.decode("utf-8", "replace")
        return {key: value for key, value in tor.items() if value}
    return {}


def _uses_tor(options: Options) -> bool:
    return any(
        options[name]
        for name in (
            "onion-only",
            "tor-control",
            "tor-option",
            "tor-binary",
            "tor-control-password-file",
        )
    )


def build_transports(options: Options, reactor: Any) -> dict[str, ITransport]:
    """
    Make every transport the node needs: those it listens on, ``tcp`` for
    dialling out (except in onion-only mode), and ``tor`` when a tor option
    is given.

    :raises DigitalSpringError: for an unknown transport or bad transport
        options.
    """
    names = {split_address(address)[0] for address in options["listen"]}
    if _uses_tor(options):
        names.add("tor")
    if not options["onion-only"]:
        # Onion-only nodes have no tcp: nothing can dial off the machine.
        names.add("tcp")
    return {
        name: get_transport_plugin(name).make_transport(
            TransportContext(reactor, options["data-dir"], _transport_options(name, options))
        )
        for name in sorted(names)
    }


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build a node's service tree from its options.

    A problem a user must fix (a missing passphrase, a damaged key file, an
    unknown transport, a data directory another node runs on) ends the
    program with one line on stderr, before twistd daemonizes.  Under
    twistd, a start that fails later (a port in use, no tor) does too, and
    twistd's parent process waits until the node listens before it exits:
    see :class:`~digitalspring.node._startup.StartupReport`.

    :param reactor: the reactor to run on; the global one when ``None``.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    try:
        node = _make_node(options, reactor)
    except DigitalSpringError as e:
        raise SystemExit(f"dspring: error: {e}") from None
    except KeyboardInterrupt:
        # Ctrl-C at the passphrase prompt.
        raise SystemExit("dspring: interrupted") from None
    if options.parent is not None:
        # Run by twistd, whose options hold its status pipe once it has
        # daemonized.
        report = StartupReport(reactor, node.ready, options.parent, sys.stderr, _exit_at_end)
        report.setServiceParent(node)
    return node


def _exit_at_end(status: int) -> None:
    """
    End the process with ``status`` once everything else is done: twistd
    has no way for a service to choose its exit status, and returns 0 once
    the reactor has stopped, its PID file is removed and its log closed.
    """

    def exit_now() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    atexit.register(exit_now)


def _passphrase(options: Options) -> bytes | None:
    """
    The key file's passphrase: from the option that gives one, else asked at
    the terminal when the key file is encrypted (or is yet to be written
    without --no-passphrase), else none.

    :raises PassphraseRequired: when one is needed and there is no
        terminal to ask at.
    """
    if options["passphrase-file"] is not None:
        return read_passphrase_file(options["passphrase-file"])
    if options["passphrase-fd"] is not None:
        return read_passphrase_fd(options["passphrase-fd"])
    if options["passphrase-credential"] is not None:
        return read_systemd_credential(options["passphrase-credential"])
    if options["no-passphrase"]:
        return None
    path = key_file_path(options["data-dir"])
    try:
        new = False
        needed = read_key_file(path).encrypted
    except NoKeyFile:
        new = needed = True
    if not needed:
        return None
    if not sys.stdin.isatty():
        what = "creating one needs" if new else "opening it needs"
        raise PassphraseRequired(
            f"{path.path}: {what} a passphrase, and there is no terminal to ask at: give "
            "--passphrase-file, --passphrase-fd or --passphrase-credential"
            + (", or --no-passphrase for none" if new else "")
        )
    if new:
        return ask_passphrase(f"New passphrase for {path.path}", None, confirm=True)
    return ask_passphrase(f"Passphrase of {path.path}", None)


def _make_node(options: Options, reactor: Any) -> Node:
    ensure_data_dir(options["data-dir"])
    lock = DataDirLock.acquire(options["data-dir"])
    try:
        return _make_locked_node(options, reactor, lock)
    except BaseException:
        lock.release()
        raise


def _make_locked_node(options: Options, reactor: Any, lock: DataDirLock) -> Node:
    identity, created = load_or_create_identity(
        options["data-dir"], _passphrase(options), unencrypted=options["no-passphrase"]
    )
    if created:
        log.info(
            "created a new identity {peer_id} in {data_dir}",
            peer_id=str(identity.peer_id),
            data_dir=options["data-dir"].path,
        )
    transports = build_transports(options, reactor)
    # The address book first, then the DHT: a contact the user added by hand
    # wins over whatever the network says.
    book = AddressBook.in_data_dir(options["data-dir"])
    directory = DirectoryChain([book])
    pool = ConnectionPool(
        identity,
        reactor,
        transports,
        directory,
        idle_timeout=options["idle-timeout"],
    )
    bootstrap = [*options["bootstrap"], *read_bootstrap_file(options["data-dir"])]
    dht = DHT(
        pool,
        DHTSettings(pow_difficulty=options["dht-difficulty"]),
        [
            Contact(peer.peer_id, (peer.address,))
            for peer in bootstrap
            if peer.peer_id != identity.peer_id
        ],
        state_dir=options["data-dir"],
    )
    directory.directories.append(DHTDirectory(dht))
    limits = store_limits(options)
    return Node(
        identity,
        reactor,
        transports,
        options["listen"],
        pool,
        data_dir=options["data-dir"],
        control=options["control"],
        dht=dht,
        lock=lock,
        open_store=_store_opener(reactor, options["data-dir"], identity, limits),
        is_contact=lambda peer: _is_contact(book, peer),
        strategies=node_strategies(options),
        mailbox=limits if options["mailbox"] else None,
        web=options["web"],
        notify_box=int(options["notify-box-work"]) if options["notify-box"] else None,
        retry_interval=float(options["retry-interval"]),
    )


def store_limits(options: Options) -> StoreLimits:
    """
    The limits of the node's store: the defaults, with the mailbox quotas
    of the options.
    """
    return StoreLimits(
        mailbox_bytes_total=int(options["mailbox-quota"]),
        mailbox_bytes_per_group=int(options["mailbox-group-quota"]),
        mailbox_bytes_per_owner=int(options["mailbox-owner-quota"]),
        notify_members_total=int(options["notify-box-members"]),
        notifications_per_member=int(options["notify-box-quota"]),
        notifications_total=int(options["notify-box-members"])
        * int(options["notify-box-quota"]),
    )


def node_strategies(options: Options) -> dict[str, IMulticastStrategyPlugin]:
    """
    The multicast strategies a node runs: every installed one, ``spring``
    with the node's ``--upload-budget``.
    """
    return {
        **strategy_plugins(),
        "spring": SpringStrategyPlugin(upload_budget=options["upload-budget"]),
    }


def _store_opener(
    reactor: Any, data_dir: FilePath[str], identity: Identity, limits: StoreLimits
) -> Callable[[], Deferred[IStore]]:
    """
    What opens ``DATA_DIR/node.db`` when the node starts, under the key
    the identity unlocks.
    """

    def open_store() -> Deferred[IStore]:
        return open_sqlite_store(reactor, data_dir, storage_key(identity), limits).addCallback(
            _as_store
        )

    return open_store


def _as_store(store: IStore) -> IStore:
    return store


def _is_contact(book: AddressBook, peer: PeerID) -> bool:
    """
    Whether ``peer`` is in the address book; a damaged book has no one.
    """
    try:
        return peer in book.peers()
    except DigitalSpringError:
        return False


__all__ = ["Options", "build_transports", "makeService", "node_strategies", "store_limits"]
