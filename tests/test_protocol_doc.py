"""
``docs/protocol.rst`` against the code: every AMP command the node speaks
has a section there naming its arguments, answers, error codes and byte
bounds, every kind of group notice is listed, and the page names no command
the code does not have.  And ``docs/threat-model.rst`` against the tests:
every test it cites exists.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

import digitalspring
from digitalspring.channel import MAX_PING_DATA
from digitalspring.channel._amp import PingData
from digitalspring.multicast._commands import BoundedBytes
from digitalspring.multicast._notices import KINDS

DOCS = Path(__file__).parent.parent / "docs"
PAGE = DOCS / "protocol.rst"
THREAT_MODEL = DOCS / "threat-model.rst"
TESTS = Path(__file__).parent

# A section title that is one command name in an inline literal, then its
# underline.
_TITLE = re.compile(r"^``([A-Za-z0-9_-]+)``\n([~^=-])\2+\n", re.MULTILINE)


def command_classes() -> list[type[amp.Command]]:
    """
    Every AMP command defined in the ``digitalspring`` package.
    """
    for module in pkgutil.walk_packages(digitalspring.__path__, "digitalspring."):
        if not module.name.endswith(".__main__"):
            importlib.import_module(module.name)
    found: list[type[amp.Command]] = []
    pending = list(amp.Command.__subclasses__())
    while pending:
        command = pending.pop()
        pending += command.__subclasses__()
        if command.__module__.startswith("digitalspring."):
            found.append(command)
    return sorted(found, key=lambda command: command.commandName)


def sections(text: str) -> dict[str, str]:
    """
    The command sections of the page: each title's name, and the text up to
    the next title of the same or a higher level.
    """
    titles = list(_TITLE.finditer(text))
    out: dict[str, str] = {}
    for number, title in enumerate(titles):
        end = len(text)
        for later in titles[number + 1 :]:
            end = later.start()
            break
        out[title.group(1)] = text[title.end() : end]
    return out


def _bound(argument: amp.Argument) -> int | None:
    if isinstance(argument, BoundedBytes):
        return argument.largest
    if isinstance(argument, PingData):
        return MAX_PING_DATA
    return None


def _mentions(section: str, number: int) -> bool:
    return f"{number:,}" in section or re.search(rf"\b{number}\b", section) is not None


class ProtocolPageTests(SynchronousTestCase):
    """
    The reference names everything the code puts on the wire.
    """

    def setUp(self) -> None:
        self.text = PAGE.read_text(encoding="utf-8")
        self.sections = sections(self.text)
        self.commands = command_classes()

    def test_commands_found(self) -> None:
        """
        The walk over the package finds the commands of every layer (so
        that the tests below check something).
        """
        names = {command.commandName for command in self.commands}
        for expected in (b"Ping", b"dht-store", b"group-notice", b"spring-acks", b"group-since"):
            self.assertIn(expected, names)

    def test_every_command_has_a_section(self) -> None:
        """
        Each command has a section titled with its name on the wire.
        """
        missing = [
            command.commandName.decode()
            for command in self.commands
            if command.commandName.decode() not in self.sections
        ]
        self.assertEqual(missing, [])

    def test_no_section_for_a_command_the_code_lacks(self) -> None:
        """
        Every command section is of a command of the code.
        """
        names = {command.commandName.decode() for command in self.commands}
        self.assertEqual(sorted(set(self.sections) - names), [])

    def test_arguments_answers_and_errors_named(self) -> None:
        """
        A command's section names each of its arguments, each key of its
        answer and each of its error codes.
        """
        missing = []
        for command in self.commands:
            section = self.sections.get(command.commandName.decode(), "")
            names = [key for key, _ in command.arguments] + [key for key, _ in command.response]
            names += list(command.errors.values())
            for name in names:
                if f"``{name.decode()}``" not in section:
                    missing.append(f"{command.commandName.decode()}: {name.decode()}")
        self.assertEqual(missing, [])

    def test_byte_bounds_stated(self) -> None:
        """
        A command's section states the bound of each of its bounded
        arguments and answers, in bytes.
        """
        missing = []
        for command in self.commands:
            section = self.sections.get(command.commandName.decode(), "")
            for key, argument in list(command.arguments) + list(command.response):
                bound = _bound(argument)
                if bound is not None and not _mentions(section, bound):
                    missing.append(f"{command.commandName.decode()}: {key.decode()} <= {bound}")
        self.assertEqual(missing, [])

    def test_notice_kinds_listed(self) -> None:
        """
        Every kind of group notice is in the ``group-notice`` section.
        """
        section = self.sections.get("group-notice", "")
        self.assertEqual(sorted(k for k in KINDS if f"``{k}``" not in section), [])


def defined_tests(module: str) -> set[str]:
    """
    ``Class.test_name`` of every test method in ``tests/MODULE.py``, read
    from its source (importing the process and tor tests costs seconds).
    """
    path = TESTS / f"{module}.py"
    if not path.exists():
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        f"{node.name}.{item.name}"
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
        and item.name.startswith("test_")
    }


class ThreatModelPageTests(SynchronousTestCase):
    """
    The threat model cites tests that exist.
    """

    def test_cited_tests_exist(self) -> None:
        """
        Every ``tests.MODULE.Class.test_name`` on the page is a test method
        of that class in that module, and the page cites some.
        """
        text = THREAT_MODEL.read_text(encoding="utf-8")
        cited = set(re.findall(r"``tests\.(\w+)\.(\w+\.test_\w+)``", text))
        self.assertGreater(len(cited), 20)
        missing = sorted(
            f"tests.{module}.{name}" for module, name in cited if name not in defined_tests(module)
        )
        self.assertEqual(missing, [])
