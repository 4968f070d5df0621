# -*- test-case-name: tests.test_prekeys -*-
"""
Key bundles and sealed items: offline key delivery with forward secrecy
(issue 12, item 4).

A member gives each owner of its groups (and each contact) a *key bundle*
signed by its identity: a signed X25519 prekey, valid for longer than
mailboxes keep content, one-time prekeys reserved for that peer alone, and
the notification boxes it chose.  An owner that must tell a member who is
away of a new epoch, a removal or an invitation *seals* the notice to a
prekey of that member's bundle, X3DH-style, and leaves it at a mailbox::

    DH1 = DH(IK_owner, SPK)      DH2 = DH(EK, IK_member)
    DH3 = DH(EK, SPK)            DH4 = DH(EK, OPK)   (when one is left)
    key = BLAKE2b(person="ds-sealed-key", DH1 || DH2 || DH3 [|| DH4])

where ``IK`` are the X25519 forms of the two identities and ``EK`` is an
ephemeral key made for this item alone.  The notice is encrypted with
XChaCha20-Poly1305 under that key (fresh for each item, so the nonce is
zero), the header as associated data: both peer IDs, the group, the epoch
and the kind are bound in.  Nothing is signed by the owner's identity: DH1
convinces the member that only the owner (or the member itself) made it,
and the member could have made it itself, so the item proves nothing to
anyone else (deniable, as X3DH).

Forward secrecy: the member deletes a one-time prekey's secret when an item
sealed to it opens, and a signed prekey's secret at its expiry plus
:data:`PREKEY_GRACE`.  Without DH3 (the ephemeral's secret is gone with the
owner's call to :func:`seal`, the prekey's with the member's deletion),
even both identity keys open nothing.

The member's prekey secrets and the bundles peers gave are kept in the
node's store (:doc:`storage`, version 4).  Encodings::

    key bundle:
        varint  version (1)
        32 B    issuer (the member)
        32 B    audience (the peer the bundle is for)
        varint  serial (a newer bundle has a larger one)
        varint  expiry of the signed prekey, seconds since the epoch
        32 B    signed prekey (X25519)
        varint  number of one-time prekeys (at most 16), then 32 B each
        varint  number of notification boxes (at most 8), then 32 B each,
                sorted
        64 B    Ed25519 signature by the issuer of
                "ds-key-bundle" || everything above
    sealed item:
        varint  version (1)
        32 B    group ID
        varint  epoch
        varint  kind (1 invitation, 2 new epoch, 3 removal)
        32 B    sender (the owner)
        32 B    recipient (the member)
        32 B    signed prekey
        1 B     flag: a one-time prekey follows, then 32 B
        32 B    ephemeral key
        the rest: ciphertext of the notice (at most 3,584 bytes) and its tag
"""

from __future__ import annotations

from attrs import evolve, field, frozen
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import CryptoError
from nacl.utils import random as random_bytes
from twisted.internet.defer import DeferredLock

from .._codec import Reader, varint
from ..errors import DigitalSpringError
from ..identity import BadSignature, Identity, InvalidPeerID, PeerID
from ..storage import (
    AddPrekeys,
    AlreadyStored,
    Change,
    DeletePrekey,
    ExpirePrekeys,
    IStore,
    NotStored,
    Prekey,
    PutBundle,
    RecordOpened,
    SetSetting,
    StoredBundle,
)
from ._crypto import TAG_SIZE, UndecryptableMessage, blake2b, decrypt, encrypt
from ._epoch import GROUP_ID_SIZE
from ._notices import INVITATION, NEW_EPOCH, REMOVAL

