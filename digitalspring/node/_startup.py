# -*- test-case-name: tests.test_startup -*-
"""
Telling whoever started a node under twistd whether it started.

twistd daemonizes by forking: the parent waits on a status pipe for the
child's word, then exits 0 if the child wrote ``0`` and 1 (printing the
rest of what it wrote) otherwise.  twistd writes the ``0`` itself as soon
as the services' ``startService`` has returned, which for a node is before
any port is bound or tor is reached.  :class:`StartupReport` takes the pipe
from twistd's configuration before that, and writes to it once the node is
ready, or has failed.

In the foreground (``twistd -n``) a failed start is one line on stderr, the
reactor is stopped, and the process exits with status 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import DigitalSpringError

#: twistd's parent reads at most this many bytes from the status pipe.
_PIPE_MESSAGE = 100


class StartupReport(Service):
    """
    Reports the outcome of ``ready`` to twistd's parent process (through the
    status pipe in ``twistd_config``) or to ``stderr``, and on failure stops
    the reactor and has the process exit with status 1.

    :param ready: fires when the node has started, or fails with why not.
    :param twistd_config: twistd's options, where twistd keeps the status
        pipe once it has daemonized; ``None`` outside twistd.
    :param stderr: where a failure is said in the foreground: the terminal's
        stderr, taken before twistd sends ``sys.stderr`` to its log.
    :param exit_with: called with the exit status once the node has failed;
        it must make the process end with that status once twistd is done.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        ready: Deferred[None],
        twistd_config: MutableMapping[str, Any] | None,
        stderr: TextIO,
        exit_with: Callable[[int], None],
    ) -> None:
        self._reactor = reactor
        self._ready = ready
        self._config = twistd_config
        self._stderr = stderr
        self._exit_with = exit_with
        self._pipe: int | None = None
        self._reported = False

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._config is not None and self._config.get("statusPipe") is not None:
            # Ours now: twistd skips its own "0" when it finds None here.
            self._pipe, self._config["statusPipe"] = self._config["statusPipe"], None
        self._ready.addCallbacks(self._started, self._failed)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if not self._reported:
            # Stopped (by a signal) before it could say it had started.
            self._report(b"1 dspring: stopped before it started")

    def _started(self, result: None) -> None:
        self._report(b"0")

    def _failed(self, failure: Failure) -> None:
        if isinstance(failure.value, DigitalSpringError):
            reason = str(failure.value)
        else:
            self.log.failure("the node failed to start", failure)
            reason = "the node failed to start; see its log"
        if self._pipe is None:
            self._stderr.write(f"dspring: error: {reason}\n")
            self._stderr.flush()
        # twistd's parent prints this after "An error has occurred: ".
        self._report(b"1 " + reason.encode("utf-8", "replace"))
        self._exit_with(1)
        self._reactor.callWhenRunning(self._reactor.stop)

    def _report(self, message: bytes) -> None:
        self._reported = True
        if self._pipe is None:
            return
        pipe, self._pipe = self._pipe, None
        try:
            os.write(pipe, message[:_PIPE_MESSAGE])
        finally:
            os.close(pipe)
