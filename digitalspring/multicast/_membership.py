# -*- test-case-name: tests.test_membership -*-
"""
Membership proofs: how two participants of a group who meet on a Noise
channel show each other that they hold the epoch's access key, without
anyone handing out the member list.

A proof is a MAC under the access key over a label, the group, the epoch,
the prover's role in the connection and the channel's handshake hash::

    proof = BLAKE2b-256(key=access key, person="ds-member-proof",
                        varint len(label) || label || group ID
                        || varint epoch || role (0 dialler, 1 listener)
                        || varint len(handshake hash) || handshake hash)

The handshake hash binds the proof to one connection (a proof replayed on
another connection is refused); the role keeps a proof from being reflected
back to the peer that made it; the epoch keeps an old access key from
proving anything now.  The dialler proves first, so that a listener tells a
stranger nothing.  Every refusal raises the same error with the same
message, so a prober learns nothing from which check failed.
"""

from __future__ import annotations

import enum
import hmac

from .._codec import varint
from ..errors import DigitalSpringError
from ._crypto import HASH_SIZE, blake2b
from ._epoch import GroupAccess

#: What a membership proof is a MAC over first: domain separation.
PROOF_LABEL = b"digitalspring membership proof v1"
#: The size of a proof.
PROOF_SIZE = HASH_SIZE

_PERSON = b"ds-member-proof"


class MembershipNotProven(DigitalSpringError):
    """
    The peer did not prove that it is a participant of the group.
    """


class Role(enum.Enum):
    """
    A participant's side of the connection.
    """

    DIALLER = 0
    LISTENER = 1


def _proof(access: GroupAccess, role: Role, handshake_hash: bytes) -> bytes:
    data = b"".join(
        [
            varint(len(PROOF_LABEL)),
            PROOF_LABEL,
            access.group_id,
            varint(access.epoch),
            bytes([role.value]),
            varint(len(handshake_hash)),
            handshake_hash,
        ]
    )
    return blake2b(_PERSON, data, access.access_key)


def make_proof(access: GroupAccess, role: Role, handshake_hash: bytes) -> bytes:
    """
    The proof that the participant on side ``role`` of the connection whose
    handshake hash is ``handshake_hash`` holds ``access``.
    """
    return _proof(access, role, handshake_hash)


def check_proof(access: GroupAccess, role: Role, handshake_hash: bytes, proof: bytes) -> None:
    """
    Refuse ``proof`` unless the peer on side ``role`` of this connection
    made it with ``access``.

    :param role: the *peer's* role: a listener checks the dialler's proof
        with :attr:`Role.DIALLER`.
    :raises MembershipNotProven: when it did not; always with the same
        message.
    """
    if not hmac.compare_digest(proof, _proof(access, role, handshake_hash)):
        raise MembershipNotProven("the peer did not prove membership of the group")
