"""
Tests for manifests: the canonical encoding, the signature by the epoch
key, fragments checked against their hashes, and the chain of an epoch's
manifests, open and closed (with deniability: a revealed signing seed forges
nothing into a closed epoch).
"""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from digitalspring._codec import varint
from digitalspring.identity import Identity
from digitalspring.multicast import (
    EPOCH_MAX_MESSAGES,
    FRAGMENT_SIZE,
    MANIFEST_DOMAIN,
    MAX_FRAGMENTS,
    MAX_MANIFEST_SIZE,
    MAX_PADDED_SIZE,
    MIN_PADDED_SIZE,
    NO_PREVIOUS,
    BadManifestSignature,
    ConflictingManifest,
    DuplicateMessage,
    EpochEnd,
    FragmentRejected,
    MalformedManifest,
    Manifest,
    ManifestChain,
    ManifestOutOfChain,
    ManifestRejected,
    NonCanonicalManifest,
    OwnerEpoch,
    SealedMessage,
    _manifest,
    accept_manifest,
    check_fragment,
    close_manifest_chain,
    decode_delivery,
    decode_manifest,
    encode_delivery,
    encode_manifest,
    end_epoch,
    fragment_count,
    fragment_hash,
    invitation_delivery,
    mailbox_epoch,
    new_epoch_delivery,
    next_epoch,
    seal,
    sign_manifest,
    start_group,
    text_content,
    verify_manifest,
)

GROUP = bytes(range(32))
NOW = 1_700_000_000
OTHER_SEED = b"m" * 32


def manifest(
    index: int = 0,
    padded_size: int = 1000,
    fragment_size: int = 300,
    epoch: int = 0,
    previous: bytes = NO_PREVIOUS,
) -> Manifest:
    count = fragment_count(padded_size, fragment_size)
    hashes = tuple(bytes([n % 256]) * 32 for n in range(count))
    return Manifest(GROUP, epoch, index, padded_size, fragment_size, previous, b"n" * 24, hashes)


def sealed_epoch(count: int) -> tuple[OwnerEpoch, list[SealedMessage]]:
    """
    An owner after sealing ``count`` messages, and the messages.
    """
    owner = start_group(GROUP, NOW)
    sealed = []
    for n in range(count):
        message, owner = seal(owner, text_content(NOW, f"message {n}"))
        sealed.append(message)
    return owner, sealed


manifests = st.builds(
    lambda group, epoch, index, padded, fragment, previous, nonce: Manifest(
        group,
        epoch,
        index,
        padded,
        fragment,
        previous,
        nonce,
        tuple(bytes([n % 256]) * 32 for n in range(fragment_count(padded, fragment))),
    ),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**64 - 1),
    st.integers(0, EPOCH_MAX_MESSAGES - 1),
    st.integers(MIN_PADDED_SIZE, 200_000),
    st.integers(10_000, FRAGMENT_SIZE),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=24, max_size=24),
)


