# -*- test-case-name: tests.test_tornet -*-
"""
A private Tor network on 127.0.0.1 for tests: three directory authorities,
a few relays, and any number of client (or onion-service) tors that tests
and the Tor transport attach to through their control and SOCKS ports.

See ``docs/tor-test-network.rst`` for how it works and why it is configured
the way it is.
"""

from __future__ import annotations

import atexit
import base64
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, cast
from unittest import SkipTest

from attrs import define, frozen
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ConnectError, ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from digitalspring.errors import DigitalSpringError
from digitalspring.testing._torcontrol import (
    Reactor,
    bootstrap_progress,
    close_control,
    connect_control,
    loopback_endpoint,
)
from digitalspring.testing._tornamespace import NetworkNamespace, inside

AUTHORITIES = 3
DEFAULT_RELAYS = 4
#: Bump when the layout of the cached key template changes.
TEMPLATE_FORMAT = 1
INSTALL_HINT = "apt-get install tor"

_log = Logger()


class TorNetworkError(DigitalSpringError):
    """
    The private Tor test network failed to start or stop; the message ends
    with the tail of the logs of the tors involved.
    """


class TorNotInstalled(TorNetworkError):
    """
    The ``tor`` and ``tor-gencert`` programs are needed to run a private Tor
    network (``apt-get install tor``).
    """


# -- Finding tor ------------------------------------------------------------