#: A bundle's version: 2 carries the member's day-key secret (its
#: notifications in the DHT, when it has no box); 1, read still, does not.
BUNDLE_VERSION = 2
SEALED_VERSION = 1
#: The most one-time prekeys a bundle holds (and a member keeps for one
#: peer).
MAX_ONE_TIME_PREKEYS = 16
#: The most notification boxes a bundle names.
MAX_NOTIFY_BOXES = 8
#: How long a signed prekey is valid: twice the mailboxes' default
#: retention (30 days), so that an item left when it was given can be
#: opened while a mailbox still keeps it.
SIGNED_PREKEY_LIFETIME = 60 * 24 * 3600
#: How long after its expiry a member keeps a signed prekey's secret, for
#: items sealed to it just before (clocks differ, mailboxes hold items).
PREKEY_GRACE = 7 * 24 * 3600
#: The longest notice a sealed item carries, in bytes: with its header
#: (at most 205 bytes), tag, group and recipient it fits a notice to a
#: mailbox (4,096 bytes); an invitation is under 3,200.
MAX_SEALED_PAYLOAD = 3584

#: The setting that holds a member's day-key secret (hex), made with its
#: first bundle and never changed: every owner holds it.
NOTIFY_SECRET_SETTING = "notify-day-secret"  # noqa: S105 (its name, not it)

_KEY = 32
_SIGNATURE = 64
_BUNDLE_SIGNED = b"ds-key-bundle"
_SEALED_KEY = b"ds-sealed-key"
_ZERO_NONCE = bytes(24)
_KIND_CODES = {INVITATION: 1, NEW_EPOCH: 2, REMOVAL: 3}
_KINDS = {code: kind for kind, code in _KIND_CODES.items()}


class InvalidBundle(DigitalSpringError):
    """
    A key bundle that is malformed, not signed by its issuer, not for us,
    expired, or older than one we hold.
    """


class NoPrekey(DigitalSpringError):
    """
    We hold no bundle of the peer whose signed prekey lasts as long as the
    item must wait: the notice waits in the outbox until the peer is online.
    """


class SealedItemRefused(DigitalSpringError):
    """
    A sealed item that is malformed, not for us, sealed to a prekey whose
    secret we do not hold (never made, used, or deleted), replayed, for an
    epoch we are past, or that does not open.
    """


@frozen
class KeyBundle:
    """
    A member's prekeys for one peer, signed by the member.

    :ivar issuer: the member whose prekeys these are.
    :ivar audience: the peer they are reserved for.
    :ivar serial: a newer bundle of the issuer for the same peer has a
        larger one.
    :ivar expires: when the signed prekey stops being valid (seconds since
        the Unix epoch).
    :ivar signed_prekey: the X25519 public key items are sealed to.
    :ivar one_time_prekeys: X25519 public keys, each used for one item.
    :ivar notify_boxes: the member's notification boxes.
    :ivar signature: the issuer's signature (see the module's encoding).
    :ivar notify_secret: the secret the member's day keys are derived from
        (:func:`~digitalspring.multicast._notify.day_key`): where its
        notifications go in the DHT when it has no box; ``None`` in a
        bundle of version 1.
    """

    issuer: PeerID
    audience: PeerID
    serial: int
    expires: int
    signed_prekey: bytes
    one_time_prekeys: tuple[bytes, ...]
    notify_boxes: frozenset[PeerID]
    signature: bytes = field(repr=False)
    notify_secret: bytes | None = field(default=None, repr=False)


@frozen
class OpenedItem:
    """
    What a sealed item said, once opened.
    """

    sender: PeerID
    group_id: bytes
    epoch: int
    kind: str
    payload: bytes


def _bundle_body(
    issuer: PeerID,
    audience: PeerID,
    serial: int,
    expires: int,
    signed_prekey: bytes,
    one_time_prekeys: tuple[bytes, ...],
    notify_boxes: frozenset[PeerID],
    notify_secret: bytes | None = None,
) -> bytes:
    if len(one_time_prekeys) > MAX_ONE_TIME_PREKEYS or len(notify_boxes) > MAX_NOTIFY_BOXES:
        raise ValueError(
            f"a bundle holds at most {MAX_ONE_TIME_PREKEYS} one-time prekeys "
            f"and {MAX_NOTIFY_BOXES} notification boxes"
        )
    if notify_secret is not None and len(notify_secret) != _KEY:
        raise ValueError(f"a day-key secret has {_KEY} bytes")
    boxes = sorted(box.public_key for box in notify_boxes)
    return b"".join(
        [
            varint(1 if notify_secret is None else BUNDLE_VERSION),
            issuer.public_key,
            audience.public_key,
            varint(serial),
            varint(expires),
            signed_prekey,
            varint(len(one_time_prekeys)),
            *one_time_prekeys,
            varint(len(boxes)),
            *boxes,
            notify_secret or b"",
        ]
    )


