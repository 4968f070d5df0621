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
    from twisted.internet.interfaces import IListeningPort, IProtocol, IProtocolFactory

    from ._plugins import TransportContext


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
