"""
Real nodes for tests: ``twistd -n dspring`` processes on loopback
addresses, and nodes built as ``twistd dspring`` builds them in the test's
own process.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from typing import Any

from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from digitalspring.control import ControlClient
from digitalspring.node import Node
from digitalspring.tap import Options, _make_node

TWISTD = "from twisted.scripts.twistd import run; run()"

_hosts = itertools.count()


def loopback_address() -> str:
    """
    An address of 127.0.0.0/8 that no other node of this test process
    uses, in a /24 of its own: 127.N.M.1, N from the process ID (test runs
    side by side rarely share one) and M counting, never 127.0.0.1.  Linux
    routes all of 127.0.0.0/8 to the loopback interface, so each node and
    each attacker of a test gets an address of its own, and per-address
    limits count them as different peers, as they would be; and the DHT's
    routing table, which keeps at most two contacts of one /24 in a bucket,
    counts them as different networks, as separate machines would be (with
    one /24 for all, a node that joined three others kept two of them
    whenever all three fell in one bucket: ``test_dht_walk`` failed so).
    """
    return f"127.{os.getpid() % 254 + 1}.{next(_hosts) % 254 + 1}.1"


class NodeProcess:
    """
    A ``twistd -n dspring`` process with an unencrypted identity, listening
    on a free TCP port of an address of its own (:func:`loopback_address`),
    and dialling from that address.

    :param host: the address to take again (a node restarted where its
        peers know it); a new one by default.
    :param port: the port to listen on; a free one by default.
    """

    def __init__(
        self, workdir: FilePath[str], name: str, *extra: str, host: str = "", port: int = 0
    ) -> None:
        self.host = host or loopback_address()
        self.dir = workdir.child(name)
        self.dir.makedirs(ignoreExistingDirectory=True)
        self.data_dir = self.dir.child("data")
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                TWISTD,
                "-n",
                "--pidfile",
                self.dir.child("twistd.pid").path,
                "dspring",
                "--data-dir",
                self.data_dir.path,
                "--no-passphrase",
                "--listen",
                f"tcp:{port}:interface={self.host}",
                "--source-address",
                self.host,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.dir.path,
        )
        self.peer_id = ""
        self.address = ""

    def wait_ready(self, timeout: float = 60) -> None:
        """
        Read the log until the node says it is ready.

        :raises AssertionError: with the log, when it does not.
        """
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            ready = re.search(r"node ([a-z2-7]{56}) ready at \['(tcp:[0-9.]+:\d+)'", line)
            if ready:
                self.peer_id, self.address = ready.groups()
                return
        raise AssertionError("node did not start:\n" + "".join(self.log))

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """
        Read the log until a line matches ``pattern``.

        :raises AssertionError: with the log, when none does in time.
        """
        assert self.proc.stdout is not None
        for line in self.log:
            found = re.search(pattern, line)
            if found:
                return found
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no log line matched {pattern!r}:\n" + "".join(self.log))

    def dspring(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """
        Run the ``dspring`` command on this node's data directory.
        """
        return subprocess.run(
            [sys.executable, "-m", "digitalspring", "--data-dir", self.data_dir.path, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> str:
        """
        Stop the process with SIGTERM; its remaining log.
        """
        if self.proc.poll() is None:
            self.proc.terminate()
        rest, _ = self.proc.communicate(timeout=60)
        self.log.append(rest or "")
        return rest or ""


#: The size of each message of a burst: three fragments, so that a kill can
#: fall between two fragments of one message.
BURST_SIZE = 150_000

#: Sends a burst of files through the owner's control API as fast as the
#: owner commits them, then watches the owner's count of what one member
#: has not acknowledged and SIGKILLs that member's process once it
#: acknowledged a few messages and before it acknowledged all: argv is the
#: owner's data dir, the group, the member's peer ID and process ID, the
#: directory of the files and their count.  (The control API takes a text
#: of 64 KiB at most, so the messages go as files.)
_BURST_DRIVER = """
import os, signal, sys
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from digitalspring.control import ControlClient

async def main(reactor):
    data_dir, group, member, pid, files, count = sys.argv[1:]
    count = int(count)
    client = ControlClient(reactor, FilePath(data_dir))
    for i in range(count):
        path = os.path.join(files, "burst-%04d" % i)
        await client.call("send", {"to": group, "path": path})
    while True:
        shown = await client.call("group-show", {"group": group})
        [entry] = [m for m in shown["members"] if m["peer"] == member]
        if entry["undelivered"] <= count - 3:
            os.kill(int(pid), signal.SIGKILL)
            print("killed with", entry["undelivered"], "undelivered", flush=True)
            return

task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
"""


def burst_data(index: int) -> bytes:
    """
    The content of a burst's message ``index``.
    """
    return f"burst {index:04d} ".encode() + bytes([index]) * BURST_SIZE


def burst_then_kill(
    owner: NodeProcess, group: str, member: NodeProcess, workdir: FilePath, count: int
) -> subprocess.CompletedProcess[str]:
    """
    Send ``count`` messages of :func:`burst_data` from ``owner`` to
    ``group``, and SIGKILL ``member``'s process part way through its
    acknowledgements (see :data:`_BURST_DRIVER`).

    :returns: the driver's run; its output says how many messages the
        member had not acknowledged when it was killed.
    """
    files = workdir.child("files")
    files.makedirs()
    for index in range(count):
        files.child(f"burst-{index:04d}").setContent(burst_data(index))
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _BURST_DRIVER,
            owner.data_dir.path,
            group,
            member.peer_id,
            str(member.proc.pid),
            files.path,
            str(count),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def node_in_process(test: TestCase, name: str, *argv: str) -> tuple[Node, ControlClient]:
    """
    A node built as ``twistd dspring`` builds it, in the test's process on
    the global reactor, listening on 127.0.0.1 with a data directory of its
    own and stopped at the test's end, once it is ready; and a client of
    its control API.

    :param argv: more ``twistd dspring`` options.
    """
    data_dir = FilePath(test.mktemp()).child(name)
    options = Options()
    options.parseOptions(
        [
            "--data-dir",
            data_dir.path,
            "--no-passphrase",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            *argv,
        ]
    )
    node = _make_node(options, _reactor())
    node.startService()
    test.addCleanup(node.stopService)
    await node.ready
    return node, ControlClient(_reactor(), data_dir)
