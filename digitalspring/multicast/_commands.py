# -*- test-case-name: tests.test_multicast_service -*-
"""
The multicast service's AMP commands, the same for every strategy.

``group-prove``
    The side that asks proves membership of a group first, bound to the
    channel's handshake hash and to its role in the connection; the other
    side checks it, and only then answers with its own proof.  A refusal is
    :class:`~digitalspring.multicast.MembershipNotProven` with one message,
    whatever the reason (not a member, a reflected or replayed proof,
    another group, an older epoch, a blocked peer).
``group-sealed``
    A member asks a mailbox of a group for the items the owner sealed for
    it while it was away (see ``_prekeys.py``), authenticated by the
    channel alone (it may not hold the epoch to prove membership in): the
    oldest, at most :data:`MAX_SEALED_ANSWER`, which the mailbox then
    deletes.
``group-notice``
    One notice between an owner and a member (see ``_notices.py``),
    authenticated by the channel itself: the peer's identity is the one its
    Noise handshake proved.  A refusal is :class:`NoticeRefused`, again the
    same whatever the reason.
"""

from __future__ import annotations

from twisted.protocols import amp

from ..errors import DigitalSpringError
from ._membership import PROOF_SIZE, MembershipNotProven


class NoticeRefused(DigitalSpringError):
    """
    The peer refused a group notice: it is not for a group the two share,
    the peer blocks this node, or it is over its bounds.
    """


class PeerBusy(DigitalSpringError):
    """
    The peer is busy: it takes this kind of request from us, or from all
    its peers together, at a bounded rate.  Try again later.
    """


class BoundedBytes(amp.Argument):
    """
    Bytes of at most ``largest``, refused on both ends.
    """

    def __init__(self, largest: int, optional: bool = False) -> None:
        super().__init__(optional)
        self.largest = largest

    def fromString(self, inString: bytes) -> bytes:
        if len(inString) > self.largest:
            raise amp.TooLong(False, True, inString, None)
        return inString

    def toString(self, inObject: bytes) -> bytes:
        if len(inObject) > self.largest:
            raise amp.TooLong(False, True, inObject, None)
        return inObject


#: The largest notice payload: an invitation with every field at its
#: longest (a little under 3 kB), rounded up.
MAX_NOTICE_SIZE = 4096


class ProveMembership(amp.Command):
    """
    Prove membership of ``group`` in ``epoch``; the answer is the other
    side's proof.
    """

    commandName = b"group-prove"
    arguments = [
        (b"group", BoundedBytes(32)),
        (b"epoch", amp.Integer()),
        (b"proof", BoundedBytes(PROOF_SIZE)),
    ]
    response = [(b"proof", BoundedBytes(PROOF_SIZE))]
    errors = {MembershipNotProven: b"NOT_PROVEN"}


#: The most sealed items in one ``group-sealed`` answer, and its most bytes
#: (one AMP value): each item, with its length, is under 3,900 bytes.
MAX_SEALED_ANSWER = 12
MAX_SEALED_ANSWER_SIZE = 60_000


class CollectSealed(amp.Command):
    """
    The items a mailbox holds for the asker in ``group``, each as ``varint
    length, item``.
    """

    commandName = b"group-sealed"
    arguments = [(b"group", BoundedBytes(32))]
    response = [(b"items", BoundedBytes(MAX_SEALED_ANSWER_SIZE))]
    errors = {NoticeRefused: b"REFUSED", PeerBusy: b"BUSY"}


class GroupNotice(amp.Command):
    """
    Hand over one notice (``kind`` is one of ``_notices.KINDS``).
    """

    commandName = b"group-notice"
    arguments = [(b"kind", amp.Unicode()), (b"payload", BoundedBytes(MAX_NOTICE_SIZE))]
    response = []
    errors = {NoticeRefused: b"REFUSED", PeerBusy: b"BUSY"}
