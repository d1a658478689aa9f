"""Merged points (several series exporting one attribute set) behave like one SDK instrument.

Ground truth is computed by hand from the members' cumulative values: a merged monotonic
sum or histogram never goes backwards while its start stays, and its deltas are the
increases of the members present (a member seen for the first time, or restarted, counts
from zero; one that left takes nothing away).
"""

import pytest
from hypothesis import given, settings, strategies as st

from otel_netreceiver.flows.model import (DnsStats, EnrichedSnapshot, Histogram, Record, RecordKind,
                                          Series, TcpStats)
from otel_netreceiver.metrics import builder as module
from otel_netreceiver.metrics.builder import AgentTelemetry, BuildSettings, MetricsBuilder
from otel_netreceiver.metrics.merging import Accumulator
from tests.unit.test_metrics import CATALOG, HOST, SECOND

MS = SECOND // 1000
BOUNDS = (0.1, 1.0)
RESOURCE = (("host.name", "h1"),)
PEERS = {"a": "198.18.40.1", "b": "198.18.40.2", "c": "198.18.40.3", "d": "198.18.40.4"}


def make_builder(metric, delta, dropped=("network.peer.address",), also=()):
    settings_ = BuildSettings(frozenset({metric, *also}), frozenset(dropped), frozenset(), delta)
    return MetricsBuilder(CATALOG, settings_, HOST, start_ns=SECOND // 2)


def histogram(counts):
    """Cumulative RTT samples; the sum is a fixed linear function of the bucket counts,
    so the expected sum follows from the expected counts."""
    return Histogram(BOUNDS, list(counts), _sum_of(counts), sum(counts))


def _sum_of(counts):
    return 0.05 * counts[0] + 0.5 * counts[1] + 2.0 * counts[2]


def tcp(member, start_ms, value, metric):
    """One flow of process "a" to peer `member`; `value` is opened connections or RTT counts."""
    stats = TcpStats(rtt=histogram(value)) if metric == "tcp.rtt" else TcpStats(opened=value, active=value)
    attributes = {"network.transport": "tcp", "network.peer.address": PEERS[member], "server.port": 80,
                  "process.executable.name": "a"}
    return Record(RecordKind.TCP, RESOURCE, attributes, Series(start_ms * MS, stats))


def points_of(batch, metric):
    return [p for _, scope, m in batch.metrics() if m.definition.name == metric for p in m.points]


def run(metric, delta, steps, dropped=("network.peer.address",)):
    """Per step (time in s, {member: (start ms, value)}): the (start, value) of the one
    point exported, or None when there is none."""
    b = make_builder(metric, delta, dropped)
    out = []
    for t, members in steps:
        records = [tcp(m, start, value, metric) for m, (start, value) in members.items()]
        points = points_of(b.build(EnrichedSnapshot(t * SECOND, records), AgentTelemetry()), metric)
        assert len(points) <= 1, points
        out.append((points[0].start_ns, points[0].value) if points else None)
    return out


# Members a and b from 1 s; b leaves at 4 s; c joins at 4 s (its series from 3.5 s); a
# restarts at 5 s (new start 4.5 s); d joins at 7 s with a series older than the point
# (0.5 s: its whole value counts, see metrics/merging.py); a goes backwards under the same
# start at 8 s (a restart too: counts from zero).
SUM_STEPS = [
    (2, {"a": (1000, 3), "b": (1000, 4)}),
    (3, {"a": (1000, 5), "b": (1000, 6)}),
    (4, {"a": (1000, 6), "c": (3500, 2)}),
    (5, {"a": (4500, 1), "c": (3500, 5)}),
    (6, {"a": (4500, 2), "c": (3500, 5)}),
    (7, {"a": (4500, 2), "c": (3500, 6), "d": (500, 10)}),
    (8, {"a": (4500, 1), "c": (3500, 6), "d": (500, 10)}),
    (9, {}),
    (10, {"c": (3500, 9)}),
]
#                  3+4, +2+2, +1+2, +1+3, +1, +1+10, +1, (none), +3
SUM_CUMULATIVE = [7, 11, 14, 18, 19, 30, 31, None, 34]
SUM_DELTAS = [7, 4, 3, 4, 1, 11, 1, None, 3]

HIST_STEPS = [
    (2, {"a": (1000, (2, 0, 0)), "b": (1000, (0, 1, 0))}),
    (3, {"a": (1000, (3, 0, 0)), "b": (1000, (0, 1, 1))}),
    (4, {"a": (1000, (3, 1, 0)), "c": (3500, (1, 0, 0))}),   # b left with its samples
    (5, {"a": (4500, (0, 0, 1)), "c": (3500, (1, 0, 2))}),   # a restarted
    (6, {"c": (3500, (1, 0, 2))}),
    (7, {"a": (4500, (0, 1, 1)), "c": (3500, (2, 0, 2))}),   # a is back, same series
]
HIST_CUMULATIVE = [(2, 1, 0), (3, 1, 1), (4, 2, 1), (4, 2, 4), (4, 2, 4), (5, 3, 4)]
HIST_DELTAS = [(2, 1, 0), (1, 0, 1), (1, 1, 0), (0, 0, 3), (0, 0, 0), (1, 1, 0)]


def _as_counts(value):
    assert value.sum == pytest.approx(_sum_of(value.counts)) and value.count == sum(value.counts)
    return tuple(value.counts)


@pytest.mark.parametrize("metric, steps, delta, expected, as_value", [
    ("tcp.connection.opened", SUM_STEPS, False, SUM_CUMULATIVE, int),
    ("tcp.connection.opened", SUM_STEPS, True, SUM_DELTAS, int),
    ("tcp.rtt", HIST_STEPS, False, HIST_CUMULATIVE, _as_counts),
    ("tcp.rtt", HIST_STEPS, True, HIST_DELTAS, _as_counts),
])
def test_merged_point_is_a_running_total_of_the_members_increases(metric, steps, delta, expected, as_value):
    """Cumulative: the running total, always from the first start. Delta: the increase of
    the members present, the first from that start, then each where the last one ended."""
    got = run(metric, delta, steps)
    assert [None if p is None else as_value(p[1]) for p in got] == expected
    present = [(t, start) for (t, _), p in zip(steps, got) if p is not None for start in [p[0]]]
    ended = [1000 * MS] + [t * SECOND for t, _ in present[:-1]]
    assert [start for _, start in present] == (ended if delta else [1000 * MS] * len(present))


@pytest.mark.parametrize("later, delta, expected", [
    ("a", False, [3, 5, 6, 9]),  # the lone series restarts (a new start)
    ("b", False, [3, 5, 6, 9]),  # another takes its place
    ("a", True, [3, 2, 1, 3]),
    ("b", True, [3, 2, 1, 3]),
])
def test_a_point_with_one_series_so_far_continues_when_another_member_comes(later, delta, expected):
    """While one series is a point's only member its values are the point's; when another
    member comes (its own restart included), the total continues from them."""
    steps = [(2, {"a": (1000, 3)}), (3, {"a": (1000, 5)}), (4, {later: (3500, 1)}), (5, {later: (3500, 4)})]
    got = run("tcp.connection.opened", delta, steps)
    assert [value for _, value in got] == expected
    assert [start for start, _ in got] == ([1000 * MS, 2 * SECOND, 3 * SECOND, 4 * SECOND] if delta
                                           else [1000 * MS] * 4)


def test_a_non_monotonic_merged_sum_is_the_plain_sum_of_the_members_present():
    """tcp.connection.active is a current count: it goes down when a member leaves."""
    got = run("tcp.connection.active", False, SUM_STEPS[:3])
    assert got == [(1000 * MS, 7), (1000 * MS, 11), (1000 * MS, 8)]


@pytest.mark.parametrize("gap_ms, steps, expected", [
    (10, [(2, [3, 4]), (3, [5, 6]), (4, [6]), (5, [8])], [7, 11, 12, 14]),
    (0, [(2, [3, 4]), (3, [5, 6]), (4, [5, 9])], [7, 11, 14]),  # one member holding their sum
])
def test_processes_of_one_name_are_members_of_one_point_without_opt_outs(gap_ms, steps, expected):
    """Two pids of one executable to one peer are two series with equal records: one point.
    When one goes, the point keeps its total (also once a single record is left)."""
    b = make_builder("tcp.connection.opened", False, dropped=())
    got = []
    for t, values in steps:
        records = [tcp("a", 1000 + gap_ms * i, value, "tcp.connection.opened") for i, value in enumerate(values)]
        [point] = points_of(b.build(EnrichedSnapshot(t * SECOND, records), AgentTelemetry()),
                            "tcp.connection.opened")
        got.append((point.start_ns, point.value))
    assert got == [(1000 * MS, value) for value in expected]


def test_a_histogram_member_holding_two_series_whose_sum_falls_in_a_bucket_counts_again():
    """Two pids of one executable, same start: one member holding their sum. When one goes,
    that sum falls in some buckets though not in its count: a restart (counts again from
    zero), never a subtraction that would take the point's buckets back."""
    b = make_builder("tcp.rtt", False, dropped=())
    got = []
    for t, values in [(2, [(2, 0, 0), (0, 1, 0)]), (3, [(3, 0, 0), (0, 1, 1)]), (4, [(5, 0, 0)])]:
        records = [tcp("a", 1000, value, "tcp.rtt") for value in values]
        [point] = points_of(b.build(EnrichedSnapshot(t * SECOND, records), AgentTelemetry()), "tcp.rtt")
        got.append((point.start_ns, _as_counts(point.value)))
    assert got == [(1000 * MS, (2, 1, 0)), (1000 * MS, (3, 1, 1)), (1000 * MS, (8, 1, 1))]


def test_values_of_one_series_that_an_opt_out_makes_one_point_are_one_member():
    """Without network.io.direction, a flow's bytes sent and received are one tcp.io point."""
    b = make_builder("tcp.io", False, dropped=("network.io.direction",))
    got = []
    for t, sent, received in [(2, 10, 100), (3, 20, 150)]:
        record = tcp("a", 1000, 0, "tcp.io")
        record.series.stats.bytes_sent, record.series.stats.bytes_received = sent, received
        [point] = points_of(b.build(EnrichedSnapshot(t * SECOND, [record]), AgentTelemetry()), "tcp.io")
        got.append(point.value)
    assert got == [110, 170]


def test_a_point_whose_records_all_went_away_continues_when_one_comes_back():
    """Its unit is forgotten after a few intervals without records, its running total is
    not: a series that comes back (e.g. after its attributes changed and changed back)
    continues the total, under the same start."""
    b = make_builder("tcp.connection.opened", False)
    steps = [(2, {"a": 3, "b": 4}), *((t, {}) for t in range(3, 9)), (9, {"a": 5})]
    got = []
    for t, members in steps:
        records = [tcp(m, 1000, value, "tcp.connection.opened") for m, value in members.items()]
        got += [(p.start_ns, p.value) for p in points_of(b.build(EnrichedSnapshot(t * SECOND, records),
                                                                  AgentTelemetry()), "tcp.connection.opened")]
    assert got == [(1000 * MS, 7), (1000 * MS, 9)]


def dns(error, timeouts, start_ms=1000):
    attributes = {"dns.question.name": "a.test", "server.address": "198.18.40.53", "error.type": error}
    stats = DnsStats(Histogram((0.01,), [timeouts, 0], 0.001 * timeouts, timeouts), timeouts)
    return Record(RecordKind.DNS, RESOURCE, attributes, Series(start_ms * MS, stats))


@pytest.mark.parametrize("delta, expected", [(False, [5, 7, 9]), (True, [5, 2, 2])])
def test_units_merged_by_a_metric_without_their_attribute_never_go_backwards(delta, expected):
    """dns.lookup.timeout.count has no error.type: the nxdomain and servfail series are one
    point (dns.lookup.duration keeps them apart, so they are two units). servfail's series
    goes away; nxdomain keeps growing."""
    b = make_builder("dns.lookup.timeout.count", delta, dropped=(), also={"dns.lookup.duration"})
    got = []
    for t, records in [(2, [dns("nxdomain", 2), dns("servfail", 3)]), (3, [dns("nxdomain", 4)]),
                       (4, [dns("nxdomain", 6)])]:
        [point] = points_of(b.build(EnrichedSnapshot(t * SECOND, records), AgentTelemetry()),
                            "dns.lookup.timeout.count")
        got.append(point.value)
        assert point.start_ns == (1000 * MS if not delta or t == 2 else (t - 1) * SECOND)
    assert got == expected and b._across_units.size() == (1, 2)


# A member's life: per step, absent, grown by n, or restarted with value n.
ACTIONS = st.one_of(st.just(("absent", 0)), st.tuples(st.sampled_from(["grow", "restart"]), st.integers(0, 20)))


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["tcp.connection.opened", "tcp.rtt"]),
       st.lists(st.lists(ACTIONS, min_size=3, max_size=3), min_size=1, max_size=12))