def encode_bundle(bundle: KeyBundle) -> bytes:
    """
    The canonical encoding of ``bundle``, signature included.
    """
    body = _bundle_body(
        bundle.issuer,
        bundle.audience,
        bundle.serial,
        bundle.expires,
        bundle.signed_prekey,
        bundle.one_time_prekeys,
        bundle.notify_boxes,
        bundle.notify_secret,
    )
    return body + bundle.signature


def _peer(reader: Reader) -> PeerID:
    try:
        return PeerID(reader.take(_KEY))
    except InvalidPeerID as e:
        raise reader.fail(f"names no valid peer ({e})") from None


def decode_bundle(data: bytes) -> KeyBundle:
    """
    Read and check a key bundle: well formed, canonical, and signed by its
    issuer.  (Whether it is for us, unexpired and newest is
    :class:`BundleBook`'s to check.)

    :raises InvalidBundle: saying what is wrong.
    """
    reader = Reader(data, InvalidBundle, "key bundle")
    version = reader.varint()
    if version not in (1, BUNDLE_VERSION):
        raise reader.fail(f"is not of version 1 or {BUNDLE_VERSION}")
    issuer = _peer(reader)
    audience = _peer(reader)
    serial = reader.varint()
    expires = reader.varint()
    signed_prekey = reader.take(_KEY)
    count = reader.varint(MAX_ONE_TIME_PREKEYS)
    one_time = tuple(reader.take(_KEY) for _ in range(count))
    boxes = frozenset(_peer(reader) for _ in range(reader.varint(MAX_NOTIFY_BOXES)))
    secret = reader.take(_KEY) if version == BUNDLE_VERSION else None
    signed_end = reader.offset
    signature = reader.take(_SIGNATURE)
    reader.end()
    if len(set(one_time)) != len(one_time) or signed_prekey in one_time:
        raise reader.fail("repeats a prekey")
    body = data[:signed_end]
    if (
        _bundle_body(issuer, audience, serial, expires, signed_prekey, one_time, boxes, secret)
        != body
    ):
        raise reader.fail("is not in its canonical encoding")
    try:
        issuer.verify(_BUNDLE_SIGNED + body, signature)
    except BadSignature:
        raise reader.fail(f"is not signed by its issuer {issuer}") from None
    return KeyBundle(
        issuer, audience, serial, expires, signed_prekey, one_time, boxes, signature, secret
    )


def _dh(private_key: bytes, public_key: bytes) -> bytes:
    try:
        shared: bytes = crypto_scalarmult(private_key, public_key)
    except (CryptoError, RuntimeError, ValueError, TypeError) as e:
        raise SealedItemRefused(f"a key of the sealed item is unusable ({e})") from None
    return shared


def _key_pair() -> tuple[bytes, bytes]:
    secret: bytes = random_bytes(_KEY)
    public: bytes = crypto_scalarmult_base(secret)
    return secret, public


def _header(
    group_id: bytes,
    epoch: int,
    kind: str,
    sender: PeerID,
    recipient: PeerID,
    signed_prekey: bytes,
    one_time_prekey: bytes | None,
    ephemeral: bytes,
) -> bytes:
    return b"".join(
        [
            varint(SEALED_VERSION),
            group_id,
            varint(epoch),
            varint(_KIND_CODES[kind]),
            sender.public_key,
            recipient.public_key,
            signed_prekey,
            b"\x01" + one_time_prekey if one_time_prekey is not None else b"\x00",
            ephemeral,
        ]
    )


def _sealing_key(*shared: bytes) -> bytes:
    return blake2b(_SEALED_KEY, b"".join(shared))


