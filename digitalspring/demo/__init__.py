# -*- test-case-name: tests.test_demo -*-
"""
``dspring demo``: Digital Spring at work in one command (``docs/demo.rst``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from ..errors import DigitalSpringError
from ._nodes import DemoNode, NodeFailed
from ._screen import Screen
from ._script import Demo, DemoFailed


def _dspring() -> str:
    """
    How to run ``dspring`` from here: the venv's script beside this Python,
    else the module.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "dspring")
    return beside if os.path.exists(beside) else f"{sys.executable} -m digitalspring"


def _kept(demo: Demo, out: TextIO) -> None:
    """
    Say where the nodes left running are, and how to stop them.
    """
    dspring = _dspring()
    out.write("\nThe five nodes keep running (--keep). Their data directories:\n")
    for name, node in demo.nodes.items():
        out.write(f"  {name:<6} {node.data_dir.path}\n")
    alice, dave = demo.nodes["alice"].data_dir.path, demo.nodes["dave"].data_dir.path
    out.write(f"Look around, e.g.:\n  {dspring} --data-dir {dave} inbox\n")
    out.write(f"  {dspring} --data-dir {alice} group show friends\n")
    out.write(
        f"alice's web client, in a browser on this machine (a one-time login link; "
        f"'{dspring} --data-dir {alice} web' prints another):\n  {demo.web_url}\n"
    )
    out.write("Stop them all, then remove the directory, with:\n")
    names = " ".join(demo.nodes)
    out.write(
        f"  for n in {names}; do {dspring} --data-dir {demo.root.path}/$n/data stop; done\n"
        f"  rm -r {demo.root.path}\n"
    )


def run_demo(
    out: TextIO,
    keep: bool = False,
    directory: str | None = None,
    summary: str | None = None,
) -> None:
    """
    Run the demo to its end, telling ``out``; stop its nodes and remove
    its directory unless ``keep``.

    :param directory: the demo's directory, which must not exist yet (it
        is made); a new temporary one by default.
    :param summary: write what was done and measured there, as JSON.
    :raises KeyboardInterrupt: when it was interrupted (Ctrl-C, SIGTERM),
        once its nodes are stopped and its directory removed.
    :raises DigitalSpringError: when something it shows did not happen.
    """
    if directory is None:
        root = FilePath(tempfile.mkdtemp(prefix="dspring-demo-"))
    else:
        root = FilePath(os.path.abspath(directory))
        try:
            os.mkdir(root.path, 0o700)
        except OSError as e:
            raise DigitalSpringError(f"cannot make {root.path}: {e.strerror}") from None
    screen = Screen(out, out.isatty())
    outcome: dict[str, Any] = {}
    demos: list[Demo] = []

    def main(reactor: Any) -> Deferred[None]:
        demo = Demo(reactor, root, screen, keep)
        demos.append(demo)
        cleaned: Deferred[None] = Deferred()

        async def whole() -> None:
            kept = False
            try:
                await demo.run()
                if keep:
                    await demo.keep_running()
                    kept = True
            finally:
                if kept:
                    for node in demo.nodes.values():
                        node.release()
                else:
                    await demo.stop_all()
                cleaned.callback(None)

        done = Deferred.fromCoroutine(whole())

        def interrupted() -> Deferred[None] | None:
            if done.called:
                return None
            outcome["interrupted"] = True
            done.cancel()
            return cleaned

        reactor.addSystemEventTrigger("before", "shutdown", interrupted)

        def failed(failure: Failure) -> None:
            outcome["failure"] = failure

        done.addErrback(failed)
        return done

    try:
        react(main)
    except SystemExit as e:
        if e.code:
            raise
    finally:
        succeeded = not outcome and demos
        if demos and not (keep and succeeded):
            demos[0].kill_all()
        if demos and summary is not None:
            demos[0].write_summary(FilePath(os.path.abspath(summary)))
        if not (keep and succeeded):
            root.remove()
    demo = demos[0]
    if outcome.get("interrupted"):
        out.write(f"\nInterrupted: the nodes are stopped and {root.path} is removed.\n")
        raise KeyboardInterrupt
    failure = outcome.get("failure")
    if failure is not None:
        if failure.check(DemoFailed, NodeFailed, DigitalSpringError):
            raise DigitalSpringError(
                f"the demo failed: {failure.value}; its nodes are stopped"
                + ("" if keep else f" and {root.path} is removed")
            )
        failure.raiseException()
    if keep:
        _kept(demo, out)
    else:
        out.write(f"The nodes are stopped and {root.path} is removed.\n")


__all__ = ["Demo", "DemoFailed", "DemoNode", "NodeFailed", "run_demo"]
