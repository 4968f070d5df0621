# -*- test-case-name: tests.test_demo -*-
"""
The demo's nodes: real ``twistd -n dspring`` processes on 127.0.0.1, each in
a directory of its own under the demo's, driven through their control APIs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath

from ..control import ControlClient, NodeNotRunning
from ..control._api import CONTROL_FILE_NAME
from ..errors import DigitalSpringError

#: How a node process is started: twistd of the Python running the demo,
#: so that a venv's demo runs the venv's node without it being on PATH.
TWISTD = "from twisted.scripts.twistd import run; run()"

#: Seconds a node may take to start, and to stop once asked.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

#: How often a node starting or stopping is looked at, in seconds.
POLL = 0.05


class NodeFailed(DigitalSpringError):
    """
    A demo node did not start, or died.
    """


class DemoNode:
    """
    One node of the demo: a ``twistd -n dspring`` child process in a
    session of its own (so a Ctrl-C in the terminal reaches the demo, which
    stops its nodes, and a node left running by ``--keep`` outlives it),
    its log in ``DIR/twistd.log``.

    :ivar name: what the demo calls it (``alice``).
    :ivar role: what it does in the demo, in words.
    :ivar pids: the process ID of every process started for it.
    :ivar port: the TCP port it listens on, once it started (it keeps it
        when started again, so that its peers find it where they knew it).
    """

    def __init__(self, reactor: Any, root: FilePath[str], name: str, *extra: str) -> None:
        self.reactor = reactor
        self.name = name
        self.dir = root.child(name)
        self.data_dir = self.dir.child("data")
        self.extra = extra
        self.port = 0
        self.peer_id = ""
        self.address = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self._client: ControlClient | None = None

    @property
    def log_file(self) -> FilePath[str]:
        return self.dir.child("twistd.log")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        """
        The node's command line.
        """
        return [
            sys.executable,
            "-c",
            TWISTD,
            "-n",
            "--pidfile",
            self.dir.child("twistd.pid").path,
            "--logfile",
            self.log_file.path,
            "dspring",
            "--data-dir",
            self.data_dir.path,
            "--no-passphrase",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            *self.extra,
        ]

    async def start(self) -> None:
        """
        Start the node and wait until it listens and its control API
        answers.

        :raises NodeFailed: when it exits first, or takes too long.
        """
        self.dir.makedirs(ignoreExistingDirectory=True)
        control = self.data_dir.child(CONTROL_FILE_NAME)
        if control.exists():
            control.remove()  # a node stopped abruptly left it behind
        self._client = None
        with open(self.dir.child("stderr.log").path, "ab") as errors:
            self.proc = subprocess.Popen(  # noqa: S603 - our own Python and arguments
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                cwd=self.dir.path,
                start_new_session=True,
            )
        self.pids.append(self.proc.pid)
        deadline = self.reactor.seconds() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise NodeFailed(
                    f"{self.name}'s node exited with status {self.proc.returncode} as it "
                    f"started:\n{self.log_tail()}"
                )
            if self.reactor.seconds() > deadline:
                raise NodeFailed(f"{self.name}'s node did not start:\n{self.log_tail()}")
            if control.exists():
                try:
                    status = await self.call("status")
                except (NodeNotRunning, DigitalSpringError):
                    status = {}
                if status.get("addresses"):
                    self.peer_id = status["peer_id"]
                    self.address = status["addresses"][0]
                    self.port = int(self.address.rsplit(":", 1)[1])
                    return
            await deferLater(self.reactor, POLL, lambda: None)

    async def stop(self) -> None:
        """
        Stop the node (SIGTERM, then SIGKILL if it is still running after
        :data:`STOP_TIMEOUT`) and wait until its process has ended.
        """
        proc = self.proc
        if proc is None:
            return
        self._client = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = self.reactor.seconds() + STOP_TIMEOUT
            while proc.poll() is None and self.reactor.seconds() < deadline:
                await deferLater(self.reactor, POLL, lambda: None)
        self.kill()

    def kill(self) -> None:
        """
        End the node's process at once if it still runs, and reap it.
        """
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self.proc = None

    def release(self) -> None:
        """
        Leave the node running when the demo ends (``--keep``).
        """
        self.proc = None

    async def call(self, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """
        Call a route of the node's control API.
        """
        return await self.client().call(route, body)

    def client(self) -> ControlClient:
        """
        The node's control API client.
        """
        if self._client is None:
            self._client = ControlClient(self.reactor, self.data_dir)
        return self._client

    async def bytes_sent(self) -> int:
        """
        The bytes the node's secure channels have written so far.
        """
        status = await self.call("status")
        sent: int = status["network"]["bytes_sent"]
        return sent

    def log_tail(self, lines: int = 20) -> str:
        """
        The end of the node's log and of what it wrote to stderr.
        """
        found = []
        for file in (self.log_file, self.dir.child("stderr.log")):
            if file.exists():
                found += file.getContent().decode("utf-8", "replace").splitlines()[-lines:]
        return "\n".join(found) or "(nothing logged)"
