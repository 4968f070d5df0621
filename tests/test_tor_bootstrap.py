"""
Tests for tor's bootstrap as a user follows it
(:mod:`digitalspring.transport._torbootstrap`): tor's reports parsed, each
phase logged in tor's words, one warning quoting tor's complaint at the
warning deadline, the complaint in the error at the timeout, the option
that sets the deadline, and the state in ``Node.status()`` and ``dspring
status``.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.channel import ConnectionPool
from digitalspring.cli import main
from digitalspring.control import ControlService
from digitalspring.dht import DirectoryChain
from digitalspring.identity import Identity
from digitalspring.node import Node
from digitalspring.tap import Options, build_transports
from digitalspring.testing import FakeOnionNetwork, FakeTorControl
from digitalspring.transport import (
    BOOTSTRAP_WARNING,
    ITorControl,
    TorBootstrap,
    TorBootstrapWatch,
    TorTransport,
    TorTransportPlugin,
    TorUnavailable,
    TransportConfigError,
    TransportContext,
    TxtorconControl,
)
from digitalspring.transport._torbootstrap import POLL_INTERVAL, last_warning

#: What tor reported when the user's node stopped at 14 % (no network).
NOTICE = 'NOTICE BOOTSTRAP PROGRESS=14 TAG=handshake SUMMARY="Handshaking with a relay"'
WARN = (
    'WARN BOOTSTRAP PROGRESS=14 TAG=handshake SUMMARY="Handshaking with a relay" '
    'WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=5 RECOMMENDATION=warn '
    "HOSTID=0011BD2485AD45D984EC4159C88FC066E5E3300E HOSTADDR=198.51.100.7:443"
)
DONE = 'NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"'
#: Tor's own log line for ``WARN``, as tor writes it.
TOR_COMPLAINT = (
    "Problem bootstrapping. Stuck at 14% (handshake): Handshaking with a relay. "
    "(Connection refused; CONNECTREFUSED; count 5; recommendation warn; "
    "host 0011BD2485AD45D984EC4159C88FC066E5E3300E at 198.51.100.7:443)"
)


class ParseTests(SynchronousTestCase):
    """
    ``status/bootstrap-phase`` lines as tor writes them.
    """

    def test_notice(self) -> None:
        """
        A phase without a problem: progress, tag and summary, no complaint.
        """
        phase = TorBootstrap.parse(NOTICE)
        self.assertEqual(
            (phase.progress, phase.tag, phase.summary, phase.warning),
            (14, "handshake", "Handshaking with a relay", None),
        )
        self.assertFalse(phase.done)
        self.assertIsNone(phase.complaint())
        self.assertEqual(phase.describe(), "14% (Handshaking with a relay)")

    def test_warn(self) -> None:
        """
        A phase with a problem carries tor's words for it, the reason, the
        count, the recommendation and the relay; the complaint reads as
        tor's own log line.
        """
        phase = TorBootstrap.parse(WARN)
        self.assertEqual(phase.warning, "Connection refused")
        self.assertEqual(phase.reason, "CONNECTREFUSED")
        self.assertEqual(phase.count, 5)
        self.assertEqual(phase.recommendation, "warn")
        self.assertEqual(phase.address, "198.51.100.7:443")
        self.assertEqual(phase.complaint(), TOR_COMPLAINT)

    def test_done(self) -> None:
        """
        100 % with tag ``done`` is a tor that has bootstrapped.
        """
        phase = TorBootstrap.parse(DONE)
        self.assertTrue(phase.done)
        self.assertEqual(phase.describe(), "100% (Done)")

    def test_odd_lines(self) -> None:
        """
        Escaped quotes are read; an empty line, a missing or non-numeric
        progress is 0 %; a progress above 100 is 100 %; a huge field is cut.
        """
        phase = TorBootstrap.parse(r'NOTICE BOOTSTRAP PROGRESS=5 SUMMARY="say \"hi\" \\ ok"')
        self.assertEqual(phase.summary, 'say "hi" \\ ok')
        self.assertEqual(TorBootstrap.parse("").progress, 0)
        self.assertEqual(TorBootstrap.parse("PROGRESS=abc").progress, 0)
        self.assertEqual(TorBootstrap.parse("PROGRESS=999").progress, 100)
        self.assertEqual(len(TorBootstrap.parse("SUMMARY=" + "x" * 10_000).summary), 200)

    @given(st.text())
    def test_any_text(self, line: str) -> None:
        """
        Whatever tor says, parsing gives a progress from 0 to 100 and never
        raises.
        """
        phase = TorBootstrap.parse(line)
        self.assertTrue(0 <= phase.progress <= 100)
        phase.describe()
        phase.complaint()

    def test_last_warning(self) -> None:
        """
        From a launched tor's log, the last warning or error, without its
        timestamp; none in a log of notices.
        """
        log = "\n".join([
            "Dec 01 07:00:01.000 [notice] Bootstrapped 14% (handshake): Handshaking",
            "Dec 01 07:00:02.000 [warn] Problem bootstrapping. Stuck at 14% (handshake)",
            "Dec 01 07:00:03.000 [notice] Delaying directory fetches: No running bridges",
        ])
        self.assertEqual(last_warning(log), "Problem bootstrapping. Stuck at 14% (handshake)")
        self.assertIsNone(last_warning(log.splitlines()[0]))


class _Events:
    """
    The node's log events while a test runs.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self, level: str) -> list[str]:
        return [
            formatEvent(event) for event in self.events
            if event.get("log_level") is not None and event["log_level"].name == level
            and event.get("log_namespace", "").startswith("digitalspring.transport._torbootstrap")
        ]


