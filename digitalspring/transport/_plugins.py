# -*- test-case-name: tests.test_transport -*-
"""
Finding transports: the plugin registry and how addresses name them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen
from twisted.plugin import getPlugins
from twisted.python.filepath import FilePath

from ..errors import DigitalSpringError
from ._interfaces import ITransportPlugin

_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")


class TransportError(DigitalSpringError):
    """
    A transport could not do what was asked of it.
    """


class UnknownTransport(TransportError):
    """
    No installed transport has the configured name.
    """

    def __init__(self, name: str, installed: list[str]) -> None:
        super().__init__(
            f"unknown transport {name!r}; installed transports: "
            + (", ".join(sorted(installed)) or "none")
        )
        self.name = name
        self.installed = sorted(installed)


class InvalidAddress(TransportError):
    """
    An address or listening description is malformed.
    """


class TransportConfigError(TransportError):
    """
    A transport's options are missing or wrong.
    """


@frozen
class TransportContext:
    """
    What a transport plugin gets to build its transport.

    :ivar reactor: the reactor (or clock) everything is scheduled on.
    :ivar data_dir: the node's data directory; a transport keeps its own
        state (tor's data, onion keys) below it.
    :ivar options: options meant for this transport alone (for ``memory``,
        the ``network`` and the ``host`` name).
    """

    reactor: Any
    data_dir: FilePath[str] | None = None
    options: Mapping[str, Any] = field(factory=dict)


def split_address(address: str) -> tuple[str, str]:
    """
    Split ``NAME:ADDRESS`` into the transport's name and its own address.

    :raises InvalidAddress: when there is no name, or the name is not a
        valid transport name.
    """
    name, sep, rest = address.partition(":")
    if not sep or not _NAME.match(name):
        raise InvalidAddress(
            f"{address!r} is not of the form TRANSPORT:ADDRESS (e.g. tcp:127.0.0.1:7000)"
        )
    return name, rest


def transport_plugins() -> dict[str, ITransportPlugin]:
    """
    Every installed transport plugin, by name.

    When two plugins claim one name, the first found wins.
    """
    found: dict[str, ITransportPlugin] = {}
    for plugin in getPlugins(ITransportPlugin):
        found.setdefault(plugin.name, plugin)
    return found


def get_transport_plugin(name: str) -> ITransportPlugin:
    """
    The installed transport plugin called ``name``.

    :raises UnknownTransport: naming the installed ones, when there is none
        by that name.
    """
    plugins = transport_plugins()
    try:
        return plugins[name]
    except KeyError:
        raise UnknownTransport(name, list(plugins)) from None
