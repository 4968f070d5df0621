# -*- test-case-name: tests.test_storage -*-
"""
What the node's store offers the group layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from ..identity import PeerID
    from ._values import (
        Change,
        DeliveryState,
        Edge,
        Epoch,
        Group,
        HeldMessage,
        Invitation,
        MailboxTerms,
        MailboxUsage,
        Member,
        NotifyMember,
        OutboxEntry,
        Prekey,
        StoredBundle,
        StoredMessage,
    )


class IStore(Interface):
    """
    A node's groups, keys, messages, outbox, invitations and settings.

    Writes are transactions of :class:`~digitalspring.storage.Change`
    values: all of them or none.  A write's Deferred fires only once the
    transaction is durable, so whatever the caller acknowledges to a peer or
    to the user after it survives a crash.  Every Deferred may fail with
    :class:`~digitalspring.storage.StoreClosed` after :meth:`close`, and
    with :class:`~digitalspring.storage.TamperedRow` when an encrypted
    value fails to authenticate.
    """

    def commit(*changes: Change) -> Deferred[None]:
        """
        Apply ``changes`` in one transaction, in order.

        :returns: a Deferred that fires with ``None`` once they are
            durable.  It fails with the first change's refusal (a
            :class:`~digitalspring.storage.StorageError`: each change's
            docstring lists its own), and then the store is as it was.
        """

    def group(group_id: bytes) -> Deferred[Group]:
        """
        :returns: a Deferred that fires with the group.  It fails with
            :class:`~digitalspring.storage.NotStored` for an unknown group.
        """

    def groups() -> Deferred[list[Group]]:
        """
        :returns: a Deferred that fires with every group, oldest first.
        """

    def members(group_id: bytes) -> Deferred[list[Member]]:
        """
        :returns: a Deferred that fires with the members of a group we own,
            in the order they were added (empty for a group we do not own).
        """

    def edges(group_id: bytes) -> Deferred[frozenset[Edge]]:
        """
        :returns: a Deferred that fires with the neighbour graph of a group
            we own, each edge in :func:`~digitalspring.storage.edge` order.
        """

    def neighbours(group_id: bytes) -> Deferred[frozenset[PeerID]]:
        """
        :returns: a Deferred that fires with our own neighbours in a group
            we are a member of.
        """

    def mailboxes(group_id: bytes) -> Deferred[frozenset[PeerID]]:
        """
        :returns: a Deferred that fires with the mailboxes of a group we
            are a member of, as its owner named them.
        """

    def mailbox_terms(group_id: bytes) -> Deferred[MailboxTerms]:
        """
        :returns: a Deferred that fires with how we keep a group we serve
            as a mailbox.  It fails with
            :class:`~digitalspring.storage.NotStored` for any other group.
        """

    def mailbox_usage() -> Deferred[list[MailboxUsage]]:
        """
        :returns: a Deferred that fires with what we hold of each group we
            serve as a mailbox, oldest group first.
        """

    def next_expiry() -> Deferred[float | None]:
        """
        :returns: a Deferred that fires with the earliest time a message or
            sealed item a mailbox holds is due for deletion, or ``None``
            when none is.
        """

    def epoch(group_id: bytes, epoch: int | None = None) -> Deferred[Epoch]:
        """
        :param epoch: which one; ``None`` for the latest.
        :returns: a Deferred that fires with the epoch and the keys still
            held.  It fails with :class:`~digitalspring.storage.NotStored`
            when there is no such epoch.
        """

    def message(group_id: bytes, epoch: int, index: int) -> Deferred[StoredMessage]:
        """
        :returns: a Deferred that fires with the message, complete or
            partial.  It fails with :class:`~digitalspring.storage.NotStored`
            when there is none.
        """

    def manifest(group_id: bytes, epoch: int, index: int) -> Deferred[bytes]:
        """
        :returns: a Deferred that fires with a message's signed manifest,
            without reading (or decrypting) its content.  It fails with
            :class:`~digitalspring.storage.NotStored` when there is none.
        """

    def history(
        group_id: bytes, after: tuple[int, int] | None = None, limit: int = 100
    ) -> Deferred[list[StoredMessage]]:
        """
        The complete messages of a group, by (epoch, index).

        :param after: only messages after this (epoch, index).
        :param limit: at most this many.
        :returns: a Deferred that fires with the list.
        """

    def held_after(
        group_id: bytes, after: tuple[int, int], limit: int
    ) -> Deferred[list[HeldMessage]]:
        """
        The messages of a group, complete or partial, after ``after``
        (epoch, index), by (epoch, index), with the numbers of the
        fragments held of each, without reading any content.

        :returns: a Deferred that fires with at most ``limit`` of them.
        """

    def newest(group_id: bytes) -> Deferred[HeldMessage | None]:
        """
        :returns: a Deferred that fires with the last message of a group
            by (epoch, index), complete or partial, or ``None``.
        """

    def fragment(group_id: bytes, epoch: int, index: int, number: int) -> Deferred[bytes]:
        """
        :returns: a Deferred that fires with one fragment kept of a
            message.  It fails with :class:`~digitalspring.storage.NotStored`
            when it is not kept.
        """

    def partial_messages(group_id: bytes) -> Deferred[list[StoredMessage]]:
        """
        :returns: a Deferred that fires with the partial messages of a
            group, by (epoch, index), without fragments.
        """

    def fragments(group_id: bytes, epoch: int, index: int) -> Deferred[dict[int, bytes]]:
        """
        :returns: a Deferred that fires with the fragments kept of a
            message, by number (empty when none are).
        """

    def deliveries(
        group_id: bytes, epoch: int, index: int
    ) -> Deferred[dict[PeerID, DeliveryState]]:
        """
        :returns: a Deferred that fires with each recipient's delivery state
            for a message we sent.
        """

    def undelivered(group_id: bytes, peer: PeerID) -> Deferred[list[tuple[int, int]]]:
        """
        :returns: a Deferred that fires with the (epoch, index) of each
            message we sent that ``peer`` has not committed, in order.
        """

    def outbox(peer: PeerID) -> Deferred[list[OutboxEntry]]:
        """
        :returns: a Deferred that fires with what waits for ``peer``, in the
            order it was queued.
        """

    def queued(peer: PeerID, kind: str, group_id: bytes) -> Deferred[list[OutboxEntry]]:
        """
        :returns: a Deferred that fires with what waits for ``peer`` of one
            kind about one group, in the order it was queued, found without
            reading the peer's whole outbox.
        """

    def member_of(peer: PeerID) -> Deferred[list[bytes]]:
        """
        :returns: a Deferred that fires with the IDs of the groups we own
            that ``peer`` is a member of (invited or active, not removed),
            found by an index on the peer.
        """

    def outbox_peers() -> Deferred[frozenset[PeerID]]:
        """
        :returns: a Deferred that fires with the peers something waits for.
        """

    def invitations() -> Deferred[list[Invitation]]:
        """
        :returns: a Deferred that fires with the pending invitations, oldest
            first.
        """

    def blocked() -> Deferred[frozenset[PeerID]]:
        """
        :returns: a Deferred that fires with the blocked peers.
        """

    def setting(name: str) -> Deferred[str | None]:
        """
        :returns: a Deferred that fires with a setting's value, or ``None``
            when it is not set.
        """

    def prekey(public: bytes) -> Deferred[Prekey]:
        """
        :returns: a Deferred that fires with our prekey pair whose public
            key is ``public``, or fails with ``NotStored`` when we hold none
            (never made, used, or expired).
        """

    def prekeys() -> Deferred[list[Prekey]]:
        """
        :returns: a Deferred that fires with all our prekey pairs, signed
            ones by expiry, then one-time ones by peer and public key.
        """

    def bundle(peer: PeerID) -> Deferred[StoredBundle]:
        """
        :returns: a Deferred that fires with ``peer``'s key bundle for us,
            or fails with ``NotStored`` when we hold none.
        """

    def sealed(group_id: bytes, recipient: PeerID, limit: int) -> Deferred[list[bytes]]:
        """
        :returns: a Deferred that fires with the oldest ``limit`` items a
            mailbox holds for ``recipient`` in a group, oldest first.
        """

    def notify_member(peer: PeerID) -> Deferred[NotifyMember]:
        """
        :returns: a Deferred that fires with a member this node serves as a
            notification box, or fails with ``NotStored`` when it serves
            no such member.
        """

    def notify_members() -> Deferred[list[NotifyMember]]:
        """
        :returns: a Deferred that fires with every member this node serves
            as a notification box, by peer.
        """

    def notifications(recipient: PeerID, limit: int) -> Deferred[list[bytes]]:
        """
        :returns: a Deferred that fires with the oldest ``limit``
            notifications a box holds for ``recipient``, oldest first.
        """

    def close() -> Deferred[None]:
        """
        Finish what was asked and release the store.

        :returns: a Deferred that fires once everything is written and the
            store is closed.
        """
