# -*- test-case-name: tests.test_manifest -*-
"""
The chain of an epoch's manifests, as a member has received them.

Each manifest names the hash of the one before it, so the messages of an
epoch form a chain.  A member accepts a manifest only if it links to the
manifests it already holds on both sides, and, once the epoch is closed,
only if it lies on the closed chain: below the close's count of messages,
and linked to the close's last hash, directly (the last message) or through
the successor the member holds.  A closed epoch is therefore filled in
backwards from its last manifest, so that after the owner reveals the
epoch's signing seed, whoever holds it still cannot place a manifest of its
own making into the chain a member holds.
"""

from __future__ import annotations

from attrs import field, frozen

from ..errors import DigitalSpringError
from ._chain import DuplicateMessage
from ._epoch import CloseStatement
from ._manifest import NO_PREVIOUS, Manifest


class ManifestOutOfChain(DigitalSpringError):
    """
    A message's manifest does not fit the chain of its epoch: it names
    another group or epoch, another previous message than the one received,
    or a place outside the epoch as its owner closed it.
    """


class ConflictingManifest(ManifestOutOfChain):
    """
    Two different manifests claim the same message of an epoch.
    """


def _links(items: tuple[tuple[int, bytes, bytes], ...]) -> tuple[tuple[int, bytes, bytes], ...]:
    return tuple(sorted(items))


@frozen
class ManifestChain:
    """
    The manifests a member accepted in an epoch.

    :ivar links: ``(index, manifest hash, previous hash)`` of each, by index.
    :ivar close: how the epoch ended, once it did.
    """

    group_id: bytes
    epoch: int
    links: tuple[tuple[int, bytes, bytes], ...] = field(default=(), converter=_links, repr=False)
    close: CloseStatement | None = None


def accept_manifest(chain: ManifestChain, manifest: Manifest) -> ManifestChain:
    """
    The chain with ``manifest`` in it.  The manifest's signature must have
    been checked already (:func:`~digitalspring.multicast.verify_manifest`).

    :raises DuplicateMessage: when the chain holds this manifest already.
    :raises ConflictingManifest: when it holds another for the same index.
    :raises ManifestOutOfChain: when the manifest is of another group or
        epoch, does not link to its neighbours in the chain, or lies outside
        the closed epoch.
    """
    if (manifest.group_id, manifest.epoch) != (chain.group_id, chain.epoch):
        raise ManifestOutOfChain(f"the manifest is not of epoch {chain.epoch} of this group")
    index, digest = manifest.index, manifest.hash
    held = {link[0]: link for link in chain.links}
    if index in held:
        if held[index][1] == digest:
            raise DuplicateMessage(f"message {index} of epoch {chain.epoch} was already received")
        raise ConflictingManifest(f"another manifest of message {index} was already received")
    if index == 0 and manifest.previous != NO_PREVIOUS:
        raise ManifestOutOfChain("the first manifest of an epoch names a previous one")
    before, after = held.get(index - 1), held.get(index + 1)
    if before is not None and manifest.previous != before[1]:
        raise ManifestOutOfChain(f"manifest {index} does not follow the manifest {index - 1} held")
    if after is not None and after[2] != digest:
        raise ManifestOutOfChain(f"manifest {index} is not the one manifest {index + 1} follows")
    close = chain.close
    if close is not None:
        _check_closed(close, index, digest, after is not None)
    link = (index, digest, manifest.previous)
    return ManifestChain(chain.group_id, chain.epoch, (*chain.links, link), close)


def _check_closed(close: CloseStatement, index: int, digest: bytes, linked_after: bool) -> None:
    if index >= close.count:
        raise ManifestOutOfChain(
            f"epoch {close.epoch} was closed after {close.count} messages, "
            f"so it has no message {index}"
        )
    if index == close.count - 1:
        if digest != close.last_hash:
            raise ManifestOutOfChain(f"manifest {index} is not the last one of the closed epoch")
    elif not linked_after:
        raise ManifestOutOfChain(
            f"manifest {index} of the closed epoch {close.epoch} comes before manifest "
            f"{index + 1} is held, so nothing links it to the close"
        )


def close_manifest_chain(chain: ManifestChain, close: CloseStatement) -> ManifestChain:
    """
    The chain once its epoch is closed by ``close``.

    :raises ManifestOutOfChain: when the close is of another epoch, or
        contradicts a manifest the chain holds.
    """
    if (close.group_id, close.epoch) != (chain.group_id, chain.epoch):
        raise ManifestOutOfChain(
            f"the close statement is not of epoch {chain.epoch} of this group"
        )
    for index, digest, _ in chain.links:
        if index >= close.count or (index == close.count - 1 and digest != close.last_hash):
            raise ManifestOutOfChain(
                f"the close of epoch {close.epoch} contradicts manifest {index}, received before"
            )
    return ManifestChain(chain.group_id, chain.epoch, chain.links, close)
