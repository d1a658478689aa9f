"""Points that several series feed, kept as one OpenTelemetry SDK instrument would keep them.

An attribute opt-out (or a metric without one of its series' attributes) makes several
series export the same attribute set: the builder adds them into one point, whose
*members* are those series. Summing the members' current cumulative values is wrong
once a member leaves (its flow key idles out) or restarts: the sum falls while the
point's start stays, a counter going backwards without a reset.

So the point of a monotonic sum or a histogram is a running total instead, as one SDK
counter or histogram fed by all its members: it starts when the point first has members
(the earliest of their series starts) and grows by each member's increase since the
last interval. A member seen for the first time adds its whole value: its cumulative
value is all we know of it, and dropping it would lose real counts. (Its series may have
started before the point did, e.g. a series that moved in when an attribute changed;
then the point also counts what it did before, once: an overcount bounded by that
member's history, where the alternative, counting it from zero, would silently lose its
traffic since its last collection.) A member whose series restarted (a new start, or a
value that went backwards) counts again from zero. A member that left takes nothing
away. Non-monotonic sums (a current count) and gauges are the plain sum of the members
present.

A member is known by an identity the caller gives (a record's resource and attributes
before opt-outs) plus its series start; members with the same identity and start (two
processes of one name that first talked to one peer in the same interval) are one member
holding their sum (should one of them end, a fall of that sum counts as a restart). A
series whose identity changes while it runs (an attribute that is opted out, such as a
learned DNS name in `server.address`, changes) is a new member: its whole value counts
once more.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from operator import lt

from otel_netreceiver.flows.model import Histogram

Value = int | float | Histogram


class MemberState:
    """One member of an accumulator's points: its series start and, per point (its
    total, hashed by identity: cheaper than the point's key), the value it gave last."""

    __slots__ = ("start_ns", "last", "seen")

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.last: dict[_Total, Value] = {}
        self.seen = 0  # the round it was last present in


Member = tuple[MemberState, int, Value]  # (the member, its series start, its cumulative value)


class _Total:
    __slots__ = ("start_ns", "value", "seen")

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.value: Value | None = None
        self.seen = 0  # the round it was last fed in


class Accumulator:
    """Running totals of merged points and the last value each member gave them.

    State unseen for `memory` rounds is forgotten (checked every `memory` rounds): a
    round is a build in which the accumulator was used at all, so the totals of a unit
    whose records did not change (and so were not fed) live as long as the unit does.

    While one member is all it has ever had, that member's own values are the totals and
    nothing is kept but the member (`alone`): under an opt-out, most units keep one
    series, and those cost next to nothing more. When another member comes, the caller
    seeds the totals with the lone member's values (`seed`), then feeds them.
    """

    def __init__(self, memory: int) -> None:
        self._memory = memory
        self._totals: dict[Hashable, _Total] = {}
        self._members: dict[tuple[Hashable, int], MemberState] = {}
        self._round = 0
        self._build: int | None = None
        self._lone: tuple[object, object] | None = None  # (what tells the lone member, its record)
        self._shared = False  # more than one member ever

    def alone(self, key: object, record: object) -> bool:
        """Whether the member that `key` tells (compared, not hashed), present alone, is
        the only one the points ever had: then its values are theirs. `record` is kept to
        seed the totals from when another comes."""
        if self._shared or (self._lone is not None and self._lone[0] != key):
            return False
        self._lone = (key, record)
        return True

    def share(self) -> object | None:
        """Members from now on, fed through `total`: the lone member's record so far, whose
        values the caller passes to `seed`, or None."""
        lone, self._lone, self._shared = self._lone, None, True
        return None if lone is None else lone[1]

    def seed(self, point: Hashable, state: MemberState, value: Value) -> None:
        """Start `point`'s total at the lone member's value, as last given by it."""
        total = self._totals[point] = _Total(state.start_ns)
        total.value, total.seen = value, self._round
        state.last[total] = value

    def size(self) -> tuple[int, int]:
        """(points, members) it keeps."""
        return len(self._totals), len(self._members)

    def member(self, identity: Hashable, start_ns: int, build: int) -> MemberState:
        """The member known by `identity` and its series start, present in `build`
        (looked up once a build, then handed to `total` for each of its points)."""
        if build != self._build:
            self.advance(build)
        key = (identity, start_ns)
        state = self._members.get(key)
        if state is None:
            state = self._members[key] = MemberState(start_ns)
        state.seen = self._round
        return state

    def total(self, point: Hashable, members: list[Member]) -> tuple[int, Value]:
        """(start, cumulative value) of `point` after the members present added their
        increases since they last fed it."""
        total = self._totals.get(point)
        if total is None:
            total = self._totals[point] = _Total(min(state.start_ns for state, _, _ in members))
        value = total.value
        for state, _, current in (members if len(members) == 1 else _combined(members)):
            last = state.last.get(total)
            state.last[total] = current
            if type(current) is not Histogram:  # a number: the common case, kept short
                increase = current if last is None or current < last else current - last
                value = increase if value is None else value + increase
                continue
            increase = current if last is None or went_backwards(last, current) else subtract(current, last)
            value = increase if value is None else added(value, increase)
        total.value, total.seen = value, self._round
        return total.start_ns, value

    def advance(self, build: int) -> None:
        """Count `build` as a round (once); every `memory` rounds forget what went unseen."""
        if build == self._build:
            return
        self._build, self._round = build, self._round + 1
        if self._round % self._memory == 0:
            oldest = self._round - self._memory
            self._totals = {k: t for k, t in self._totals.items() if t.seen > oldest}
            self._members = {k: m for k, m in self._members.items() if m.seen > oldest}


def plain_sum(members: Iterable[Member]) -> tuple[int, Value]:
    """(earliest start, sum of the values) of the members present: for what may go down."""
    start, value = None, None
    for _, member_start, member_value in members:
        start = member_start if start is None else min(start, member_start)
        value = member_value if value is None else added(value, member_value)
    return start, value


def _combined(members: list[Member]) -> list[Member]:
    """Members given more than once (one series' values that an opt-out made one point,
    or series with the same identity and start) as one member holding their sum."""
    combined: dict[int, Member] = {}
    for member in members:
        known = combined.get(id(member[0]))
        combined[id(member[0])] = member if known is None else (known[0], known[1], added(known[2], member[2]))
    return list(combined.values())


def added(a: Value, b: Value) -> Value:
    """a + b without modifying either (histograms may belong to a Snapshot)."""
    if isinstance(a, Histogram):
        if a.bounds != b.bounds:
            raise ValueError(f"cannot merge histograms with different bounds: {a.bounds} and {b.bounds}")
        return Histogram(a.bounds, [x + y for x, y in zip(a.counts, b.counts)], a.sum + b.sum, a.count + b.count)
    return a + b


def went_backwards(previous: Value, current: Value) -> bool:
    """Whether a cumulative value fell (a restart): for a histogram, any bucket."""
    if isinstance(current, Histogram):
        return (current.count < previous.count or current.bounds != previous.bounds
                or any(map(lt, current.counts, previous.counts)))
    return current < previous


def subtract(current: Value, previous: Value) -> Value:
    """current - previous, for a value that did not go backwards."""
    if isinstance(current, Histogram):
        counts = [a - b for a, b in zip(current.counts, previous.counts)]
        return Histogram(current.bounds, counts, current.sum - previous.sum, current.count - previous.count)
    return current - previous
