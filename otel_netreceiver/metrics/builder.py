"""EnrichedSnapshot -> OTLP MetricsData (the SDK's data classes), one Resource per workload.

Values arrive cumulative. With delta temporality the builder subtracts the previous
cumulative value of each point (monotonic sums and histograms; non-monotonic sums stay
cumulative, as the SDK's delta preference does), and the point starts where the last
one ended. Records that share a resource and attribute set after attribute opt-outs are
added together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram as OtlpHistogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_netreceiver import __version__
from otel_netreceiver.flows.model import EnrichedSnapshot, Histogram, Record, RecordKind
from otel_netreceiver.metrics import fields
from otel_netreceiver.metrics.catalog import Catalog, MetricDef

AttrKey = tuple[tuple[str, object], ...]
DELTA_MEMORY_BUILDS = 30  # intervals a vanished series' last value is kept for delta


@dataclass(frozen=True, slots=True)
class BuildSettings:
    """What the configuration decided: enabled metrics, opt-outs, temporality."""

    enabled_metrics: frozenset[str]
    dropped_attributes: frozenset[str] = frozenset()
    dropped_resource_attributes: frozenset[str] = frozenset()
    delta: bool = False


@dataclass(slots=True)
class AgentTelemetry:
    """The agent's own readings that do not come from the Snapshot."""

    export_failures: dict[str, int] = field(default_factory=dict)
    collection_duration_s: float | None = None


@dataclass(slots=True)
class _Point:
    start_ns: int
    value: int | float | Histogram


class MetricsBuilder:
    """Builds MetricsData per interval; holds only the previous values needed for delta."""

    def __init__(self, catalog: Catalog, settings: BuildSettings,
                 agent_resource: dict[str, object], start_ns: int) -> None:
        self._catalog = catalog
        self._settings = settings
        self._agent_resource = self._filter_resource(agent_resource)
        self._start_ns = start_ns
        self._flow_metrics = [m for name, m in catalog.metrics.items()
                              if name in fields.FIELDS and name in settings.enabled_metrics]
        self._allowed = {m.name: frozenset(a.name for a in m.attributes) - settings.dropped_attributes
                         for m in catalog.metrics.values()}
        self._keys: dict[tuple[int, frozenset[str]], AttrKey] = {}
        # delta state: point key -> (series start, time of last export, cumulative value, build)
        self._previous: dict[tuple, tuple[int, int, int | float | Histogram, int]] = {}
        self._builds = 0

    @property
    def temporality(self) -> AggregationTemporality:
        delta = self._settings.delta
        return AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE

    def build(self, enriched: EnrichedSnapshot, telemetry: AgentTelemetry) -> MetricsData:
        """One MetricsData: a ResourceMetrics per workload, then the agent's own."""
        self._builds += 1
        self._keys = {}
        scopes: dict[AttrKey, list[ScopeMetrics]] = {}
        for resource, records in self._group(enriched.records).items():
            metrics = self._flow_metrics_for(resource, records, enriched.time_ns)
            if metrics:
                scopes.setdefault(resource, []).append(self._scope(self._catalog.flows_scope, metrics))
        agent = self._agent_metrics(enriched, telemetry)
        if agent:
            # The same Resource twice would be merged (and clobbered) by the encoder: share it.
            key = tuple(sorted(self._agent_resource.items()))
            scopes.setdefault(key, []).append(self._scope(self._catalog.agent_scope, agent))
        self._forget_old_series()
        self._keys = {}
        return MetricsData([ResourceMetrics(Resource(dict(resource), ""), scope_metrics, "")
                            for resource, scope_metrics in scopes.items()])

    # -- flows -------------------------------------------------------------------------

    def _group(self, records: list[Record]) -> dict[AttrKey, list[Record]]:
        groups: dict[AttrKey, list[Record]] = {}
        for record in records:
            resource = tuple(kv for kv in record.resource
                             if kv[0] not in self._settings.dropped_resource_attributes)
            groups.setdefault(resource, []).append(record)
        return groups

    def _flow_metrics_for(self, resource: AttrKey, records: list[Record], time_ns: int) -> list[Metric]:
        metrics = []
        for definition in self._flow_metrics:
            points = self._aggregate(definition, records)
            if points:
                metrics.append(self._metric(definition, ("flow", resource), points, time_ns))
        return metrics

    def _aggregate(self, definition: MetricDef, records: list[Record]) -> dict[AttrKey, _Point]:
        """Sum the series of one resource per exported attribute set."""
        table = fields.FIELDS[definition.name]
        allowed = self._allowed[definition.name]
        points: dict[AttrKey, _Point] = {}
        for record in records:
            if record.kind is not table.kind:
                continue
            base = self._base_key(record, allowed)
            for extra, value in table.points(record.series.stats):
                key = base + tuple(kv for kv in extra.items() if kv[0] in allowed)
                _add(points, key, record.series.start_ns, value)
        return points

    def _base_key(self, record: Record, allowed: frozenset[str]) -> AttrKey:
        """A record's attributes a metric keeps; metrics with the same list share the work."""
        cache_key = (id(record), allowed)
        key = self._keys.get(cache_key)
        if key is None:
            key = self._keys[cache_key] = tuple(sorted(
                kv for kv in record.attributes.items() if kv[0] in allowed))
        return key

    # -- agent's own telemetry -----------------------------------------------------------

    def _agent_metrics(self, enriched: EnrichedSnapshot, telemetry: AgentTelemetry) -> list[Metric]:
        readings: dict[str, dict[AttrKey, _Point]] = {}
        start, time_ns = self._start_ns, enriched.time_ns
        name, key = fields.AGENT_LOSSES
        readings[name] = {((key, reason),): _Point(start, n) for reason, n in enriched.losses.items()}
        name, key = fields.AGENT_GAUGES
        readings[name] = {((key, gauge),): _Point(time_ns, float(n)) for gauge, n in enriched.gauges.items()}
        readings[fields.AGENT_MAP_FILL[0]] = _map_fill(enriched.gauges, time_ns)
        name, key = fields.AGENT_FLOWS_TRACKED
        readings[name] = {((key, kind.value),): _Point(time_ns, 0) for kind in RecordKind}
        for record in enriched.records:
            readings[name][((key, record.kind.value),)].value += 1
        name, key = fields.AGENT_EXPORT_FAILURES
        readings[name] = {((key, exporter),): _Point(start, n)
                          for exporter, n in telemetry.export_failures.items()}
        if telemetry.collection_duration_s is not None:
            readings[fields.AGENT_COLLECTION_DURATION] = {(): _Point(time_ns, telemetry.collection_duration_s)}
        return [self._metric(self._catalog.metrics[name], ("agent",), points, time_ns)
                for name, points in readings.items()
                if points and name in self._settings.enabled_metrics]

    # -- OTLP data -------------------------------------------------------------------------

    def _scope(self, scope: str, metrics: list[Metric]) -> ScopeMetrics:
        return ScopeMetrics(InstrumentationScope(scope, __version__), metrics, "")

    def _filter_resource(self, resource: dict[str, object]) -> dict[str, object]:
        dropped = self._settings.dropped_resource_attributes
        return {k: v for k, v in resource.items() if k not in dropped}

    def _metric(self, definition: MetricDef, scope_key: tuple, points: dict[AttrKey, _Point],
                time_ns: int) -> Metric:
        delta = self._settings.delta and (definition.monotonic or definition.kind == "histogram")
        data_points = []
        for attributes, point in points.items():
            state_key = (scope_key, definition.name, attributes)
            start, value = self._delta(state_key, point, time_ns) if delta else (point.start_ns, point.value)
            data_points.append(_data_point(definition, dict(attributes), start, time_ns, value))
        temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
        if definition.kind == "histogram":
            data = OtlpHistogram(data_points, temporality)
        elif definition.kind == "sum":
            data = Sum(data_points, temporality, definition.monotonic)
        else:
            data = Gauge(data_points)
        return Metric(definition.name, definition.description, definition.unit, data)

    def _delta(self, state_key: tuple, point: _Point, time_ns: int):
        """(start, value) of a delta point. A series that restarted (new start, or went
        backwards) starts over; one absent for some intervals continues where it was."""
        previous = self._previous.get(state_key)
        self._previous[state_key] = (point.start_ns, time_ns, point.value, self._builds)
        if previous is None or previous[0] != point.start_ns or _went_backwards(previous[2], point.value):
            return point.start_ns, point.value
        return previous[1], _subtract(point.value, previous[2])

    def _forget_old_series(self) -> None:
        """Drop delta state of series not seen for DELTA_MEMORY_BUILDS intervals."""
        oldest = self._builds - DELTA_MEMORY_BUILDS
        if self._builds % DELTA_MEMORY_BUILDS == 0:
            self._previous = {k: v for k, v in self._previous.items() if v[3] > oldest}


