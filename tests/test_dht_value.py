"""
Tests for the DHT's small unsigned values and their proof of work.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.dht import (
    MAX_VALUE_SIZE,
    InsufficientWork,
    MailboxValue,
    MalformedValue,
    StoreFull,
    ValueExpired,
    ValueStore,
    ValueTooLarge,
    ValueTTLTooLong,
    check_value,
    decode_value,
    leading_zero_bits,
    solve,
    work_hash,
)

KEY = bytes(range(32))
NOW = 1_700_000_000


class ValueTests(SynchronousTestCase):
    @settings(max_examples=50)
    @given(
        key=st.binary(min_size=32, max_size=32),
        value=st.binary(max_size=MAX_VALUE_SIZE),
        expires=st.integers(0, 2**63),
        nonce=st.binary(min_size=8, max_size=8),
    )
    def test_round_trip(self, key: bytes, value: bytes, expires: int, nonce: bytes) -> None:
        """
        The wire form decodes to the same value.
        """
        mailbox = MailboxValue(key, value, expires, nonce)
        self.assertEqual(decode_value(mailbox.encode()), mailbox)

    def test_solved_value_checks(self) -> None:
        """
        A solved value has the asked number of leading zero bits and passes
        the check.
        """
        mailbox = solve(KEY, b"hello", NOW + 600, 8)
        digest = work_hash(mailbox.key, mailbox.value, mailbox.expires, mailbox.nonce)
        self.assertGreaterEqual(leading_zero_bits(digest), 8)
        self.assertEqual(check_value(mailbox.encode(), NOW, difficulty=8), mailbox)

    def test_insufficient_work(self) -> None:
        """
        A value whose proof of work is easier than asked is refused.
        """
        for counter in range(1000):
            nonce = counter.to_bytes(8, "big")
            digest = work_hash(KEY, b"x", NOW + 60, nonce)
            if leading_zero_bits(digest) < 4:
                break
        data = MailboxValue(KEY, b"x", NOW + 60, nonce).encode()
        self.assertRaises(InsufficientWork, check_value, data, NOW, difficulty=4)

    def test_work_binds_expiry(self) -> None:
        """
        Changing a solved value's expiry (to keep it longer) breaks its
        proof of work.
        """
        mailbox = solve(KEY, b"hello", NOW + 600, 12)
        moved = MailboxValue(KEY, b"hello", NOW + 6000, mailbox.nonce).encode()
        self.assertRaises(InsufficientWork, check_value, moved, NOW, difficulty=12)

    def test_too_large(self) -> None:
        """
        A value over 1 KiB is refused, when solving and when checking.
        """
        big = b"x" * (MAX_VALUE_SIZE + 1)
        self.assertRaises(ValueTooLarge, solve, KEY, big, NOW + 60, 1)
        data = MailboxValue(KEY, big, NOW + 60, bytes(8)).encode()
        self.assertRaises(ValueTooLarge, check_value, data, NOW, difficulty=0)

    def test_ttl_too_long(self) -> None:
        """
        A value that asks to be kept for more than 24 hours is refused.
        """
        data = solve(KEY, b"x", NOW + 86401, 1).encode()
        self.assertRaises(ValueTTLTooLong, check_value, data, NOW, difficulty=1)

    def test_expired(self) -> None:
        """
        An expired value is refused.
        """
        data = solve(KEY, b"x", NOW, 1).encode()
        self.assertRaises(ValueExpired, check_value, data, NOW, difficulty=1)

    def test_truncated(self) -> None:
        """
        Fewer bytes than the header are malformed.
        """
        self.assertRaises(MalformedValue, decode_value, b"short")


class ValueStoreTests(SynchronousTestCase):
    def test_values_per_key(self) -> None:
        """
        A key holds a bounded number of values; the same value twice counts
        once; values disappear when they expire.
        """
        clock = Clock()
        clock.advance(NOW)
        store = ValueStore(clock, difficulty=1, values_per_key=2)
        a = solve(KEY, b"a", NOW + 10, 1).encode()
        b = solve(KEY, b"b", NOW + 20, 1).encode()
        store.put_value(a)
        store.put_value(a)
        store.put_value(b)
        self.assertRaises(StoreFull, store.put_value, solve(KEY, b"c", NOW + 20, 1).encode())
        self.assertEqual(sorted(store.get_values(int.from_bytes(KEY, "big"))), sorted([a, b]))
        clock.advance(10)
        self.assertEqual(store.get_values(int.from_bytes(KEY, "big")), [b])
        store.put_value(solve(KEY, b"c", NOW + 20, 1).encode())
