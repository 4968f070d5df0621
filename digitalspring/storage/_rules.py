# -*- test-case-name: tests.test_storage -*-
"""
The rules both stores keep: bounds on what peers make them hold, and chains
that only move forward.
"""

from __future__ import annotations

from ..identity import PeerID
from ._errors import (
    ChainOutOfOrder,
    GroupQuotaExceeded,
    NotStored,
    PeerQuotaExceeded,
    TotalQuotaExceeded,
)
from ._values import ChainState, Epoch, StoreLimits


def check_quota(
    what: str, peer: PeerID, peer_after: int, total_after: int, per_peer: int, total: int
) -> None:
    """
    Refuse a write that would make ``peer`` hold ``peer_after`` of ``what``
    and all peers ``total_after``, past their bounds.

    :raises PeerQuotaExceeded: past the bound for one peer.
    :raises TotalQuotaExceeded: past the bound for all peers.
    """
    if peer_after > per_peer:
        raise PeerQuotaExceeded(
            f"{peer} would hold {peer_after} {what}, more than the {per_peer} one peer may",
            what,
            per_peer,
        )
    if total_after > total:
        raise TotalQuotaExceeded(
            f"peers would hold {total_after} {what}, more than the {total} kept in all",
            what,
            total,
        )


def check_chain(epoch: Epoch, index: int, chain: ChainState, exact: bool) -> None:
    """
    Refuse to move ``epoch``'s chain to ``chain`` for message ``index``
    unless it moves forward past ``index`` from at most ``index`` (from
    exactly ``index`` when ``exact``: a sender never skips an index).

    :raises ChainOutOfOrder: otherwise.
    :raises NotStored: when the epoch holds no chain key.
    """
    if epoch.chain is None:
        raise NotStored(f"epoch {epoch.epoch} holds no chain key")
    at = epoch.chain.next_index
    if index < at or (exact and index != at) or chain.next_index <= index:
        raise ChainOutOfOrder(
            f"the chain of epoch {epoch.epoch} is at {at}: it cannot commit"
            f" message {index} and move to {chain.next_index}"
        )


def check_mailbox_quota(
    group_id: bytes,
    owner: PeerID,
    group_after: int,
    owner_after: int,
    total_after: int,
    limits: StoreLimits,
) -> None:
    """
    Refuse a write that would make a mailbox hold ``group_after`` bytes of
    one group, ``owner_after`` of the groups of its owner and
    ``total_after`` of all, past their bounds.

    :raises GroupQuotaExceeded: past the bound for one group.
    :raises PeerQuotaExceeded: past the bound for the groups of one owner.
    :raises TotalQuotaExceeded: past the bound for all groups.
    """
    if group_after > limits.mailbox_bytes_per_group:
        raise GroupQuotaExceeded(
            f"the mailbox would hold {group_after} bytes of group {group_id.hex()}, more than"
            f" the {limits.mailbox_bytes_per_group} it keeps of one group",
            "mailbox bytes per group",
            limits.mailbox_bytes_per_group,
        )
    if owner_after > limits.mailbox_bytes_per_owner:
        raise PeerQuotaExceeded(
            f"the mailbox would hold {owner_after} bytes of the groups of {owner}, more than"
            f" the {limits.mailbox_bytes_per_owner} it keeps for one owner",
            "mailbox bytes per owner",
            limits.mailbox_bytes_per_owner,
        )
    if total_after > limits.mailbox_bytes_total:
        raise TotalQuotaExceeded(
            f"the mailbox would hold {total_after} bytes in all, more than the"
            f" {limits.mailbox_bytes_total} it keeps",
            "mailbox bytes",
            limits.mailbox_bytes_total,
        )


def check_mailbox_groups(
    owner: PeerID, owner_after: int, total_after: int, limits: StoreLimits
) -> None:
    """
    Refuse to serve one more group as a mailbox past the bounds on the
    groups of one owner and of all.

    :raises PeerQuotaExceeded: or :raises TotalQuotaExceeded: past them.
    """
    check_quota(
        "mailbox groups",
        owner,
        owner_after,
        total_after,
        limits.mailbox_groups_per_owner,
        limits.mailbox_groups_total,
    )
