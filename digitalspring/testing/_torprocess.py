# -*- test-case-name: tests.test_tornet -*-
"""
Finding and running tor: short-lived helper runs (key generation) and
long-lived tors whose PIDs we track until they have exited.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from contextlib import suppress
from typing import Any
from unittest import SkipTest

from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from digitalspring.errors import DigitalSpringError
from digitalspring.testing._torcontrol import Reactor
from digitalspring.testing._tornamespace import NetworkNamespace, inside

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





async def run_program(
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
            childFDs={0: "w", 1: "r", 2: "r"},
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
