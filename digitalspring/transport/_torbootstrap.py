# -*- test-case-name: tests.test_tor_bootstrap -*-
"""
Tor's bootstrap as a user follows it: tor's own report of how far it has
come (``GETINFO status/bootstrap-phase``), and the watch that waits for
100 %, logs each phase in tor's words, warns once when tor is slow, quoting
what tor complains of, and keeps the latest state for ``dspring status``.
See ``docs/tor.rst``, "Bootstrap".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import frozen
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ._torerrors import TorUnavailable

if TYPE_CHECKING:
    from ._interfaces import ITorControl

#: Seconds from the start of reaching tor after which a tor that has not
#: bootstrapped gets one warning in the node's log (``--tor-bootstrap-warning``).
BOOTSTRAP_WARNING = 120.0

#: Seconds between two questions to tor while it bootstraps.
POLL_INTERVAL = 0.2

#: ``KEY=VALUE`` in a tor status line; a value is a bare word or a quoted
#: string with backslash escapes (control-spec.txt, 2.1 and 5.4).
_FIELD = re.compile(r'([A-Za-z_]+)=("(?:[^"\\]|\\.)*"|\S*)')
_ESCAPE = re.compile(r"\\(.)")

#: The longest text of tor's kept from one field, so that a confused tor
#: cannot fill the node's log or status.
_MAX_FIELD = 200


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = _ESCAPE.sub(r"\1", value[1:-1])
    return value[:_MAX_FIELD]


@frozen
class TorBootstrap:
    """
    How far tor has bootstrapped, as it reports it in
    ``status/bootstrap-phase``, e.g. ``NOTICE BOOTSTRAP PROGRESS=14
    TAG=handshake SUMMARY="Handshaking with a relay"``.  When tor has a
    problem the line is ``WARN`` and carries ``WARNING`` (what went wrong,
    in tor's words), ``REASON``, ``COUNT``, ``RECOMMENDATION`` and the relay
    (``HOSTID``, ``HOSTADDR``).

    :ivar progress: percent, 0 to 100.
    :ivar tag: tor's name for the phase (``handshake``, ``done``).
    :ivar summary: tor's words for the phase (``Handshaking with a relay``).
    :ivar warning: tor's words for its problem, or ``None``.
    """

    progress: int
    tag: str = ""
    summary: str = ""
    warning: str | None = None
    reason: str | None = None
    count: int | None = None
    recommendation: str | None = None
    host: str | None = None
    address: str | None = None

    @classmethod
    def parse(cls, line: str) -> TorBootstrap:
        """
        Read tor's ``status/bootstrap-phase`` line; what it does not say is
        left empty (progress 0 when there is none), and nothing raises.
        """
        fields = {key.upper(): _unquote(value) for key, value in _FIELD.findall(line)}

        def number(key: str) -> int | None:
            value = fields.get(key, "")
            return int(value) if value.isdigit() and len(value) < 10 else None

        return cls(
            progress=min(number("PROGRESS") or 0, 100),
            tag=fields.get("TAG", ""),
            summary=fields.get("SUMMARY", ""),
            warning=fields.get("WARNING"),
            reason=fields.get("REASON"),
            count=number("COUNT"),
            recommendation=fields.get("RECOMMENDATION"),
            host=fields.get("HOSTID"),
            address=fields.get("HOSTADDR"),
        )

    @property
    def done(self) -> bool:
        """
        Whether tor has bootstrapped (100 %).
        """
        return self.progress >= 100

    def describe(self) -> str:
        """
        ``14% (Handshaking with a relay)``.
        """
        return f"{self.progress}% ({self.summary or self.tag or 'starting'})"

    def complaint(self) -> str | None:
        """
        What tor complains of, worded as tor's own log words it ("Problem
        bootstrapping. Stuck at 14% (handshake): Handshaking with a relay.
        (Connection refused; CONNECTREFUSED; count 5; recommendation warn;
        host ... at ...)"), or ``None`` when tor reports no problem.
        """
        if self.warning is None:
            return None
        details = [self.warning]
        if self.reason:
            details.append(self.reason)
        if self.count is not None:
            details.append(f"count {self.count}")
        if self.recommendation:
            details.append(f"recommendation {self.recommendation}")
        if self.host or self.address:
            details.append(f"host {self.host or '?'} at {self.address or '?'}")
        return (
            f"Problem bootstrapping. Stuck at {self.progress}% ({self.tag}): "
            f"{self.summary}. ({'; '.join(details)})"
        )


def last_warning(tor_log: str) -> str | None:
    """
    The last ``[warn]`` or ``[err]`` line of a tor log, without its
    timestamp, or ``None``.
    """
    for line in reversed(tor_log.splitlines()):
        for level in ("[err] ", "[warn] "):
            if level in line:
                return line.split(level, 1)[1].strip()[: 2 * _MAX_FIELD] or None
    return None


def _alive() -> None:
    """
    A tor the node did not launch is not watched for its exit.
    """


class TorBootstrapWatch:
    """
    Waits for a tor to bootstrap, for a user to follow: each new phase is
    logged with tor's summary; ``warning_after`` seconds after the node
    began reaching tor, a tor still short of 100 % gets one warning quoting
    its complaint; at the deadline the wait fails with the complaint.
    Between times, :attr:`state` and :attr:`complaint` are what ``dspring
    status`` shows.

    :param clock: the reactor's ``IReactorTime``.
    :param warning_after: seconds before the warning.
    :ivar state: tor's latest report, or ``None`` before its first.
    :ivar complaint: what tor complains of in its latest report; once
        the warning was given with a line of a launched tor's log (its
        report naming no problem), that line; ``None`` otherwise.
    :ivar warned: whether the warning was logged.
    """

    log = Logger()

    def __init__(self, clock: Any, warning_after: float = BOOTSTRAP_WARNING) -> None:
        self._clock = clock
        self.warning_after = warning_after
        self.state: TorBootstrap | None = None
        self.complaint: str | None = None
        self.warned = False

    async def wait(
        self,
        control: ITorControl,
        started: float,
        deadline: float,
        *,
        check_alive: Callable[[], None] = _alive,
        tor_log: Callable[[], str] | None = None,
        log_path: str | None = None,
    ) -> None:
        """
        Return once tor has bootstrapped.

        :param started: when (clock seconds) the node began reaching tor;
            the warning comes ``warning_after`` seconds later.
        :param deadline: when (clock seconds) to give up.
        :param check_alive: raises :class:`TorUnavailable` if the tor the
            node launched has exited.
        :param tor_log: the end of a launched tor's log, quoted when tor's
            report names no problem.
        :param log_path: where a launched tor's log is, named in the
            timeout's message (which stays one line).
        :raises TorUnavailable: at the deadline, with how far tor came and
            its complaint, or when tor goes away.
        """
        last: tuple[int, str] | None = None
        while True:
            try:
                state = await control.bootstrap_phase()
            except TorUnavailable:
                raise
            except Exception as e:
                check_alive()
                raise TorUnavailable(
                    f"lost tor's control connection while tor bootstrapped: {e}"
                ) from None
            self.state = state
            complaint = state.complaint()
            if complaint is not None or not self.warned:
                # Once warned with a line of tor's log, that line stays
                # until tor's report names a problem itself.
                self.complaint = complaint
            if (state.progress, state.tag) != last:
                last = (state.progress, state.tag)
                self.log.info("tor bootstrapped {progress}", progress=state.describe())
            if state.done:
                return
            check_alive()
            now = self._clock.seconds()
            if now > deadline:
                raise TorUnavailable(
                    self._timeout_message(state, now - started, tor_log, log_path)
                )
            if not self.warned and now - started >= self.warning_after:
                self._warn(state, now - started, tor_log)
            await deferLater(self._clock, POLL_INTERVAL, lambda: None)

    def _quote(self, state: TorBootstrap, tor_log: Callable[[], str] | None) -> str | None:
        return state.complaint() or (None if tor_log is None else last_warning(tor_log()))

    def _warn(self, state: TorBootstrap, elapsed: float,
              tor_log: Callable[[], str] | None) -> None:
        self.warned = True
        self.complaint = self._quote(state, tor_log)
        self.log.warn(
            "tor has not bootstrapped after {seconds:.0f} s: it is at {progress}; "
            "tor says: {complaint} (is this machine online? does a firewall block "
            "tor? see docs/tor.rst, \"Bootstrap\")",
            seconds=elapsed,
            progress=state.describe(),
            complaint=self.complaint or "nothing about a problem",
        )

    def _timeout_message(self, state: TorBootstrap, elapsed: float,
                         tor_log: Callable[[], str] | None, log_path: str | None) -> str:
        complaint = self._quote(state, tor_log)
        message = (
            f"tor did not bootstrap in {elapsed:.0f} s: it stopped at {state.describe()}; "
            f"tor says: {complaint or 'nothing about a problem'}"
        )
        if log_path is not None:
            message += f" (tor's log: {log_path})"
        return message

    def as_json(self, reached: bool) -> dict[str, Any]:
        """
        The state for ``dspring status``: ``state`` (``starting`` before
        tor's first report, ``bootstrapping``, ``ready`` once ``reached``),
        tor's ``progress``, ``tag`` and ``summary`` (``None`` when
        unknown), its ``complaint`` and whether the node ``warned``.
        """
        state = self.state
        if reached:
            name = "ready"
        else:
            name = "starting" if state is None else "bootstrapping"
        return {
            "state": name,
            "progress": None if state is None else state.progress,
            "tag": None if state is None else state.tag,
            "summary": None if state is None else state.summary,
            "complaint": self.complaint,
            "warned": self.warned,
        }
