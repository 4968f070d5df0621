"""
The ``unix`` transport passes Digital Spring's transport conformance tests
(``trial dspring_unix``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SkipTest, TestCase

from digitalspring.testing import TransportConformanceMixin
from digitalspring.transport import InvalidAddress, ITransport

from . import UnixTransport


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class UnixConformanceTests(TransportConformanceMixin, TestCase):
    """
    ``unix`` sockets in a temporary directory, on the real reactor.
    """

    timeout = 60

    def setUp(self) -> None:
        # Short, under /tmp: a socket path has at most 107 bytes.
        self.sockets = tempfile.mkdtemp(prefix="dspring-unix-")
        self.addCleanup(shutil.rmtree, self.sockets)
        self.numbers = itertools.count()

    @property
    def listen_description(self) -> str:  # type: ignore[override]
        """
        A new socket path each time: every listener needs its own.
        """
        return os.path.join(self.sockets, f"{next(self.numbers)}.sock")

    @property
    def clock(self) -> Any:
        return _reactor()

    def make_transport(self) -> ITransport:
        return UnixTransport(_reactor())

    def run_scenario(self, scenario: Deferred[None]) -> Deferred[None]:
        return scenario

    def test_abort(self) -> None:
        """
        Unix sockets carry no reset: the peer of a socket closed at once
        sees the end of its stream, as for a clean close.  The mixin's test
        says so; this transport cannot do better, and tells it here.
        """
        raise SkipTest("unix sockets have no reset: an aborted connection looks closed")

    async def test_path_too_long(self) -> None:
        """
        A path longer than a socket address holds is refused as an invalid
        address, not cut short.
        """
        path = os.path.join(self.sockets, "x" * 200)
        with self.assertRaises(InvalidAddress):
            await UnixTransport(_reactor()).listen(path, Factory.forProtocol(Protocol))
