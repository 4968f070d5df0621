"""
How many hosts the memory network carries in one process.

Every host listens; every host then sends 1 KiB to a random other host over
a fresh connection and closes it.  The network has latency (5 to 105 ms
between pairs), per-host upload and download limits and 1% loss, on the
simulated clock.  Each receiver checks the message byte for byte against
what that sender must have sent it, so only correct deliveries count.

Run ``python benchmarks/memory_network.py [--hosts N] [--seed S]``; the
figures are one JSON object on the last line of output.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import resource
import sys
import time
import zlib
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from digitalspring.transport import MemoryNetwork, MemoryTransport, SimulatedClock

MESSAGE_SIZE = 1024
PORT = 7000


def message(seed: int, sender: str, receiver: str) -> bytes:
    """
    The 1 KiB ``sender`` sends ``receiver``: its name on a line, then bytes
    that depend on the seed and both names.
    """
    header = sender.encode("ascii") + b"\n"
    body = hashlib.shake_256(f"{seed}/{sender}/{receiver}".encode()).digest(
        MESSAGE_SIZE - len(header)
    )
    return header + body


class Tally:
    """
    What the receivers saw.
    """

    def __init__(self) -> None:
        self.delivered = 0
        self.corrupt = 0
        self.failed_connects = 0


class Receiver(Protocol):
    """
    Collects one message and checks it when the sender closes.
    """

    def __init__(self, seed: int, name: str, tally: Tally) -> None:
        self.seed = seed
        self.name = name
        self.tally = tally
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        data = b"".join(self.chunks)
        sender = data.split(b"\n", 1)[0].decode("ascii", "replace")
        peer = self.transport.getPeer().host  # type: ignore[union-attr]
        if sender == peer and data == message(self.seed, sender, self.name):
            self.tally.delivered += 1
        else:
            self.tally.corrupt += 1


class Sender(Protocol):
    """
    Writes its message and closes.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data

    def connectionMade(self) -> None:
        self.transport.write(self.data)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


def coordinates(name: str) -> float:
    """
    A host's place on a ring, which sets its latency to others.
    """
    return (zlib.crc32(name.encode()) & 0xFFFF) / 0x10000


def run(hosts: int, seed: int) -> dict[str, Any]:
    """
    Run the benchmark.

    :returns: its figures.
    """
    started = time.perf_counter()
    clock = SimulatedClock()
    names = [f"h{i}" for i in range(hosts)]
    ring = {name: coordinates(name) for name in names}

    def latency(source: str, target: str) -> float:
        distance = abs(ring[source] - ring[target])
        return 0.005 + 0.2 * min(distance, 1 - distance)

    network = MemoryNetwork(clock, latency=latency, loss=0.01, seed=seed)
    tally = Tally()
    transports: dict[str, MemoryTransport] = {}
    for name in names:
        network.add_host(name, upload_bps=10_000_000, download_bps=50_000_000)
        transport = transports[name] = network.transport(name)

        def build_receiver(name: str = name) -> Receiver:
            return Receiver(seed, name, tally)

        factory = Factory.forProtocol(build_receiver)
        factory.noisy = False
        transport.listen(str(PORT), factory)

    chooser = random.Random(seed)

    def failed(reason: Failure) -> None:
        tally.failed_connects += 1

    def send(sender: str, receiver: str) -> None:
        data = message(seed, sender, receiver)
        d = transports[sender].connect(
            f"{receiver}:{PORT}", Factory.forProtocol(lambda: Sender(data))
        )
        d.addErrback(failed)

    for index, sender in enumerate(names):
        other = chooser.randrange(hosts - 1)
        receiver = names[other + 1 if other >= index else other]
        # Everyone starts within the first second.
        clock.callLater(chooser.random(), send, sender, receiver)

    set_up = time.perf_counter() - started
    # The hosts live for the whole run: keep the cyclic collector from
    # walking them again and again, as a long simulation should.
    gc.freeze()
    simulated = clock.run_until_idle()
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "hosts": hosts,
        "messages_sent": hosts,
        "messages_delivered": tally.delivered,
        "messages_corrupt": tally.corrupt,
        "failed_connects": tally.failed_connects,
        "simulated_s": round(simulated, 3),
        "clock_events": clock.calls_run,
        "setup_s": round(set_up, 3),
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(peak, 1),
        "seed": seed,
        "python": sys.version.split()[0],
        "ok": tally.delivered == hosts and tally.corrupt == 0,
    }


def main(argv: list[str] | None = None) -> int:
    """
    Parse the options, run, print the figures.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000, help="how many hosts")
    parser.add_argument("--seed", type=int, default=1, help="seed for choices and loss")
    options = parser.parse_args(argv)
    if options.hosts < 2:
        parser.error("need at least two hosts")
    figures = run(options.hosts, options.seed)
    print(json.dumps(figures, sort_keys=True))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
