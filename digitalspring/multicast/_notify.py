# -*- test-case-name: tests.test_notify -*-
# mypy: disallow-untyped-calls=False
"""
Notifications and notification boxes (issue 12, item 3; the whitepaper's
options 4 and 5; ``docs/offline.rst``): pure functions and the commands,
no I/O.

A member chooses a few peers as its *notification boxes* and names them in
the key bundle it gives the owners of its groups (never in the DHT).  An
owner that cannot reach the member after a message, a new epoch or a
removal leaves a *notification* at each box: which group, the latest
(epoch, index) it sent, and a MAC under the group's access key, all sealed
to the member, so that the box learns neither group nor index, and a
notification made by anyone outside the group triggers nothing.  The
member collects its notifications when it starts, and catches up those
groups alone.

A notification, before sealing (padded with zeros to
:data:`NOTIFICATION_SIZE`)::

    varint  version (1)
    32 B    group ID
    varint  epoch, varint index + 1: the latest message sent (index -1:
            none yet in that epoch)
    varint  number of MACs (1 or 2), then each:
            varint epoch, 32 B BLAKE2b(key=that epoch's access key,
            person="ds-notify-mac", recipient || group ID || varint epoch
            || varint index + 1)

There are two MACs when the member may not hold the group's current epoch
yet (a new epoch waits for it): one under the current epoch's access key,
one under the key of the epoch before the first it was not given.

Sealed (an item, :data:`ITEM_SIZE` bytes, whatever it says)::

    32 B    the member's signed prekey (from its bundle)
    32 B    ephemeral X25519 key EK
    the rest: XChaCha20-Poly1305 (nonce zero: the key is fresh) of the
            padded notification, under BLAKE2b(person="ds-notify-key",
            DH(EK, IK_member) || DH(EK, SPK) || SPK || EK), with
            recipient || SPK || EK as associated data

A deposit goes over a connection of its own, dialled with a throwaway
identity (Noise XX), and carries a proof of work bound to that
connection's handshake hash, the box and the item:
``BLAKE2b-256("digitalspring notify deposit v1" || box || handshake hash
|| recipient || item || nonce)`` starts with as many zero bits as the box
asks (``notify-work``).  One deposit per connection.
"""

from __future__ import annotations

import hashlib
import hmac

from attrs import frozen
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import CryptoError
from nacl.utils import random as random_bytes
from twisted.protocols import amp

from .._codec import Reader, varint
from ..errors import DigitalSpringError
from ..identity import Identity, PeerID
from ._commands import BoundedBytes, PeerBusy
from ._crypto import TAG_SIZE, UndecryptableMessage, blake2b, decrypt, encrypt
from ._epoch import GROUP_ID_SIZE

NOTIFICATION_VERSION = 1
#: The size of a notification before sealing: the longest (two MACs, large
#: numbers) fits, and every one is padded to it.
NOTIFICATION_SIZE = 160
#: The size of every sealed notification.
ITEM_SIZE = 32 + 32 + NOTIFICATION_SIZE + TAG_SIZE
#: The most MACs a notification carries.
MAX_MACS = 2
#: Leading zero bits of the proof of work a box asks by default: about
#: 65,000 hashes, a few tenths of a second of one core.
DEFAULT_DEPOSIT_WORK = 16
#: The most a box may ask (a notifier refuses to work harder).
MAX_DEPOSIT_WORK = 24
#: The most notifications in one ``notify-collect`` answer.
MAX_COLLECT = 32

#: Seconds in a day: a member's DHT key changes every UTC day.
DAY = 24 * 3600
#: How long a notification is kept in the DHT: under the longest a value
#: may be (24 h), so that a storing node whose clock is a little behind
#: still takes it; the member reads today's key and yesterday's.
DHT_TTL = 23 * 3600
_DAY_PERSON = b"ds-notify-day"

_KEY = 32
_MAC = 32
_MAC_PERSON = b"ds-notify-mac"
_KEY_PERSON = b"ds-notify-key"
_WORK_DOMAIN = b"digitalspring notify deposit v1\0"
_ZERO_NONCE = bytes(24)
_NONCE = 8


class NotificationRefused(DigitalSpringError):
    """
    A notification that is malformed, does not open, or is not for a group
    we can check it in.
    """


class NotABox(DigitalSpringError):
    """
    This node does not serve as a notification box (run it with ``twistd
    dspring --notify-box``).
    """


class DepositRefused(DigitalSpringError):
    """
    The notification box refused the deposit: the member does not use it, a
    deposit was already made on this connection, or the item is malformed.
    """


class BoxFull(DigitalSpringError):
    """
    The notification box holds as many notifications as it keeps, for the
    member or in all.
    """


