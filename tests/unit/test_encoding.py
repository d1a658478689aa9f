"""The hand-written OTLP encoder: its bytes parse to exactly what the SDK's encoder makes."""

import dataclasses
import math

import pytest
from hypothesis import given, settings, strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_netreceiver.enrich.base import Enricher
from otel_netreceiver.export import encoding
from otel_netreceiver.flows.model import EnrichedSnapshot, Histogram, Record, RecordKind, Series, Snapshot, TcpStats
from otel_netreceiver.metrics import catalog
from otel_netreceiver.metrics.builder import AgentTelemetry, BuildSettings, MetricsBuilder
from otel_netreceiver.metrics.points import (
    CUMULATIVE, DELTA, AttributeSet, Batch, MetricData, Point, ResourceData, ScopeData,
)
from tests.support import fake_source
from tests.unit.sdk_data import to_sdk

CATALOG = catalog.load()
SECOND = 1_000_000_000


def decoded(batch, max_points=10**9):
    return [ExportMetricsServiceRequest.FromString(r.payload) for r in encoding.requests(batch, max_points)]


def builder(delta=False, dropped=()):
    settings_ = BuildSettings(frozenset(CATALOG.metrics), frozenset(dropped), frozenset(), delta)
    return MetricsBuilder(CATALOG, settings_, {"host.name": "h", "service.name": "agent"}, SECOND // 2)


def fake_batches(b, steps):
    source, enricher = fake_source.FakeCollector(), Enricher({"host.name": "h"})
    for step in range(1, steps + 1):
        snapshot = Snapshot(step * SECOND)
        source.collect(snapshot)
        yield b.build(enricher.enrich(snapshot), AgentTelemetry({"otlp": 1}, 0.25))


@pytest.mark.parametrize("delta, dropped", [
    (False, ()), (True, ()), (False, ("network.io.direction",)), (True, ("network.peer.address",)),
])
def test_builder_output_encodes_as_the_sdk_does(delta, dropped):
    for batch in fake_batches(builder(delta, dropped), 3):
        [ours] = decoded(batch)
        assert ours == encode_metrics(to_sdk(batch))
        scopes = [sm.scope.name for rm in ours.resource_metrics for sm in rm.scope_metrics]
        assert scopes == [CATALOG.flows_scope, CATALOG.agent_scope]


def test_unchanged_points_reuse_their_bytes_and_still_carry_the_new_time():
    """The same Series object in the next interval: same Point objects, new time field."""
    b = builder()
    enricher = Enricher({"host.name": "h"})
    snapshot = Snapshot(2 * SECOND)
    fake_source.FakeCollector().collect(snapshot)
    first = b.build(enricher.enrich(snapshot), AgentTelemetry())
    decoded(first)
    snapshot.time_ns = 3 * SECOND
    second = b.build(enricher.enrich(snapshot), AgentTelemetry())
    tcp = [m for _, _, m in second.metrics() if m.definition.name == "tcp.io"][0]
    assert all(p.encoded is not None for p in tcp.points)  # encoded in the first interval
    [ours] = decoded(second)
    assert ours == encode_metrics(to_sdk(second))
    times = {p.time_unix_nano for rm in ours.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics for p in getattr(m, m.WhichOneof("data")).data_points}
    assert times == {3 * SECOND}


def test_changed_series_get_new_points():
    b = builder()
    record = Record(RecordKind.TCP, (("host.name", "h"),), {"server.port": 80}, Series(SECOND, TcpStats(opened=1)))
    first = b.build(EnrichedSnapshot(2 * SECOND, [record]), AgentTelemetry())
    record.series = Series(SECOND, TcpStats(opened=5))
    second = b.build(EnrichedSnapshot(3 * SECOND, [record]), AgentTelemetry())
    [opened] = [m for _, _, m in second.metrics() if m.definition.name == "tcp.connection.opened"]
    assert [p.value for p in opened.points] == [5]
    assert decoded(second)[0] == encode_metrics(to_sdk(second)) and first is not second


def _records(opened_by_port):
    return [Record(RecordKind.TCP, (("host.name", "h"),), {"server.port": port},
                   Series(SECOND, TcpStats(opened=opened, closed=opened))) for port, opened in opened_by_port.items()]


def test_series_that_come_and_go_keep_the_pieces_of_those_that_stay():
    """Units carried over (some left, some came, one changed): only the new points are
    encoded again, and the request is what the SDK makes of the batch."""
    b = builder()
    opened = {port: port for port in range(1, 21)}
    records = _records(opened)
    decoded(b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry()))
    kept = {r.attributes["server.port"]: r for r in records}
    del kept[3], kept[7]
    kept[5] = _records({5: 500})[0]
    records = list(kept.values()) + _records({30: 30, 31: 31})
    batch = b.build(EnrichedSnapshot(3 * SECOND, records), AgentTelemetry())
    [opened_metric] = [m for _, _, m in batch.metrics() if m.definition.name == "tcp.connection.opened"]
    assert [p.value for p in opened_metric.points] == [1, 2, 4, 500, 6] + list(range(8, 21)) + [30, 31]
    assert sorted(opened_metric.stale) == [3, 18, 19] and opened_metric.parts is not None
    assert decoded(batch)[0] == encode_metrics(to_sdk(batch))


