"""
The secure channel against raw TCP and TLS, in one run on loopback.

The script starts a server copy of itself (``--serve``) and drives it from
this process, so each side has its own process (and core).  The server
listens on 127.0.0.1 four times, with the same plain Twisted protocol behind
each port: raw TCP, our Noise channel (:class:`SecureChannelFactory`, IK),
and TLS 1.3 through :mod:`twisted.protocols.tls` and pyOpenSSL, once limited
to ``TLS_CHACHA20_POLY1305_SHA256`` and once to ``TLS_AES_128_GCM_SHA256``
(``Context.set_tls13_ciphersuites``; the negotiated suite is checked).  The
certificate is a fresh self-signed P-256 one.

Measured on a fresh connection each time, from when the application
protocol is connected (after any handshake):

* bulk: the client writes ``--bulk-mib`` MiB in 256 KiB writes as a
  streaming producer; the server counts them and answers ``done``.
* ping-pong: one 64-byte message in flight; the server echoes each message.
* pipeline: 64 messages of 64 bytes in flight, each written on its own; the
  server echoes each message with its own write.
* handshakes: full in-process XX handshakes, ours against ``noiseprotocol``
  (the code of ``benchmarks/noise_handshake.py``).

Every figure is the median of ``--repeat`` runs; the contenders take turns
in each round (in alternating order) so that a change in machine load hits
them all.  ``ratios`` holds the issue's comparisons, each the median of the
per-round ratios; stderr shows them against their targets.

Run ``python benchmarks/channel.py``; progress goes to stderr and the figures
are one JSON object on the last line of output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import stdio
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import react
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from digitalspring.channel import KeyPair, SecureChannelFactory
from digitalspring.identity import Identity

HOST = "127.0.0.1"
MESSAGE = 64
PIPELINE_DEPTH = 64
BULK_WRITE = 256 * 1024
CLIENT = Identity.from_seed(b"benchmark client".ljust(32, b"."))
SERVER = Identity.from_seed(b"benchmark server".ljust(32, b"."))
#: The issue's targets: our figure, theirs, and the least ratio accepted.
RATIOS = {
    "noise/tls_chacha bulk": ("noise_bulk_MBps", "tls_chacha_bulk_MBps", 1.0),
    "noise/tls_aesgcm bulk": ("noise_bulk_MBps", "tls_aesgcm_bulk_MBps", 0.75),
    "noise/tcp bulk": ("noise_bulk_MBps", "tcp_bulk_MBps", 0.40),
    "noise/tcp ping-pong": ("noise_pingpong_per_s", "tcp_pingpong_per_s", 0.7),
    "noise/tcp pipeline": ("noise_pipeline_per_s", "tcp_pipeline_per_s", 1.0),
    "noise/noiseprotocol handshakes": (
        "noise_handshakes_per_s",
        "noiseprotocol_handshakes_per_s",
        1.5,
    ),
}
TLS_SUITES = {
    "tls_chacha": "TLS_CHACHA20_POLY1305_SHA256",
    "tls_aesgcm": "TLS_AES_128_GCM_SHA256",
}


# -- the application protocols: the same under every wrapper -------------------


class Server(Protocol):
    """
    A 9-byte header picks the test: ``S`` and a 64-bit length: read that many
    bytes, then answer ``done``; ``E``: echo every 64-byte message with its
    own write.
    """

    #: Set by makeConnection; a producer-capable transport under every wrapper.
    transport: Any

    def connectionMade(self) -> None:
        self._header = b""
        self._mode = b""
        self._remaining = 0
        self._pending = bytearray()

    def dataReceived(self, data: bytes) -> None:
        if not self._mode:
            self._header += data
            if len(self._header) < 9:
                return
            self._mode = self._header[:1]
            self._remaining = int.from_bytes(self._header[1:9], "big")
            data = self._header[9:]
        if self._mode == b"S":
            self._remaining -= len(data)
            if self._remaining == 0:
                self.transport.write(b"done")
            return
        pending = self._pending
        pending += data
        whole = len(pending) - len(pending) % MESSAGE
        write = self.transport.write
        for start in range(0, whole, MESSAGE):
            write(bytes(pending[start : start + MESSAGE]))
        del pending[:whole]


@implementer(IHandshakeListener)
class Client(Protocol):
    """
    The client of one test; :attr:`result` fires with its figure.

    It starts once the connection is usable: at once, or for TLS (which
    connects its protocol before its handshake) when the handshake is done.
    """

    #: Set by makeConnection; a producer-capable transport under every wrapper.
    transport: Any

    def __init__(self) -> None:
        self.result: Deferred[float] = Deferred()
        self.on_connect: Callable[[Any], None] = lambda transport: None
        self.tls = False

    def connectionMade(self) -> None:
        if not self.tls:
            self.start()

    def handshakeCompleted(self) -> None:
        self.start()

    def start(self) -> None:
        raise NotImplementedError

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.result.called:
            self.result.errback(reason)


class BulkClient(Client):
    """
    Writes ``total`` bytes as fast as the connection takes them; the
    result is MB/s from the first write to the server's ``done``.
    """

    def __init__(self, total: int) -> None:
        super().__init__()
        self._total = total
        self._sent = 0
        self._paused = False
        self._chunk = os.urandom(BULK_WRITE)

    def start(self) -> None:
        self.on_connect(self.transport)
        self._start = time.perf_counter()
        self.transport.write(b"S" + self._total.to_bytes(8, "big"))
        self.transport.registerProducer(self, True)
        self._registered = True
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        write, chunk = self.transport.write, self._chunk
        while not self._paused and self._sent < self._total:
            write(chunk)
            self._sent += len(chunk)
        if self._sent >= self._total and self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    def dataReceived(self, data: bytes) -> None:
        if data == b"done" and not self.result.called:
            self.result.callback(self._total / (time.perf_counter() - self._start) / 1e6)
            self.transport.loseConnection()


class EchoClient(Client):
    """
    Keeps ``depth`` 64-byte messages in flight for ``seconds``; the result
    is messages echoed per second.
    """

    def __init__(self, depth: int, seconds: float) -> None:
        super().__init__()
        self._depth = depth
        self._seconds = seconds
        self._received = 0
        self._echoed = 0
        self._message = os.urandom(MESSAGE)

    def start(self) -> None:
        self.on_connect(self.transport)
        self._start = time.perf_counter()
        self._deadline = self._start + self._seconds
        self.transport.write(b"E" + bytes(8))
        for _ in range(self._depth):
            self.transport.write(self._message)

    def dataReceived(self, data: bytes) -> None:
        if self.result.called:
            return
        self._received += len(data)
        echoed = self._received // MESSAGE
        new, self._echoed = echoed - self._echoed, echoed
        now = time.perf_counter()
        if now >= self._deadline:
            self.result.callback(echoed / (now - self._start))
            self.transport.loseConnection()
            return
        write, message = self.transport.write, self._message
        for _ in range(new):
            write(message)


# -- the wrappers: raw, Noise, TLS -----------------------------------------


def _self_signed() -> tuple[crypto.PKey, crypto.X509]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return crypto.PKey.from_cryptography_key(key), crypto.X509.from_cryptography(cert)


def _tls_context(suite: str) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    context.set_tls13_ciphersuites(suite.encode("ascii"))
    return context


@implementer(IOpenSSLServerConnectionCreator)
class TLSServer:
    def __init__(self, suite: str, key: crypto.PKey, cert: crypto.X509) -> None:
        self._context = _tls_context(suite)
        self._context.use_privatekey(key)
        self._context.use_certificate(cert)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._context, None)


@implementer(IOpenSSLClientConnectionCreator)
class TLSClient:
    """
    Trusts exactly the server's certificate (no name check: loopback).
    """

    def __init__(self, suite: str, cert_pem: bytes) -> None:
        self._context = _tls_context(suite)
        self._context.get_cert_store().add_cert(  # type: ignore[union-attr]
            crypto.load_certificate(crypto.FILETYPE_PEM, cert_pem)
        )
        self._context.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._context, None)


class _One(Factory):
    """
    A factory for exactly one given protocol.
    """

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        self._protocol.factory = self
        return self._protocol


def wrap(
    kind: str, factory: Factory[Any], server: bool, reactor: Any, tls: Any
) -> IProtocolFactory:
    """
    ``factory`` behind ``kind``'s wrapper.
    """
    if kind == "tcp":
        return factory
    if kind == "noise":
        if server:
            return SecureChannelFactory(SERVER, factory, reactor, initiator=False)
        return SecureChannelFactory(
            CLIENT, factory, reactor, initiator=True, expected_peer=SERVER.peer_id
        )
    return TLSMemoryBIOFactory(tls[kind], not server, factory)


# -- the server process -------------------------------------------------------


class _StopOnEOF(Protocol):
    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._reactor.stop()


def serve(reactor: Any) -> None:
    """
    Listen for every kind, tell the ports (and certificate) on stdout, and
    run until stdin closes.
    """
    key, cert = _self_signed()
    tls = {kind: TLSServer(suite, key, cert) for kind, suite in TLS_SUITES.items()}
    factory = Factory.forProtocol(Server)
    factory.noisy = False
    ports = {
        kind: reactor.listenTCP(0, wrap(kind, factory, True, reactor, tls), interface=HOST)
        .getHost()
        .port
        for kind in ("tcp", "noise", *TLS_SUITES)
    }
    pem = crypto.dump_certificate(crypto.FILETYPE_PEM, cert).decode("ascii")
    sys.stdout.write(json.dumps({"ports": ports, "cert": pem}) + "\n")
    sys.stdout.flush()
    stdio.StandardIO(  # type: ignore[no-untyped-call,call-arg]
        _StopOnEOF(reactor), stdout=os.open(os.devnull, os.O_WRONLY)
    )
    reactor.run()


# -- the client process -------------------------------------------------------


async def measure(reactor: Any, kind: str, port: int, client: Client, tls: Any) -> float:
    if kind in TLS_SUITES:

        def check_suite(transport: Any) -> None:
            negotiated = transport.getHandle().get_cipher_name()
            if negotiated != TLS_SUITES[kind]:
                raise RuntimeError(f"{kind} negotiated {negotiated}")

        client.on_connect = check_suite
        client.tls = True
    endpoint = TCP4ClientEndpoint(reactor, HOST, port)
    await endpoint.connect(wrap(kind, _One(client), False, reactor, tls))
    figure = await client.result
    # Let the connection close before the next one starts.
    done: Deferred[None] = Deferred()
    reactor.callLater(0.05, done.callback, None)
    await done
    return figure


def handshake_rates(repeat: int, seconds: float) -> dict[str, list[float]]:
    from noise_handshake import ours, rate, theirs

    initiator_key, responder_key = os.urandom(32), os.urandom(32)
    contenders = {
        # The channel hands the same static KeyPair to every handshake.
        "noise_handshakes_per_s": ours(
            KeyPair.from_private(initiator_key), KeyPair.from_private(responder_key)
        ),
        "noiseprotocol_handshakes_per_s": theirs(initiator_key, responder_key),
    }
    for handshake in contenders.values():
        rate(handshake, 0.1)
    rates: dict[str, list[float]] = {field: [] for field in contenders}
    for round_number in range(repeat):
        for field, handshake in contenders.items():
            rates[field].append(rate(handshake, seconds))
            print(f"round {round_number + 1}: {field} = {rates[field][-1]:,.0f}", file=sys.stderr)
    return rates


async def run(reactor: Any, options: argparse.Namespace) -> None:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        hello = json.loads(server.stdout.readline())
        ports, cert_pem = hello["ports"], hello["cert"].encode("ascii")
        tls = {kind: TLSClient(suite, cert_pem) for kind, suite in TLS_SUITES.items()}
        total = options.bulk_mib * 1024 * 1024
        tests: dict[str, tuple[str, Callable[[], Client]]] = {}
        for kind in ("noise", "tcp", *TLS_SUITES):
            tests[f"{kind}_bulk_MBps"] = (kind, lambda: BulkClient(total))
        for kind in ("noise", "tcp", "tls_chacha"):
            name = "tls" if kind == "tls_chacha" else kind
            tests[f"{name}_pingpong_per_s"] = (kind, lambda: EchoClient(1, options.seconds))
        for kind in ("noise", "tcp"):
            tests[f"{kind}_pipeline_per_s"] = (
                kind,
                lambda: EchoClient(PIPELINE_DEPTH, options.seconds),
            )
        figures: dict[str, list[float]] = {field: [] for field in tests}
        # Warm up every path once.
        for kind, make in tests.values():
            client = make()
            if isinstance(client, BulkClient):
                client = BulkClient(total // 8)
            await measure(reactor, kind, ports[kind], client, tls)
        for round_number in range(options.repeat):
            # Alternate the order so that neither side of a comparison
            # always runs first.
            order = list(tests.items())
            for field, (kind, make) in order if round_number % 2 == 0 else order[::-1]:
                figures[field].append(await measure(reactor, kind, ports[kind], make(), tls))
                print(
                    f"round {round_number + 1}: {field} = {figures[field][-1]:,.0f}",
                    file=sys.stderr,
                )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    figures.update(handshake_rates(options.repeat, options.seconds))
    result: dict[str, Any] = {
        field: round(statistics.median(values), 1) for field, values in figures.items()
    }
    # Each ratio is the median of the ratios within a round, whose two
    # figures were measured seconds apart: steadier than a ratio of medians
    # when the machine's load changes.
    ratios = {}
    for name, (ours, theirs, target) in RATIOS.items():
        ratios[name] = round(
            statistics.median(a / b for a, b in zip(figures[ours], figures[theirs], strict=True)),
            2,
        )
        print(f"{name}: {ratios[name]:.2f} (target {target})", file=sys.stderr)
    result["ratios"] = ratios
    result["tls_suites"] = TLS_SUITES
    print(json.dumps(result))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=7, help="rounds; figures are medians")
    parser.add_argument("--seconds", type=float, default=0.7, help="per echo/handshake run")
    parser.add_argument("--bulk-mib", type=int, default=512, help="MiB per bulk run")
    options = parser.parse_args(argv)
    if options.serve:
        from twisted.internet import reactor

        serve(reactor)
        return

    def start(reactor: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(run(reactor, options))

    react(start)


if __name__ == "__main__":
    main(sys.argv[1:])
