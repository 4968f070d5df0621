# -*- test-case-name: tests.test_stop -*-
"""
``dspring stop``: stop the node of a data directory and wait until it has
gone, so that a script (or a person) can start it again at once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import TextIO

from twisted.python import usage
from twisted.python.filepath import FilePath

from ..errors import DigitalSpringError
from ..node import DataDirInUse, DataDirLock
from ..node._lock import LOCK_FILE_NAME
from ._base import CommandOptions

#: How often ``stop`` looks whether the node has gone, in seconds.
POLL_INTERVAL = 0.1


class NoNodeRunning(DigitalSpringError):
    """
    No node runs on this data directory.
    """


def _running_pid(data_dir: FilePath[str]) -> int | None:
    """
    The PID of the node that holds ``data_dir``'s lock, or ``None`` when
    none does.

    :raises DigitalSpringError: when the lock is held but the file does not
        name the process (a node still starting).
    """
    if not data_dir.child(LOCK_FILE_NAME).exists():
        return None
    try:
        DataDirLock.acquire(data_dir).release()
    except DataDirInUse:
        holder = data_dir.child(LOCK_FILE_NAME).getContent().decode("ascii", "replace")
        if not holder.strip().isdigit():
            raise DigitalSpringError(
                f"a node is starting on {data_dir.path} and has not said which process it "
                "is; try again in a moment"
            ) from None
        return int(holder)
    return None


def stop_node(
    data_dir: FilePath[str],
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
) -> int:
    """
    Send SIGTERM to the node running on ``data_dir`` and wait until it has
    let go of the data directory's lock (its process has ended).

    :returns: the node's PID.
    :raises NoNodeRunning: when no node runs there.
    :raises DigitalSpringError: when it cannot be signalled, or is still
        running after ``timeout`` seconds.
    """
    pid = _running_pid(data_dir)
    if pid is None:
        raise NoNodeRunning(f"no node is running on {data_dir.path}")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    except PermissionError:
        raise DigitalSpringError(
            f"the node on {data_dir.path} (process {pid}) is not yours to stop"
        ) from None
    deadline = now() + timeout
    while _running_pid(data_dir) is not None:
        if now() >= deadline:
            raise DigitalSpringError(
                f"the node on {data_dir.path} (process {pid}) is still running "
                f"{timeout:g} s after it was asked to stop"
            )
        sleep(POLL_INTERVAL)
    return pid


class StopOptions(CommandOptions):
    """
    ``dspring stop [--timeout SECONDS]``.
    """

    synopsis = "[--timeout SECONDS]"
    longdesc = (
        "Stop the node running on the data directory (SIGTERM, as Ctrl-C does in the "
        "foreground) and wait until it has stopped, so that it can be started again at once."
    )
    optParameters = [["timeout", "t", "60", "Give up waiting after this many seconds."]]

    def postOptions(self) -> None:
        try:
            self["timeout"] = float(self["timeout"])
        except ValueError:
            raise usage.UsageError(
                f"--timeout takes a number of seconds, not {self['timeout']!r}"
            ) from None
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout takes a number of seconds above 0")

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        pid = stop_node(data_dir, self["timeout"])
        out.write(f"stopped the node on {data_dir.path} (process {pid})\n")
