# -*- test-case-name: tests.test_demo -*-
"""
What the demo prints: numbered steps in plain words, each with the time it
took, and progress bars while members receive a message (on a terminal; a
line as each one has it otherwise).
"""

from __future__ import annotations

import textwrap
from typing import TextIO

#: The longest line of prose, in characters.
WIDTH = 88

#: Width of a progress bar, in characters.
BAR_WIDTH = 30


def size_text(count: int) -> str:
    """
    ``"2.0 MiB"``, ``"9.6 KiB"``, ``"38 bytes"``: a number of bytes for
    people.
    """
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MiB"
    if count >= 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count} bytes" if count != 1 else "1 byte"


def plural(count: int, noun: str) -> str:
    """
    ``"1 fragment"``, ``"34 fragments"``.
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def names_text(names: list[str]) -> str:
    """
    ``"bob, carol and dave"``.
    """
    if len(names) <= 1:
        return "".join(names) or "nobody"
    return ", ".join(names[:-1]) + " and " + names[-1]


class Screen:
    """
    Where the demo tells what happens.

    :param tty: whether ``out`` is a terminal, where bars are redrawn in
        place.
    """

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.steps = 0

    def say(self, text: str = "") -> None:
        """
        Print a paragraph, indented under its step, its lines at most
        :data:`WIDTH` characters long.
        """
        lines = textwrap.wrap(
            text, WIDTH, initial_indent="   ", subsequent_indent="   ", break_on_hyphens=False
        )
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def step(self, title: str) -> None:
        """
        Start the next numbered step.
        """
        self.steps += 1
        self.out.write(f"\n{self.steps}. {title}\n")
        self.out.flush()

    def took(self, seconds: float) -> None:
        """
        Say how long the step took.
        """
        self.say(f"(this step took {seconds:.1f} s)")

    def bars(self, names: list[str]) -> Bars:
        """
        Progress bars, one per recipient.
        """
        return Bars(self, names)


class Bars:
    """
    One progress bar per recipient of a message: on a terminal, redrawn in
    place as fragments arrive; elsewhere, a line as each recipient has the
    message whole.
    """

    def __init__(self, screen: Screen, names: list[str]) -> None:
        self._screen = screen
        self._names = names
        self._shares = dict.fromkeys(names, 0.0)
        self._done: dict[str, float] = {}
        self._drawn = False
        self._width = max(len(name) for name in names)

    def update(self, shares: dict[str, float], done: dict[str, float]) -> None:
        """
        :param shares: how much of the message each recipient has, 0 to 1.
        :param done: when each recipient that has it whole had it, in
            seconds since it was sent.
        """
        newly = [name for name in self._names if name in done and name not in self._done]
        self._shares.update(shares)
        self._done.update(done)
        if self._screen.tty:
            self._draw()
        else:
            for name in newly:
                self._screen.say(f"  {name} has it ({done[name]:.2f} s)")

    def _draw(self) -> None:
        out = self._screen.out
        if self._drawn:
            out.write(f"\x1b[{len(self._names)}F")
        self._drawn = True
        for name in self._names:
            share = 1.0 if name in self._done else min(self._shares.get(name, 0.0), 1.0)
            filled = int(share * BAR_WIDTH)
            when = f"  {self._done[name]:.2f} s" if name in self._done else ""
            out.write(
                f"\x1b[K     {name:<{self._width}} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}]"
                f" {share:4.0%}{when}\n"
            )
        out.flush()
