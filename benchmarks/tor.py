"""
Our Noise channel over an onion service against a raw stream over the same
onion service, in one run on a private Tor network on loopback.

The script starts the private Tor network of ``digitalspring.testing``
(three authorities, four relays, a client tor) inside a network namespace
that has nothing but ``lo``, adds a second client tor for the server, and
attaches a ``tor`` transport to each.  The server publishes one onion
service whose connections are either echoed as they are (raw) or through
:class:`SecureChannelFactory` (Noise IK, the echo inside the channel); the
client dials it through the other tor.  Both kinds share the one service so
that tor reuses its rendezvous circuit for both: the same six hops, so the
comparison is of the channel and not of two random circuits.

Each round measures each kind (in alternating order) on fresh streams:
``--round-trips`` 32-byte echoes (median round trip) and one echo of 100 kB
checked with SHA-256; then ``--mb`` MB sent one way to a sink that answers
once it has them all (MB/s, as ``benchmarks/channel.py`` measures bulk: an
echo would count the channel's frame-by-frame store and forward twice).
Figures are medians over ``--rounds`` rounds; ``noise_vs_raw`` is the
median of the per-round throughput ratios.

It must run as root (to make the namespace that keeps every packet on this
machine).  Run ``python benchmarks/tor.py``; progress goes to stderr and the
figures are one JSON object on the last line of output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from _namespace import in_loopback_namespace
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import react
from zope.interface import implementer

from digitalspring.channel import SecureChannelFactory, SecureChannelProtocol
from digitalspring.identity import Identity
from digitalspring.testing import (
    EchoMeasurements,
    NetworkNamespace,
    PrivateTorNetwork,
    echo_factory,
    measure_echo,
)
from digitalspring.transport import TorTransport, TorTransportPlugin, TransportContext

CLIENT = Identity.from_seed(b"tor benchmark client".ljust(32, b"."))
SERVER = Identity.from_seed(b"tor benchmark server".ljust(32, b"."))


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Sink(Protocol):
    """
    Reads an 8-byte length, then that many bytes, then answers ``done``.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._expected: int | None = None
        self._received = 0

    def dataReceived(self, data: bytes) -> None:
        if self._expected is None:
            self._buffer += data
            if len(self._buffer) < 8:
                return
            self._expected = int.from_bytes(self._buffer[:8], "big")
            data, self._buffer = self._buffer[8:], b""
        self._received += len(data)
        if self._received >= self._expected:
            assert self.transport is not None
            self.transport.write(b"done")


class Sender(Protocol):
    """
    Sends a length and that many bytes; :attr:`done` fires on ``done``.
    """

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()

    def send(self, payload: bytes) -> Deferred[None]:
        assert self.transport is not None
        self.transport.write(len(payload).to_bytes(8, "big") + payload)
        return self.done

    def dataReceived(self, data: bytes) -> None:
        if not self.done.called:
            self.done.callback(None)


class EitherFactory(Factory):
    """
    Builds an echo or a sink, raw or inside a Noise channel, as ``mode``
    says when a connection arrives (the benchmark sets it before each dial).
    """

    def __init__(self, reactor: Any) -> None:
        self.mode = ("echo", "raw")
        sink = Factory.forProtocol(Sink)
        self._factories: dict[tuple[str, str], IProtocolFactory] = {
            ("echo", "raw"): echo_factory(),
            ("sink", "raw"): sink,
            ("echo", "noise"): SecureChannelFactory(
                SERVER, echo_factory(), reactor, initiator=False
            ),
            ("sink", "noise"): SecureChannelFactory(SERVER, sink, reactor, initiator=False),
        }

    def buildProtocol(self, addr: Any) -> Any:
        return self._factories[self.mode].buildProtocol(addr)


async def send_bulk(reactor: Any, dial: Dial, size: int) -> float:
    """
    Send ``size`` random bytes one way on a fresh stream.

    :returns: MB/s, from the first byte written to the sink's answer.
    """
    sender = await dial.connect(Factory.forProtocol(Sender))
    assert isinstance(sender, Sender) and sender.transport is not None
    payload = os.urandom(size)
    began = reactor.seconds()
    await sender.send(payload)
    seconds = reactor.seconds() - began
    sender.transport.loseConnection()
    return float(size / seconds / 1e6)


