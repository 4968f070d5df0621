# -*- test-case-name: tests.test_tor -*-
"""
What can go wrong with the ``tor`` transport.

Connection failures are also the Twisted ``ConnectError`` that says the same
thing, so code written for any transport (and the conformance tests) can
catch ``ConnectionRefusedError`` or ``TimeoutError`` as it would for TCP.
"""

from __future__ import annotations

from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeout

from ._plugins import TransportConfigError, TransportError


class _ConnectFailure(TransportError):
    """
    A tor stream could not be opened.
    """

    def __init__(self, message: str) -> None:
        TransportError.__init__(self, message)
        self.osError = None

    def __str__(self) -> str:
        return str(self.args[0])


class OnionServiceUnreachable(_ConnectFailure, ConnectionRefusedError):
    """
    No onion service answers at that address: it is offline, was never
    published, or nothing listens on that port.

    :ivar service_found: whether the service itself answered (and refused
        the port); if not, its descriptor may just not have reached the
        directory tor asked, and trying again can help.
    """

    def __init__(self, message: str, service_found: bool = False) -> None:
        super().__init__(message)
        self.service_found = service_found


class TorStreamTimeout(_ConnectFailure, ConnectTimeout):
    """
    Tor gave up on reaching the onion service in time.
    """


class TorStreamFailed(_ConnectFailure, ConnectError):
    """
    Tor could not open a stream to the onion service.
    """


class TorNotFound(TransportConfigError):
    """
    No tor program was found to launch (install it with ``apt-get install
    tor``, give its path, or attach to a running tor with --tor-control).
    """


class TorUnavailable(TransportError):
    """
    The node could not start or reach its tor; the message says why.
    """
