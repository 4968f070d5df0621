"""
Tests for multicast strategies as plugins: the interfaces a third party
implements, and discovery with ``getPlugins``, in this process and from an
installed package outside the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

from twisted.internet.task import Clock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import twisted.plugins
from digitalspring.errors import DigitalSpringError
from digitalspring.identity import Identity
from digitalspring.multicast import (
    IMulticastStrategy,
    IMulticastStrategyPlugin,
    IStrategyContext,
    IStrategyRouter,
    TransmissionReport,
    UnknownStrategy,
    _plugins,
    get_strategy,
    strategy_plugins,
)

#: A third party's strategy package, as it would be installed: the strategy
#: in its own package, and a one-line dropin in ``twisted/plugins/``.
_PACKAGE = """
from twisted.internet.defer import succeed
from twisted.plugin import IPlugin
from twisted.protocols import amp
from zope.interface import implementer

from digitalspring.multicast import (
    IMulticastStrategy,
    IMulticastStrategyPlugin,
    TransmissionReport,
)


@implementer(IMulticastStrategy)
class AcmeStrategy:
    def __init__(self, context):
        self.context = context

    def publish(self, message):
        return succeed(TransmissionReport())

    def stop(self):
        return succeed(None)


@implementer(IPlugin, IMulticastStrategyPlugin)
class AcmeStrategyPlugin:
    name = "acme"
    description = "A third party's strategy, for tests."

    def make_strategy(self, context):
        return AcmeStrategy(context)

    def locator(self, connection, router):
        return amp.CommandLocator()
"""

_DROPIN = """
from acme_strategy import AcmeStrategyPlugin

acme = AcmeStrategyPlugin()
"""


def _install_acme(root: FilePath[str]) -> FilePath[str]:
    """
    Write the third party's package and dropin below ``root``, as if
    installed there; returns the dropin directory.
    """
    plugins = root.child("twisted").child("plugins")
    plugins.makedirs()
    root.child("acme_strategy.py").setContent(_PACKAGE.encode())
    plugins.child("acme_strategies.py").setContent(_DROPIN.encode())
    return plugins


@implementer(IStrategyContext)
class _Context:
    """
    The least a context can be: enough for the interface to be checked.
    """

    def __init__(self) -> None:
        self.local = Identity.from_seed(bytes(32)).peer_id
        self.owner = self.local
        self.group_id = bytes(32)
        self.role = "owner"
        self.degree = 6
        self.clock = Clock()
        self.store: Any = None

    def neighbours(self) -> Any:
        return frozenset()

    def members(self) -> Any:
        return frozenset()

    def connect(self, peer: Any) -> Any:
        raise NotImplementedError

    def call(self, peer: Any, command: Any, arguments: Any) -> Any:
        raise NotImplementedError

    def accept_manifest(self, signed_manifest: bytes) -> Any:
        raise NotImplementedError

    def accept_fragment(self, manifest: Any, number: int, data: bytes) -> Any:
        raise NotImplementedError

    def progress(self, manifest: Any, peer: Any, fragments: int) -> None:
        pass


@implementer(IStrategyRouter)
class _Router:
    def strategy(self, connection: Any, group_id: bytes) -> Any:
        raise NotImplementedError


class DiscoveryTests(SynchronousTestCase):
    """
    A strategy plugin in a package on ``sys.path`` is found by name, the way
    Twisted's own ``test_plugin`` installs plugins into a temporary package.
    """

    def setUp(self) -> None:
        root = FilePath(self.mktemp())
        plugins = _install_acme(root)
        sys.path.insert(0, root.path)
        twisted.plugins.__path__.append(plugins.path)
        self.addCleanup(sys.path.remove, root.path)
        self.addCleanup(twisted.plugins.__path__.remove, plugins.path)
        for name in ("acme_strategy", "twisted.plugins.acme_strategies"):
            self.addCleanup(sys.modules.pop, name, None)

    def test_found_by_name(self) -> None:
        """
        ``strategy_plugins`` lists the installed plugin under its name, and
        ``get_strategy`` returns it; it provides the plugin interface, and
        the strategy it makes provides the strategy interface.
        """
        self.assertIn("acme", strategy_plugins())
        plugin = get_strategy("acme")
        self.assertTrue(verifyObject(IMulticastStrategyPlugin, plugin))
        context = _Context()
        self.assertTrue(verifyObject(IStrategyContext, context))
        strategy = plugin.make_strategy(context)
        self.assertTrue(verifyObject(IMulticastStrategy, strategy))
        self.assertIs(strategy.context, context)
        report = self.successResultOf(strategy.publish(None))
        self.assertEqual(report, TransmissionReport())
        locator = plugin.locator(None, _Router())
        self.assertIsNone(locator.locateResponder(b"acme-anything"))

    def test_unknown_names_installed(self) -> None:
        """
        Asking for a strategy nobody installed raises ``UnknownStrategy``,
        whose message names the installed ones.
        """
        e = self.assertRaises(UnknownStrategy, get_strategy, "carrier-pigeon")
        self.assertIn("unknown multicast strategy 'carrier-pigeon'", str(e))
        self.assertIn("acme", str(e))
        self.assertIn("acme", e.installed)
        self.assertIsInstance(e, DigitalSpringError)


class RegistryTests(SynchronousTestCase):
    def test_none_installed(self) -> None:
        """
        With no strategy installed, the error says so.
        """
        self.patch(_plugins, "getPlugins", lambda interface: iter(()))
        e = self.assertRaises(UnknownStrategy, get_strategy, "unicast")
        self.assertIn("installed strategies: none", str(e))

    def test_first_of_a_name_wins(self) -> None:
        """
        When two plugins claim one name, the first found is used.
        """
        first, second = object(), object()

        class Named:
            def __init__(self, token: object) -> None:
                self.name = "same"
                self.token = token

        found = [Named(first), Named(second)]
        self.patch(_plugins, "getPlugins", lambda interface: iter(found))
        self.assertIs(get_strategy("same"), found[0])

    def test_report_default(self) -> None:
        """
        A transmission report starts empty, and is a value.
        """
        peer = Identity.from_seed(bytes(32)).peer_id
        self.assertEqual(TransmissionReport(), TransmissionReport(frozenset(), frozenset()))
        self.assertEqual(TransmissionReport(frozenset([peer])).reached, frozenset([peer]))


class InstalledTests(SynchronousTestCase):
    def test_discovered_outside_source_tree(self) -> None:
        """
        From a directory outside the source tree, with only an installed
        third-party package on the path: Digital Spring's own strategy
        dropin imports cleanly, the third party's strategy is found, and an
        unknown name is refused with the installed ones named.
        """
        root = FilePath(self.mktemp())
        _install_acme(root.child("site"))
        cwd = root.child("cwd")
        cwd.makedirs()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = root.child("site").path
        script = textwrap.dedent(
            """
            import twisted.plugins.digitalspring_strategies
            from digitalspring.multicast import UnknownStrategy, get_strategy, strategy_plugins
            print(sorted(strategy_plugins()))
            print(get_strategy("acme").description)
            try:
                get_strategy("nope")
            except UnknownStrategy as e:
                print(e)
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd.path,
            env=env,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        names, description, error = result.stdout.splitlines()
        self.assertIn("'acme'", names)
        self.assertEqual(description, "A third party's strategy, for tests.")
        self.assertTrue(
            error.startswith("unknown multicast strategy 'nope'; installed strategies:"), error
        )
        self.assertIn("acme", error)
