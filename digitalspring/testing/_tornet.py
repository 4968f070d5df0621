# -*- test-case-name: tests.test_tornet -*-
"""
A private Tor network on 127.0.0.1 for tests: three directory authorities,
a few relays, and any number of client (or onion-service) tors that tests
and the Tor transport attach to through their control and SOCKS ports.

See ``docs/tor-test-network.rst`` for how it works and why it is configured
the way it is.  Its parts: ``_tornamespace`` (the loopback-only network
namespace), ``_torprocess`` (running tor), ``_torkeys`` (the cached keys),
``_torcontrol`` (the txtorcon calls), ``_torfixture`` (one network per test
run) and ``_torecho`` (echo measurements).
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
from collections.abc import Sequence
from typing import Any, cast

from attrs import define
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from digitalspring.testing._torcontrol import (
    Reactor,
    bootstrap_progress,
    close_control,
    connect_control,
    loopback_endpoint,
)
from digitalspring.testing._torkeys import DEFAULT_RELAYS, KeyTemplate, load_or_create_template
from digitalspring.testing._tornamespace import NetworkNamespace, inside
from digitalspring.testing._torprocess import (
    TorNetworkError,
    TorProcess,
    find_tor_binaries,
)
from digitalspring.transport._torcontrol import BOUNDED_READS_TORRC

# -- Configuration -----------------------------------------------------------


def _free_ports(count: int, namespace: NetworkNamespace | None) -> list[int]:
    """
    ``count`` distinct TCP ports that are free on 127.0.0.1 (in
    ``namespace``, where nothing else runs, so they stay free).
    """
    sockets = []
    try:
        with inside(namespace):
            for _ in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# A fixed circuit build timeout instead of a learned one.  On an idle
# loopback every circuit builds in about 55 ms, so tor learns a timeout of
# 75-85 ms (and keeps it in its state file); once the machine is loaded,
# builds take longer than that, so tor abandons most introduction,
# rendezvous and descriptor circuits and builds them again until it has
# seen enough timeouts to reset itself, and a connect or a publish that
# needs them waits out its own timeout.  Ten seconds is tor's smallest
# recommended fixed timeout: many times a build on a loaded machine, and a
# circuit that is really lost still costs only a sixth of a connect's 60 s.
CIRCUIT_BUILD_TIMEOUT = ("LearnCircuitBuildTimeout 0", "CircuitBuildTimeout 10")


def _common_torrc(
    nickname: str, data_dir: str, control_port: int, dir_authorities: Sequence[str]
) -> list[str]:
    return [
        "TestingTorNetwork 1",
        f"DataDirectory {data_dir}",
        f"Nickname {nickname}",
        f"ControlPort 127.0.0.1:{control_port}",
        "CookieAuthentication 1",
        "RunAsDaemon 0",
        "Sandbox 0",
        "ShutdownWaitLength 0",
        "ClientUseIPv6 0",
        "AddressDisableIPv6 1",
        "PathsNeededToBuildCircuits 0.67",
        *CIRCUIT_BUILD_TIMEOUT,
        "TestingDirAuthVoteGuard *",
        "TestingDirAuthVoteExit *",
        "TestingDirAuthVoteHSDir *",
        "TestingMinExitFlagThreshold 0",
        "V3AuthNIntervalsValid 2",
        'GeoIPFile ""',
        'GeoIPv6File ""',
        # Safety net: tor exits by itself (within ~15 s) if we die.
        f"__OwningControllerProcess {os.getpid()}",
        "Log notice stdout",
        *dir_authorities,
    ]


def _relay_torrc(or_port: int, dir_port: int) -> list[str]:
    return [
        "SocksPort 0",
        "Address 127.0.0.1",
        f"ORPort 127.0.0.1:{or_port}",
        f"DirPort 127.0.0.1:{dir_port}",
        "AssumeReachable 1",
        # Exits are useless here: an ExitPolicy that accepts 127.0.0.0/8
        # summarises to reject-all in microdescriptors, and onion services
        # need no exit.  See docs/tor-test-network.rst.
        "ExitRelay 0",
        "ExitPolicy reject *:*",
        # Keeps every bandwidth weight 0 so path choices stay uniform;
        # skewed self-measured weights make clients pick one relay as both
        # guard and last hop, which it refuses.
        "TestingMinTimeToReportBandwidth 1 day",
        "ServerDNSResolvConfFile /dev/null",
        "ServerDNSDetectHijacking 0",
        'ServerDNSTestAddresses ""',
        "ServerDNSAllowBrokenConfig 1",
        "ContactInfo digitalspring-tests@localhost",
    ]


_AUTHORITY_TORRC = [
    "AuthoritativeDirectory 1",
    "V3AuthoritativeDirectory 1",
    "TestingV3AuthInitialVotingInterval 5",
    "TestingV3AuthInitialVoteDelay 2",
    "TestingV3AuthInitialDistDelay 2",
    "V3AuthVotingInterval 10",
    "V3AuthVoteDelay 2",
    "V3AuthDistDelay 2",
]


# -- Waiting for the network -------------------------------------------------


def _md_digest(text: bytes) -> str:
    return base64.b64encode(hashlib.sha256(text).digest()).decode("ascii").rstrip("=")


def _microdescriptor_digests(data_dir: str) -> set[str]:
    digests: set[str] = set()
    for name in ("cached-microdescs", "cached-microdescs.new"):
        try:
            with open(os.path.join(data_dir, name), "rb") as f:
                content = f.read()
        except FileNotFoundError:
            continue
        # Each microdescriptor starts at an "onion-key" line; "@" lines
        # before it are annotations outside the digest.
        starts = [m.start() for m in re.finditer(rb"^onion-key\b", content, re.MULTILINE)]
        for start, end in zip(starts, [*starts[1:], len(content)], strict=True):
            body = content[start:end]
            annotation = re.search(rb"^@", body, re.MULTILINE)
            if annotation is not None:
                body = body[: annotation.start()]
            digests.add(_md_digest(body))
    return digests


def consensus_not_ready(data_dir: str, routers: int) -> str | None:
    """
    Why the microdescriptor consensus cached in tor data directory
    ``data_dir`` is not yet good enough for clients, or ``None`` if it is:
    it must list all ``routers`` as Running, Valid HSDirs, and every
    microdescriptor it names must be on disk.  Starting clients earlier costs
    them 10-20 s of retries after an empty first consensus.
    """
    try:
        with open(os.path.join(data_dir, "cached-microdesc-consensus")) as f:
            consensus = f.read()
    except FileNotFoundError:
        return "no consensus yet"
    listed = consensus.count("\nr ")
    if listed < routers:
        return f"consensus lists {listed} of {routers} routers"
    flags = re.findall(r"^s (.*)$", consensus, re.MULTILINE)
    ready = [s.split() for s in flags]
    missing = sum(not {"HSDir", "Running", "Valid"} <= set(s) for s in ready)
    if missing:
        return f"{missing} routers lack the HSDir, Running or Valid flag"
    wanted = set(re.findall(r"^m (\S+)$", consensus, re.MULTILINE))
    absent = wanted - _microdescriptor_digests(data_dir)
    if absent:
        return f"{len(absent)} of {len(wanted)} microdescriptors not yet on disk"
    return None


# -- The network -------------------------------------------------------------


@define
class StartupTimings:
    """
    How long :meth:`PrivateTorNetwork.start` took, in seconds.

    :ivar keys: loading (or generating) the key template.
    :ivar consensus: from starting authorities and relays to a consensus
        clients can use.
    :ivar bootstrap: from starting the first client to its 100 % bootstrap.
    :ivar total: all of :meth:`PrivateTorNetwork.start`.
    """

    keys: float = 0.0
    consensus: float = 0.0
    bootstrap: float = 0.0
    total: float = 0.0


@define(eq=False)
class TorClient:
    """
    A client tor in a :class:`PrivateTorNetwork` (a test can also publish
    onion services through it).

    :ivar name: its nickname, and the name of its data directory.
    :ivar control_port: its control port on 127.0.0.1 (cookie
        authentication).
    :ivar socks_port: its SOCKS port on 127.0.0.1.
    :ivar data_dir: its ``DataDirectory``.
    :ivar bootstrap_seconds: from starting it to its 100 % bootstrap.
    :ivar process: the running tor.
    """

    name: str
    control_port: int
    socks_port: int
    data_dir: str
    process: TorProcess
    bootstrap_seconds: float
    _reactor: Reactor
    _namespace: NetworkNamespace | None

    @property
    def pid(self) -> int:
        """
        Its process id.
        """
        return self.process.pid

    def connect_control(self) -> Deferred[Any]:
        """
        Open a control connection; close it with :func:`close_control` when
        done.

        :returns: a Deferred that fires with a ``txtorcon.Tor``.
        """
        return Deferred.fromCoroutine(
            connect_control(self._reactor, self.control_port, self._namespace)
        )

    def socks_endpoint(self) -> IStreamClientEndpoint:
        """
        An endpoint for its SOCKS port (pass it to ``Tor.stream_via``).
        """
        return loopback_endpoint(self._reactor, self.socks_port, self._namespace)

    def stop(self) -> Deferred[None]:
        """
        Stop this tor and wait until it has exited.
        """
        return Deferred.fromCoroutine(self.process.stop())


class PrivateTorNetwork:
    """
    Three directory authorities, ``relays`` relays and any number of client
    tors, all on 127.0.0.1 with ``TestingTorNetwork 1``.

    Everything happens in the reactor thread; pass ``namespace`` to run every
    tor (and our connections to them) in that network namespace.

    :param reactor: provides ``IReactorProcess``, ``IReactorTCP`` and
        ``IReactorTime``.
    :param base_dir: an empty or missing directory for the tors' data
        directories, torrcs and logs.
    :param tor_binary: the tor to run; found on ``PATH`` if ``None``.
    :param relays: how many non-authority relays (at least 4 keeps paths
        and HSDir rings healthy).
    :param namespace: where the tors run, from
        :func:`~digitalspring.testing._tornamespace.isolated_namespace_or_none`.
    :param template_cache: where to cache keys; see
        :func:`default_template_cache`.
    :param timeout: seconds each start-up phase may take.

    :ivar timings: what :meth:`start` measured.
    :ivar clients: the client tors, by name.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Reactor,
        base_dir: str,
        tor_binary: str | None = None,
        *,
        relays: int = DEFAULT_RELAYS,
        namespace: NetworkNamespace | None = None,
        template_cache: str | None = None,
        timeout: float = 90.0,
    ) -> None:
        self._reactor = reactor
        self._base_dir = os.path.abspath(base_dir)
        self._tor_binary = tor_binary
        self._relays = relays
        self.namespace = namespace
        self._template_cache = template_cache
        self._timeout = timeout
        self._dir_authorities: list[str] = []
        self._entry_nodes = ""
        self._servers: list[TorProcess] = []
        self.clients: dict[str, TorClient] = {}
        self.timings = StartupTimings()
        self._started = False

    @property
    def processes(self) -> list[TorProcess]:
        """
        Every tor this network started, servers first.
        """
        return [*self._servers, *(c.process for c in self.clients.values())]

    @property
    def pids(self) -> list[int]:
        """
        The process ids of the tors that are still running.
        """
        return [p.pid for p in self.processes if p.running]

    @property
    def client(self) -> TorClient:
        """
        The client started by :meth:`start`.
        """
        return self.clients["client0"]

    def start(self) -> Deferred[None]:
        """
        Generate (or load) keys, start the authorities and relays, wait for a
        consensus, then start ``client0`` and wait for its 100 % bootstrap.
        If anything fails, every tor started so far is stopped.

        :returns: a Deferred that fires when ``client0`` has bootstrapped, or
            fails with :class:`TorNetworkError` (whose message carries the
            tors' log tails) or :class:`TorNotInstalled`.
        """
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        if self._started:
            raise TorNetworkError("this network was already started")
        self._started = True
        clock = self._reactor.seconds
        began = clock()
        try:
            tor_binary, _ = find_tor_binaries(self._tor_binary)
            self._tor_binary = tor_binary
            template = await load_or_create_template(
                self._reactor, tor_binary, self._template_cache, self._relays, self.namespace
            )
            self.timings.keys = clock() - began
            await self._start_servers(template)
            self.timings.consensus = clock() - began - self.timings.keys
            client = await self._add_client("client0")
            self.timings.bootstrap = client.bootstrap_seconds
        except BaseException:
            await self._stop()
            raise
        self.timings.total = clock() - began
        self.log.info(
            "private Tor network up in {total:.1f}s (keys {keys:.1f}s, consensus "
            "{consensus:.1f}s, client bootstrap {bootstrap:.1f}s) in {where}",
            total=self.timings.total, keys=self.timings.keys,
            consensus=self.timings.consensus, bootstrap=self.timings.bootstrap,
            where=self._base_dir,
        )

    def _spawn(self, name: str, role: str, data_dir: str, lines: Sequence[str]) -> TorProcess:
        torrc = os.path.join(self._base_dir, f"{name}.torrc")
        with open(torrc, "w") as f:
            f.write("\n".join(lines) + "\n")
        assert self._tor_binary is not None
        return TorProcess.spawn(
            self._reactor, self._tor_binary, name, role, data_dir, torrc, self.namespace
        )

    async def _start_servers(self, template: KeyTemplate) -> None:
        os.makedirs(self._base_dir, exist_ok=True)
        nodes = template.nodes
        ports = _free_ports(3 * len(nodes), self.namespace)
        config = {
            node.nickname: (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2])
            for i, node in enumerate(nodes)
        }
        self._dir_authorities = [
            f"DirAuthority {a.nickname} orport={config[a.nickname][1]} no-v2 "
            f"v3ident={a.v3ident} 127.0.0.1:{config[a.nickname][2]} {a.fingerprint}"
            for a in template.authorities
        ]
        self._entry_nodes = ",".join(f"${a.fingerprint}" for a in template.authorities)
        for node in nodes:
            control, or_port, dir_port = config[node.nickname]
            data_dir = os.path.join(self._base_dir, node.nickname)
            template.install(node.nickname, data_dir)
            lines = _common_torrc(node.nickname, data_dir, control, self._dir_authorities)
            lines += _relay_torrc(or_port, dir_port)
            role = "relay"
            if node.v3ident is not None:
                lines += _AUTHORITY_TORRC
                role = "authority"
            self._servers.append(self._spawn(node.nickname, role, data_dir, lines))
        authorities = [p for p in self._servers if p.role == "authority"]
        await self._wait_until(
            "a consensus that lists every relay as an HSDir",
            lambda: next(
                (
                    f"{a.name}: {why}"
                    for a in authorities
                    if (why := consensus_not_ready(a.data_dir, len(nodes))) is not None
                ),
                None,
            ),
            self._servers,
            interval=0.25,
        )

    async def _wait_until(
        self,
        what: str,
        not_ready: Any,
        watched: Sequence[TorProcess],
        interval: float,
    ) -> None:
        """
        Poll ``not_ready()`` (a reason string, or ``None`` when ready) until
        ready; fail early if a watched tor exits, and after the timeout.
        """
        deadline = self._reactor.seconds() + self._timeout
        while True:
            dead = [p for p in watched if not p.running]
            if dead:
                raise TorNetworkError(
                    f"tor exited while waiting for {what}:\n"
                    + "\n".join(p.log_tail(30) for p in dead)
                )
            reason = not_ready()
            if isinstance(reason, Deferred):
                reason = await reason
            if reason is None:
                return
            if self._reactor.seconds() > deadline:
                raise TorNetworkError(
                    f"timed out after {self._timeout:.0f}s waiting for {what} ({reason}):\n"
                    + "\n".join(p.log_tail() for p in watched)
                )
            await deferLater(self._reactor, interval, lambda: None)

    def client_torrc_options(self) -> list[str]:
        """
        The torrc lines that let a tor started outside this network (a
        node's own tor, given them as ``--tor-option``) join it as a client.
        Call after :meth:`start`.
        """
        if not self._dir_authorities:
            raise TorNetworkError("start the network before asking how to join it")
        return [
            "TestingTorNetwork 1",
            *self._dir_authorities,
            f"EntryNodes {self._entry_nodes}",
            "PathsNeededToBuildCircuits 0.67",
            *CIRCUIT_BUILD_TIMEOUT,
            "ClientUseIPv6 0",
            "AddressDisableIPv6 1",
            "Sandbox 0",
            "ShutdownWaitLength 0",
            'GeoIPFile ""',
            'GeoIPv6File ""',
        ]

    def add_client(self, name: str) -> Deferred[TorClient]:
        """
        Start another client tor (for example to publish an onion service or
        to attach a transport to) and wait for its 100 % bootstrap.

        :param name: its nickname and data directory name, unique in this
            network (letters and digits).
        :returns: a Deferred that fires with the :class:`TorClient`, or fails
            with :class:`TorNetworkError`.
        """
        return Deferred.fromCoroutine(self._add_client(name))

    async def _add_client(self, name: str) -> TorClient:
        if not self._dir_authorities:
            raise TorNetworkError("start the network before adding clients")
        if not re.fullmatch(r"[A-Za-z0-9]{1,19}", name) or name in self.clients or any(
            p.name == name for p in self._servers
        ):
            raise TorNetworkError(f"bad or duplicate tor nickname {name!r}")
        control_port, socks_port = _free_ports(2, self.namespace)
        data_dir = os.path.join(self._base_dir, name)
        os.makedirs(data_dir, mode=0o700)
        lines = _common_torrc(name, data_dir, control_port, self._dir_authorities)
        lines += [
            f"SocksPort 127.0.0.1:{socks_port}",
            f"EntryNodes {self._entry_nodes}",
            # As the node launches its own (the tests attach to these).
            *BOUNDED_READS_TORRC,
        ]
        began = self._reactor.seconds()
        process = self._spawn(name, "client", data_dir, lines)
        client = TorClient(
            name, control_port, socks_port, data_dir, process, 0.0, self._reactor, self.namespace
        )
        self.clients[name] = client
        connected: list[Any] = []

        async def not_connected() -> str | None:
            try:
                connected.append(
                    await connect_control(self._reactor, control_port, self.namespace, 0.0)
                )
            except ConnectError as e:
                return f"control port {control_port}: {e}"
            return None

        await self._wait_until(
            f"the control port of {name}",
            lambda: Deferred.fromCoroutine(not_connected()),
            [process],
            interval=0.1,
        )
        tor = connected[0]
        try:
            await self._wait_until(
                f"100% bootstrap of {name}",
                lambda: Deferred.fromCoroutine(_bootstrap_not_done(tor)),
                [process, *self._servers],
                interval=0.2,
            )
        finally:
            await close_control(tor)
        client.bootstrap_seconds = self._reactor.seconds() - began
        self.log.info("{name} bootstrapped in {seconds:.1f}s", name=name,
                      seconds=client.bootstrap_seconds)
        return client

    def stop(self) -> Deferred[None]:
        """
        Stop every tor this network started (SIGTERM, then SIGKILL) and wait
        until all have exited.

        :raises TorNetworkError: if a tor could not be ended.
        """
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        results = await DeferredList(
            [Deferred.fromCoroutine(p.stop()) for p in self.processes], consumeErrors=True
        )
        failures = [str(cast(Failure, r).value) for ok, r in results if not ok]
        if failures:
            raise TorNetworkError("; ".join(failures))
        self.log.info("private Tor network in {where} stopped", where=self._base_dir)


async def _bootstrap_not_done(tor: Any) -> str | None:
    progress = await bootstrap_progress(tor)
    return None if progress >= 100 else f"bootstrap at {progress}%"
