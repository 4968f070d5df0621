"""
The how-tos' example plugins (``docs/examples/``) work: each passes its
conformance mixin, and Twisted's plugin system finds it in its dropin.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from digitalspring.multicast import IMulticastStrategyPlugin
from digitalspring.transport import ITransport, TransportContext

EXAMPLES = FilePath(__file__).parent().parent().child("docs").child("examples")
sys.path.insert(0, EXAMPLES.path)

from dspring_relay import RelayStrategyPlugin  # noqa: E402
from dspring_relay.test_relay import RelayConformanceTests, SplitTests  # noqa: E402
from dspring_unix import UnixTransport, UnixTransportPlugin  # noqa: E402
from dspring_unix.test_unix import UnixConformanceTests  # noqa: E402


def installed_plugins(function: str) -> list[str]:
    """
    What Digital Spring's ``function`` (``transport_plugins`` or
    ``strategy_plugins``) finds in a Python that has ``docs/examples`` on
    its path, as it would once the examples are installed: their
    ``twisted/plugins`` modules join ``twisted.plugins``.
    """
    module = "transport" if function == "transport_plugins" else "multicast"
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from digitalspring.{module} import {function}; print(*sorted({function}()))",
        ],
        env={**os.environ, "PYTHONPATH": EXAMPLES.path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    return found.stdout.split()


class DiscoveryTests(SynchronousTestCase):
    def test_unix_transport_found(self) -> None:
        """
        Digital Spring finds the example's ``unix`` transport plugin through
        its dropin, and the plugin makes a ``unix`` transport.
        """
        self.assertIn("unix", installed_plugins("transport_plugins"))
        transport = UnixTransportPlugin().make_transport(TransportContext(reactor=None))
        self.assertTrue(verifyObject(ITransport, transport))
        self.assertIsInstance(transport, UnixTransport)

    def test_relay_strategy_found(self) -> None:
        """
        Digital Spring finds the example's ``relay`` strategy plugin through
        its dropin.
        """
        self.assertIn("relay", installed_plugins("strategy_plugins"))
        self.assertTrue(verifyObject(IMulticastStrategyPlugin, RelayStrategyPlugin()))


__all__ = ["DiscoveryTests", "RelayConformanceTests", "SplitTests", "UnixConformanceTests"]
