# -*- test-case-name: tests.test_storage -*-
"""
The conformance tests every :class:`~digitalspring.storage.IStore` passes:
the SQLite store nodes run, the memory store simulations use, and any other.

Mix :class:`StoreConformanceMixin` into a trial ``TestCase`` and say how to
make an empty store with given limits (:meth:`make_store`).  The test
bodies are coroutines awaiting Deferreds, so they run the same whether the
store answers at once (memory) or from a thread (SQLite).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from ..identity import Identity, PeerID
from ..storage import (
    AddEpoch,
    AddFragment,
    AddGroup,
    AddInvitation,
    AddPrekeys,
    AlreadyStored,
    Block,
    ChainOutOfOrder,
    ChainState,
    ChangeEdges,
    CloseEpoch,
    CommitReceived,
    CommitSent,
    CountAttempt,
    DeleteGroup,
    DeletePrekey,
    DepositNotification,
    Dequeue,
    DropFragments,
    DropInvitation,
    DropMessage,
    DropQueued,
    Enqueue,
    Epoch,
    EpochClose,
    ExpireHeld,
    ExpirePrekeys,
    ForgetEpochKeys,
    ForgetRecipient,
    Group,
    GroupQuotaExceeded,
    HeldMessage,
    HoldMessage,
    HoldSealed,
    Invitation,
    IStore,
    KeepOnlySigningSecret,
    MailboxTerms,
    MailboxUsage,
    MarkDelivered,
    Member,
    NotifyMember,
    NotStored,
    PeerBlocked,
    PeerQuotaExceeded,
    Prekey,
    PutBundle,
    PutMember,
    RecordOpened,
    RefuseNotification,
    RegisterNotifyMember,
    RevealSigningSecret,
    SetGroupState,
    SetMailboxes,
    SetMailboxTerms,
    SetNeighbours,
    SetPetname,
    SetSetting,
    StartMessage,
    StoreClosed,
    StoredBundle,
    StoreLimits,
    TakeNotifications,
    TakeSealed,
    TotalQuotaExceeded,
    Unblock,
    UnregisterNotifyMember,
    edge,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    class _Base:
        # What the mixin uses of a trial test case, typed (trial's are not).
        def assertEqual(self, first: object, second: object, msg: object = None) -> None: ...
        def assertIsNone(self, obj: object, msg: object = None) -> None: ...
        def assertIsInstance(self, instance: object, classOrTuple: Any) -> None: ...
        def assertTrue(self, condition: object, msg: object = None) -> None: ...
        def assertFalse(self, condition: object, msg: object = None) -> None: ...
        def assertRaises(
            self, exception: type[BaseException], *, msg: object = None
        ) -> AbstractContextManager[Any]: ...
        def addCleanup(self, function: Callable[..., object], *args: object) -> None: ...
        def failureResultOf(self, d: Deferred[Any], *types: type[BaseException]) -> Any: ...

else:
    _Base = object

_Test = Callable[[Any], Coroutine[Any, Any, None]]
_E = TypeVar("_E", bound=BaseException)


def _deferred(test: _Test) -> Callable[[Any], Deferred[None]]:
    @wraps(test)
    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(test(self))

    return run


def peer(n: int) -> PeerID:
    """
    A peer ID made from ``n``, the same in every run.
    """
    return Identity.from_seed(n.to_bytes(32, "big")).peer_id


OWNER = peer(1)
ALICE, BOB, CAROL, DAVE = peer(2), peer(3), peer(4), peer(5)
GROUP_ID = bytes(range(32))
OTHER_GROUP_ID = bytes(range(1, 33))


def owned_group(group_id: bytes = GROUP_ID, created: float = 1000.0) -> Group:
    """
    A group we own.
    """
    return Group(group_id, "friends", OWNER, "owner", "unicast", 6, created)


def joined_group(group_id: bytes = GROUP_ID) -> Group:
    """
    A group someone else owns, that we are a member of.
    """
    return Group(group_id, "their group", OWNER, "member", "unicast", 6, 1000.0)


def served_group(group_id: bytes = GROUP_ID, owner: PeerID = OWNER) -> Group:
    """
    A group someone else owns, that we serve as a mailbox.
    """
    return Group(group_id, "", owner, "mailbox", "spring", 6, 1000.0)


def mailbox_epoch_keys(group_id: bytes = GROUP_ID, number: int = 0) -> Epoch:
    """
    An epoch as a mailbox holds it: the access key and the public key.
    """
    return Epoch(group_id, number, b"P" * 32, 2000.0, access_key=b"A" * 32)


def epoch_keys(group_id: bytes = GROUP_ID, number: int = 0, next_index: int = 0) -> Epoch:
    """
    An epoch with every secret set, each recognisable.
    """
    return Epoch(
        group_id,
        number,
        signing_public=b"P" * 32,
        created=2000.0,
        chain=ChainState(bytes([number]) * 32, next_index),
        signing_secret=b"S" * 32,
        access_key=b"A" * 32,
    )


async def _refused(d: Awaitable[Any], error: type[_E]) -> _E:
    try:
        await d
    except error as e:
        return e
    raise AssertionError(f"expected {error.__name__}")


class StoreConformanceMixin(_Base):
    """
    What every :class:`~digitalspring.storage.IStore` does.
    """

    def make_store(self, limits: StoreLimits) -> Deferred[IStore]:
        """
        Make an empty store with ``limits``; closing it is up to the
        implementation (``addCleanup``).
        """
        raise NotImplementedError()

    async def _store(self, limits: StoreLimits | None = None) -> IStore:
        return await self.make_store(limits or StoreLimits())

    async def _group_with_members(self, store: IStore, *peers: PeerID) -> None:
        await store.commit(
            AddGroup(owned_group()),
            AddEpoch(epoch_keys()),
            *(PutMember(GROUP_ID, Member(p, "member", "active")) for p in peers),
        )

    async def _partial(self, store: IStore, index: int, sender: PeerID = OWNER) -> None:
        await store.commit(StartMessage(GROUP_ID, 0, index, b"manifest %d" % index, sender))

    @_deferred
    async def test_interface(self) -> None:
        """
        The store provides IStore, every method as the interface says.
        """
        store = await self._store()
        self.assertTrue(verifyObject(IStore, store))

    @_deferred
    async def test_groups(self) -> None:
        """
        A group added is read back as it was, groups list oldest first, a
        second copy of a group is refused, and an unknown group is
        NotStored.
        """
        store = await self._store()
        newer = owned_group(OTHER_GROUP_ID, created=3000.0)
        await store.commit(AddGroup(newer), AddGroup(owned_group()))
        self.assertEqual(await store.group(GROUP_ID), owned_group())
        self.assertEqual(await store.groups(), [owned_group(), newer])
        await _refused(store.commit(AddGroup(owned_group())), AlreadyStored)
        await _refused(store.group(b"x" * 32), NotStored)

    @_deferred
    async def test_petname_and_state(self) -> None:
        """
        The user's petname and the group's state are changed in place.
        """
        store = await self._store()
        await store.commit(AddGroup(joined_group()))
        await store.commit(SetPetname(GROUP_ID, "book club"), SetGroupState(GROUP_ID, "left"))
        group = await store.group(GROUP_ID)
        self.assertEqual(
            (group.petname, group.state, group.name), ("book club", "left", "their group")
        )
        await _refused(store.commit(SetPetname(b"x" * 32, "n")), NotStored)

    @_deferred
    async def test_all_or_nothing(self) -> None:
        """
        When one change of a transaction is refused, none of the changes
        before it stay.
        """
        store = await self._store()
        await store.commit(AddGroup(owned_group()))
        await _refused(
            store.commit(
                AddGroup(owned_group(OTHER_GROUP_ID)),
                SetSetting("auto-accept", "no"),
                SetPetname(GROUP_ID, "changed"),
                AddGroup(owned_group()),
            ),
            AlreadyStored,
        )
        self.assertEqual(await store.groups(), [owned_group()])
        self.assertIsNone(await store.setting("auto-accept"))
        self.assertIsNone((await store.group(GROUP_ID)).petname)

    @_deferred
    async def test_members_and_edges(self) -> None:
        """
        Members are kept in the order added and updated in place; the
        neighbour graph holds undirected edges between members, and an edge
        to a non-member is refused with nothing changed.
        """
        store = await self._store()
        await self._group_with_members(store, ALICE, BOB, CAROL)
        await store.commit(
            PutMember(GROUP_ID, Member(BOB, "mailbox", "invited")),
            ChangeEdges(GROUP_ID, add=frozenset({(BOB, ALICE), (CAROL, BOB)})),
        )
        self.assertEqual(
            await store.members(GROUP_ID),
            [
                Member(ALICE, "member", "active"),
                Member(BOB, "mailbox", "invited"),
                Member(CAROL, "member", "active"),
            ],
        )
        self.assertEqual(
            await store.edges(GROUP_ID), frozenset({edge(ALICE, BOB), edge(BOB, CAROL)})
        )
        await _refused(
            store.commit(
                ChangeEdges(GROUP_ID, remove=frozenset({(ALICE, BOB)})),
                ChangeEdges(GROUP_ID, add=frozenset({(ALICE, DAVE)})),
            ),
            NotStored,
        )
        await store.commit(
            ChangeEdges(
                GROUP_ID, add=frozenset({(ALICE, CAROL)}), remove=frozenset({(ALICE, BOB)})
            )
        )
        self.assertEqual(
            await store.edges(GROUP_ID), frozenset({edge(ALICE, CAROL), edge(BOB, CAROL)})
        )

    @_deferred
    async def test_neighbours(self) -> None:
        """
        A member's own neighbours are replaced as a whole.
        """
        store = await self._store()
        await store.commit(AddGroup(joined_group()))
        await store.commit(SetNeighbours(GROUP_ID, frozenset({ALICE, BOB})))
        await store.commit(SetNeighbours(GROUP_ID, frozenset({BOB, CAROL})))
        self.assertEqual(await store.neighbours(GROUP_ID), frozenset({BOB, CAROL}))

    @_deferred
    async def test_mailboxes(self) -> None:
        """
        A member's list of its group's mailboxes is replaced as a whole,
        and goes with its group.
        """
        store = await self._store()
        await store.commit(AddGroup(joined_group()))
        self.assertEqual(await store.mailboxes(GROUP_ID), frozenset())
        await store.commit(SetMailboxes(GROUP_ID, frozenset({ALICE, BOB})))
        await store.commit(SetMailboxes(GROUP_ID, frozenset({CAROL})))
        self.assertEqual(await store.mailboxes(GROUP_ID), frozenset({CAROL}))
        await store.commit(DeleteGroup(GROUP_ID))
        self.assertEqual(await store.mailboxes(GROUP_ID), frozenset())
        await _refused(store.commit(SetMailboxes(GROUP_ID, frozenset())), NotStored)

    async def _served(
        self, store: IStore, group_id: bytes = GROUP_ID, owner: PeerID = OWNER
    ) -> None:
        await store.commit(
            AddGroup(served_group(group_id, owner)),
            AddEpoch(mailbox_epoch_keys(group_id)),
            SetMailboxTerms(group_id, MailboxTerms(3600.0, (0, 2))),
        )

    async def _hold(
        self,
        store: IStore,
        index: int,
        fragments: int,
        expires: float,
        group_id: bytes = GROUP_ID,
        owner: PeerID = OWNER,
    ) -> None:
        await store.commit(
            StartMessage(group_id, 0, index, b"manifest %d" % index, owner, expires=expires)
        )
        for number in range(fragments):
            await store.commit(
                AddFragment(group_id, 0, index, number, b"%d/%d" % (index, number), owner)
            )
        await store.commit(HoldMessage(group_id, 0, index))

    @_deferred
    async def test_mailbox_terms(self) -> None:
        """
        A mailbox's terms of a group are read back as set, and replaced;
        a group not served as a mailbox has none.
        """
        store = await self._store()
        await _refused(store.mailbox_terms(GROUP_ID), NotStored)
        await self._served(store)
        self.assertEqual(await store.mailbox_terms(GROUP_ID), MailboxTerms(3600.0, (0, 2)))
        await store.commit(SetMailboxTerms(GROUP_ID, MailboxTerms(60.0, (1, 0))))
        self.assertEqual(await store.mailbox_terms(GROUP_ID), MailboxTerms(60.0, (1, 0)))
        await store.commit(AddGroup(joined_group(OTHER_GROUP_ID)))
        await _refused(store.mailbox_terms(OTHER_GROUP_ID), NotStored)

    @_deferred
    async def test_hold_message(self) -> None:
        """
        A mailbox holds a whole message as complete with its fragments and
        expiry kept, and it no longer counts as a partial message of its
        sender; the catch-up reads list held and arriving messages with
        the fragments held, the newest, and one fragment at a time.
        """
        limits = StoreLimits(partial_messages_per_peer=1)
        store = await self._store(limits)
        await self._served(store)
        await self._hold(store, 2, 3, expires=5000.0)
        message = await store.message(GROUP_ID, 0, 2)
        self.assertEqual(
            (message.state, message.content, message.from_peer, message.expires),
            ("complete", None, None, 5000.0),
        )
        self.assertEqual(await store.fragments(GROUP_ID, 0, 2), {0: b"2/0", 1: b"2/1", 2: b"2/2"})
        # The one partial message OWNER may have is free again.
        await store.commit(StartMessage(GROUP_ID, 0, 3, b"manifest 3", OWNER, expires=6000.0))
        await store.commit(AddFragment(GROUP_ID, 0, 3, 1, b"3/1", OWNER))
        self.assertEqual(
            await store.held_after(GROUP_ID, (0, 1), 10),
            [
                HeldMessage(0, 2, b"manifest 2", "complete", frozenset({0, 1, 2})),
                HeldMessage(0, 3, b"manifest 3", "partial", frozenset({1})),
            ],
        )
        self.assertEqual([m.index for m in await store.held_after(GROUP_ID, (0, 2), 10)], [3])
        self.assertEqual(len(await store.held_after(GROUP_ID, (0, 1), 1)), 1)
        self.assertEqual(
            await store.newest(GROUP_ID),
            HeldMessage(0, 3, b"manifest 3", "partial", frozenset({1})),
        )
        self.assertIsNone(await store.newest(OTHER_GROUP_ID))
        self.assertEqual(await store.fragment(GROUP_ID, 0, 2, 1), b"2/1")
        await _refused(store.fragment(GROUP_ID, 0, 3, 0), NotStored)
        await _refused(store.commit(HoldMessage(GROUP_ID, 0, 2)), NotStored)
        self.assertEqual(
            await store.mailbox_usage(),
            [
                MailboxUsage(
                    GROUP_ID,
                    OWNER,
                    2,
                    len(b"manifest 2") * 2 + 3 * 3 + 3,
                    3600.0,
                    5000.0,
                )
            ],
        )

    @_deferred
    async def test_expire_held(self) -> None:
        """
        Expiry deletes what a mailbox holds once its time is up, with its
        fragments, raises the group's floor past the last message deleted,
        and leaves what is not due, and every group we do not serve.
        """
        store = await self._store()
        await self._served(store)
        await self._served(store, OTHER_GROUP_ID)
        self.assertIsNone(await store.next_expiry())
        await self._hold(store, 2, 2, expires=100.0)
        await self._hold(store, 3, 1, expires=200.0)
        await self._hold(store, 2, 1, expires=150.0, group_id=OTHER_GROUP_ID)
        self.assertEqual(await store.next_expiry(), 100.0)
        await store.commit(ExpireHeld(150.0))
        await _refused(store.message(GROUP_ID, 0, 2), NotStored)
        await _refused(store.message(OTHER_GROUP_ID, 0, 2), NotStored)
        self.assertEqual(await store.fragments(GROUP_ID, 0, 2), {})
        self.assertEqual((await store.message(GROUP_ID, 0, 3)).expires, 200.0)
        self.assertEqual((await store.mailbox_terms(GROUP_ID)).floor, (0, 3))
        self.assertEqual((await store.mailbox_terms(OTHER_GROUP_ID)).floor, (0, 3))
        self.assertEqual(await store.next_expiry(), 200.0)
        await store.commit(ExpireHeld(1000.0))
        self.assertEqual((await store.mailbox_terms(GROUP_ID)).floor, (0, 4))
        self.assertIsNone(await store.next_expiry())
        self.assertEqual(
            [(u.messages, u.bytes, u.next_expiry) for u in await store.mailbox_usage()],
            [(0, 0, None), (0, 0, None)],
        )

    @_deferred
    async def test_mailbox_quota_per_group(self) -> None:
        """
        A mailbox holds at most its quota of one group: the manifest or
        fragment past it is refused with GroupQuotaExceeded naming the
        bound, and another group still fits; expiry frees the room.
        """
        store = await self._store(StoreLimits(mailbox_bytes_per_group=30))
        await self._served(store)
        await self._served(store, OTHER_GROUP_ID, ALICE)
        await self._hold(store, 2, 2, expires=100.0)  # 10 + 2 * 3 bytes
        await store.commit(StartMessage(GROUP_ID, 0, 3, b"manifest 3", OWNER, expires=200.0))
        error = await _refused(
            store.commit(AddFragment(GROUP_ID, 0, 3, 0, b"x" * 5, OWNER)), GroupQuotaExceeded
        )
        self.assertEqual((error.what, error.limit), ("mailbox bytes per group", 30))
        self.assertTrue(GROUP_ID.hex() in str(error))
        await _refused(
            store.commit(StartMessage(GROUP_ID, 0, 4, b"manifest 4 long", OWNER)),
            GroupQuotaExceeded,
        )
        await self._hold(store, 2, 2, expires=100.0, group_id=OTHER_GROUP_ID, owner=ALICE)
        await store.commit(ExpireHeld(100.0))
        await store.commit(AddFragment(GROUP_ID, 0, 3, 0, b"x" * 5, OWNER))

    @_deferred
    async def test_mailbox_quota_per_owner_and_total(self) -> None:
        """
        The groups of one owner together, and all groups together, hold at
        most their quotas (PeerQuotaExceeded, TotalQuotaExceeded); groups
        the store does not serve as a mailbox are not counted.
        """
        limits = StoreLimits(mailbox_bytes_per_owner=40, mailbox_bytes_total=60)
        store = await self._store(limits)
        third = bytes(range(2, 34))
        await self._served(store)
        await self._served(store, OTHER_GROUP_ID)
        await self._served(store, third, ALICE)
        await self._hold(store, 2, 3, expires=100.0)  # 10 + 9 bytes
        await self._hold(store, 2, 3, expires=100.0, group_id=OTHER_GROUP_ID)
        error = await _refused(
            store.commit(StartMessage(GROUP_ID, 0, 3, b"manifest 3", OWNER)), PeerQuotaExceeded
        )
        self.assertEqual((error.what, error.limit), ("mailbox bytes per owner", 40))
        await self._hold(store, 2, 1, expires=100.0, group_id=third, owner=ALICE)
        total = await _refused(
            store.commit(StartMessage(third, 0, 3, b"manifest 3", ALICE)), TotalQuotaExceeded
        )
        self.assertEqual((total.what, total.limit), ("mailbox bytes", 60))
        await store.commit(
            AddGroup(joined_group(bytes(range(3, 35)))), AddEpoch(epoch_keys(bytes(range(3, 35))))
        )
        await store.commit(StartMessage(bytes(range(3, 35)), 0, 0, b"m" * 100, OWNER))

    @_deferred
    async def test_mailbox_groups_quota(self) -> None:
        """
        A store serves at most its bound of groups of one owner as a
        mailbox, and of all owners; groups it is a member of do not count.
        """
        limits = StoreLimits(mailbox_groups_per_owner=2, mailbox_groups_total=3)
        store = await self._store(limits)
        ids = [bytes([n]) * 32 for n in range(5)]
        await store.commit(AddGroup(served_group(ids[0])), AddGroup(served_group(ids[1])))
        error = await _refused(store.commit(AddGroup(served_group(ids[2]))), PeerQuotaExceeded)
        self.assertEqual((error.what, error.limit), ("mailbox groups", 2))
        await store.commit(AddGroup(served_group(ids[2], ALICE)), AddGroup(joined_group(ids[4])))
        await _refused(store.commit(AddGroup(served_group(ids[3], BOB))), TotalQuotaExceeded)
        await store.commit(DeleteGroup(ids[0]))
        await store.commit(AddGroup(served_group(ids[3], BOB)))

    @_deferred
    async def test_epochs(self) -> None:
        """
        Epoch keys are read back as stored, the latest epoch by default; a
        close statement and a revealed secret are added; forgetting the
        keys leaves the public key, the close statement and the revealed
        secret.
        """
        store = await self._store()
        await store.commit(AddGroup(owned_group()), AddEpoch(epoch_keys()))
        await store.commit(AddEpoch(epoch_keys(number=1)))
        self.assertEqual(await store.epoch(GROUP_ID), epoch_keys(number=1))
        self.assertEqual(await store.epoch(GROUP_ID, 0), epoch_keys())
        await _refused(store.commit(AddEpoch(epoch_keys())), AlreadyStored)
        await _refused(store.epoch(GROUP_ID, 7), NotStored)
        close = EpochClose(4, b"h" * 32)
        await store.commit(
            CloseEpoch(GROUP_ID, 0, close),
            RevealSigningSecret(GROUP_ID, 0, b"R" * 32),
            ForgetEpochKeys(GROUP_ID, 0),
        )
        forgotten = await store.epoch(GROUP_ID, 0)
        self.assertEqual(
            forgotten,
            Epoch(GROUP_ID, 0, b"P" * 32, 2000.0, close=close, revealed_secret=b"R" * 32),
        )

    @_deferred
    async def test_keep_only_signing_secret(self) -> None:
        """
        The owner's closed epoch loses its chain key but keeps its signing
        secret, to reveal one epoch later, and its access key (for the
        notifications of members still in it); its public key and close
        statement stay too.
        """
        store = await self._store()
        await store.commit(AddGroup(owned_group()), AddEpoch(epoch_keys()))
        close = EpochClose(0, b"h" * 32)
        await store.commit(CloseEpoch(GROUP_ID, 0, close), KeepOnlySigningSecret(GROUP_ID, 0))
        self.assertEqual(
            await store.epoch(GROUP_ID, 0),
            Epoch(
                GROUP_ID,
                0,
                b"P" * 32,
                2000.0,
                signing_secret=b"S" * 32,
                access_key=b"A" * 32,
                close=close,
            ),
        )
        await _refused(store.commit(KeepOnlySigningSecret(GROUP_ID, 9)), NotStored)

    @_deferred
    async def test_commit_sent(self) -> None:
        """
        Sending a message stores its manifest, content and fragments,
        moves the send chain, and makes one pending delivery per recipient;
        deliveries are marked one by one and fragments dropped at the end.
        """
        store = await self._store()
        await self._group_with_members(store, ALICE, BOB)
        await store.commit(
            CommitSent(
                GROUP_ID,
                0,
                0,
                b"manifest 0",
                [b"f0", b"f1"],
                b"hello",
                5000.0,
                ChainState(b"n" * 32, 1),
                frozenset({ALICE, BOB}),
            )
        )
        message = await store.message(GROUP_ID, 0, 0)
        self.assertEqual(
            (message.state, message.content, message.sent_at, message.manifest),
            ("complete", b"hello", 5000.0, b"manifest 0"),
        )
        self.assertEqual((await store.epoch(GROUP_ID)).chain, ChainState(b"n" * 32, 1))
        self.assertEqual(await store.manifest(GROUP_ID, 0, 0), b"manifest 0")
        await _refused(store.manifest(GROUP_ID, 0, 1), NotStored)
        self.assertEqual(await store.fragments(GROUP_ID, 0, 0), {0: b"f0", 1: b"f1"})
        await store.commit(MarkDelivered(GROUP_ID, 0, 0, ALICE))
        self.assertEqual(
            await store.deliveries(GROUP_ID, 0, 0), {ALICE: "committed", BOB: "pending"}
        )
        self.assertEqual(await store.undelivered(GROUP_ID, BOB), [(0, 0)])
        self.assertEqual(await store.undelivered(GROUP_ID, ALICE), [])
        await _refused(store.commit(MarkDelivered(GROUP_ID, 0, 0, CAROL)), NotStored)
        await store.commit(DropFragments(GROUP_ID, 0, 0))
        self.assertEqual(await store.fragments(GROUP_ID, 0, 0), {})
        self.assertEqual([m.index for m in await store.history(GROUP_ID)], [0])

    @_deferred
    async def test_forget_recipient(self) -> None:
        """
        Forgetting a removed member drops its pending delivery states (not
        those it committed) and the fragments of each message no one is
        left pending for; a message another member still waits for keeps
        its fragments.
        """
        store = await self._store()
        await self._group_with_members(store, ALICE, BOB, CAROL)
        for index, recipients in enumerate([{ALICE, BOB}, {ALICE, BOB, CAROL}, {BOB}]):
            await store.commit(
                CommitSent(
                    GROUP_ID,
                    0,
                    index,
                    b"manifest %d" % index,
                    [b"f"],
                    None,
                    5000.0,
                    ChainState(b"n" * 32, index + 1),
                    frozenset(recipients),
                )
            )
        await store.commit(
            MarkDelivered(GROUP_ID, 0, 0, ALICE), MarkDelivered(GROUP_ID, 0, 2, BOB)
        )
        await store.commit(ForgetRecipient(GROUP_ID, BOB))
        self.assertEqual(await store.undelivered(GROUP_ID, BOB), [])
        self.assertEqual(await store.deliveries(GROUP_ID, 0, 0), {ALICE: "committed"})
        self.assertEqual(await store.deliveries(GROUP_ID, 0, 2), {BOB: "committed"})
        self.assertEqual(await store.fragments(GROUP_ID, 0, 0), {})
        self.assertEqual(await store.fragments(GROUP_ID, 0, 1), {0: b"f"})
        self.assertEqual(await store.undelivered(GROUP_ID, ALICE), [(0, 1)])
        await store.commit(ForgetRecipient(GROUP_ID, DAVE))

    @_deferred
    async def test_sent_message_kept_as_fragments_and_key(self) -> None:
        """
        A message sent with its key kept (not its content) keeps its
        fragments as long as it is kept: delivered to everyone, or its
        recipient forgotten, they stay; deleting the message deletes them.
        """
        store = await self._store()
        await self._group_with_members(store, ALICE, BOB)
        for index in (0, 1):
            await store.commit(
                CommitSent(
                    GROUP_ID,
                    0,
                    index,
                    b"manifest %d" % index,
                    [b"f0", b"f1"],
                    None,
                    5000.0,
                    ChainState(b"n" * 32, index + 1),
                    frozenset({ALICE, BOB}),
                    message_key=b"K" * 32,
                )
            )
        await store.commit(
            MarkDelivered(GROUP_ID, 0, 0, ALICE),
            MarkDelivered(GROUP_ID, 0, 0, BOB),
            DropFragments(GROUP_ID, 0, 0),
            ForgetRecipient(GROUP_ID, BOB),
            ForgetRecipient(GROUP_ID, ALICE),
        )
        for index in (0, 1):
            self.assertEqual(await store.fragments(GROUP_ID, 0, index), {0: b"f0", 1: b"f1"})
        message = await store.message(GROUP_ID, 0, 1)
        self.assertEqual((message.content, message.message_key), (None, b"K" * 32))
        self.assertEqual(
            [m.message_key for m in await store.history(GROUP_ID)], [b"K" * 32, b"K" * 32]
        )
        await store.commit(DropMessage(GROUP_ID, 0, 0))
        self.assertEqual(await store.fragments(GROUP_ID, 0, 0), {})

    @_deferred
    async def test_member_of(self) -> None:
        """
        The groups we own that a peer is a member of, not those it was
        removed from.
        """
        store = await self._store()
        await self._group_with_members(store, ALICE, BOB)
        await store.commit(
            AddGroup(owned_group(OTHER_GROUP_ID, created=2000.0)),
            PutMember(OTHER_GROUP_ID, Member(ALICE, "member", "invited")),
            PutMember(OTHER_GROUP_ID, Member(BOB, "member", "removed")),
        )
        self.assertEqual(sorted(await store.member_of(ALICE)), sorted([GROUP_ID, OTHER_GROUP_ID]))
        self.assertEqual(await store.member_of(BOB), [GROUP_ID])
        self.assertEqual(await store.member_of(CAROL), [])

    @_deferred
    async def test_send_index_never_reused(self) -> None:
        """
        A sender cannot commit at an index its chain has passed, nor skip
        one, nor leave its chain where it was; the store is unchanged.
        """
        store = await self._store()
        await self._group_with_members(store, ALICE)

        def sent(index: int, next_index: int) -> CommitSent:
            return CommitSent(
                GROUP_ID,
                0,
                index,
                b"m",
                [b"f"],
                None,
                1.0,
                ChainState(b"k" * 32, next_index),
                frozenset({ALICE}),
            )

        await store.commit(sent(0, 1))
        for index, next_index in [(0, 1), (2, 3), (1, 1)]:
            await _refused(store.commit(sent(index, next_index)), ChainOutOfOrder)
        self.assertEqual((await store.epoch(GROUP_ID)).chain, ChainState(b"k" * 32, 1))
        await _refused(store.message(GROUP_ID, 0, 2), NotStored)

    @_deferred
    async def test_receive(self) -> None:
        """
        A message arrives as a manifest and fragments (a fragment stored
        twice counts once); committing it keeps the content, deletes the
        fragments and replaces the receive chain, in one step.
        """
        store = await self._store()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await self._partial(store, 0)
        for number in (0, 1, 1):
            await store.commit(AddFragment(GROUP_ID, 0, 0, number, b"F%d" % number, OWNER))
        self.assertEqual(await store.fragments(GROUP_ID, 0, 0), {0: b"F0", 1: b"F1"})
        partial = await store.partial_messages(GROUP_ID)
        self.assertEqual(
            [(m.index, m.state, m.from_peer) for m in partial], [(0, "partial", OWNER)]
        )
        await _refused(self._partial(store, 0), AlreadyStored)
        await store.commit(
            CommitReceived(GROUP_ID, 0, 0, b"hi all", 7.0, ChainState(b"c" * 32, 1))
        )
        message = await store.message(GROUP_ID, 0, 0)
        self.assertEqual(
            (message.state, message.content, message.sent_at), ("complete", b"hi all", 7.0)
        )
        self.assertEqual(await store.fragments(GROUP_ID, 0, 0), {})
        self.assertEqual(await store.partial_messages(GROUP_ID), [])
        self.assertEqual((await store.epoch(GROUP_ID)).chain, ChainState(b"c" * 32, 1))
        self.assertEqual([m.content for m in await store.history(GROUP_ID)], [b"hi all"])
        await _refused(
            store.commit(AddFragment(GROUP_ID, 0, 0, 2, b"late", OWNER)),
            NotStored,
        )

    @_deferred
    async def test_receive_chain_only_forward(self) -> None:
        """
        A receive chain may skip indices but never go back; a refused
        commit leaves the message partial with its fragments.
        """
        store = await self._store()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys(next_index=3)))
        await self._partial(store, 1)
        await store.commit(AddFragment(GROUP_ID, 0, 1, 0, b"F", OWNER))
        await _refused(
            store.commit(CommitReceived(GROUP_ID, 0, 1, b"x", 1.0, ChainState(b"c" * 32, 2))),
            ChainOutOfOrder,
        )
        self.assertEqual((await store.message(GROUP_ID, 0, 1)).state, "partial")
        self.assertEqual(await store.fragments(GROUP_ID, 0, 1), {0: b"F"})
        await self._partial(store, 5)
        await _refused(
            store.commit(CommitReceived(GROUP_ID, 0, 5, b"x", 1.0, ChainState(b"c" * 32, 5))),
            ChainOutOfOrder,
        )
        await store.commit(CommitReceived(GROUP_ID, 0, 5, b"x", 1.0, ChainState(b"c" * 32, 6)))
        self.assertEqual((await store.epoch(GROUP_ID)).chain, ChainState(b"c" * 32, 6))

    @_deferred
    async def test_history_order(self) -> None:
        """
        History lists complete messages by epoch then index, after a given
        point, up to a limit; partial messages are not in it.
        """
        store = await self._store()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await store.commit(AddEpoch(epoch_keys(number=1)))
        for epoch, index in [(1, 0), (0, 1), (0, 0), (1, 1)]:
            await store.commit(StartMessage(GROUP_ID, epoch, index, b"m", OWNER))
        for epoch, index in [(0, 0), (0, 1), (1, 0)]:
            await store.commit(
                CommitReceived(
                    GROUP_ID,
                    epoch,
                    index,
                    b"%d/%d" % (epoch, index),
                    1.0,
                    ChainState(b"c" * 32, index + 1),
                )
            )
        history = await store.history(GROUP_ID)
        self.assertEqual([m.content for m in history], [b"0/0", b"0/1", b"1/0"])
        after = await store.history(GROUP_ID, after=(0, 0), limit=1)
        self.assertEqual([m.content for m in after], [b"0/1"])

    @_deferred
    async def test_drop_message(self) -> None:
        """
        Dropping a message deletes it with its fragments; dropping one not
        stored is a no-op.
        """
        store = await self._store()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await self._partial(store, 0)
        await store.commit(AddFragment(GROUP_ID, 0, 0, 0, b"F", OWNER))
        await store.commit(DropMessage(GROUP_ID, 0, 0), DropMessage(GROUP_ID, 0, 9))
        await _refused(store.message(GROUP_ID, 0, 0), NotStored)
        self.assertEqual(await store.fragments(GROUP_ID, 0, 0), {})

    @_deferred
    async def test_delete_group(self) -> None:
        """
        Deleting a group deletes everything stored for it, and nothing of
        another group.
        """
        store = await self._store()
        await self._group_with_members(store, ALICE, BOB)
        await store.commit(
            AddGroup(owned_group(OTHER_GROUP_ID)),
            AddEpoch(epoch_keys(OTHER_GROUP_ID)),
            ChangeEdges(GROUP_ID, add=frozenset({(ALICE, BOB)})),
            CommitSent(
                GROUP_ID,
                0,
                0,
                b"m",
                [b"f"],
                b"c",
                1.0,
                ChainState(b"n" * 32, 1),
                frozenset({ALICE}),
            ),
        )
        await store.commit(DeleteGroup(GROUP_ID))
        await _refused(store.group(GROUP_ID), NotStored)
        await _refused(store.epoch(GROUP_ID), NotStored)
        await _refused(store.message(GROUP_ID, 0, 0), NotStored)
        self.assertEqual(await store.members(GROUP_ID), [])
        self.assertEqual(await store.edges(GROUP_ID), frozenset())
        self.assertEqual(await store.fragments(GROUP_ID, 0, 0), {})
        self.assertEqual(await store.deliveries(GROUP_ID, 0, 0), {})
        self.assertEqual((await store.epoch(OTHER_GROUP_ID)).epoch, 0)

    @_deferred
    async def test_partial_quota_per_peer(self) -> None:
        """
        One peer cannot hold more partial messages, or more bytes of them,
        than its bound; another peer still can.
        """
        limits = StoreLimits(partial_messages_per_peer=2, partial_bytes_per_peer=100)
        store = await self._store(limits)
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await self._partial(store, 0, ALICE)
        await self._partial(store, 1, ALICE)
        error = await _refused(self._partial(store, 2, ALICE), PeerQuotaExceeded)
        self.assertEqual((error.what, error.limit), ("partial messages", 2))
        await store.commit(AddFragment(GROUP_ID, 0, 0, 0, b"x" * 70, ALICE))
        error = await _refused(
            store.commit(AddFragment(GROUP_ID, 0, 1, 0, b"x" * 20, ALICE)), PeerQuotaExceeded
        )
        self.assertEqual(error.what, "partial bytes")
        await self._partial(store, 2, BOB)
        await store.commit(CommitReceived(GROUP_ID, 0, 0, b"c", 1.0, ChainState(b"c" * 32, 1)))
        await store.commit(AddFragment(GROUP_ID, 0, 1, 0, b"x" * 20, ALICE))

    @_deferred
    async def test_partial_quota_total(self) -> None:
        """
        All peers together cannot hold more partial messages or bytes than
        the total bound.
        """
        limits = StoreLimits(partial_messages_total=2, partial_bytes_total=100)
        store = await self._store(limits)
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await self._partial(store, 0, ALICE)
        await self._partial(store, 1, BOB)
        await _refused(self._partial(store, 2, CAROL), TotalQuotaExceeded)
        await store.commit(AddFragment(GROUP_ID, 0, 0, 0, b"x" * 50, ALICE))
        await _refused(
            store.commit(AddFragment(GROUP_ID, 0, 1, 0, b"x" * 50, BOB)), TotalQuotaExceeded
        )

    @_deferred
    async def test_outbox(self) -> None:
        """
        The outbox keeps each peer's entries in order, counts attempts,
        and forgets an entry dequeued.
        """
        store = await self._store()
        for kind in ("invite", "epoch"):
            await store.commit(Enqueue(ALICE, kind, kind.encode(), 1.0))
        await store.commit(Enqueue(BOB, "remove", b"bye", 2.0))
        entries = await store.outbox(ALICE)
        self.assertEqual(
            [(e.kind, e.payload) for e in entries], [("invite", b"invite"), ("epoch", b"epoch")]
        )
        self.assertEqual(await store.outbox_peers(), frozenset({ALICE, BOB}))
        await store.commit(CountAttempt(entries[0].entry_id), CountAttempt(entries[0].entry_id))
        await store.commit(Dequeue(entries[1].entry_id))
        self.assertEqual(
            [(e.kind, e.attempts) for e in await store.outbox(ALICE)], [("invite", 2)]
        )
        await store.commit(Dequeue((await store.outbox(BOB))[0].entry_id))
        self.assertEqual(await store.outbox_peers(), frozenset({ALICE}))

    @_deferred
    async def test_outbox_whole_second(self) -> None:
        """
        An entry made at a whole second (an ``int``, as the group service's
        clock gives) reads back as it was written: a store that keeps time
        as a float must not change what the sealed payload is bound to.
        """
        store = await self._store()
        await store.commit(Enqueue(ALICE, "invitation", b"p", 1796106752, GROUP_ID))
        [entry] = await store.outbox(ALICE)
        self.assertEqual((entry.payload, entry.created), (b"p", 1796106752.0))

    @_deferred
    async def test_outbox_by_group_and_kind(self) -> None:
        """
        Entries about a group are found by peer, kind and group, in order,
        and dropped by kind for one peer and group, leaving the rest.
        """
        store = await self._store()
        await store.commit(
            Enqueue(ALICE, "catch-up", b"1", 1.0, GROUP_ID),
            Enqueue(ALICE, "neighbours", b"2", 1.0, GROUP_ID),
            Enqueue(ALICE, "catch-up", b"3", 1.0, OTHER_GROUP_ID),
            Enqueue(ALICE, "neighbours", b"4", 2.0, GROUP_ID),
            Enqueue(BOB, "neighbours", b"5", 2.0, GROUP_ID),
            Enqueue(ALICE, "ack", b"6", 2.0),
        )
        found = await store.queued(ALICE, "neighbours", GROUP_ID)
        self.assertEqual(
            [(e.payload, e.group_id) for e in found], [(b"2", GROUP_ID), (b"4", GROUP_ID)]
        )
        self.assertEqual(
            [e.payload for e in await store.queued(ALICE, "catch-up", GROUP_ID)], [b"1"]
        )
        await store.commit(DropQueued(ALICE, GROUP_ID, frozenset({"neighbours", "remove"})))
        self.assertEqual([e.payload for e in await store.outbox(ALICE)], [b"1", b"3", b"6"])
        self.assertEqual([e.payload for e in await store.outbox(BOB)], [b"5"])
        self.assertIsNone((await store.outbox(ALICE))[-1].group_id)

    @_deferred
    async def test_outbox_quotas(self) -> None:
        """
        The outbox holds at most so many entries and bytes for one peer,
        and for all peers.
        """
        limits = StoreLimits(
            outbox_entries_per_peer=2,
            outbox_entries_total=3,
            outbox_bytes_per_peer=10,
            outbox_bytes_total=100,
        )
        store = await self._store(limits)
        await store.commit(Enqueue(ALICE, "k", b"x", 1.0), Enqueue(ALICE, "k", b"x", 1.0))
        error = await _refused(store.commit(Enqueue(ALICE, "k", b"x", 1.0)), PeerQuotaExceeded)
        self.assertEqual(error.what, "outbox entries")
        await _refused(store.commit(Enqueue(BOB, "k", b"x" * 11, 1.0)), PeerQuotaExceeded)
        await store.commit(Enqueue(BOB, "k", b"x", 1.0))
        await _refused(store.commit(Enqueue(CAROL, "k", b"x", 1.0)), TotalQuotaExceeded)

    @_deferred
    async def test_invitations(self) -> None:
        """
        Pending invitations are kept oldest first, a second one for the
        same group from the same peer replaces the first, and each is
        dropped once answered.
        """
        store = await self._store()
        await store.commit(
            AddInvitation(Invitation(ALICE, GROUP_ID, b"first", 1.0)),
            AddInvitation(Invitation(BOB, GROUP_ID, b"bob's", 2.0)),
        )
        await store.commit(AddInvitation(Invitation(ALICE, GROUP_ID, b"again", 3.0)))
        self.assertEqual(
            await store.invitations(),
            [Invitation(BOB, GROUP_ID, b"bob's", 2.0), Invitation(ALICE, GROUP_ID, b"again", 3.0)],
        )
        await store.commit(DropInvitation(BOB, GROUP_ID))
        self.assertEqual([i.from_peer for i in await store.invitations()], [ALICE])

    @_deferred
    async def test_invitation_quotas(self) -> None:
        """
        One peer can leave at most so many pending invitations, all peers
        so many in total, and none bigger than the size bound.
        """
        limits = StoreLimits(invitations_per_peer=2, invitations_total=3, invitation_bytes=10)
        store = await self._store(limits)

        def invitation(sender: PeerID, n: int, size: int = 1) -> AddInvitation:
            return AddInvitation(Invitation(sender, bytes([n]) * 32, b"x" * size, 1.0))

        await store.commit(invitation(ALICE, 1), invitation(ALICE, 2))
        await _refused(store.commit(invitation(ALICE, 3)), PeerQuotaExceeded)
        await store.commit(invitation(ALICE, 2))
        await _refused(store.commit(invitation(BOB, 1, size=11)), PeerQuotaExceeded)
        await store.commit(invitation(BOB, 1))
        await _refused(store.commit(invitation(CAROL, 1)), TotalQuotaExceeded)

    @_deferred
    async def test_block(self) -> None:
        """
        Blocking a peer drops its pending invitations and partial messages
        at once, and refuses anything more from it until it is unblocked.
        """
        store = await self._store()
        await store.commit(AddGroup(joined_group()), AddEpoch(epoch_keys()))
        await self._partial(store, 0, ALICE)
        await self._partial(store, 1, BOB)
        await store.commit(AddInvitation(Invitation(ALICE, GROUP_ID, b"x", 1.0)))
        await store.commit(Block(ALICE, 5.0))
        self.assertEqual(await store.blocked(), frozenset({ALICE}))
        self.assertEqual(await store.invitations(), [])
        self.assertEqual([m.index for m in await store.partial_messages(GROUP_ID)], [1])
        await _refused(self._partial(store, 2, ALICE), PeerBlocked)
        await _refused(store.commit(AddFragment(GROUP_ID, 0, 1, 0, b"F", ALICE)), PeerBlocked)
        await _refused(
            store.commit(AddInvitation(Invitation(ALICE, GROUP_ID, b"x", 1.0))),
            PeerBlocked,
        )
        await store.commit(Unblock(ALICE))
        await self._partial(store, 2, ALICE)
        self.assertEqual(await store.blocked(), frozenset())

    @_deferred
    async def test_prekeys(self) -> None:
        """
        Prekey pairs are read back as stored (signed ones by expiry, then
        one-time ones by peer), a second copy is refused, a deleted one is
        gone, and signed ones expiring at or before the time given are
        deleted with the record of the items they opened.
        """
        store = await self._store()
        late = Prekey(b"L" * 32, b"l" * 32, expires=200)
        early = Prekey(b"E" * 32, b"e" * 32, expires=100)
        one_time = Prekey(b"O" * 32, b"o" * 32, audience=ALICE)
        await store.commit(AddPrekeys((one_time, late, early)))
        self.assertEqual(await store.prekeys(), [early, late, one_time])
        self.assertEqual(await store.prekey(b"O" * 32), one_time)
        await _refused(store.commit(AddPrekeys((late,))), AlreadyStored)
        await store.commit(DeletePrekey(b"O" * 32))
        await _refused(store.prekey(b"O" * 32), NotStored)
        await store.commit(RecordOpened(b"E" * 32, b"x" * 32))
        await store.commit(ExpirePrekeys(100.0))
        self.assertEqual(await store.prekeys(), [late])
        # The record went with its prekey: a new prekey with the same
        # public key (never made, but the test can) starts with none.
        await store.commit(AddPrekeys((early,)), RecordOpened(b"E" * 32, b"x" * 32))

    @_deferred
    async def test_opened_once(self) -> None:
        """
        An item sealed to a signed prekey is recorded as opened once; the
        second time is refused (a replay), and so is a record for a prekey
        not held or not signed.
        """
        store = await self._store()
        await store.commit(
            AddPrekeys(
                (Prekey(b"S" * 32, b"s" * 32, expires=100), Prekey(b"O" * 32, b"o" * 32, ALICE))
            )
        )
        await store.commit(RecordOpened(b"S" * 32, b"1" * 32))
        await _refused(store.commit(RecordOpened(b"S" * 32, b"1" * 32)), AlreadyStored)
        await store.commit(RecordOpened(b"S" * 32, b"2" * 32))
        await _refused(store.commit(RecordOpened(b"O" * 32, b"1" * 32)), NotStored)
        await _refused(store.commit(RecordOpened(b"N" * 32, b"1" * 32)), NotStored)

    @_deferred
    async def test_one_time_prekeys_bounded(self) -> None:
        """
        We keep at most so many one-time prekeys for one peer and in all.
        """
        limits = StoreLimits(one_time_prekeys_per_peer=2, one_time_prekeys_total=3)
        store = await self._store(limits)

        def one_time(n: int, audience: PeerID) -> Prekey:
            return Prekey(bytes([n]) * 32, b"s" * 32, audience=audience)

        await store.commit(AddPrekeys((one_time(1, ALICE), one_time(2, ALICE))))
        await _refused(store.commit(AddPrekeys((one_time(3, ALICE),))), PeerQuotaExceeded)
        await store.commit(AddPrekeys((one_time(4, BOB),)))
        await _refused(store.commit(AddPrekeys((one_time(5, CAROL),))), TotalQuotaExceeded)
        self.assertEqual(len(await store.prekeys()), 3)

    @_deferred
    async def test_bundles(self) -> None:
        """
        A peer's bundle is kept in place of the one before, and we keep
        bundles of at most so many peers.
        """
        store = await self._store(StoreLimits(key_bundles_total=2))
        await _refused(store.bundle(ALICE), NotStored)
        await store.commit(PutBundle(StoredBundle(ALICE, 1, 100, b"first")))
        second = StoredBundle(ALICE, 2, 200, b"second", frozenset({b"1" * 32, b"2" * 32}))
        await store.commit(PutBundle(second))
        self.assertEqual(await store.bundle(ALICE), second)
        await store.commit(PutBundle(StoredBundle(BOB, 1, 100, b"bob's")))
        await _refused(
            store.commit(PutBundle(StoredBundle(CAROL, 1, 100, b"carol's"))), TotalQuotaExceeded
        )
        await store.commit(PutBundle(StoredBundle(BOB, 2, 100, b"bob's again")))
        await _refused(store.bundle(CAROL), NotStored)

    @_deferred
    async def test_sealed_items(self) -> None:
        """
        A mailbox holds items for each recipient in order, gives the oldest
        first, deletes those taken, and drops them with their group; it
        holds at most so many per recipient and in all.
        """
        store = await self._store(StoreLimits(sealed_items_per_member=2, sealed_items_total=3))
        await self._served(store)
        await _refused(store.commit(HoldSealed(OTHER_GROUP_ID, ALICE, b"x")), NotStored)
        await store.commit(HoldSealed(GROUP_ID, ALICE, b"a1"), HoldSealed(GROUP_ID, BOB, b"b1"))
        await store.commit(HoldSealed(GROUP_ID, ALICE, b"a2"))
        await _refused(store.commit(HoldSealed(GROUP_ID, ALICE, b"a3")), PeerQuotaExceeded)
        await _refused(store.commit(HoldSealed(GROUP_ID, CAROL, b"c1")), TotalQuotaExceeded)
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 10), [b"a1", b"a2"])
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 1), [b"a1"])
        await store.commit(TakeSealed(GROUP_ID, ALICE, 1))
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 10), [b"a2"])
        await store.commit(TakeSealed(GROUP_ID, ALICE, 5))
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 10), [])
        await store.commit(DeleteGroup(GROUP_ID))
        self.assertEqual(await store.sealed(GROUP_ID, BOB, 10), [])

    @_deferred
    async def test_notifications(self) -> None:
        """
        A notification box holds notifications only for the members that
        registered, in order, gives the oldest first, deletes those taken
        and forgets the refused count then; it serves at most so many
        members, holds at most so many per member and in all, and drops a
        member's with the member.
        """
        store = await self._store(
            StoreLimits(notify_members_total=3, notifications_per_member=2, notifications_total=3)
        )
        await _refused(store.commit(DepositNotification(ALICE, b"x")), NotStored)
        await _refused(store.notify_member(ALICE), NotStored)
        await store.commit(RegisterNotifyMember(ALICE, 5.0), RegisterNotifyMember(BOB, 6.0))
        await store.commit(RegisterNotifyMember(ALICE, 7.0), RegisterNotifyMember(CAROL, 8.0))
        await _refused(store.commit(RegisterNotifyMember(DAVE, 9.0)), TotalQuotaExceeded)
        await store.commit(DepositNotification(ALICE, b"a1"), DepositNotification(BOB, b"b1"))
        await store.commit(DepositNotification(ALICE, b"a2"))
        await _refused(store.commit(DepositNotification(ALICE, b"a3")), PeerQuotaExceeded)
        await _refused(store.commit(DepositNotification(CAROL, b"c1")), TotalQuotaExceeded)
        await store.commit(RefuseNotification(ALICE), RefuseNotification(DAVE))
        self.assertEqual(await store.notify_member(ALICE), NotifyMember(ALICE, 5.0, 2, 1))
        self.assertEqual(await store.notifications(ALICE, 10), [b"a1", b"a2"])
        self.assertEqual(await store.notifications(ALICE, 1), [b"a1"])
        await store.commit(TakeNotifications(ALICE, 1))
        self.assertEqual(await store.notifications(ALICE, 10), [b"a2"])
        self.assertEqual(await store.notify_member(ALICE), NotifyMember(ALICE, 5.0, 1, 0))
        await store.commit(UnregisterNotifyMember(BOB))
        self.assertEqual(await store.notifications(BOB, 10), [])
        self.assertEqual(
            sorted((m.peer.public_key, m.held) for m in await store.notify_members()),
            sorted([(ALICE.public_key, 1), (CAROL.public_key, 0)]),
        )
        await store.commit(DepositNotification(CAROL, b"c1"), DepositNotification(CAROL, b"c2"))

    @_deferred
    async def test_sealed_items_expire(self) -> None:
        """
        A sealed item held with an expiry is deleted by :class:`ExpireHeld`
        once it is up, and counts in :meth:`next_expiry`; one held without
        waits until taken.
        """
        store = await self._store()
        await self._served(store)
        await store.commit(
            HoldSealed(GROUP_ID, ALICE, b"a1", 300.0),
            HoldSealed(GROUP_ID, ALICE, b"a2", 100.0),
            HoldSealed(GROUP_ID, BOB, b"b1"),
        )
        self.assertEqual(await store.next_expiry(), 100.0)
        await store.commit(ExpireHeld(99.0))
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 10), [b"a1", b"a2"])
        await store.commit(ExpireHeld(100.0))
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 10), [b"a1"])
        self.assertEqual(await store.next_expiry(), 300.0)
        await store.commit(ExpireHeld(1000.0))
        self.assertEqual(await store.sealed(GROUP_ID, ALICE, 10), [])
        self.assertEqual(await store.sealed(GROUP_ID, BOB, 10), [b"b1"])
        self.assertIsNone(await store.next_expiry())

    @_deferred
    async def test_sealed_items_per_owner(self) -> None:
        """
        An owner leaves at most so many sealed items in all the groups it
        has a mailbox serve, whatever their recipients; another owner's
        groups are charged apart.
        """
        store = await self._store(StoreLimits(sealed_items_per_owner=2))
        await self._served(store)
        await self._served(store, OTHER_GROUP_ID)
        third = bytes(range(2, 34))
        await self._served(store, third, ALICE)
        await store.commit(
            HoldSealed(GROUP_ID, BOB, b"1"), HoldSealed(OTHER_GROUP_ID, CAROL, b"2")
        )
        error = await _refused(store.commit(HoldSealed(GROUP_ID, DAVE, b"3")), PeerQuotaExceeded)
        self.assertTrue(str(OWNER) in str(error))
        await store.commit(HoldSealed(third, BOB, b"4"), HoldSealed(third, CAROL, b"5"))
        await store.commit(TakeSealed(GROUP_ID, BOB, 1))
        await store.commit(HoldSealed(GROUP_ID, DAVE, b"3"))

    @_deferred
    async def test_settings(self) -> None:
        """
        A setting is set, replaced and deleted.
        """
        store = await self._store()
        self.assertIsNone(await store.setting("auto-accept"))
        await store.commit(SetSetting("auto-accept", "yes"))
        await store.commit(SetSetting("auto-accept", "no"))
        self.assertEqual(await store.setting("auto-accept"), "no")
        await store.commit(SetSetting("auto-accept", None))
        self.assertIsNone(await store.setting("auto-accept"))

    @_deferred
    async def test_closed(self) -> None:
        """
        A closed store refuses reads and writes with StoreClosed.
        """
        store = await self.make_store(StoreLimits())
        await store.close()
        await _refused(store.groups(), StoreClosed)
        await _refused(store.commit(SetSetting("a", "b")), StoreClosed)
