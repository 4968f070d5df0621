# -*- test-case-name: tests.test_catchup -*-
# mypy: disallow-untyped-calls=False
"""
Catch-up (issue 12; ``docs/offline.rst``): a member back from an absence
asks the group's mailboxes, its neighbours and the owner (its *sources*)
for the manifests after the last message it committed, and fetches the
fragments it lacks from the sources that hold them, rarest first, each
checked against its manifest as every fragment is
(:meth:`IStrategyContext.accept_fragment`); the member commits them in
order as always.  It goes on, MAX_SINCE messages at a time, until no source
has more.  The group's strategy gets each fragment from the holder chosen
when it provides :class:`ICatchUpFetcher`; otherwise ``group-fragment``
does.

Nothing a source says is taken on its word: a manifest counts only once it
verifies (the owner's signature, its place in the chain), a fragment only
once its hash matches.  A source that sends anything that does not check
out, or a message it was not asked for (a replay), is *misbehaving*: the
run takes nothing more from it.  One that says it holds a fragment and
does not give it has *held back*; one whose answer skips a message has a
*gap*.  Each source also shows the newest message it holds as its signed
manifest, so the newest index of the group that any source reports is the
owner's word.  The run's *target* is the newest authenticated (epoch,
index) the member learned by any way: what sources showed, what a
notification whose MAC checked named, and a message whose verified
manifest it holds (a transmission that did not end).  Whatever lies
between the last message committed and the target and was not fetched is
*missing*, and a source whose newest was short of the target is *behind*
(it lacks the newest messages, or hides them: the member cannot tell).
The run's :class:`CatchUpReport` names them all: a source can deny
service, but cannot make the member accept anything false or miss anything
silently.  A run that ends short of its target is run again later
(:class:`CatchUpSide`), when a peer of the group connects or on a timer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import define, frozen
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import DigitalSpringError
from ..identity import PeerID
from ..storage import NotStored
from ._catchup_wire import (
    CatchUpBusy,
    CatchUpFragment,
    CatchUpSince,
    MalformedEntries,
    decode_entries,
)
from ._chain import DuplicateMessage, FarFutureIndex
from ._core import GroupError, ServiceCore, deferred
from ._interfaces import ICatchUpFetcher
from ._links import ConflictingManifest, ManifestOutOfChain
from ._manifest import FragmentRejected, Manifest, decode_manifest, verify_manifest
from ._plugins import UnknownStrategy

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.interfaces import IDelayedCall

    from ..channel import PeerConnection
    from ._context import GroupContext

#: Seconds a catch-up request may take, dialling included.
REQUEST_TIMEOUT = 20.0
#: The most fragment requests of one catch-up under way, and to one source
#: (as many as a source serves one peer at once).
MAX_INFLIGHT = 8
MAX_INFLIGHT_PER_SOURCE = 2
#: Seconds before a busy source is asked again.
BUSY_BACKOFF = 0.5
#: How many times one fragment is asked, of any holder, before it is
#: counted missing.
MAX_TRIES = 12
#: The most rounds of one catch-up (MAX_SINCE messages each): a run that
#: makes progress goes on, one that makes none ends.
MAX_ROUNDS = 1024

Key = tuple[int, int]


@frozen
class CatchUpReport:
    """
    How one catch-up of a group ended.

    :ivar committed: how many messages it committed.
    :ivar position: the (epoch, index) of the last message committed.
    :ivar newest: the target: the newest authenticated (epoch, index) it
        learned (a source showed it under the owner's signature, a
        notification named it under the group's access key, or this member
        holds its verified manifest); ``None`` when it learned none.
    :ivar missing: the messages up to ``newest`` it did not get.
    :ivar held_back: sources that said they hold a fragment and did not
        give it.
    :ivar gaps: sources whose answers skipped a message.
    :ivar misbehaved: sources that sent something false or unasked.
    :ivar unreachable: sources it could not reach (or that did not prove
        membership).
    :ivar needs_keys: the first epoch sources hold messages of that this
        member has no keys for yet (the owner gives them), or ``None``.
    :ivar behind: sources that answered and showed a newest message short
        of ``newest`` (or none): they lack what is missing, or hold it
        back; a source that hides the newest messages, alone, is named
        here.
    """

    group_id: bytes
    committed: int
    position: Key
    newest: Key | None
    missing: tuple[Key, ...]
    held_back: frozenset[PeerID]
    gaps: frozenset[PeerID]
    misbehaved: frozenset[PeerID]
    unreachable: frozenset[PeerID]
    needs_keys: int | None
    behind: frozenset[PeerID] = frozenset()

    @property
    def caught_up(self) -> bool:
        """
        Whether nothing is known to be missing.
        """
        return not self.missing and self.needs_keys is None

    def as_json(self) -> dict[str, Any]:
        """
        The report for the control API.
        """

        def peers(found: frozenset[PeerID]) -> list[str]:
            return sorted(str(p) for p in found)

        return {
            "group": self.group_id.hex(),
            "committed": self.committed,
            "position": list(self.position),
            "newest": None if self.newest is None else list(self.newest),
            "missing": [list(key) for key in self.missing],
            "held_back": peers(self.held_back),
            "gaps": peers(self.gaps),
            "misbehaved": peers(self.misbehaved),
            "unreachable": peers(self.unreachable),
            "needs_keys": self.needs_keys,
            "behind": peers(self.behind),
            "caught_up": self.caught_up,
        }


class _Offered:
    """
    A message sources offered: its verified manifest, and which fragments
    each holder said it holds.
    """

    __slots__ = ("holders", "manifest", "signed")

    def __init__(self, manifest: Manifest, signed: bytes) -> None:
        self.manifest = manifest
        self.signed = signed
        self.holders: dict[PeerID, int] = {}


class CatchUp:
    """
    One catch-up of one group at a member.

    :param sources: whom to ask, in order of preference (mailboxes, then
        neighbours, then the owner, whose upload is the group's scarcest).
    :param target: the newest authenticated (epoch, index) learned before
        the run (from a notification), if any.
    :param fetch: how one fragment is got from a holder, when the group's
        strategy does it (:class:`ICatchUpFetcher`); ``None``: with
        ``group-fragment``.
    """

    log = Logger()

    def __init__(
        self,
        context: GroupContext,
        sources: list[PeerID],
        target: Key | None = None,
        fetch: Callable[[PeerID, Manifest, int], Deferred[bytes]] | None = None,
    ) -> None:
        self.context = context
        self._fetch_one = fetch
        self.group_id = context.group_id
        self.store = context.store
        self.clock = context.clock
        self.sources = sources
        self.connections: dict[PeerID, PeerConnection] = {}
        self.unreachable: set[PeerID] = set()
        self.held_back: set[PeerID] = set()
        self.gaps: set[PeerID] = set()
        self.misbehaved: set[PeerID] = set()
        self.newest: Key | None = None
        self.target = target
        #: The newest message each source that answered showed (``None``:
        #: it showed none).
        self.shown: dict[PeerID, Key | None] = {}
        self.needs_keys: int | None = None
        self.committed: set[Key] = set()
        self._inflight: dict[PeerID, int] = {}
        self._slots = DeferredSemaphore(MAX_INFLIGHT)
        self._source_slots: dict[PeerID, DeferredSemaphore] = {}
        self._stopped = False

    def stop(self) -> None:
        """
        Stop the run: it raises ``CancelledError`` at its next step, and
        asks nothing more.
        """
        self._stopped = True

    def _go_on(self) -> None:
        if self._stopped:
            raise CancelledError()

    async def run(self) -> CatchUpReport:
        position = await self._position()
        await self._connect()
        for _ in range(MAX_ROUNDS):
            self._go_on()
            live = [p for p in self.sources if p in self.connections and p not in self.misbehaved]
            if not live:
                break
            offered = await self._ask(live, position)
            self._go_on()
            if not offered:
                break
            await self._fetch(offered)
            self._go_on()
            now = await self._position()
            if now <= position:
                break
            position = now
        await self._aim()
        newest = self.newest
        return CatchUpReport(
            self.group_id,
            len(self.committed),
            position,
            newest,
            await self._missing(position),
            frozenset(self.held_back),
            frozenset(self.gaps),
            frozenset(self.misbehaved),
            frozenset(self.unreachable),
            self.needs_keys,
            frozenset(
                peer
                for peer, shown in self.shown.items()
                if newest is not None
                and (shown is None or shown < newest)
                and peer not in self.misbehaved
            ),
        )

    async def _aim(self) -> None:
        """
        Raise :attr:`newest` to the target learned before the run, and to
        the newest message whose verified manifest this member holds.
        """
        known = [self.target] if self.target is not None else []
        known += [(m.epoch, m.index) for m in await self.store.partial_messages(self.group_id)]
        for key in known:
            if self.newest is None or key > self.newest:
                self.newest = key
        newest = self.newest
        if newest is not None and newest[0] > (await self.store.epoch(self.group_id)).epoch:
            if self.needs_keys is None or newest[0] < self.needs_keys:
                self.needs_keys = newest[0]

    def _misbehaved(self, peer: PeerID, why: str) -> None:
        if peer not in self.misbehaved:
            self.misbehaved.add(peer)
            self.log.info(
                "catch-up of group {group}: {peer} {why}; nothing more is taken from it",
                group=self.group_id.hex(),
                peer=str(peer),
                why=why,
            )

    # --- where this member is ------------------------------------------------

    async def _position(self) -> Key:
        """
        The (epoch, index) of the last message committed: the oldest epoch
        whose messages are still to come, before its next index.
        """
        latest = await self.store.epoch(self.group_id)
        chain = latest.chain
        found = (latest.epoch, -1 if chain is None else chain.next_index - 1)
        number = latest.epoch
        while number > 0:
            try:
                epoch = await self.store.epoch(self.group_id, number - 1)
            except NotStored:
                break
            if epoch.chain is None:
                break
            found = (epoch.epoch, epoch.chain.next_index - 1)
            number -= 1
        return found

    async def _missing(self, position: Key) -> tuple[Key, ...]:
        newest = self.newest
        if newest is None or newest <= position:
            return ()
        if newest[0] == position[0]:
            return tuple((newest[0], i) for i in range(position[1] + 1, newest[1] + 1))
        missing: list[Key] = []
        epoch = await self.store.epoch(self.group_id, position[0])
        if epoch.close is not None:
            last = epoch.close.last_index
            missing += [(position[0], i) for i in range(position[1] + 1, last + 1)]
        return (*missing, *((newest[0], i) for i in range(newest[1] + 1)))

    # --- asking --------------------------------------------------------------

    async def _connect(self) -> None:
        async def connect(peer: PeerID) -> None:
            try:
                connection = await self.context.connect(peer).addTimeout(
                    REQUEST_TIMEOUT, self.clock
                )
            except Exception as e:
                self.unreachable.add(peer)
                self.log.debug("catch-up: {peer} unreachable: {e}", peer=str(peer), e=str(e))
                return
            self.connections[peer] = connection
            self._source_slots[peer] = DeferredSemaphore(MAX_INFLIGHT_PER_SOURCE)

        await DeferredList(
            [Deferred.fromCoroutine(connect(p)) for p in self.sources], consumeErrors=True
        )

    async def _since(self, peer: PeerID, position: Key) -> tuple[list[tuple[bytes, int]], bytes]:
        for attempt in range(3):
            try:
                answer = await (
                    self.connections[peer]
                    .callRemote(
                        CatchUpSince, group=self.group_id, epoch=position[0], index=position[1]
                    )
                    .addTimeout(REQUEST_TIMEOUT, self.clock)
                )
                break
            except CatchUpBusy:
                await deferLater(self.clock, BUSY_BACKOFF * (attempt + 1), lambda: None)
        else:
            raise CatchUpBusy("busy")
        return decode_entries(answer["entries"]), answer.get("newest") or b""

    async def _ask(self, live: list[PeerID], position: Key) -> dict[Key, _Offered]:
        answers = await DeferredList(
            [Deferred.fromCoroutine(self._since(p, position)) for p in live], consumeErrors=True
        )
        offered: dict[Key, _Offered] = {}
        answer: Any
        for peer, (ok, answer) in zip(live, answers, strict=True):
            if not ok:
                if answer.check(MalformedEntries):
                    self._misbehaved(peer, f"answered what it holds wrongly: {answer.value}")
                else:
                    self.connections.pop(peer, None)
                    self.unreachable.add(peer)
                continue
            entries, newest = answer
            self.shown.setdefault(peer, None)
            await self._take(peer, entries, position, offered)
            if newest and peer not in self.misbehaved:
                await self._take_newest(peer, newest)
        return offered

    async def _take(
        self,
        peer: PeerID,
        entries: list[tuple[bytes, int]],
        position: Key,
        offered: dict[Key, _Offered],
    ) -> None:
        """
        Accept what ``peer`` says it holds after ``position``: each
        manifest verified, its holders noted.
        """
        keys: list[Key] = []
        for signed, bits in entries:
            try:
                manifest = decode_manifest(signed)
            except DigitalSpringError as e:
                self._misbehaved(peer, f"sent a manifest that is not one: {e}")
                return
            key = (manifest.epoch, manifest.index)
            if manifest.group_id != self.group_id or key <= position:
                self._misbehaved(peer, f"sent message {key[0]}/{key[1]}, which was not asked")
                return
            if bits >> len(manifest.fragment_hashes):
                self._misbehaved(peer, "said it holds fragments the message does not have")
                return
            known = offered.get(key)
            if known is not None and known.signed == signed:
                known.holders[peer] = bits
                keys.append(key)
                continue
            try:
                accepted = await self.context.accept_manifest(signed)
            except FarFutureIndex:
                continue
            except DuplicateMessage:
                continue
            except ConflictingManifest as e:
                self._misbehaved(peer, f"sent a manifest that is not the owner's: {e}")
                return
            except ManifestOutOfChain as e:
                if await self._has_keys(manifest.epoch):
                    self._misbehaved(peer, f"sent a manifest out of the chain: {e}")
                    return
                if self.needs_keys is None or manifest.epoch < self.needs_keys:
                    self.needs_keys = manifest.epoch
                continue
            except DigitalSpringError as e:
                self._misbehaved(peer, f"sent a manifest that is not the owner's: {e}")
                return
            if known is None:
                known = offered[key] = _Offered(accepted, signed)
            known.holders[peer] = bits
            keys.append(key)
        self._check_gaps(peer, position, sorted(keys))

    def _check_gaps(self, peer: PeerID, position: Key, keys: list[Key]) -> None:
        before = position
        for key in keys:
            if key[0] == before[0] and key[1] > before[1] + 1:
                self.gaps.add(peer)
                return
            before = key

    async def _has_keys(self, epoch: int) -> bool:
        try:
            await self.store.epoch(self.group_id, epoch)
        except NotStored:
            return False
        return True

    async def _take_newest(self, peer: PeerID, entry: bytes) -> None:
        """
        The newest message ``peer`` holds: counted only under the owner's
        signature, of an epoch whose key this member has.
        """
        try:
            [(signed, _)] = decode_entries(entry)
            manifest = decode_manifest(signed)
        except (DigitalSpringError, ValueError):
            self._misbehaved(peer, "showed a newest message that is not one")
            return
        if manifest.group_id != self.group_id:
            self._misbehaved(peer, "showed a newest message of another group")
            return
        try:
            epoch = await self.store.epoch(self.group_id, manifest.epoch)
        except NotStored:
            if self.needs_keys is None or manifest.epoch < self.needs_keys:
                latest = await self.store.epoch(self.group_id)
                if manifest.epoch > latest.epoch:
                    self.needs_keys = manifest.epoch
            return
        try:
            verify_manifest(signed, epoch.signing_public)
        except DigitalSpringError as e:
            self._misbehaved(peer, f"showed a newest message that is not the owner's: {e}")
            return
        key = (manifest.epoch, manifest.index)
        shown = self.shown.get(peer)
        if shown is None or key > shown:
            self.shown[peer] = key
        if self.newest is None or key > self.newest:
            self.newest = key

    # --- fetching ------------------------------------------------------------

    async def _fetch(self, offered: dict[Key, _Offered]) -> None:
        work: list[Deferred[bool]] = []
        for key in sorted(offered):
            message = offered[key]
            stored = await self.store.message(self.group_id, *key)
            if stored.state == "complete":
                continue
            held = await self.store.fragments(self.group_id, *key)
            for number in range(len(message.manifest.fragment_hashes)):
                if number not in held:
                    work.append(self._slots.run(self._fragment_d, message, number))
        await DeferredList(work, consumeErrors=True)
        for key in offered:
            if (await self.store.message(self.group_id, *key)).state == "complete":
                self.committed.add(key)

    def _fragment_d(self, message: _Offered, number: int) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._fragment(message, number))

    async def _held(self, manifest: Manifest, number: int) -> bool:
        key = (manifest.epoch, manifest.index)
        try:
            await self.store.fragment(self.group_id, *key, number)
        except NotStored:
            stored = await self.store.message(self.group_id, *key)
            return stored.state == "complete"
        return True

    def _ask_fragment(self, peer: PeerID, manifest: Manifest, number: int) -> Deferred[Any]:
        d: Deferred[Any]
        if self._fetch_one is not None:
            d = self._fetch_one(peer, manifest, number).addCallback(lambda data: {"data": data})
        else:
            d = self.connections[peer].callRemote(
                CatchUpFragment,
                group=self.group_id,
                epoch=manifest.epoch,
                index=manifest.index,
                number=number,
            )
        return d.addTimeout(REQUEST_TIMEOUT, self.clock)

    async def _fragment(self, message: _Offered, number: int) -> bool:
        """
        Fetch one fragment from a holder: not the owner while another has
        it, the least loaded first; another holder when one fails.
        """
        manifest = message.manifest
        tried: set[PeerID] = set()
        owner = self.context.owner
        for _ in range(MAX_TRIES):
            self._go_on()
            if await self._held(manifest, number):
                # It came meanwhile, in a transmission (the owner's, say).
                return True
            holders = [
                p
                for p, bits in message.holders.items()
                if bits >> number & 1
                and p in self.connections
                and p not in self.misbehaved
                and p not in tried
            ]
            if not holders:
                return False
            peer = min(holders, key=lambda p: (p == owner, self._inflight.get(p, 0)))
            self._inflight[peer] = self._inflight.get(peer, 0) + 1
            try:
                answer = await self._source_slots[peer].run(
                    self._ask_fragment, peer, manifest, number
                )
            except CatchUpBusy:
                await deferLater(self.clock, BUSY_BACKOFF, lambda: None)
                continue
            except Exception as e:
                self.held_back.add(peer)
                tried.add(peer)
                self.log.debug(
                    "catch-up: {peer} did not give fragment {n} of {e}/{i}: {error}",
                    peer=str(peer),
                    n=number,
                    e=manifest.epoch,
                    i=manifest.index,
                    error=str(e),
                )
                continue
            finally:
                self._inflight[peer] -= 1
            try:
                await self.context.accept_fragment(manifest, number, answer["data"])
            except FragmentRejected as e:
                self._misbehaved(peer, f"sent a fragment that does not match its manifest: {e}")
                continue
            except DigitalSpringError:
                return False
            return True
        return False


#: How many groups are caught up at once when the node starts.
PARALLEL_GROUPS = 4
#: Seconds before a catch-up that ended short of its target runs again,
#: doubling after each such run up to SHORT_RETRY_MAX; the timer gives up
#: after SHORT_RETRIES runs.  A source of the group connecting starts one
#: at once, at most one every SEEN_SPACING seconds.
SHORT_RETRY = 60.0
SHORT_RETRY_MAX = 3600.0
SHORT_RETRIES = 10
SEEN_SPACING = 10.0


@define
class _Short:
    """
    A group whose last catch-up ended short of its target: whom it asked,
    how many runs were short, and the timer of the next.
    """

    sources: frozenset[PeerID]
    runs: int = 0
    ended: float = 0.0
    timer: IDelayedCall | None = None

    def cancel(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()


class CatchUpSide(ServiceCore):
    """
    The part of the multicast service that runs catch-ups: of one group
    when asked, of every group it is a member of when the node starts.

    :ivar caught_up: the last report of each group caught up.
    :ivar caught_up_since_start: the messages every catch-up since the
        service started committed, by group.
    :ivar caught_up_at_start: the reports of the catch-up the service ran
        when it started, by group, as each group's ends; ``None`` when it
        runs none.
    :ivar at_start_finished: whether that catch-up ended for every group.

    A group's *target* is the newest authenticated (epoch, index) learned
    of it outside a catch-up (a notification, :meth:`learn_newest`), kept
    until a catch-up reaches it.  A catch-up that ends short of its target
    (messages missing) runs again: on a timer (:data:`SHORT_RETRY`,
    doubling) and when one of the group's sources connects, until it gets
    everything up to the target; each short run's report names the
    sources that were behind or held back.
    """

    _catch_ups: dict[bytes, list[Deferred[CatchUpReport]]]
    _catch_up_runs: set[Deferred[CatchUpReport]]
    _catch_up_machines: dict[bytes, CatchUp]
    caught_up: dict[bytes, CatchUpReport]
    caught_up_since_start: dict[bytes, int]
    caught_up_at_start: dict[bytes, CatchUpReport] | None
    at_start_finished: bool
    _targets: dict[bytes, Key]
    _short: dict[bytes, _Short]

    def learn_newest(self, group_id: bytes, key: Key) -> None:
        """
        ``key`` is an authenticated (epoch, index) of a group we are a
        member of (a notification's, its MAC checked): the next catch-up
        runs until it has every message up to it.
        """
        known = self._targets.get(group_id)
        if known is None or key > known:
            self._targets[group_id] = key

    def source_seen(self, peer: PeerID) -> None:
        """
        ``peer`` connected: catch up again each group whose last catch-up
        ended short of its target and asked ``peer`` (at most once every
        :data:`SEEN_SPACING` seconds a group).
        """
        now = self.clock.seconds()
        for group_id, short in list(self._short.items()):
            if (
                peer in short.sources
                and group_id not in self._catch_ups
                and now - short.ended >= SEEN_SPACING
            ):
                short.cancel()
                # On the next turn: the connection is still being made.
                short.timer = self.clock.callLater(0, self._retry_short, group_id)

    def catch_up_group(self, group_id: bytes) -> Deferred[CatchUpReport]:
        """
        Catch up a group this node is a member of, from its mailboxes, its
        neighbours and its owner; one run at a time per group (a call
        while one runs gets that run's report).

        :raises NotInGroup: when it is not in the group.
        :raises GroupError: when it is not a member (but the owner or a
            mailbox).
        """
        d: Deferred[CatchUpReport] = Deferred()
        waiting = self._catch_ups.get(group_id)
        if waiting is not None:
            waiting.append(d)
            return d
        waiting = self._catch_ups[group_id] = [d]

        run = Deferred.fromCoroutine(self._catch_up(group_id))
        self._catch_up_runs.add(run)

        def done(result: Any) -> None:
            del self._catch_ups[group_id]
            self._catch_up_runs.discard(run)
            self._catch_up_machines.pop(group_id, None)
            for each in waiting:
                if isinstance(result, Failure):
                    each.errback(result)
                else:
                    each.callback(result)

        run.addBoth(done)
        return d

    def stop_catch_ups(self) -> None:
        """
        Stop every catch-up under way (the service stops): their requests
        and timers are cancelled, and what waits on them fails with
        ``CancelledError``.
        """
        for machine in self._catch_up_machines.values():
            machine.stop()
        for run in list(self._catch_up_runs):
            run.cancel()
        for short in self._short.values():
            short.cancel()
        self._short.clear()

    async def _catch_up(self, group_id: bytes) -> CatchUpReport:
        group = await self._group(group_id)
        if group.role != "member":
            raise GroupError(
                "only a member of a group catches up; the owner and mailboxes hold it"
            )
        context = await self.context(group_id)
        mailboxes = await self.store.mailboxes(group_id)
        sources: list[PeerID] = []
        for peer in [*sorted(mailboxes), *sorted(context.neighbours()), group.owner]:
            if peer not in sources and peer != self.local:
                sources.append(peer)
        short = self._short.get(group_id)
        if short is not None:
            short.cancel()
        try:
            fetcher = ICatchUpFetcher(await self.strategy_of(group_id), None)
        except UnknownStrategy:
            # What the stores hold is fetched all the same.
            fetcher = None
        machine = self._catch_up_machines[group_id] = CatchUp(
            context,
            sources,
            self._targets.get(group_id),
            None if fetcher is None else fetcher.fetch_fragment,
        )
        report = await machine.run()
        self.caught_up[group_id] = report
        since = self.caught_up_since_start
        since[group_id] = since.get(group_id, 0) + report.committed
        self._after(report, frozenset(sources))
        # Behind only matters when something is missing: a neighbour
        # away too is behind whenever another source gave all.
        held_back = report.held_back | (report.behind if report.missing else frozenset())
        if report.committed or not report.caught_up or report.misbehaved:
            self.log.info(
                "caught up group {group}: {committed} messages, at {position}"
                "{missing}{held_back}{misbehaved}",
                group=group_id.hex(),
                committed=report.committed,
                position=f"{report.position[0]}/{report.position[1]}",
                missing=(
                    f"; {len(report.missing)} missing up to {report.newest[0]}/"
                    f"{report.newest[1]}"
                    if report.missing and report.newest is not None
                    else ""
                ),
                held_back=(
                    "; held back by " + ", ".join(sorted(str(p) for p in held_back))
                    if held_back
                    else ""
                ),
                misbehaved=(
                    "; false answers from " + ", ".join(sorted(str(p) for p in report.misbehaved))
                    if report.misbehaved
                    else ""
                ),
            )
        return report

    def _after(self, report: CatchUpReport, sources: frozenset[PeerID]) -> None:
        """
        Forget a target the run reached; run again later one that ended
        short of its target.
        """
        group_id = report.group_id
        target = self._targets.get(group_id)
        if target is not None and report.position >= target:
            del self._targets[group_id]
        if not report.missing:
            short = self._short.pop(group_id, None)
            if short is not None:
                short.cancel()
            return
        short = self._short.get(group_id)
        if short is None:
            short = self._short[group_id] = _Short(sources)
        short.sources = sources
        short.runs += 1
        short.ended = self.clock.seconds()
        short.cancel()
        if short.runs <= SHORT_RETRIES and self.running:
            delay = min(SHORT_RETRY_MAX, SHORT_RETRY * 2 ** (short.runs - 1))
            short.timer = self.clock.callLater(delay, self._retry_short, group_id)

    def _retry_short(self, group_id: bytes) -> None:
        short = self._short.get(group_id)
        if short is not None:
            short.timer = None

        def gone(failure: Failure) -> None:
            # No longer a member: nothing to catch up.
            failure.trap(GroupError)
            self._short.pop(group_id, None)
            self._targets.pop(group_id, None)

        self.catch_up_group(group_id).addErrback(gone).addErrback(self._log_failure)

    async def catch_up_at_start(self, only: set[bytes] | None) -> None:
        """
        The catch-up when the service starts (see :meth:`catch_up_all`),
        whose reports are kept apart from later ones'
        (:attr:`caught_up_at_start`): ``dspring status`` shows what was
        caught up at start whatever catch-ups came after.
        """
        record = self.caught_up_at_start = {}
        self.at_start_finished = False
        await self.catch_up_all(only, record)
        self.at_start_finished = True

    @deferred
    async def catch_up_all(
        self, only: set[bytes] | None = None, record: dict[bytes, CatchUpReport] | None = None
    ) -> list[CatchUpReport]:
        """
        Catch up every group this node is an active member of (of ``only``
        alone, when given: the groups notifications say have news),
        :data:`PARALLEL_GROUPS` at a time.

        :param record: where each group's report goes as it ends.
        :returns: their reports (a group whose catch-up failed has none).
        """
        groups = [
            g.group_id
            for g in await self.store.groups()
            if g.role == "member" and g.state == "active" and (only is None or g.group_id in only)
        ]
        slots = DeferredSemaphore(PARALLEL_GROUPS)

        def kept(report: CatchUpReport) -> CatchUpReport:
            if record is not None:
                record[report.group_id] = report
            return report

        results = await DeferredList(
            [slots.run(self.catch_up_group, group_id).addCallback(kept) for group_id in groups],
            consumeErrors=True,
        )
        reports = []
        result: Any
        for ok, result in results:
            if ok:
                reports.append(result)
            elif not result.check(CancelledError):
                self.log.failure("a catch-up failed", result)
        return reports
