"""
The tutorial (``docs/tutorial.rst``) runs as written: every command of its
``console`` blocks, in order, in one shell, with real node processes on
127.0.0.1, and each printed what the tutorial shows after it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.node import DataDirInUse, DataDirLock
from digitalspring.node._lock import LOCK_FILE_NAME

TUTORIAL = FilePath(__file__).parent().parent().child("docs").child("tutorial.rst")

#: The install steps: the test runs the commands of the environment it runs
#: in (its ``bin`` directory first on ``PATH``) instead.
INSTALL = ("python3 -m venv .venv", ".venv/bin/pip install .", ". .venv/bin/activate")

#: The ports the tutorial's nodes listen on: each replaced by a free one.
PORTS = ("7711", "7712", "7713")

#: What varies from run to run in what a command prints, and the pattern
#: that stands for it in the expected output.
_VARYING = re.compile(
    r"(?P<peer>\b[a-z2-7]{56}\b)"
    r"|(?P<group>\b[0-9a-f]{64}\b)"
    r"|(?P<short>(?<=\s)[0-9a-f]{8}(?=\]))"
    # A received file's ID, as inbox lists it for dspring save.
    r"|(?P<file>(?<=\bid )[0-9a-f]{8}(?=:))"
    r"|(?P<time>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[+-]\d{4})?)"
    r"|(?P<number>(?<=process )\d+|(?<=sequence )\d+|(?<=\(Digital Spring\) )\S+)"
    # Whether the node caught up at start or when asked: the same messages.
    r"|(?P<caught>(?<=caught up )\d+(?= message))"
    r"|(?P<path>/\S*(?=/tutorial/))"
    r"|(?P<elided>\.\.\.)"
)

_PATTERNS = {
    "peer": r"[a-z2-7]{56}",
    "group": r"[0-9a-f]{64}",
    "short": r"[0-9a-f]{8}",
    "file": r"[0-9a-f]{8}",
    "time": r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[+-]\d{4})?",
    "number": r"\S+",
    "caught": r"\d+",
    "path": r"/\S*",
    "elided": r".*",
}


def expected_pattern(line: str) -> re.Pattern[str]:
    """
    A line the tutorial shows, as a pattern that what varies (peer IDs,
    times, process IDs...; ``...`` for anything) matches.
    """
    pattern, end = "", 0
    for found in _VARYING.finditer(line):
        pattern += re.escape(line[end : found.start()])
        pattern += _PATTERNS[str(found.lastgroup)]
        end = found.end()
    return re.compile(pattern + re.escape(line[end:]))


def console_commands(text: str) -> list[tuple[str, list[str]]]:
    """
    The commands of the ``.. code-block:: console`` blocks of ``text``, in
    order, each with the output lines shown after it (a command continued
    with ``\\`` joined into one).
    """
    commands: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() != ".. code-block:: console":
            index += 1
            continue
        index += 1
        while index < len(lines) and (not lines[index].strip() or lines[index][0] == " "):
            line = lines[index].strip()
            index += 1
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\"):
                    command = command[:-1].rstrip() + " " + lines[index].strip()
                    index += 1
                commands.append((command, []))
            elif line:
                commands[-1][1].append(line)
    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop_nodes(directory: FilePath[str]) -> None:
    """
    Stop whatever node still runs on a data directory under ``directory``
    (a tutorial that failed half-way).
    """
    for lock in directory.walk():
        if lock.basename() != LOCK_FILE_NAME:
            continue
        try:
            DataDirLock.acquire(lock.parent()).release()
            continue
        except DataDirInUse:
            pid = int(lock.getContent().strip() or 0)
        if pid:
            os.kill(pid, signal.SIGKILL)


class TutorialTests(SynchronousTestCase):
    def test_commands_parsed(self) -> None:
        """
        The tutorial's console blocks are read as commands with their
        output, continuation lines joined; the install steps are there to
        be skipped, and each port to be replaced.
        """
        commands = console_commands(TUTORIAL.getContent().decode("utf-8"))
        texts = [command for command, _ in commands]
        self.assertEqual(texts[: len(INSTALL)], list(INSTALL))
        self.assertIn(
            "twistd --pidfile alice/twistd.pid --logfile alice/twistd.log "
            "dspring --data-dir alice --listen tcp:7711:interface=127.0.0.1",
            texts,
        )
        self.assertGreater(len(commands), 30)
        for port in PORTS:
            self.assertTrue(any(port in command for command in texts), port)

    def test_expected_pattern(self) -> None:
        """
        Shown output matches what varies in it, and only that.
        """
        shown = '2026-12-02 02:15:33  ["friends" dcc76979] alice: hello, friends'
        pattern = expected_pattern(shown)
        self.assertTrue(
            pattern.fullmatch('2027-01-01 10:00:00  ["friends" 0123abcd] alice: hello, friends')
        )
        self.assertFalse(
            pattern.fullmatch('2027-01-01 10:00:00  ["friends" 0123abcd] alice: hello, foes')
        )
        self.assertTrue(
            expected_pattern("holding:  ... in 1 group").fullmatch("holding:  2 x in 1 group")
        )

    def test_runs_as_written(self) -> None:
        """
        Every command of the tutorial, in order, in one ``bash`` in an
        empty directory (the install steps apart, and free ports for the
        tutorial's), exits 0 and prints the lines the tutorial shows after
        it (in any order: who confirms a message first varies).
        """
        if shutil.which("bash") is None or not os.path.exists(
            os.path.join(os.path.dirname(sys.executable), "dspring")
        ):
            raise self.skipTest("needs bash, and dspring installed beside this Python")
        workdir = FilePath(self.mktemp())
        workdir.makedirs()
        self.addCleanup(_stop_nodes, workdir)
        ports = {port: str(_free_port()) for port in PORTS}
        commands = []
        for command, shown in console_commands(TUTORIAL.getContent().decode("utf-8")):
            if command in INSTALL:
                continue
            for port, free in ports.items():
                command = command.replace(port, free)
                shown = [line.replace(port, free) for line in shown]
            commands.append((command, shown))
        script = ["exec 2>&1"]
        for number, (command, _) in enumerate(commands):
            script += [
                f"echo '@@@ {number}'",
                command,
                f'status=$?; echo; echo "@@@ {number} exit $status"; [ "$status" = 0 ] || exit 1',
            ]
        environment = dict(os.environ)
        environment["PATH"] = os.path.dirname(sys.executable) + os.pathsep + environment["PATH"]
        environment.pop("DSPRING_DIR", None)
        started = time.monotonic()
        run = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=workdir.path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=240,
        )
        outputs = re.split(r"^@@@ (\d+)(?: exit \d+)?$\n?", run.stdout, flags=re.M)
        printed: dict[int, str] = {}
        for number, text in zip(outputs[1::2], outputs[2::2], strict=True):
            printed[int(number)] = printed.get(int(number), "") + text
        for number, (command, shown) in enumerate(commands):
            self.assertIn(f"@@@ {number} exit 0", run.stdout, f"$ {command}\n{run.stdout}")
            lines = printed[number].splitlines()
            for line in shown:
                pattern = expected_pattern(line)
                matching = [each for each in lines if pattern.fullmatch(each.strip())]
                self.assertTrue(
                    matching,
                    f"$ {command}\nprinted no line matching {line!r}:\n{printed[number]}",
                )
                lines.remove(matching[0])
        self.assertEqual(run.returncode, 0, run.stdout)
        self.assertLess(time.monotonic() - started, 90)
