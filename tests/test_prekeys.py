"""
Key bundles and sealed items (issue 12, item 4): offline key delivery with
forward secrecy.
"""

from __future__ import annotations

import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

from nacl.bindings import crypto_scalarmult
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from digitalspring._codec import varint
from digitalspring.identity import Identity
from digitalspring.multicast import MulticastService, UnicastStrategyPlugin
from digitalspring.multicast._bundles import MAX_SEALED_ROUNDS
from digitalspring.multicast._commands import MAX_SEALED_ANSWER, NoticeRefused
from digitalspring.multicast._crypto import UndecryptableMessage, blake2b, decrypt, encrypt
from digitalspring.multicast._notices import INVITATION, KEY_BUNDLE, NEW_EPOCH, REMOVAL, SEALED
from digitalspring.multicast._prekeys import (
    _BUNDLE_SIGNED,
    MAX_ONE_TIME_PREKEYS,
    PREKEY_GRACE,
    SIGNED_PREKEY_LIFETIME,
    BundleBook,
    InvalidBundle,
    MemberPrekeys,
    NoPrekey,
    SealedItemRefused,
    _bundle_body,
    _key_pair,
    decode_bundle,
    encode_bundle,
    read_sealed_header,
    seal,
)
from digitalspring.storage import (
    AddPrekeys,
    MemoryStore,
    NotStored,
    PeerQuotaExceeded,
    Prekey,
    StoreLimits,
    TotalQuotaExceeded,
)
from digitalspring.testing._strategy import GroupNetwork

GROUP = bytes(range(32))
NOW = 1_800_000_000
DAY = 24 * 3600
RETENTION = 30 * DAY

_T = TypeVar("_T")


def done(test: SynchronousTestCase, work: Coroutine[Any, Any, _T] | Deferred[_T]) -> _T:
    """
    The result of ``work``, which the memory store lets finish at once.
    """
    return test.successResultOf(ensureDeferred(work))


def refused(
    test: SynchronousTestCase,
    work: Coroutine[Any, Any, object] | Deferred[Any],
    error: type[Exception],
) -> str:
    """
    The message of ``error``, with which ``work`` fails at once.
    """
    failure = test.failureResultOf(ensureDeferred(work), error)
    return str(failure.value)