class InsufficientWork(DigitalSpringError):
    """
    The deposit's proof of work has fewer leading zero bits than the box
    asks.
    """


@frozen
class Notification:
    """
    What a notification says, once opened.

    :ivar latest: the latest (epoch, index) the notifier sent (index -1:
        none yet in that epoch).
    :ivar macs: (epoch, MAC under that epoch's access key).
    """

    group_id: bytes
    latest: tuple[int, int]
    macs: tuple[tuple[int, bytes], ...]


def notification_mac(
    access_key: bytes, recipient: PeerID, group_id: bytes, latest: tuple[int, int]
) -> bytes:
    """
    The MAC a notification for ``recipient`` carries under one access key.
    """
    body = recipient.public_key + group_id + varint(latest[0]) + varint(latest[1] + 1)
    return blake2b(_MAC_PERSON, body, key=access_key)


def make_notification(
    recipient: PeerID, group_id: bytes, latest: tuple[int, int], keys: dict[int, bytes]
) -> Notification:
    """
    A notification for ``recipient`` with a MAC under each of ``keys``
    (access keys by epoch, at most :data:`MAX_MACS`).
    """
    if not 1 <= len(keys) <= MAX_MACS:
        raise ValueError(f"a notification carries 1 to {MAX_MACS} MACs")
    macs = tuple(
        (epoch, notification_mac(key, recipient, group_id, latest))
        for epoch, key in sorted(keys.items())
    )
    return Notification(group_id, latest, macs)


def notification_valid(
    notification: Notification, recipient: PeerID, keys: dict[int, bytes]
) -> bool:
    """
    Whether one of the notification's MACs checks under the access key we
    hold of its epoch (``keys``, by epoch).
    """
    for epoch, mac in notification.macs:
        key = keys.get(epoch)
        if key is not None and hmac.compare_digest(
            mac, notification_mac(key, recipient, notification.group_id, notification.latest)
        ):
            return True
    return False


def encode_notification(notification: Notification) -> bytes:
    """
    The notification, padded to :data:`NOTIFICATION_SIZE`.
    """
    epoch, index = notification.latest
    body = b"".join(
        [
            varint(NOTIFICATION_VERSION),
            notification.group_id,
            varint(epoch),
            varint(index + 1),
            varint(len(notification.macs)),
            *(varint(e) + mac for e, mac in notification.macs),
        ]
    )
    if len(body) > NOTIFICATION_SIZE:
        raise ValueError("a notification too large to seal")
    return body.ljust(NOTIFICATION_SIZE, b"\0")


def decode_notification(data: bytes) -> Notification:
    """
    :raises NotificationRefused: when it is malformed.
    """
    reader = Reader(data, NotificationRefused, "notification")
    if reader.varint() != NOTIFICATION_VERSION:
        raise reader.fail(f"is not of version {NOTIFICATION_VERSION}")
    group_id = reader.take(GROUP_ID_SIZE)
    epoch = reader.varint()
    index = reader.varint() - 1
    count = reader.varint(MAX_MACS)
    macs = tuple((reader.varint(), reader.take(_MAC)) for _ in range(count))
    if not count or data[reader.offset :].strip(b"\0"):
        raise reader.fail("has no MAC, or something after its MACs")
    return Notification(group_id, (epoch, index), macs)


def day_key(secret: bytes, day: int) -> bytes:
    """
    The DHT key a member's notifications go under on ``day`` (days since
    the Unix epoch, UTC) when it has no box: one per member and day,
    whatever the group, unlinkable to the member without its secret.
    """
    return blake2b(_DAY_PERSON, varint(day), key=secret)


def _dh(private_key: bytes, public_key: bytes) -> bytes:
    try:
        shared: bytes = crypto_scalarmult(private_key, public_key)
    except (CryptoError, RuntimeError, ValueError, TypeError) as e:
        raise NotificationRefused(f"a key of the notification is unusable ({e})") from None
    return shared


def _key(shared: list[bytes], signed_prekey: bytes, ephemeral: bytes) -> bytes:
    return blake2b(_KEY_PERSON, b"".join(shared) + signed_prekey + ephemeral)


def seal_notification(
    recipient: PeerID, signed_prekey: bytes, notification: Notification
) -> bytes:
    """
    Seal ``notification`` to ``recipient``'s signed prekey; the ephemeral
    secret is forgotten on return.
    """
    secret: bytes = random_bytes(_KEY)
    ephemeral: bytes = crypto_scalarmult_base(secret)
    shared = [_dh(secret, recipient.x25519_public_key), _dh(secret, signed_prekey)]
    associated = recipient.public_key + signed_prekey + ephemeral
    sealed = encrypt(
        _key(shared, signed_prekey, ephemeral),
        _ZERO_NONCE,
        encode_notification(notification),
        associated,
    )
    return signed_prekey + ephemeral + sealed