def seal(
    sender: Identity,
    recipient: PeerID,
    signed_prekey: bytes,
    one_time_prekey: bytes | None,
    group_id: bytes,
    epoch: int,
    kind: str,
    payload: bytes,
) -> bytes:
    """
    Seal ``payload``, a notice of ``kind`` (invitation, new epoch or
    removal) for ``group_id`` at ``epoch``, from ``sender`` to
    ``recipient``'s prekeys (see the module docstring).  The ephemeral
    secret is forgotten on return.
    """
    if kind not in _KIND_CODES:
        raise ValueError(f"only {sorted(_KIND_CODES)} are sealed, not {kind!r}")
    if len(group_id) != GROUP_ID_SIZE or len(payload) > MAX_SEALED_PAYLOAD:
        raise ValueError(f"a group ID is 32 bytes, a sealed notice at most {MAX_SEALED_PAYLOAD}")
    ephemeral_secret, ephemeral = _key_pair()
    shared = [
        _dh(sender.x25519_private_key, signed_prekey),
        _dh(ephemeral_secret, recipient.x25519_public_key),
        _dh(ephemeral_secret, signed_prekey),
    ]
    if one_time_prekey is not None:
        shared.append(_dh(ephemeral_secret, one_time_prekey))
    header = _header(
        group_id, epoch, kind, sender.peer_id, recipient, signed_prekey, one_time_prekey, ephemeral
    )
    return header + encrypt(_sealing_key(*shared), _ZERO_NONCE, payload, header)


@frozen
class SealedHeader:
    """
    The header of a sealed item, in clear: what it is about and the keys it
    was sealed with; ``length`` is where its ciphertext starts.
    """

    group_id: bytes
    epoch: int
    kind: str
    sender: PeerID
    recipient: PeerID
    signed_prekey: bytes
    one_time_prekey: bytes | None
    ephemeral: bytes
    length: int


def read_sealed_header(data: bytes) -> SealedHeader:
    """
    The header of a sealed item (what a mailbox checks before it keeps one,
    and what the member reads before it opens one).

    :raises SealedItemRefused: when it is malformed.
    """
    reader = Reader(data, SealedItemRefused, "sealed item")
    if reader.varint() != SEALED_VERSION:
        raise reader.fail(f"is not of version {SEALED_VERSION}")
    group_id = reader.take(GROUP_ID_SIZE)
    epoch = reader.varint()
    code = reader.varint()
    if code not in _KINDS:
        raise reader.fail(f"is of no kind known ({code})")
    sender = _peer(reader)
    recipient = _peer(reader)
    signed_prekey = reader.take(_KEY)
    one_time = reader.take(_KEY) if reader.flag() else None
    ephemeral = reader.take(_KEY)
    if not TAG_SIZE <= len(data) - reader.offset <= MAX_SEALED_PAYLOAD + TAG_SIZE:
        raise reader.fail("carries a ciphertext of a size no notice has")
    return SealedHeader(
        group_id,
        epoch,
        _KINDS[code],
        sender,
        recipient,
        signed_prekey,
        one_time,
        ephemeral,
        reader.offset,
    )


_SERIAL_SETTING = "key-bundle-serial"


