# -*- test-case-name: tests.test_dht_lookup -*-
"""
The iterative lookup: Kademlia's search for the nodes closest to a key, or
for a value stored near it.

Up to ``alpha`` requests are in flight at once, always to the closest
candidates not asked yet among the ``k`` closest that have not failed.  Each
request has its own timeout, after which its candidate counts as failed and
its slot goes to the next one, so one silent peer never stalls the search;
the lookup as a whole has a deadline, at which it ends with what it has.
It ends earlier when the ``k`` closest live candidates have all answered, or
(looking for a value) as soon as one answer carries it.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable
from typing import Any

from attrs import define, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..identity import PeerID
from ._routing import Contact

NEW, ASKED, ANSWERED, FAILED = "new", "asked", "answered", "failed"

#: Seconds after which a request still unanswered stops holding one of the
#: lookup's ``alpha`` places (it may still answer): a dead contact costs
#: the lookup this long, not the whole request timeout.  As libtorrent's
#: DHT lets one more request out when one passes its short timeout.  A new
#: connection's first answer takes three round trips (up to about a second
#: here), one lost message a retransmission more.
SLOW_AFTER = 2.0


@frozen
class Answer:
    """
    What one node answered: closer contacts, and what it holds under the key
    (already verified by whoever made the answer).
    """

    contacts: tuple[Contact, ...]
    found: Any = None


@frozen
class Hop:
    """
    One request of a lookup, for the record of its path.

    :ivar hop: how far from us the contact was learned: 1 for our own
        contacts, 2 for the contacts they told us about, and so on.
    :ivar outcome: ``"answered"``, ``"found"`` (its answer held the value),
        ``"failed"``, or ``"unanswered"`` (still in flight when the lookup
        ended).
    :ivar rtt: seconds from request to answer or failure.
    """

    peer_id: PeerID
    hop: int
    outcome: str
    rtt: float


@frozen
class LookupResult:
    """
    How a lookup ended.

    :ivar closest: the closest contacts that answered, closest first (at most
        ``k``).
    :ivar found: what an answer held under the key (a lookup for nodes only
        finds ``None``).
    :ivar hops: the hop of the answer that found the value or, without one,
        the farthest hop among ``closest``.
    :ivar rpcs: how many requests it sent.
    :ivar path: every request, in the order they ended (those still in
        flight at the end last).
    :ivar duration: seconds from start to end.
    :ivar deadline_reached: whether it ended at its deadline.
    """

    target: int
    closest: tuple[Contact, ...]
    found: Any
    hops: int
    rpcs: int
    path: tuple[Hop, ...]
    duration: float
    deadline_reached: bool


@define
class _Candidate:
    contact: Contact
    hop: int
    state: str = NEW
    started: float = 0.0
    request: Deferred[Answer] | None = None
    #: Asked, and past SLOW_AFTER: no longer counted in flight.
    slow: bool = False
    slow_timer: Any = None


class Lookup:
    """
    One lookup.  :meth:`start` runs it once.

    :param target: the key or node ID searched for.
    :param seeds: where to start: our closest contacts.
    :param query: sends one request; its Deferred fires with an
        :class:`Answer` or fails (timeouts included: ``query`` enforces the
        per-request timeout).
    :param own_id: our node ID, never a candidate.
    :param find_value: whether an answer holding a value ends the lookup.
    :param slow_after: see :data:`SLOW_AFTER`.
    """

    log = Logger()

    def __init__(
        self,
        target: int,
        seeds: list[Contact],
        query: Callable[[Contact], Deferred[Answer]],
        clock: Any,
        own_id: int,
        k: int = 20,
        alpha: int = 3,
        deadline: float = 30.0,
        find_value: bool = False,
        slow_after: float = SLOW_AFTER,
    ) -> None:
        self.target = target
        self.slow_after = slow_after
        self.query = query
        self.clock = clock
        self.own_id = own_id
        self.k = k
        self.alpha = alpha
        self.deadline = deadline
        self.find_value = find_value
        #: By public key, whose hash and equality are the bytes' own (a
        #: peer ID's are Python calls, and every answer brings k contacts).
        self._candidates: dict[bytes, _Candidate] = {}
        self._order: list[tuple[int, bytes, _Candidate]] = []
        self._path: list[Hop] = []
        self._in_flight = 0
        self._slow = 0
        self._rpcs = 0
        self._found: Any = None
        self._found_hop = 0
        self._done = False
        self._stepping = False
        self._again = False
        self._start = 0.0
        self._timer: Any = None
        self.result: Deferred[LookupResult] = Deferred()
        for contact in seeds:
            self._add(contact, 1)

    def start(self) -> Deferred[LookupResult]:
        """
        Begin.

        :returns: a Deferred that fires with the :class:`LookupResult`; it
            never fails.
        """
        self._start = self.clock.seconds()
        self._timer = self.clock.callLater(self.deadline, self._deadline)
        self._step()
        return self.result

    def _add(self, contact: Contact, hop: int) -> None:
        key = contact.peer_id.public_key
        if key in self._candidates or contact.node_id == self.own_id:
            return
        candidate = _Candidate(contact, hop)
        self._candidates[key] = candidate
        # Distance, then key: the candidate itself is never compared, as
        # no two candidates share a peer ID.
        insort(self._order, (contact.node_id ^ self.target, key, candidate))

    def _window(self) -> tuple[list[_Candidate], bool]:
        """
        The ``k`` closest candidates that have not failed, and whether all
        of them answered (one pass: this runs after every answer).
        """
        window = []
        answered = True
        for _, _, candidate in self._order:
            state = candidate.state
            if state != FAILED:
                window.append(candidate)
                if state != ANSWERED:
                    answered = False
                if len(window) == self.k:
                    break
        return window, answered

    def _step(self) -> None:
        if self._stepping:
            self._again = True
            return
        self._stepping = True
        try:
            self._again = True
            while self._again and not self._done:
                self._again = False
                self._advance()
        finally:
            self._stepping = False

    def _advance(self) -> None:
        if self._found is not None:
            self._finish(False)
            return
        window, answered = self._window()
        if window and answered:
            self._finish(False)
            return
        for candidate in window:
            if self._in_flight >= self.alpha:
                break
            if candidate.state == NEW:
                self._ask(candidate)
        if self._in_flight == 0 and self._slow == 0 and not self._again:
            self._finish(False)

    def _ask(self, candidate: _Candidate) -> None:
        candidate.state = ASKED
        candidate.started = self.clock.seconds()
        self._in_flight += 1
        self._rpcs += 1
        d = self.query(candidate.contact)
        candidate.request = d
        candidate.slow_timer = self.clock.callLater(self.slow_after, self._slow_now, candidate)
        d.addCallbacks(
            self._answered, self._failed, callbackArgs=(candidate,), errbackArgs=(candidate,)
        )

    def _slow_now(self, candidate: _Candidate) -> None:
        candidate.slow_timer = None
        if self._done or candidate.state != ASKED:
            return
        candidate.slow = True
        self._in_flight -= 1
        self._slow += 1
        self._step()

    def _settle(self, candidate: _Candidate) -> None:
        """
        ``candidate``'s request ended: it leaves the count it was in.
        """
        if candidate.slow:
            self._slow -= 1
        else:
            self._in_flight -= 1
            if candidate.slow_timer is not None:
                candidate.slow_timer.cancel()
                candidate.slow_timer = None

    def _answered(self, answer: Answer, candidate: _Candidate) -> None:
        if self._done or candidate.state != ASKED:
            return
        self._settle(candidate)
        candidate.state = ANSWERED
        candidate.request = None
        found = self.find_value and answer.found is not None
        self._path.append(
            Hop(
                candidate.contact.peer_id,
                candidate.hop,
                "found" if found else "answered",
                self.clock.seconds() - candidate.started,
            )
        )
        if found and self._found is None:
            self._found = answer.found
            self._found_hop = candidate.hop
        for contact in answer.contacts[: self.k]:
            self._add(contact, candidate.hop + 1)
        self._step()

    def _failed(self, failure: Failure, candidate: _Candidate) -> None:
        if self._done or candidate.state != ASKED:
            return
        self._settle(candidate)
        candidate.state = FAILED
        candidate.request = None
        self._path.append(
            Hop(
                candidate.contact.peer_id,
                candidate.hop,
                "failed",
                self.clock.seconds() - candidate.started,
            )
        )
        self._step()

    def _deadline(self) -> None:
        self._timer = None
        self.log.debug("lookup reached its deadline of {deadline} s", deadline=self.deadline)
        self._finish(True)

    def _finish(self, deadline_reached: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        window, _ = self._window()
        closest = tuple(c.contact for c in window if c.state == ANSWERED)
        if self._found is not None:
            hops = self._found_hop
        else:
            hops = max((c.hop for c in window if c.state == ANSWERED), default=0)
        now = self.clock.seconds()
        outstanding = []
        for c in self._candidates.values():
            if c.slow_timer is not None:
                c.slow_timer.cancel()
                c.slow_timer = None
            if c.request is not None:
                outstanding.append(c.request)
                self._path.append(Hop(c.contact.peer_id, c.hop, "unanswered", now - c.started))
        result = LookupResult(
            self.target,
            closest,
            self._found,
            hops,
            self._rpcs,
            tuple(self._path),
            self.clock.seconds() - self._start,
            deadline_reached,
        )
        self.result.callback(result)
        for request in outstanding:
            request.cancel()