def find_tor_binaries(tor_binary: str | None = None) -> tuple[str, str]:
    """
    Find ``tor`` and the ``tor-gencert`` next to it (or on ``PATH``).

    :param tor_binary: a path to use instead of ``$DIGITALSPRING_TOR`` or,
        when that is unset too, searching ``PATH``.
    :returns: the paths of ``tor`` and ``tor-gencert``.
    :raises TorNotInstalled: if either is missing.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    tor = tor_binary or os.environ.get("DIGITALSPRING_TOR") or shutil.which("tor", path=search)
    if tor is None:
        raise TorNotInstalled(f"no tor binary found; {INSTALL_HINT}")
    if not os.access(tor, os.X_OK):
        raise TorNotInstalled(f"{tor} is not an executable tor; {INSTALL_HINT}")
    gencert = shutil.which("tor-gencert", path=os.pathsep.join([os.path.dirname(tor), search]))
    if gencert is None:
        raise TorNotInstalled(f"tor-gencert not found next to {tor}; {INSTALL_HINT}")
    return tor, gencert


def tor_binary_or_skip(tor_binary: str | None = None) -> str:
    """
    The path of ``tor``, or skip the calling test when it is not installed.

    :raises SkipTest: saying to ``apt-get install tor``.
    """
    try:
        return find_tor_binaries(tor_binary)[0]
    except TorNotInstalled as e:
        raise SkipTest(f"Tor tests need tor and tor-gencert: {e}") from e


# -- Running processes -------------------------------------------------------


async def _run(
    reactor: Reactor,
    argv: Sequence[str],
    namespace: NetworkNamespace | None,
    stdin: bytes = b"",
    timeout: float = 60.0,
) -> tuple[int, bytes]:
    """
    Run a short-lived program (inside ``namespace``) and collect its output.

    :returns: its exit code and its stdout and stderr, merged.
    """
    protocol = _CollectingProtocol(stdin)
    with inside(namespace):
        reactor.spawnProcess(
            protocol, argv[0], list(argv), env=_tor_environment(None),
            childFDs={0: "w", 1: "r", 2: 1},
        )
    timer = reactor.callLater(timeout, protocol.kill)
    try:
        code = await protocol.ended
    finally:
        if timer.active():
            timer.cancel()
    return code, bytes(protocol.output)


class _CollectingProtocol(ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self._stdin = stdin
        self.output = bytearray()
        self.ended: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._stdin)
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data

    def kill(self) -> None:
        if self.transport is not None:
            self.transport.signalProcess("KILL")

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(_exit_code(reason))


def _exit_code(reason: Failure) -> int:
    if isinstance(reason.value, ProcessDone):
        return 0
    code = getattr(reason.value, "exitCode", None)
    if code is None:
        code = -(getattr(reason.value, "signal", 0) or 1)
    return int(code)


def _tor_environment(home: str | None) -> dict[str, str]:
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": home or tempfile.gettempdir(),
        "LANG": "C",
        # Keeps each tor's RSS near 280 MB instead of ~500 MB after a minute.
        "MALLOC_ARENA_MAX": "1",
    }


#: Every tor process still running, so :func:`_kill_leftovers` can end them
#: if the test process exits without stopping its networks.
_running: dict[int, TorProcess] = {}


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_running):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _TorProcessProtocol(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[int] = Deferred()
        self.exit_code: int | None = None

    def processEnded(self, reason: Failure) -> None:
        self.exit_code = _exit_code(reason)
        self.ended.callback(self.exit_code)


@define(eq=False)
class TorProcess:
    """
    One running tor.  Its standard output and error (its notice-level log)
    go to ``log_path``; no pipe connects it to us, so a long-lived tor leaves
    nothing in the reactor for trial to call dirty.

    :ivar name: its nickname in the network.
    :ivar role: ``"authority"``, ``"relay"`` or ``"client"``.
    :ivar data_dir: its ``DataDirectory``.
    :ivar pid: its process id.
    """

    name: str
    role: str
    data_dir: str
    log_path: str
    pid: int
    _protocol: _TorProcessProtocol
    _reactor: Reactor

    @classmethod
    def spawn(
        cls,
        reactor: Reactor,
        tor_binary: str,
        name: str,
        role: str,
        data_dir: str,
        torrc: str,
        namespace: NetworkNamespace | None,
    ) -> TorProcess:
        """
        Start tor with the configuration file ``torrc`` (inside
        ``namespace``).
        """
        log_path = os.path.join(data_dir, "tor.log")
        protocol = _TorProcessProtocol()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        try:
            with inside(namespace):
                transport = reactor.spawnProcess(
                    protocol, tor_binary, [tor_binary, "-f", torrc, "--ignore-missing-torrc"],
                    env=_tor_environment(data_dir), path=data_dir,
                    childFDs={0: null_fd, 1: log_fd, 2: log_fd},
                )
        finally:
            os.close(log_fd)
            os.close(null_fd)
        process = cls(name, role, data_dir, log_path, transport.pid, protocol, reactor)
        _running[process.pid] = process
        protocol.ended.addBoth(lambda result: _running.pop(process.pid, None) and result)
        _log.debug("started {role} {name} as PID {pid}", role=role, name=name, pid=process.pid)
        return process

    @property
    def running(self) -> bool:
        """
        Whether the process has not ended yet.
        """
        return self._protocol.exit_code is None

    @property
    def exit_code(self) -> int | None:
        """
        Its exit code (negative: killed by that signal), or ``None`` while it
        runs.
        """
        return self._protocol.exit_code

    def log_tail(self, lines: int = 20) -> str:
        """
        The last ``lines`` lines of its log, for error messages.
        """
        try:
            with open(self.log_path, errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
        except OSError as e:
            tail = [f"(no log: {e})"]
        return f"--- {self.name} ({self.role}, PID {self.pid}) {self.log_path}:\n" + "\n".join(
            tail
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """
        Stop tor with SIGTERM, then SIGKILL if it still runs after
        ``timeout`` seconds, and wait until it has been reaped.

        :raises TorNetworkError: if even SIGKILL did not end it.
        """
        for sig, wait in (("TERM", timeout), ("KILL", 5.0)):
            if not self.running:
                return
            transport = self._protocol.transport
            assert transport is not None
            # It may end between the check and the signal.
            with suppress(ProcessExitedAlready):
                transport.signalProcess(sig)
            await _within(self._reactor, wait, self._protocol.ended)
        if self.running:
            raise TorNetworkError(f"tor {self.name} (PID {self.pid}) survived SIGKILL")


async def _within(reactor: Reactor, seconds: float, d: Deferred[Any]) -> None:
    """
    Wait for ``d`` for at most ``seconds``, without consuming its result.
    """
    waiter: Deferred[None] = Deferred()

    def fire(_: object) -> object:
        if not waiter.called:
            waiter.callback(None)
        return _

    def expire() -> None:
        if not waiter.called:
            waiter.callback(None)

    d.addBoth(fire)
    timer = reactor.callLater(seconds, expire)
    await waiter
    if timer.active():
        timer.cancel()


# -- Keys --------------------------------------------------------------------


@frozen
class NodeKeys:
    """
    The identity of one authority or relay in a key template.

    :ivar nickname: its ``Nickname``.
    :ivar fingerprint: its relay identity fingerprint (40 hex digits).
    :ivar v3ident: for an authority, the fingerprint of its authority
        identity key; ``None`` for a relay.
    """

    nickname: str
    fingerprint: str
    v3ident: str | None = None


@frozen
class KeyTemplate:
    """
    A directory of pre-generated keys for every authority and relay, cached
    between test runs (one per tor version and network size).

    :ivar path: the directory; ``path/NICKNAME`` is a tor data directory
        holding only keys.
    :ivar nodes: authorities first, then relays.
    """

    path: str
    nodes: tuple[NodeKeys, ...]

    @property
    def authorities(self) -> tuple[NodeKeys, ...]:
        """
        The authorities' identities.
        """
        return tuple(n for n in self.nodes if n.v3ident is not None)

    @property
    def relays(self) -> tuple[NodeKeys, ...]:
        """
        The (non-authority) relays' identities.
        """
        return tuple(n for n in self.nodes if n.v3ident is None)

    def install(self, nickname: str, data_dir: str) -> None:
        """
        Copy the keys of ``nickname`` into a fresh tor data directory.
        """
        shutil.copytree(os.path.join(self.path, nickname), data_dir)
        os.chmod(data_dir, 0o700)


def default_template_cache() -> str:
    """
    Where key templates are cached: ``$XDG_CACHE_HOME/digitalspring`` (or
    ``~/.cache/digitalspring``) ``/tornet-template``.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "digitalspring", "tornet-template")