@implementer(IStreamClientEndpoint)
class Dial:
    """
    A client endpoint: a transport dialling one address, raw or through the
    Noise channel (then connected once the handshake is done).
    """

    def __init__(self, reactor: Any, transport: TorTransport, address: str, noise: bool):
        self._reactor = reactor
        self._transport = transport
        self._address = address
        self._noise = noise

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        if not self._noise:
            return self._transport.connect(self._address, factory)

        async def secured() -> IProtocol:
            wrapped = SecureChannelFactory(
                CLIENT, factory, self._reactor, initiator=True, expected_peer=SERVER.peer_id
            )
            channel = await self._transport.connect(self._address, wrapped)
            assert isinstance(channel, SecureChannelProtocol)
            return await channel.when_secured()

        return Deferred.fromCoroutine(secured())


def attached(reactor: Any, control_port: int) -> TorTransport:
    context = TransportContext(reactor, None, {"control": f"tcp:127.0.0.1:{control_port}"})
    return TorTransportPlugin().make_transport(context)


async def run(reactor: Any, args: argparse.Namespace, namespace: NetworkNamespace) -> None:
    base = tempfile.mkdtemp(prefix="digitalspring-torbench-")
    network = PrivateTorNetwork(reactor, base, namespace=namespace)
    transports: list[TorTransport] = []
    try:
        progress("starting the private Tor network ...")
        await network.start()
        timings = network.timings
        progress(f"  up in {timings.total:.1f}s (client bootstrap {timings.bootstrap:.1f}s)")
        server_tor = await network.add_client("benchserver")
        server = attached(reactor, server_tor.control_port)
        client = attached(reactor, network.client.control_port)
        transports += [server, client]
        factory = EitherFactory(reactor)
        began = time.monotonic()
        await server.listen("80", factory)
        publish_s = time.monotonic() - began
        [address] = server.published_addresses()
        progress(f"  onion service {address} published in {publish_s:.2f}s")

        # A first stream builds the rendezvous circuit both kinds then share.
        warm = await measure_echo(reactor, Dial(reactor, client, address, False), 2, 10_000)
        progress(f"  first connection in {warm.connect_seconds:.2f}s")

        results: dict[str, list[EchoMeasurements]] = {"raw": [], "noise": []}
        bulk: dict[str, list[float]] = {"raw": [], "noise": []}
        ratios = []
        size = int(args.mb * 1_000_000)
        for round_ in range(args.rounds):
            order = ["raw", "noise"] if round_ % 2 == 0 else ["noise", "raw"]
            for kind in order:
                dial = Dial(reactor, client, address, kind == "noise")
                factory.mode = ("echo", kind)
                measured = await measure_echo(reactor, dial, args.round_trips, 100_000)
                if not measured.intact:
                    raise SystemExit(f"{kind}: the echo came back changed")
                results[kind].append(measured)
                factory.mode = ("sink", kind)
                bulk[kind].append(await send_bulk(reactor, dial, size))
                progress(
                    f"  round {round_ + 1} {kind:5}: {bulk[kind][-1]:.2f} MB/s, "
                    f"rtt {measured.median_round_trip * 1000:.1f} ms"
                )
            ratios.append(bulk["noise"][-1] / bulk["raw"][-1])

        def median(kind: str, figure: str) -> float:
            return float(statistics.median(getattr(m, figure) for m in results[kind]))

        figures = {
            "noise_MBps": round(statistics.median(bulk["noise"]), 3),
            "raw_MBps": round(statistics.median(bulk["raw"]), 3),
            "noise_rtt_ms": round(median("noise", "median_round_trip") * 1000, 2),
            "raw_rtt_ms": round(median("raw", "median_round_trip") * 1000, 2),
            "bootstrap_s": round(timings.total, 2),
            "publish_s": round(publish_s, 2),
            "noise_vs_raw": round(statistics.median(ratios), 3),
            "client_bootstrap_s": round(timings.bootstrap, 2),
            "noise_connect_s": round(median("noise", "connect_seconds"), 3),
            "raw_connect_s": round(median("raw", "connect_seconds"), 3),
            "mb_per_transfer": args.mb,
            "rounds": args.rounds,
        }
        target = 0.8
        verdict = "meets" if figures["noise_vs_raw"] >= target else "MISSES"
        progress(f"noise/raw throughput {figures['noise_vs_raw']:.2f}: {verdict} the "
                 f"target of {target}")
        print(json.dumps(figures), flush=True)
    finally:
        for transport in transports:
            await transport.close()
        await network.stop()
        progress("private Tor network stopped")


def main(reactor: Any) -> Deferred[None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=float, default=4.0, help="MB per bulk transfer")
    parser.add_argument("--round-trips", type=int, default=20)
    args = parser.parse_args()
    return in_loopback_namespace("tor.py", lambda namespace: run(reactor, args, namespace))


if __name__ == "__main__":
    react(main)