class SlowCommits:
    """
    A memory store whose commits wait until :meth:`release`.
    """

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.waiting: list[tuple[Deferred[None], tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def commit(self, *changes: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append((d, changes))
        return d

    def release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d, changes in waiting:
            self.store.commit(*changes).chainDeferred(d)


class Peers:
    """
    A member, an owner, each with its store, and the owner's book holding
    the member's bundle.
    """

    def __init__(self, test: SynchronousTestCase, store: Any = None) -> None:
        self.test = test
        self.member = Identity.generate()
        self.owner = Identity.generate()
        self.member_store = store or MemoryStore()
        self.prekeys = MemberPrekeys(self.member, self.member_store)
        self.book = BundleBook(self.owner.peer_id, MemoryStore())
        made = ensureDeferred(self.prekeys.bundle(self.owner.peer_id, NOW))
        if isinstance(self.member_store, SlowCommits):
            self.member_store.release()
        bundle = test.successResultOf(made)
        done(test, self.book.add(encode_bundle(bundle), self.member.peer_id, NOW))

    def held(self) -> list[Prekey]:
        return done(self.test, self.member_store.prekeys())

    def take(self) -> tuple[bytes, bytes | None]:
        return done(self.test, self.book.prekeys(self.member.peer_id, NOW, RETENTION))

    def open(self, item: bytes, now: int, known: int | None) -> Any:
        return done(self.test, self.prekeys.open(item, now, known))

    def refused(self, item: bytes, now: int, known: int | None) -> str:
        return refused(self.test, self.prekeys.open(item, now, known), SealedItemRefused)

    def seal(self, epoch: int, kind: str, payload: bytes, one_time: bool = True) -> bytes:
        signed, otpk = self.take()
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
    def bundle(self, member: Identity, owner: Identity, **kwargs: Any) -> bytes:
        prekeys = MemberPrekeys(member, MemoryStore())
        return encode_bundle(done(self, prekeys.bundle(owner.peer_id, NOW, **kwargs)))

    def test_round_trip(self) -> None:
        """
        A bundle decodes to what was encoded, with one-time prekeys reserved
        for its audience and a signed prekey valid for its lifetime, longer
        than mailboxes keep content by default.
        """
        member, owner, box = Identity.generate(), Identity.generate(), Identity.generate()
        prekeys = MemberPrekeys(member, MemoryStore())
        bundle = done(self, prekeys.bundle(owner.peer_id, NOW, frozenset({box.peer_id})))
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
        data = self.bundle(Identity.generate(), Identity.generate())
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
        book = BundleBook(owner.peer_id, MemoryStore(StoreLimits(key_bundles_total=3)))
        members = [Identity.generate() for _ in range(4)]
        prekeys = [MemberPrekeys(member, MemoryStore()) for member in members]

        def bundle(n: int) -> bytes:
            return encode_bundle(done(self, prekeys[n].bundle(owner.peer_id, NOW)))

        for n in range(3):
            done(self, book.add(bundle(n), members[n].peer_id, NOW))
        refused(self, book.add(bundle(3), members[3].peer_id, NOW), TotalQuotaExceeded)
        # A held peer refreshes its bundle; its old one replayed is refused.
        old = bundle(0)
        done(self, book.add(bundle(0), members[0].peer_id, NOW))
        self.assertIn(
            "we hold number", refused(self, book.add(old, members[0].peer_id, NOW), InvalidBundle)
        )
        fresh = bundle(1)
        refused(self, book.add(fresh, members[2].peer_id, NOW), InvalidBundle)
        late = NOW + SIGNED_PREKEY_LIFETIME
        refused(self, book.add(fresh, members[1].peer_id, late), InvalidBundle)
        other = BundleBook(Identity.generate().peer_id, MemoryStore())
        refused(self, other.add(fresh, members[1].peer_id, NOW), InvalidBundle)
        done(self, book.add(fresh, members[1].peer_id, NOW))

    def test_one_time_prekeys_handed_out_once(self) -> None:
        """
        The book hands out each one-time prekey once, then the signed
        prekey alone; a bundle that expires before an item could be
        collected gives nothing (the notice waits in the outbox).
        """
        peers = Peers(self)
        given = [peers.take()[1] for _ in range(MAX_ONE_TIME_PREKEYS + 2)]
        used = given[:MAX_ONE_TIME_PREKEYS]
        self.assertEqual(len(set(used)), MAX_ONE_TIME_PREKEYS)
        self.assertNotIn(None, used)
        self.assertEqual(given[MAX_ONE_TIME_PREKEYS:], [None, None])
        member = peers.member.peer_id
        too_long = SIGNED_PREKEY_LIFETIME + 1
        refused(self, peers.book.prekeys(member, NOW, too_long), NoPrekey)
        refused(self, peers.book.prekeys(Identity.generate().peer_id, NOW, RETENTION), NoPrekey)

    def test_refreshed_bundle_hands_out_no_key_twice(self) -> None:
        """
        A member's new bundle repeats the one-time prekeys it still holds,
        among them one the owner used for an item the member has not opened
        yet: the owner does not hand it out again, and both items open.
        Once the member opened it, the next bundle leaves it out.
        """
        peers = Peers(self)
        first = peers.seal(1, INVITATION, b"first")
        used = read_sealed_header(first).one_time_prekey
        renewed = done(self, peers.prekeys.bundle(peers.owner.peer_id, NOW))
        self.assertIn(used, renewed.one_time_prekeys)
        done(self, peers.book.add(encode_bundle(renewed), peers.member.peer_id, NOW))
        second = peers.seal(2, NEW_EPOCH, b"second")
        self.assertNotEqual(read_sealed_header(second).one_time_prekey, used)
        self.assertEqual(peers.open(first, NOW, None).payload, b"first")
        self.assertEqual(peers.open(second, NOW, 1).payload, b"second")
        later = done(self, peers.prekeys.bundle(peers.owner.peer_id, NOW))
        self.assertNotIn(used, later.one_time_prekeys)
        self.assertEqual(len(later.one_time_prekeys), MAX_ONE_TIME_PREKEYS)

    def test_member_holds_bounded_secrets(self) -> None:
        """
        Asked for bundles again and again, a member holds the one-time
        prekeys of one bundle per peer and one signed prekey; the store
        refuses more one-time prekeys for one peer than its bound.
        """
        member, owner = Identity.generate(), Identity.generate()
        store = MemoryStore(StoreLimits(one_time_prekeys_per_peer=MAX_ONE_TIME_PREKEYS))
        prekeys = MemberPrekeys(member, store)
        serials = [done(self, prekeys.bundle(owner.peer_id, NOW)).serial for _ in range(10)]
        self.assertEqual(serials, list(range(1, 11)))
        self.assertEqual(len(done(self, store.prekeys())), MAX_ONE_TIME_PREKEYS + 1)
        extra = Prekey(_key_pair()[1], b"s" * 32, audience=owner.peer_id)
        refused(self, store.commit(AddPrekeys((extra,))), PeerQuotaExceeded)

    def test_bundles_made_one_at_a_time(self) -> None:
        """
        Two bundles asked for at once (two invitations of one owner, a store
        that answers later) are made one after the other: the second takes
        the first's prekeys and the next serial, within the store's bound.
        """
        member, owner = Identity.generate(), Identity.generate()
        store = SlowCommits()
        prekeys = MemberPrekeys(member, store)
        first = ensureDeferred(prekeys.bundle(owner.peer_id, NOW))
        second = ensureDeferred(prekeys.bundle(owner.peer_id, NOW))
        store.release()
        store.release()
        one, two = self.successResultOf(first), self.successResultOf(second)
        self.assertEqual((one.serial, two.serial), (1, 2))
        self.assertEqual(one.one_time_prekeys, two.one_time_prekeys)
        self.assertEqual(one.signed_prekey, two.signed_prekey)
        self.assertEqual(len(done(self, store.store.prekeys())), MAX_ONE_TIME_PREKEYS + 1)


class SealingTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        An item sealed with a one-time prekey, or with the signed prekey
        alone, opens to its sender, group, epoch, kind and notice.
        """
        peers = Peers(self)
        for one_time in (True, False):
            item = peers.seal(4, NEW_EPOCH, b"epoch keys", one_time)
            opened = peers.open(item, NOW + DAY, 3)
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
        peers = Peers(self)
        [signed] = [p for p in peers.held() if p.expires is not None]
        _, ephemeral = _key_pair()
        shared = b"".join(
            [
                crypto_scalarmult(signed.secret, peers.owner.peer_id.x25519_public_key),
                crypto_scalarmult(peers.member.x25519_private_key, ephemeral),
                crypto_scalarmult(signed.secret, ephemeral),
            ]
        )
        real = peers.seal(1, INVITATION, b"x", one_time=False)
        header = read_sealed_header(real)
        forged_header = real[: header.length - 32] + ephemeral
        forged = forged_header + encrypt(
            blake2b(b"ds-sealed-key", shared), bytes(24), b"forged", forged_header
        )
        opened = peers.open(forged, NOW, None)
        self.assertEqual((opened.sender, opened.payload), (peers.owner.peer_id, b"forged"))

    def test_altered_refused(self) -> None:
        """
        An item with any byte changed is refused: the header is bound in as
        associated data, the ciphertext authenticated.
        """
        peers = Peers(self)
        item = peers.seal(2, REMOVAL, b"removed", one_time=False)
        for offset in range(len(item)):
            damaged = bytearray(item)
            damaged[offset] ^= 0x01
            peers.refused(bytes(damaged), NOW, 2)
        self.assertEqual(peers.open(item, NOW, 2).payload, b"removed")

    def test_another_sender_refused(self) -> None:
        """
        An item that names the owner but was sealed by someone else does not
        open: DH1 needs the owner's identity.  Nor does one for another
        member.
        """
        peers = Peers(self)
        mallory = Identity.generate()
        signed, otpk = peers.take()
        item = seal(mallory, peers.member.peer_id, signed, None, GROUP, 1, INVITATION, b"x")
        claimed = item.replace(mallory.peer_id.public_key, peers.owner.peer_id.public_key, 1)
        self.assertEqual(read_sealed_header(claimed).sender, peers.owner.peer_id)
        self.assertIn("does not open", peers.refused(claimed, NOW, None))
        # In its own name, with the signed prekey alone, it opens as
        # Mallory's: the caller takes notices from the group's owner only.
        self.assertEqual(peers.open(item, NOW, None).sender, mallory.peer_id)
        other = Identity.generate()
        for_other = seal(peers.owner, other.peer_id, signed, otpk, GROUP, 1, INVITATION, b"x")
        self.assertIn("not us", peers.refused(for_other, NOW, None))

    def test_one_time_prekey_reserved_for_its_audience(self) -> None:
        """
        A one-time prekey given to one owner does not open an item another
        sealed with it, and stays for its owner.
        """
        peers = Peers(self)
        signed, otpk = peers.take()
        stranger = Identity.generate()
        item = seal(stranger, peers.member.peer_id, signed, otpk, GROUP, 1, INVITATION, b"x")
        self.assertIn("one-time prekey", peers.refused(item, NOW, None))
        mine = seal(peers.owner, peers.member.peer_id, signed, otpk, GROUP, 1, INVITATION, b"y")
        self.assertEqual(peers.open(mine, NOW, None).payload, b"y")

    def test_replay_refused(self) -> None:
        """
        An item opened once is refused the second time, sealed with a
        one-time prekey (its secret is deleted) or without one (its
        ephemeral key is recorded while the signed prekey lasts).
        """
        peers = Peers(self)
        for one_time in (True, False):
            item = peers.seal(1, INVITATION, b"welcome", one_time)
            peers.open(item, NOW, None)
            self.assertRegex(peers.refused(item, NOW, None), "replay|used already")

    def test_concurrent_replay_refused(self) -> None:
        """
        The same item opened twice at once (its first opening not yet
        written) is taken once: recording its ephemeral key and deleting
        its one-time prekey are one transaction, which the second refuses.
        """
        for one_time in (True, False):
            store = SlowCommits()
            peers = Peers(self, store)
            item = peers.seal(1, INVITATION, b"welcome", one_time)
            first = ensureDeferred(peers.prekeys.open(item, NOW, None))
            second = ensureDeferred(peers.prekeys.open(item, NOW, None))
            self.assertNoResult(first)
            self.assertNoResult(second)
            store.release()
            self.assertEqual(self.successResultOf(first).payload, b"welcome")
            self.assertIn("replay", str(self.failureResultOf(second, SealedItemRefused).value))

    def test_one_time_secret_deleted_on_use(self) -> None:
        """
        Opening an item sealed with a one-time prekey deletes its secret.
        """
        peers = Peers(self)
        before = len(peers.held())
        item = peers.seal(1, INVITATION, b"x")
        otpk = read_sealed_header(item).one_time_prekey
        peers.open(item, NOW, None)
        self.assertEqual(len(peers.held()), before - 1)
        self.assertNotIn(otpk, [p.public for p in peers.held()])

    def test_older_epoch_refused(self) -> None:
        """
        A new epoch at or before the one the member holds is refused, an
        invitation too; a removal before it is refused, at it taken.
        """
        peers = Peers(self)
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
                self.assertEqual(peers.open(item, NOW, known).epoch, epoch)
            else:
                self.assertIn(f"epoch {epoch}", peers.refused(item, NOW, known))

    def test_signed_prekey_rotates_and_expires(self) -> None:
        """
        A bundle given past half the signed prekey's lifetime carries a new
        one; items sealed to the old one open until its expiry plus the
        grace, not after.
        """
        peers = Peers(self)
        old_item = peers.seal(1, INVITATION, b"old", one_time=False)
        second = peers.seal(2, NEW_EPOCH, b"second", one_time=False)
        later = NOW + SIGNED_PREKEY_LIFETIME // 2 + 1
        renewed = done(self, peers.prekeys.bundle(peers.owner.peer_id, later))
        self.assertNotEqual(renewed.signed_prekey, read_sealed_header(old_item).signed_prekey)
        end = NOW + SIGNED_PREKEY_LIFETIME + PREKEY_GRACE
        done(self, peers.prekeys.expire(end - 1))
        self.assertEqual(peers.open(old_item, end - 1, None).payload, b"old")
        done(self, peers.prekeys.expire(end))
        self.assertIn("signed prekey", peers.refused(second, end, 1))
        self.assertEqual(
            [p.public for p in peers.held() if p.expires is not None], [renewed.signed_prekey]
        )


class ForwardSecrecyTests(SynchronousTestCase):
    def test_leaked_identities_open_nothing(self) -> None:
        """
        Items waiting at a mailbox, sealed with a one-time prekey (opened,
        so its secret is deleted) and with the signed prekey alone (never
        opened: its secret is deleted at expiry plus grace).  Then both
        identity keys leak, with all the member's store still holds: no
        item opens, neither through the member's code nor with any key made
        from the DHs the leaked keys allow.  With the prekeys' secrets,
        those same DHs open them.
        """
        peers = Peers(self)
        kept = peers.seal(2, NEW_EPOCH, b"secret epoch keys", one_time=True)
        waiting = peers.seal(3, NEW_EPOCH, b"more epoch keys", one_time=False)
        secrets = {p.public: p.secret for p in peers.held()}
        leaked = [peers.owner.x25519_private_key, peers.member.x25519_private_key]
        for item in (kept, waiting):
            header = read_sealed_header(item)
            used = [header.signed_prekey, header.one_time_prekey]
            prekeys = [secrets[public] for public in used if public is not None]
            self.assertTrue(_opens(item, leaked + prekeys, peers))
        self.assertEqual(peers.open(kept, NOW, 1).payload, b"secret epoch keys")
        done(self, peers.prekeys.expire(NOW + SIGNED_PREKEY_LIFETIME + PREKEY_GRACE))
        remaining = [p.secret for p in peers.held()]
        self.assertEqual(len(remaining), MAX_ONE_TIME_PREKEYS - 1)

        for item in (kept, waiting):
            peers.refused(item, NOW, None)
            self.assertFalse(_opens(item, leaked + remaining[:2], peers))


def _opens(item: bytes, secrets: list[bytes], peers: Peers) -> bool:
    """
    Whether any key made as a sealed item's is made, from three or four
    DHs of ``secrets`` with the public keys the item and its peers show,
    opens ``item``.
    """
    header = read_sealed_header(item)
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


class ServiceTests(SynchronousTestCase):
    """
    Bundles between the nodes of a group on the memory network.
    """

    def _group(self) -> tuple[GroupNetwork, MulticastService, list[MulticastService], bytes]:
        net = GroupNetwork({"unicast": UnicastStrategyPlugin()})
        owner = net.node("owner")
        members = [net.node(f"m{i}") for i in range(2)]
        group_id = net.group(owner, *members, strategy="unicast")
        net.run(10)
        return net, owner, members, group_id

    def _bundle(self, net: GroupNetwork, owner: MulticastService, member: MulticastService) -> Any:
        return decode_bundle(net.result(owner.store.bundle(member.local)).data)

    def test_member_gives_owner_its_bundle(self) -> None:
        """
        A member joining a group gives its owner a bundle, through the
        outbox; the owner seals a new epoch to it, which the member opens.
        """
        net, owner, members, group_id = self._group()
        for member in members:
            bundle = self._bundle(net, owner, member)
            self.assertEqual((bundle.issuer, bundle.audience), (member.local, owner.local))
            now = int(net.clock.seconds())
            taken = Deferred.fromCoroutine(owner.bundles.prekeys(member.local, now, RETENTION))
            signed, one_time = net.result(taken)
            self.assertIsNotNone(one_time)
            item = seal(
                owner.identity, member.local, signed, one_time, group_id, 1, NEW_EPOCH, b"keys"
            )
            opened = net.result(Deferred.fromCoroutine(member.prekeys.open(item, now, 0)))
            self.assertEqual((opened.sender, opened.payload), (owner.local, b"keys"))

    def test_bundle_from_non_member_refused(self) -> None:
        """
        The owner takes a bundle only from a member of the group it names:
        a stranger's is refused and not kept, and so is one for a group we
        do not own.
        """
        net, owner, members, group_id = self._group()
        stranger = net.node("stranger")
        bundle = net.result(Deferred.fromCoroutine(stranger.prekeys.bundle(owner.local, 0)))
        payload = group_id + encode_bundle(bundle)
        d = Deferred.fromCoroutine(owner.receive_notice(stranger.local, KEY_BUNDLE, payload))
        self.failureResultOf(d, NoticeRefused)
        self.failureResultOf(owner.store.bundle(stranger.local), NotStored)
        own = net.result(Deferred.fromCoroutine(members[1].prekeys.bundle(members[0].local, 0)))
        d = Deferred.fromCoroutine(
            members[0].receive_notice(members[1].local, KEY_BUNDLE, group_id + encode_bundle(own))
        )
        self.failureResultOf(d, NoticeRefused)

    def test_new_signed_prekey_at_start(self) -> None:
        """
        A member starting with its signed prekey past half its lifetime
        gives its owners a bundle with a new one; one starting earlier
        gives none.
        """
        net, owner, members, _group_id = self._group()
        first = self._bundle(net, owner, members[0])
        net.restart("m0")
        net.run(10)
        self.assertEqual(self._bundle(net, owner, members[0]).serial, first.serial)
        net.run(SIGNED_PREKEY_LIFETIME // 2)
        net.restart("m0")
        net.run(10)
        renewed = self._bundle(net, owner, members[0])
        self.assertGreater(renewed.serial, first.serial)
        self.assertNotEqual(renewed.signed_prekey, first.signed_prekey)

    def test_one_bundle_waits_per_owner(self) -> None:
        """
        A member joining several groups of an owner that is away keeps one
        bundle waiting for it, the newest, which the owner gets once back.
        """
        net, owner, members, _group_id = self._group()
        first = self._bundle(net, owner, members[0])
        groups = [net.result(owner.create_group(f"g{n}", "unicast")) for n in range(3)]
        for group_id in groups:
            net.result(owner.add_member(group_id, members[0].local))
        net.run(10)
        net.network.take_offline("owner", refuse=True)
        net.run(600)
        for group_id in groups:
            net.result(Deferred.fromCoroutine(members[0].give_bundle(owner.local, group_id)))
        waiting = net.result(members[0].store.outbox(owner.local))
        self.assertEqual([e.kind for e in waiting], [KEY_BUNDLE])
        net.network.bring_online("owner")
        net.result(members[0].pool.connect(owner.local))
        net.run(10)
        self.assertEqual(net.result(members[0].store.outbox(owner.local)), [])
        self.assertEqual(self._bundle(net, owner, members[0]).serial, first.serial + 6)


class SealedAtMailboxTests(SynchronousTestCase):
    """
    Notices sealed for a member away, left at the group's mailbox.
    """

    def _group(self) -> tuple[GroupNetwork, MulticastService, bytes]:
        net = GroupNetwork({"unicast": UnicastStrategyPlugin()})
        owner = net.node("owner")
        members = [net.node(f"m{i}") for i in range(3)]
        box = net.node("box", mailbox=StoreLimits())
        group_id = net.group(owner, *members, strategy="unicast")
        net.add_mailbox(owner, group_id, box)
        net.run(60)
        return net, owner, group_id

    def test_new_epoch_from_mailbox_with_owner_away(self) -> None:
        """
        A member away while the owner removes another member finds the
        new epoch, sealed to its bundle, at the mailbox when it comes back
        with the owner away (sealed once, however often the owner's outbox
        tried m0); it holds the new keys, and the mailbox keeps nothing for
        it after.  The mailbox holds no key: only the sealed
        item, until it is taken.
        """
        net, owner, group_id = self._group()
        net.down("m0")
        net.result(owner.remove_member(group_id, net.services["m2"].local))
        # The owner's outbox tries m0 again (30 s, 120 s): sealed once.
        net.run(300)
        box = net.services["box"]
        m0 = net.services["m0"]
        [item] = net.result(box.store.sealed(group_id, m0.local, 10))
        self.assertEqual(read_sealed_header(item).epoch, 1)
        epoch = net.result(owner.store.epoch(group_id))
        assert epoch.access_key is not None
        self.assertNotIn(epoch.access_key, item)
        net.down("owner")
        m0 = net.up("m0")
        net.run(10)
        held = net.result(m0.store.epoch(group_id))
        self.assertEqual((held.epoch, held.access_key), (1, epoch.access_key))
        self.assertEqual(net.result(box.store.sealed(group_id, m0.local, 10)), [])

    def test_removal_from_mailbox(self) -> None:
        """
        A member removed while away learns it from the mailbox.
        """
        net, owner, group_id = self._group()
        net.down("m0")
        m0 = net.services["m0"]
        net.result(owner.remove_member(group_id, m0.local))
        net.run(10)
        net.down("owner")
        m0 = net.up("m0")
        net.run(10)
        self.assertEqual(net.result(m0.store.group(group_id)).state, "removed")

    def test_only_the_owner_leaves_items(self) -> None:
        """
        A mailbox keeps a sealed item from the group's owner only, naming
        the group and the recipient it is left for; and gives it to that
        recipient only.
        """
        net, owner, group_id = self._group()
        box = net.services["box"]
        m0, m1 = net.services["m0"], net.services["m1"]
        signed, one_time = done(self, owner.bundles.prekeys(m0.local, 0, RETENTION))
        item = seal(owner.identity, m0.local, signed, one_time, group_id, 1, NEW_EPOCH, b"k")
        forged = seal(m1.identity, m0.local, signed, None, group_id, 1, NEW_EPOCH, b"k")
        for sender, payload in (
            (m1.local, group_id + m0.local.public_key + item),
            (owner.local, group_id + m0.local.public_key + forged),
            (owner.local, group_id + m1.local.public_key + item),
        ):
            d = Deferred.fromCoroutine(box.receive_notice(sender, SEALED, payload))
            self.failureResultOf(d, NoticeRefused)
        self.assertEqual(net.result(box.store.sealed(group_id, m0.local, 10)), [])
        ok = Deferred.fromCoroutine(
            box.receive_notice(owner.local, SEALED, group_id + m0.local.public_key + item)
        )
        self.successResultOf(ok)
        self.assertEqual(done(self, box.give_sealed(m1.local, group_id)), b"")
        self.assertEqual(net.result(box.store.sealed(group_id, m0.local, 10)), [item])

    def test_hostile_mailbox_bounded(self) -> None:
        """
        A mailbox that answers every request with a full batch of junk is
        asked a bounded number of times; the junk is refused, and the
        member catches up after all the same.
        """
        net, _owner, group_id = self._group()
        box = net.services["box"]
        asked = []

        async def junk(peer: Any, group: bytes) -> bytes:
            asked.append(peer)
            return b"".join(varint(100) + b"x" * 100 for _ in range(MAX_SEALED_ANSWER))

        box.give_sealed = junk  # type: ignore[method-assign]
        net.down("m0")
        m0 = net.up("m0")
        net.run(30)
        self.assertEqual(len(asked), MAX_SEALED_ROUNDS)
        self.assertIn(group_id, m0.caught_up)
