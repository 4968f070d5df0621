# -*- test-case-name: tests.test_cli -*-
"""
Getting passphrases from a user: from a file, or typed at a prompt.
"""

from __future__ import annotations

import getpass
import sys

from ..node._options import BadOption, read_passphrase_file


class NoTerminal(BadOption):
    """
    A passphrase is needed, and there is no terminal to ask for it: give a
    passphrase file.
    """


def ask_passphrase(
    prompt: str, file: str | None, confirm: bool = False, option: str = "--passphrase-file"
) -> bytes:
    """
    A passphrase from ``file`` if given, else typed at the terminal.

    :param confirm: ask twice, for a new passphrase.
    :param option: the option that names a file, for the error message.
    :raises BadOption: when the file cannot be read, nothing was typed, or
        the two entries differ.
    :raises NoTerminal: when there is no file and no terminal.
    """
    if file is not None:
        return read_passphrase_file(file)
    if not sys.stdin.isatty():
        raise NoTerminal(f"a passphrase is needed: give {option} FILE")
    first = getpass.getpass(f"{prompt}: ")
    if not first:
        raise BadOption("the passphrase is empty")
    if confirm and getpass.getpass(f"{prompt} (again): ") != first:
        raise BadOption("the two passphrases differ")
    return first.encode("utf-8")
