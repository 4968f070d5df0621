# -*- test-case-name: tests.test_tornet -*-
"""
An echo service and the client side that measures it: round-trip time and
throughput over any stream endpoint (here, an onion service reached through
a client tor).  Kept apart from the tests so a benchmark can reuse it.
"""

from __future__ import annotations

import hashlib
import os
import statistics
from typing import cast

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from digitalspring.errors import DigitalSpringError
from digitalspring.testing._torcontrol import Reactor

log = Logger()


class EchoFailed(DigitalSpringError):
    """
    The echo connection closed before every byte came back.
    """


class EchoServer(Protocol):
    """
    Sends back every byte it receives.
    """

    def dataReceived(self, data: bytes) -> None:
        """
        Echo ``data``.
        """
        assert self.transport is not None
        self.transport.write(data)


def echo_factory() -> Factory:
    """
    A factory of :class:`EchoServer` protocols.
    """
    return Factory.forProtocol(EchoServer)


class EchoClient(Protocol):
    """
    Sends data to an echo server and waits for all of it to come back, one
    exchange at a time.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._expected = 0
        self._waiting: Deferred[bytes] | None = None
        self.closed: Deferred[None] = Deferred()

    def exchange(self, data: bytes) -> Deferred[bytes]:
        """
        Send ``data``.

        :returns: a Deferred that fires with the ``len(data)`` bytes echoed
            back, or fails with :class:`EchoFailed` if the connection closes
            first.
        """
        assert self._waiting is None, "one exchange at a time"
        assert self.transport is not None
        self._expected = len(data)
        self._waiting = Deferred()
        waiting = self._waiting
        self.transport.write(data)
        self._deliver()
        return waiting

    def dataReceived(self, data: bytes) -> None:
        """
        Collect echoed bytes.
        """
        self._buffer += data
        self._deliver()

    def _deliver(self) -> None:
        if self._waiting is not None and len(self._buffer) >= self._expected:
            answer = bytes(self._buffer[: self._expected])
            del self._buffer[: self._expected]
            waiting, self._waiting = self._waiting, None
            waiting.callback(answer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fail a pending exchange.
        """
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.errback(EchoFailed(f"connection closed: {reason.getErrorMessage()}"))
        self.closed.callback(None)


@frozen
class EchoMeasurements:
    """
    What :func:`measure_echo` saw.

    :ivar connect_seconds: until the connection was up (through tor: SOCKS,
        descriptor fetch, rendezvous).
    :ivar round_trips: each small exchange's round trip, in seconds.
    :ivar transfer_bytes: the size of the bulk exchange.
    :ivar transfer_seconds: how long it took to send and get it all back.
    :ivar intact: whether every byte came back unchanged (SHA-256).
    """

    connect_seconds: float
    round_trips: tuple[float, ...]
    transfer_bytes: int
    transfer_seconds: float
    intact: bool

    @property
    def median_round_trip(self) -> float:
        """
        The median round trip, in seconds.
        """
        return statistics.median(self.round_trips)

    @property
    def megabytes_per_second(self) -> float:
        """
        Bulk throughput in MB/s (10**6 bytes), each byte counted once though
        it travels both ways.
        """
        return self.transfer_bytes / self.transfer_seconds / 1e6


async def measure_echo(
    reactor: Reactor,
    endpoint: IStreamClientEndpoint,
    round_trips: int = 20,
    transfer_bytes: int = 1_000_000,
    connect_timeout: float = 30.0,
) -> EchoMeasurements:
    """
    Connect to an echo server through ``endpoint``, time ``round_trips``
    32-byte exchanges, then one of ``transfer_bytes`` random bytes whose
    echo is checked with SHA-256.  The connection is closed at the end.
    Failed connection attempts are retried for ``connect_timeout`` seconds.

    :raises EchoFailed: if the connection closes early.
    """
    began = reactor.seconds()
    while True:
        try:
            client = cast(EchoClient, await endpoint.connect(Factory.forProtocol(EchoClient)))
            break
        except Exception as e:
            # An onion service's descriptor may not have reached every HSDir
            # yet; tor reports that as a SOCKS error.
            if reactor.seconds() - began > connect_timeout:
                raise
            log.info("echo connection failed ({error}); retrying", error=str(e))
            await deferLater(reactor, 0.5, lambda: None)
    connect_seconds = reactor.seconds() - began
    try:
        times = []
        for i in range(round_trips):
            ping = i.to_bytes(4, "big") * 8
            sent = reactor.seconds()
            if await client.exchange(ping) != ping:
                raise EchoFailed(f"round trip {i} came back changed")
            times.append(reactor.seconds() - sent)
        payload = os.urandom(transfer_bytes)
        sent = reactor.seconds()
        echoed = await client.exchange(payload)
        transfer_seconds = reactor.seconds() - sent
        intact = hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    finally:
        assert client.transport is not None
        client.transport.loseConnection()
        await client.closed
    return EchoMeasurements(
        connect_seconds, tuple(times), transfer_bytes, transfer_seconds, intact
    )