def _map_fill(gauges: dict[str, float], time_ns: int) -> dict[AttrKey, _Point]:
    """`<map>.tracked / <map>.capacity` for every map that reports both."""
    _, key, tracked, capacity = fields.AGENT_MAP_FILL
    fill = {}
    for gauge, value in gauges.items():
        if gauge.endswith(tracked):
            map_name = gauge[: -len(tracked)]
            total = gauges.get(map_name + capacity)
            if total:
                fill[((key, map_name),)] = _Point(time_ns, value / total)
    return fill


def _add(points: dict[AttrKey, _Point], key: AttrKey, start_ns: int, value) -> None:
    existing = points.get(key)
    if existing is None:
        points[key] = _Point(start_ns, _copy(value))
        return
    existing.start_ns = min(existing.start_ns, start_ns)
    if isinstance(value, Histogram):
        existing.value.merge(value)
    else:
        existing.value += value


def _copy(value):
    if isinstance(value, Histogram):
        return Histogram(value.bounds, list(value.counts), value.sum, value.count)
    return value


def _went_backwards(previous, current) -> bool:
    if isinstance(current, Histogram):
        return current.count < previous.count or current.bounds != previous.bounds
    return current < previous


def _subtract(current, previous):
    if isinstance(current, Histogram):
        counts = [a - b for a, b in zip(current.counts, previous.counts)]
        return Histogram(current.bounds, counts, current.sum - previous.sum, current.count - previous.count)
    return current - previous


def _data_point(definition: MetricDef, attributes: dict, start: int, time_ns: int, value):
    if isinstance(value, Histogram):
        return HistogramDataPoint(attributes, start, time_ns, value.count, value.sum,
                                  list(value.counts), list(value.bounds), None, None)
    number = int(value) if definition.value_type == "int" else float(value)
    start = start if definition.kind == "sum" else 0
    return NumberDataPoint(attributes, start, time_ns, number)
