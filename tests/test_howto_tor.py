"""
``docs/howto-tor.rst`` held to the code: every command of its console
blocks parses as ``twistd`` parses it, every option it names is an option
of ``twistd dspring``, every ``dspring`` command it names exists, what it
says ``--onion-only`` refuses is refused, the torrc lines it gives are
the node's own, and the tests it cites exist.

(The commands reach the public Tor network, which tests cannot; the private
one of ``tests.test_tor_network`` runs the nodes they make.)
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.python.reflect import namedAny
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.cli import Options as CLIOptions
from digitalspring.tap import Options, _make_node
from digitalspring.transport import TransportConfigError
from digitalspring.transport._torcontrol import BOUNDED_READS_TORRC

PAGE = FilePath(__file__).parent().sibling("docs").child("howto-tor.rst")


def literal_lines(text: str) -> list[str]:
    """
    The lines of the page's literal blocks (after a paragraph ending in
    ``::``), stripped.
    """
    found = []
    inside = False
    for line in text.splitlines():
        if inside and line.strip() and not line.startswith(" "):
            inside = False
        if inside and line.strip():
            found.append(line.strip())
        if line.rstrip().endswith("::"):
            inside = True
    return found


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class HowtoTorTests(SynchronousTestCase):
    """
    What the Tor how-to tells a user to run is what the code takes.
    """

    def setUp(self) -> None:
        self.text = PAGE.getContent().decode("utf-8")

    def test_literal_lines(self) -> None:
        """
        The literal blocks are read: their lines, not the prose.
        """
        text = "Run::\n\n    twistd -n dspring\n    tor says\n\nProse ``twistd x``.\n"
        self.assertEqual(literal_lines(text), ["twistd -n dspring", "tor says"])

    def test_commands_parse(self) -> None:
        """
        Each ``twistd`` command of the page parses as twistd's own options,
        then ``twistd dspring``'s.
        """
        commands = [line for line in literal_lines(self.text) if line.startswith("twistd ")]
        self.assertGreaterEqual(len(commands), 2, commands)
        for command in commands:
            options = ServerOptions()
            options.parseOptions(shlex.split(command)[1:])
            self.assertEqual(options.subCommand, "dspring", command)

    def test_options_exist(self) -> None:
        """
        Every ``--option`` the page names is an option of ``twistd
        dspring``.
        """
        named = set(re.findall(r"(?<![\w-])--([a-z][a-z-]+)", self.text))
        self.assertGreaterEqual(len(named), 5, named)
        known = set(Options().synonyms)
        self.assertEqual(sorted(named - known), [])

    def test_dspring_commands_exist(self) -> None:
        """
        Every ``dspring COMMAND [SUBCOMMAND]`` the page names is a command
        of ``dspring``.
        """
        named = re.findall(r"``dspring ([a-z-]+)(?: ([a-z-]+))?", self.text)
        self.assertGreaterEqual(len(named), 3, named)
        for command, sub in named:
            found = {name: options for name, _, options, _ in CLIOptions.subCommands}
            self.assertIn(command, found)
            subcommands = getattr(found[command], "subCommands", None)
            if sub and subcommands:
                self.assertIn(sub, [name for name, *_ in subcommands], f"dspring {command}")

    def test_onion_only_refusals(self) -> None:
        """
        ``--onion-only`` refuses ``--advertise`` and a ``tcp`` listener as
        its options are read, and a tor control port off this machine when
        the node is made, as the page says; a Unix socket it takes.
        """
        for extra in (["--advertise", "192.0.2.7"], ["--listen", "tcp:7655"]):
            self.assertRaises(usage.UsageError, Options().parseOptions, ["--onion-only", *extra])
        data_dir = FilePath(self.mktemp()).child("data")

        def made(control: str) -> object:
            options = Options()
            options.parseOptions(
                [
                    "--data-dir",
                    data_dir.path,
                    "--no-passphrase",
                    "--onion-only",
                    "--tor-control",
                    control,
                ]
            )
            return _make_node(options, _reactor())

        with self.assertRaises(TransportConfigError) as caught:
            made("tcp:192.0.2.7:9051")
        self.assertIn("127.0.0.0/8", str(caught.exception))
        self.assertIsNotNone(made("unix:/run/tor/control"))

    def test_cited_tests_exist(self) -> None:
        """
        The tests the page cites as what backs it exist.
        """
        cited = re.findall(r"``(tests\.[\w.]+)``", self.text)
        self.assertTrue(cited)
        for name in cited:
            self.assertIsNotNone(namedAny(name), name)

    def test_torrc_lines_are_the_launched_ones(self) -> None:
        """
        The ``torrc`` lines the page gives for a tor the node attaches to
        are those it gives a tor it launches.
        """
        lines = [line for line in literal_lines(self.text) if line.startswith("Constrained")]
        self.assertEqual(lines, list(BOUNDED_READS_TORRC))