class EncodingTests(SynchronousTestCase):
    """
    The canonical encoding of manifests and its bounds.
    """

    @given(manifests)
    def test_round_trip(self, value: Manifest) -> None:
        """
        Any manifest signs to at most :data:`MAX_MANIFEST_SIZE` bytes that
        verify to it.
        """
        signed = sign_manifest(value, OTHER_SEED)
        self.assertLessEqual(len(signed), MAX_MANIFEST_SIZE)
        public = Identity.from_seed(OTHER_SEED).peer_id.public_key
        self.assertEqual(verify_manifest(signed, public), value)

    @given(manifests, st.data())
    def test_bit_flips(self, value: Manifest, data: st.DataObject) -> None:
        """
        Any one bit flipped anywhere in a signed manifest gets it refused,
        with a :class:`ManifestRejected` and nothing else.
        """
        signed = sign_manifest(value, OTHER_SEED)
        public = Identity.from_seed(OTHER_SEED).peer_id.public_key
        bit = data.draw(st.integers(0, len(signed) * 8 - 1))
        flipped = bytearray(signed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        self.assertRaises(ManifestRejected, verify_manifest, bytes(flipped), public)

    def test_largest_manifest_fits_an_amp_value(self) -> None:
        """
        The largest content in the largest fragments gives a manifest of
        :data:`MAX_FRAGMENTS` hashes that fits one AMP value.
        """
        largest = manifest(EPOCH_MAX_MESSAGES - 1, MAX_PADDED_SIZE, FRAGMENT_SIZE, 2**64 - 1)
        signed = sign_manifest(largest, OTHER_SEED)
        self.assertEqual(len(largest.fragment_hashes), MAX_FRAGMENTS)
        self.assertLessEqual(len(signed), MAX_MANIFEST_SIZE)
        self.assertLess(MAX_MANIFEST_SIZE, 65_535)

    def test_non_canonical_refused(self) -> None:
        """
        A manifest whose epoch is written in a longer form than needed is
        refused as non-canonical, even when signed by the epoch key.
        """
        body = encode_manifest(manifest())
        longer = body[:33] + b"\x80\x00" + body[34:]
        signed = longer + sign_manifest(manifest(), OTHER_SEED)[-64:]
        self.assertRaises(NonCanonicalManifest, decode_manifest, signed)

    def test_far_future_index_refused(self) -> None:
        """
        An index of 1,000 or more is refused while decoding, before the
        signature is checked: no epoch holds that many messages.
        """
        body = encode_manifest(manifest())
        far = body[:34] + varint(EPOCH_MAX_MESSAGES) + body[35:]
        self.assertRaises(MalformedManifest, decode_manifest, far + bytes(64))
        self.assertRaises(ValueError, encode_manifest, manifest(index=EPOCH_MAX_MESSAGES))

    def test_sizes_out_of_bounds_refused(self) -> None:
        """
        A padded size below the smallest bucket or above the largest, a
        fragment size of 0 or above 65,000, and a manifest larger than any
        valid one are refused.
        """
        header = varint(1) + GROUP + varint(0) + varint(0)
        for padded, fragment in (
            (MIN_PADDED_SIZE - 1, 300),
            (MAX_PADDED_SIZE + 1, 65_000),
            (1000, 0),
            (1000, FRAGMENT_SIZE + 1),
        ):
            body = header + varint(padded) + varint(fragment) + bytes(32 + 24 + 32 * 10)
            self.assertRaises(MalformedManifest, decode_manifest, body + bytes(64))
        self.assertRaises(MalformedManifest, decode_manifest, bytes(MAX_MANIFEST_SIZE + 1))

    def test_many_small_fragments_refused(self) -> None:
        """
        A large content in small fragments would list more than
        :data:`MAX_FRAGMENTS` hashes, and is refused before they are read.
        """
        body = varint(1) + GROUP + varint(0) + varint(0) + varint(MAX_PADDED_SIZE) + varint(100)
        self.assertRaises(MalformedManifest, decode_manifest, body + bytes(120))

    def test_truncated_and_trailing_refused(self) -> None:
        """
        A manifest missing a hash, or with bytes after its last one, is
        refused.
        """
        body = encode_manifest(manifest())
        for bad in (body[:-1], body + b"\0"):
            self.assertRaises(MalformedManifest, decode_manifest, bad + bytes(64))
        self.assertRaises(MalformedManifest, decode_manifest, b"\1" * 10)


class SignatureTests(SynchronousTestCase):
    """
    Only the epoch signing key makes a manifest members accept.
    """

    def test_bad_signature_refused(self) -> None:
        """
        A manifest with a damaged signature is refused.
        """
        owner, (sealed,) = sealed_epoch(1)
        broken = sealed.signed_manifest[:-1] + bytes([sealed.signed_manifest[-1] ^ 1])
        self.assertRaises(
            BadManifestSignature, verify_manifest, broken, owner.keys.signing_public_key
        )

    def test_member_with_chain_key_cannot_sign(self) -> None:
        """
        A member holds the chain key and can encrypt a message that
        decrypts, but whatever key it signs the manifest with, the other
        members refuse it.
        """
        owner, _ = sealed_epoch(0)
        member = decode_delivery(encode_delivery(invitation_delivery(owner))).member
        impostor = OwnerEpoch(
            owner.keys.__class__(GROUP, 0, member.chain_key, OTHER_SEED, member.access_key),
            owner.chain,
            NOW,
        )
        forged, _ = seal(impostor, text_content(NOW, "I am the owner"))
        self.assertRaises(
            BadManifestSignature,
            verify_manifest,
            forged.signed_manifest,
            member.signing_public_key,
        )

    def test_member_claiming_to_be_owner_refused(self) -> None:
        """
        A manifest signed with the owner's identity key, or with another
        epoch's signing key, is not the epoch's: refused.
        """
        owner, (sealed,) = sealed_epoch(1)
        owner_identity = Identity.from_seed(b"o" * 32)
        body = encode_manifest(sealed.manifest)
        by_identity = body + owner_identity.sign(MANIFEST_DOMAIN + body)
        later = next_epoch(owner, NOW)
        by_other_epoch = sign_manifest(sealed.manifest, later.keys.signing_seed)
        for signed in (by_identity, by_other_epoch):
            self.assertRaises(
                BadManifestSignature, verify_manifest, signed, owner.keys.signing_public_key
            )

    def test_signature_domain_separated(self) -> None:
        """
        A signature by the epoch key over the body alone (without the
        domain string) is refused.
        """
        owner, (sealed,) = sealed_epoch(1)
        body = encode_manifest(sealed.manifest)
        undomained = body + Identity.from_seed(owner.keys.signing_seed).sign(body)
        self.assertRaises(
            BadManifestSignature, verify_manifest, undomained, owner.keys.signing_public_key
        )


class FragmentTests(SynchronousTestCase):
    """
    Fragments checked against their manifest, without being read.
    """

    def setUp(self) -> None:
        owner = start_group(GROUP, NOW)
        self.sealed, _ = seal(owner, text_content(NOW, "x" * 700), fragment_size=300)

    def test_fragments_match(self) -> None:
        """
        Each fragment of a sealed message matches its manifest.
        """
        self.assertEqual(len(self.sealed.fragments), 3)
        for number, fragment in enumerate(self.sealed.fragments):
            check_fragment(self.sealed.manifest, number, fragment)

    def test_fragment_not_matching_hash_refused(self) -> None:
        """
        A fragment with one byte changed, and a fragment presented as
        another one of the same size, are refused.
        """
        first = self.sealed.fragments[0]
        changed = bytes([first[0] ^ 1]) + first[1:]
        self.assertRaises(FragmentRejected, check_fragment, self.sealed.manifest, 0, changed)
        self.assertRaises(FragmentRejected, check_fragment, self.sealed.manifest, 1, first)

    def test_wrong_size_refused_before_hashing(self) -> None:
        """
        A fragment of the wrong size is refused without hashing it; so is a
        fragment number the message does not have.
        """
        manifest = self.sealed.manifest
        self.patch(_manifest, "fragment_hash", lambda data: self.fail("hashed"))
        self.assertRaises(FragmentRejected, check_fragment, manifest, 0, bytes(10_000_000))
        self.assertRaises(FragmentRejected, check_fragment, manifest, 2, bytes(300))
        self.assertRaises(FragmentRejected, check_fragment, manifest, 3, b"")
        self.assertRaises(FragmentRejected, check_fragment, manifest, -1, b"")

    def test_fragment_hash_is_blake2b_256(self) -> None:
        """
        The hash listed is BLAKE2b-256 with the fragment personalisation.
        """
        fragment = self.sealed.fragments[0]
        self.assertEqual(
            fragment_hash(fragment),
            hashlib.blake2b(fragment, digest_size=32, person=b"ds-fragment").digest(),
        )


class ChainOfManifestsTests(SynchronousTestCase):
    """
    The messages of an epoch form a chain, and a closed chain is closed.
    """

    def test_sealed_messages_chain(self) -> None:
        """
        Each manifest names the previous one's hash, the first one zeros.
        """
        owner, sealed = sealed_epoch(3)
        self.assertEqual(sealed[0].manifest.previous, NO_PREVIOUS)
        self.assertEqual(sealed[1].manifest.previous, sealed[0].manifest.hash)
        self.assertEqual(sealed[2].manifest.previous, sealed[1].manifest.hash)
        self.assertEqual(owner.last_hash, sealed[2].manifest.hash)

    def test_out_of_order_within_bound_accepted(self) -> None:
        """
        Manifests accepted in any order link up.
        """
        _, sealed = sealed_epoch(4)
        chain = ManifestChain(GROUP, 0)
        for n in (2, 0, 3, 1):
            chain = accept_manifest(chain, sealed[n].manifest)
        self.assertEqual([link[0] for link in chain.links], [0, 1, 2, 3])

    def test_duplicate_refused(self) -> None:
        """
        The same manifest twice is a duplicate.
        """
        _, (sealed,) = sealed_epoch(1)
        chain = accept_manifest(ManifestChain(GROUP, 0), sealed.manifest)
        self.assertRaises(DuplicateMessage, accept_manifest, chain, sealed.manifest)

    def test_conflicting_manifest_refused(self) -> None:
        """
        Another manifest for an index already held is refused.
        """
        _, sealed = sealed_epoch(2)
        chain = accept_manifest(ManifestChain(GROUP, 0), sealed[1].manifest)
        other = manifest(index=1, previous=sealed[0].manifest.hash)
        self.assertRaises(ConflictingManifest, accept_manifest, chain, other)

    def test_broken_links_refused(self) -> None:
        """
        A manifest that does not name its held predecessor, or that its held
        successor does not name, or a first manifest naming a previous one,
        is refused.
        """
        _, sealed = sealed_epoch(3)
        chain = accept_manifest(ManifestChain(GROUP, 0), sealed[0].manifest)
        chain = accept_manifest(chain, sealed[2].manifest)
        stranger = manifest(index=1, previous=b"x" * 32)
        self.assertRaises(ManifestOutOfChain, accept_manifest, chain, stranger)
        follows_first = manifest(index=1, previous=sealed[0].manifest.hash)
        self.assertRaises(ManifestOutOfChain, accept_manifest, chain, follows_first)
        self.assertRaises(
            ManifestOutOfChain,
            accept_manifest,
            ManifestChain(GROUP, 0),
            manifest(0, previous=b"p" * 32),
        )

    def test_other_group_or_epoch_refused(self) -> None:
        """
        A manifest of another epoch is refused by an epoch's chain.
        """
        self.assertRaises(
            ManifestOutOfChain, accept_manifest, ManifestChain(GROUP, 1), manifest(epoch=0)
        )

    def test_close_refuses_beyond_last_index(self) -> None:
        """
        After the close of an epoch of 2 messages, a manifest of index 2 is
        refused, however it is signed.
        """
        owner, _ = sealed_epoch(2)
        later = next_epoch(end_epoch(owner, EpochEnd.MEMBER_LEFT), NOW)
        close = new_epoch_delivery(later).close
        assert close is not None
        chain = close_manifest_chain(ManifestChain(GROUP, 0), close)
        extra, _ = seal(owner, text_content(NOW, "after the close"))
        self.assertRaises(ManifestOutOfChain, accept_manifest, chain, extra.manifest)

    def test_closed_epoch_filled_backwards(self) -> None:
        """
        A member that missed a closed epoch's messages accepts the last one
        (matching the close's hash), then each earlier one linked to it, and
        refuses an earlier one before its successor is held.
        """
        owner, sealed = sealed_epoch(3)
        close = new_epoch_delivery(next_epoch(owner, NOW)).close
        assert close is not None
        chain = close_manifest_chain(ManifestChain(GROUP, 0), close)
        self.assertRaises(ManifestOutOfChain, accept_manifest, chain, sealed[1].manifest)
        for n in (2, 1, 0):
            chain = accept_manifest(chain, sealed[n].manifest)

    def test_close_contradicting_held_manifest_refused(self) -> None:
        """
        A close naming fewer messages than a member holds, or another last
        hash, is refused.
        """
        owner, sealed = sealed_epoch(2)
        close = new_epoch_delivery(next_epoch(owner, NOW)).close
        assert close is not None
        chain = accept_manifest(ManifestChain(GROUP, 0), sealed[1].manifest)
        short = close.__class__(GROUP, 0, 1, sealed[0].manifest.hash)
        wrong_hash = close.__class__(GROUP, 0, 2, b"w" * 32)
        for bad in (short, wrong_hash):
            self.assertRaises(ManifestOutOfChain, close_manifest_chain, chain, bad)
        close_manifest_chain(chain, close)


class DeniabilityTests(SynchronousTestCase):
    """
    After the owner reveals an epoch's signing seed, anyone holding it signs
    manifests of that epoch, but a member holding the close refuses them.
    """

    def setUp(self) -> None:
        owner, self.sealed = sealed_epoch(2)
        self.public = owner.keys.signing_public_key
        owner = next_epoch(end_epoch(owner, EpochEnd.MEMBER_REMOVED), NOW)
        self.close = new_epoch_delivery(owner).close
        owner = next_epoch(owner, NOW)
        self.seed = new_epoch_delivery(owner).revealed_seed

    def forge(self, index: int, previous: bytes) -> bytes:
        assert self.seed is not None
        return sign_manifest(manifest(index=index, previous=previous), self.seed)

    def test_revealed_seed_forges_valid_signatures(self) -> None:
        """
        The revealed seed signs manifests that verify: a transcript of the
        epoch proves nothing to an outsider.
        """
        forged = self.forge(5, b"f" * 32)
        self.assertEqual(verify_manifest(forged, self.public).index, 5)

    def test_member_holding_close_refuses_forgeries(self) -> None:
        """
        A member holding the close refuses a forged manifest beyond the
        last index, in place of the last one, or in place of an earlier one,
        even though each signature is valid.
        """
        assert self.close is not None
        chain = close_manifest_chain(ManifestChain(GROUP, 0), self.close)
        beyond = verify_manifest(self.forge(2, self.sealed[1].manifest.hash), self.public)
        self.assertRaises(ManifestOutOfChain, accept_manifest, chain, beyond)
        last = verify_manifest(self.forge(1, self.sealed[0].manifest.hash), self.public)
        self.assertRaises(ManifestOutOfChain, accept_manifest, chain, last)
        chain = accept_manifest(chain, self.sealed[1].manifest)
        earlier = verify_manifest(self.forge(0, NO_PREVIOUS), self.public)
        self.assertRaises(ManifestOutOfChain, accept_manifest, chain, earlier)
        accept_manifest(chain, self.sealed[0].manifest)

    def test_delivery_to_mailbox_reveals_nothing(self) -> None:
        """
        The seed is revealed in the members' key delivery only: a mailbox's
        epoch holds no seed.
        """
        owner = start_group(GROUP, NOW)
        self.assertNotIn("seed", repr(mailbox_epoch(owner)).lower())
        self.assertFalse(hasattr(mailbox_epoch(owner), "revealed_seed"))
