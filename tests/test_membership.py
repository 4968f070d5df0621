"""
Tests for membership proofs: two participants who meet on a channel prove
to each other that they hold the epoch's access key, and every way a proof
can be misused is refused, each the same way.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.multicast import (
    PROOF_SIZE,
    EpochEnd,
    GroupAccess,
    MembershipNotProven,
    Role,
    check_proof,
    decode_delivery,
    encode_delivery,
    end_epoch,
    invitation_delivery,
    mailbox_epoch,
    make_proof,
    next_epoch,
    start_group,
)

GROUP = bytes(range(32))
NOW = 1_700_000_000
#: The handshake hashes of two Noise sessions (BLAKE2b: 64 bytes).
SESSION = b"h" * 64
OTHER_SESSION = b"i" * 64


class ProofTests(SynchronousTestCase):
    """
    Proofs between participants, and each refusal.
    """

    def setUp(self) -> None:
        self.owner = start_group(GROUP, NOW)
        self.access = self.owner.keys.access
        delivery = decode_delivery(encode_delivery(invitation_delivery(self.owner)))
        self.member = delivery.member.access

    def refusal(self, access: GroupAccess, role: Role, session: bytes, proof: bytes) -> str:
        """
        The message of the refusal of ``proof``; fails if it is accepted.
        """
        error = self.assertRaises(MembershipNotProven, check_proof, access, role, session, proof)
        self.assertIs(type(error), MembershipNotProven)
        return str(error)

    def test_members_prove_to_each_other(self) -> None:
        """
        The dialler proves first and the listener checks it; then the
        listener proves and the dialler checks; a mailbox proves the same
        way.
        """
        dialler = make_proof(self.member, Role.DIALLER, SESSION)
        self.assertEqual(len(dialler), PROOF_SIZE)
        check_proof(self.access, Role.DIALLER, SESSION, dialler)
        listener = make_proof(self.access, Role.LISTENER, SESSION)
        check_proof(self.member, Role.LISTENER, SESSION, listener)
        mailbox = make_proof(mailbox_epoch(self.owner).access, Role.DIALLER, SESSION)
        check_proof(self.member, Role.DIALLER, SESSION, mailbox)

    def test_non_member_refused(self) -> None:
        """
        A proof under any key other than the access key is refused.
        """
        stranger = GroupAccess(GROUP, 0, b"s" * 32)
        proof = make_proof(stranger, Role.DIALLER, SESSION)
        self.refusal(self.access, Role.DIALLER, SESSION, proof)

    def test_reflected_proof_refused(self) -> None:
        """
        The dialler's proof sent back to the dialler as the listener's is
        refused: the role is in the MAC.
        """
        proof = make_proof(self.member, Role.DIALLER, SESSION)
        self.refusal(self.member, Role.LISTENER, SESSION, proof)

    def test_replayed_from_other_connection_refused(self) -> None:
        """
        A proof made on one connection, replayed on another (another
        handshake hash), is refused.
        """
        proof = make_proof(self.member, Role.DIALLER, OTHER_SESSION)
        self.refusal(self.access, Role.DIALLER, SESSION, proof)

    def test_other_group_refused(self) -> None:
        """
        A proof for another group is refused, even under the same key.
        """
        other = GroupAccess(b"g" * 32, 0, self.member.access_key)
        proof = make_proof(other, Role.DIALLER, SESSION)
        self.refusal(self.access, Role.DIALLER, SESSION, proof)

    def test_older_epoch_refused(self) -> None:
        """
        A proof by a member removed in epoch 0, made with what it holds, is
        refused by a participant of epoch 1; so is one claiming epoch 1
        under the old key.
        """
        later = next_epoch(end_epoch(self.owner, EpochEnd.MEMBER_REMOVED), NOW)
        old = make_proof(self.member, Role.DIALLER, SESSION)
        self.refusal(later.keys.access, Role.DIALLER, SESSION, old)
        relabelled = GroupAccess(GROUP, 1, self.member.access_key)
        self.refusal(
            later.keys.access, Role.DIALLER, SESSION, make_proof(relabelled, Role.DIALLER, SESSION)
        )

    def test_every_refusal_looks_the_same(self) -> None:
        """
        Every refusal, whatever failed, is the same exception with the same
        message, so a prober learns nothing from it.
        """
        later = next_epoch(self.owner, NOW)
        messages = {
            self.refusal(
                self.access,
                Role.DIALLER,
                SESSION,
                make_proof(GroupAccess(GROUP, 0, b"s" * 32), Role.DIALLER, SESSION),
            ),
            self.refusal(
                self.member, Role.LISTENER, SESSION, make_proof(self.member, Role.DIALLER, SESSION)
            ),
            self.refusal(
                self.access,
                Role.DIALLER,
                SESSION,
                make_proof(self.member, Role.DIALLER, OTHER_SESSION),
            ),
            self.refusal(
                self.access,
                Role.DIALLER,
                SESSION,
                make_proof(
                    GroupAccess(b"g" * 32, 0, self.member.access_key), Role.DIALLER, SESSION
                ),
            ),
            self.refusal(
                later.keys.access,
                Role.DIALLER,
                SESSION,
                make_proof(self.member, Role.DIALLER, SESSION),
            ),
            self.refusal(self.access, Role.DIALLER, SESSION, b""),
            self.refusal(self.access, Role.DIALLER, SESSION, b"x" * 1000),
        }
        self.assertEqual(messages, {"the peer did not prove membership of the group"})

    @given(st.integers(0, PROOF_SIZE * 8 - 1))
    def test_bit_flips_refused(self, bit: int) -> None:
        """
        A proof with any one bit flipped is refused.
        """
        proof = bytearray(make_proof(self.member, Role.DIALLER, SESSION))
        proof[bit // 8] ^= 1 << (bit % 8)
        self.refusal(self.access, Role.DIALLER, SESSION, bytes(proof))