def test_merged_points_never_go_back_and_deltas_add_up_to_the_members_increase(metric, steps):
    """Three flows merged by an opt-out, each coming, going (for any number of intervals),
    growing and restarting at random: the cumulative point never decreases in any bucket
    and keeps its start; the deltas add up to the members' total increase (a first or
    restarted value counts whole)."""
    shape = (lambda n: (n, n // 2, 0)) if metric == "tcp.rtt" else (lambda n: n)
    members = {}  # name -> (start ms, cumulative n)
    increase, plan = (0, 0, 0), []
    for t, actions in enumerate(steps, start=2):
        present = {}
        for name, (action, n) in zip("abc", actions):
            if action == "absent":
                continue
            start, value = members.get(name, (None, 0))
            gained = shape(value)
            if action == "restart" or start is None:
                start, value, gained = t * 1000 - 500, n, shape(0)
            else:
                value += n
            increase = _plus(increase, _minus(_vector(shape(value)), _vector(gained)))
            members[name] = (start, value)
            present[name] = (start, shape(value))
        plan.append((t, present))
    cumulative = [p for p in run(metric, False, plan) if p is not None]
    for (_, before), (_, after) in zip(cumulative, cumulative[1:]):
        assert all(b <= a for b, a in zip(_vector(before), _vector(after)))
    assert len({start for start, _ in cumulative}) <= 1
    assert (_vector(cumulative[-1][1]) if cumulative else (0, 0, 0)) == increase
    deltas = [p for p in run(metric, True, plan) if p is not None]
    total = (0, 0, 0)
    for _, value in deltas:
        total = _plus(total, _vector(value))
    assert total == increase


def _vector(value):
    """A value as three numbers: a histogram's bucket counts, or the sum then zeros."""
    if isinstance(value, Histogram):
        return tuple(value.counts)
    return tuple(value) if isinstance(value, tuple) else (value, 0, 0)


def _plus(a, b):
    return tuple(x + y for x, y in zip(a, b))


def _minus(a, b):
    return tuple(x - y for x, y in zip(a, b))


def test_merged_state_is_bounded_and_the_common_path_keeps_none(monkeypatch):
    """Members that come and go are forgotten after some intervals; without opt-outs and
    with one record per unit no running total is kept at all."""
    monkeypatch.setattr(module, "DELTA_MEMORY_BUILDS", 4)
    b = make_builder("tcp.connection.opened", False)
    for t in range(2, 40):
        records = [tcp("a", 1000, t, "tcp.connection.opened"), tcp("b", t * 1000, 1, "tcp.connection.opened")]
        b.build(EnrichedSnapshot(t * SECOND, records), AgentTelemetry())
    [totals] = b._unit_totals.values()
    assert totals.size()[1] <= 2 * 4 + 1  # a, and b's latest restarts only
    for t in range(40, 45):
        b.build(EnrichedSnapshot(t * SECOND, []), AgentTelemetry())
    assert b._unit_totals == {} and len(b._parked_totals) == 1
    for t in range(45, 55):
        b.build(EnrichedSnapshot(t * SECOND, []), AgentTelemetry())
    assert b._parked_totals == {}
    plain = make_builder("tcp.connection.opened", False, dropped=())
    for t in range(2, 6):
        records = [tcp(m, 1000, t, "tcp.connection.opened") for m in "ab"]
        plain.build(EnrichedSnapshot(t * SECOND, records), AgentTelemetry())
    assert plain._unit_totals == {} and plain._across_units.size() == (0, 0)


def test_an_accumulator_forgets_totals_unseen_for_its_memory():
    totals = Accumulator(memory=3)
    member = totals.member("m", 1, build=1)
    assert totals.total("p", [(member, 1, 5)]) == (1, 5)
    for build in range(2, 6):
        totals.advance(build)
    assert totals.size() == (1, 1)  # seen within its memory (checked every `memory` rounds)
    totals.advance(6)
    assert totals.size() == (0, 0)
    assert totals.total("p", [(totals.member("m", 7, build=7), 7, 2)]) == (7, 2)