def test_pieces_an_unfinished_export_left_out_are_not_carried_over():
    """An export that failed before a metric leaves its stale points without pieces: the
    next interval's MetricData must not take the gaps over (nor the replaced points' old
    pieces: the changed series' tcp.connection.closed is left unencoded)."""
    b = builder()
    records = _records({port: port for port in range(1, 21)})
    decoded(b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry()))
    records[4] = _records({5: 500})[0]
    batch = b.build(EnrichedSnapshot(3 * SECOND, records), AgentTelemetry())
    next(encoding.requests(batch, 1))  # the first request only: the export stopped there
    left = [m for _, _, m in batch.metrics() if m.stale]
    assert left, "some metric was left with stale points"
    records[9] = _records({10: 1000})[0]
    batch = b.build(EnrichedSnapshot(4 * SECOND, records), AgentTelemetry())
    assert decoded(batch)[0] == encode_metrics(to_sdk(batch))


def test_requests_are_split_at_max_points_and_keep_every_point():
    b = builder()
    snapshot = Snapshot(2 * SECOND)
    for port in range(50):
        snapshot.tcp[dataclasses.replace(fake_source.OUT, server_port=port + 1)] = Series(SECOND, fake_source.tcp_stats(1))
    batch = b.build(Enricher({"host.name": "h"}).enrich(snapshot), AgentTelemetry())
    requests = list(encoding.requests(batch, 64))
    assert [r.points for r in requests[:-1]] == [64] * (len(requests) - 1) and requests[-1].points <= 64
    assert sum(r.points for r in requests) == batch.point_count()
    whole = encode_metrics(to_sdk(batch))
    assert _points_by_metric(decoded(batch, 64)) == _points_by_metric([whole])


def _points_by_metric(requests):
    out = {}
    for request in requests:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    data = getattr(m, m.WhichOneof("data"))
                    out.setdefault((sm.scope.name, m.name), []).extend(p.SerializeToString() for p in data.data_points)
    return out


# -- property: any attribute values, any numbers, histograms ---------------------------------

attribute_values = st.one_of(
    st.text(), st.booleans(), st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=False), st.sampled_from([0.0, -0.0, "", 0, -1, 2**63 - 1, -2**63]))
attributes = st.lists(st.tuples(st.text(min_size=1), attribute_values), max_size=6, unique_by=lambda kv: kv[0])
histograms = st.integers(0, 5).flatmap(lambda n: st.builds(
    lambda bounds, counts, total: Histogram(tuple(sorted(bounds)), counts, total, sum(counts)),
    st.lists(st.floats(-1e9, 1e9), min_size=n, max_size=n),
    st.lists(st.integers(0, 2**40), min_size=n + 1, max_size=n + 1),
    st.floats(allow_nan=False, allow_infinity=False)))

METRIC_NAMES = ["tcp.io", "tcp.connection.active", "otel_netreceiver.map.fill",
                "otel_netreceiver.flows.tracked", "tcp.rtt"]


def _value(definition, draw):
    if definition.kind == "histogram":
        return draw(histograms)
    if definition.value_type == "int":
        return draw(st.integers(-2**63, 2**63 - 1))
    return draw(st.floats(allow_nan=False))


def _point(definition, draw):
    """A point whose attributes and extra attributes have distinct names, as the builder's."""
    items = draw(attributes)
    split = draw(st.integers(0, len(items)))
    start = 0 if definition.kind == "gauge" else draw(st.integers(0, 2**64 - 1))
    return Point(AttributeSet(tuple(items[:split])), AttributeSet(tuple(items[split:])), start,
                 _value(definition, draw))