class MemberPrekeys:
    """
    A member's prekeys, in its store: the signed prekeys it gave (until
    their expiry plus :data:`PREKEY_GRACE`), the one-time prekeys it
    reserved for each peer (at most :data:`MAX_ONE_TIME_PREKEYS` each,
    deleted on use), and the ephemeral keys of the items each signed prekey
    opened (deleted with it), so that a replay is refused.
    """

    def __init__(
        self, identity: Identity, store: IStore, lifetime: int = SIGNED_PREKEY_LIFETIME
    ) -> None:
        self._identity = identity
        self._store = store
        self._lifetime = lifetime
        # Bundles are made one at a time: two at once would each top up the
        # same peer's one-time prekeys (past the store's bound) and take
        # the same serial.
        self._making = DeferredLock()

    async def bundle(
        self, audience: PeerID, now: int, notify_boxes: frozenset[PeerID] = frozenset()
    ) -> KeyBundle:
        """
        A bundle for ``audience``: the newest signed prekey (a new one once
        less than half its lifetime is left), and the one-time prekeys
        reserved for ``audience``, topped up to the most a bundle holds.
        Each bundle has a larger serial than the one before.
        """
        await self._making.acquire()
        try:
            return await self._bundle(audience, now, notify_boxes)
        finally:
            self._making.release()

    async def _bundle(
        self, audience: PeerID, now: int, notify_boxes: frozenset[PeerID]
    ) -> KeyBundle:
        held = await self._store.prekeys()
        signed = [p for p in held if p.expires is not None and p.expires > now]
        reserved = [p.public for p in held if p.audience == audience]
        new: list[Prekey] = []
        current = max(signed, key=lambda p: p.expires or 0, default=None)
        if current is None or (current.expires or 0) - now < self._lifetime // 2:
            secret, public = _key_pair()
            current = Prekey(public, secret, expires=now + self._lifetime)
            new.append(current)
        while len(reserved) < MAX_ONE_TIME_PREKEYS:
            secret, public = _key_pair()
            new.append(Prekey(public, secret, audience=audience))
            reserved.append(public)
        serial = int(await self._store.setting(_SERIAL_SETTING) or 0) + 1
        changes = [AddPrekeys(tuple(new)), SetSetting(_SERIAL_SETTING, str(serial))]
        held_secret = await self._store.setting(NOTIFY_SECRET_SETTING)
        if held_secret is None:
            notify_secret = random_bytes(_KEY)
            changes.append(SetSetting(NOTIFY_SECRET_SETTING, notify_secret.hex()))
        else:
            notify_secret = bytes.fromhex(held_secret)
        await self._store.commit(*changes)
        assert current.expires is not None
        one_time = tuple(sorted(reserved))
        body = _bundle_body(
            self._identity.peer_id,
            audience,
            serial,
            current.expires,
            current.public,
            one_time,
            notify_boxes,
            notify_secret,
        )
        return KeyBundle(
            self._identity.peer_id,
            audience,
            serial,
            current.expires,
            current.public,
            one_time,
            notify_boxes,
            self._identity.sign(_BUNDLE_SIGNED + body),
            notify_secret,
        )

    async def notify_secret(self) -> bytes | None:
        """
        The secret our day keys come from, once a bundle gave it (the first
        bundle makes it), else ``None``.
        """
        held = await self._store.setting(NOTIFY_SECRET_SETTING)
        return None if held is None else bytes.fromhex(held)

    async def renewal_due(self, now: int) -> bool:
        """
        Whether the next bundle carries a new signed prekey: the newest has
        less than half its lifetime left, or there is none.
        """
        held = await self._store.prekeys()
        newest = max((p.expires for p in held if p.expires is not None), default=None)
        return newest is None or newest - now < self._lifetime // 2

    async def expire(self, now: int) -> None:
        """
        Delete the secrets of signed prekeys past their expiry plus
        :data:`PREKEY_GRACE`, with the record of what they opened.
        """
        await self._store.commit(ExpirePrekeys(now - PREKEY_GRACE))

    async def _held(self, public: bytes) -> Prekey | None:
        try:
            return await self._store.prekey(public)
        except NotStored:
            return None

    async def open(self, data: bytes, now: int, known_epoch: int | None) -> OpenedItem:
        """
        Open a sealed item addressed to this member.  ``known_epoch`` is
        the group's epoch the member holds (``None`` when it is not a
        member): a new epoch must be past it, an invitation too (when
        known), a removal at or past it.  Once the item opens its
        ephemeral key is recorded with the signed prekey and the one-time
        prekey's secret deleted, in one transaction.

        :raises SealedItemRefused: saying why.
        """
        header = read_sealed_header(data)
        if header.recipient != self._identity.peer_id:
            raise SealedItemRefused(f"the sealed item is for {header.recipient}, not us")
        if known_epoch is not None:
            floor = known_epoch if header.kind == REMOVAL else known_epoch + 1
            if header.epoch < floor:
                raise SealedItemRefused(
                    f"the sealed {header.kind} is for epoch {header.epoch}; "
                    f"we hold epoch {known_epoch} of that group"
                )
        prekey = await self._held(header.signed_prekey)
        if prekey is None or prekey.expires is None or prekey.expires + PREKEY_GRACE <= now:
            raise SealedItemRefused("the sealed item's signed prekey is not one we hold")
        shared = [
            _dh(prekey.secret, header.sender.x25519_public_key),
            _dh(self._identity.x25519_private_key, header.ephemeral),
            _dh(prekey.secret, header.ephemeral),
        ]
        changes: list[Change] = [RecordOpened(header.signed_prekey, header.ephemeral)]
        if header.one_time_prekey is not None:
            one_time = await self._held(header.one_time_prekey)
            if one_time is None or one_time.audience != header.sender:
                raise SealedItemRefused(
                    f"the sealed item's one-time prekey is none we hold for {header.sender} "
                    "(used already, or never given to it)"
                )
            shared.append(_dh(one_time.secret, header.ephemeral))
            changes.append(DeletePrekey(header.one_time_prekey))
        try:
            payload = decrypt(
                _sealing_key(*shared), _ZERO_NONCE, data[header.length :], data[: header.length]
            )
        except UndecryptableMessage:
            raise SealedItemRefused(
                f"the sealed item does not open: not sealed by {header.sender}, or altered"
            ) from None
        try:
            await self._store.commit(*changes)
        except (AlreadyStored, NotStored):
            raise SealedItemRefused("the sealed item was opened before (a replay)") from None
        return OpenedItem(header.sender, header.group_id, header.epoch, header.kind, payload)


