"""The metrics builder: cumulative and delta points, opt-outs, one Resource per workload."""

import math
import random

import pytest
from opentelemetry.sdk.metrics.export import AggregationTemporality, HistogramDataPoint

from otel_netreceiver.enrich.base import Enricher
from otel_netreceiver.export import encoding
from otel_netreceiver.flows.model import (DnsStats, EnrichedSnapshot, FailureReason, Histogram, Record,
                                          RecordKind, Series, Snapshot, TcpStats, UdpStats)
from otel_netreceiver.metrics import catalog
from otel_netreceiver.metrics.builder import AgentTelemetry, BuildSettings, MetricsBuilder
from tests.support import fake_source
from tests.unit.sdk_data import to_sdk

CATALOG = catalog.load()
HOST = {"host.name": "h1", "os.type": "linux"}
SECOND = 1_000_000_000


def builder(delta=False, enabled=None, dropped=(), dropped_resource=()):
    settings = BuildSettings(frozenset(enabled or CATALOG.metrics), frozenset(dropped),
                             frozenset(dropped_resource), delta)
    return MetricsBuilder(CATALOG, settings, {**HOST, "service.name": "agent"}, start_ns=SECOND // 2)


def snapshots(source, times):
    enricher = Enricher(HOST)
    for t in times:
        snapshot = Snapshot(t * SECOND)
        source.collect(snapshot)
        yield enricher.enrich(snapshot)


def metrics_by_name(data):
    """name -> (resource attributes, scope name, Metric) for every exported metric."""
    out = {}
    for rm in to_sdk(data).resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).append((dict(rm.resource.attributes), sm.scope.name, m))
    return out


def point(metric, **attributes):
    matches = [p for p in metric.data.data_points
               if all(p.attributes.get(k.replace("_", ".")) == v for k, v in attributes.items())]
    assert len(matches) == 1, matches
    return matches[0]


def build_steps(b, steps):
    source = fake_source.FakeCollector()
    data = None
    for enriched in snapshots(source, range(1, steps + 1)):
        data = b.build(enriched, AgentTelemetry({"otlp": 2}, 0.25))
    return metrics_by_name(data)


def test_cumulative_values_units_and_start_time():
    metrics = build_steps(builder(), 3)
    [(resource, scope, io)] = metrics["tcp.io"]
    assert resource == HOST and scope == CATALOG.flows_scope and io.unit == "By"
    sent = point(io, network_connection_direction="outgoing", network_io_direction="transmit")
    assert (sent.value, sent.start_time_unix_nano, sent.time_unix_nano) == (300, fake_source.START_NS, 3 * SECOND)
    assert io.data.aggregation_temporality is AggregationTemporality.CUMULATIVE and io.data.is_monotonic


@pytest.mark.parametrize("name, selector, value", [
    ("tcp.connection.opened", {"network_connection_direction": "incoming"}, 6),
    ("tcp.connection.failed", {"error_type": "refused", "network_connection_direction": "outgoing"}, 3),
    ("tcp.connection.active", {"network_connection_direction": "outgoing"}, 1),
    ("tcp.packet.count", {"network_connection_direction": "outgoing", "network_io_direction": "receive"}, 12),
    ("tcp.retransmit.count", {"network_connection_direction": "outgoing"}, 3),
    ("tcp.reset.count", {"network_connection_direction": "outgoing", "network_io_direction": "receive"}, 3),
    ("udp.io", {"network_io_direction": "receive"}, 60),
    ("udp.packet.count", {"network_io_direction": "transmit"}, 3),
    ("dns.lookup.timeout.count", {"dns_question_name": "example.test"}, 3),
])
def test_each_field_maps_to_its_metric(name, selector, value):
    [(_, _, metric)] = build_steps(builder(), 3)[name]
    assert point(metric, **selector).value == value


def test_histogram_points_carry_bounds_and_counts():
    [(_, _, metric)] = build_steps(builder(), 2)["tcp.connection.duration"]
    p = point(metric, network_connection_direction="outgoing")
    assert isinstance(p, HistogramDataPoint)
    assert (p.count, list(p.bucket_counts), list(p.explicit_bounds)) == (4, [2, 0, 2, 0, 0], [0.001, 0.01, 0.1, 1.0])
    assert p.sum == pytest.approx(0.101)