class WatchTests(SynchronousTestCase):
    """
    :class:`TorBootstrapWatch` on a clock, with the fake tor control.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.control = FakeTorControl(self.clock, FakeOnionNetwork())
        self.log = _Events(self)

    def wait(self, watch: TorBootstrapWatch, timeout: float = 180.0,
             **kwargs: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(
            watch.wait(self.control, self.clock.seconds(), self.clock.seconds() + timeout,
                       **kwargs)
        )

    def test_progress_in_tors_words(self) -> None:
        """
        Each new phase is logged once, with tor's summary; the wait ends at
        100 % without a warning.
        """
        self.control.bootstrap = TorBootstrap.parse(NOTICE)
        watch = TorBootstrapWatch(self.clock)
        waiting = self.wait(watch)
        self.clock.pump([POLL_INTERVAL] * 10)
        self.control.bootstrap = TorBootstrap.parse(DONE)
        self.clock.advance(POLL_INTERVAL)
        self.successResultOf(waiting)
        self.assertEqual(self.log.texts("info"), [
            "tor bootstrapped 14% (Handshaking with a relay)",
            "tor bootstrapped 100% (Done)",
        ])
        self.assertEqual(self.log.texts("warn"), [])
        self.assertFalse(watch.warned)

    def test_one_warning_quoting_tor(self) -> None:
        """
        A tor stuck at 14 % gets no warning before the deadline (2 minutes),
        then one, quoting tor's complaint; none more while it keeps
        waiting, though the complaint (for ``dspring status``) follows
        tor's latest report.
        """
        self.control.bootstrap = TorBootstrap.parse(WARN)
        watch = TorBootstrapWatch(self.clock)
        self.assertEqual(watch.warning_after, BOOTSTRAP_WARNING)
        waiting = self.wait(watch)
        self.clock.pump([POLL_INTERVAL] * int((BOOTSTRAP_WARNING - 1) / POLL_INTERVAL))
        self.assertEqual(self.log.texts("warn"), [])
        self.clock.pump([POLL_INTERVAL] * int(2 / POLL_INTERVAL))
        [warning] = self.log.texts("warn")
        self.assertIn("tor has not bootstrapped after 120 s", warning)
        self.assertIn("it is at 14% (Handshaking with a relay)", warning)
        self.assertIn("tor says: " + TOR_COMPLAINT, warning)
        self.clock.pump([POLL_INTERVAL] * int(50 / POLL_INTERVAL))
        self.assertEqual(len(self.log.texts("warn")), 1)
        self.assertTrue(watch.warned)
        self.assertEqual(watch.complaint, TOR_COMPLAINT)
        self.control.bootstrap = TorBootstrap.parse(WARN.replace("COUNT=5", "COUNT=9"))
        self.clock.pump([POLL_INTERVAL] * 5)
        self.assertEqual(watch.complaint, TOR_COMPLAINT.replace("count 5", "count 9"))
        self.assertEqual(len(self.log.texts("warn")), 1)
        self.assertNoResult(waiting)
        self.control.bootstrap = TorBootstrap.parse(DONE)
        self.clock.advance(POLL_INTERVAL)
        self.successResultOf(waiting)

    def test_warning_deadline_configurable(self) -> None:
        """
        ``warning_after`` moves the warning; it counts from when the node
        began reaching tor, not from the first report.
        """
        self.control.bootstrap = TorBootstrap.parse(NOTICE)
        watch = TorBootstrapWatch(self.clock, warning_after=30)
        started = self.clock.seconds()
        self.clock.advance(20)
        waiting = Deferred.fromCoroutine(watch.wait(self.control, started, started + 180))
        self.clock.pump([POLL_INTERVAL] * int(9 / POLL_INTERVAL))
        self.assertEqual(self.log.texts("warn"), [])
        self.clock.pump([POLL_INTERVAL] * int(2 / POLL_INTERVAL))
        self.assertEqual(len(self.log.texts("warn")), 1)
        self.assertNoResult(waiting)
        self.control.bootstrap = TorBootstrap.parse(DONE)
        self.clock.advance(POLL_INTERVAL)
        self.successResultOf(waiting)

    def test_timeout_quotes_tor(self) -> None:
        """
        At the timeout the start fails: ``TorUnavailable`` says how far tor
        came and quotes its complaint.
        """
        self.control.bootstrap = TorBootstrap.parse(WARN)
        waiting = self.wait(TorBootstrapWatch(self.clock))
        self.clock.pump([POLL_INTERVAL] * int(181 / POLL_INTERVAL))
        error = self.failureResultOf(waiting, TorUnavailable).value
        self.assertIn("tor did not bootstrap in 180 s", str(error))
        self.assertIn("it stopped at 14% (Handshaking with a relay)", str(error))
        self.assertIn("tor says: " + TOR_COMPLAINT, str(error))

    def test_launched_tor_log_quoted(self) -> None:
        """
        When tor's report names no problem, a launched tor's last warning
        in its log is quoted instead; the timeout's message, one line,
        names the log file.
        """
        self.control.bootstrap = TorBootstrap.parse(NOTICE)
        log = "Dec 01 07:00:02.000 [warn] Problem bootstrapping. Stuck at 14% (handshake)"
        watch = TorBootstrapWatch(self.clock)
        waiting = self.wait(watch, tor_log=lambda: log, log_path="/d/tor/tor.log")
        self.clock.pump([POLL_INTERVAL] * int(121 / POLL_INTERVAL))
        [warning] = self.log.texts("warn")
        self.assertIn("tor says: Problem bootstrapping. Stuck at 14% (handshake)", warning)
        self.assertEqual(watch.complaint, "Problem bootstrapping. Stuck at 14% (handshake)")
        self.clock.pump([POLL_INTERVAL] * int(60 / POLL_INTERVAL))
        error = str(self.failureResultOf(waiting, TorUnavailable).value)
        self.assertIn("tor says: Problem bootstrapping. Stuck at 14% (handshake)", error)
        self.assertTrue(error.endswith(" (tor's log: /d/tor/tor.log)"), error)
        self.assertNotIn("\n", error)

    def test_no_complaint(self) -> None:
        """
        A tor that names no problem (and no log to read) is said to.
        """
        self.control.bootstrap = TorBootstrap.parse(NOTICE)
        self.wait(TorBootstrapWatch(self.clock, warning_after=1))
        self.clock.pump([POLL_INTERVAL] * 10)
        [warning] = self.log.texts("warn")
        self.assertIn("tor says: nothing about a problem", warning)

    def test_tor_gone(self) -> None:
        """
        A launched tor that exits ends the wait with the launcher's error;
        a control connection that fails otherwise is ``TorUnavailable``.
        """
        exited = TorUnavailable("tor exited while the node waited for the bootstrap")

        def check_alive() -> None:
            raise exited

        self.control.bootstrap = TorBootstrap.parse(NOTICE)
        waiting = self.wait(TorBootstrapWatch(self.clock), check_alive=check_alive)
        self.assertIs(self.failureResultOf(waiting, TorUnavailable).value, exited)

        def broken() -> Deferred[TorBootstrap]:
            return fail(ConnectionError("connection lost"))

        self.control.bootstrap_phase = broken  # type: ignore[method-assign]
        waiting = self.wait(TorBootstrapWatch(self.clock))
        error = str(self.failureResultOf(waiting, TorUnavailable).value)
        self.assertIn("lost tor's control connection while tor bootstrapped", error)


class TxtorconBootstrapPhaseTests(SynchronousTestCase):
    """
    :meth:`TxtorconControl.bootstrap_phase` asks tor and parses its answer.
    """

    def test_asks_tor(self) -> None:
        """
        It is ``GETINFO status/bootstrap-phase``, parsed; closed, it fails
        with ``TorUnavailable`` without asking.
        """
        asked: list[str] = []

        def get_info(key: str) -> Deferred[dict[str, str]]:
            asked.append(key)
            return succeed({key: WARN})

        protocol = type("Protocol", (), {"get_info": staticmethod(get_info)})()
        control = TxtorconControl(Clock(), type("Tor", (), {"protocol": protocol})(), None)
        phase = self.successResultOf(control.bootstrap_phase())
        self.assertEqual(phase, TorBootstrap.parse(WARN))
        self.assertEqual(asked, ["status/bootstrap-phase"])
        control._closed = True
        self.failureResultOf(control.bootstrap_phase(), TorUnavailable)
        self.assertEqual(len(asked), 1)


class OptionTests(SynchronousTestCase):
    """
    ``--tor-bootstrap-warning`` and the plugin's ``bootstrap_warning``.
    """

    def _make(self, **options: Any) -> TorTransport:
        context = TransportContext(Clock(), FilePath(self.mktemp()), options)
        return TorTransportPlugin().make_transport(context)

    def test_plugin(self) -> None:
        """
        The plugin gives its transport a watch with the warning deadline
        asked (2 minutes by default), and refuses one that is not a number
        of seconds above 0.
        """
        self.assertEqual(self._make().bootstrap.warning_after, 120)
        self.assertEqual(self._make(bootstrap_warning=30).bootstrap.warning_after, 30)
        for bad in (0, -1, "30"):
            with self.assertRaises(TransportConfigError, msg=repr(bad)):
                self._make(bootstrap_warning=bad)

    def test_twistd_option(self) -> None:
        """
        ``--tor-bootstrap-warning`` reaches the tor transport; a bad value
        is a usage error in plain words.
        """
        options = Options()
        options.parseOptions(
            ["--data-dir", self.mktemp(), "--listen", "tor:80", "--tor-bootstrap-warning", "45"]
        )
        tor = build_transports(options, Clock())["tor"]
        assert isinstance(tor, TorTransport)
        self.assertEqual(tor.bootstrap.warning_after, 45)
        for bad in ("abc", "0"):
            with self.assertRaises(usage.UsageError) as caught:
                Options().parseOptions(["--data-dir", self.mktemp(),
                                        "--tor-bootstrap-warning", bad])
            self.assertIn("--tor-bootstrap-warning takes", str(caught.exception))


class NodeStatusTests(SynchronousTestCase):
    """
    ``Node.status()`` shows how far tor has come, from the start of the
    node until tor is reached.
    """

    def test_status_while_bootstrapping(self) -> None:
        """
        Before tor reports, the state is ``starting``; while it is stuck,
        ``bootstrapping`` with tor's progress and summary, then its
        complaint; once reached, ``ready`` at 100 % and the node is ready.
        """
        reactor = MemoryReactorClock()
        control = FakeTorControl(reactor, FakeOnionNetwork())
        control.bootstrap = TorBootstrap.parse(WARN)
        watch = TorBootstrapWatch(reactor, warning_after=60)
        launching: Deferred[None] = Deferred()

        async def reach() -> ITorControl:
            started = reactor.seconds()
            await launching
            await watch.wait(control, started, started + 180)
            return control

        tor = TorTransport(reactor, lambda: Deferred.fromCoroutine(reach()), bootstrap=watch)
        identity = Identity.from_seed(bytes(32))
        pool = ConnectionPool(identity, reactor, {"tor": tor}, DirectoryChain([]))
        node = Node(identity, reactor, {"tor": tor}, [], pool)
        node.startService()
        self.addCleanup(node.stopService)
        self.assertEqual(node.status()["bootstrap"]["tor"]["state"], "starting")
        launching.callback(None)
        status = node.status()["bootstrap"]["tor"]
        self.assertEqual(
            (status["state"], status["progress"], status["summary"]),
            ("bootstrapping", 14, "Handshaking with a relay"),
        )
        self.assertEqual(status["complaint"], TOR_COMPLAINT)
        reactor.pump([POLL_INTERVAL] * int(61 / POLL_INTERVAL))
        self.assertTrue(node.status()["bootstrap"]["tor"]["warned"])
        self.assertNoResult(node.ready)
        control.bootstrap = TorBootstrap.parse(DONE)
        reactor.pump([POLL_INTERVAL] * 2)
        status = node.status()["bootstrap"]["tor"]
        self.assertEqual((status["state"], status["progress"]), ("ready", 100))
        self.successResultOf(node.ready)


class StatusOutputTests(TestCase):
    """
    ``dspring status`` prints tor's bootstrap state.
    """

    async def test_status_shows_tor(self) -> None:
        """
        A node whose tor is stuck shows ``tor:`` with the state, progress
        and tor's summary, and tor's complaint on the next line; a node
        whose tor is ready shows that alone.
        """
        from twisted.internet import reactor

        reports = [
            {"state": "bootstrapping", "progress": 14, "tag": "handshake",
             "summary": "Handshaking with a relay", "complaint": TOR_COMPLAINT,
             "warned": True},
            {"state": "ready", "progress": 100, "tag": "done", "summary": "Done",
             "complaint": None, "warned": False},
        ]

        async def status(body: dict[str, Any]) -> dict[str, Any]:
            return {"peer_id": "x", "addresses": [], "connections": [],
                    "bootstrap": {"tor": reports[0]}}

        data_dir = FilePath(self.mktemp())
        self.assertEqual(main(["-d", data_dir.path, "init", "--no-passphrase"], io.StringIO()), 0)
        service = ControlService(reactor, data_dir, {"status": (b"GET", status)})
        service.startService()
        self.addCleanup(service.stopService)
        assert service._starting is not None
        await service._starting

        async def run() -> list[str]:
            out, err, code = await getProcessOutputAndValue(
                sys.executable, ["-m", "digitalspring", "--data-dir", data_dir.path, "status"],
                env=dict(os.environ), reactor=reactor,
            )
            self.assertEqual((code, err), (0, b""))
            return out.decode().splitlines()

        lines = await run()
        at = lines.index("tor:         bootstrapping, 14% (Handshaking with a relay)")
        self.assertEqual(lines[at + 1], "             tor says: " + TOR_COMPLAINT)
        reports.pop(0)
        lines = await run()
        self.assertIn("tor:         ready, 100% (Done)", lines)
        self.assertFalse(any("tor says" in line for line in lines), lines)

