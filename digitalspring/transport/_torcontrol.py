# -*- test-case-name: tests.test_tor_network -*-
"""
The real :class:`ITorControl`: txtorcon, talking to a tor we launched or to
one we attach to through its control port.

Everything the ``tor`` transport needs of txtorcon is in this module, so the
rest of our code (and its tests' fake) depends on our interface only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import txtorcon
from attrs import evolve
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import CannotListenError, ConnectError, ProcessExitedAlready
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from txtorcon import TorProtocolError
from txtorcon.socks import SocksError
from zope.interface import implementer

from ._interfaces import IOnionService, ITorControl
from ._torbootstrap import TorBootstrap, TorBootstrapWatch
from ._torerrors import (
    OnionServiceUnreachable,
    TorNotFound,
    TorStreamFailed,
    TorStreamTimeout,
    TorUnavailable,
)
from ._torkey import onion_host, tor_private_key
from ._toronion import (
    DEFAULT_DEFENCES,
    POW_KEYWORDS,
    DescriptorUploads,
    OnionDefences,
    add_onion_command,
    service_id,
)

#: Seconds a dial waits on a rendezvous whose introduction was
#: acknowledged before closing it: a live service joins in a few seconds
#: (its own rendezvous attempts give up after 30).
REND_PATIENCE = 30.0

#: Seconds to wait for a descriptor fetched again before closing a stuck
#: rendezvous circuit anyway.
REFETCH_PATIENCE = 10.0

#: Seconds a publish waits for HSDir uploads still in flight once both
#: descriptors are stored somewhere.
UPLOAD_SETTLE = 10.0
#: Seconds a publish waits for both descriptors to be stored somewhere
#: before it gives up (uploads take seconds on a test network, under a
#: minute on Tor's; tor tries a failed upload again only at its next
#: descriptor rotation, up to an hour later).
PUBLISH_PATIENCE = 180.0

#: SOCKS5 replies (RFC 1928, and tor's ``ExtendedErrors`` for onion
#: services) that mean nobody answers at the onion address.
_UNREACHABLE = {
    0x04: "host unreachable",
    0x05: "connection refused",
    0xF0: "descriptor not found",
    0xF2: "introduction failed",
    0xF6: "invalid onion address",
}
_TIMED_OUT = {
    0x06: "TTL expired",
    0xF7: "introduction timed out",
}

#: Options the launched tor's own configuration sets; overriding them from
#: ``--tor-option`` would cut the node off from its tor.
RESERVED_TORRC_KEYS = frozenset(
    key.lower()
    for key in (
        "DataDirectory",
        "ControlPort",
        "ControlPortWriteToFile",
        "CookieAuthentication",
        "RunAsDaemon",
        "__OwningControllerProcess",
    )
)


# -- Streams -----------------------------------------------------------------


class _ReasonWrapper(ProtocolWrapper):
    """
    Gives the wrapped protocol the reason its connection ended, which
    txtorcon's SOCKS layer wraps in a ``SocksError``.
    """

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        error = reason.value
        if isinstance(error, SocksError) and isinstance(error.message, Failure):
            reason = error.message
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class _ReasonFactory(WrappingFactory[_ReasonWrapper]):
    protocol = _ReasonWrapper

    def __init__(self, wrapped: IProtocolFactory) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.inner: IProtocol | None = None

    def buildProtocol(self, addr: Any) -> _ReasonWrapper:
        wrapper = super().buildProtocol(addr)
        self.inner = wrapper.wrappedProtocol
        return wrapper


def _connect_failure(error: BaseException, host: str, port: int) -> Exception:
    """
    Our error for a failed SOCKS connect to ``host:port``.
    """
    where = f"{host}:{port}"
    if isinstance(error, SocksError):
        code = error.code
        if code in _UNREACHABLE:
            return OnionServiceUnreachable(
                f"no onion service answers at {where} (tor: {_UNREACHABLE[code]})",
                service_found=code == 0x05,
            )
        if code in _TIMED_OUT:
            return TorStreamTimeout(f"tor timed out reaching {where} ({_TIMED_OUT[code]})")
        return TorStreamFailed(f"tor could not reach {where}: {error}")
    if isinstance(error, ConnectError):
        return TorStreamFailed(f"cannot reach tor's SOCKS port to dial {where}: {error}")
    return TorStreamFailed(f"tor could not reach {where}: {error!r}")


@implementer(IStreamClientEndpoint)
class _SocksPort:
    """
    The tor's SOCKS port, for one dial, which :meth:`abort` closes at any
    stage.  (txtorcon's endpoints do not pass a cancel on, which would
    leave the SOCKS connection open, waiting for tor's reply.)
    """

    def __init__(self, control: TxtorconControl) -> None:
        self._control = control
        self._connecting: Deferred[IProtocol] | None = None
        self._protocol: IProtocol | None = None
        self._aborted = False

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        async def connect() -> IProtocol:
            # Known already (TxtorconControl.find_socks_port); never
            # cancelled, as txtorcon would log that as an error.
            endpoint = await self._control.find_socks_port()
            if self._aborted:
                raise CancelledError()
            self._connecting = endpoint.connect(protocolFactory)
            try:
                self._protocol = await self._connecting
            finally:
                self._connecting = None
            if self._aborted:
                self._close()
            return self._protocol

        return Deferred.fromCoroutine(connect())

    def abort(self) -> None:
        """
        Close the connection to the SOCKS port, or stop making it.
        """
        self._aborted = True
        if self._connecting is not None:
            self._connecting.cancel()
        self._close()

    def _close(self) -> None:
        transport = getattr(self._protocol, "transport", None)
        if transport is not None:
            transport.abortConnection()


@implementer(IStreamClientEndpoint)
class _OnionEndpoint:
    """
    txtorcon's SOCKS endpoint, with our errors, Twisted's connection-loss
    reasons, and a cancel that closes the SOCKS connection.
    """

    def __init__(self, control: TxtorconControl, tor: Any, host: str, port: int) -> None:
        self._control = control
        self._tor = tor
        self._host = host
        self._port = port

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        wrapping = _ReasonFactory(protocolFactory)
        socks = _SocksPort(self._control)
        def cancel(result: Deferred[IProtocol]) -> None:
            # It fails with CancelledError at once; txtorcon's Deferred
            # then fails as the SOCKS connection closes, unheard.
            result.errback(CancelledError())
            socks.abort()

        result: Deferred[IProtocol] = Deferred(cancel)

        def connected(_: object) -> None:
            assert wrapping.inner is not None
            if not result.called:
                result.callback(wrapping.inner)

        def failed(failure: Failure) -> None:
            if result.called:
                return
            error = _connect_failure(failure.value, self._host, self._port)  # type: ignore[arg-type]
            if watchdog.closed and not isinstance(error, OnionServiceUnreachable):
                # The stream died with the stale circuit we closed: a new
                # dial makes a new rendezvous (see stuck_rendezvous).
                error = OnionServiceUnreachable(
                    f"the rendezvous with {self._host} was stale and was closed "
                    f"({error}); a new dial makes a new one"
                )
            result.errback(error)

        watchdog = self._control._watch_rendezvous(self._host)
        result.addBoth(_stop_watching, watchdog)
        endpoint = self._tor.stream_via(self._host, self._port, socks_endpoint=socks)
        connecting: Deferred[Any] = endpoint.connect(wrapping)
        connecting.addCallbacks(connected, failed)
        return result


class _RendezvousWatch:
    """
    The check of one dial's rendezvous circuits.

    :ivar closed: how many circuits it closed.
    """

    def __init__(self) -> None:
        self.loop: LoopingCall | None = None
        self.closed = 0

    @property
    def watching(self) -> bool:
        return self.loop is not None and self.loop.running

    def stop(self) -> None:
        if self.watching:
            assert self.loop is not None
            self.loop.stop()


def _stop_watching(result: Any, watch: _RendezvousWatch) -> Any:
    watch.stop()
    return result


def stuck_rendezvous(
    circuit_status: str, host: str, dialled_at: datetime | None = None
) -> list[str]:
    """
    The ids of our rendezvous circuits to ``host`` (without ``.onion``)
    that a dial still waiting should not wait on, from ``GETINFO
    circuit-status``: those whose introduction was acknowledged but that
    the service never joined, and, when ``dialled_at`` is given, those
    joined before the dial began.

    Tor attaches a new stream to a rendezvous circuit it already has with
    the service.  If that service has since restarted, its end of the
    circuit is gone, yet tor on our side can keep the circuit for minutes
    (a case on the test network: 2 minutes and more, after the service's
    tor exited cleanly), and the stream waits on it; a service alive at
    the other end answers a stream within a round trip.

    :param dialled_at: when the dial began, in UTC as tor's
        ``TIME_CREATED``.
    """
    stuck = []
    for line in circuit_status.splitlines():
        words = line.split()
        fields = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        if (
            not words
            or fields.get("PURPOSE") != "HS_CLIENT_REND"
            or fields.get("REND_QUERY") != host
        ):
            continue
        state = fields.get("HS_STATE")
        if state == "HSCR_ESTABLISHED_WAITING" or (
            state == "HSCR_JOINED"
            and dialled_at is not None
            and _created(fields.get("TIME_CREATED", "")) < dialled_at
        ):
            stuck.append(words[0])
    return stuck


def _created(text: str) -> datetime:
    # TIME_CREATED is UTC, to the microsecond; an unreadable one counts as
    # new, so that nothing is closed on a guess.
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.max


def _socks_endpoint(reactor: Any, listeners: str) -> IStreamClientEndpoint | None:
    """
    An endpoint for the first of tor's SOCKS listeners, as
    ``net/listeners/socks`` lists them (``"127.0.0.1:9050" "unix:/path"``).
    """
    for listener in listeners.replace('"', " ").split():
        if listener.startswith("unix:"):
            return UNIXClientEndpoint(  # type: ignore[no-untyped-call]
                reactor, listener[len("unix:"):]
            )
        host, _, port = listener.rpartition(":")
        if host.startswith("[") and port.isdigit():
            return TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
                reactor, host.strip("[]"), int(port)
            )
        if host and port.isdigit():
            return TCP4ClientEndpoint(reactor, host, int(port))
    return None


# -- Onion services ----------------------------------------------------------


@implementer(IOnionService)
class _Onion:
    """
    An ephemeral onion service we added through a control connection.
    """

    log = Logger()

    def __init__(self, protocol: Any, host: str, published: list[_Onion],
                 defences: OnionDefences) -> None:
        self._protocol = protocol
        self._published = published
        self.hostname = host
        #: The defences tor accepted for it.
        self.defences = defences

    def remove(self) -> Deferred[None]:
        if self not in self._published:
            return succeed(None)
        self._published.remove(self)

        async def remove() -> None:
            try:
                await self._protocol.queue_command(f"DEL_ONION {self.hostname[:-len('.onion')]}")
            except Exception as e:
                # Gone already, with its control connection.
                self.log.debug("onion service {host} not removed: {error}",
                               host=self.hostname, error=str(e))

        return Deferred.fromCoroutine(remove())


# -- A launched tor ------------------------------------------------------------


class _ExitWatcher(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.exited = False

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        self.ended.callback(None)


class LaunchedTor:
    """
    A tor process the node started; its log (notice level) goes to
    ``tor.log`` beside its torrc, with no pipe to us.
    """

    log = Logger()

    def __init__(self, reactor: Any, watcher: _ExitWatcher, pid: int, log_path: str) -> None:
        self._reactor = reactor
        self._watcher = watcher
        self.pid = pid
        self.log_path = log_path

    @property
    def running(self) -> bool:
        """
        Whether it has not exited yet.
        """
        return not self._watcher.exited

    def log_tail(self, lines: int = 15) -> str:
        """
        The end of its log, for error messages.
        """
        try:
            with open(self.log_path, errors="replace") as f:
                return "\n".join(f.read().splitlines()[-lines:])
        except OSError as e:
            return f"(no tor log: {e})"

    async def stop(self, timeout: float = 10.0) -> None:
        """
        SIGTERM, then SIGKILL after ``timeout`` seconds; returns once it has
        exited.
        """
        for signal, wait in (("TERM", timeout), ("KILL", 5.0)):
            if not self.running:
                return
            transport = self._watcher.transport
            assert transport is not None
            with suppress(ProcessExitedAlready):
                transport.signalProcess(signal)
            deadline = self._reactor.seconds() + wait
            while self.running and self._reactor.seconds() < deadline:
                await deferLater(self._reactor, 0.05, lambda: None)
        self.log.info("tor (PID {pid}) stopped", pid=self.pid)


def find_tor(tor_binary: str | None = None) -> str:
    """
    The tor program to launch: ``tor_binary``, or ``tor`` on ``PATH`` or in
    ``/usr/sbin`` and ``/usr/bin`` (where Debian's ``tor`` package puts it).

    :raises TorNotFound: if there is none.
    """
    if tor_binary is not None:
        if not os.access(tor_binary, os.X_OK):
            raise TorNotFound(f"{tor_binary} is not an executable tor program")
        return tor_binary
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    found = shutil.which("tor", path=search)
    if found is None:
        raise TorNotFound("no tor program found; install it with: apt-get install tor")
    return found


#: Socket buffers of a tor the node launches (and of the test network's
#: client tors).  tor (0.4.9.11) reads a SOCKS connection each time the
#: stream's circuit may send again, all that the socket holds, whether or
#: not the circuit can carry it; with the kernel's buffers on loopback
#: (megabytes) a stream whose far end stopped reading let a writer put
#: 256 MiB into its tor in about 1.5 s, 3 tries in 25.  Capping each
#: socket's buffers caps each read, and the far end's XOFF stops the rest:
#: with 64 KiB, 25 tries in 25 stopped at 3.4 MiB written
#: (``benchmarks/tor_reads.py``; ``docs/tor.rst``).  The cost is on the
#: link to the guard: at most about 1.3 MB/s each way where it has 100 ms
#: of round trip.
BOUNDED_READS_TORRC = ("ConstrainedSockets 1", "ConstrainedSockSize 65536")


def launch_torrc(tor_dir: FilePath[str], extra: Sequence[str]) -> list[str]:
    """
    The configuration of a tor the node launches: its data in
    ``tor_dir/data``, control and SOCKS ports on 127.0.0.1 chosen by tor,
    cookie authentication, socket buffers that bound what it reads ahead
    of its circuits (:data:`BOUNDED_READS_TORRC`), and ``extra`` lines
    (``--tor-option``) last.
    """
    return [
        f"DataDirectory {tor_dir.child('data').path}",
        "ControlPort 127.0.0.1:auto",
        f"ControlPortWriteToFile {tor_dir.child('control-port').path}",
        "CookieAuthentication 1",
        "SocksPort 127.0.0.1:auto ExtendedErrors",
        "RunAsDaemon 0",
        # It exits by itself if we die without stopping it.
        f"__OwningControllerProcess {os.getpid()}",
        "Log notice stdout",
        *BOUNDED_READS_TORRC,
        *extra,
    ]


async def launch_tor(
    reactor: Any,
    tor_dir: FilePath[str],
    *,
    tor_binary: str | None = None,
    torrc_options: Sequence[str] = (),
    timeout: float = 180.0,
    watch: TorBootstrapWatch | None = None,
) -> TxtorconControl:
    """
    Start a tor of our own with its data below ``tor_dir``, connect to its
    control port and wait for its 100 % bootstrap.

    :param torrc_options: extra configuration lines, ``Key Value``.
    :param timeout: seconds for it to open its control port and bootstrap.
    :param watch: follows the bootstrap (logs it, warns when it is slow,
        keeps its state); by default one with the default warning.
    :raises TorNotFound: when there is no tor to run.
    :raises TorUnavailable: when it exits or does not bootstrap in time; the
        message ends with its log.
    """
    binary = find_tor(tor_binary)
    data = tor_dir.child("data")
    data.makedirs(ignoreExistingDirectory=True)
    os.chmod(tor_dir.path, 0o700)
    os.chmod(data.path, 0o700)
    port_file = tor_dir.child("control-port")
    if port_file.exists():
        port_file.remove()
    torrc = tor_dir.child("torrc")
    torrc.setContent(("\n".join(launch_torrc(tor_dir, torrc_options)) + "\n").encode("utf-8"))
    log_path = tor_dir.child("tor.log").path
    watcher = _ExitWatcher()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        process = reactor.spawnProcess(
            watcher,
            binary,
            [binary, "-f", torrc.path, "--ignore-missing-torrc"],
            env={"HOME": tor_dir.path, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
            path=tor_dir.path,
            childFDs={0: null_fd, 1: log_fd, 2: log_fd},
        )
    finally:
        os.close(log_fd)
        os.close(null_fd)
    launched = LaunchedTor(reactor, watcher, process.pid, log_path)
    Logger().info("launched {binary} (PID {pid}) with its data in {dir}",
                  binary=binary, pid=launched.pid, dir=data.path)
    started = reactor.seconds()
    deadline = started + timeout
    try:
        while not port_file.exists() or not port_file.getContent().endswith(b"\n"):
            _check_alive(launched, reactor, deadline, "its control port")
            await deferLater(reactor, 0.05, lambda: None)
        text = port_file.getContent().decode("ascii").strip()
        port = int(text.rpartition(":")[2])
        tor = await txtorcon.connect(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        control = TxtorconControl(reactor, tor, launched)
        try:
            # Tor exits when this connection closes, whatever happens to us.
            await tor.protocol.queue_command("TAKEOWNERSHIP")
            await (watch or TorBootstrapWatch(reactor)).wait(
                control, started, deadline,
                check_alive=lambda: _check_alive(launched, reactor, None, "the bootstrap"),
                tor_log=launched.log_tail,
                log_path=launched.log_path,
            )
            await control.find_socks_port()
        except BaseException:
            await control.close()
            raise
    except BaseException:
        await launched.stop()
        raise
    return control


def _check_alive(launched: LaunchedTor, reactor: Any, deadline: float | None,
                 what: str) -> None:
    if not launched.running:
        raise TorUnavailable(
            f"tor exited while the node waited for {what}; its log:\n" + launched.log_tail()
        )
    if deadline is not None and reactor.seconds() > deadline:
        raise TorUnavailable(
            f"timed out waiting for {what} of tor (PID {launched.pid}); its log:\n"
            + launched.log_tail()
        )


async def attach_tor(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    description: str,
    password: str | None = None,
    timeout: float = 180.0,
    watch: TorBootstrapWatch | None = None,
) -> TxtorconControl:
    """
    Connect to a running tor's control port, authenticate (with tor's
    cookie file, or ``password``) and wait for its 100 % bootstrap.

    :param description: how the user named the endpoint, for messages.
    :param watch: follows the bootstrap; by default one with the default
        warning.
    :raises TorUnavailable: when it cannot be reached, refuses us, or does
        not bootstrap in time.
    """
    password_function = None if password is None else (lambda: password)
    started = reactor.seconds()
    try:
        tor = await txtorcon.connect(reactor, endpoint, password_function=password_function)
    except Exception as e:
        raise TorUnavailable(f"cannot use the tor control port {description}: {e}") from None
    control = TxtorconControl(reactor, tor, None)
    try:
        await (watch or TorBootstrapWatch(reactor)).wait(control, started, started + timeout)
        await control.find_socks_port()
    except BaseException:
        await control.close()
        raise
    return control


# -- The control -------------------------------------------------------------


@implementer(ITorControl)
class TxtorconControl:
    """
    :class:`ITorControl` through txtorcon.

    :param tor: a connected ``txtorcon.Tor``.
    :param launched: the tor process, when we launched it.
    :param defences: what tor is asked to do against floods of connections
        to our onion services.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        tor: Any,
        launched: LaunchedTor | None,
        defences: OnionDefences = DEFAULT_DEFENCES,
    ) -> None:
        self._reactor = reactor
        self._tor = tor
        self._defences = defences
        self.launched = launched
        self._closed = False
        self._published: list[_Onion] = []
        self._socks: IStreamClientEndpoint | None = None

    def bootstrap_phase(self) -> Deferred[TorBootstrap]:
        """
        See :meth:`ITorControl.bootstrap_phase`.
        """
        if self._closed:
            return fail(TorUnavailable("the tor control connection is closed"))

        async def ask() -> TorBootstrap:
            info = await self._tor.protocol.get_info("status/bootstrap-phase")
            return TorBootstrap.parse(str(info.get("status/bootstrap-phase", "")))

        return Deferred.fromCoroutine(ask())

    async def find_socks_port(self) -> IStreamClientEndpoint:
        """
        The tor's SOCKS port, asked of tor once (``net/listeners/socks``:
        the port it bound, which txtorcon cannot read from an ``auto``
        configuration).  Only a tor without one gets one added, by txtorcon.
        Attaching and launching ask it, so that no dial waits on the
        control connection.
        """
        if self._socks is None:
            info = await self._tor.protocol.get_info("net/listeners/socks")
            self._socks = _socks_endpoint(
                self._reactor, str(info.get("net/listeners/socks", ""))
            )
            if self._socks is None:
                self._socks = await self._tor._default_socks_endpoint()
        return self._socks

    def publish_onion(self, virtual_port: int, local_port: int, seed: bytes) -> Deferred[Any]:
        """
        See :meth:`ITorControl.publish_onion`.
        """

        if self._closed:
            return fail(
                CannotListenError(  # type: ignore[no-untyped-call]
                    "onion", virtual_port, "the tor control connection is closed"
                )
            )

        async def publish() -> IOnionService:
            host = onion_host(seed)
            uploads = DescriptorUploads(host[: -len(".onion")])
            protocol = self._tor.protocol
            await protocol.add_event_listener("HS_DESC", uploads.event)
            try:
                defences = await self._add_onion(virtual_port, local_port, seed, host)
                onion = _Onion(protocol, host, self._published, defences)
                self._published.append(onion)
                try:
                    await self._until_reachable(uploads, virtual_port)
                except BaseException:
                    await onion.remove()
                    raise
            finally:
                await protocol.remove_event_listener("HS_DESC", uploads.event)
            return onion

        return Deferred.fromCoroutine(publish())

    async def _add_onion(self, virtual_port: int, local_port: int, seed: bytes,
                         host: str) -> OnionDefences:
        """
        ``ADD_ONION``, with our defences; without proof of work if this
        tor does not know it (older than 0.4.8, or built without it).

        :returns: the defences tor accepted.
        """
        defences = self._defences
        while True:
            command = add_onion_command(tor_private_key(seed), virtual_port, local_port, defences)
            try:
                reply = await self._tor.protocol.queue_command(command)
            except TorProtocolError as e:
                if defences.pow and any(word in str(e) for word in POW_KEYWORDS):
                    self.log.warn(
                        "this tor has no proof-of-work defence for onion services "
                        "(tor 0.4.8 or later has): {error}", error=str(e))
                    defences = evolve(defences, pow=False)
                    continue
                raise CannotListenError(  # type: ignore[no-untyped-call]
                    "onion", virtual_port, e
                ) from None
            if service_id(str(reply)) != host[: -len(".onion")]:
                raise CannotListenError(  # type: ignore[no-untyped-call]
                    "onion", virtual_port, f"unexpected reply from tor: {reply!r}"
                )
            return defences

    async def _until_reachable(self, uploads: DescriptorUploads, virtual_port: int) -> None:
        """
        Return once clients can find the service (see
        :class:`DescriptorUploads`); uploads still in flight
        :data:`UPLOAD_SETTLE` seconds after both descriptors were stored
        are not waited for, as an HSDir of Tor's network may take minutes
        to fail.

        :raises CannotListenError: when the descriptors are not both
            stored within :data:`PUBLISH_PATIENCE` seconds.
        """
        started = self._reactor.seconds()
        stored_at: float | None = None
        while not uploads.reachable:
            now = self._reactor.seconds()
            if not uploads.stored and now - started > PUBLISH_PATIENCE:
                failed = ", ".join(f"{h} ({why})" for h, why in uploads.failures.items())
                raise CannotListenError(  # type: ignore[no-untyped-call]
                    "onion",
                    virtual_port,
                    f"tor did not store the onion service's descriptors in "
                    f"{PUBLISH_PATIENCE:.0f} s (uploads failed at: {failed or 'none yet'}; "
                    f"in flight at: {', '.join(uploads.in_flight()) or 'none'})",
                )
            if uploads.stored:
                if stored_at is None:
                    stored_at = now
                elif now - stored_at > UPLOAD_SETTLE:
                    self.log.info("published without waiting for HSDirs {hsdirs}",
                                  hsdirs=", ".join(uploads.in_flight()))
                    return
            await deferLater(self._reactor, 0.05, lambda: None)

    def onion_endpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        """
        See :meth:`ITorControl.onion_endpoint`.
        """
        return _OnionEndpoint(self, self._tor, host, port)

    def _watch_rendezvous(self, host: str) -> _RendezvousWatch:
        """
        Every :data:`REND_PATIENCE` seconds until stopped, close our
        rendezvous circuits to ``host`` that a dial waits on in vain (see
        :func:`stuck_rendezvous`).

        Tor keeps such a circuit (and the streams waiting on it) until its
        ``SocksTimeout``, two minutes, or longer.  Both cases come from a
        service that has restarted.  Tor used a cached descriptor: the old
        introduction point still has the old service's circuit for a while
        (its teardown crosses three relays, which took 14 s on the test
        network) and acknowledges our introduction, but nothing answers
        it.  Or tor attached the stream to its rendezvous circuit with the
        old service.  Either way tor would make the circuit again from the
        same stale descriptor (seen on the test network: the new circuit
        was acknowledged by the old introduction point and never joined),
        so the descriptor is fetched again first (:meth:`_refetch`), then
        the circuits are closed and tor retries the waiting stream.
        """
        watch = _RendezvousWatch()
        began = datetime.fromtimestamp(self._reactor.seconds(), UTC).replace(tzinfo=None)

        async def unstick() -> None:
            try:
                info = await self._tor.protocol.get_info("circuit-status")
                status = str(info.get("circuit-status", ""))
                stuck = stuck_rendezvous(status, host[: -len(".onion")], began)
                if not stuck:
                    # What tor is doing instead, for whoever finds a dial
                    # that still times out.
                    self.log.info(
                        "dial to {host} pending; its circuits: {circuits}", host=host,
                        circuits="; ".join(line for line in status.splitlines()
                                           if host[: -len(".onion")] in line) or "none",
                    )
                if stuck:
                    await self._refetch(host[: -len(".onion")])
                    if not watch.watching:
                        return  # The dial ended meanwhile.
                for circuit in stuck:
                    self.log.info("closing rendezvous circuit {id} to {host}: the dial has "
                                  "waited on it {seconds:.0f} s and the service never "
                                  "answered", id=circuit, host=host, seconds=REND_PATIENCE)
                    # Counted first: tor can fail the stream before it
                    # answers the command.
                    watch.closed += 1
                    await self._tor.protocol.queue_command(f"CLOSECIRCUIT {circuit}")
            except Exception as e:
                self.log.debug("rendezvous circuits to {host} not checked: {error}",
                               host=host, error=str(e))

        watch.loop = LoopingCall(lambda: Deferred.fromCoroutine(unstick()))
        watch.loop.clock = self._reactor
        watch.loop.start(REND_PATIENCE, now=False)
        return watch

    async def _refetch(self, service_id: str) -> None:
        """
        Have tor fetch the current descriptor of ``service_id`` (``HSFETCH``;
        tor keeps it if newer than the one it holds) and wait until the
        fetch ends, or :data:`REFETCH_PATIENCE` seconds.
        """
        protocol = self._tor.protocol
        ended: Deferred[str] = Deferred()

        def event(text: str) -> None:
            words = text.split()
            if (
                len(words) >= 2
                and words[1] == service_id
                and words[0] in ("RECEIVED", "FAILED")
                and not ended.called
            ):
                ended.callback(words[0])

        await protocol.add_event_listener("HS_DESC", event)
        try:
            await protocol.queue_command(f"HSFETCH {service_id}")
            outcome = await ended.addTimeout(REFETCH_PATIENCE, self._reactor)
            self.log.info("fetched the descriptor of {host}.onion again: {outcome}",
                          host=service_id, outcome=outcome.lower())
        except Exception as e:
            self.log.info("could not fetch the descriptor of {host}.onion again: {error}",
                          host=service_id, error=str(e) or e.__class__.__name__)
        finally:
            await protocol.remove_event_listener("HS_DESC", event)

    def close(self) -> Deferred[None]:
        """
        See :meth:`ITorControl.close`.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        # Tor would forget them with the connection, but only once it has
        # noticed the hang-up; when close fires they must be gone.
        for onion in list(self._published):
            await onion.remove()
        protocol = self._tor.protocol
        if protocol.transport is not None and protocol.transport.connected:
            disconnected = protocol.when_disconnected()
            protocol.transport.loseConnection()
            try:
                await disconnected
            except Exception as e:
                # txtorcon reports even the hang-up we asked for as an error.
                self.log.debug("tor control connection closed: {error}", error=str(e))
        if self.launched is not None:
            await self.launched.stop()