def test_delta_subtracts_previous_and_starts_at_previous_time():
    metrics = build_steps(builder(delta=True), 3)
    [(_, _, io)] = metrics["tcp.io"]
    p = point(io, network_connection_direction="outgoing", network_io_direction="transmit")
    assert (p.value, p.start_time_unix_nano, p.time_unix_nano) == (100, 2 * SECOND, 3 * SECOND)
    assert io.data.aggregation_temporality is AggregationTemporality.DELTA
    [(_, _, duration)] = metrics["tcp.connection.duration"]
    h = point(duration, network_connection_direction="outgoing")
    assert (h.count, list(h.bucket_counts)) == (2, [1, 0, 1, 0, 0])


def test_delta_first_point_is_cumulative_since_series_start():
    [(_, _, io)] = build_steps(builder(delta=True), 1)["tcp.io"]
    p = point(io, network_connection_direction="outgoing", network_io_direction="transmit")
    assert (p.value, p.start_time_unix_nano) == (100, fake_source.START_NS)


def test_delta_keeps_non_monotonic_sums_cumulative():
    [(_, _, active)] = build_steps(builder(delta=True), 3)["tcp.connection.active"]
    assert active.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert point(active, network_connection_direction="outgoing").value == 1


def tcp_record(comm, peer, opened, start_ns=SECOND, resource=(("host.name", "h1"),)):
    attributes = {"network.transport": "tcp", "network.peer.address": peer, "server.port": 80,
                  "process.executable.name": comm, "not.in.catalog": "x"}
    return Record(RecordKind.TCP, resource, attributes, Series(start_ns, TcpStats(opened=opened)))


def test_delta_restarts_when_a_series_goes_backwards():
    b = builder(delta=True, enabled={"tcp.connection.opened"})
    b.build(EnrichedSnapshot(2 * SECOND, [tcp_record("a", "p", 10)]), AgentTelemetry())
    data = b.build(EnrichedSnapshot(3 * SECOND, [tcp_record("a", "p", 4, start_ns=2500 * 10**6)]),
                   AgentTelemetry())
    [(_, _, opened)] = metrics_by_name(data)["tcp.connection.opened"]
    assert (opened.data.data_points[0].value, opened.data.data_points[0].start_time_unix_nano) == (4, 2500 * 10**6)


def test_dropped_attribute_merges_series():
    b = builder(enabled={"tcp.connection.opened"}, dropped={"network.peer.address"})
    records = [tcp_record("a", "198.18.20.1", 3, start_ns=2 * SECOND), tcp_record("a", "198.18.20.9", 4)]
    data = b.build(EnrichedSnapshot(5 * SECOND, records), AgentTelemetry())
    [(_, _, opened)] = metrics_by_name(data)["tcp.connection.opened"]
    [p] = opened.data.data_points
    assert (p.value, p.start_time_unix_nano) == (7, SECOND)
    assert "network.peer.address" not in p.attributes and "not.in.catalog" not in p.attributes


def test_one_resource_per_workload_and_dropped_resource_attributes():
    container = (("container.id", "c1"), ("host.id", "x"), ("host.name", "h1"))
    records = [tcp_record("a", "p", 1), tcp_record("b", "p", 2, resource=container)]
    b = builder(enabled={"tcp.connection.opened"}, dropped_resource={"host.id"})
    data = b.build(EnrichedSnapshot(5 * SECOND, records), AgentTelemetry())
    resources = sorted(tuple(sorted(r.resource.attributes.items())) for r in to_sdk(data).resource_metrics
                       if r.scope_metrics[0].scope.name == CATALOG.flows_scope)
    assert resources == [(("container.id", "c1"), ("host.name", "h1")), (("host.name", "h1"),)]


def test_disabled_metric_is_absent():
    enabled = set(CATALOG.metrics) - {"tcp.rtt", "tcp.io"}
    metrics = build_steps(builder(enabled=enabled), 1)
    assert "tcp.io" not in metrics and "tcp.connection.opened" in metrics


def test_agent_metrics_under_agent_scope_and_resource():
    metrics = build_steps(builder(), 2)
    expected = {
        "otel_netreceiver.events.lost": ({"reason": "ringbuf_full"}, 2),
        "otel_netreceiver.map.fill": ({"map": "tcp.sockets"}, 0.25),
        "otel_netreceiver.export.failures": ({"exporter": "otlp"}, 2),
        "otel_netreceiver.collection.duration": ({}, 0.25),
    }
    for name, (attributes, value) in expected.items():
        [(resource, scope, metric)] = metrics[name]
        assert scope == CATALOG.agent_scope and resource["service.name"] == "agent"
        [p] = metric.data.data_points
        assert (dict(p.attributes), p.value) == (attributes, value)
    [(_, _, gauges)] = metrics["otel_netreceiver.collector.gauge"]
    assert {p.attributes["name"]: p.value for p in gauges.data.data_points} == {
        "tcp.sockets.tracked": 16.0, "tcp.sockets.capacity": 64.0}
    [(_, _, tracked)] = metrics["otel_netreceiver.flows.tracked"]
    assert {p.attributes["kind"]: p.value for p in tracked.data.data_points} == {"tcp": 2, "udp": 1, "dns": 1}


