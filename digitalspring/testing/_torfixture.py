# -*- test-case-name: tests.test_tornet -*-
"""
One private Tor network per test run, shared by every Tor test.

Starting a network takes ~10 s; each test would pay that again, so the first
Tor test starts it and the rest reuse it.  It is stopped when the reactor
shuts down, which trial does once, at the very end of the run (even when
tests fail).  Should the test process die instead, an ``atexit`` hook kills
the tors by PID, and failing that tor's ``__OwningControllerProcess`` makes
them exit within ~15 s.

Between tests the reactor thread is back in its own network namespace; each
Tor test enters the network's namespace for its duration, so everything it
opens (listeners for onion services, SOCKS and control connections) lives
next to the tors.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from typing import Protocol

from attrs import define
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from digitalspring.testing._torcontrol import Reactor
from digitalspring.testing._tornamespace import NetworkNamespace, isolated_namespace_or_none
from digitalspring.testing._tornet import PrivateTorNetwork
from digitalspring.testing._torprocess import tor_binary_or_skip

log = Logger()


class _CleansUp(Protocol):
    def addCleanup(self, f: object, *args: object, **kwargs: object) -> None: ...


@define
class _Shared:
    """
    The state of the run's network: not started, starting (``waiting``),
    started (``network``), or failed to start (``failure``, which every
    later test reports instead of trying again for minutes).
    """

    network: PrivateTorNetwork | None = None
    failure: Failure | None = None
    waiting: list[Deferred[PrivateTorNetwork]] | None = None
    base_dir: str | None = None
    namespace: NetworkNamespace | None = None


_shared = _Shared()


def shared_tor_network(reactor: Reactor) -> Deferred[PrivateTorNetwork]:
    """
    The run's private Tor network, started on first use (in a fresh network
    namespace when the process may create one) and stopped when ``reactor``
    shuts down.

    :returns: a Deferred that fires with the started network, or fails with
        the error that stopped it from starting.
    :raises SkipTest: if tor is not installed.
    """
    tor_binary_or_skip()
    if _shared.network is not None:
        return succeed(_shared.network)
    if _shared.failure is not None:
        return fail(_shared.failure)
    waiter: Deferred[PrivateTorNetwork] = Deferred()
    if _shared.waiting is not None:
        _shared.waiting.append(waiter)
        return waiter
    _shared.waiting = [waiter]
    _shared.namespace = isolated_namespace_or_none()
    if _shared.namespace is None:
        # Also outside the log file: whoever runs the tests should see it.
        print(
            "\nWARNING: the Tor test network runs without a network namespace "
            "(not root?); only torrc settings keep it on 127.0.0.1.",
            file=sys.stderr,
        )
    _shared.base_dir = tempfile.mkdtemp(prefix="digitalspring-tornet-")
    network = PrivateTorNetwork(reactor, _shared.base_dir, namespace=_shared.namespace)
    reactor.addSystemEventTrigger("before", "shutdown", _stop_shared, _shared, network)

    def started(_: object) -> None:
        _shared.network = network
        for w in _shared.waiting or []:
            w.callback(network)
        _shared.waiting = None

    def failed(failure: Failure) -> None:
        _shared.failure = failure
        for w in _shared.waiting or []:
            w.errback(failure)
        _shared.waiting = None

    network.start().addCallbacks(started, failed)
    return waiter


def _stop_shared(state: _Shared, network: PrivateTorNetwork) -> Deferred[None]:
    global _shared
    if _shared is state:
        # Forget it at once: a later run in this process (trial
        # --until-failure) starts a new one.
        _shared = _Shared()

    async def stop() -> None:
        try:
            await network.stop()
        except Exception:
            log.failure("stopping the shared Tor test network")
            raise
        else:
            # Keep the logs of a network that failed to start.
            if state.base_dir is not None and state.failure is None:
                shutil.rmtree(state.base_dir, ignore_errors=True)
        finally:
            if state.namespace is not None:
                state.namespace.close()

    return Deferred.fromCoroutine(stop())


async def enter_shared_tor_network(testcase: _CleansUp, reactor: Reactor) -> PrivateTorNetwork:
    """
    Get the run's network for a test and move the reactor thread into its
    namespace until the test's cleanups have run.

    :param testcase: a trial ``TestCase``.
    :raises SkipTest: if tor is not installed.
    """
    network = await shared_tor_network(reactor)
    if network.namespace is not None:
        network.namespace.enter()
        testcase.addCleanup(network.namespace.leave)
    return network
