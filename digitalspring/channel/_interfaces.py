# -*- test-case-name: tests.test_channel -*-
"""
What a protocol above the secure channel can learn about its connection.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ISecureChannel(Interface):
    """
    Provided by the transport of every protocol that runs inside a secure
    channel: the wrapped protocol reads ``self.transport.peer_id`` to learn
    whom it talks to.  Everything here was proven by the Noise handshake.
    """

    peer_id = Attribute(
        "The authenticated :class:`digitalspring.identity.PeerID` of the other side."
    )
    handshake_hash = Attribute(
        "The Noise handshake hash (``bytes``): a value both sides share and no one else "
        "has, for channel binding."
    )
    initiator = Attribute("``True`` on the side that dialled.")
    pattern = Attribute("The Noise handshake pattern used: ``'IK'`` or ``'XX'``.")

    def abort_with(error: Exception) -> None:
        """
        Close the channel at once because the peer broke a rule of the
        protocol inside it: the wrapped protocol's ``connectionLost`` carries
        ``error`` (a :class:`digitalspring.channel.ChannelError`), and the
        channel counts and logs it with its own failures, at a bounded rate.
        """