@st.composite
def batches(draw):
    resources = []
    for index in range(draw(st.integers(1, 3))):
        scope = ScopeData(draw(st.text(max_size=10)), draw(st.text(max_size=5)))
        for name in draw(st.lists(st.sampled_from(METRIC_NAMES), min_size=1, max_size=4, unique=True)):
            definition = CATALOG.metrics[name]
            points = [_point(definition, draw) for _ in range(draw(st.integers(0, 4)))]
            scope.metrics.append(MetricData(definition, draw(st.sampled_from([DELTA, CUMULATIVE])), points))
        # distinct resources: the SDK's encoder merges equal ones (the builder never makes two)
        own = (("resource.index", index),) + tuple(kv for kv in draw(attributes) if kv[0] != "resource.index")
        resources.append(ResourceData(AttributeSet(own), [scope]))
    return Batch(draw(st.integers(0, 2**64 - 1)), resources)


@settings(max_examples=150, deadline=None)
@given(batches())
def test_any_batch_encodes_as_the_sdk_does(batch):
    [ours] = decoded(batch) or [ExportMetricsServiceRequest()]
    assert ours == _sdk_without_empty_metrics(batch)


def _sdk_without_empty_metrics(batch):
    """The SDK encodes every metric; a request holds only metrics with points (as the SDK's
    own splitter does), so empty metrics are left out of the comparison."""
    for resource in batch.resources:
        for scope in resource.scopes:
            scope.metrics = [m for m in scope.metrics if m.points]
        resource.scopes = [s for s in resource.scopes if s.metrics]
    batch.resources = [r for r in batch.resources if r.scopes]
    return encode_metrics(to_sdk(batch))


@settings(max_examples=150, deadline=None)
@given(batches(), st.integers(1, 6), st.integers(1, 3000))
def test_any_batch_splits_within_max_points_and_max_bytes(batch, max_points, max_bytes):
    """Every request within both limits (a data point larger than max_bytes goes alone);
    together they hold exactly the SDK's data points."""
    requests = list(encoding.requests(batch, max_points, max_bytes))
    assert all(r.points <= max_points and (len(r.payload) <= max_bytes or r.points == 1) for r in requests)
    assert sum(r.points for r in requests) == batch.point_count()
    ours = [ExportMetricsServiceRequest.FromString(r.payload) for r in requests]
    assert _points_by_metric(ours) == _points_by_metric([_sdk_without_empty_metrics(batch)])


@pytest.mark.parametrize("max_bytes", [2_000, 20_000])
def test_requests_split_by_bytes_are_nearly_full(max_bytes):
    """The size kept for each point lets a request fill up to its limit, less at most one
    point and the request's few messages around the points."""
    b = builder()
    snapshot = Snapshot(2 * SECOND)
    for port in range(200):
        snapshot.tcp[dataclasses.replace(fake_source.OUT, server_port=port + 1)] = Series(SECOND, fake_source.tcp_stats(1))
    batch = b.build(Enricher({"host.name": "h"}).enrich(snapshot), AgentTelemetry())
    sizes = [len(r.payload) for r in encoding.requests(batch, 10**9, max_bytes)]
    assert len(sizes) > 3 and max(sizes) <= max_bytes
    assert min(sizes[:-1]) > max_bytes - 1_000
    assert _points_by_metric(decoded(batch, 10**9)) == _points_by_metric(
        [ExportMetricsServiceRequest.FromString(r.payload) for r in encoding.requests(batch, 10**9, max_bytes)])


@pytest.mark.parametrize("value", [float("inf"), -0.0, 5e-324, math.pi])
def test_special_doubles_round_trip(value):
    assert encoding.any_value(value)[0] == 0x21
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    assert AnyValue.FromString(encoding.any_value(value)).double_value == value


@pytest.mark.parametrize("values", [(True, 1), (1, True), (False, 0), (1, 1.0), (0.0, -0.0), (-0.0, 0.0),
                                    ("1", 1), (2**63 - 1, -1)])
def test_kept_key_values_tell_equal_values_of_other_types_apart(values):
    """True == 1 == 1.0 and 0.0 == -0.0 in Python, not in OTLP: each encodes as itself
    whatever was encoded before it."""
    for value in values:
        assert encoding._tagged(AttributeSet((("k", value),)), 0x3A) == b"\x3a" + encoding._key_value("k", value)


def test_kept_key_values_are_bounded(monkeypatch):
    monkeypatch.setattr(encoding, "_KEPT_KEY_VALUES", 10)
    monkeypatch.setattr(encoding, "_KEY_VALUES", {})
    sets = [AttributeSet((("port", port), ("transport", "tcp"))) for port in range(50)]
    fields = [encoding._tagged(s, 0x3A) for s in sets]
    assert len(encoding._KEY_VALUES) <= 10
    assert fields == [b"".join(b"\x3a" + encoding._key_value(k, v) for k, v in s.items) for s in sets]