from hypothesis import given, settings, strategies as st


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), min_size=1, max_size=12))
def test_delta_points_add_up_to_the_cumulative_total(steps):
    """Whatever the increments and which intervals the series is absent in, the deltas
    exported add up to the last cumulative value, and each starts where the last ended."""
    b = builder(delta=True, enabled={"tcp.connection.opened"})
    total, points = 0, []
    for i, (increment, present) in enumerate(steps, start=2):
        total += increment
        records = [tcp_record("a", "p", total)] if present else []
        data = b.build(EnrichedSnapshot(i * SECOND, records), AgentTelemetry())
        found = metrics_by_name(data).get("tcp.connection.opened", [])
        points += [p for _, _, m in found for p in m.data.data_points]
    if points:
        last_present = max(i for i, (_, present) in enumerate(steps, start=2) if present)
        expected = sum(inc for i, (inc, _) in enumerate(steps, start=2) if i <= last_present)
        assert sum(p.value for p in points) == expected
        assert points[0].start_time_unix_nano == SECOND
        for previous, point in zip(points, points[1:]):
            assert point.start_time_unix_nano == previous.time_unix_nano


def test_delta_state_of_long_gone_series_is_forgotten(monkeypatch):
    from otel_netreceiver.metrics import builder as module
    monkeypatch.setattr(module, "DELTA_MEMORY_BUILDS", 3)
    b = builder(delta=True, enabled={"tcp.connection.opened"})
    b.build(EnrichedSnapshot(2 * SECOND, [tcp_record("a", "p", 5)]), AgentTelemetry())
    for t in range(3, 9):
        b.build(EnrichedSnapshot(t * SECOND, []), AgentTelemetry())
    assert b._previous == {}
    data = b.build(EnrichedSnapshot(9 * SECOND, [tcp_record("a", "p", 7)]), AgentTelemetry())
    [(_, _, opened)] = metrics_by_name(data)["tcp.connection.opened"]
    [p] = opened.data.data_points
    assert (p.value, p.start_time_unix_nano) == (7, SECOND)


def test_unchanged_series_reuses_points_and_changed_attributes_do_not():
    """The same Series object with the same attributes: the very same Point objects (their
    encoded bytes stay valid); the same Series with new attributes: new points."""
    b = builder(enabled={"tcp.connection.opened"})
    record = tcp_record("a", "198.18.20.1", 3)

    def opened(batch):
        [metric] = [m for _, _, m in batch.metrics() if m.definition.name == "tcp.connection.opened"]
        return metric.points

    first = opened(b.build(EnrichedSnapshot(2 * SECOND, [record]), AgentTelemetry()))
    again = Record(record.kind, record.resource, dict(record.attributes), record.series)
    second = opened(b.build(EnrichedSnapshot(3 * SECOND, [again]), AgentTelemetry()))
    assert second[0] is first[0]
    renamed = Record(record.kind, record.resource, {**record.attributes, "server.address": "db.test"},
                     record.series)
    [third] = opened(b.build(EnrichedSnapshot(4 * SECOND, [renamed]), AgentTelemetry()))
    assert third is not first[0] and dict(third.attribute_items())["server.address"] == "db.test"


def test_records_that_collapse_then_separate_are_exported_right_each_interval():
    """The merged point is a running total: a member that is absent adds nothing and takes
    nothing away; when it is back it adds what it gained meanwhile."""
    b = builder(enabled={"tcp.connection.opened"}, dropped={"network.peer.address"})
    values = []
    for t, one, two in [(2, 3, 4), (3, 5, None), (4, 5, 6), (5, None, 8)]:
        records = [tcp_record("a", peer, n) for peer, n in (("198.18.20.1", one), ("198.18.20.9", two))
                   if n is not None]
        data = b.build(EnrichedSnapshot(t * SECOND, records), AgentTelemetry())
        [(_, _, opened)] = metrics_by_name(data)["tcp.connection.opened"]
        values.append([p.value for p in opened.data.data_points])
    assert values == [[7], [9], [11], [13]]


