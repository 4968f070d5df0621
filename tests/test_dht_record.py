"""
Tests for signed peer records: the canonical encoding, every way a record is
refused, and the rule that the highest sequence number wins.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.dht import (
    MAX_RECORD_SIZE,
    RECORD_DOMAIN,
    BadRecordSignature,
    MalformedRecord,
    NonCanonicalRecord,
    PeerRecord,
    RecordExpired,
    RecordFromFuture,
    RecordLifetimeTooLong,
    RecordTooLarge,
    ValueStore,
    decode_record,
    encode_record,
    node_id,
    sign_record,
    verify_record,
)
from digitalspring.identity import Identity

ALICE = Identity.from_seed(b"a" * 32)
MALLORY = Identity.from_seed(b"m" * 32)
NOW = 1_700_000_000


def record(
    identity: Identity = ALICE,
    sequence: int = 1,
    issued: int = NOW,
    expires: int = NOW + 3600,
    addresses: tuple[str, ...] = ("tcp:127.0.0.1:7655",),
) -> PeerRecord:
    return PeerRecord(identity.peer_id, sequence, issued, expires, addresses)


def sign_body(body: bytes, identity: Identity = ALICE, domain: bytes = RECORD_DOMAIN) -> bytes:
    """
    A body signed as a record would be, but with any key and domain.
    """
    return body + identity.sign(domain + body)


addresses = st.lists(
    st.from_regex(r"(tcp|memory|tor):[a-z0-9.]{1,20}:[1-9][0-9]{0,4}", fullmatch=True),
    max_size=4,
)


class EncodingTests(SynchronousTestCase):
    @given(
        sequence=st.integers(0, 2**64 - 1),
        issued=st.integers(0, 2**40),
        lifetime=st.integers(1, 86400),
        addresses=addresses,
        boxes=st.lists(st.binary(max_size=64), max_size=3),
        prekeys=st.lists(st.binary(max_size=64), max_size=3),
    )
    def test_round_trip(
        self,
        sequence: int,
        issued: int,
        lifetime: int,
        addresses: list[str],
        boxes: list[bytes],
        prekeys: list[bytes],
    ) -> None:
        """
        Any record encodes to bytes that decode to the same record and
        encode again to the same bytes.
        """
        value = PeerRecord(
            ALICE.peer_id, sequence, issued, issued + lifetime, addresses, boxes, prekeys
        )
        body = encode_record(value)
        self.assertEqual(decode_record(body), value)
        self.assertEqual(encode_record(decode_record(body)), body)

    @given(st.binary(max_size=300))
    def test_garbage(self, data: bytes) -> None:
        """
        Arbitrary bytes are either a record or refused with a
        RecordRejected, never another exception.
        """
        from digitalspring.dht import RecordRejected

        try:
            verify_record(data, NOW)
        except RecordRejected:
            pass

    def test_signed_record_verifies(self) -> None:
        """
        A record its peer signed verifies, and gives back the record.
        """
        value = record()
        self.assertEqual(verify_record(sign_record(value, ALICE), NOW), value)

    def test_only_own_record(self) -> None:
        """
        sign_record refuses to sign another peer's record.
        """
        self.assertRaises(ValueError, sign_record, record(), MALLORY)

    def test_trailing_bytes(self) -> None:
        """
        Bytes after the last field make the body malformed.
        """
        body = encode_record(record()) + b"\0"
        self.assertRaises(MalformedRecord, decode_record, body)

    def test_bad_address(self) -> None:
        """
        An address without a transport name is malformed.
        """
        body = encode_record(record(addresses=("nocolon",)))
        self.assertRaises(MalformedRecord, decode_record, body)


class RejectionTests(SynchronousTestCase):
    """
    Every bad record is refused by verify_record with its own error.
    """

    def test_expired(self) -> None:
        """
        A record whose expiry has passed is refused.
        """
        signed = sign_record(record(issued=NOW - 7200, expires=NOW - 1), ALICE)
        self.assertRaises(RecordExpired, verify_record, signed, NOW)

    def test_from_future(self) -> None:
        """
        A record issued further in the future than the clock skew allows is
        refused; one within the skew is accepted.
        """
        late = sign_record(record(issued=NOW + 301, expires=NOW + 3600), ALICE)
        self.assertRaises(RecordFromFuture, verify_record, late, NOW, skew=300)
        slight = sign_record(record(issued=NOW + 299, expires=NOW + 3600), ALICE)
        verify_record(slight, NOW, skew=300)

    def test_lifetime_too_long(self) -> None:
        """
        A record valid for longer than the maximum lifetime is refused.
        """
        signed = sign_record(record(expires=NOW + 86400 + 1), ALICE)
        self.assertRaises(RecordLifetimeTooLong, verify_record, signed, NOW)

    def test_signed_by_another_key(self) -> None:
        """
        A record naming Alice but signed by Mallory is refused.
        """
        forged = sign_body(encode_record(record()), MALLORY)
        self.assertRaises(BadRecordSignature, verify_record, forged, NOW)

    def test_signed_for_another_domain(self) -> None:
        """
        Alice's own signature over the record's bytes for another purpose
        (another domain string, or none) does not make a record.
        """
        body = encode_record(record())
        for domain in (b"", b"digitalspring peer record v2\0", b"digitalspring other\0"):
            signed = sign_body(body, ALICE, domain)
            self.assertRaises(BadRecordSignature, verify_record, signed, NOW)

    def test_non_canonical(self) -> None:
        """
        A record whose sequence number is encoded in a longer varint than
        needed decodes to the same record, yet is refused even though its
        peer signed those exact bytes.
        """
        canonical = encode_record(record(sequence=5))
        # version (1 byte) + key (32 bytes), then the sequence: 0x05 as 0x85 0x00.
        padded = canonical[:33] + b"\x85\x00" + canonical[34:]
        self.assertEqual(decode_record(padded), record(sequence=5))
        self.assertRaises(NonCanonicalRecord, verify_record, sign_body(padded), NOW)

    def test_oversized(self) -> None:
        """
        A signed record larger than MAX_RECORD_SIZE is refused before it is
        decoded, even when it is otherwise valid.
        """
        many = tuple(f"tcp:host{i}.{'x' * 240}.example:7655" for i in range(16))
        signed = sign_record(record(addresses=many), ALICE)
        self.assertGreater(len(signed), MAX_RECORD_SIZE)
        self.assertRaises(RecordTooLarge, verify_record, signed, NOW)

    def test_truncated(self) -> None:
        """
        A record cut short is malformed.
        """
        signed = sign_record(record(), ALICE)
        self.assertRaises(MalformedRecord, verify_record, signed[:50], NOW)
        self.assertRaises(MalformedRecord, verify_record, signed[:10], NOW)

    def test_tampered(self) -> None:
        """
        Changing a single byte of a signed record's addresses breaks its
        signature.
        """
        signed = bytearray(sign_record(record(), ALICE))
        signed[-70] ^= 0x01
        self.assertRaises((BadRecordSignature, MalformedRecord), verify_record, bytes(signed), NOW)


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = ValueStore(self.clock)

    def test_highest_sequence_wins(self) -> None:
        """
        A newer record replaces an older one; an older one arriving later
        does not replace the newer.
        """
        old, new = sign_record(record(sequence=1), ALICE), sign_record(record(sequence=2), ALICE)
        self.assertTrue(self.store.put_record(old)[1])
        self.assertTrue(self.store.put_record(new)[1])
        self.assertFalse(self.store.put_record(old)[1])
        held = self.store.get_record(node_id(ALICE.peer_id))
        assert held is not None
        self.assertEqual(held.signed, new)

    def test_expires(self) -> None:
        """
        A stored record is no longer served once it expires.
        """
        self.store.put_record(sign_record(record(expires=NOW + 10), ALICE))
        self.assertIsNotNone(self.store.record_of(ALICE.peer_id))
        self.clock.advance(10)
        self.assertIsNone(self.store.record_of(ALICE.peer_id))
        self.assertEqual(self.store.records, {})

    def test_rejected_not_stored(self) -> None:
        """
        A refused record leaves the store as it was.
        """
        self.assertRaises(
            BadRecordSignature, self.store.put_record, sign_body(encode_record(record()), MALLORY)
        )
        self.assertEqual(self.store.records, {})
