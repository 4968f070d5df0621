"""
Mailboxes (issue 12): what an owner tells a mailbox and its members (the
encodings), and what a mailbox does in a group on the memory network.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.identity import Identity, PeerID
from digitalspring.multicast import (
    EPOCH_MAX_MESSAGES,
    CloseStatement,
    GroupAccess,
    MailboxEpoch,
    MalformedDelivery,
    start_group,
)
from digitalspring.multicast._commands import MAX_NOTICE_SIZE
from digitalspring.multicast._epoch import (
    MAX_MAILBOX_DELIVERY_SIZE,
    MailboxDelivery,
    decode_mailbox_delivery,
    encode_mailbox_delivery,
    mailbox_epoch_delivery,
    mailbox_invitation_delivery,
    next_epoch,
)
from digitalspring.multicast._notices import (
    MAX_MAILBOXES,
    MAX_RETENTION,
    MailboxInvitation,
    MalformedNotice,
    decode_mailbox_epoch,
    decode_mailbox_invitation,
    decode_mailboxes,
    encode_mailbox_epoch,
    encode_mailbox_invitation,
    encode_mailboxes,
)

GROUP = bytes(range(32))
NOW = 1_700_000_000

keys32 = st.binary(min_size=32, max_size=32)
peers = st.builds(lambda seed: Identity.from_seed(seed).peer_id, keys32)


@st.composite
def mailbox_deliveries(draw: st.DrawFn) -> MailboxDelivery:
    epoch = draw(st.integers(0, 2**32))
    close = None
    if epoch and draw(st.booleans()):
        close = CloseStatement(
            GROUP, epoch - 1, draw(st.integers(0, EPOCH_MAX_MESSAGES)), draw(keys32)
        )
    return MailboxDelivery(
        MailboxEpoch(GroupAccess(GROUP, epoch, draw(keys32)), draw(keys32)),
        draw(st.integers(0, EPOCH_MAX_MESSAGES)),
        close,
    )


class MailboxDeliveryTests(SynchronousTestCase):
    """
    A mailbox's key delivery: the access key and the signing public key,
    never a chain key or a signing secret.
    """

    @given(mailbox_deliveries())
    def test_round_trip(self, delivery: MailboxDelivery) -> None:
        """
        Any mailbox delivery encodes to at most its bound and decodes to
        itself.
        """
        data = encode_mailbox_delivery(delivery)
        self.assertLessEqual(len(data), MAX_MAILBOX_DELIVERY_SIZE)
        self.assertEqual(decode_mailbox_delivery(data), delivery)

    @given(mailbox_deliveries(), st.data())
    def test_bit_flips(self, delivery: MailboxDelivery, data: st.DataObject) -> None:
        """
        A mailbox delivery with one bit flipped is refused, or is another
        one in canonical form (a flip inside a key).
        """
        encoded = encode_mailbox_delivery(delivery)
        bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
        flipped = bytearray(encoded)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            other = decode_mailbox_delivery(bytes(flipped))
        except MalformedDelivery:
            return
        self.assertEqual(encode_mailbox_delivery(other), bytes(flipped))

    def test_no_secret_of_the_epoch(self) -> None:
        """
        What the owner gives a mailbox holds the access key and the
        signing public key, and none of the chain key or signing seed.
        """
        owner = start_group(GROUP, NOW)
        for delivery in (
            mailbox_invitation_delivery(owner),
            mailbox_epoch_delivery(next_epoch(next_epoch(owner, NOW), NOW)),
        ):
            encoded = encode_mailbox_delivery(delivery)
            self.assertIn(delivery.mailbox.access.access_key, encoded)
            self.assertIn(delivery.mailbox.signing_public_key, encoded)
        encoded = encode_mailbox_delivery(mailbox_invitation_delivery(owner))
        self.assertNotIn(owner.keys.chain_key, encoded)
        self.assertNotIn(owner.keys.signing_seed, encoded)
        later = next_epoch(next_epoch(owner, NOW), NOW)
        encoded = encode_mailbox_delivery(mailbox_epoch_delivery(later))
        self.assertNotIn(later.keys.chain_key, encoded)
        assert later.revealed_seed is not None
        self.assertNotIn(later.revealed_seed, encoded)
        self.assertEqual(mailbox_epoch_delivery(later).close, later.close)

    def test_truncated_trailing_and_close_before_zero_refused(self) -> None:
        """
        A truncated delivery, one with bytes after it, and one closing an
        epoch before epoch 0 are refused.
        """
        encoded = encode_mailbox_delivery(mailbox_invitation_delivery(start_group(GROUP, NOW)))
        for bad in (encoded[:-1], encoded + b"\0", encoded[:-1] + b"\1\0" + bytes(32)):
            self.assertRaises(MalformedDelivery, decode_mailbox_delivery, bad)


class MailboxNoticeTests(SynchronousTestCase):
    """
    The notices of mailboxes: a mailbox's invitation and new epochs, and
    the list of mailboxes the members get.
    """

    @given(
        mailbox_deliveries(),
        st.frozensets(peers, max_size=64),
        st.integers(1, 64),
        st.integers(1, MAX_RETENTION),
    )
    def test_invitation_round_trip(
        self,
        delivery: MailboxDelivery,
        neighbours: frozenset[PeerID],
        degree: int,
        retention: int,
    ) -> None:
        """
        A mailbox's invitation decodes to itself, within a notice's bound.
        """
        invitation = MailboxInvitation(GROUP, "spring", degree, neighbours, retention, delivery)
        data = encode_mailbox_invitation(invitation)
        self.assertLessEqual(len(data), MAX_NOTICE_SIZE)
        self.assertEqual(decode_mailbox_invitation(data), invitation)

    @given(mailbox_deliveries())
    def test_epoch_round_trip(self, delivery: MailboxDelivery) -> None:
        """
        A mailbox's new-epoch notice decodes to itself.
        """
        self.assertEqual(decode_mailbox_epoch(encode_mailbox_epoch(delivery)), delivery)

    @given(st.frozensets(peers, max_size=MAX_MAILBOXES))
    def test_mailboxes_round_trip(self, mailboxes: frozenset[PeerID]) -> None:
        """
        A mailboxes notice decodes to its group and mailboxes.
        """
        self.assertEqual(decode_mailboxes(encode_mailboxes(GROUP, mailboxes)), (GROUP, mailboxes))

    def test_refused(self) -> None:
        """
        More mailboxes than a group has, a retention of 0 or past a year,
        keys of another group, and damaged notices are refused.
        """
        many = frozenset(
            Identity.from_seed(bytes([n]) * 32).peer_id for n in range(MAX_MAILBOXES + 1)
        )
        self.assertRaises(ValueError, encode_mailboxes, GROUP, many)
        self.assertRaises(
            MalformedNotice,
            decode_mailboxes,
            GROUP + b"\1" + bytes([len(many)]) + b"".join(sorted(p.public_key for p in many)),
        )
        delivery = mailbox_invitation_delivery(start_group(GROUP, NOW))
        for retention in (0, MAX_RETENTION + 1):
            invitation = MailboxInvitation(GROUP, "spring", 6, frozenset(), retention, delivery)
            self.assertRaises(ValueError, encode_mailbox_invitation, invitation)
        other = mailbox_invitation_delivery(start_group(bytes(32), NOW))
        encoded = encode_mailbox_invitation(
            MailboxInvitation(bytes(32), "spring", 6, frozenset(), 60, other)
        )
        self.assertRaises(MalformedNotice, decode_mailbox_invitation, GROUP + encoded[32:])
        for bad in (b"\0" * 40, GROUP + b"\1", encode_mailbox_epoch(delivery) + b"\0"):
            self.assertRaises(MalformedNotice, decode_mailbox_epoch, bad)
