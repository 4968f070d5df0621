# -*- test-case-name: tests.test_spring -*-
# mypy: disallow-untyped-calls=False
"""
One message's transmission at one node, for the ``spring`` strategy
(``_spring.py``): the state machine of activation, announcements,
requests, serving, acknowledgements and teardown, with its timers on the
context's clock.  ``docs/multicast.rst`` describes it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import DigitalSpringError
from ..identity import PeerID
from ._context import MAX_OUT_OF_ORDER
from ._interfaces import TransmissionReport
from ._spring_wire import (
    MAX_ACKS_PER_BOX,
    SpringActivate,
    SpringBusy,
    SpringHave,
    SpringPush,
    SpringRefused,
    SpringRequest,
    decode_bitmap,
    encode_bitmap,
)

if TYPE_CHECKING:
    from ._manifest import Manifest
    from ._spring import SpringStrategy

#: How many members the owner activates itself: a message of several
#: fragments gets a share of them pushed to each of the first to connect;
#: a message of one fragment rides on the activations, and more members
#: activated at once shorten its way through the graph.
DIRECT = 32
DIRECT_SMALL = 64
#: In a group of at most this many members, the owner activates every
#: member itself with a message of one fragment, and nobody passes it on:
#: about 2 KB of its upload a member, at most 0.2 s of a 10 Mbit/s uplink,
#: less than one hop through the graph (three round trips), and every
#: member gets the message once.
ALL_DIRECT_SMALL = 128
#: How many connections a member starts itself during a transmission: its
#: neighbours (6 by default), with room for a larger ``N``.
D = 8
#: The most peers a member exchanges fragments with in one transmission
#: (those it activated and those that activated it); an activation beyond
#: them is answered, but its sender is not taken as a peer.
MAX_PEERS = 2 * D
#: The most requests a member has under way, in all and to one peer.
MAX_INFLIGHT = 8
MAX_INFLIGHT_PER_PEER = 3
#: The most requests of one peer a member serves at once; more are BUSY.
MAX_SERVING_PER_PEER = 2
#: The most transmissions of one group under way at a member: as many as
#: messages it accepts ahead of the next one to commit, so that a burst of
#: messages is taken whole.
MAX_TRANSMISSIONS = MAX_OUT_OF_ORDER
#: The most acknowledgements a member forwards for one peer, and in all,
#: in one transmission.
MAX_ACKS_PER_PEER = 16_384
MAX_ACKS = 65_536
#: Seconds: a request not answered in this time is given up.
REQUEST_TIMEOUT = 20.0
#: Seconds, at least, and round trips to the peer, after which a request
#: is overdue: the fragment is asked of another holder too.  A holder
#: answers within its queue's wait (at most MAX_WAITING fragments: 0.4 s at
#: the default budget) and a round trip.
PATIENCE = 2.0
PATIENCE_LATENCIES = 4.0
#: Seconds an activation may take, dialling included.
ACTIVATE_TIMEOUT = 40.0
#: Seconds a holder that said BUSY is not asked again.
BUSY_BACKOFF = 0.2
#: Seconds a member waits for the fragments the owner said it would push
#: before asking others for them.
HINT_GRACE = 3.0
#: Seconds the owner refuses to send a fragment again that it has just
#: sent: others will have it to give.
OWNER_REPEAT = 4.0
#: Seconds the owner keeps the fragments it is to push to the members it
#: activated for them, beyond the time its upload budget needs for the
#: whole message: after that it serves them to whoever asks (a member it
#: was pushing to may have gone, its pushes waiting on a connection that
#: times out).
PUSH_GRACE = 4.0
#: Seconds without progress after which a transmission ends at a member,
#: complete or not, freeing what it held.
STALL_TIMEOUT = 30.0
#: Seconds a member that holds everything keeps trying to activate the
#: neighbours it could not reach, for members coming online.
REPAIR_WINDOW = 20.0
#: Seconds between such attempts.
RETRY_INTERVAL = 5.0
#: Seconds a complete member stays for peers whose state it has not heard.
LINGER = 2.0
#: Seconds of quiet after which the owner ends a transmission, plus this
#: many seconds per byte of the message at the upload budget.
OWNER_QUIET = 30.0
OWNER_QUIET_FACTOR = 4.0
#: Seconds of quiet at the owner, at least, and the share of the
#: transmission's age before the quiet, after which it asks the members
#: whose acknowledgements it lacks directly; at most MAX_PROBES at a time.
PROBE_QUIET = 5.0
PROBE_AGE = 0.5
MAX_PROBES = 64
#: A latency for peers not measured yet: served after the measured ones.
UNKNOWN_LATENCY = 1.0


class _Peer:
    """
    What one member knows of a peer during a transmission.

    :ivar have: the fragments it holds, as a bitmap.
    :ivar sent: the bitmap last announced to it.
    :ivar bad: it misbehaved: nothing more is exchanged with it.
    :ivar gone: a call to it failed: not asked again until it calls.
    """

    __slots__ = (
        "acks",
        "announces",
        "asked",
        "bad",
        "busy_until",
        "complete",
        "gone",
        "have",
        "latency",
        "pushes",
        "requests",
        "sent",
        "serving",
    )

    def __init__(self, latency: float) -> None:
        self.have = 0
        self.sent = 0
        self.latency = latency
        self.complete = False
        self.bad = False
        self.gone = False
        self.busy_until = 0.0
        self.asked: dict[int, float] = {}
        self.serving = 0
        self.announces = 0
        self.requests = 0
        self.pushes = 0
        self.acks = 0

    @property
    def usable(self) -> bool:
        return not (self.bad or self.gone)


class Transmission:
    """
    One message's transmission at one node.
    """

    log = Logger()

    def __init__(
        self,
        strategy: SpringStrategy,
        manifest: Manifest,
        signed: bytes,
        parent: PeerID | None,
    ) -> None:
        self.strategy = strategy
        self.context = context = strategy.context
        self.clock = context.clock
        self.manifest = manifest
        self.signed = signed
        self.key = (manifest.epoch, manifest.index)
        self.count = len(manifest.fragment_hashes)
        self.full = (1 << self.count) - 1
        self.parent = parent
        self.owner = context.role == "owner"
        self.held = 0
        self.data: dict[int, bytes] = {}
        self.peers: dict[PeerID, _Peer] = {}
        self.hinted = 0
        self.hint_until = 0.0
        self.unreached: set[PeerID] = set()
        self.activating: set[PeerID] = set()
        self.announcing: set[PeerID] = set()
        self.acks_out: list[bytes] = []
        self.acks_seen: set[bytes] = set()
        self.acks_sending = False
        self.served_at: dict[int, float] = {}
        self.pushing: set[int] = set()
        self.push_until = 0.0
        #: At the owner: the fragments not yet given to a member it
        #: activates directly, and how many such activations are still
        #: connecting (see :meth:`share`).
        self.unassigned = 0
        self.sharing = 0
        #: At the owner: whether the members it activates pass the
        #: activation on (not once it activates every member itself).
        self.relay = True
        self.started = self.clock.seconds()
        self.last_progress = self.started
        self.completed_at: float | None = None
        self.last_retry = self.started
        self.ended = False
        self._timer: Any = None
        self._wake: float | None = None
        seed = context.local.public_key + manifest.hash
        self.random = random.Random(seed)  # noqa: S311 (an order of requests, not a secret)
        order = list(range(self.count))
        self.random.shuffle(order)
        self.order = order
        # At the owner:
        self.targets: set[PeerID] = set()
        self.acked: set[PeerID] = set()
        self.failed: set[PeerID] = set()
        self.waiters: list[tuple[frozenset[PeerID], Deferred[TransmissionReport]]] = []
        self.quiet = OWNER_QUIET + OWNER_QUIET_FACTOR * manifest.ciphertext_size / (
            strategy.budget.rate
        )
        self.probed: dict[PeerID, float] = {}
        #: The peers exchanged with: the connections with them close once
        #: the transmission ends (see ``_spring_teardown.py``).
        self.links: set[PeerID] = set()

    # --- state ------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.held == self.full

    def touch(self) -> None:
        self.last_progress = self.clock.seconds()

    def peer(self, peer: PeerID, latency: float = UNKNOWN_LATENCY) -> _Peer | None:
        """
        The peer's state, added if there is room; ``None`` when there is
        none, or the peer misbehaved.
        """
        state = self.peers.get(peer)
        if state is None:
            limit = MAX_PEERS + (len(self.targets) if self.owner else 0)
            # The owner is always taken: others filling every place (the
            # hostile ones first) must not cut a member off from it.
            full = len(self.peers) >= limit and peer != self.context.owner
            if full or peer == self.context.local:
                return None
            state = self.peers[peer] = _Peer(latency)
        elif latency != UNKNOWN_LATENCY:
            state.latency = latency
        if state.bad:
            return None
        state.gone = False
        return state

    def drop(self, peer: PeerID, why: str) -> None:
        """
        Stop exchanging with ``peer``: it misbehaved.
        """
        state = self.peers.get(peer)
        if state is not None and not state.bad:
            state.bad = True
            self.strategy.rlog(
                "spring: dropped {peer} from transmission {key}: {why}",
                peer=str(peer),
                key=self.key,
                why=why,
            )

    def bitmap(self) -> bytes:
        return encode_bitmap(self.held)

    def used(self, peer: PeerID, connection: Any) -> None:
        """
        ``connection`` with ``peer`` carried something of this
        transmission: the node's connection with ``peer`` is closed once
        the transmission ends, unless another one still exchanges with it.
        """
        if self.ended or peer in self.links:
            return
        self.links.add(peer)
        self.strategy.teardown.use(self, peer, connection)

    # --- timers -----------------------------------------------------------

    def wake(self, delay: float) -> None:
        """
        Run :meth:`tick` in ``delay`` seconds at the latest.
        """
        if self.ended:
            return
        when = self.clock.seconds() + delay
        if self._timer is not None and self._wake is not None and self._wake <= when:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._wake = when
        self._timer = self.clock.callLater(delay, self.tick)

    def tick(self) -> None:
        self._timer = self._wake = None
        if self.ended:
            return
        now = self.clock.seconds()
        if self.owner:
            self.owner_tick(now)
            return
        if now - self.last_progress >= STALL_TIMEOUT:
            self.end("stalled")
            return
        if self.unreached and now - self.last_retry >= RETRY_INTERVAL:
            self.last_retry = now
            if self.completed_at is None or now - self.completed_at < REPAIR_WINDOW:
                for peer in sorted(self.unreached):
                    self.activate(peer)
        if self.finished(now):
            self.end("done")
            return
        self.pump()
        self.wake(min(RETRY_INTERVAL, LINGER))

    def finished(self, now: float) -> bool:
        """
        Whether a member's part is over: it holds everything, so do its
        peers, nothing is under way, and it no longer tries to reach
        neighbours.
        """
        if not self.complete or self.completed_at is None:
            return False
        if self.acks_out or self.acks_sending or self.activating:
            return False
        if any(p.serving for p in self.peers.values()):
            return False
        if now - self.completed_at < LINGER:
            return False
        if self.unreached and now - self.completed_at < REPAIR_WINDOW:
            return False
        return all(p.complete or not p.usable or p.have == self.full for p in self.peers.values())

    def end(self, why: str) -> None:
        """
        End the transmission here: timers cancelled, memory freed.
        """
        if self.ended:
            return
        self.ended = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.data.clear()
        self.peers.clear()
        links, self.links = self.links, set()
        if why != "stopped":
            self.strategy.teardown.release(self, links)
        self.strategy.ended(self)
        self.log.debug(
            "spring transmission {key} of {group} ended: {why}",
            key=self.key,
            group=self.context.group_id.hex()[:16],
            why=why,
        )
        if self.owner:
            waiters, self.waiters = self.waiters, []
            for watch, d in waiters:
                d.callback(TransmissionReport(watch & self.acked, watch - self.acked))

    def settle(self) -> None:
        """
        At the owner: fire what waits on members who have all acknowledged
        or could not be activated; end once every target acknowledged.
        """
        if self.targets <= self.acked:
            self.end("delivered")
            return
        done = self.acked | self.failed
        for watch, d in [w for w in self.waiters if w[0] <= done]:
            self.waiters.remove((watch, d))
            d.callback(TransmissionReport(watch & self.acked, watch - self.acked))

    # --- activation -------------------------------------------------------

    def start(self, neighbours: frozenset[PeerID], skip: set[PeerID]) -> None:
        """
        Pass the activation on to up to :data:`D` neighbours.
        """
        chosen = sorted(p for p in neighbours if p not in skip and p != self.context.local)
        self.random.shuffle(chosen)
        for peer in chosen[:D]:
            self.activate(peer)
        self.wake(RETRY_INTERVAL)

    def plan_shares(self, members: int) -> None:
        """
        At the owner: ``members`` more activations are each to get a share
        of the fragments not yet being pushed, which the owner refuses to
        others meanwhile.
        """
        pushing = sum(1 << number for number in self.pushing)
        self.unassigned |= self.full & ~pushing
        self.pushing |= set(range(self.count))
        self.sharing += members

    def share(self) -> int:
        """
        At the owner, once a direct activation's connection is up: its
        share of the fragments left, lowest numbers first.  Shares go in
        the order connections come up, so the owner starts pushing as soon
        as its first member is connected rather than waiting for the
        slowest, and the first fragments go first.
        """
        left = [n for n in range(self.count) if self.unassigned >> n & 1]
        take = left[: -(-len(left) // max(1, self.sharing))]
        hint = sum(1 << n for n in take)
        self.unassigned &= ~hint
        self.shared()
        return hint

    def shared(self) -> None:
        """
        One direct activation had its share, or could not connect: once
        none is left to have one, the fragments left are the owner's to
        serve.
        """
        self.sharing -= 1
        if self.sharing <= 0:
            self.sharing = 0
            self.pushing -= {n for n in range(self.count) if self.unassigned >> n & 1}
            self.unassigned = 0

    def activate(self, peer: PeerID, share: bool = False) -> None:
        """
        Activate ``peer``; at the owner with ``share``, with a share of the
        fragments to push to it.
        """
        if peer in self.activating or self.ended:
            if share:
                self.shared()
            return
        self.activating.add(peer)
        d = Deferred.fromCoroutine(self._activate(peer, share))
        d.addErrback(self.strategy.log_failure)

    def _holds_all(self, peer: PeerID) -> bool:
        """
        Whether ``peer`` is a member known to hold the whole message (it
        activated this node, or said so): activating it would change
        nothing.
        """
        state = self.peers.get(peer)
        return not self.owner and state is not None and state.have == self.full

    async def _activate(self, peer: PeerID, share: bool) -> None:
        sent = self.clock.seconds()
        answer = None
        hint = held = 0
        shared = False

        def arguments(connection: Any) -> dict[str, Any] | None:
            # Once connected: the owner's share goes in the order
            # connections come up.
            nonlocal hint, held, shared
            if share:
                hint, shared = self.share(), True
            self.used(peer, connection)
            # Checked again once connected: the peer may have activated
            # this node meanwhile, and a fragment may have come.
            if self._holds_all(peer):
                return None
            held = self.held
            small = self.count == 1 and 0 in self.data
            return {
                "group": self.context.group_id,
                "manifest": self.signed,
                "have": encode_bitmap(held),
                "hint": encode_bitmap(hint),
                "data": self.data[0] if small else None,
                "relay": None if self.relay else False,
            }

        try:
            if not self._holds_all(peer):
                # The activation goes right behind this node's membership
                # proof: the peer is one the owner named.
                try:
                    _, answer = await self.context.call(
                        peer, SpringActivate, arguments
                    ).addTimeout(ACTIVATE_TIMEOUT, self.clock)
                except Exception:
                    if share and not shared:
                        self.shared()
                    raise
                if answer is not None:
                    have = decode_bitmap(answer["have"], self.count)
        except Exception as e:
            self.activating.discard(peer)
            self.pushing -= {n for n in range(self.count) if hint >> n & 1}
            if not self.ended:
                self.unreached.add(peer)
                if self.owner:
                    self.failed.add(peer)
                    self.settle()
                self.log.debug(
                    "spring: could not activate {peer}: {error}", peer=str(peer), error=str(e)
                )
            return
        self.activating.discard(peer)
        self.unreached.discard(peer)
        if self.ended or answer is None:
            return
        self.touch()
        state = self.peer(peer, self.clock.seconds() - sent)
        if state is None:
            self.pushing -= {n for n in range(self.count) if hint >> n & 1}
            return
        state.have |= have
        state.sent |= held
        state.complete = bool(answer["complete"])
        if hint and self.owner:
            Deferred.fromCoroutine(self._push(peer, state, hint)).addErrback(
                self.strategy.log_failure
            )
        self.announce()
        self.pump()

    async def _push(self, peer: PeerID, state: _Peer, hint: int) -> None:
        """
        At the owner: send the fragments of ``hint`` to a member it
        activated, unasked.
        """
        pushed = 0
        for number in range(self.count):
            if not hint >> number & 1 or self.ended:
                continue
            if state.have >> number & 1:
                # It says it holds it: others ask the owner for it as usual
                # (had it lied, nobody else would ever get it).
                self.pushing.discard(number)
                continue
            data = self.data[number]
            await self.strategy.budget.reserve(len(data), state.latency, refuse=False)
            if self.ended:
                return
            try:
                connection = await self.context.connect(peer)
                self.used(peer, connection)
                await connection.callRemote(
                    SpringPush,
                    group=self.context.group_id,
                    epoch=self.key[0],
                    index=self.key[1],
                    number=number,
                    data=data,
                ).addTimeout(REQUEST_TIMEOUT, self.clock)
            except Exception as e:
                self.log.debug("spring: push to {peer} failed: {e}", peer=str(peer), e=str(e))
                self.pushing -= {n for n in range(self.count) if hint >> n & 1}
                return
            finally:
                self.served_at[number] = self.clock.seconds()
            self.pushing.discard(number)
            pushed += 1
            state.have |= 1 << number
            self.touch()
            self.context.progress(self.manifest, peer, pushed)

    # --- fragments --------------------------------------------------------

    async def accept(self, number: int, data: bytes) -> bool:
        """
        A fragment from a peer: checked against the manifest and stored
        (by the context), then announced.
        """
        new = await self.context.accept_fragment(self.manifest, number, data)
        if self.ended or self.held >> number & 1:
            return new
        self.held |= 1 << number
        self.data[number] = data
        self.touch()
        if self.complete:
            self.completed_at = self.clock.seconds()
            self.wake(LINGER)
        self.announce()
        return new

    def news(self, peer: PeerID, state: _Peer) -> bool:
        """
        Whether ``peer`` has something to learn of this node: a fragment
        it lacks that this node holds, not told yet; or, once a member
        holds everything, that it does (every other member: a member's
        part ends only once it knows its peers are complete, and would
        otherwise wait for :data:`STALL_TIMEOUT`).
        """
        if self.held & ~state.have & ~state.sent:
            return True
        return (
            self.complete
            and not self.owner
            and peer != self.context.owner
            and self.held != state.sent
        )

    def announce(self) -> None:
        """
        Tell each peer that has something to learn (:meth:`news`) what
        this node holds, one announcement under way per peer at most.
        """
        for peer, state in list(self.peers.items()):
            if not state.usable or peer in self.announcing:
                continue
            if not self.news(peer, state):
                continue
            self.announcing.add(peer)
            Deferred.fromCoroutine(self._announce(peer, state)).addErrback(
                self.strategy.log_failure
            )

    async def _announce(self, peer: PeerID, state: _Peer) -> None:
        try:
            while not self.ended and not state.bad and self.news(peer, state):
                held = self.held
                sent = self.clock.seconds()
                connection = await self.context.connect(peer)
                self.used(peer, connection)
                await connection.callRemote(
                    SpringHave,
                    group=self.context.group_id,
                    epoch=self.key[0],
                    index=self.key[1],
                    have=encode_bitmap(held),
                ).addTimeout(REQUEST_TIMEOUT, self.clock)
                state.sent = held
                state.latency = min(state.latency, self.clock.seconds() - sent)
        except Exception as e:
            self.log.debug("spring: announcement to {p} failed: {e}", p=str(peer), e=str(e))
            state.gone = True
        finally:
            self.announcing.discard(peer)

    def patience(self, state: _Peer) -> float:
        """
        Seconds after which a request to this peer is overdue: then the
        fragment is asked of another holder too, and the peer gets no new
        request until it answers.
        """
        return max(PATIENCE, PATIENCE_LATENCIES * state.latency)

    def pump(self) -> None:
        """
        Ask holders for missing fragments, rarest first, each from the
        holder with the lowest latency that is not busy, and again from
        another holder when a request is overdue (a holder that never
        answers, such as a hostile one, costs a fragment :meth:`patience`
        seconds, not :data:`REQUEST_TIMEOUT`).
        """
        if self.ended or self.complete or self.owner:
            return
        now = self.clock.seconds()
        live: set[int] = set()
        retry_at: float | None = None
        overdue_peers: set[PeerID] = set()
        for peer, state in self.peers.items():
            limit = self.patience(state)
            for number, asked in state.asked.items():
                due = asked + limit
                if now < due:
                    live.add(number)
                    retry_at = due if retry_at is None else min(retry_at, due)
                else:
                    overdue_peers.add(peer)
        slots = MAX_INFLIGHT - sum(
            1
            for peer, state in self.peers.items()
            if peer not in overdue_peers
            for _ in state.asked
        )
        waiting = self.hinted if now < self.hint_until else 0
        # A member the owner activated leaves it alone while it pushes (it
        # answers BUSY for what it has not pushed yet).
        owner = self.context.owner if now < self.hint_until else None
        usable = [
            (peer, s)
            for peer, s in self.peers.items()
            if s.usable
            and len(s.asked) < MAX_INFLIGHT_PER_PEER
            and s.busy_until <= now
            and peer not in overdue_peers
            and peer != owner
        ]
        candidates = []
        for number in self.order:
            if self.held >> number & 1 or number in live or waiting >> number & 1:
                continue
            holders = sum(1 for s in self.peers.values() if s.usable and s.have >> number & 1)
            if holders:
                candidates.append((holders, number))
        candidates.sort()
        for _, number in candidates:
            if slots <= 0:
                break
            choice = self.choose(number, usable)
            if choice is None:
                busy = [
                    s.busy_until
                    for s in self.peers.values()
                    if s.have >> number & 1 and s.usable and s.busy_until > now
                ]
                if busy:
                    retry_at = min(busy) if retry_at is None else min(retry_at, *busy)
                continue
            peer, state = choice
            slots -= 1
            self.request(peer, state, number)
            due = now + self.patience(state)
            retry_at = due if retry_at is None else min(retry_at, due)
            usable = [(p, s) for p, s in usable if len(s.asked) < MAX_INFLIGHT_PER_PEER]
        if waiting and not live:
            retry_at = self.hint_until if retry_at is None else min(retry_at, self.hint_until)
        if retry_at is not None:
            self.wake(max(0.0, retry_at - now))

    def choose(
        self, number: int, usable: list[tuple[PeerID, _Peer]]
    ) -> tuple[PeerID, _Peer] | None:
        """
        The holder to ask for fragment ``number``, among those not asked
        for it already: a member before the owner (which has sent every
        fragment once already), then the lowest latency, then the least
        loaded.
        """
        owner = self.context.owner
        best: tuple[PeerID, _Peer] | None = None
        best_key: tuple[bool, float, int] | None = None
        for peer, state in usable:
            if not state.have >> number & 1 or number in state.asked:
                continue
            key = (peer == owner, state.latency, len(state.asked))
            if best_key is None or key < best_key:
                best, best_key = (peer, state), key
        return best

    def request(self, peer: PeerID, state: _Peer, number: int) -> None:
        state.asked[number] = self.clock.seconds()
        d = Deferred.fromCoroutine(self._request(peer, state, number))
        d.addErrback(self.strategy.log_failure)

    async def _request(self, peer: PeerID, state: _Peer, number: int) -> None:
        try:
            connection = await self.context.connect(peer)
            self.used(peer, connection)
            answer = await connection.callRemote(
                SpringRequest,
                group=self.context.group_id,
                epoch=self.key[0],
                index=self.key[1],
                number=number,
            ).addTimeout(REQUEST_TIMEOUT, self.clock)
        except SpringBusy:
            state.busy_until = self.clock.seconds() + BUSY_BACKOFF
        except Exception as e:
            self.log.debug("spring: request to {p} failed: {e}", p=str(peer), e=str(e))
            state.gone = True
        else:
            try:
                await self.accept(number, answer["data"])
            except DigitalSpringError as e:
                self.drop(peer, f"sent a fragment that did not check out: {e}")
        finally:
            state.asked.pop(number, None)
        self.pump()

    # --- serving ----------------------------------------------------------

    async def serve(self, peer: PeerID, number: int) -> bytes:
        state = self.peer(peer)
        if state is None:
            raise SpringRefused("not a peer of this transmission")
        state.requests += 1
        if state.requests > 3 * self.count + 16:
            self.drop(peer, "too many requests")
            raise SpringRefused("too many requests")
        if not 0 <= number < self.count or number not in self.data:
            raise SpringRefused("a fragment this node does not hold")
        if state.serving >= MAX_SERVING_PER_PEER:
            raise SpringBusy("requests of this peer are under way")
        now = self.clock.seconds()
        if self.owner and (
            (number in self.pushing and now < self.push_until)
            or now - self.served_at.get(number, -OWNER_REPEAT) < OWNER_REPEAT
        ):
            raise SpringBusy("the owner sends this fragment to another member")
        data = self.data[number]
        state.serving += 1
        try:
            await self.strategy.budget.reserve(len(data), state.latency)
            if self.owner:
                self.served_at[number] = self.clock.seconds()
        finally:
            state.serving -= 1
        self.touch()
        state.have |= 1 << number
        return data

    def announced(self, peer: PeerID, have: bytes) -> None:
        state = self.peer(peer)
        if state is None:
            raise SpringRefused("not a peer of this transmission")
        state.announces += 1
        if state.announces > 2 * self.count + 16:
            self.drop(peer, "too many announcements")
            raise SpringRefused("too many announcements")
        state.have |= decode_bitmap(have, self.count)
        if state.have == self.full:
            state.complete = True
        self.pump()
        if self.finished(self.clock.seconds()):
            self.wake(0)

    async def pushed(self, peer: PeerID, number: int, data: bytes) -> bool:
        if peer != self.context.owner:
            raise SpringRefused("only the owner pushes fragments")
        state = self.peer(peer)
        if state is None:
            raise SpringRefused("not a peer of this transmission")
        state.pushes += 1
        if state.pushes > self.count:
            raise SpringRefused("too many pushes")
        state.have |= 1 << number if 0 <= number < self.count else 0
        return await self.accept(number, data)

    # --- acknowledgements -------------------------------------------------

    def carry(self, macs: list[bytes]) -> None:
        """
        Forward acknowledgement MACs towards the owner.
        """
        for mac in macs:
            if mac not in self.acks_seen and len(self.acks_seen) < MAX_ACKS:
                self.acks_seen.add(mac)
                self.acks_out.append(mac)
        if self.acks_out and not self.acks_sending:
            self.acks_sending = True
            Deferred.fromCoroutine(self._send_acks()).addErrback(self.strategy.log_failure)

    async def _send_acks(self) -> None:
        try:
            while self.acks_out:
                batch = self.acks_out[:MAX_ACKS_PER_BOX]
                del self.acks_out[:MAX_ACKS_PER_BOX]
                await self.strategy.send_acks(self.key, [self.parent, self.context.owner], batch)
                self.touch()
        finally:
            self.acks_sending = False
        if not self.ended and self.finished(self.clock.seconds()):
            self.wake(0)

    def forwarded(self, peer: PeerID, macs: list[bytes]) -> None:
        state = self.peers.get(peer)
        if state is None:
            state = self.peer(peer)
        if state is None or state.bad:
            raise SpringRefused("not a peer of this transmission")
        state.acks += len(macs)
        if state.acks > MAX_ACKS_PER_PEER:
            self.drop(peer, "too many acknowledgements")
            raise SpringRefused("too many acknowledgements")
        self.carry(macs)

    # --- the owner --------------------------------------------------------

    def owner_tick(self, now: float) -> None:
        if now - self.last_progress >= self.quiet:
            self.end("quiet")
            return
        Deferred.fromCoroutine(self.check_delivered()).addErrback(self.strategy.log_failure)
        self.probe(now)
        self.wake(2.0)

    def probe(self, now: float) -> None:
        """
        At the owner, once nothing has happened for a while (nobody asked
        it for a fragment, no acknowledgement came): activate directly the
        members whose acknowledgements it lacks, each at most once per such
        spell.  One that committed the message acknowledges it directly
        (its own went to a forwarder that dropped it); one that did not
        takes the owner as a peer to fetch from (its peers failed it).

        The spell grows with the transmission's age, so that a slow
        network (tor) is not taken for a silent one: in an honest run
        acknowledgements keep coming and nobody is probed.
        """
        wait = max(PROBE_QUIET, PROBE_AGE * (self.last_progress - self.started))
        if now - self.last_progress < wait:
            return
        missing = sorted(
            p
            for p in self.targets - self.acked - self.failed - self.activating
            if now - self.probed.get(p, -wait) >= wait
        )
        for peer in missing[:MAX_PROBES]:
            self.probed[peer] = now
            self.activate(peer)

    async def check_delivered(self) -> None:
        """
        At the owner: end once every target committed the message, however
        its acknowledgement came.
        """
        states = await self.context.store.deliveries(self.context.group_id, *self.key)
        if self.ended:
            return
        done = {p for p in self.targets if states.get(p, "committed") == "committed"}
        if done - self.acked:
            self.acked |= done
            self.touch()
        self.settle()