def test_a_metric_without_an_attribute_adds_the_series_that_differ_only_in_it():
    """dns.lookup.timeout.count has no error.type: lookups that differ only in their
    error.type are one timeout point, while dns.lookup.duration keeps them apart."""
    from otel_netreceiver.flows.model import DnsStats, Histogram

    def dns(error, timeouts, start):
        attributes = {"dns.question.name": "a.test", "server.address": "198.18.20.53", "error.type": error}
        stats = DnsStats(Histogram((0.01,), [timeouts, 0], 0.001, timeouts), timeouts)
        return Record(RecordKind.DNS, (("host.name", "h1"),), attributes, Series(start, stats))

    b = builder(enabled={"dns.lookup.timeout.count", "dns.lookup.duration"})
    data = b.build(EnrichedSnapshot(5 * SECOND, [dns("nxdomain", 2, 2 * SECOND), dns("servfail", 3, SECOND)]),
                   AgentTelemetry())
    metrics = metrics_by_name(data)
    [(_, _, timeouts)] = metrics["dns.lookup.timeout.count"]
    assert [(p.value, p.start_time_unix_nano, dict(p.attributes)) for p in timeouts.data.data_points] == [
        (5, SECOND, {"dns.question.name": "a.test", "server.address": "198.18.20.53"})]
    [(_, _, durations)] = metrics["dns.lookup.duration"]
    assert sorted(p.attributes["error.type"] for p in durations.data.data_points) == ["nxdomain", "servfail"]


def test_a_resource_whose_series_are_unchanged_keeps_its_metrics_and_a_change_renews_them():
    """Same units, none changed: last interval's MetricData as they are; one series
    changed: copies with its points replaced in place, last interval's left as they were."""
    b = builder(enabled={"tcp.connection.opened", "tcp.io"})
    records = [tcp_record("a", f"198.18.20.{n}", n) for n in range(1, 6)]  # 1 in 5 changes: patched

    def flows(batch):
        return {m.definition.name: m for _, scope, m in batch.metrics() if scope.name == CATALOG.flows_scope}

    first = flows(b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry()))
    second_batch = b.build(EnrichedSnapshot(3 * SECOND, list(records)), AgentTelemetry())
    second = flows(second_batch)
    assert all(second[name] is first[name] for name in first)
    list(encoding.requests(second_batch, 8192))  # the encoder keeps its pieces on them
    before = list(first["tcp.connection.opened"].points)
    before_parts = list(first["tcp.connection.opened"].parts)
    records[1] = tcp_record("a", "198.18.20.2", 20)
    third = flows(b.build(EnrichedSnapshot(4 * SECOND, records), AgentTelemetry()))
    opened = third["tcp.connection.opened"]
    assert opened is not first["tcp.connection.opened"] and first["tcp.connection.opened"].points == before
    assert first["tcp.connection.opened"].parts == before_parts  # an export of it may still run
    assert opened.parts is not first["tcp.connection.opened"].parts
    assert [p.value for p in opened.points] == [1, 20, 3, 4, 5]
    assert all(opened.points[i] is before[i] for i in (0, 2, 3, 4))
    assert opened.stale == [1] and len(third["tcp.io"].points) == 10


def test_replacing_points_of_a_never_encoded_metric_keeps_no_stale_positions():
    """Only Prometheus or debug exporters (nothing encodes): nothing piles up."""
    b = builder(enabled={"tcp.connection.opened"})
    records = [tcp_record("a", f"198.18.20.{n}", n) for n in range(1, 21)]
    for step in range(50):
        records[step % 20] = tcp_record("a", f"198.18.20.{step % 20 + 1}", 100 + step)
        batch = b.build(EnrichedSnapshot((2 + step) * SECOND, list(records)), AgentTelemetry())
    [opened] = [m for _, scope, m in batch.metrics() if m.definition.name == "tcp.connection.opened"]
    assert opened.stale == [] and opened.parts is None
    assert sorted(p.value for p in opened.points) == sorted(
        [100 + step for step in range(30, 50)])


def test_delta_metrics_are_new_every_interval():
    b = builder(delta=True, enabled={"tcp.connection.opened"})
    records = [tcp_record("a", "198.18.20.1", 3)]
    first = b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry())
    second = b.build(EnrichedSnapshot(3 * SECOND, records), AgentTelemetry())
    [(_, _, one)], [(_, _, two)] = ([x for x in data.metrics() if x[2].definition.name == "tcp.connection.opened"]
                                    for data in (first, second))
    assert one is not two and [p.value for p in two.points] == [0]