def test_unsupported_attribute_value_is_an_error_with_context():
    with pytest.raises(TypeError, match="b'x'"):
        encoding.any_value(b"x")


def test_negative_zero_bound_is_not_served_from_a_cache_of_positive_zero():
    definition = CATALOG.metrics["tcp.rtt"]
    for bound in (0.0, -0.0):
        point = Point(AttributeSet(()), AttributeSet(()), 1, Histogram((bound,), [1, 0], 0.5, 1))
        batch = Batch(2, [ResourceData(AttributeSet((("r", 1),)), [ScopeData("s", "v", [
            MetricData(definition, CUMULATIVE, [point])])])])
        assert decoded(batch)[0].SerializeToString() == encode_metrics(to_sdk(batch)).SerializeToString()


# -- intervals: metrics kept across builds, points replaced in place ----------------------------

def _tcp(workload, port, opened, failed=()):
    from otel_netreceiver.flows.model import FailureReason
    stats = TcpStats(opened=opened, bytes_sent=10 * opened, failed={FailureReason(r): 1 for r in failed},
                     rtt=Histogram((0.001, 0.01), [opened, 0, 1], 0.5, opened + 1))
    return Record(RecordKind.TCP, (("service.name", workload),), {"server.port": port, "network.transport": "tcp"},
                  Series(SECOND, stats))


def _changed(record, opened, failed=()):
    return Record(record.kind, record.resource, record.attributes, _tcp("x", 0, opened, failed).series)


def _intervals():
    """(name, records) per interval: what changes from one to the next."""
    a = [_tcp("a", port, 1) for port in range(6)]
    b = [_tcp("b", port, 1) for port in range(3)]
    yield "first", a + b
    yield "none changed", a + b
    a[2] = _changed(a[2], 7)
    yield "one changed", a + b
    a[0], b[1] = _changed(a[0], 8), _changed(b[1], 9)
    yield "two resources changed", a + b
    a[3] = _changed(a[3], 10, failed=("refused",))
    yield "a series gains a point", a + b
    del a[4]
    yield "a series disappears", a + b
    a.append(_tcp("a", 99, 5))
    yield "a resource gains a series", a + b
    yield "a resource loses all its series", a
    yield "none changed again", a


@pytest.mark.parametrize("delta", [False, True])
@pytest.mark.parametrize("max_points", [10**9, 7])
def test_successive_intervals_encode_as_the_sdk_does(delta, max_points):
    """Whatever changes between intervals, the requests hold exactly the SDK's data points,
    with this interval's time, never more than max_points a request."""
    b = builder(delta)
    for step, (name, records) in enumerate(_intervals(), start=2):
        batch = b.build(EnrichedSnapshot(step * SECOND, records), AgentTelemetry())
        requests = list(encoding.requests(batch, max_points))
        assert all(r.points <= max_points for r in requests), name
        whole = encode_metrics(to_sdk(batch))
        assert _points_by_metric(decoded(batch, max_points)) == _points_by_metric([whole]), name
        if max_points > batch.point_count():
            assert decoded(batch)[0] == whole, name
        opened = {(_attribute(rm.resource, "service.name").string_value,
                   _attribute(p, "server.port").int_value): p.as_int
                  for rm in whole.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                  if m.name == "tcp.connection.opened" for p in m.sum.data_points}
        expected = {(r.resource[0][1], r.attributes["server.port"]): r.series.stats.opened for r in records}
        if not delta:
            assert opened == expected, name
        else:
            assert opened.keys() == expected.keys(), name


def _attribute(message, key):
    [value] = [kv.value for kv in message.attributes if kv.key == key]
    return value


def test_kept_pieces_never_carry_a_time_into_another_batch():
    """Two batches sharing kept MetricData (nothing changed), encoded in either order (an
    abandoned export may still encode the older one): each has its own time only."""
    b = builder()
    records = [_tcp("a", port, 1) for port in range(3)]
    older = b.build(EnrichedSnapshot(2 * SECOND, records), AgentTelemetry())
    newer = b.build(EnrichedSnapshot(3 * SECOND, records), AgentTelemetry())
    for batch, time_ns in [(newer, 3 * SECOND), (older, 2 * SECOND), (newer, 3 * SECOND)]:
        [ours] = decoded(batch)
        assert ours == encode_metrics(to_sdk(batch))
        assert {p.time_unix_nano for rm in ours.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                for p in getattr(m, m.WhichOneof("data")).data_points} == {time_ns}
