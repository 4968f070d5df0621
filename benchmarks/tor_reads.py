"""
How much a tor holds for a stream whose far end stopped reading: tor as it
comes, against tor with the socket buffers the node launches it with.

tor (0.4.9.11 here) reads a SOCKS connection whenever the stream's circuit
may send again (each circuit-level SENDME), and each read takes all the
socket holds, whether or not the circuit can carry it.  Its input buffer
for that connection grows by what the kernel buffered between two reads,
again and again until the far end's XOFF arrives, and on loopback, where
the kernel's buffers grow to megabytes, it can swallow all a writer has.
``ConstrainedSockets`` caps every socket's kernel buffers, and so each
read; the node launches its tor with :data:`BOUNDED_READS_TORRC`.

The script starts the private Tor network of ``digitalspring.testing`` in a
network namespace that has only ``lo``, and a second client tor that dials.
A raw onion service on the first client tor forwards to a local listener
that accepts and never reads.  For each configuration of both client tors
(set with ``SETCONF``, so it holds for the sockets opened after), each try
opens a fresh stream through the dialling tor's SOCKS port and writes as
fast as the socket takes it, until nothing more goes in for ``--stall``
seconds or ``--cap`` MiB went in.  The constrained configurations run
first: memory a tor took and freed stays in its resident size.

It must run as root.  Run ``python benchmarks/tor_reads.py``; progress goes
to stderr and the figures are one JSON object on the last line: per
configuration ``tries``, ``runaways`` (tries that reached the cap),
``median_written_mib``, ``max_written_mib`` and ``dialling_tor_rss_mb``
(its resident size after the last try).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from _namespace import in_loopback_namespace
from twisted.internet.defer import Deferred
from twisted.internet.task import react

from digitalspring.testing import NetworkNamespace, PrivateTorNetwork
from digitalspring.testing._tornet import TorClient
from digitalspring.transport._torcontrol import BOUNDED_READS_TORRC

T = TypeVar("T")

#: Each configuration: a name, and the options set on both client tors.
CONFIGURATIONS = [
    ("launched", list(BOUNDED_READS_TORRC)),
    ("constrained_128k", ["ConstrainedSockets 1", "ConstrainedSockSize 131072"]),
    ("tor_defaults", ["ConstrainedSockets 0"]),
]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def in_thread(reactor: Any, work: Callable[[], T]) -> Deferred[T]:
    """
    Run blocking ``work`` in a new thread (which starts in this thread's
    network namespace); a Deferred of its result.
    """
    done: Deferred[T] = Deferred()

    def run() -> None:
        try:
            result = work()
        except BaseException as e:
            reactor.callFromThread(done.errback, e)
        else:
            reactor.callFromThread(done.callback, result)

    threading.Thread(target=run, daemon=True).start()
    return done


class Control:
    """
    A blocking control connection to one tor, cookie-authenticated.
    """

    def __init__(self, tor: TorClient) -> None:
        self.socket = socket.create_connection(("127.0.0.1", tor.control_port))
        self.file = self.socket.makefile("rwb")
        with open(os.path.join(tor.data_dir, "control_auth_cookie"), "rb") as f:
            self.command(f"AUTHENTICATE {f.read().hex()}")

    def send(self, line: str) -> None:
        self.file.write(line.encode("ascii") + b"\r\n")
        self.file.flush()

    def read_line(self) -> str:
        line = self.file.readline()
        if not line:
            raise ConnectionError("tor closed its control connection")
        return line.decode("ascii").rstrip("\r\n")

    def command(self, line: str) -> list[str]:
        self.send(line)
        reply = []
        while True:
            got = self.read_line()
            if got.startswith("650"):
                continue
            reply.append(got)
            if got[3:4] == " ":
                if not got.startswith("250"):
                    raise RuntimeError(f"{line!r}: {got}")
                return reply

    def close(self) -> None:
        self.socket.close()


def publish_sink(service: TorClient) -> tuple[str, socket.socket, list[socket.socket], Control]:
    """
    An onion service on ``service`` forwarding to a listener that accepts
    and never reads; once tor uploaded its descriptor.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    control = Control(service)
    control.command("SETEVENTS HS_DESC")
    port = listener.getsockname()[1]
    reply = control.command(f"ADD_ONION NEW:ED25519-V3 Flags=DiscardPK Port=80,127.0.0.1:{port}")
    service_id = next(line.split("=", 1)[1] for line in reply if "ServiceID=" in line)
    deadline = time.monotonic() + 120
    while not control.read_line().startswith(f"650 HS_DESC UPLOADED {service_id}"):
        if time.monotonic() > deadline:
            raise RuntimeError("the onion service's descriptor was not uploaded in 120 s")
    return service_id + ".onion", listener, accepted, control


