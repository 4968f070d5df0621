# -*- test-case-name: tests.test_tap -*-
"""
``twistd dspring``: the options of a node and the factory of its service tree.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from .channel import ConnectionPool
from .control import DEFAULT_CONTROL
from .directory import AddressBook
from .errors import DigitalSpringError
from .identity import load_or_create_identity
from .node import Node
from .node._options import (
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    BadOption,
    BootstrapPeer,
    check_listen,
    data_dir_path,
    read_passphrase_file,
)
from .transport import (
    ITransport,
    TransportContext,
    get_transport_plugin,
    split_address,
)

log = Logger()


class Options(usage.Options):
    """
    The options of ``twistd dspring``.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a Digital Spring node. On first start it creates the node's identity in the "
        "data directory, encrypted under the passphrase from --passphrase-file (or in clear "
        "with --no-passphrase), and logs its peer ID and addresses."
    )
    optParameters = [
        [
            "data-dir",
            "d",
            DEFAULT_DATA_DIR,
            "Directory that holds the node's identity and state (created if missing).",
        ],
        [
            "passphrase-file",
            None,
            None,
            "File whose first line is the passphrase of the node's key file.",
        ],
        [
            "control",
            None,
            DEFAULT_CONTROL,
            "Endpoint of the local control API that the dspring command uses "
            "(loopback only; its address and token go to DATA_DIR/control.json).",
        ],
        [
            "idle-timeout",
            None,
            300.0,
            "Seconds after which a connection without traffic is closed.",
            float,
        ],
        [
            "advertise",
            None,
            None,
            "Host name or IP address to publish for tcp listeners on all interfaces "
            "(default: 127.0.0.1).",
        ],
    ]
    optFlags = [
        [
            "no-passphrase",
            None,
            "Keep the key file unencrypted (for servers and tests): no passphrase needed.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["bootstrap"] = []

    def opt_listen(self, address: str) -> None:
        """
        Listen on TRANSPORT:DESCRIPTION, e.g. tcp:7655 or tcp:7655:interface=127.0.0.1
        (repeatable; default tcp:7655).
        """
        try:
            self["listen"].append(check_listen(address))
        except BadOption as e:
            raise usage.UsageError(str(e)) from None

    def opt_bootstrap(self, peer: str) -> None:
        """
        Join the network through PEER_ID@TRANSPORT:ADDRESS (repeatable).
        """
        try:
            self["bootstrap"].append(BootstrapPeer.parse(peer))
        except BadOption as e:
            raise usage.UsageError(str(e)) from None

    def postOptions(self) -> None:
        if self["passphrase-file"] and self["no-passphrase"]:
            raise usage.UsageError("give either --passphrase-file or --no-passphrase, not both")
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        self["data-dir"] = data_dir_path(self["data-dir"])


def _transport_options(name: str, options: Options) -> dict[str, Any]:
    if name == "tcp" and options["advertise"]:
        return {"advertise": options["advertise"]}
    return {}


def build_transports(options: Options, reactor: Any) -> dict[str, ITransport]:
    """
    Make every transport the node needs: those it listens on, and ``tcp``
    for dialling out.

    :raises DigitalSpringError: for an unknown transport or bad transport
        options.
    """
    names = {"tcp"} | {split_address(address)[0] for address in options["listen"]}
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
    unknown transport) ends the program with one line on stderr.

    :param reactor: the reactor to run on; the global one when ``None``.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    try:
        node = _make_node(options, reactor)
    except DigitalSpringError as e:
        raise SystemExit(f"dspring: error: {e}") from None

    def stop(failure: Failure) -> None:
        reactor.stop()

    node.ready.addErrback(stop)
    return node


def _make_node(options: Options, reactor: Any) -> Node:
    passphrase = None
    if options["passphrase-file"]:
        passphrase = read_passphrase_file(options["passphrase-file"])
    identity, created = load_or_create_identity(
        options["data-dir"], passphrase, unencrypted=options["no-passphrase"]
    )
    if created:
        log.info(
            "created a new identity {peer_id} in {data_dir}",
            peer_id=str(identity.peer_id),
            data_dir=options["data-dir"].path,
        )
    transports = build_transports(options, reactor)
    pool = ConnectionPool(
        identity,
        reactor,
        transports,
        AddressBook.in_data_dir(options["data-dir"]),
        idle_timeout=options["idle-timeout"],
    )
    return Node(
        identity,
        reactor,
        transports,
        options["listen"],
        pool,
        data_dir=options["data-dir"],
        control=options["control"],
    )


__all__ = ["Options", "build_transports", "makeService"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("run this as: twistd -n dspring [options]")