async def tor_version(reactor: Reactor, tor_binary: str) -> str:
    """
    The version of ``tor_binary``, such as ``0.4.9.11``.

    :raises TorNetworkError: if it does not say.
    """
    code, out = await _run(reactor, [tor_binary, "--version"], None)
    match = re.search(rb"Tor version ([^\s]+?)\.?\s", out)
    if code != 0 or match is None:
        raise TorNetworkError(f"{tor_binary} --version failed ({code}): {out[-500:]!r}")
    return match.group(1).decode("ascii")


def _load_template(path: str, authorities: int, relays: int) -> KeyTemplate | None:
    """
    The template at ``path``, or ``None`` if it is missing, broken,
    incomplete or its authority certificates expire within a month.
    """
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
        if manifest["format"] != TEMPLATE_FORMAT:
            return None
        nodes = tuple(
            NodeKeys(n["nickname"], n["fingerprint"], n.get("v3ident")) for n in manifest["nodes"]
        )
        if (sum(n.v3ident is not None for n in nodes), sum(n.v3ident is None for n in nodes)) != (
            authorities,
            relays,
        ):
            return None
        for node in nodes:
            keys = os.path.join(path, node.nickname, "keys")
            needed = ["secret_id_key", "ed25519_master_id_secret_key"]
            if node.v3ident is not None:
                needed += ["authority_identity_key", "authority_signing_key",
                           "authority_certificate"]
                if _certificate_expiry(os.path.join(keys, "authority_certificate")) < (
                    time.time() + 30 * 86400
                ):
                    return None
            if not all(os.path.isfile(os.path.join(keys, name)) for name in needed):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return KeyTemplate(path, nodes)


def _certificate_expiry(path: str) -> float:
    with open(path) as f:
        match = re.search(r"^dir-key-expires (\S+ \S+)$", f.read(), re.MULTILINE)
    if match is None:
        raise ValueError(f"no dir-key-expires in {path}")
    return time.mktime(time.strptime(match.group(1) + " UTC", "%Y-%m-%d %H:%M:%S %Z"))