def socks_connect(port: int, host: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        raise ConnectionError("SOCKS: no method accepted")
    name = host.encode("ascii")
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", 80))
    reply = b""
    while len(reply) < 10:
        chunk = s.recv(10 - len(reply))
        if not chunk:
            raise ConnectionError("SOCKS: closed before its reply")
        reply += chunk
    if reply[1] != 0:
        raise ConnectionError(f"SOCKS reply {reply[1]}")
    return s


def write_until_stalled(s: socket.socket, cap: int, stall: float) -> int:
    s.setblocking(False)
    chunk = os.urandom(65536)
    written = 0
    last = time.monotonic()
    while written < cap:
        _, writable, _ = select.select([], [s], [], 0.5)
        if writable:
            try:
                written += s.send(chunk)
            except BlockingIOError:
                continue
            last = time.monotonic()
        elif time.monotonic() - last > stall:
            break
    return written


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for PID {pid}")


def measure(args: argparse.Namespace, service: TorClient, dialler: TorClient) -> dict[str, Any]:
    address, listener, accepted, service_control = publish_sink(service)
    progress(f"  onion service {address} published")
    controls = [service_control, Control(dialler)]
    cap = args.cap * 2**20
    figures: dict[str, Any] = {}
    try:
        for name, options in CONFIGURATIONS:
            for control in controls:
                control.command("SETCONF " + " ".join(o.replace(" ", "=", 1) for o in options))
            written = []
            for attempt in range(args.tries):
                stream = socks_connect(dialler.socks_port, address)
                try:
                    written.append(write_until_stalled(stream, cap, args.stall))
                finally:
                    stream.close()
                    for connection in accepted:
                        connection.close()
                    accepted.clear()
                progress(f"  {name} try {attempt + 1}: {written[-1] / 2**20:.1f} MiB went in")
            figures[name] = {
                "tries": len(written),
                "runaways": sum(1 for w in written if w >= cap),
                "median_written_mib": round(statistics.median(written) / 2**20, 1),
                "max_written_mib": round(max(written) / 2**20, 1),
                "dialling_tor_rss_mb": round(resident_mb(dialler.pid), 1),
            }
            progress(f"{name}: {figures[name]}")
    finally:
        for control in controls:
            control.close()
        listener.close()
    return figures


async def run(reactor: Any, args: argparse.Namespace, namespace: NetworkNamespace) -> None:
    base = tempfile.mkdtemp(prefix="digitalspring-torreads-")
    network = PrivateTorNetwork(reactor, base, namespace=namespace)
    try:
        progress("starting the private Tor network ...")
        await network.start()
        dialler = await network.add_client("dialler")
        figures = await in_thread(reactor, lambda: measure(args, network.client, dialler))
        figures["cap_mib"] = args.cap
        figures["stall_s"] = args.stall
        print(json.dumps(figures), flush=True)
    finally:
        await network.stop()
        progress("private Tor network stopped")


def main(reactor: Any) -> Deferred[None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20, help="streams per configuration")
    parser.add_argument("--cap", type=int, default=256, help="MiB a try writes at most")
    parser.add_argument("--stall", type=float, default=10.0, help="s without progress")
    args = parser.parse_args()
    return in_loopback_namespace("tor_reads.py", lambda namespace: run(reactor, args, namespace))


if __name__ == "__main__":
    react(main)
