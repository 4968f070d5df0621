# -*- test-case-name: tests.test_cli -*-
"""
What every ``dspring`` command's options share.
"""

from __future__ import annotations

import sys

from twisted.python import usage

from .. import __version__


class CommandOptions(usage.Options):
    """
    Options of ``dspring`` and its commands: ``--version`` names Digital
    Spring, not Twisted.
    """

    def opt_version(self) -> None:
        """
        Display Digital Spring's version and exit.
        """
        sys.stdout.write(f"dspring (Digital Spring) {__version__}\n")
        sys.exit(0)
