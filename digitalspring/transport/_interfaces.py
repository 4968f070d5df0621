# -*- test-case-name: tests.test_transport -*-
"""
What a transport is: a way to reach a peer at an address and to be reached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import (
        IListeningPort,
        IProtocol,
        IProtocolFactory,
        IStreamClientEndpoint,
    )

    from ._plugins import TransportContext
    from ._torbootstrap import TorBootstrap


class ITransport(Interface):
    """
    One way of carrying byte streams between peers: TCP, Tor, the in-process
    memory network, or a third party's.

    Addresses are strings local to the transport, without its name: ``tcp``
    connects to ``"127.0.0.1:7000"``, ``memory`` to ``"alice:1"``.  Where an
    address has to say which transport it is for (configuration, peer
    records), it is written ``NAME:ADDRESS``; see
    :func:`digitalspring.transport.split_address`.
    """

    name = Attribute("The transport's name, e.g. ``'tcp'``: a ``str``.")

    def listen(description: str, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Start accepting connections.

        :param str description: where to listen, in the transport's own
            syntax (for ``tcp``, a Twisted server endpoint description
            without the ``tcp:`` prefix, such as ``"7000:interface=127.0.0.1"``).
        :param factory: an ``IProtocolFactory`` that builds a protocol for
            every accepted connection.
        :returns: a ``Deferred`` that fires with an
            :class:`twisted.internet.interfaces.IListeningPort` once
            listening; ``stopListening()`` on it stops, and removes its
            address from :meth:`published_addresses`.
        :raises InvalidAddress: (through the Deferred) when the description
            cannot be parsed.
        :raises twisted.internet.error.CannotListenError: (through the
            Deferred) when the address is taken or not available.
        """

    def connect(address: str, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Open a connection.

        :param str address: an address this transport published, as given by
            :meth:`published_addresses` on the other side.
        :param factory: an ``IProtocolFactory`` whose ``buildProtocol`` makes
            the protocol for the connection.
        :returns: a ``Deferred`` that fires with the connected protocol.
        :raises InvalidAddress: (through the Deferred) for a malformed address.
        :raises twisted.internet.error.ConnectError: (through the Deferred)
            and its subclasses, e.g. ``ConnectionRefusedError`` when nobody
            listens there or ``TimeoutError`` when the peer is unreachable.
        :raises twisted.internet.error.DNSLookupError: (through the
            Deferred) when the address names a host that cannot be found.
        """

    def published_addresses() -> list[str]:
        """
        The addresses at which this transport is reachable right now, one per
        listening port, in the form :meth:`connect` takes.

        :returns: a ``list`` of ``str``; empty when nothing listens.
        """


class ITransportPlugin(IPlugin):
    """
    A transport that can be installed as a Twisted plugin: an object
    providing this interface in a module of ``twisted/plugins/`` is found by
    :func:`digitalspring.transport.transport_plugins`.
    """

    name = Attribute(
        "The name under which the transport is configured, e.g. ``'tcp'``: "
        "a ``str`` of lowercase letters, digits and dashes."
    )

    description = Attribute("One line on what the transport is, for help texts.")

    def make_transport(context: TransportContext) -> ITransport:
        """
        Make the transport a node will use.

        :param TransportContext context: the node's reactor, data directory
            and the options meant for this transport.
        :returns: a provider of :class:`ITransport`.
        :raises TransportConfigError: when ``context.options`` cannot be
            used.
        """


class IOnionService(Interface):
    """
    An onion service that a tor publishes for us (see :class:`ITorControl`).
    """

    hostname = Attribute("Its ``.onion`` host name: a ``str``, lowercase.")

    def remove() -> Deferred[None]:
        """
        Stop publishing the service: tor forgets it and closes its circuits.

        :returns: a ``Deferred`` that fires once tor has removed it (or
            had already, with its control connection).
        """


class ITorControl(Interface):
    """
    A running tor as the ``tor`` transport uses it: it publishes onion
    services and opens streams to them.

    This is our interface, not txtorcon's: the real implementation wraps
    txtorcon, and a fake of ours stands in for it in tests that need no tor.
    """

    def publish_onion(virtual_port: int, local_port: int, seed: bytes) -> Deferred[IOnionService]:
        """
        Publish an ephemeral v3 onion service whose key is the Ed25519 key
        made from ``seed``, forwarding its ``virtual_port`` to
        ``127.0.0.1:local_port``.

        :param seed: the 32-byte Ed25519 seed of the service's key.
        :returns: a ``Deferred`` that fires with the :class:`IOnionService`
            once its descriptor has been uploaded at least once.
        :raises twisted.internet.error.CannotListenError: (through the
            Deferred) when tor refuses the service (e.g. it already
            publishes that key).
        """

    def onion_endpoint(host: str, port: int) -> IStreamClientEndpoint:
        """
        A client endpoint for ``port`` of the onion service ``host``, whose
        connections go through tor.

        Its ``connect`` fails with
        :class:`~digitalspring.transport.OnionServiceUnreachable` (a
        ``ConnectionRefusedError``) when no service answers at ``host`` or
        nothing listens on ``port``, with ``TimeoutError`` when tor gives up,
        and with another ``ConnectError`` otherwise.  Connections it makes
        end with Twisted's usual reasons (``ConnectionDone``,
        ``ConnectionLost``, ``ConnectionAborted``).
        """

    def bootstrap_phase() -> Deferred[TorBootstrap]:
        """
        How far tor has bootstrapped, in its own words
        (``GETINFO status/bootstrap-phase``).

        :returns: a ``Deferred`` that fires with a
            :class:`~digitalspring.transport.TorBootstrap`: 100 % (tag
            ``done``) once tor can build circuits, and with tor's
            ``warning`` while it has a problem.
        :raises TorUnavailable: (through the Deferred) once the control is
            closed.
        """

    def close() -> Deferred[None]:
        """
        Let go of tor: the onion services published through this control
        go away, and a tor we launched is stopped.

        :returns: a ``Deferred`` that fires once the control connection is
            closed and a launched tor has exited.
        """