def item_prekey(item: bytes) -> bytes:
    """
    The signed prekey an item is sealed to.

    :raises NotificationRefused: when it is not of the size every item has.
    """
    if len(item) != ITEM_SIZE:
        raise NotificationRefused(f"a notification has {ITEM_SIZE} bytes, not {len(item)}")
    return item[:_KEY]


def open_notification(identity: Identity, prekey_secret: bytes, item: bytes) -> Notification:
    """
    Open an item sealed to us, with the secret of the signed prekey it
    names (:func:`item_prekey`).

    :raises NotificationRefused: when it does not open or is malformed.
    """
    signed_prekey = item_prekey(item)
    ephemeral = item[_KEY : 2 * _KEY]
    shared = [
        _dh(identity.x25519_private_key, ephemeral),
        _dh(prekey_secret, ephemeral),
    ]
    associated = identity.peer_id.public_key + signed_prekey + ephemeral
    try:
        plain = decrypt(
            _key(shared, signed_prekey, ephemeral), _ZERO_NONCE, item[2 * _KEY :], associated
        )
    except UndecryptableMessage:
        raise NotificationRefused(
            "the notification does not open: altered, or not for us"
        ) from None
    return decode_notification(plain)


def _work(box: PeerID, binding: bytes, recipient: PeerID, item: bytes) -> bytes:
    return _WORK_DOMAIN + box.public_key + binding + recipient.public_key + item


def _zero_bits(digest: bytes) -> int:
    return len(digest) * 8 - int.from_bytes(digest, "big").bit_length()


def solve_deposit(box: PeerID, binding: bytes, recipient: PeerID, item: bytes, bits: int) -> bytes:
    """
    A nonce that makes the proof of work of a deposit at ``box`` on the
    connection whose handshake hash is ``binding``: about ``2 ** bits``
    hashes.
    """
    prefix = hashlib.blake2b(_work(box, binding, recipient, item), digest_size=32)
    limit = 1 << (256 - bits)
    counter = 0
    while True:
        nonce = counter.to_bytes(_NONCE, "big")
        attempt = prefix.copy()
        attempt.update(nonce)
        if int.from_bytes(attempt.digest(), "big") < limit:
            return nonce
        counter += 1


def check_deposit(
    box: PeerID, binding: bytes, recipient: PeerID, item: bytes, nonce: bytes, bits: int
) -> None:
    """
    :raises InsufficientWork: unless the nonce makes ``bits`` zero bits.
    """
    digest = hashlib.blake2b(_work(box, binding, recipient, item), digest_size=32)
    digest.update(nonce)
    found = _zero_bits(digest.digest())
    if len(nonce) != _NONCE or found < bits:
        raise InsufficientWork(
            f"the deposit's proof of work has {found} leading zero bits; this box asks {bits}"
        )


# --- commands ------------------------------------------------------------------

_ERRORS: dict[type[Exception], bytes] = {
    NotABox: b"NOT_A_BOX",
    DepositRefused: b"REFUSED",
    BoxFull: b"FULL",
    InsufficientWork: b"WORK",
    PeerBusy: b"BUSY",
}


class NotifyRegister(amp.Command):
    """
    The member on this connection uses the box (``use`` true) or no longer
    does (false: what the box held for it goes).
    """

    commandName = b"notify-register"
    arguments = [(b"use", amp.Boolean())]
    response = []
    errors = _ERRORS


class NotifyWork(amp.Command):
    """
    How many leading zero bits the box asks of a deposit's proof of work.
    """

    commandName = b"notify-work"
    arguments = []
    response = [(b"bits", amp.Integer())]
    errors = _ERRORS


class NotifyDeposit(amp.Command):
    """
    Leave a sealed notification for ``recipient`` (one per connection).
    """

    commandName = b"notify-deposit"
    arguments = [
        (b"recipient", BoundedBytes(_KEY)),
        (b"item", BoundedBytes(ITEM_SIZE)),
        (b"nonce", BoundedBytes(_NONCE)),
    ]
    response = []
    errors = _ERRORS


class NotifyCollect(amp.Command):
    """
    The oldest notifications the box holds for the member on this
    connection (at most :data:`MAX_COLLECT`, deleted once given), and how
    many deposits for it the box refused since it last collected.
    """

    commandName = b"notify-collect"
    arguments = []
    response = [
        (b"items", BoundedBytes(MAX_COLLECT * ITEM_SIZE)),
        (b"refused", amp.Integer()),
    ]
    errors = _ERRORS
