"""
What the Tor benchmarks share: running inside a network namespace that has
only ``lo``, so that no packet of their private Tor network can leave this
machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred

from digitalspring.testing import NamespaceUnavailable, NetworkNamespace


def in_loopback_namespace(
    script: str, run: Callable[[NetworkNamespace], Coroutine[Any, Any, None]]
) -> Deferred[None]:
    """
    Make a network namespace, move this process's thread into it (so that
    everything it opens from now on lives next to the tors), and run
    ``run`` with it; leave and close it afterwards.

    :param script: the benchmark's file name, for the refusal when this
        process may not make a namespace.
    :raises SystemExit: when not run as root, or the namespace cannot be made.
    """
    if os.geteuid() != 0:
        raise SystemExit(
            f"benchmarks/{script} must run as root: it runs its Tor network in a network "
            "namespace that has only lo, so that no packet can leave this machine."
        )
    try:
        namespace = NetworkNamespace.create()
    except NamespaceUnavailable as e:
        raise SystemExit(f"cannot make a network namespace: {e}") from None
    namespace.enter()

    async def go() -> None:
        try:
            await run(namespace)
        finally:
            namespace.leave()
            namespace.close()

    return Deferred.fromCoroutine(go())
