# -*- test-case-name: tests.test_transport -*-
"""
``HOST:PORT``: the address syntax ``tcp`` and ``memory`` share.
"""

from __future__ import annotations

import re

from twisted.internet.abstract import isIPAddress, isIPv6Address

from ._plugins import InvalidAddress

# RFC 1123 host names: dot-separated labels of letters, digits and inner dashes.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
# Memory host names: what a simulation would call its nodes, and no colon.
_MEMORY_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")


def parse_port(text: str, *, allow_zero: bool = False) -> int:
    """
    A port number written in decimal, 1 to 65535 (0 too when
    ``allow_zero``, meaning "any free port").

    :raises InvalidAddress: for anything else.
    """
    if not _PORT.match(text):
        raise InvalidAddress(f"{text!r} is not a port number")
    port = int(text)
    if port > 65535 or (port == 0 and not allow_zero):
        raise InvalidAddress(f"port {port} is out of range")
    return port


def parse_tcp_address(address: str) -> tuple[str, int]:
    """
    Split a ``tcp`` address, ``HOST:PORT``, where ``HOST`` is an IPv4
    address, a DNS name, or an IPv6 address in brackets (``[::1]:7000``).

    :returns: the host (IPv6 without its brackets) and the port.
    :raises InvalidAddress: when the address is malformed.
    """
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep or not isIPv6Address(host) or "%" in host:
            raise InvalidAddress(f"{address!r} is not of the form [IPV6]:PORT")
    else:
        host, sep, port = address.rpartition(":")
        if not sep or ":" in host:
            raise InvalidAddress(f"{address!r} is not of the form HOST:PORT (IPv6 as [::1]:7000)")
        if not (isIPAddress(host) or (_HOSTNAME.match(host) and not _looks_numeric(host))):
            raise InvalidAddress(f"{host!r} in {address!r} is not a host name or IP address")
    return host, parse_port(port)


def _looks_numeric(host: str) -> bool:
    # "1.2.3" or "999.1.1.1" would be taken for a malformed IPv4 address by
    # resolvers; refuse them rather than guess.
    return host.rstrip(".").rsplit(".", 1)[-1].isdigit()


def format_tcp_address(host: str, port: int) -> str:
    """
    The ``tcp`` address for ``host`` and ``port``: the inverse of
    :func:`parse_tcp_address`.
    """
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def check_memory_host(name: str) -> str:
    """
    :returns: ``name`` when it can name a host of a memory network: letters,
        digits, ``.``, ``_`` and ``-``, starting with a letter or digit.
    :raises InvalidAddress: otherwise.
    """
    if not _MEMORY_HOST.match(name):
        raise InvalidAddress(f"{name!r} is not a valid memory host name")
    return name


def parse_memory_address(address: str) -> tuple[str, int]:
    """
    Split a ``memory`` address, ``HOST:PORT``.

    :raises InvalidAddress: when the address is malformed.
    """
    host, sep, port = address.rpartition(":")
    if not sep:
        raise InvalidAddress(f"{address!r} is not of the form HOST:PORT")
    return check_memory_host(host), parse_port(port)
