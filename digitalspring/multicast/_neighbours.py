# -*- test-case-name: tests.test_neighbours -*-
"""
The neighbour graph of a multicast group, as its owner keeps it.

Every member of a group stores ``N`` neighbours (the whitepaper's idle
phase); the spring strategy starts its transmissions along these edges.  The
owner alone holds the whole graph and keeps it

- symmetric, without self-loops or duplicate edges (a graph, not a list of
  preferences);
- connected, so an activation that starts at the owner can reach everyone
  online;
- close to ``N``-regular: every member has ``t = min(N, members - 1)``
  neighbours, except that one member has ``t - 1`` when ``members * t`` is
  odd (the degrees of a graph sum to an even number);
- changed in as few edges as it can when members come and go, since every
  change is a message to a member (and, while that member is offline, an
  entry in the owner's outbox).

The standard local moves do it:

- **join**: the newcomer takes ``N / 2`` random edges ``(u, v)`` apart and
  connects to both ends (``u`` and ``v`` keep their degree): ``N / 2`` edges
  removed and ``N`` added;
- **leave**: the leaver's former neighbours, each now one short, are paired
  at random and each pair is connected (``N`` removed, ``N / 2`` added);
- **balance**: whoever is still short either gets an edge to another member
  who is short, or takes an edge ``(u, v)`` apart and connects to its ends;
- **reconnect**: when members leave together and cut the graph, each cut-off
  part is joined to the rest by an edge between two members who are short,
  or by exchanging the ends of one edge on each side (no degree changes).

Groups of at most ``N + 1`` members are complete graphs, which the same moves
produce and keep.  Rebuilding a random regular graph from scratch instead
would change about ``members * N`` edges each time; the figures measured
for these moves are in ``docs/multicast.rst``.

Pure: no I/O, no clock.  Randomness comes from the ``random.Random`` passed
in (by default the system's), and nothing depends on hash or set order, so
the same seed and the same history give the same graph in every process.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Generic, Protocol, TypeVar

from attrs import field, frozen

from ..errors import DigitalSpringError

#: The number of neighbours a member has unless the group says otherwise.
DEFAULT_DEGREE = 6

#: How many random draws look for a suitable edge before an ordered scan.
_DRAWS = 32


class _Member(Hashable, Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


M = TypeVar("M", bound=_Member)


class NeighbourGraphError(DigitalSpringError):
    """
    The group's neighbour graph cannot make that change.
    """


class InvalidNeighbourGraph(NeighbourGraphError):
    """
    The stored neighbour lists do not form a neighbour graph: an edge is
    one-sided, loops back to its member, or names someone not in the group.
    """


def _check_degree(instance: object, attribute: object, value: int) -> None:
    if value < 2:
        raise NeighbourGraphError(f"a group needs at least 2 neighbours per member, not {value}")


@frozen
class NeighbourGraph(Generic[M]):
    """
    A group's members and who neighbours whom.

    Immutable: :meth:`add_members`, :meth:`remove_members` and :meth:`repair`
    return a :class:`NeighbourChange` holding the new graph and the edges
    that changed.  ``NeighbourGraph()`` is the empty graph of a new group;
    :meth:`from_neighbours` reads stored neighbour lists.

    :ivar degree: ``N``, the number of neighbours each member should have.
    """

    degree: int = field(default=DEFAULT_DEGREE, validator=_check_degree)
    _adjacency: Mapping[M, frozenset[M]] = field(init=False, factory=dict, repr=False)
    _order: tuple[M, ...] = field(init=False, default=(), eq=False, repr=False)
    _short: frozenset[M] = field(init=False, factory=frozenset, eq=False, repr=False)

    @classmethod
    def from_neighbours(
        cls, neighbours: Mapping[M, Iterable[M]], degree: int = DEFAULT_DEGREE
    ) -> NeighbourGraph[M]:
        """
        The graph whose members are the keys of ``neighbours``, each with the
        neighbours it lists.

        The graph is taken as it is (it need not be connected or regular;
        :meth:`repair` makes it so).

        :raises InvalidNeighbourGraph: when an edge is listed by one end
            only, joins a member to itself, or names a non-member.
        """
        adjacency = {member: frozenset(listed) for member, listed in neighbours.items()}
        for member, listed in adjacency.items():
            if member in listed:
                raise InvalidNeighbourGraph(f"{member!r} is listed as its own neighbour")
            for other in listed:
                if member not in adjacency.get(other, ()):
                    raise InvalidNeighbourGraph(
                        f"{member!r} lists {other!r} as a neighbour, but not the other way round"
                    )
        target = max(0, min(degree, len(adjacency) - 1))
        short = frozenset(m for m, listed in adjacency.items() if len(listed) < target)
        return cls._build(degree, adjacency, tuple(sorted(adjacency)), short)

    @classmethod
    def _build(
        cls,
        degree: int,
        adjacency: Mapping[M, frozenset[M]],
        order: tuple[M, ...],
        short: frozenset[M],
    ) -> NeighbourGraph[M]:
        graph: NeighbourGraph[M] = cls(degree)
        object.__setattr__(graph, "_adjacency", adjacency)
        object.__setattr__(graph, "_order", order)
        object.__setattr__(graph, "_short", short)
        return graph

    @property
    def members(self) -> tuple[M, ...]:
        """
        Every member, in sorted order.
        """
        return self._order

    @property
    def target_degree(self) -> int:
        """
        How many neighbours each member should have: ``N``, or everyone else
        in a group of at most ``N + 1``.
        """
        return max(0, min(self.degree, len(self._order) - 1))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, member: object) -> bool:
        return member in self._adjacency

    def neighbours(self, member: M) -> frozenset[M]:
        """
        The neighbours of ``member``.

        :raises NeighbourGraphError: when ``member`` is not in the group.
        """
        try:
            return self._adjacency[member]
        except KeyError:
            raise NeighbourGraphError(f"{member!r} is not a member of the group") from None

    def edges(self) -> frozenset[tuple[M, M]]:
        """
        Every edge, as a pair ``(a, b)`` with ``a < b``.
        """
        return frozenset(
            (member, other)
            for member, listed in self._adjacency.items()
            for other in listed
            if member < other
        )

    def is_connected(self) -> bool:
        """
        Whether every member can reach every other along edges (true for
        fewer than two members).
        """
        return len(_components(self._adjacency.__getitem__, self._order)) <= 1

    def add_members(
        self, members: Iterable[M], rng: random.Random | None = None
    ) -> NeighbourChange[M]:
        """
        Add ``members``, one after the other, each with its neighbours.

        :param rng: the source of randomness; the system's by default.
        :returns: the new graph and the edges that changed.
        :raises NeighbourGraphError: when one of them is a member already.
        """
        joining = _unique(members)
        for member in joining:
            if member in self._adjacency:
                raise NeighbourGraphError(f"{member!r} is a member of the group already")
        work = _Work(self, rng)
        for member in joining:
            work.join(member)
        return work.change()

    def remove_members(
        self, members: Iterable[M], rng: random.Random | None = None
    ) -> NeighbourChange[M]:
        """
        Remove ``members`` together, and mend the graph around the gap.

        :param rng: the source of randomness; the system's by default.
        :returns: the new graph and the edges that changed.
        :raises NeighbourGraphError: when one of them is not a member.
        """
        leaving = _unique(members)
        for member in leaving:
            if member not in self._adjacency:
                raise NeighbourGraphError(f"{member!r} is not a member of the group")
        work = _Work(self, rng)
        cut = {other for member in leaving for other in self._adjacency[member]}
        for member in leaving:
            work.leave(member)
        if not work.reaches(cut):
            work.reconnect()
        work.balance()
        return work.change()

    def repair(self, rng: random.Random | None = None) -> NeighbourChange[M]:
        """
        Connect the graph and give every member who is short of neighbours
        its share, as after a removal (for a graph read with
        :meth:`from_neighbours`).  Members with more than ``N`` neighbours
        keep them.

        :param rng: the source of randomness; the system's by default.
        :returns: the new graph and the edges that changed.
        """
        work = _Work(self, rng)
        work.reconnect()
        work.balance()
        return work.change()


@frozen
class NeighbourChange(Generic[M]):
    """
    What one change of membership did to the neighbour graph.

    :ivar graph: the graph after the change.
    :ivar added: the new edges, each ``(a, b)`` with ``a < b``.
    :ivar removed: the edges that are gone (including those of departed
        members), each ``(a, b)`` with ``a < b``.
    """

    graph: NeighbourGraph[M]
    added: frozenset[tuple[M, M]]
    removed: frozenset[tuple[M, M]]

    @property
    def affected(self) -> frozenset[M]:
        """
        The members of the new graph whose neighbour lists changed: the
        ones the owner must tell.
        """
        return frozenset(
            member for edge in self.added | self.removed for member in edge if member in self.graph
        )


def _unique(members: Iterable[M]) -> list[M]:
    seen: set[M] = set()
    unique: list[M] = []
    for member in members:
        if member not in seen:
            seen.add(member)
            unique.append(member)
    return unique


def _components(near: Callable[[M], Iterable[M]], order: Sequence[M]) -> list[list[M]]:
    """
    The connected components, each sorted, largest first (ties: the one
    holding the smallest member first).
    """
    seen: set[M] = set()
    components: list[list[M]] = []
    for start in order:
        if start in seen:
            continue
        seen.add(start)
        component = [start]
        for member in component:
            for other in near(member):
                if other not in seen:
                    seen.add(other)
                    component.append(other)
        component.sort()
        components.append(component)
    components.sort(key=len, reverse=True)
    return components


class _Work(Generic[M]):
    """
    A graph being edited by the moves: the neighbour lists of the members
    they touch are copied on first write, so a change costs the size of the
    change, not of the group.
    """

    def __init__(self, graph: NeighbourGraph[M], rng: random.Random | None) -> None:
        self.degree = graph.degree
        self.rng = rng if rng is not None else random.SystemRandom()
        self.order = list(graph._order)
        self.target = graph.target_degree
        self.short_set = set(graph._short)
        self.edited: dict[M, set[M]] = {}
        self.gone: set[M] = set()
        self._original = graph._adjacency

    # -- the graph's state ------------------------------------------------

    def near(self, member: M) -> AbstractSet[M]:
        edited = self.edited.get(member)
        return edited if edited is not None else self._original[member]

    def deficit(self, member: M) -> int:
        return self.target - len(self.near(member))

    def short(self) -> list[M]:
        return sorted(self.short_set)

    def _edit(self, member: M) -> set[M]:
        edited = self.edited.get(member)
        if edited is None:
            edited = self.edited[member] = set(self._original.get(member, ()))
        return edited

    def _recount(self, member: M) -> None:
        if len(self.near(member)) < self.target:
            self.short_set.add(member)
        else:
            self.short_set.discard(member)

    def _retarget(self) -> None:
        target = max(0, min(self.degree, len(self.order) - 1))
        if target != self.target:
            # Only while the group has at most N + 2 members.
            self.target = target
            self.short_set = {m for m in self.order if len(self.near(m)) < target}

    def connect(self, a: M, b: M) -> None:
        self._edit(a).add(b)
        self._edit(b).add(a)
        self._recount(a)
        self._recount(b)

    def disconnect(self, a: M, b: M) -> None:
        self._edit(a).discard(b)
        self._edit(b).discard(a)
        self._recount(a)
        self._recount(b)

    def change(self) -> NeighbourChange[M]:
        added: set[tuple[M, M]] = set()
        removed: set[tuple[M, M]] = set()
        adjacency = dict(self._original)
        for member, new in self.edited.items():
            old = self._original.get(member, frozenset())
            for other in new - old:
                added.add((member, other) if member < other else (other, member))
            for other in old - new:
                removed.add((member, other) if member < other else (other, member))
            if member in self.gone:
                adjacency.pop(member, None)
            else:
                adjacency[member] = frozenset(new)
        graph: NeighbourGraph[M] = NeighbourGraph._build(
            self.degree, adjacency, tuple(self.order), frozenset(self.short_set)
        )
        return NeighbourChange(graph, frozenset(added), frozenset(removed))

    # -- finding edges ------------------------------------------------------

    def pick_edge(self, nodes: Sequence[M], fits: Callable[[M, M], bool]) -> tuple[M, M] | None:
        """
        A random edge ``(u, v)`` with ``u`` in ``nodes`` and ``fits(u, v)``,
        in either orientation; ``None`` when there is none.
        """
        if not nodes:
            return None
        for _ in range(_DRAWS):
            u = self.rng.choice(nodes)
            listed = self.near(u)
            if not listed:
                continue
            v = self.rng.choice(sorted(listed))
            if fits(u, v):
                return u, v
            if fits(v, u):
                return v, u
        # Rare (small or crowded graphs): look at every edge, from a random
        # starting point so that the choice stays spread.
        start = self.rng.randrange(len(nodes))
        for i in range(len(nodes)):
            u = nodes[(start + i) % len(nodes)]
            for v in sorted(self.near(u)):
                if fits(u, v):
                    return u, v
                if fits(v, u):
                    return v, u
        return None

    def split_for(self, a: M, nodes: Sequence[M] | None = None) -> bool:
        """
        Take an edge ``(u, v)`` apart and connect ``a`` to both ends: ``a``
        gains two neighbours and nobody else's degree changes.
        """
        around = self.near(a)

        def fits(u: M, v: M) -> bool:
            return u != a and v != a and u not in around and v not in around

        edge = self.pick_edge(self.order if nodes is None else nodes, fits)
        if edge is None:
            return False
        u, v = edge
        self.disconnect(u, v)
        self.connect(a, u)
        self.connect(a, v)
        return True

    def split_for_pair(self, a: M, b: M, nodes: Sequence[M] | None = None) -> bool:
        """
        Take an edge ``(u, v)`` apart and connect ``a`` to ``u`` and ``b`` to
        ``v``: ``a`` and ``b`` each gain one neighbour.
        """
        near_a = self.near(a)
        near_b = self.near(b)

        def fits(u: M, v: M) -> bool:
            return u not in (a, b) and v not in (a, b) and u not in near_a and v not in near_b

        edge = self.pick_edge(self.order if nodes is None else nodes, fits)
        if edge is None:
            return False
        u, v = edge
        self.disconnect(u, v)
        self.connect(a, u)
        self.connect(b, v)
        return True

    # -- the moves ----------------------------------------------------------

    def join(self, member: M) -> None:
        self.edited[member] = set()
        bisect.insort(self.order, member)
        self._retarget()
        self._recount(member)
        # Members who are short (a group still filling up, or what is left of
        # a departure) take the newcomer first: one edge mends two deficits.
        short = [m for m in self.short() if m != member]
        for other in self.rng.sample(short, min(self.target, len(short))):
            self.connect(member, other)
        while self.deficit(member) >= 2:
            if not self.split_for(member):
                break
        self.balance()

    def leave(self, member: M) -> None:
        for other in sorted(self.near(member)):
            self.disconnect(member, other)
        self._edit(member)
        self.gone.add(member)
        self.short_set.discard(member)
        del self.order[bisect.bisect_left(self.order, member)]
        self._retarget()

    def reaches(self, members: Iterable[M]) -> bool:
        """
        Whether ``members`` are all in one component.  When a connected
        graph loses some members, it stays connected exactly when their
        former neighbours do.  A search grows around each of them, the
        smallest first, and searches that meet merge: in a graph of small
        diameter they all meet after a few hops each, long before any of
        them has seen the whole group.
        """
        sources = sorted({m for m in members if m not in self.gone})
        if len(sources) <= 1:
            return True
        parent = list(range(len(sources)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner = {member: i for i, member in enumerate(sources)}
        frontiers = [[member] for member in sources]
        separate = len(sources)
        while True:
            # The search with the smallest frontier grows by one hop.
            i = min(
                (j for j, frontier in enumerate(frontiers) if frontier),
                key=lambda j: (len(frontiers[j]), j),
            )
            grown: list[M] = []
            for member in frontiers[i]:
                for other in self.near(member):
                    met = owner.get(other)
                    if met is None:
                        owner[other] = i
                        grown.append(other)
                    elif root(met) != root(i):
                        parent[root(met)] = root(i)
                        separate -= 1
                        if separate == 1:
                            return True
            frontiers[i] = grown
            if not grown:
                # A component all of whose searches have ended, while
                # others remain: it is cut off.
                mine = root(i)
                if not any(frontiers[j] for j in range(len(frontiers)) if root(j) == mine):
                    return False

    def reconnect(self) -> None:
        """
        Join every component to the largest, with as few changes as it can.
        """
        for _ in range(len(self.order)):
            components = _components(self.near, self.order)
            if len(components) <= 1:
                return
            main = components[0]
            in_main = set(main)
            for part in components[1:]:
                self._join_parts(part, main, in_main)
                for member in part:
                    in_main.add(member)
                main = sorted(in_main)

    def _join_parts(self, part: list[M], main: list[M], in_main: set[M]) -> None:
        short_part = [m for m in part if self.deficit(m) > 0]
        short_main = sorted(m for m in self.short_set if m in in_main)
        if short_part and short_main:
            self.connect(self.rng.choice(short_part), self.rng.choice(short_main))
            return
        wanting = [m for m in short_part if self.deficit(m) >= 2]
        if wanting and self.split_for(self.rng.choice(wanting), main):
            return
        if len(short_part) >= 2:
            a, b = self.rng.sample(short_part, 2)
            if self.split_for_pair(a, b, main):
                return
        # No one is short: exchange the ends of an edge on each side.
        inside = self.pick_edge(part, lambda u, v: True)
        outside = self.pick_edge(main, lambda u, v: True)
        if inside is not None and outside is not None:
            (a1, b1), (a2, b2) = inside, outside
            self.disconnect(a1, b1)
            self.disconnect(a2, b2)
            self.connect(a1, a2)
            self.connect(b1, b2)
            return
        self.connect(self.rng.choice(part), self.rng.choice(main))

    def balance(self) -> None:
        """
        Give every member who is short of neighbours its share, if the
        graph allows: at most one member stays one short.
        """
        while True:
            short = self.short()
            if not short:
                return
            self.rng.shuffle(short)
            progress = False
            # One new edge between two members who are short mends both.
            for a in short:
                if self.deficit(a) <= 0:
                    continue
                near = self.near(a)
                partners = [b for b in short if b != a and b not in near and self.deficit(b) > 0]
                if partners:
                    self.connect(a, self.rng.choice(partners))
                    progress = True
            if progress:
                continue
            # Otherwise take edges apart for them.
            for a in short:
                if self.deficit(a) >= 2:
                    progress = self.split_for(a) or progress
            ones = [a for a in short if self.deficit(a) == 1]
            for a, b in zip(ones[::2], ones[1::2], strict=False):
                progress = self.split_for_pair(a, b) or progress
            if not progress:
                return
