# -*- test-case-name: tests.test_multicast_service -*-
"""
One group as its strategy sees it at one node (:class:`GroupContext`), and
the receiving side of a message: manifests and fragments checked before
they are stored, and messages opened and committed in order.

A member commits the messages of an epoch in index order: a message that
is complete before the one ahead of it waits, as a partial message (its
fragments kept, charged to the group's owner, within the store's bounds),
until the gap is filled.  So the receiving chain never holds skipped keys,
and the chain state the store keeps is one key and one index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from zope.interface import implementer

from .._codec import Reader, varint
from ..errors import DigitalSpringError
from ..identity import PeerID
from ..storage import (
    AddFragment,
    AlreadyStored,
    ChainState,
    CommitReceived,
    DropMessage,
    ForgetEpochKeys,
    HoldMessage,
    NotStored,
    StartMessage,
)
from ._chain import DuplicateMessage, FarFutureIndex, ReceivingChain
from ._content import Content, ContentType, MalformedContent
from ._epoch import CloseStatement
from ._interfaces import IAcknowledgementRelay, IStrategyContext
from ._links import ConflictingManifest, ManifestChain, ManifestOutOfChain, accept_manifest
from ._manifest import FragmentRejected, Manifest, check_fragment, decode_manifest, verify_manifest
from ._message import open_message
from ._notices import ACK_MAC_SIZE, acknowledgement_key, make_acknowledgement

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.protocols import amp

    from ..channel import PeerConnection
    from ._service import MulticastService

#: How far ahead of the next message to commit a member accepts a manifest:
#: the most messages of one group waiting for an earlier one.  A far-future
#: index is refused with one comparison, before any signature is checked.
MAX_OUT_OF_ORDER = 64

_STORED_VERSION = 1


def encode_stored(content: Content) -> bytes:
    """
    How a message's content is kept in the store, without its padding::

        varint version (1), varint content type, varint length and the
        file name in UTF-8, then the data
    """
    name = content.file_name.encode("utf-8")
    return b"".join(
        [
            varint(_STORED_VERSION),
            varint(content.content_type),
            varint(len(name)),
            name,
            content.data,
        ]
    )


def decode_stored(data: bytes, sent_at: int) -> Content:
    """
    The content kept by :func:`encode_stored`.

    :raises MalformedContent: when it is not such a content.
    """
    reader = Reader(data, MalformedContent, "stored message")
    if reader.varint() != _STORED_VERSION:
        raise reader.fail("is of an unknown version")
    try:
        kind = ContentType(reader.varint())
        name = reader.take(reader.varint()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise reader.fail("is damaged") from None
    return Content(sent_at, kind, data[reader.offset :], name)


@implementer(IStrategyContext, IAcknowledgementRelay)
class GroupContext:
    """
    A group at this node, for its strategy: made by the
    :class:`~digitalspring.multicast.MulticastService`.
    """

    log = Logger()

    def __init__(
        self,
        service: MulticastService,
        group_id: bytes,
        owner: PeerID,
        role: str,
        degree: int,
        neighbours: frozenset[PeerID],
        members: frozenset[PeerID] | None,
    ) -> None:
        self._service = service
        self.group_id = group_id
        self.local = service.identity.peer_id
        self.owner = owner
        self.role = role
        self.degree = degree
        self.clock = service.clock
        self.store = service.store
        self._neighbours = neighbours
        self._members = members
        # (epoch, index) -> (manifest, fragment numbers held), for partial
        # messages only: bounded as the store bounds them.
        self._arriving: dict[tuple[int, int], tuple[Manifest, set[int]]] = {}
        self._commit_lock = DeferredLock()

    def neighbours(self) -> frozenset[PeerID]:
        return self._neighbours

    def members(self) -> frozenset[PeerID] | None:
        return self._members

    def set_neighbours(self, neighbours: frozenset[PeerID]) -> None:
        """
        What the owner said our neighbours are now.
        """
        self._neighbours = neighbours

    def set_members(self, members: frozenset[PeerID]) -> None:
        """
        The members now (at the owner).
        """
        self._members = members

    def connect(self, peer: PeerID) -> Deferred[PeerConnection]:
        return self._service.proven_connection(self.group_id, peer)

    def call(
        self,
        peer: PeerID,
        command: type[amp.Command],
        arguments: dict[str, Any] | Callable[[PeerConnection], dict[str, Any] | None],
    ) -> Deferred[tuple[PeerConnection, dict[str, Any] | None]]:
        make = arguments if callable(arguments) else lambda connection: arguments
        return self._service.call_proven(self.group_id, peer, command, make)

    def accept_manifest(self, signed_manifest: bytes) -> Deferred[Manifest]:
        return Deferred.fromCoroutine(self._accept_manifest(signed_manifest))

    def accept_fragment(self, manifest: Manifest, number: int, data: bytes) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._accept_fragment(manifest, number, data))

    def progress(self, manifest: Manifest, peer: PeerID, fragments: int) -> None:
        self._service.transmission_progress(self.group_id, manifest, peer, fragments)

    def acknowledgement(self, epoch: int, index: int) -> bytes:
        key = acknowledgement_key(self._service.identity, self.owner, self.group_id)
        return make_acknowledgement(key, self.group_id, epoch, index)[-ACK_MAC_SIZE:]

    def acknowledged(
        self, epoch: int, index: int, macs: list[bytes]
    ) -> Deferred[frozenset[PeerID]]:
        return self._service.acknowledged_macs(self.group_id, epoch, index, macs)

    # --- receiving -------------------------------------------------------

    async def _accept_manifest(self, signed: bytes) -> Manifest:
        manifest = decode_manifest(signed)
        if manifest.group_id != self.group_id:
            raise ManifestOutOfChain("the manifest is of another group")
        try:
            epoch = await self.store.epoch(self.group_id, manifest.epoch)
        except NotStored:
            raise ManifestOutOfChain(
                f"this node holds no keys of epoch {manifest.epoch} of the group"
            ) from None
        if self.role == "member":
            chain = epoch.chain
            if chain is None or manifest.index < chain.next_index:
                held = await self._held(manifest, signed)
                if held is not None:
                    return held
                raise DuplicateMessage(
                    f"message {manifest.index} was already received, or precedes the first "
                    "one this member reads"
                )
            if manifest.index - chain.next_index >= MAX_OUT_OF_ORDER:
                raise FarFutureIndex(
                    f"message {manifest.index} is more than {MAX_OUT_OF_ORDER} ahead of "
                    "the messages received"
                )
        expires = None
        if self.role == "mailbox":
            terms = await self.store.mailbox_terms(self.group_id)
            if (manifest.epoch, manifest.index) < terms.floor:
                # Deleted once its time was up, or sent before this mailbox
                # was added: not stored (again).
                raise ManifestOutOfChain(
                    f"message {manifest.epoch}/{manifest.index} precedes what this mailbox keeps"
                )
            expires = self.clock.seconds() + terms.retention
        manifest = verify_manifest(signed, epoch.signing_public)
        held = await self._held(manifest, signed)
        if held is not None:
            return held
        links = ManifestChain(self.group_id, manifest.epoch)
        for index in (manifest.index - 1, manifest.index + 1):
            if index < 0:
                continue
            try:
                stored = await self.store.message(self.group_id, manifest.epoch, index)
            except NotStored:
                continue
            links = accept_manifest(links, decode_manifest(stored.manifest))
        if epoch.close is not None:
            close = epoch.close
            links = ManifestChain(
                self.group_id,
                manifest.epoch,
                links.links,
                CloseStatement(
                    self.group_id, manifest.epoch, close.last_index + 1, close.last_manifest_hash
                ),
            )
        accept_manifest(links, manifest)
        try:
            await self.store.commit(
                StartMessage(
                    self.group_id,
                    manifest.epoch,
                    manifest.index,
                    signed,
                    from_peer=self.owner,
                    expires=expires,
                )
            )
        except AlreadyStored:
            held = await self._held(manifest, signed)
            if held is None:
                raise ConflictingManifest(
                    "another manifest of this message was received"
                ) from None
            return held
        return manifest

    async def _held(self, manifest: Manifest, signed: bytes) -> Manifest | None:
        """
        ``manifest`` when the store holds it already, ``None`` when it
        holds nothing for its message.

        :raises ConflictingManifest: when it holds another manifest there.
        """
        try:
            stored = await self.store.message(self.group_id, manifest.epoch, manifest.index)
        except NotStored:
            return None
        if stored.manifest != signed:
            raise ConflictingManifest(
                f"another manifest of message {manifest.index} was already received"
            )
        return manifest

    async def _accept_fragment(self, manifest: Manifest, number: int, data: bytes) -> bool:
        check_fragment(manifest, number, data)
        key = (manifest.epoch, manifest.index)
        try:
            stored = await self.store.message(self.group_id, *key)
        except NotStored:
            raise FragmentRejected("the fragment's message was not accepted first") from None
        if stored.state == "complete":
            if self.role != "owner" and number == 0:
                await self._service.acknowledge(self, manifest.epoch, manifest.index)
            return False
        if stored.manifest != _signed_body_match(stored.manifest, manifest):
            raise FragmentRejected("the fragment is of another manifest of its message")
        arriving = self._arriving.get(key)
        if arriving is None:
            held = await self.store.fragments(self.group_id, *key)
            arriving = self._arriving.setdefault(key, (manifest, set(held)))
        if number in arriving[1]:
            # Held already: yet the message may be whole and next in line
            # without having been committed (a node killed between the
            # last fragment and the commit), and this is what tells us.
            await self._whole(manifest, arriving[1])
            return False
        await self.store.commit(
            AddFragment(self.group_id, *key, number, data, from_peer=self.owner)
        )
        arriving[1].add(number)
        self._service.fragment_arrived(
            self.group_id,
            manifest.epoch,
            manifest.index,
            len(arriving[1]),
            len(manifest.fragment_hashes),
        )
        await self._whole(manifest, arriving[1])
        return True

    async def _whole(self, manifest: Manifest, held: set[int]) -> None:
        """
        Once every fragment of a message is here: a member commits what is
        next in line, a mailbox holds the message.
        """
        if len(held) < len(manifest.fragment_hashes):
            return
        if self.role == "member":
            await self._commit_lock.run(self._commit_ready, manifest.epoch)
        elif self.role == "mailbox":
            await self._commit_lock.run(self._hold, manifest)

    async def _hold(self, manifest: Manifest) -> None:
        """
        A mailbox holds a whole message (its ciphertext, which it cannot
        open) and acknowledges it to the owner once that is durable.
        """
        key = (manifest.epoch, manifest.index)
        try:
            await self.store.commit(HoldMessage(self.group_id, *key))
        except NotStored:
            # Held by a commit that ran first, or deleted (expired) since.
            return
        self._arriving.pop(key, None)
        await self._service.held(self, *key)

    def forget_arriving(self) -> None:
        """
        Forget what is known of messages arriving: the store may have
        deleted some (a mailbox's expired ones), and it is read again.
        """
        self._arriving.clear()

    async def _commit_ready(self, epoch_number: int) -> None:
        """
        Open and commit, in order, every message of the epoch that is
        complete and next in line.
        """
        while True:
            epoch = await self.store.epoch(self.group_id, epoch_number)
            if epoch.chain is None:
                return
            index = epoch.chain.next_index
            arriving = self._arriving.get((epoch_number, index))
            if arriving is None:
                arriving = await self._arrived(epoch_number, index)
            if arriving is None or len(arriving[1]) < len(arriving[0].fragment_hashes):
                return
            manifest = arriving[0]
            held = await self.store.fragments(self.group_id, epoch_number, index)
            fragments = [held[n] for n in range(len(manifest.fragment_hashes))]
            try:
                content, after = open_message(
                    manifest, fragments, ReceivingChain(index, epoch.chain.key)
                )
            except DigitalSpringError as e:
                # Signed by the owner, yet unreadable: the owner's fault.
                self.log.warn(
                    "dropped message {epoch}/{index} of group {group}: {error}",
                    epoch=epoch_number,
                    index=index,
                    group=self.group_id.hex(),
                    error=str(e),
                )
                del self._arriving[(epoch_number, index)]
                await self.store.commit(DropMessage(self.group_id, epoch_number, index))
                return
            assert after.chain_key is not None
            changes: list[Any] = [
                CommitReceived(
                    self.group_id,
                    epoch_number,
                    index,
                    encode_stored(content),
                    content.sent_at,
                    ChainState(after.chain_key, after.next_index),
                )
            ]
            if epoch.close is not None and after.next_index > epoch.close.last_index:
                changes.append(ForgetEpochKeys(self.group_id, epoch_number))
            await self.store.commit(*changes)
            del self._arriving[(epoch_number, index)]
            await self._service.committed(self, epoch_number, index, content)

    async def _arrived(self, epoch_number: int, index: int) -> tuple[Manifest, set[int]] | None:
        """
        A partial message as the store keeps it, for a message whose
        fragments arrived before this node last started (what arrives
        since is in ``_arriving``): a message whole before the one ahead of
        it, when the node stopped, is committed once that one is.

        :returns: its manifest and the fragment numbers held, or ``None``
            when the store holds no partial message there.
        """
        try:
            stored = await self.store.message(self.group_id, epoch_number, index)
        except NotStored:
            return None
        if stored.state == "complete":
            return None
        held = await self.store.fragments(self.group_id, epoch_number, index)
        return self._arriving.setdefault(
            (epoch_number, index), (decode_manifest(stored.manifest), set(held))
        )


def _signed_body_match(stored: bytes, manifest: Manifest) -> bytes:
    """
    ``stored`` when it is the signed form of ``manifest``, else ``b""``.
    """
    try:
        return stored if decode_manifest(stored) == manifest else b""
    except DigitalSpringError:
        return b""