class BundleBook:
    """
    The bundles an owner (or contact) holds of its peers, in its store: the
    newest of each (the store bounds how many peers), each one-time prekey
    handed out once.
    """

    def __init__(self, own: PeerID, store: IStore) -> None:
        self._own = own
        self._store = store
        self._lock = DeferredLock()

    async def _held(self, peer: PeerID) -> StoredBundle | None:
        try:
            return await self._store.bundle(peer)
        except NotStored:
            return None

    async def add(self, data: bytes, sender: PeerID, now: int) -> KeyBundle:
        """
        Take a bundle ``sender`` gave us over our authenticated channel.

        :raises InvalidBundle: when it is malformed, not ``sender``'s, not
            for us, expired, or not newer than the one we hold.
        :raises TotalQuotaExceeded: when it is a new peer's and we hold as
            many as the store keeps.
        """
        bundle = decode_bundle(data)
        if bundle.issuer != sender or bundle.audience != self._own:
            raise InvalidBundle(
                f"the key bundle is {bundle.issuer}'s for {bundle.audience}, "
                f"but came from {sender} to us"
            )
        if bundle.expires <= now:
            raise InvalidBundle(f"the key bundle of {sender} has expired")
        await self._lock.acquire()
        try:
            held = await self._held(sender)
            handed_out: frozenset[bytes] = frozenset()
            if held is not None:
                if bundle.serial <= held.serial:
                    raise InvalidBundle(
                        f"the key bundle of {sender} is number {bundle.serial}; "
                        f"we hold number {held.serial}"
                    )
                # A one-time prekey we used may be in the new bundle too (its
                # item not opened yet): it is not handed out again.
                handed_out = held.handed_out & frozenset(bundle.one_time_prekeys)
            await self._store.commit(
                PutBundle(StoredBundle(sender, bundle.serial, bundle.expires, data, handed_out))
            )
        finally:
            self._lock.release()
        return bundle

    async def prekeys(self, peer: PeerID, now: int, wait: int) -> tuple[bytes, bytes | None]:
        """
        The signed prekey of ``peer`` and one of its one-time prekeys
        (``None`` once all are used), for an item that may wait ``wait``
        seconds (a mailbox's retention) before the peer opens it.

        :raises NoPrekey: when we hold no bundle of ``peer`` whose signed
            prekey lasts that long.
        """
        await self._lock.acquire()
        try:
            held = await self._held(peer)
            if held is None or held.expires < now + wait:
                raise NoPrekey(f"we hold no key bundle of {peer} valid for {wait} more seconds")
            bundle = decode_bundle(held.data)
            left = [k for k in bundle.one_time_prekeys if k not in held.handed_out]
            if not left:
                return bundle.signed_prekey, None
            handed_out = held.handed_out | {left[0]}
            await self._store.commit(PutBundle(evolve(held, handed_out=handed_out)))
            return bundle.signed_prekey, left[0]
        finally:
            self._lock.release()
