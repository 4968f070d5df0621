"""
Key bundles and sealed items (issue 12, item 4): offline key delivery with
forward secrecy.
"""

from __future__ import annotations

import itertools

from nacl.bindings import crypto_scalarmult
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.identity import Identity
from digitalspring.multicast._crypto import UndecryptableMessage, blake2b, decrypt, encrypt
from digitalspring.multicast._notices import INVITATION, NEW_EPOCH, REMOVAL
from digitalspring.multicast._prekeys import (
    _BUNDLE_SIGNED,
    MAX_ONE_TIME_PREKEYS,
    PREKEY_GRACE,
    SIGNED_PREKEY_LIFETIME,
    BundleBook,
    BundleQuotaExceeded,
    InvalidBundle,
    MemberPrekeys,
    NoPrekey,
    SealedItemRefused,
    _bundle_body,
    _key_pair,
    _read_header,
    decode_bundle,
    encode_bundle,
    seal,
)

GROUP = bytes(range(32))
NOW = 1_800_000_000
DAY = 24 * 3600
RETENTION = 30 * DAY


class Peers:
    """
    A member, an owner, and the owner's book holding the member's bundle.
    """

    def __init__(self) -> None:
        self.member = Identity.generate()
        self.owner = Identity.generate()
        self.prekeys = MemberPrekeys(self.member)
        self.book = BundleBook(self.owner.peer_id)
        bundle = self.prekeys.bundle(self.owner.peer_id, NOW)
        self.book.add(encode_bundle(bundle), self.member.peer_id, NOW)

    def seal(self, epoch: int, kind: str, payload: bytes, one_time: bool = True) -> bytes:
        signed, otpk = self.book.prekeys(self.member.peer_id, NOW, RETENTION)
        return seal(
            self.owner,
            self.member.peer_id,
            signed,
            otpk if one_time else None,
            GROUP,
            epoch,
            kind,
            payload,
        )


class BundleTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        A bundle decodes to what was encoded, with one-time prekeys reserved
        for its audience and a signed prekey valid for its lifetime, longer
        than mailboxes keep content by default.
        """
        member, owner, box = Identity.generate(), Identity.generate(), Identity.generate()
        bundle = MemberPrekeys(member).bundle(owner.peer_id, NOW, frozenset({box.peer_id}))
        self.assertEqual(decode_bundle(encode_bundle(bundle)), bundle)
        self.assertEqual(len(bundle.one_time_prekeys), MAX_ONE_TIME_PREKEYS)
        self.assertEqual(bundle.expires, NOW + SIGNED_PREKEY_LIFETIME)
        self.assertGreater(SIGNED_PREKEY_LIFETIME, RETENTION)
        self.assertEqual(bundle.notify_boxes, frozenset({box.peer_id}))

    def test_every_bit_flip_refused(self) -> None:
        """
        A bundle with any bit changed is refused: the issuer's signature
        covers all of it.
        """
        member, owner = Identity.generate(), Identity.generate()
        data = encode_bundle(MemberPrekeys(member).bundle(owner.peer_id, NOW))
        for offset in range(len(data)):
            for bit in (0, 7):
                damaged = bytearray(data)
                damaged[offset] ^= 1 << bit
                with self.assertRaises(InvalidBundle):
                    decode_bundle(bytes(damaged))

    def test_too_many_one_time_prekeys(self) -> None:
        """
        A bundle with more one-time prekeys than a peer may make us hold is
        refused, even signed by its issuer.
        """
        member, owner = Identity.generate(), Identity.generate()
        keys = tuple(sorted(_key_pair()[1] for _ in range(MAX_ONE_TIME_PREKEYS + 1)))
        body = _bundle_body(
            member.peer_id, owner.peer_id, 1, NOW + DAY, _key_pair()[1], keys[:-1], frozenset()
        )
        # One more key than allowed, the count patched by hand.
        count_at = body.index(keys[0]) - 1
        body = body[:count_at] + bytes([len(keys)]) + b"".join(keys) + body[-1:]
        data = body + member.sign(_BUNDLE_SIGNED + body)
        with self.assertRaises(InvalidBundle) as caught:
            decode_bundle(data)
        self.assertIn(f"at most {MAX_ONE_TIME_PREKEYS}", str(caught.exception))

    def test_book_bounds(self) -> None:
        """
        An owner holds one bundle per peer, the newest, and bundles of at
        most so many peers; a bundle from another peer than its issuer, for
        another audience, expired or replayed is refused.
        """
        owner = Identity.generate()
        book = BundleBook(owner.peer_id, most=3)
        members = [Identity.generate() for _ in range(4)]
        prekeys = [MemberPrekeys(member) for member in members]
        for member, keys in zip(members[:3], prekeys[:3], strict=True):
            book.add(encode_bundle(keys.bundle(owner.peer_id, NOW)), member.peer_id, NOW)
        with self.assertRaises(BundleQuotaExceeded):
            book.add(encode_bundle(prekeys[3].bundle(owner.peer_id, NOW)), members[3].peer_id, NOW)
        self.assertEqual(len(book), 3)
        # A held peer refreshes its bundle; its old one replayed is refused.
        old = encode_bundle(prekeys[0].bundle(owner.peer_id, NOW))
        book.add(encode_bundle(prekeys[0].bundle(owner.peer_id, NOW)), members[0].peer_id, NOW)
        with self.assertRaises(InvalidBundle):
            book.add(old, members[0].peer_id, NOW)
        fresh = encode_bundle(prekeys[1].bundle(owner.peer_id, NOW))
        with self.assertRaises(InvalidBundle):
            book.add(fresh, members[2].peer_id, NOW)
        with self.assertRaises(InvalidBundle):
            book.add(fresh, members[1].peer_id, NOW + SIGNED_PREKEY_LIFETIME)
        other = BundleBook(Identity.generate().peer_id)
        with self.assertRaises(InvalidBundle):
            other.add(fresh, members[1].peer_id, NOW)
        self.assertEqual(len(book), 3)

    def test_one_time_prekeys_handed_out_once(self) -> None:
        """
        The book hands out each one-time prekey once, then the signed
        prekey alone; a bundle that expires before an item could be
        collected gives nothing (the notice waits in the outbox).
        """
        peers = Peers()
        given = [
            peers.book.prekeys(peers.member.peer_id, NOW, RETENTION)[1]
            for _ in range(MAX_ONE_TIME_PREKEYS + 2)
        ]
        used = given[:MAX_ONE_TIME_PREKEYS]
        self.assertEqual(len(set(used)), MAX_ONE_TIME_PREKEYS)
        self.assertNotIn(None, used)
        self.assertEqual(given[MAX_ONE_TIME_PREKEYS:], [None, None])
        with self.assertRaises(NoPrekey):
            peers.book.prekeys(peers.member.peer_id, NOW, SIGNED_PREKEY_LIFETIME + 1)
        with self.assertRaises(NoPrekey):
            peers.book.prekeys(Identity.generate().peer_id, NOW, RETENTION)

    def test_member_holds_bounded_secrets(self) -> None:
        """
        Asked for bundles again and again, a member holds at most the
        one-time prekeys of one bundle per peer and its signed prekeys.
        """
        member, owner = Identity.generate(), Identity.generate()
        prekeys = MemberPrekeys(member)
        for _ in range(10):
            prekeys.bundle(owner.peer_id, NOW)
        self.assertEqual(prekeys.secrets_held(), MAX_ONE_TIME_PREKEYS + 1)


class SealingTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        An item sealed with a one-time prekey, or with the signed prekey
        alone, opens to its sender, group, epoch, kind and notice.
        """
        peers = Peers()
        for one_time in (True, False):
            item = peers.seal(4, NEW_EPOCH, b"epoch keys", one_time)
            opened = peers.prekeys.open(item, NOW + DAY, known_epoch=3)
            self.assertEqual(opened.sender, peers.owner.peer_id)
            self.assertEqual(
                (opened.group_id, opened.epoch, opened.kind, opened.payload),
                (GROUP, 4, NEW_EPOCH, b"epoch keys"),
            )

    def test_no_sender_signature(self) -> None:
        """
        Deniable: the member can make, from its own secrets and the owner's
        public key alone, an item that opens as the owner's.  So the item
        proves nothing about the owner to anyone else.
        """
        peers = Peers()
        given = peers.book.get(peers.member.peer_id)
        assert given is not None
        signed_public = given.signed_prekey
        signed_secret = peers.prekeys._signed[signed_public].secret
        _, ephemeral = _key_pair()
        shared = b"".join(
            [
                crypto_scalarmult(signed_secret, peers.owner.peer_id.x25519_public_key),
                crypto_scalarmult(peers.member.x25519_private_key, ephemeral),
                crypto_scalarmult(signed_secret, ephemeral),
            ]
        )
        real = peers.seal(1, INVITATION, b"x", one_time=False)
        header = _read_header(real)
        forged_header = real[: header.length - 32] + ephemeral
        forged = forged_header + encrypt(
            blake2b(b"ds-sealed-key", shared), bytes(24), b"forged", forged_header
        )
        opened = peers.prekeys.open(forged, NOW, known_epoch=None)
        self.assertEqual((opened.sender, opened.payload), (peers.owner.peer_id, b"forged"))

    def test_altered_refused(self) -> None:
        """
        An item with any byte changed is refused: the header is bound in as
        associated data, the ciphertext authenticated.
        """
        peers = Peers()
        item = peers.seal(2, REMOVAL, b"removed", one_time=False)
        for offset in range(len(item)):
            damaged = bytearray(item)
            damaged[offset] ^= 0x01
            with self.assertRaises(SealedItemRefused):
                peers.prekeys.open(bytes(damaged), NOW, known_epoch=2)
        self.assertEqual(peers.prekeys.open(item, NOW, known_epoch=2).payload, b"removed")

    def test_another_sender_refused(self) -> None:
        """
        An item that names the owner but was sealed by someone else does not
        open: DH1 needs the owner's identity.  Nor does one for another
        member.
        """
        peers = Peers()
        mallory = Identity.generate()
        signed, otpk = peers.book.prekeys(peers.member.peer_id, NOW, RETENTION)
        item = seal(mallory, peers.member.peer_id, signed, None, GROUP, 1, INVITATION, b"x")
        header = _read_header(item)
        claimed = item.replace(mallory.peer_id.public_key, peers.owner.peer_id.public_key, 1)
        self.assertEqual(_read_header(claimed).sender, peers.owner.peer_id)
        with self.assertRaises(SealedItemRefused):
            peers.prekeys.open(claimed, NOW, known_epoch=None)
        # Mallory's own name: no one-time prekey of ours is reserved for it,
        # but an item with the signed prekey alone does open, as Mallory's.
        self.assertEqual(peers.prekeys.open(item, NOW, known_epoch=None).sender, mallory.peer_id)
        self.assertIsNone(header.one_time_prekey)
        other = Identity.generate()
        for_other = seal(peers.owner, other.peer_id, signed, otpk, GROUP, 1, INVITATION, b"x")
        with self.assertRaises(SealedItemRefused):
            peers.prekeys.open(for_other, NOW, known_epoch=None)

    def test_one_time_prekey_reserved_for_its_audience(self) -> None:
        """
        A one-time prekey given to one owner does not open an item another
        sealed with it.
        """
        peers = Peers()
        signed, otpk = peers.book.prekeys(peers.member.peer_id, NOW, RETENTION)
        stranger = Identity.generate()
        item = seal(stranger, peers.member.peer_id, signed, otpk, GROUP, 1, INVITATION, b"x")
        with self.assertRaises(SealedItemRefused) as caught:
            peers.prekeys.open(item, NOW, known_epoch=None)
        self.assertIn("one-time prekey", str(caught.exception))

    def test_replay_refused(self) -> None:
        """
        An item opened once is refused the second time, sealed with a
        one-time prekey (its secret is deleted) or without one (its
        ephemeral key is remembered while the signed prekey lasts).
        """
        peers = Peers()
        for one_time in (True, False):
            item = peers.seal(1, INVITATION, b"welcome", one_time)
            peers.prekeys.open(item, NOW, known_epoch=None)
            with self.assertRaises(SealedItemRefused) as caught:
                peers.prekeys.open(item, NOW, known_epoch=None)
            self.assertRegex(str(caught.exception), "replay|used already")

    def test_one_time_secret_deleted_on_use(self) -> None:
        """
        Opening an item sealed with a one-time prekey deletes its secret.
        """
        peers = Peers()
        before = peers.prekeys.secrets_held()
        peers.prekeys.open(peers.seal(1, INVITATION, b"x"), NOW, known_epoch=None)
        self.assertEqual(peers.prekeys.secrets_held(), before - 1)

    def test_older_epoch_refused(self) -> None:
        """
        A new epoch at or before the one the member holds is refused, an
        invitation too; a removal before it is refused, at it taken.
        """
        peers = Peers()
        cases = [
            (NEW_EPOCH, 5, 5, False),
            (NEW_EPOCH, 4, 5, False),
            (NEW_EPOCH, 6, 5, True),
            (INVITATION, 5, 5, False),
            (INVITATION, 6, 5, True),
            (REMOVAL, 4, 5, False),
            (REMOVAL, 5, 5, True),
        ]
        for kind, epoch, known, taken in cases:
            item = peers.seal(epoch, kind, b"notice")
            if taken:
                self.assertEqual(peers.prekeys.open(item, NOW, known).epoch, epoch)
            else:
                with self.assertRaises(SealedItemRefused) as caught:
                    peers.prekeys.open(item, NOW, known)
                self.assertIn(f"epoch {epoch}", str(caught.exception))

    def test_signed_prekey_rotates_and_expires(self) -> None:
        """
        A bundle given past half the signed prekey's lifetime carries a new
        one; items sealed to the old one open until its expiry plus the
        grace, not after.
        """
        peers = Peers()
        old_item = peers.seal(1, INVITATION, b"old", one_time=False)
        later = NOW + SIGNED_PREKEY_LIFETIME // 2 + 1
        renewed = peers.prekeys.bundle(peers.owner.peer_id, later)
        self.assertNotEqual(
            renewed.signed_prekey, peers.book.get(peers.member.peer_id).signed_prekey
        )  # type: ignore[union-attr]
        end = NOW + SIGNED_PREKEY_LIFETIME + PREKEY_GRACE
        peers.prekeys.expire(end - 1)
        self.assertEqual(peers.prekeys.open(old_item, end - 1, None).payload, b"old")
        second = peers.seal(2, NEW_EPOCH, b"second", one_time=False)
        peers.prekeys.expire(end)
        with self.assertRaises(SealedItemRefused):
            peers.prekeys.open(second, end, 1)


