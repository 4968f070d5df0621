# -*- test-case-name: tests.test_spring -*-
# mypy: disallow-untyped-calls=False
"""
The ``spring`` strategy's AMP commands, and the bitmaps they carry.

Every command names its group, and its responder asks the service's router
for the group's strategy, which refuses a peer that has not proven
membership of the group on that connection (``NOT_PROVEN``, the same
whatever the reason).  A transmission is named by its message's epoch and
index: the signed manifest, which only the activation carries, says
everything else.

``spring-activate``
    A transmission starts (or reaches one more member): the group, the
    signed manifest, the fragments the activator holds (``have``) and
    those it is about to push (``hint``, from the owner only), and for a
    message of one fragment the fragment itself.  The answer is what the
    activated member holds, and whether it committed the message already.
``spring-have``
    What the sender holds of a message now (the whole bitmap, so that
    announcements can be lost or reordered without harm).
``spring-request``
    Ask for one fragment; the answer is its bytes, or ``BUSY`` when the
    holder's upload queue is full (ask another holder), or ``REFUSED``.
``spring-push``
    One fragment the owner sends unasked to a member it activated
    directly (the fragments its hint named).
``spring-acks``
    Acknowledgement MACs on their way to the owner, along the activation
    tree: the member's own and its subtree's.
"""

from __future__ import annotations

from twisted.protocols import amp

from ..errors import DigitalSpringError
from ._commands import BoundedBytes
from ._manifest import FRAGMENT_SIZE, MAX_FRAGMENTS, MAX_MANIFEST_SIZE
from ._membership import MembershipNotProven
from ._notices import ACK_MAC_SIZE

#: The largest bitmap of fragments: one bit per fragment of the largest
#: message.
BITMAP_SIZE = -(-MAX_FRAGMENTS // 8)

#: The most acknowledgement MACs in one ``spring-acks``.
MAX_ACKS_PER_BOX = 1024


class SpringBusy(DigitalSpringError):
    """
    The holder's upload queue is full, or it already has requests of this
    peer under way: ask another holder, or again later.
    """


class SpringRefused(DigitalSpringError):
    """
    The peer refused a command: an unknown transmission, a fragment it
    does not hold, one that did not check out, or a peer over its bounds.
    """


_ERRORS: dict[type[Exception], bytes] = {
    MembershipNotProven: b"NOT_PROVEN",
    SpringRefused: b"REFUSED",
}


class SpringActivate(amp.Command):
    """
    Activate a member for the message whose signed manifest is
    ``manifest``.  ``relay`` false, from the owner only, says the owner
    activates every member itself: the member passes the activation on to
    nobody.
    """

    commandName = b"spring-activate"
    arguments = [
        (b"group", BoundedBytes(32)),
        (b"manifest", BoundedBytes(MAX_MANIFEST_SIZE)),
        (b"have", BoundedBytes(BITMAP_SIZE)),
        (b"hint", BoundedBytes(BITMAP_SIZE)),
        (b"data", BoundedBytes(FRAGMENT_SIZE, optional=True)),
        (b"relay", amp.Boolean(optional=True)),
    ]
    response = [(b"have", BoundedBytes(BITMAP_SIZE)), (b"complete", amp.Boolean())]
    errors = _ERRORS


class SpringHave(amp.Command):
    """
    The fragments of message ``index`` of ``epoch`` the sender holds now.
    """

    commandName = b"spring-have"
    arguments = [
        (b"group", BoundedBytes(32)),
        (b"epoch", amp.Integer()),
        (b"index", amp.Integer()),
        (b"have", BoundedBytes(BITMAP_SIZE)),
    ]
    response = []
    errors = _ERRORS


class SpringRequest(amp.Command):
    """
    Fragment ``number`` of message ``index`` of ``epoch``, please.
    """

    commandName = b"spring-request"
    arguments = [
        (b"group", BoundedBytes(32)),
        (b"epoch", amp.Integer()),
        (b"index", amp.Integer()),
        (b"number", amp.Integer()),
    ]
    response = [(b"data", BoundedBytes(FRAGMENT_SIZE))]
    errors = {**_ERRORS, SpringBusy: b"BUSY"}


class SpringPush(amp.Command):
    """
    Fragment ``number`` of message ``index`` of ``epoch``, from the owner,
    unasked; the answer says whether it was new.
    """

    commandName = b"spring-push"
    arguments = [
        (b"group", BoundedBytes(32)),
        (b"epoch", amp.Integer()),
        (b"index", amp.Integer()),
        (b"number", amp.Integer()),
        (b"data", BoundedBytes(FRAGMENT_SIZE)),
    ]
    response = [(b"new", amp.Boolean())]
    errors = _ERRORS


class SpringAcks(amp.Command):
    """
    Acknowledgement MACs of message ``index`` of ``epoch``, 32 bytes each,
    for the owner.
    """

    commandName = b"spring-acks"
    arguments = [
        (b"group", BoundedBytes(32)),
        (b"epoch", amp.Integer()),
        (b"index", amp.Integer()),
        (b"macs", BoundedBytes(ACK_MAC_SIZE * MAX_ACKS_PER_BOX)),
    ]
    response = []
    errors = _ERRORS


def encode_bitmap(bits: int) -> bytes:
    """
    A set of fragment numbers (bit ``n`` of ``bits`` for fragment ``n``)
    as bytes, least significant first, without trailing zero bytes.
    """
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


def decode_bitmap(data: bytes, count: int) -> int:
    """
    The set of fragment numbers in ``data``.

    :param count: the number of fragments of the message.
    :raises SpringRefused: when it names a fragment the message does not
        have, or is not in its shortest form.
    """
    if data and data[-1] == 0:
        raise SpringRefused("a bitmap with trailing zero bytes")
    bits = int.from_bytes(data, "little")
    if bits >> count:
        raise SpringRefused("a bitmap naming fragments the message does not have")
    return bits


def split_macs(data: bytes) -> list[bytes]:
    """
    The MACs in a ``spring-acks``.

    :raises SpringRefused: when its length is not a multiple of a MAC's.
    """
    if len(data) % ACK_MAC_SIZE:
        raise SpringRefused("acknowledgements of the wrong size")
    return [data[i : i + ACK_MAC_SIZE] for i in range(0, len(data), ACK_MAC_SIZE)]