def _opened(batch, name="tcp.connection.opened"):
    return [(p.attribute_items(), p.value) for _, _, m in batch.metrics() if m.definition.name == name
            for p in m.points]


def test_an_export_abandoned_mid_batch_sends_its_own_values():
    """A stop abandons a slow export of interval N; the final interval N+1 is built and
    encoded; when the old export resumes, batch N still carries N's values and time."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    b = builder(enabled={"tcp.connection.opened"})
    records = [tcp_record("a", f"198.18.20.{n}", n) for n in range(1, 9)]
    list(encoding.requests(b.build(EnrichedSnapshot(SECOND, records), AgentTelemetry()), 8192))
    records[6] = tcp_record("a", "198.18.20.7", 70)
    batch_n = b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry())
    abandoned = encoding.requests(batch_n, 4)
    sent = [next(abandoned)]
    records[7] = tcp_record("a", "198.18.20.8", 800)
    list(encoding.requests(b.build(EnrichedSnapshot(3 * SECOND, records), AgentTelemetry()), 8192))
    sent += list(abandoned)
    values = [(p.as_int, p.time_unix_nano) for r in sent
              for rm in ExportMetricsServiceRequest.FromString(r.payload).resource_metrics
              for sm in rm.scope_metrics for m in sm.metrics if m.name == "tcp.connection.opened"
              for p in m.sum.data_points]
    assert values == [(v, 2 * SECOND) for v in (1, 2, 3, 4, 5, 6, 70, 8)]


def test_a_resource_of_idle_series_is_not_duplicated_when_a_new_series_joins():
    """Series unchanged for many intervals keep their resource: a new series of the same
    workload joins it (and, with the peer address dropped, merges into the same point)."""
    b = builder(enabled={"tcp.connection.opened"}, dropped={"network.peer.address"})
    idle = tcp_record("a", "198.18.20.1", 3)
    for t in range(1, 8):
        b.build(EnrichedSnapshot(t * SECOND, [idle]), AgentTelemetry())
    batch = b.build(EnrichedSnapshot(8 * SECOND, [idle, tcp_record("a", "198.18.20.9", 4)]),
                    AgentTelemetry())
    flows = [r for r in batch.resources
             if any(s.name == CATALOG.flows_scope for s in r.scopes)]
    assert len(flows) == 1
    assert [value for _, value in _opened(batch)] == [7]


def test_points_that_collapse_stay_one_point_however_many_records():
    """1,500 peers collapse into one unit when the peer address is dropped: one point per
    error.type, each the sum of all of them (the intern table of extra attributes is
    emptied several times on the way)."""
    b = builder(enabled={"tcp.connection.failed"}, dropped={"network.peer.address"})
    records = [Record(RecordKind.TCP, (("host.name", "h1"),),
                      {"network.transport": "tcp", "network.peer.address": f"10.0.{i // 250}.{i % 250}",
                       "server.port": 80, "process.executable.name": "a"},
                      Series(SECOND, TcpStats(failed={reason: 1 for reason in FailureReason})))
               for i in range(1500)]
    failed = _opened(b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry()), "tcp.connection.failed")
    assert sorted((dict(items)["error.type"], value) for items, value in failed) == sorted(
        (reason.value, 1500) for reason in FailureReason)


def test_a_metric_without_points_that_gains_one_is_rebuilt_not_patched():
    b = builder(enabled={"tcp.connection.opened", "tcp.rtt"})
    records = [tcp_record("a", f"198.18.20.{n}", n) for n in range(1, 9)]  # no RTT samples
    b.build(EnrichedSnapshot(SECOND, records), AgentTelemetry())
    changed = records[2]
    records[2] = Record(changed.kind, changed.resource, changed.attributes,
                        Series(SECOND, TcpStats(opened=3, rtt=Histogram((0.1,), [1, 0], 0.05, 1))))
    batch = b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry())
    assert [value for _, value in _opened(batch)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [value.count for _, value in _opened(batch, "tcp.rtt")] == [1]


def test_failure_reasons_are_exported_once_they_happened():
    """Like an SDK counter, a reason's series starts with its first failure: flows with no
    failures have no tcp.connection.failed points at all."""
    b = builder(enabled={"tcp.connection.failed"})
    quiet = tcp_record("a", "198.18.20.1", 1)
    failing = Record(RecordKind.TCP, quiet.resource, {**quiet.attributes, "network.peer.address": "198.18.20.2"},
                     Series(SECOND, TcpStats(failed={reason: 0 for reason in FailureReason}
                                             | {FailureReason.TIMEOUT: 2})))
    failed = _opened(b.build(EnrichedSnapshot(2 * SECOND, [quiet, failing]), AgentTelemetry()),
                     "tcp.connection.failed")
    assert sorted((dict(items)["network.peer.address"], dict(items)["error.type"], value)
                  for items, value in failed) == [("198.18.20.2", "timeout", 2)]


def test_a_changed_series_keeps_its_unit_when_its_attribute_dict_is_the_same():
    """The enricher hands out one attribute dict per key while nothing about it changed: a
    changed series is found by it (no re-sorting), and the points carry the new value."""
    b = builder(enabled={"tcp.connection.opened"})
    record = tcp_record("a", "198.18.20.1", 3)
    first = _opened(b.build(EnrichedSnapshot(2 * SECOND, [record]), AgentTelemetry()))
    unit = b._by_attributes[id(record.attributes)]
    changed = Record(record.kind, record.resource, record.attributes, Series(SECOND, TcpStats(opened=5)))
    second = _opened(b.build(EnrichedSnapshot(3 * SECOND, [changed]), AgentTelemetry()))
    assert b._by_attributes[id(record.attributes)] is unit
    assert [value for _, value in first] == [3] and [value for _, value in second] == [5]
    other = Record(record.kind, (("host.name", "h2"),), record.attributes, Series(SECOND, TcpStats(opened=7)))
    third = _opened(b.build(EnrichedSnapshot(4 * SECOND, [other]), AgentTelemetry()))
    assert [value for _, value in third] == [7] and b._by_attributes[id(record.attributes)] is not unit


def test_units_share_attribute_pairs_but_never_across_value_types():
    b = builder(enabled={"tcp.connection.opened"})
    records = [Record(RecordKind.TCP, (("host.name", "h1"),), {"network.peer.address": peer, "server.port": port},
                      Series(SECOND, TcpStats(opened=1)))
               for peer, port in (("a", 1), ("b", 1), ("c", True), ("d", 0.0), ("e", -0.0))]
    b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry())
    units = [b._by_attributes[id(r.attributes)] for r in records]
    ports = [dict(u.attributes.items)["server.port"] for u in units]
    assert [type(p) for p in ports] == [int, int, bool, float, float]
    assert [math.copysign(1, p) for p in ports[3:]] == [1, -1]
    assert units[0].attributes.items[1] is units[1].attributes.items[1]


def test_a_unit_given_a_new_attribute_dict_forgets_the_old_one():
    b = builder(enabled={"tcp.connection.opened"})
    record = tcp_record("a", "198.18.20.1", 3)
    b.build(EnrichedSnapshot(2 * SECOND, [record]), AgentTelemetry())
    again = Record(record.kind, record.resource, dict(record.attributes), Series(SECOND, TcpStats(opened=4)))
    b.build(EnrichedSnapshot(3 * SECOND, [again]), AgentTelemetry())
    assert list(b._by_attributes) == [id(again.attributes)]


def test_a_merged_histogram_whose_member_leaves_gives_the_remaining_members_increase():
    """Two flows merged by an opt-out: one leaves (its samples with it) while the other
    gains as many in another bucket. The delta is what the remaining flow gained: no
    negative bucket (which OTLP cannot carry), and not its whole history again."""
    b = builder(delta=True, enabled={"tcp.rtt"}, dropped=("network.peer.address",))
    bounds = (0.1, 1.0)

    def record(peer, counts):
        stats = TcpStats(rtt=Histogram(bounds, counts, 0.5, sum(counts)))
        return Record(RecordKind.TCP, (("host.name", "h1"),), {"network.peer.address": peer, "server.port": 80},
                      Series(SECOND, stats))

    b.build(EnrichedSnapshot(2 * SECOND, [record("a", [2, 0, 0]), record("b", [0, 1, 0])]), AgentTelemetry())
    batch = b.build(EnrichedSnapshot(3 * SECOND, [record("b", [0, 1, 2])]), AgentTelemetry())
    [(_, rtt)] = _opened(batch, "tcp.rtt")
    assert (rtt.counts, rtt.count, rtt.sum) == ([0, 0, 2], 2, 0.0)
    assert len(list(encoding.requests(batch, 8192))) == 1


def test_a_units_points_sit_metric_after_metric_with_a_shared_shape():
    """A unit keeps its points in one tuple and a shape of offsets: a failure reason goes in
    at its metric's place, a missing histogram takes no room, and units that have the same
    points per metric share one shape object."""
    b = builder()
    failed = {reason: 0 for reason in FailureReason} | {FailureReason.REFUSED: 3}
    stats = [TcpStats(opened=1, bytes_sent=10),
             TcpStats(opened=2, bytes_sent=20),
             TcpStats(opened=3, bytes_sent=30, failed=failed, rtt=Histogram((0.1,), [1, 0], 0.05, 1)),
             TcpStats(opened=4, bytes_sent=40), TcpStats(opened=6, bytes_sent=60)]
    records = [Record(RecordKind.TCP, (("host.name", "h1"),), {"network.peer.address": f"198.18.20.{n}"},
                      Series(SECOND, s)) for n, s in enumerate(stats, 1)]
    batch = b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry())
    units = [b._by_attributes[id(r.attributes)] for r in records]
    names = [m.definition.name for m in b._by_kind[RecordKind.TCP]]
    for unit, s in zip(units, stats):
        by_metric = {name: unit.points_of(i) for i, name in enumerate(names)}
        assert sum(map(len, by_metric.values())) == len(unit.points)
        assert [p.value for p in by_metric["tcp.connection.opened"]] == [s.opened]
        assert [(dict(p.extra.items)["error.type"], p.value) for p in by_metric["tcp.connection.failed"]] == (
            [("refused", 3)] if s.failed else [])
        assert len(by_metric["tcp.rtt"]) == (1 if s.rtt else 0)
    assert units[0].shape is units[1].shape and units[2].shape != units[0].shape
    exported = {(dict(items)["network.peer.address"], value) for items, value in _opened(batch)}
    assert exported == {("198.18.20.1", 1), ("198.18.20.2", 2), ("198.18.20.3", 3), ("198.18.20.4", 4),
                        ("198.18.20.5", 6)}
    failed_before = [m for _, _, m in batch.metrics() if m.definition.name == "tcp.connection.failed"]
    # one unit in five changes: patched in place, the others' points stay where they were
    records[1] = Record(RecordKind.TCP, records[1].resource, records[1].attributes,
                        Series(SECOND, TcpStats(opened=5, bytes_sent=50)))
    batch = b.build(EnrichedSnapshot(3 * SECOND, records), AgentTelemetry())
    exported = {(dict(items)["network.peer.address"], value) for items, value in _opened(batch)}
    assert exported == {("198.18.20.1", 1), ("198.18.20.2", 5), ("198.18.20.3", 3), ("198.18.20.4", 4),
                        ("198.18.20.5", 6)}
    failed_after = [m for _, _, m in batch.metrics() if m.definition.name == "tcp.connection.failed"]
    assert failed_after == failed_before and failed_after[0] is failed_before[0]  # kept, not rebuilt
    assert [p.value for p in failed_after[0].points] == [3]


# -- carried-over metrics against a fresh build, in order ---------------------------------

def _carried_world(rnd, step, records):
    """A few records change, leave, come back at the end (a new order), gain a histogram
    or a failure reason (a new shape); UDP records come and go (a kind appears)."""
    for _ in range(rnd.choice([0, 1, 2, 3])):
        n = rnd.randrange(24)
        key = ("udp" if n >= 20 else "tcp", n % 2, n)
        if key in records and rnd.random() < .25:
            del records[key]
            continue
        if key[0] == "udp":
            stats = UdpStats(bytes_sent=step * n, packets_sent=step)
        else:
            stats = TcpStats(opened=step + n, bytes_sent=step,
                             failed={FailureReason.REFUSED: 1} if rnd.random() < .3 else {},
                             rtt=Histogram((0.1,), [step, 1], 0.5, step + 1) if rnd.random() < .5 else None)
        if key in records and rnd.random() < .2:
            del records[key]  # back at once: at the end of the table
        records[key] = Record(RecordKind.UDP if key[0] == "udp" else RecordKind.TCP,
                              (("host.name", "h1"), ("workload", key[1])),
                              {"network.peer.address": f"198.18.21.{n}"}, Series(SECOND, stats))


def _in_order(batch):
    return [(resource.attributes.items, metric.definition.name,
             [(p.attribute_items(), p.start_ns, p.value) for p in metric.points])
            for resource, _, metric in batch.metrics()]


@pytest.mark.parametrize("seed", range(6))
def test_carried_metrics_are_a_fresh_builds_in_order_whatever_the_exports_did(seed):
    """Units change, leave, come back elsewhere and change shape while the metrics are
    carried over; exports encode each batch fully, in part (stopped) or not at all
    (Prometheus only): every batch is what a fresh builder makes of the same records, in
    the same order, and encodes to the same bytes."""
    rnd = random.Random(seed)
    b, records = builder(), {}
    for n in range(20):
        records[("tcp", n % 2, n)] = tcp_record("a", f"198.18.21.{n}", n, resource=(
            ("host.name", "h1"), ("workload", n % 2)))
    for step in range(2, 40):
        _carried_world(rnd, step, records)
        snapshot = EnrichedSnapshot(step * SECOND, list(records.values()))
        batch, fresh = b.build(snapshot, AgentTelemetry()), builder().build(snapshot, AgentTelemetry())
        assert _in_order(batch) == _in_order(fresh), step
        export = rnd.choice(["full", "part", "none"])
        if export == "full":
            assert [r.payload for r in encoding.requests(batch, 10**6)] == [
                r.payload for r in encoding.requests(fresh, 10**6)], step
        elif export == "part":
            next(encoding.requests(batch, 3))


def _never_carrying(b):
    """`b`, made to build every resource's metrics anew each interval (no layout)."""
    b._carried_over = lambda resource, layout, units, time_ns: MetricsBuilder._carried_over(
        b, resource, None, units, time_ns)
    return b


