# -*- test-case-name: tests.test_cli -*-
"""
What every ``dspring`` command's options share, and the way commands talk
to the running node.
"""

from __future__ import annotations

import getopt
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.python import usage

from .. import __version__


class CommandOptions(usage.Options):
    """
    Options of ``dspring`` and its commands: ``--data-dir`` may be given
    before or after a command, and ``--version`` names Digital Spring, not
    Twisted.
    """

    optParameters: list[list[Any]] = [
        [
            "data-dir",
            "d",
            None,
            "Directory that holds the node's identity and state "
            "(default: $DSPRING_DIR, else ~/.dspring).",
        ],
    ]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        A command without subcommands takes its options after its
        arguments too (``dspring send GROUP --file PATH``), as GNU tools do;
        ``--`` ends the options.
        """
        if options is None or getattr(self, "subCommands", None):
            super().parseOptions(options)
            return
        try:
            found, arguments = getopt.gnu_getopt(options, self.shortOpt, self.longOpt)
        except getopt.error as e:
            raise usage.UsageError(str(e)) from None
        ordered: list[str] = []
        for option, value in found:
            if option.startswith("--"):
                takes_value = option[2:] + "=" in self.longOpt
                ordered.append(f"{option}={value}" if takes_value else option)
            else:
                ordered += [option, value] if option[1] + ":" in self.shortOpt else [option]
        super().parseOptions([*ordered, "--", *arguments])

    def getSynopsis(self) -> str:
        """
        ``Usage: dspring dht lookup [--json] PEER_ID``: the command's names,
        then its own synopsis (Twisted's would repeat the parent's).
        """
        names: list[str] = []
        options: usage.Options = self
        while options.parent is not None:
            names.append(str(options.parent.subCommand))
            options = options.parent
        synopsis = getattr(self, "synopsis", "")
        return " ".join(["Usage: dspring", *reversed(names), synopsis]).rstrip()

    def opt_version(self) -> None:
        """
        Display Digital Spring's version and exit.
        """
        sys.stdout.write(f"dspring (Digital Spring) {__version__}\n")
        sys.exit(0)


def plural(count: int, noun: str) -> str:
    """
    ``"1 hop"``, ``"2 hops"``: a count and its noun, in the right number
    (every noun counted in ``dspring``'s output takes an ``s``).
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def run_async(work: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
    """
    Run a coroutine function of the reactor to completion, turning errors
    into exceptions the caller handles.
    """
    outcome: list[Any] = []

    def main(reactor: Any) -> Deferred[None]:
        d = Deferred.fromCoroutine(work(reactor))
        d.addErrback(outcome.append)
        return d

    try:
        react(main)
    except SystemExit as e:
        if outcome:
            outcome[0].raiseException()
        if e.code:
            raise
