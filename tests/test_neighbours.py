"""
Tests for :mod:`digitalspring.multicast._neighbours`: the neighbour graph an
owner keeps for each group.

The figures these tests pin down (measured over many random histories; see
``docs/multicast.rst``): with N = 6 a join changes 9 edges (3 taken apart,
6 made) and tells 7 members; a single leave changes 9.0 edges on average and
at most 11; rebuilding a random 6-regular graph of 1,000 members from scratch
instead changes about 6,000.  A graph of 1,000 members grown by joins, or
after 2,000 joins and leaves, has diameter 6.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterable, Mapping

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.errors import DigitalSpringError
from digitalspring.multicast import (
    DEFAULT_DEGREE,
    InvalidNeighbourGraph,
    NeighbourChange,
    NeighbourGraph,
    NeighbourGraphError,
)

#: A history: each step adds this many new members (> 0), or removes the
#: members at these positions of the sorted member list.
_step = st.one_of(
    st.integers(min_value=1, max_value=6),
    st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=8),
)


def _grow(n: int, degree: int = DEFAULT_DEGREE, seed: int = 0) -> NeighbourGraph[int]:
    """
    A graph of members ``0 .. n - 1`` that joined one by one.
    """
    rng = random.Random(seed)
    graph: NeighbourGraph[int] = NeighbourGraph(degree)
    for member in range(n):
        graph = graph.add_members([member], rng).graph
    return graph


def _adjacency(graph: NeighbourGraph[int]) -> dict[int, frozenset[int]]:
    return {member: graph.neighbours(member) for member in graph.members}


def _distances(adjacency: Mapping[int, Iterable[int]], start: int) -> dict[int, int]:
    distance = {start: 0}
    frontier = [start]
    for member in frontier:
        for other in adjacency[member]:
            if other not in distance:
                distance[other] = distance[member] + 1
                frontier.append(other)
    return distance


class _Checks(SynchronousTestCase):
    def assert_sound(self, graph: NeighbourGraph[int]) -> None:
        """
        Symmetric, no self-loops, connected, and every member has the target
        degree ``t`` but for at most one member with ``t - 1``, which only
        happens when ``members * t`` is odd.
        """
        adjacency = _adjacency(graph)
        for member, near in adjacency.items():
            self.assertNotIn(member, near)
            for other in near:
                self.assertIn(member, adjacency[other])
        if len(graph) >= 2:
            self.assertTrue(graph.is_connected())
            self.assertEqual(len(_distances(adjacency, graph.members[0])), len(graph))
        target = graph.target_degree
        degrees = sorted(len(near) for near in adjacency.values())
        short = [d for d in degrees if d < target]
        self.assertTrue(all(target - 1 <= d <= target for d in degrees), (target, degrees))
        self.assertLessEqual(len(short), (len(graph) * target) % 2, (target, degrees))

    def assert_change(self, before: NeighbourGraph[int], change: NeighbourChange[int]) -> None:
        """
        The change lists exactly the edges that differ, and tells exactly
        the remaining members whose neighbours differ.
        """
        after = change.graph
        self.assertEqual(change.added, after.edges() - before.edges())
        self.assertEqual(change.removed, before.edges() - after.edges())
        differ = {
            m
            for m in after.members
            if (before.neighbours(m) if m in before else frozenset()) != after.neighbours(m)
        }
        self.assertEqual(change.affected, differ)


class InvariantTests(_Checks):
    @settings(max_examples=300, deadline=None)
    @given(
        degree=st.integers(min_value=2, max_value=9),
        seed=st.integers(min_value=0, max_value=2**32),
        steps=st.lists(_step, min_size=1, max_size=40),
    )
    def test_any_history(self, degree: int, seed: int, steps: list[int | list[int]]) -> None:
        """
        For any sequence of joins and leaves (several at once included) and
        any N from 2 to 9, after every step the graph is symmetric, loop-free,
        connected, N-regular but for at most one member one short (only when
        the degrees cannot all be equal), has the expected members, and the
        change reports exactly the edges and members that differ.
        """
        rng = random.Random(seed)
        graph: NeighbourGraph[int] = NeighbourGraph(degree)
        expected: set[int] = set()
        next_member = 0
        for step in steps:
            if isinstance(step, int) or not graph.members:
                count = step if isinstance(step, int) else 1
                joining = range(next_member, next_member + count)
                next_member += count
                change = graph.add_members(joining, rng)
                expected.update(joining)
            else:
                leaving = {graph.members[i % len(graph)] for i in step}
                change = graph.remove_members(leaving, rng)
                expected -= leaving
            self.assert_change(graph, change)
            graph = change.graph
            self.assertEqual(set(graph.members), expected)
            self.assert_sound(graph)

    @settings(max_examples=100, deadline=None)
    @given(
        degree=st.integers(min_value=2, max_value=9),
        seed=st.integers(min_value=0, max_value=2**32),
        size=st.integers(min_value=0, max_value=60),
        churn=st.lists(st.booleans(), min_size=1, max_size=30),
    )
    def test_changes_per_step(self, degree: int, seed: int, size: int, churn: list[bool]) -> None:
        """
        One join changes at most 3N/2 edges (N/2 taken apart, N made); one
        leave changes at most N + 3 * ceil(N/2) + 4: its N edges, an edge or
        an edge split per pair of its former neighbours, and one exchange
        of ends should the leave cut the graph.
        """
        rng = random.Random(seed)
        graph = _grow(size, degree, seed)
        next_member = size
        for joins in churn:
            if joins or not graph.members:
                change = graph.add_members([next_member], rng)
                next_member += 1
                self.assertLessEqual(len(change.added) + len(change.removed), 3 * degree // 2)
            else:
                change = graph.remove_members([rng.choice(graph.members)], rng)
                bound = degree + 3 * -(-degree // 2) + 4
                self.assertLessEqual(len(change.added) + len(change.removed), bound)
            graph = change.graph


class MoveTests(_Checks):
    def test_small_groups_complete(self) -> None:
        """
        Up to N + 1 members everyone neighbours everyone, on the way up and
        on the way down.
        """
        rng = random.Random(1)
        graph: NeighbourGraph[int] = NeighbourGraph(4)
        for member in range(5):
            graph = graph.add_members([member], rng).graph
            self.assertEqual(len(graph.edges()), len(graph) * (len(graph) - 1) // 2)
        graph = graph.add_members([5, 6, 7], rng).graph
        graph = graph.remove_members([0, 1, 2], rng).graph
        self.assertEqual(len(graph.edges()), 10)

    def test_join_splits_edges(self) -> None:
        """
        In a 6-regular graph a newcomer takes 3 edges apart and connects to
        their 6 ends: 9 edge changes, and the newcomer and its 6 neighbours
        are the members to tell.
        """
        graph = _grow(100)
        change = graph.add_members([100], random.Random(2))
        self.assertEqual(len(change.removed), 3)
        self.assertEqual(len(change.added), 6)
        self.assertEqual(change.affected, change.graph.neighbours(100) | {100})
        self.assert_sound(change.graph)

    def test_leave_pairs_neighbours(self) -> None:
        """
        When a member leaves a 6-regular graph, its 6 former neighbours are
        paired up: its 6 edges go, 3 come, and only those 6 are told.
        """
        graph = _grow(100)
        near = graph.neighbours(50)
        change = graph.remove_members([50], random.Random(3))
        self.assertEqual(len(change.removed), 6)
        self.assertEqual(len(change.added), 3)
        self.assertEqual(change.affected, near)
        self.assertNotIn(50, change.graph)
        self.assert_sound(change.graph)

    def test_cut_mended(self) -> None:
        """
        Removing every neighbour of a member at once leaves it cut off; it
        is joined back, and the graph is 6-regular again.
        """
        graph = _grow(60)
        change = graph.remove_members(graph.neighbours(0), random.Random(4))
        self.assertIn(0, change.graph)
        self.assert_sound(change.graph)

    def test_cut_in_two(self) -> None:
        """
        A ring (N = 2) that loses two opposite members at once falls into
        two paths; their ends are joined across, into one ring again, with
        the 4 lost edges replaced by 2.
        """
        ring = {i: {(i - 1) % 10, (i + 1) % 10} for i in range(10)}
        graph = NeighbourGraph.from_neighbours(ring, degree=2)
        change = graph.remove_members([0, 5], random.Random(10))
        self.assert_sound(change.graph)
        self.assertEqual(len(change.removed), 4)
        self.assertEqual(len(change.added), 2)
        self.assertEqual(change.affected, {1, 4, 6, 9})
        for a, b in change.added:
            self.assertNotEqual(a < 5, b < 5)

    def test_half_leave_at_once(self) -> None:
        """
        Half of a 200-member group leaving at once costs fewer changes per
        leaver than single leaves (edges among leavers need no mending).
        """
        graph = _grow(200)
        leaving = random.Random(5).sample(graph.members, 100)
        change = graph.remove_members(leaving, random.Random(6))
        self.assert_sound(change.graph)
        self.assertLess(len(change.added) + len(change.removed), 9 * 100)

    def test_far_cheaper_than_rebuilding(self) -> None:
        """
        Rebuilding the graph from scratch for a membership change would
        change almost every edge (the baseline); a join changes 9.
        """
        graph = _grow(300)
        rebuilt = _grow(301, seed=7)
        change = graph.add_members([300], random.Random(8))
        self.assertGreater(len(rebuilt.edges() ^ graph.edges()), 100 * 9)
        self.assertEqual(len(change.added) + len(change.removed), 9)

    def test_diameter_at_1000(self) -> None:
        """
        1,000 members with N = 6: diameter 6 (measured), mean distance about
        4.2, so an activation reaches everyone online in a few hops.
        """
        graph = _grow(1000, seed=1)
        self.assert_sound(graph)
        adjacency = _adjacency(graph)
        eccentricities = [max(_distances(adjacency, m).values()) for m in graph.members]
        self.assertLessEqual(max(eccentricities), 7)
        self.assertGreaterEqual(max(eccentricities), 5)

    def test_repair(self) -> None:
        """
        A stored graph of two separate triangles, read back, is repaired
        into one connected graph with every member's share.
        """
        stored = {0: {1, 2}, 1: {0, 2}, 2: {0, 1}, 3: {4, 5}, 4: {3, 5}, 5: {3, 4}}
        graph = NeighbourGraph.from_neighbours(stored, degree=4)
        self.assertFalse(graph.is_connected())
        change = graph.repair(random.Random(9))
        self.assert_sound(change.graph)
        self.assertEqual(change.removed, frozenset())

    def test_round_trip(self) -> None:
        """
        A graph written out as neighbour lists reads back equal.
        """
        graph = _grow(40)
        self.assertEqual(NeighbourGraph.from_neighbours(_adjacency(graph)), graph)


class DeterminismTests(SynchronousTestCase):
    def test_same_seed_same_graph(self) -> None:
        """
        The same seed and the same history give the same graph.
        """
        self.assertEqual(_grow(50, seed=3), _grow(50, seed=3))
        self.assertNotEqual(_grow(50, seed=3), _grow(50, seed=4))

    def test_hash_order_irrelevant(self) -> None:
        """
        With string members, whose hashes change from process to process,
        two processes with different hash seeds make the same graph.
        """
        script = (
            "import random\n"
            "from digitalspring.multicast import NeighbourGraph\n"
            "rng = random.Random(11)\n"
            "g = NeighbourGraph().add_members([f'm{i}' for i in range(40)], rng).graph\n"
            "g = g.remove_members(['m3', 'm17', 'm30'], rng).graph\n"
            "print(sorted(g.edges()))\n"
        )
        outputs = [
            subprocess.run(
                [sys.executable, "-c", script],
                capture_output=True,
                text=True,
                check=True,
                env={"PYTHONHASHSEED": seed},
            ).stdout
            for seed in ("1", "2")
        ]
        self.assertEqual(outputs[0], outputs[1])
        self.assertIn("'m0'", outputs[0])


class ErrorTests(SynchronousTestCase):
    def test_misuse(self) -> None:
        """
        Adding a member twice, removing a stranger, asking for a stranger's
        neighbours, or fewer than 2 neighbours per member, are errors.
        """
        graph = _grow(5)
        self.assertRaises(NeighbourGraphError, graph.add_members, [3])
        self.assertRaises(NeighbourGraphError, graph.remove_members, [9])
        self.assertRaises(NeighbourGraphError, graph.neighbours, 9)
        self.assertRaises(NeighbourGraphError, NeighbourGraph, 1)
        self.assertTrue(issubclass(NeighbourGraphError, DigitalSpringError))

    def test_invalid_stored(self) -> None:
        """
        Stored neighbour lists with a one-sided edge, a self-loop or a
        non-member are refused.
        """
        for stored in ({0: {1}, 1: set()}, {0: {0}}, {0: {7}}):
            self.assertRaises(InvalidNeighbourGraph, NeighbourGraph.from_neighbours, stored)
