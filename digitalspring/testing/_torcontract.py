# -*- test-case-name: tests.test_tor -*-
"""
The contract every :class:`~digitalspring.transport.ITorControl` keeps, and
the :class:`~digitalspring.transport.IOnionService` it returns: one mixin,
run against :class:`~digitalspring.testing.FakeTorControl` (``tests.test_tor``)
and against :class:`~digitalspring.transport.TxtorconControl` on the private
Tor network (``tests.test_tor_network``), so the fake says what tor does.

Mix :class:`TorControlContractMixin` into a trial ``TestCase`` on the real
reactor and say how to make a control.  Each test publishes at most two
onion services: on a real tor a publication waits for a descriptor upload
(about a second on the private network).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import CannotListenError, ConnectError, ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from ..transport import (
    IOnionService,
    ITorControl,
    OnionServiceUnreachable,
    TorBootstrap,
    TorStreamFailed,
    TorUnavailable,
    onion_host,
)
from ..transport._torkey import new_seed

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    class _Base:
        # What the mixin uses of a trial test case, typed (trial's are not).
        def assertTrue(self, condition: object, msg: object = None) -> None: ...
        def assertEqual(self, first: object, second: object, msg: object = None) -> None: ...
        def assertIs(self, first: object, second: object, msg: object = None) -> None: ...
        def assertIsInstance(self, instance: object, classOrTuple: Any) -> None: ...
        def assertRaises(
            self, exception: type[BaseException] | tuple[type[BaseException], ...]
        ) -> AbstractContextManager[Any]: ...
        def addCleanup(self, f: Any, *args: Any, **kwargs: Any) -> None: ...
        def fail(self, msg: object = None) -> None: ...

else:
    _Base = object

#: How long a dial through the control that removed the service a moment
#: ago may take to fail.  (Through another tor, which still has its
#: descriptor, it can take up to two minutes: see ``docs/tor.rst``.)
_REFUSAL_BOUND = 10.0


class _Echo(Protocol):
    def connectionMade(self) -> None:
        self.factory.accepted += 1

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class _Client(Protocol):
    """
    Collects what comes back, and why the connection ended.
    """

    def __init__(self) -> None:
        self.received = b""
        self.expecting: tuple[int, Deferred[bytes]] | None = None
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.expecting is not None and len(self.received) >= self.expecting[0]:
            _, waiting = self.expecting
            self.expecting = None
            waiting.callback(self.received)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.lost.callback(None)

    def echoed(self, data: bytes) -> Deferred[bytes]:
        assert self.transport is not None
        self.expecting = (len(data), Deferred())
        waiting = self.expecting[1]
        self.transport.write(data)
        return waiting


class TorControlContractMixin(_Base):
    """
    Tests that a tor control does what :class:`ITorControl` and
    :class:`IOnionService` promise.

    A subclass provides ``reactor`` (the real one: services forward to TCP
    listeners on 127.0.0.1) and :meth:`make_control`.
    """

    reactor: Any

    async def make_control(self) -> ITorControl:
        """
        A new control of the same tor as the others this test made, which
        the subclass closes when the test ends.
        """
        raise NotImplementedError

    def _echo_port(self) -> tuple[IListeningPort, Any]:
        factory = Factory.forProtocol(_Echo)
        factory.accepted = 0  # type: ignore[attr-defined]
        port: IListeningPort = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port, factory

    async def _dial(self, control: ITorControl, host: str, port: int) -> _Client:
        client = _Client()
        connected = await control.onion_endpoint(host, port).connect(
            Factory.forProtocol(lambda: client)
        )
        # The endpoint gives the factory's own protocol, not a wrapper.
        self.assertIs(connected, client)
        return client

    async def test_provides_interface(self) -> None:
        """
        The control provides ``ITorControl``.
        """
        self.assertTrue(verifyObject(ITorControl, await self.make_control()))

    async def test_publish_reach_remove(self) -> None:
        """
        A published service has the ``.onion`` address of its key and
        provides ``IOnionService``; the same control reaches it, getting the
        factory's protocol, bytes echo back intact, and closing ends with
        ``ConnectionDone``.  A port it does not forward is refused by the
        service itself (``OnionServiceUnreachable``, ``service_found``).
        Removed (twice is harmless), dialling it fails at once with a
        ``ConnectError`` and nothing more reaches the local port.
        """
        control = await self.make_control()
        local, accepting = self._echo_port()
        seed = new_seed()
        service = await control.publish_onion(80, local.getHost().port, seed)  # type: ignore[attr-defined]
        self.assertTrue(verifyObject(IOnionService, service))
        self.assertEqual(service.hostname, onion_host(seed))

        client = await self._dial(control, service.hostname, 80)
        data = bytes(range(256)) * 64
        self.assertEqual(await client.echoed(data), data)
        assert client.transport is not None
        client.transport.loseConnection()
        await client.lost
        assert client.reason is not None
        self.assertIsInstance(client.reason.value, ConnectionDone)
        self.assertEqual(accepting.accepted, 1)

        with self.assertRaises(OnionServiceUnreachable) as caught:
            await self._dial(control, service.hostname, 81)
        self.assertTrue(caught.exception.service_found)

        await service.remove()
        await service.remove()
        dialling = control.onion_endpoint(service.hostname, 80).connect(
            Factory.forProtocol(_Client)
        )
        dialling.addTimeout(_REFUSAL_BOUND, self.reactor)
        # Tor refuses it (the service's old circuit answers) or fails in
        # general (no service there any more), depending on its circuits.
        with self.assertRaises(ConnectError):
            await dialling
        self.assertEqual(accepting.accepted, 1)

    async def test_unknown_and_malformed(self) -> None:
        """
        An onion address nobody published is ``OnionServiceUnreachable``
        without ``service_found`` (so trying again may help); a malformed
        one (bad checksum, wrong length) is a ``TorStreamFailed``, a
        ``ConnectError`` that is not a refusal.
        """
        control = await self.make_control()
        with self.assertRaises(OnionServiceUnreachable) as caught:
            await self._dial(control, onion_host(new_seed()), 80)
        self.assertEqual(caught.exception.service_found, False)
        host = onion_host(new_seed())
        typo = host[:-7] + ("a" if host[-7] != "a" else "b") + ".onion"
        for bad in (typo, "aaaa.onion"):
            with self.assertRaises(TorStreamFailed) as failed:
                await self._dial(control, bad, 80)
            self.assertIsInstance(failed.exception, ConnectError)
            self.assertTrue(not isinstance(failed.exception, OnionServiceUnreachable), bad)

    async def test_cancel(self) -> None:
        """
        A connect cancelled before it succeeds fails with ``CancelledError``
        and leaves no connection open (trial fails a test that leaves a
        socket behind).
        """
        control = await self.make_control()
        client = _Client()
        dialling = control.onion_endpoint(onion_host(new_seed()), 80).connect(
            Factory.forProtocol(lambda: client)
        )
        dialling.cancel()
        with self.assertRaises(CancelledError):
            await dialling
        self.assertEqual(client.transport, None)

    async def test_collision_and_close(self) -> None:
        """
        A key is published once per tor: again, through the same or another
        control of that tor, fails with ``CannotListenError``.  Closing a
        control removes its services (another control may then publish the
        key); a closed control refuses to publish, and closing it again is
        harmless.
        """
        first, second = await self.make_control(), await self.make_control()
        local, _ = self._echo_port()
        local_port = local.getHost().port  # type: ignore[attr-defined]
        seed = new_seed()
        await first.publish_onion(80, local_port, seed)
        for control in (first, second):
            with self.assertRaises(CannotListenError):
                await control.publish_onion(81, local_port, seed)
        await first.close()
        again = await second.publish_onion(80, local_port, seed)
        self.assertEqual(again.hostname, onion_host(seed))
        with self.assertRaises(CannotListenError):
            await first.publish_onion(80, local_port, new_seed())
        await first.close()

    async def test_bootstrap_phase(self) -> None:
        """
        A control of a tor that has bootstrapped reports it as tor does:
        100 %, tag ``done``, no problem.  A closed control fails with
        ``TorUnavailable``.
        """
        control = await self.make_control()
        phase = await control.bootstrap_phase()
        self.assertIsInstance(phase, TorBootstrap)
        self.assertEqual((phase.progress, phase.tag, phase.warning), (100, "done", None))
        self.assertTrue(phase.done)
        await control.close()
        with self.assertRaises(TorUnavailable):
            await control.bootstrap_phase()
