"""
Tests for the iterative lookup, against a made-up network of answers on
``task.Clock``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.dht import Answer, Contact, Lookup, LookupResult
from digitalspring.identity import Identity


def contacts(count: int) -> list[Contact]:
    return [
        Contact(Identity.from_seed(hashlib.sha256(b"%d" % n).digest()).peer_id, (f"m:h{n}:1",))
        for n in range(count)
    ]


class FakeNetwork:
    """
    Every node knows every other and answers after ``delay`` seconds,
    except the silent ones, which never answer; the query enforces a
    per-request timeout, as the DHT's does.
    """

    def __init__(self, clock: Clock, nodes: list[Contact], delay: float = 0.05) -> None:
        self.clock = clock
        self.nodes = nodes
        self.delay = delay
        self.silent: set[Contact] = set()
        self.holding: set[Contact] = set()
        self.asked: list[Contact] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.timeout = 1.0

    def query(self, target: int) -> Any:
        def ask(contact: Contact) -> Deferred[Answer]:
            self.asked.append(contact)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            d: Deferred[Answer] = Deferred()

            def done(result: Any) -> Any:
                self.in_flight -= 1
                return result

            d.addBoth(done)
            if contact not in self.silent:
                closest = sorted(self.nodes, key=lambda c: c.node_id ^ target)[:20]
                found = "value" if contact in self.holding else None
                self.clock.callLater(self.delay, d.callback, Answer(tuple(closest), found))
            d.addTimeout(self.timeout, self.clock)
            return d

        return ask


class LookupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.nodes = contacts(100)
        self.network = FakeNetwork(self.clock, self.nodes)
        self.target = self.nodes[0].node_id ^ 1

    def run_lookup(self, seeds: list[Contact], **kw: Any) -> LookupResult:
        lookup = Lookup(
            self.target,
            seeds,
            self.network.query(self.target),
            self.clock,
            own_id=0,
            k=kw.pop("k", 20),
            alpha=kw.pop("alpha", 3),
            deadline=kw.pop("deadline", 30.0),
            **kw,
        )
        results: list[LookupResult] = []
        lookup.start().addCallback(results.append)
        for _ in range(10_000):
            if results:
                break
            self.clock.advance(0.01)
        self.assertEqual(len(results), 1)
        return results[0]

    def test_finds_closest(self) -> None:
        """
        From a few far seeds the lookup finds the k closest nodes, asking at
        most alpha at once.
        """
        far = sorted(self.nodes, key=lambda c: c.node_id ^ self.target)[-3:]
        result = self.run_lookup(far)
        expected = sorted(self.nodes, key=lambda c: c.node_id ^ self.target)[:20]
        self.assertEqual(list(result.closest), expected)
        self.assertLessEqual(self.network.most_in_flight, 3)
        self.assertEqual(result.rpcs, len(self.network.asked))
        self.assertEqual(result.hops, 2)
        self.assertFalse(result.deadline_reached)

    def test_silent_peers_do_not_stall(self) -> None:
        """
        With the closest nodes silent, each costs one request timeout in one
        slot, the lookup goes on with the others and ends well before its
        deadline with the closest nodes that answered.
        """
        ordered = sorted(self.nodes, key=lambda c: c.node_id ^ self.target)
        self.network.silent = set(ordered[:5])
        result = self.run_lookup(ordered[-3:])
        # Every answer lists the 20 closest, the silent ones among them.
        self.assertEqual(list(result.closest[:15]), ordered[5:20])
        self.assertLess(result.duration, 5.0)
        failed = [hop for hop in result.path if hop.outcome == "failed"]
        self.assertEqual(len(failed), 5)
        for hop in failed:
            self.assertLess(abs(hop.rtt - 1.0), 0.02)

    def test_slow_requests_give_up_their_place(self) -> None:
        """
        A request unanswered after ``slow_after`` seconds no longer holds
        one of the ``alpha`` places: with the first three asked silent (a
        request timeout of 5 s), the lookup finds the value from the
        others after the slow time, not the timeout, and never has more
        than ``alpha`` requests in flight that are not slow.
        """
        ordered = sorted(self.nodes, key=lambda c: c.node_id ^ self.target)
        self.network.timeout = 5.0
        seeds = ordered[40:43]
        self.network.silent = set(seeds)
        self.network.holding = set(ordered[:20])
        result = self.run_lookup([*seeds, *ordered[60:63]], find_value=True, slow_after=1.0)
        self.assertEqual(result.found, "value")
        self.assertLess(result.duration, 1.5)
        self.assertGreaterEqual(result.duration, 1.0)
        self.assertLessEqual(self.network.most_in_flight, 6)

    def test_deadline(self) -> None:
        """
        A lookup whose every peer is slow ends at its deadline with what it
        has, and cancels what is still in flight.
        """
        self.network.timeout = 100.0
        self.network.silent = set(self.nodes)
        result = self.run_lookup(self.nodes[:5], deadline=2.0)
        self.assertTrue(result.deadline_reached)
        self.assertLess(abs(result.duration - 2.0), 0.02)
        self.assertEqual(result.closest, ())
        self.assertEqual(self.network.in_flight, 0)

    def test_find_value_stops_early(self) -> None:
        """
        Looking for a value, the first answer that holds it ends the lookup,
        and its hop is the lookup's.
        """
        ordered = sorted(self.nodes, key=lambda c: c.node_id ^ self.target)
        self.network.holding = set(ordered[:20])
        result = self.run_lookup(ordered[-3:], find_value=True)
        self.assertEqual(result.found, "value")
        self.assertEqual(result.hops, 2)
        self.assertLess(result.rpcs, 10)
        self.assertIn("found", [hop.outcome for hop in result.path])

    def test_no_seeds(self) -> None:
        """
        A lookup with nobody to ask ends at once, empty.
        """
        result = self.run_lookup([])
        self.assertEqual(result.closest, ())
        self.assertEqual(result.rpcs, 0)

    def test_synchronous_failures(self) -> None:
        """
        Requests that fail at once (a peer in its backoff delay) do not
        confuse the lookup: every seed is tried once and it ends.
        """
        lookup = Lookup(
            self.target,
            self.nodes[:10],
            lambda contact: fail(Exception("backing off")),
            self.clock,
            own_id=0,
        )
        results: list[LookupResult] = []
        lookup.start().addCallback(results.append)
        self.assertEqual(results[0].rpcs, 10)
        self.assertEqual(results[0].closest, ())

    def test_never_asks_itself(self) -> None:
        """
        Our own ID is never a candidate, even when others list us.
        """
        me = self.nodes[1]
        lookup = Lookup(
            self.target, self.nodes[:3], self.network.query(self.target), self.clock, me.node_id
        )
        lookup.start()
        self.clock.pump([0.1] * 100)
        self.assertNotIn(me, self.network.asked)
