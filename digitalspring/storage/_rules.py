# -*- test-case-name: tests.test_storage -*-
"""
The rules both stores keep: bounds on what peers make them hold, and chains
that only move forward.
"""

from __future__ import annotations

from ..identity import PeerID
from ._errors import ChainOutOfOrder, NotStored, PeerQuotaExceeded, TotalQuotaExceeded
from ._values import ChainState, Epoch


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