@pytest.mark.parametrize("seed", range(6))
def test_a_resource_with_narrow_units_carries_its_other_kinds_as_a_rebuilding_builder_does(seed):
    """DNS series (narrow: the timeout count has no error.type, so a workload's lookups of
    one name merge) sit in the resources of carried TCP and UDP series, and come and go:
    every batch is what a builder that rebuilds everything makes of the same records (the
    merged points are running totals: a fresh builder would not know their history)."""
    rnd = random.Random(seed)
    b, rebuilding, records = builder(), _never_carrying(builder()), {}
    for n in range(20):
        records[("tcp", n % 2, n)] = tcp_record("a", f"198.18.21.{n}", n, resource=(
            ("host.name", "h1"), ("workload", n % 2)))
    for step in range(2, 40):
        _carried_world(rnd, step, records)
        for _ in range(rnd.choice([0, 1, 2])):
            n = rnd.randrange(4)
            key = ("dns", n % 2, n)
            if key in records and rnd.random() < .3:
                del records[key]
                continue
            stats = DnsStats(Histogram((0.01,), [step, 0], 0.001 * step, step), step % 3)
            records[key] = Record(RecordKind.DNS, (("host.name", "h1"), ("workload", key[1])),
                                  {"dns.question.name": "a.test", "server.address": "198.18.20.53",
                                   "error.type": ("nxdomain", "servfail")[n // 2]}, Series(SECOND, stats))
        snapshot = EnrichedSnapshot(step * SECOND, list(records.values()))
        batch = b.build(snapshot, AgentTelemetry())
        assert _in_order(batch) == _in_order(rebuilding.build(snapshot, AgentTelemetry())), step
        if rnd.random() < .7:
            list(encoding.requests(batch, 10**6))


def test_units_that_one_metric_merges_joining_a_carried_resource_are_merged():
    """A resource of DNS series without errors has its metrics carried over; two series of
    one name that differ in error.type join it. dns.lookup.timeout.count has no error.type:
    their timeouts are one point, added together, not two points of one attribute set."""
    b = builder(enabled={"dns.lookup.duration", "dns.lookup.timeout.count"})

    def record(name, timeouts, error=None):
        attributes = {"dns.question.name": name, "server.address": "198.18.22.1",
                      **({"error.type": error} if error else {})}
        return Record(RecordKind.DNS, (("host.name", "h1"),), attributes, Series(SECOND, DnsStats(timeouts=timeouts)))

    records = [record(f"n{n}.test", n) for n in range(1, 9)]
    b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry())
    joined = records + [record("x.test", 10, "timeout"), record("x.test", 20, "servfail")]
    batch = b.build(EnrichedSnapshot(3 * SECOND, joined), AgentTelemetry())
    assert sorted(value for _, value in _opened(batch, "dns.lookup.timeout.count")) == [1, 2, 3, 4, 5, 6, 7, 8, 30]