class ForwardSecrecyTests(SynchronousTestCase):
    def test_leaked_identities_open_nothing(self) -> None:
        """
        Items waiting at a mailbox, sealed with a one-time prekey (opened,
        so its secret is deleted) and with the signed prekey alone (never
        opened: its secret is deleted at expiry plus grace).  Then both
        identity keys leak, with all the member still holds: no item opens,
        neither through the member's code nor with any key made from the
        DHs the leaked keys allow.  With the prekeys' secrets, those same
        DHs open them.
        """
        peers = Peers()
        kept = peers.seal(2, NEW_EPOCH, b"secret epoch keys", one_time=True)
        waiting = peers.seal(3, NEW_EPOCH, b"more epoch keys", one_time=False)
        (signed_secret,) = (prekey.secret for prekey in peers.prekeys._signed.values())
        reserved = dict(peers.prekeys._one_time[peers.owner.peer_id])
        leaked = [peers.owner.x25519_private_key, peers.member.x25519_private_key]
        for item in (kept, waiting):
            one_time = _read_header(item).one_time_prekey
            prekeys = [signed_secret] + ([reserved[one_time]] if one_time else [])
            self.assertTrue(_opens(item, leaked + prekeys, peers))
        self.assertEqual(peers.prekeys.open(kept, NOW, 1).payload, b"secret epoch keys")
        peers.prekeys.expire(NOW + SIGNED_PREKEY_LIFETIME + PREKEY_GRACE)
        self.assertEqual(peers.prekeys.secrets_held(), MAX_ONE_TIME_PREKEYS - 1)

        remaining = list(peers.prekeys._one_time[peers.owner.peer_id].values())
        for item in (kept, waiting):
            with self.assertRaises(SealedItemRefused):
                peers.prekeys.open(item, NOW, None)
            with self.assertRaises(SealedItemRefused):
                MemberPrekeys(peers.member).open(item, NOW, None)
            self.assertFalse(_opens(item, leaked + remaining[:2], peers))


def _opens(item: bytes, secrets: list[bytes], peers: Peers) -> bool:
    """
    Whether any key made as a sealed item's is made, from three or four
    DHs of ``secrets`` with the public keys the item and its peers show,
    opens ``item``.
    """
    header = _read_header(item)
    publics = [
        header.signed_prekey,
        header.ephemeral,
        peers.owner.peer_id.x25519_public_key,
        peers.member.peer_id.x25519_public_key,
    ]
    if header.one_time_prekey is not None:
        publics.append(header.one_time_prekey)
    candidates = [crypto_scalarmult(s, p) for s in secrets for p in publics]
    for size in (3, 4):
        for chosen in itertools.permutations(candidates, size):
            key = blake2b(b"ds-sealed-key", b"".join(chosen))
            try:
                decrypt(key, bytes(24), item[header.length :], item[: header.length])
            except UndecryptableMessage:
                continue
            return True
    return False