async def _generate_node_keys(
    reactor: Reactor,
    tor_binary: str,
    gencert_binary: str,
    data_dir: str,
    nickname: str,
    authority: bool,
    namespace: NetworkNamespace | None,
) -> NodeKeys:
    keys = os.path.join(data_dir, "keys")
    os.makedirs(keys, mode=0o700)
    os.chmod(data_dir, 0o700)
    v3ident = None
    if authority:
        # No -a: the certificate's dir-address would go stale when a later
        # run picks other ports; the DirAuthority lines carry the address.
        code, out = await _run(reactor, [
            gencert_binary, "--create-identity-key", "--passphrase-fd", "0", "-m", "12",
            "-i", os.path.join(keys, "authority_identity_key"),
            "-s", os.path.join(keys, "authority_signing_key"),
            "-c", os.path.join(keys, "authority_certificate"),
        ], namespace, stdin=b"\n")
        if code != 0:
            raise TorNetworkError(
                f"tor-gencert failed ({code}): {out[-2000:].decode(errors='replace')}"
            )
        with open(os.path.join(keys, "authority_certificate")) as f:
            match = re.search(r"^fingerprint ([0-9A-F]{40})$", f.read(), re.MULTILINE)
        if match is None:
            raise TorNetworkError(f"no fingerprint in the certificate tor-gencert made in {keys}")
        v3ident = match.group(1)
    torrc = os.path.join(os.path.dirname(data_dir), f"{nickname}.keygen.torrc")
    with open(torrc, "w") as f:
        # Not TestingTorNetwork: it refuses to start without DirAuthority lines.
        f.write(
            f"DataDirectory {data_dir}\nNickname {nickname}\nORPort 127.0.0.1:1\n"
            "Address 127.0.0.1\nGeoIPFile \"\"\nGeoIPv6File \"\"\nLog warn stdout\n"
        )
    code, out = await _run(reactor, [tor_binary, "--list-fingerprint", "-f", torrc], namespace)
    os.remove(torrc)
    try:
        with open(os.path.join(data_dir, "fingerprint")) as f:
            fingerprint = f.read().split()[1]
    except (OSError, IndexError) as e:
        raise TorNetworkError(
            f"tor --list-fingerprint failed ({code}, {e}): {out[-2000:].decode(errors='replace')}"
        ) from e
    for leftover in ("lock", "fingerprint-ed25519", "fingerprint"):
        if os.path.exists(os.path.join(data_dir, leftover)):
            os.remove(os.path.join(data_dir, leftover))
    return NodeKeys(nickname, fingerprint, v3ident)


async def load_or_create_template(
    reactor: Reactor,
    tor_binary: str,
    cache_dir: str | None = None,
    relays: int = DEFAULT_RELAYS,
    namespace: NetworkNamespace | None = None,
) -> KeyTemplate:
    """
    The cached key template for this tor version and network size, made
    (and cached) now if it is missing or broken.

    :param cache_dir: where templates live; :func:`default_template_cache`
        if ``None``.
    :raises TorNetworkError: if key generation fails.
    """
    tor_binary, gencert_binary = find_tor_binaries(tor_binary)
    version = await tor_version(reactor, tor_binary)
    cache_dir = cache_dir or default_template_cache()
    path = os.path.join(cache_dir, f"tor-{version}-a{AUTHORITIES}-r{relays}-f{TEMPLATE_FORMAT}")
    template = _load_template(path, AUTHORITIES, relays)
    if template is not None:
        _log.info("using cached Tor key template {path}", path=path)
        return template
    if os.path.exists(path):
        _log.warn("Tor key template {path} is broken or stale; regenerating it", path=path)
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(cache_dir, exist_ok=True)
    # Build it aside and rename it into place, so a concurrent or
    # interrupted run never sees half a template.
    building = tempfile.mkdtemp(prefix="building-", dir=cache_dir)
    try:
        names = [(f"auth{i}", True) for i in range(AUTHORITIES)]
        names += [(f"relay{i}", False) for i in range(relays)]
        results = await DeferredList(
            [
                Deferred.fromCoroutine(_generate_node_keys(
                    reactor, tor_binary, gencert_binary, os.path.join(building, nickname),
                    nickname, authority, namespace,
                ))
                for nickname, authority in names
            ],
            consumeErrors=True,
        )
        nodes = []
        for _, result in results:
            if isinstance(result, Failure):
                result.raiseException()
            nodes.append(result)
        with open(os.path.join(building, "manifest.json"), "w") as f:
            json.dump({
                "format": TEMPLATE_FORMAT,
                "tor_version": version,
                "nodes": [
                    {"nickname": n.nickname, "fingerprint": n.fingerprint, "v3ident": n.v3ident}
                    for n in nodes
                ],
            }, f, indent=1)
        try:
            os.rename(building, path)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            _log.info("another run cached a Tor key template first; using it")
    finally:
        shutil.rmtree(building, ignore_errors=True)
    template = _load_template(path, AUTHORITIES, relays)
    if template is None:
        raise TorNetworkError(f"the Tor key template just written to {path} does not load")
    _log.info("generated Tor key template {path}", path=path)
    return template


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
        lines += [f"SocksPort 127.0.0.1:{socks_port}", f"EntryNodes {self._entry_nodes}"]
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
