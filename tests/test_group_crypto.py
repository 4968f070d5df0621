"""
Tests for the crypto of group content: the primitives against published
vectors, the sending and receiving chains, padded content, epochs and their
key delivery, and messages sealed by the owner and opened by members.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from digitalspring._codec import varint
from digitalspring.multicast import (
    EPOCH_MAX_AGE,
    EPOCH_MAX_MESSAGES,
    MAX_DELIVERY_SIZE,
    MAX_PADDED_SIZE,
    MAX_SKIP,
    MIN_PADDED_SIZE,
    ChainClosed,
    CloseStatement,
    Content,
    ContentTooLarge,
    ContentType,
    DuplicateMessage,
    EpochEnd,
    FarFutureIndex,
    KeyDelivery,
    MalformedContent,
    MalformedDelivery,
    MemberEpoch,
    ReceivingChain,
    SendingChain,
    UndecryptableMessage,
    _chain,
    _crypto,
    close_receiving_chain,
    decode_delivery,
    encode_delivery,
    end_epoch,
    end_reason,
    file_content,
    invitation_delivery,
    mailbox_epoch,
    new_epoch_delivery,
    next_epoch,
    next_message_key,
    open_message,
    pad_content,
    padme,
    ratchet,
    receive_message_key,
    revealed_seed_matches,
    seal,
    start_group,
    text_content,
    unpad_content,
    verify_manifest,
)

GROUP = bytes(range(32))
NOW = 1_700_000_000


def member_of(delivery: KeyDelivery) -> MemberEpoch:
    """
    What a member holds after the delivery travelled as bytes.
    """
    return decode_delivery(encode_delivery(delivery)).member


class PrimitiveTests(SynchronousTestCase):
    """
    The primitives, against published vectors.
    """

    #: draft-irtf-cfrg-xchacha-03, section 2.2.1 and appendix A.3.1.
    KEY = bytes.fromhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
    NONCE = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
    AD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    PLAINTEXT = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
        b"for the future, sunscreen would be it."
    )
    CIPHERTEXT = bytes.fromhex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e"
        "c0875924c1c7987947deafd8780acf49"
    )

    def test_hchacha20_vector(self) -> None:
        """
        HChaCha20 gives the subkey of the draft's test vector.
        """
        key = bytes(range(32))
        nonce = bytes.fromhex("000000090000004a0000000031415927")
        self.assertEqual(
            _crypto.hchacha20(key, nonce).hex(),
            "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc",
        )

    def test_xchacha20poly1305_vector_libsodium(self) -> None:
        """
        Short plaintexts go through libsodium, and give the draft's
        ciphertext.
        """
        self.assertEqual(
            _crypto.encrypt(self.KEY, self.NONCE, self.PLAINTEXT, self.AD), self.CIPHERTEXT
        )
        self.assertEqual(
            _crypto.decrypt(self.KEY, self.NONCE, self.CIPHERTEXT, self.AD), self.PLAINTEXT
        )

    def test_xchacha20poly1305_vector_openssl(self) -> None:
        """
        HChaCha20 and OpenSSL's ChaCha20-Poly1305 give the draft's ciphertext
        too, and open it.
        """
        self.patch(_crypto, "FAST_AEAD_FROM", 0)
        self.assertEqual(
            _crypto.encrypt(self.KEY, self.NONCE, self.PLAINTEXT, self.AD), self.CIPHERTEXT
        )
        self.assertEqual(
            _crypto.decrypt(self.KEY, self.NONCE, self.CIPHERTEXT, self.AD), self.PLAINTEXT
        )

    @settings(max_examples=20)
    @given(
        size=st.sampled_from([0, 1, _crypto.FAST_AEAD_FROM - 1, _crypto.FAST_AEAD_FROM, 70_000]),
        key=st.binary(min_size=32, max_size=32),
        nonce=st.binary(min_size=24, max_size=24),
    )
    def test_both_ways_agree(self, size: int, key: bytes, nonce: bytes) -> None:
        """
        On either side of the threshold, both ways of computing
        XChaCha20-Poly1305 give the same bytes, and each opens the other's.
        """
        plaintext = bytes(range(256)) * (size // 256) + bytes(size % 256)
        fast = _crypto.encrypt(key, nonce, plaintext, b"ad")
        self.patch(_crypto, "FAST_AEAD_FROM", 1 << 40)
        slow = _crypto.encrypt(key, nonce, plaintext, b"ad")
        self.assertEqual(fast, slow)
        self.assertEqual(_crypto.decrypt(key, nonce, fast, b"ad"), plaintext)
        self.patch(_crypto, "FAST_AEAD_FROM", 0)
        self.assertEqual(_crypto.decrypt(key, nonce, slow, b"ad"), plaintext)

    def test_tampered_ciphertext_refused(self) -> None:
        """
        A changed byte of the ciphertext or of the associated data, on
        either path, is refused with :class:`UndecryptableMessage`.
        """
        for threshold in (0, 1 << 40):
            self.patch(_crypto, "FAST_AEAD_FROM", threshold)
            flipped = bytes([self.CIPHERTEXT[0] ^ 1]) + self.CIPHERTEXT[1:]
            self.assertRaises(
                UndecryptableMessage, _crypto.decrypt, self.KEY, self.NONCE, flipped, self.AD
            )
            self.assertRaises(
                UndecryptableMessage,
                _crypto.decrypt,
                self.KEY,
                self.NONCE,
                self.CIPHERTEXT,
                b"other",
            )

    def test_shorter_than_tag_refused(self) -> None:
        """
        A ciphertext shorter than its tag is refused like any other that
        does not decrypt, not with an error from the binding.
        """
        for ciphertext in (b"", bytes(15)):
            self.assertRaises(
                UndecryptableMessage, _crypto.decrypt, self.KEY, self.NONCE, ciphertext, b""
            )

    def test_personalisations_separate(self) -> None:
        """
        The same key and data hashed for two purposes give unrelated hashes.
        """
        self.assertNotEqual(
            _crypto.blake2b(b"ds-message-key", b"", b"k" * 32),
            _crypto.blake2b(b"ds-chain-key", b"", b"k" * 32),
        )


class ChainTests(SynchronousTestCase):
    """
    The sending and receiving chains of an epoch.
    """

    CK = b"c" * 32

    def sender_keys(self, count: int) -> list[bytes]:
        chain = SendingChain(0, self.CK)
        keys = []
        for expected in range(count):
            index, key, chain = next_message_key(chain)
            self.assertEqual(index, expected)
            keys.append(key)
        return keys

    def test_in_order(self) -> None:
        """
        A receiver in order derives the sender's keys, all distinct, and
        keeps no skipped key.
        """
        sent = self.sender_keys(5)
        self.assertEqual(len(set(sent)), 5)
        chain = ReceivingChain(0, self.CK)
        for index, key in enumerate(sent):
            got, chain = receive_message_key(chain, index)
            self.assertEqual(got, key)
        self.assertEqual((chain.next_index, chain.skipped), (5, ()))

    def test_no_hidden_mutation(self) -> None:
        """
        Each step returns a new chain and leaves the old one as it was, so
        the caller decides when the old state is dropped.
        """
        chain = SendingChain(0, self.CK)
        _, _, after = next_message_key(chain)
        self.assertEqual(chain, SendingChain(0, self.CK))
        self.assertNotEqual(after.chain_key, self.CK)
        receiving = ReceivingChain(0, self.CK)
        receive_message_key(receiving, 3)
        self.assertEqual(receiving, ReceivingChain(0, self.CK))

    def test_chain_state_opens_no_earlier_message(self) -> None:
        """
        Once message 0 is received, the chain state holds neither its key
        nor ``CK_0``: asking for it again is refused.
        """
        sent = self.sender_keys(2)
        _, chain = receive_message_key(ReceivingChain(0, self.CK), 0)
        self.assertNotIn(sent[0], [chain.chain_key, *(key for _, key in chain.skipped)])
        self.assertNotEqual(chain.chain_key, self.CK)
        self.assertRaises(DuplicateMessage, receive_message_key, chain, 0)

    def test_duplicate_refused(self) -> None:
        """
        A message whose key was used already is refused as a duplicate.
        """
        chain = ReceivingChain(0, self.CK)
        _, chain = receive_message_key(chain, 2)
        self.assertRaises(DuplicateMessage, receive_message_key, chain, 2)

    def test_out_of_order_within_bound(self) -> None:
        """
        Messages arriving out of order are read: the skipped keys are kept,
        each used once, then dropped.
        """
        sent = self.sender_keys(4)
        chain = ReceivingChain(0, self.CK)
        for index in (3, 1, 0, 2):
            key, chain = receive_message_key(chain, index)
            self.assertEqual(key, sent[index])
        self.assertEqual(chain.skipped, ())
        self.assertRaises(DuplicateMessage, receive_message_key, chain, 1)

    def test_far_future_refused_before_derivation(self) -> None:
        """
        An index more than :data:`MAX_SKIP` ahead is refused without one
        derivation; the last index within the bound is read.
        """
        calls = []
        real = _chain.ratchet

        def counting(chain_key: bytes) -> tuple[bytes, bytes]:
            calls.append(chain_key)
            return real(chain_key)

        self.patch(_chain, "ratchet", counting)
        chain = ReceivingChain(0, self.CK)
        self.assertRaises(FarFutureIndex, receive_message_key, chain, MAX_SKIP + 1)
        self.assertRaises(FarFutureIndex, receive_message_key, chain, 2**63)
        self.assertEqual(calls, [])
        _, chain = receive_message_key(chain, MAX_SKIP)
        self.assertEqual(len(chain.skipped), MAX_SKIP)

    def test_skipped_keys_bounded_in_total(self) -> None:
        """
        The keys kept for skipped messages count against the bound: a
        second jump that would keep more than ``max_skip`` is refused.
        """
        _, chain = receive_message_key(ReceivingChain(0, self.CK), 5, max_skip=8)
        self.assertEqual(len(chain.skipped), 5)
        self.assertRaises(FarFutureIndex, receive_message_key, chain, 10, max_skip=8)
        receive_message_key(chain, 9, max_skip=8)

    def test_closed_chain(self) -> None:
        """
        Closing a chain after 3 messages drops keys of later skipped
        messages, refuses their indexes, keeps the earlier skipped ones, and
        drops the chain key once nothing is left to derive.
        """
        _, chain = receive_message_key(ReceivingChain(0, self.CK), 4)
        closed = close_receiving_chain(chain, 3)
        self.assertEqual([index for index, _ in closed.skipped], [0, 1, 2])
        self.assertIsNone(closed.chain_key)
        self.assertRaises(ChainClosed, receive_message_key, closed, 3)
        receive_message_key(closed, 2)
        open_ended = close_receiving_chain(ReceivingChain(0, self.CK), 2)
        self.assertIsNotNone(open_ended.chain_key)
        _, rest = receive_message_key(open_ended, 1)
        self.assertIsNone(rest.chain_key)

    def test_ratchet_matches_documented_derivation(self) -> None:
        """
        The ratchet is keyed BLAKE2b with the documented personalisations.
        """
        message_key, chain_key = ratchet(self.CK)
        self.assertEqual(message_key, _crypto.blake2b(b"ds-message-key", b"", self.CK))
        self.assertEqual(chain_key, _crypto.blake2b(b"ds-chain-key", b"", self.CK))


contents = st.builds(
    Content,
    sent_at=st.integers(0, 2**40),
    content_type=st.just(ContentType.FILE),
    data=st.binary(max_size=3000),
    file_name=st.text(min_size=1, max_size=60),
) | st.builds(text_content, st.integers(0, 2**40), st.text(max_size=1000))


class ContentTests(SynchronousTestCase):
    """
    The plaintext of a message: header, data and padding.
    """

    def test_padme_buckets(self) -> None:
        """
        Padmé keeps the top bits of a length (values from the PURBs paper's
        definition), and never costs more than 12%.
        """
        self.assertEqual(
            [padme(n) for n in (9, 100, 1000, 1025, 65536, 65537)],
            [10, 104, 1024, 1088, 65536, 67584],
        )
        for length in range(MIN_PADDED_SIZE, 200_000, 997):
            self.assertGreaterEqual(padme(length), length)
            self.assertLessEqual(padme(length), length * 1.12)

    def test_short_messages_share_a_bucket(self) -> None:
        """
        Every text of up to about 250 bytes pads to the same 256 bytes.
        """
        sizes = {len(pad_content(text_content(NOW, "x" * n))) for n in range(0, 240)}
        self.assertEqual(sizes, {MIN_PADDED_SIZE})

    @given(contents)
    def test_round_trip(self, content: Content) -> None:
        """
        Any content pads to its bucket and unpads to itself.
        """
        padded = pad_content(content)
        self.assertEqual(len(padded), max(MIN_PADDED_SIZE, padme(len(padded))))
        self.assertEqual(unpad_content(padded), content)

    @given(contents, st.data())
    def test_bit_flips(self, content: Content, data: st.DataObject) -> None:
        """
        A padded content with one bit flipped is refused, or is another
        canonical content (a flip inside the data or a number): never
        anything else.
        """
        padded = pad_content(content)
        bit = data.draw(st.integers(0, len(padded) * 8 - 1))
        flipped = bytearray(padded)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            other = unpad_content(bytes(flipped))
        except MalformedContent:
            return
        self.assertEqual(pad_content(other), bytes(flipped))

    def test_non_zero_padding_refused(self) -> None:
        """
        Padding must be zeros.
        """
        padded = pad_content(text_content(NOW, "hi"))
        self.assertRaises(MalformedContent, unpad_content, padded[:-1] + b"\1")

    def test_wrong_bucket_refused(self) -> None:
        """
        A content padded to more (or less) than its bucket is refused.
        """
        padded = pad_content(text_content(NOW, "hi"))
        self.assertRaises(MalformedContent, unpad_content, padded + bytes(16))
        self.assertRaises(MalformedContent, unpad_content, padded[:-16])

    def test_overlong_varint_refused(self) -> None:
        """
        A header number written in a longer form than needed is refused.
        """
        padded = pad_content(text_content(5, "hi"))
        longer = varint(1) + b"\x85\x00" + padded[2:-1]
        self.assertRaises(MalformedContent, unpad_content, longer)

    def test_text_not_utf8_refused(self) -> None:
        """
        A text whose bytes are not UTF-8 is refused.
        """
        padded = pad_content(Content(NOW, ContentType.TEXT, b"\xff\xfe"))
        self.assertRaises(MalformedContent, unpad_content, padded)

    def test_unknown_type_refused(self) -> None:
        """
        A content type other than text or file is refused.
        """
        padded = bytearray(pad_content(text_content(0, "hi")))
        padded[2] = 3
        self.assertRaises(MalformedContent, unpad_content, bytes(padded))

    def test_file_name_rules(self) -> None:
        """
        A text has no file name, a file has one of at most 255 bytes.
        """
        self.assertRaises(ValueError, pad_content, Content(NOW, ContentType.TEXT, b"", "a"))
        self.assertRaises(ValueError, pad_content, file_content(NOW, "", b"x"))
        self.assertRaises(ValueError, pad_content, file_content(NOW, "é" * 128, b"x"))

    def test_too_large_refused(self) -> None:
        """
        Content whose bucket passes :data:`MAX_PADDED_SIZE` is refused at
        the sender.
        """
        self.assertRaises(
            ContentTooLarge, pad_content, file_content(NOW, "big", bytes(MAX_PADDED_SIZE))
        )


deliveries = st.builds(
    lambda group, epoch, first, keys, close, reveal: KeyDelivery(
        MemberEpoch(group, epoch, first, keys[0], keys[1], keys[2]),
        CloseStatement(group, epoch - 1, close[0], close[1]) if close and epoch >= 1 else None,
        reveal if epoch >= 2 else None,
    ),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**64 - 1),
    st.integers(0, EPOCH_MAX_MESSAGES),
    st.tuples(*[st.binary(min_size=32, max_size=32)] * 3),
    st.none() | st.tuples(st.integers(0, EPOCH_MAX_MESSAGES), st.binary(min_size=32, max_size=32)),
    st.none() | st.binary(min_size=32, max_size=32),
)


class DeliveryTests(SynchronousTestCase):
    """
    The key delivery: what an invitation or a new-epoch message carries.
    """

    @given(deliveries)
    def test_round_trip(self, delivery: KeyDelivery) -> None:
        """
        Any delivery encodes to at most :data:`MAX_DELIVERY_SIZE` bytes
        that decode to it.
        """
        data = encode_delivery(delivery)
        self.assertLessEqual(len(data), MAX_DELIVERY_SIZE)
        self.assertEqual(decode_delivery(data), delivery)

    @given(deliveries, st.data())
    def test_bit_flips(self, delivery: KeyDelivery, data: st.DataObject) -> None:
        """
        A delivery with one bit flipped is refused, or is another delivery
        in canonical form (a flip inside a key).
        """
        encoded = encode_delivery(delivery)
        bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
        flipped = bytearray(encoded)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            other = decode_delivery(bytes(flipped))
        except MalformedDelivery:
            return
        self.assertEqual(encode_delivery(other), bytes(flipped))

    def test_non_canonical_refused(self) -> None:
        """
        An epoch written in a longer form than needed is refused.
        """
        encoded = encode_delivery(invitation_delivery(start_group(GROUP, NOW)))
        longer = encoded[:33] + b"\x80\x00" + encoded[34:]
        self.assertRaises(MalformedDelivery, decode_delivery, longer)

    def test_flag_other_than_yes_or_no_refused(self) -> None:
        """
        The presence of a close statement is 0 or 1, nothing else.
        """
        encoded = encode_delivery(invitation_delivery(start_group(GROUP, NOW)))
        self.assertRaises(MalformedDelivery, decode_delivery, encoded[:-2] + b"\2\0")

    def test_truncated_trailing_and_oversized_refused(self) -> None:
        """
        A truncated delivery, one with bytes after it, and one longer than
        any delivery are refused.
        """
        encoded = encode_delivery(invitation_delivery(start_group(GROUP, NOW)))
        for bad in (encoded[:-1], encoded + b"\0", encoded + bytes(MAX_DELIVERY_SIZE)):
            self.assertRaises(MalformedDelivery, decode_delivery, bad)

    def test_close_or_reveal_before_epoch_zero_refused(self) -> None:
        """
        Epoch 0 closes nothing and epoch 1 reveals nothing.
        """
        encoded = encode_delivery(invitation_delivery(start_group(GROUP, NOW)))
        self.assertRaises(
            MalformedDelivery, decode_delivery, encoded[:-2] + b"\1\0" + bytes(32) + b"\0"
        )
        self.assertRaises(MalformedDelivery, decode_delivery, encoded[:-1] + b"\1" + bytes(32))


class EpochTests(SynchronousTestCase):
    """
    Epochs: who holds what, and when an epoch ends.
    """

    def test_member_holds_public_signing_key_only(self) -> None:
        """
        The invitation carries the signing public key, never the secret;
        a mailbox gets the access key and no chain key.
        """
        owner = start_group(GROUP, NOW)
        encoded = encode_delivery(invitation_delivery(owner))
        self.assertNotIn(owner.keys.signing_seed, encoded)
        member = member_of(invitation_delivery(owner))
        self.assertEqual(member.signing_public_key, owner.keys.signing_public_key)
        mailbox = mailbox_epoch(owner)
        self.assertEqual(mailbox.access, owner.keys.access)
        self.assertFalse(hasattr(mailbox, "chain_key"))

    def test_age_and_count_end_an_epoch(self) -> None:
        """
        An epoch goes on until it is 7 days old or holds 1,000 messages.
        """
        owner = start_group(GROUP, NOW)
        self.assertIsNone(end_reason(owner, NOW + EPOCH_MAX_AGE - 1))
        self.assertEqual(end_reason(owner, NOW + EPOCH_MAX_AGE), EpochEnd.TOO_OLD)
        full = SendingChain(EPOCH_MAX_MESSAGES - 1, owner.chain.chain_key)
        almost = owner.__class__(owner.keys, full, NOW)
        self.assertIsNone(end_reason(almost, NOW))
        _, after = seal(almost, text_content(NOW, "the last"))
        self.assertEqual(end_reason(after, NOW), EpochEnd.TOO_MANY)

    def test_events_end_an_epoch(self) -> None:
        """
        A removal, a departure or a restore the service reports ends the
        epoch before the next send; the first reason is kept.
        """
        owner = start_group(GROUP, NOW)
        for reason in (EpochEnd.MEMBER_REMOVED, EpochEnd.MEMBER_LEFT, EpochEnd.RESTORED):
            self.assertEqual(end_reason(end_epoch(owner, reason), NOW), reason)
        twice = end_epoch(end_epoch(owner, EpochEnd.RESTORED), EpochEnd.MEMBER_LEFT)
        self.assertEqual(twice.ending, EpochEnd.RESTORED)

    def test_next_epoch_closes_and_reveals(self) -> None:
        """
        Epoch 1's delivery closes epoch 0 (count, last hash) and reveals
        nothing; epoch 2's closes epoch 1 and reveals epoch 0's signing
        seed, which the member checks against the public key it holds.
        """
        owner = start_group(GROUP, NOW)
        epoch0 = member_of(invitation_delivery(owner))
        sealed, owner = seal(owner, text_content(NOW, "one"))
        owner = next_epoch(end_epoch(owner, EpochEnd.MEMBER_REMOVED), NOW + 1)
        delivery = decode_delivery(encode_delivery(new_epoch_delivery(owner)))
        self.assertEqual(delivery.member.epoch, 1)
        self.assertEqual(delivery.close, CloseStatement(GROUP, 0, 1, sealed.manifest.hash))
        self.assertIsNone(delivery.revealed_seed)
        self.assertIsNone(end_reason(owner, NOW + 1))
        owner = next_epoch(owner, NOW + 2)
        delivery = decode_delivery(encode_delivery(new_epoch_delivery(owner)))
        self.assertEqual(delivery.close, CloseStatement(GROUP, 1, 0, bytes(32)))
        assert delivery.revealed_seed is not None
        self.assertTrue(revealed_seed_matches(epoch0, delivery.revealed_seed))
        self.assertFalse(revealed_seed_matches(delivery.member, delivery.revealed_seed))

    def test_new_epoch_keys_are_fresh(self) -> None:
        """
        A new epoch's chain, signing and access keys share nothing with the
        old epoch's.
        """
        owner = start_group(GROUP, NOW)
        after = next_epoch(owner, NOW)
        old, new = owner.keys, after.keys
        self.assertEqual(new.epoch, 1)
        self.assertEqual(
            {old.chain_key, old.signing_seed, old.access_key}
            & {new.chain_key, new.signing_seed, new.access_key},
            set(),
        )


class MessageTests(SynchronousTestCase):
    """
    Messages sealed by the owner and opened by members.
    """

    def test_text_and_file_round_trip(self) -> None:
        """
        A member opens a text and a 200 kB file, byte for byte.
        """
        owner = start_group(GROUP, NOW)
        member = member_of(invitation_delivery(owner))
        chain = member.receiving_chain()
        data = bytes(range(256)) * 800
        for content in (text_content(NOW, "héllo"), file_content(NOW, "a.bin", data)):
            sealed, owner = seal(owner, content)
            manifest = verify_manifest(sealed.signed_manifest, member.signing_public_key)
            got, chain = open_message(manifest, sealed.fragments, chain)
            self.assertEqual(got, content)
        self.assertEqual(len(sealed.fragments), 4)

    def test_late_joiner_reads_nothing_earlier(self) -> None:
        """
        A member invited after message 0 starts at index 1: message 0 is
        beyond its reach, message 1 is not.
        """
        owner = start_group(GROUP, NOW)
        first, owner = seal(owner, text_content(NOW, "before"))
        joiner = member_of(invitation_delivery(owner))
        self.assertEqual(joiner.first_index, 1)
        second, owner = seal(owner, text_content(NOW, "after"))
        chain = joiner.receiving_chain()
        self.assertRaises(DuplicateMessage, open_message, first.manifest, first.fragments, chain)
        content, _ = open_message(second.manifest, second.fragments, chain)
        self.assertEqual(content.data, b"after")

    def test_removed_member_cannot_read_next_epoch(self) -> None:
        """
        A member removed in epoch 0 holds keys that do not decrypt epoch
        1's messages (its chain at the same index gives another key).
        """
        owner = start_group(GROUP, NOW)
        removed = member_of(invitation_delivery(owner))
        owner = next_epoch(end_epoch(owner, EpochEnd.MEMBER_REMOVED), NOW)
        sealed, owner = seal(owner, text_content(NOW, "not for you"))
        self.assertRaises(
            UndecryptableMessage,
            open_message,
            sealed.manifest,
            sealed.fragments,
            removed.receiving_chain(),
        )

    def test_message_key_opens_one_message(self) -> None:
        """
        Message 0's key does not open message 1.
        """
        owner = start_group(GROUP, NOW)
        member = member_of(invitation_delivery(owner))
        _, owner = seal(owner, text_content(NOW, "one"))
        second, owner = seal(owner, text_content(NOW, "two"))
        key0, _ = receive_message_key(member.receiving_chain(), 0)
        self.assertRaises(
            UndecryptableMessage,
            _crypto.decrypt,
            key0,
            second.manifest.nonce,
            b"".join(second.fragments),
            second.manifest.header,
        )

    def test_ciphertext_bound_to_its_manifest(self) -> None:
        """
        Fragments presented under another message's manifest header (a
        replayed ciphertext at another index) do not decrypt: the header is
        the associated data.
        """
        owner = start_group(GROUP, NOW)
        member = member_of(invitation_delivery(owner))
        sealed, owner = seal(owner, text_content(NOW, "one"))
        key, _ = receive_message_key(member.receiving_chain(), 0)
        other = sealed.manifest.__class__(
            sealed.manifest.group_id,
            sealed.manifest.epoch + 1,
            0,
            sealed.manifest.padded_size,
            sealed.manifest.fragment_size,
            sealed.manifest.previous,
            sealed.manifest.nonce,
            sealed.manifest.fragment_hashes,
        )
        self.assertRaises(
            UndecryptableMessage,
            _crypto.decrypt,
            key,
            other.nonce,
            b"".join(sealed.fragments),
            other.header,
        )

    def test_fragment_sizes(self) -> None:
        """
        A content of 1 MiB travels in fragments of at most 65,000 bytes,
        the padded size is Padmé's bucket, and a small fragment size gives
        more fragments.
        """
        owner = start_group(GROUP, NOW)
        sealed, owner = seal(owner, file_content(NOW, "m", bytes(1 << 20)))
        self.assertTrue(all(len(fragment) <= 65_000 for fragment in sealed.fragments))
        self.assertEqual(sum(map(len, sealed.fragments)), sealed.manifest.padded_size + 16)
        self.assertEqual(sealed.manifest.padded_size, padme(sealed.manifest.padded_size))
        small, _ = seal(owner, text_content(NOW, "x"), fragment_size=100)
        self.assertEqual(len(small.fragments), 3)
