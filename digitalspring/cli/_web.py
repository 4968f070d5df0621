# -*- test-case-name: tests.test_web -*-
"""
``dspring web``: a one-time login URL of the running node's web client.
"""

from __future__ import annotations

from typing import Any, TextIO

from twisted.python.filepath import FilePath

from ..control import ControlClient
from ._base import CommandOptions, run_async


class WebOptions(CommandOptions):
    """
    ``dspring web``.
    """

    synopsis = ""
    longdesc = (
        "Print a one-time URL that logs a browser on this machine in to the running "
        "node's web client (a node started with --web). Open it within 5 minutes; it "
        "works once. Each run prints a new one."
    )

    def run(self, data_dir: FilePath[str], out: TextIO) -> None:
        answer: dict[str, Any] = {}

        async def ask(reactor: Any) -> None:
            answer.update(await ControlClient(reactor, data_dir).call("web-login", {}))

        run_async(ask)
        out.write(f"{answer['url']}\n")
