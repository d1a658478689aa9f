"""EnrichedSnapshot -> Batch (metrics/points.py), one resource per workload, in one pass.

Values arrive cumulative. With delta temporality the builder subtracts the previous
cumulative value of each point (monotonic sums and histograms; non-monotonic sums stay
cumulative, as the SDK's delta preference does), and the point starts where the last
one ended.

Records that share a resource and attribute set after attribute opt-outs (or that differ
only in what a metric does not export, or not at all: two processes of one name) are
added together. A monotonic sum or histogram so merged is a running total, as one SDK
instrument fed by all those series would keep it: it grows by each member's increase,
never falls when a member leaves or restarts, and keeps its start (metrics/merging.py;
the totals live with the unit, or per resource for points merged across units).
Non-monotonic sums are the sum of the members present.

Cost follows the series that changed: the records of one resource that export the same
attribute set form a `_Unit`, kept across intervals with its points. A record whose
series is the same object as last interval (FlowTable hands out the same Series for an
unchanged TCP key) and whose attributes did not change reuses its unit's points as they
are, with the encoder's bytes cached on them. With cumulative temporality a resource's
MetricData are kept too (`_Layout`): while its units are those of last interval and none
changed, the same MetricData are handed out again; else new ones are made from them, the
points (and the encoder's pieces) of the units kept as they were copied a run of
neighbours at a time, those of units that changed or came put in between (the encoder
then gathers only those).
"""

from __future__ import annotations

from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from itertools import accumulate, chain, compress, groupby
from operator import add, attrgetter, is_not, itemgetter, sub
from typing import Callable

from opentelemetry.sdk.metrics.export import AggregationTemporality

from otel_netreceiver import __version__
from otel_netreceiver.flows.model import EnrichedSnapshot, Histogram, Record, RecordKind
from otel_netreceiver.metrics import fields
from otel_netreceiver.metrics.catalog import Catalog, MetricDef
from otel_netreceiver.metrics.merging import (
    Accumulator, Member, MemberState, added, plain_sum, subtract, went_backwards,
)
from otel_netreceiver.metrics.points import (
    CUMULATIVE, DELTA, EMPTY, AttributeSet, Batch, MetricData, Point, ResourceData, ScopeData,
)

AttrKey = tuple[tuple[str, object], ...]
DELTA_MEMORY_BUILDS = 30  # intervals a vanished series' last value is kept for delta
CACHE_BUILDS = 3  # intervals an unseen series' attribute set and points are kept
EXTRAS_KEPT = 4096  # extra attribute sets remembered
PAIRS_KEPT = 65536  # distinct attribute (key, value) pairs remembered for sharing
SHAPES_KEPT = 4096  # distinct unit shapes remembered for sharing (merged units vary most)
PATCH_MAX_SHARE = 0.25  # changed units (or stale points) beyond this share: built (encoded) anew


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


@dataclass(frozen=True, slots=True)
class _FlowMetric:
    definition: MetricDef
    field: fields.Field
    allowed: frozenset[str]
    index: int  # position among the enabled metrics of its record kind
    typed: Callable  # the value as exported: int, float, or a Histogram as it is
    gauge: bool  # gauges have no start time
    may_collide: bool  # an opt-out may make two of a series' extra attribute sets equal


class _Resource:
    """One exported resource (attributes after opt-outs), interned across intervals."""

    __slots__ = ("attributes", "build", "last")

    def __init__(self, items: AttrKey) -> None:
        self.attributes = AttributeSet(items)
        self.build = 0
        self.last: _Layout | None = None  # its metrics last interval (cumulative only)


class _Unit:
    """The records of one resource and kind exporting one attribute set, and their points."""

    __slots__ = ("resource", "kind", "attributes", "projections", "narrow", "series",
                 "attrs_src", "resource_src", "points", "shape", "build", "record", "others",
                 "stale")

    def __init__(self, resource: _Resource, kind: RecordKind, attributes: AttributeSet,
                 projections: list[AttributeSet]) -> None:
        self.resource, self.kind, self.attributes = resource, kind, attributes
        # per metric of the kind: the attributes it keeps; narrow when one drops some (when
        # none does, every metric keeps `attributes`: no list is kept)
        self.narrow = any(p is not attributes for p in projections)
        self.projections = projections if self.narrow else None
        self.series = self.attrs_src = self.resource_src = self.record = self.others = None
        # every metric's points in one tuple, metric after metric; metric i's are
        # points[shape[i]:shape[i + 1]] (shapes are shared: a few differ among thousands)
        self.points: tuple[Point, ...] | None = None
        self.shape: tuple[int, ...] = ()
        self.build = 0

    def projection(self, i: int) -> AttributeSet:
        """The attributes the kind's i-th metric exports."""
        return self.attributes if self.projections is None else self.projections[i]

    def points_of(self, i: int) -> tuple[Point, ...]:
        """The points of the kind's i-th metric."""
        return self.points[self.shape[i]:self.shape[i + 1]]

    def set_points(self, per_metric: list) -> None:
        """Keep per-metric point lists flat (one tuple and a shared shape instead of a
        tuple per metric: ~0.6 KB less a unit)."""
        self.points = tuple(chain.from_iterable(per_metric))
        self.shape = _shared_shape(list(map(len, per_metric)))
        self.stale = True


class _Layout:
    """Where each unit's points sit in a resource's MetricData (cumulative, no points
    merged across units), so that next interval's are made from them (`carried`). The
    offsets are found when first needed (never, while everything changes)."""

    __slots__ = ("units", "metrics", "by_kind", "flow_metrics", "index", "columns")

    def __init__(self, units: list[_Unit], by_kind: dict[RecordKind, list[_Unit]],
                 flow_metrics: dict[RecordKind, list[_FlowMetric]], metrics: list[MetricData]) -> None:
        self.units, self.metrics, self.by_kind, self.flow_metrics = units, metrics, by_kind, flow_metrics
        self.index: dict[_Unit, tuple[int, tuple[int, ...]]] | None = None
        self.columns: dict[RecordKind, list[tuple[int, int, array]]] | None = None

    def locate(self) -> None:
        # each unit's place among its kind's units, and its shape when its points were placed
        self.index = {unit: (j, unit.shape) for kind_units in self.by_kind.values()
                      for j, unit in enumerate(kind_units)}
        position = {id(m.definition): k for k, m in enumerate(self.metrics)}
        # per kind, per metric of the kind: (its index, position in `metrics` or -1, the
        # offset of each unit's points in it)
        self.columns = {}
        for kind, kind_units in self.by_kind.items():
            shapes = list(map(_SHAPE, kind_units))
            self.columns[kind] = [
                (m.index, position.get(id(m.definition), -1),
                 array("q", accumulate(map(sub, map(itemgetter(m.index + 1), shapes),
                                           map(itemgetter(m.index), shapes)), initial=0)))
                for m in self.flow_metrics[kind]]

    def carried(self, by_kind: dict[RecordKind, list[_Unit]], changed: set[_Unit],
                flow_metrics: list[_FlowMetric]) -> tuple[list[MetricData], bool]:
        """This interval's metrics of the resource (units `by_kind`), made from these, and
        whether every unit kept its place (then next interval's layout is this one's).
        Spends this layout: its metrics are let go.

        The points and the encoder's pieces of units still here with the same shape are
        copied a run of neighbours at a time; the points of those that changed are then
        put in place (stale for the encoder); units that came, or whose shape changed,
        put theirs in between; units that left are skipped. Call `locate` before the
        changed units' points change.
        """
        runs = {kind: self._runs(kind_units, changed) for kind, kind_units in by_kind.items()}
        # Last interval's metrics are let go one by one as their successors are made (this
        # layout is spent after this; the list itself may be a Batch's: copied), so the
        # old and new lists of every metric are not all alive at once.
        definitions = [m.definition for m in self.metrics]
        self.metrics = olds = list(self.metrics)
        metrics = []
        for metric in flow_metrics:
            kind = metric.field.kind
            if kind not in runs:
                continue
            _, k, offsets = self.columns[kind][metric.index] if kind in self.columns else (0, -1, None)
            old = None
            if k >= 0:
                old, olds[k] = olds[k], None
            made = _carried(metric, *runs[kind], old, offsets)
            del old
            if made is not None:
                metrics.append(made)
        in_place = (by_kind.keys() == self.by_kind.keys()
                    and all(len(kind_runs) == 1 and kind_runs[0] == (0, len(self.by_kind[kind]))
                            for kind, (kind_runs, _) in runs.items())
                    and [m.definition for m in metrics] == definitions)
        return metrics, in_place

    def _runs(self, kind_units: list[_Unit], changed: set[_Unit]) -> tuple[list, dict]:
        """The units in order, as (first, end) positions of runs of neighbours that were
        here with the shape they have, or as the unit itself (it came, or its shape
        changed); and, by shape, the runs, positions and points of the units in runs
        that changed."""
        kind, index = kind_units[0].kind, self.index
        if kind_units == self.by_kind.get(kind):  # the same units: one run, if no shape changed
            replaced: dict[tuple, tuple[list, list, list]] = {}
            for unit in changed:
                if unit.kind is kind:
                    found = index[unit]
                    if not _same_shape(unit, found[1]):
                        break
                    _note_replaced(replaced, 0, found, unit)
            else:
                return [(0, len(kind_units))], replaced
        runs, replaced, last = [], {}, -1
        for unit in kind_units:
            found = index.get(unit)
            if found is None or not _same_shape(unit, found[1]):
                runs.append(unit)
                last = -1
                continue
            j = found[0]
            if j == last:
                last += 1
                runs[-1] = (runs[-1][0], last)
            else:
                last = j + 1
                runs.append((j, last))
            if unit in changed:
                _note_replaced(replaced, len(runs) - 1, found, unit)
        return runs, replaced


def _same_shape(unit: _Unit, shape: tuple[int, ...]) -> bool:
    """Whether the unit's points have `shape` (shapes are shared: mostly the same object)."""
    return unit.shape is shape or unit.shape == shape


def _note_replaced(replaced: dict, run: int, found: tuple[int, tuple[int, ...]], unit: _Unit) -> None:
    """Note a changed unit of run `run`, found at `found` (position, shape), among the
    changed units of its shape."""
    j, shape = found
    alike = replaced.get(shape) or replaced.setdefault(shape, ([], [], []))
    alike[0].append(run)
    alike[1].append(j)
    alike[2].append(unit.points)


def _carried(metric: _FlowMetric, runs: list, replaced: dict, old: MetricData | None,
             offsets: array | None) -> MetricData | None:
    """One metric's MetricData along `runs` (see _Layout.carried); None without points;
    `old` itself when the runs copied all of it, in order, and changed nothing in it."""
    points: list[Point] = []
    # Pieces are copied only from a MetricData the encoder finished (it fills the stale
    # ones in, then empties `stale`: read first). One it did not (an export failed before
    # it) is rare: its points are all encoded again, most from their own cached bytes.
    parts = [] if old is not None and not old.stale and old.parts is not None else None
    stale: list[int] = []
    moved: list[int] = []  # per run: where its points are now, less where they were
    i, copied = metric.index, 0  # copied: points of `old` copied in order so far, else -1
    for run in runs:
        if type(run) is tuple:
            first, end = offsets[run[0]], offsets[run[1]]
            moved.append(len(points) - first)
            if end > first:
                copied = end if copied == first else -1
                if points:
                    points += old.points[first:end]
                else:  # (one copy, not two, of the common single run)
                    points = old.points[first:end]
                if parts:
                    parts += old.parts[4 * first:4 * end]
                elif parts is not None:
                    parts = old.parts[4 * first:4 * end]
        else:
            moved.append(0)
            more = run.points_of(i)
            if more:
                copied = -1
                if parts is not None:
                    stale += range(len(points), len(points) + len(more))
                    parts += _NO_PIECES * len(more)
                points += more
    # the points of changed units where their old ones were copied (same shape: same
    # count), units of one shape together, without a Python loop a unit
    for shape, (in_runs, places, tuples) in replaced.items():
        first, end = shape[i], shape[i + 1]
        if end == first:
            continue
        copied = -1
        starts = list(map(add, map(offsets.__getitem__, places), map(moved.__getitem__, in_runs)))
        if end - first == 1:
            at, fresh = starts, list(map(itemgetter(first), tuples))
        else:
            at = [start + n for start in starts for n in range(end - first)]
            fresh = list(chain.from_iterable(map(itemgetter(slice(first, end)), tuples)))
        consume(map(points.__setitem__, at, fresh))
        if parts is not None:
            stale += at  # their old pieces stay until the encoder puts the new ones there
    if old is not None and copied == len(old.points):
        return old
    if not points:
        return None
    if len(stale) > len(points) * PATCH_MAX_SHARE:
        parts, stale = None, []  # cheaper for the encoder to gather every piece again
    return MetricData(metric.definition, CUMULATIVE, points, parts, stale)


# Runs an iterator to its end, in C: consume(map(a_list.__setitem__, positions, items))
# puts each item at its position without a Python loop.
consume = deque(maxlen=0).extend
_NO_PIECES = (None,) * 4  # a stale point's place in the encoder's pieces until it fills it


_KIND, _POINTS, _SHAPE = attrgetter("kind"), attrgetter("points"), attrgetter("shape")
_STALE, _NARROW = attrgetter("stale"), attrgetter("narrow")
_SHAPES: dict[tuple[int, ...], tuple[int, ...]] = {}  # a kind's few distinct shapes, shared


def _shared_shape(counts: list[int]) -> tuple[int, ...]:
    """The shape of a unit with `counts` points per metric: offsets, shared by all units
    that have it."""
    shape = tuple(accumulate(counts, initial=0))
    if len(_SHAPES) >= SHAPES_KEPT:
        _SHAPES.clear()
    return _SHAPES.setdefault(shape, shape)


def _gathered(runs: list[tuple[tuple[int, ...], list[_Unit]]], i: int) -> list[Point]:
    """The i-th metric's points of every unit, in order, from runs of units that share a
    shape (their points sit at the same positions: read without a Python call a unit)."""
    out: list[Point] = []
    for shape, units in runs:
        first, end = shape[i], shape[i + 1]
        if end - first == 1:
            out.extend(map(itemgetter(first), map(_POINTS, units)))
        elif end > first:
            out.extend(chain.from_iterable(map(itemgetter(slice(first, end)), map(_POINTS, units))))
    return out


def _by_kind(units: list[_Unit]) -> dict[RecordKind, list[_Unit]]:
    """The units of each record kind, in order."""
    by_kind: dict[RecordKind, list[_Unit]] = {}
    for unit in units:
        by_kind.setdefault(unit.kind, []).append(unit)
    return by_kind


def _kept(extra: dict[str, str], allowed: frozenset[str]) -> AttributeSet:
    """A field's extra attributes as a metric exports them (after opt-outs)."""
    kept = tuple(kv for kv in extra.items() if kv[0] in allowed)
    return AttributeSet(kept) if kept else EMPTY


class _Reader:
    """Reads every fixed-extras metric of one record kind from a series in one pass.

    Without opt-outs, each stats attribute a field names is one point whose extra
    attributes are known up front: one getter call reads them all, and the points come
    out in one list, metric after metric, with the unit's shape (looked up by which
    values were None). Metrics with `varying` extras are left to the caller.
    """

    def __init__(self, metrics: list[_FlowMetric]) -> None:
        self.count = len(metrics)
        self.varying = [m for m in metrics if m.field.varying is not None]
        # per value read: (metric index, extra set, value type, gauge)
        self.slots = [(m.index, _kept(extra, m.allowed), m.typed, m.gauge)
                      for m in metrics if m.field.varying is None
                      for extra in m.field.extras]
        names = [name for m in metrics if m.field.varying is None for name in m.field.names]
        self._read = attrgetter(*names) if len(names) > 1 else (
            (lambda stats: (getattr(stats, names[0]),)) if names else (lambda stats: ()))
        self._nones = (None,) * len(self.slots)
        self._shapes: dict[tuple[bool, ...], tuple[int, ...]] = {}  # by which values are there

    def points(self, series, unit: _Unit) -> tuple[list[Point], tuple[int, ...]]:
        """The series' points, metric after metric (none for `varying` metrics), and
        their shape (see _Unit.points)."""
        start = series.start_ns
        values = self._read(series.stats)
        if unit.projections is None:
            attributes = unit.attributes
            points = [Point(attributes, extra, 0 if gauge else start, typed(value))
                      for (_, extra, typed, gauge), value in zip(self.slots, values) if value is not None]
        else:
            projections = unit.projections
            points = [Point(projections[i], extra, 0 if gauge else start, typed(value))
                      for (i, extra, typed, gauge), value in zip(self.slots, values) if value is not None]
        present = tuple(map(is_not, values, self._nones))
        shape = self._shapes.get(present)
        if shape is None:
            counts = [0] * self.count
            for (i, *_), here in zip(self.slots, present):
                counts[i] += here
            shape = self._shapes[present] = _shared_shape(counts)
        return points, shape


class MetricsBuilder:
    """Builds a Batch per interval; holds the units and the previous values delta needs."""

    def __init__(self, catalog: Catalog, settings: BuildSettings,
                 agent_resource: dict[str, object], start_ns: int) -> None:
        self._catalog = catalog
        self._settings = settings
        agent = {k: v for k, v in agent_resource.items() if k not in settings.dropped_resource_attributes}
        self._agent_resource = AttributeSet(tuple(sorted(agent.items())))
        self._start_ns = start_ns
        self._by_kind: dict[RecordKind, list[_FlowMetric]] = {kind: [] for kind in RecordKind}
        self._flow_metrics: list[_FlowMetric] = []
        for name, definition in catalog.metrics.items():
            if name in fields.FIELDS and name in settings.enabled_metrics:
                table = fields.FIELDS[name]
                allowed = frozenset(a.name for a in definition.attributes) - settings.dropped_attributes
                metric = _FlowMetric(definition, table, allowed, len(self._by_kind[table.kind]),
                                     _converter(definition), definition.kind == "gauge",
                                     bool(settings.dropped_attributes))
                self._by_kind[table.kind].append(metric)
                self._flow_metrics.append(metric)
        self._order = {id(m.definition): n for n, m in enumerate(self._flow_metrics)}  # catalog order
        self._union = {kind: frozenset().union(*(m.allowed for m in metrics))
                       for kind, metrics in self._by_kind.items()}
        self._readers = {kind: _Reader(metrics) for kind, metrics in self._by_kind.items()}
        self._units: dict[tuple, _Unit] = {}
        self._by_series: dict[int, _Unit] = {}
        self._by_attributes: dict[int, _Unit] = {}  # id of the record attributes it was made from
        self._pairs: dict[tuple, tuple[str, object]] = {}
        self._resources: dict[AttrKey, _Resource] = {}
        self._extras: dict[tuple, AttributeSet] = {}
        # running totals of merged points (metrics/merging.py): per unit that several
        # records feed or that an opt-out may merge, and across units for narrow metrics
        self._unit_totals: dict[_Unit, Accumulator] = {}
        self._parked_totals: dict[tuple, tuple[Accumulator, int]] = {}  # of forgotten units, by key
        self._across_units = Accumulator(DELTA_MEMORY_BUILDS)
        # delta state: point key -> (series start, time of last export, cumulative value, build)
        self._previous: dict[tuple, tuple[int, int, int | float | Histogram, int]] = {}
        self._builds = 0

    @property
    def temporality(self) -> AggregationTemporality:
        delta = self._settings.delta
        return AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE

    def build(self, enriched: EnrichedSnapshot, telemetry: AgentTelemetry) -> Batch:
        """One Batch: a resource per workload, then the agent's own."""
        self._builds += 1
        batch = Batch(enriched.time_ns)
        by_items: dict[AttrKey, ResourceData] = {}
        for resource, units in self._group(enriched.records).items():
            metrics = self._metrics_of(resource, units, enriched.time_ns)
            if metrics:
                data = ResourceData(resource.attributes, [self._scope(self._catalog.flows_scope, metrics)])
                by_items[resource.attributes.items] = data
                batch.resources.append(data)
        agent = self._agent_metrics(enriched, telemetry)
        if agent:
            # The same resource twice would be two resources to a backend: share it.
            data = by_items.get(self._agent_resource.items)
            if data is None:
                data = ResourceData(self._agent_resource)
                batch.resources.append(data)
            data.scopes.append(self._scope(self._catalog.agent_scope, agent))
        self._forget_old_series()
        return batch

    # -- flows: records -> units ---------------------------------------------------------

    def _group(self, records: list[Record]) -> dict[_Resource, list[_Unit]]:
        """The units seen this interval, per resource, each with its records."""
        groups: dict[_Resource, list[_Unit]] = {}
        build, by_series = self._builds, self._by_series
        for record in records:
            # the enricher hands out last interval's Record while nothing about it changed
            unit = by_series.get(id(record.series))
            unchanged = unit is not None and unit.record is record and unit.series is record.series
            if not unchanged:
                unit = self._unchanged_unit(record)
                unchanged = unit is not None
                if unit is None:
                    unit = self._unit(record)
            if unit.build != build:
                unit.build, unit.record, unit.others, unit.stale = build, record, None, not unchanged
                unit.resource.build = build  # seen this interval, changed or not
                group = groups.get(unit.resource)
                if group is None:
                    group = groups[unit.resource] = []
                group.append(unit)
            else:  # records that collapse into one attribute set after opt-outs
                unit.others = [*(unit.others or ()), record]
                unit.stale = True
        return groups

    def _unchanged_unit(self, record: Record) -> _Unit | None:
        """The unit this record's series fed last interval, if nothing about it changed."""
        unit = self._by_series.get(id(record.series))
        if unit is None or unit.series is not record.series or unit.kind is not record.kind:
            return None
        same_attributes = record.attributes is unit.attrs_src or record.attributes == unit.attrs_src
        same_resource = record.resource is unit.resource_src or record.resource == unit.resource_src
        return unit if same_attributes and same_resource else None

    def _unit(self, record: Record) -> _Unit:
        # The enricher hands out the same attribute dict for a key while nothing about it
        # changed: a series that changed finds its unit by that dict, without sorting it.
        unit = self._by_attributes.get(id(record.attributes))
        if (unit is not None and unit.attrs_src is record.attributes and unit.kind is record.kind
                and (unit.resource_src is record.resource or unit.resource_src == record.resource)):
            return unit
        resource = self._resource(record.resource)
        union = self._union[record.kind]
        items = tuple(sorted(kv for kv in record.attributes.items() if kv[0] in union))
        key = (resource, record.kind, items)
        unit = self._units.get(key)
        if unit is None:
            attributes = AttributeSet(self._interned(items))
            unit = self._units[(resource, record.kind, attributes.items)] = _Unit(
                resource, record.kind, attributes, self._projections(record.kind, attributes))
        if unit.attrs_src is not None and self._by_attributes.get(id(unit.attrs_src)) is unit:
            del self._by_attributes[id(unit.attrs_src)]  # its old dict: not kept for a long-lived unit
        unit.attrs_src, unit.resource_src = record.attributes, record.resource
        self._by_attributes[id(record.attributes)] = unit
        return unit

    def _interned(self, items: AttrKey) -> AttrKey:
        """The same (key, value) pair objects for every unit that has them: most pairs
        (transport, direction, process, port ...) are shared by thousands of units."""
        pairs = self._pairs
        if len(pairs) > PAIRS_KEPT:
            pairs.clear()
        # keyed with the value's type too: (k, True), (k, 1) and (k, 1.0) are equal tuples;
        # floats are left alone (0.0 and -0.0 are equal too)
        return tuple([kv if type(kv[1]) is float else pairs.setdefault((kv, type(kv[1])), kv)
                      for kv in items])

    def _resource(self, items: AttrKey) -> _Resource:
        resource = self._resources.get(items)
        if resource is None:
            dropped = self._settings.dropped_resource_attributes
            kept = tuple(kv for kv in items if kv[0] not in dropped)
            resource = self._resources.get(kept) or _Resource(kept)
            self._resources[items] = self._resources[kept] = resource
        resource.build = self._builds
        return resource

    def _projections(self, kind: RecordKind, attributes: AttributeSet) -> list[AttributeSet]:
        """Per metric of the kind, the attribute set it exports (shared when it keeps all)."""
        names = [k for k, _ in attributes.items]
        projected: dict[frozenset[str], AttributeSet] = {}
        out = []
        for metric in self._by_kind[kind]:
            kept = projected.get(metric.allowed)
            if kept is None:
                kept = attributes if metric.allowed.issuperset(names) else AttributeSet(
                    tuple(kv for kv in attributes.items if kv[0] in metric.allowed))
                projected[metric.allowed] = kept
            out.append(kept)
        return out

    # -- flows: units -> points ----------------------------------------------------------

    def _settle(self, unit: _Unit) -> None:
        """Recompute a unit's points if its records changed; remember its series."""
        if not unit.stale and unit.points is not None:
            return
        # a unit once merged keeps its running totals when one record is left
        if unit.others or self._settings.dropped_attributes or unit in self._unit_totals:
            records = [unit.record, *unit.others] if unit.others else [unit.record]
            unit.set_points(self._merged_unit_points(unit, records))
        else:  # the common case: one series, every extra attribute set its own
            points, shape = self._readers[unit.kind].points(unit.record.series, unit)
            for metric in self._readers[unit.kind].varying:
                more = self._points(metric, unit.projection(metric.index), [unit.record])
                if more:  # in at the metric's place; the metrics after it move along
                    i = metric.index
                    points[shape[i]:shape[i]] = more
                    shape = _shared_shape([b - a + (len(more) if k == i else 0)
                                           for k, (a, b) in enumerate(zip(shape, shape[1:]))])
            unit.points, unit.shape = tuple(points), shape
        series = None if unit.others else unit.record.series
        if unit.series is not None and self._by_series.get(id(unit.series)) is unit:
            del self._by_series[id(unit.series)]
        unit.series = series
        if series is not None:
            self._by_series[id(series)] = unit
        unit.stale = False

    def _merged_unit_points(self, unit: _Unit, records: list[Record]) -> list[list[Point]]:
        """Per metric, the points of a unit that several records feed or that an opt-out
        may merge: running totals (metrics/merging.py), each record a member."""
        totals = self._unit_totals.get(unit)
        totals = self._totals_of(unit) if totals is None else totals
        metrics, first = self._by_kind[unit.kind], records[0]
        # compared, not hashed: the enricher hands out the same attribute dict while unchanged
        if len(records) == 1 and totals.alone((first.resource, first.attributes, first.series.start_ns), first):
            return [self._points(m, unit.projection(m.index), records) for m in metrics]
        lone = totals.share()
        if lone is not None:
            self._seed(totals, unit, lone)
        members = [totals.member(_identity(r), r.series.start_ns, self._builds) for r in records]
        return [self._total_points(m, unit.projection(m.index), records, totals, members) for m in metrics]

    def _seed(self, totals: Accumulator, unit: _Unit, record: Record) -> None:
        """A unit's totals, once a second member comes: the values of the one it had."""
        state = totals.member(_identity(record), record.series.start_ns, self._builds)
        for metric in self._by_kind[unit.kind]:
            if _accumulates(metric.definition):
                for point in self._points(metric, unit.projection(metric.index), [record]):
                    totals.seed((metric.index, point.extra.items), state, point.value)

    def _totals_of(self, unit: _Unit) -> Accumulator:
        """The running totals of a unit new to them: those its key had when it was last
        forgotten (its records may come back with their series), else new ones."""
        parked = self._parked_totals.pop(_unit_key(unit), None)
        totals = self._unit_totals[unit] = parked[0] if parked else Accumulator(DELTA_MEMORY_BUILDS)
        return totals

    def _park_totals(self, oldest: int) -> None:
        """Set aside the totals of units about to be forgotten, for DELTA_MEMORY_BUILDS."""
        for unit, totals in self._unit_totals.items():
            if unit.build <= oldest:
                self._parked_totals[_unit_key(unit)] = (totals, self._builds)
        self._unit_totals = {u: t for u, t in self._unit_totals.items() if u.build > oldest}
        first = self._builds - DELTA_MEMORY_BUILDS
        self._parked_totals = {k: v for k, v in self._parked_totals.items() if v[1] > first}

    def _points(self, metric: _FlowMetric, attributes: AttributeSet, records: list[Record]) -> list[Point]:
        if len(records) == 1 and not metric.may_collide:  # the common case, kept short
            series = records[0].series
            start, typed = 0 if metric.gauge else series.start_ns, metric.typed
            return [Point(attributes, self._extra(metric, extra), start, typed(value))
                    for extra, value in metric.field.points(series.stats)]
        definition = metric.definition
        # keyed by content: the interned set of equal extras may be a new object after the
        # intern table is emptied in the middle of this loop
        points: dict[tuple, Point] = {}
        for record in records:
            start = record.series.start_ns if definition.kind != "gauge" else 0
            for extra, value in metric.field.points(record.series.stats):
                extra_set = self._extra(metric, extra)
                existing = points.get(extra_set.items)
                if existing is None:
                    points[extra_set.items] = Point(attributes, extra_set, start, _typed(definition, value))
                else:
                    existing.start_ns = min(existing.start_ns, start)
                    existing.value = added(existing.value, _typed(definition, value))
        return list(points.values())

    def _total_points(self, metric: _FlowMetric, attributes: AttributeSet, records: list[Record],
                      totals: Accumulator, members: list[MemberState]) -> list[Point]:
        """`_points`, but those of monotonic sums and histograms are running totals that
        `members` (one a record) feed."""
        if not _accumulates(metric.definition):
            return self._points(metric, attributes, records)
        fed: dict[tuple, tuple[AttributeSet, list[Member]]] = {}  # keyed by content, as in `_points`
        for record, member in zip(records, members):
            start = record.series.start_ns
            for extra, value in metric.field.points(record.series.stats):
                extra_set = self._extra(metric, extra)
                group = fed.get(extra_set.items) or fed.setdefault(extra_set.items, (extra_set, []))
                group[1].append((member, start, _typed(metric.definition, value)))
        return [Point(attributes, extra_set, *totals.total((metric.index, items), members_of))
                for items, (extra_set, members_of) in fed.items()]

    def _merged(self, resource: _Resource, metric: _FlowMetric, units: list[_Unit]) -> list[Point]:
        """Points of different units that a metric's narrower attributes made equal, added
        together; each unit is a member (known by its own attributes)."""
        groups: dict[AttrKey, tuple[Point, list[Member]]] = {}
        totals, build = self._across_units, self._builds
        for unit in units:
            for point in unit.points_of(metric.index):
                key = point.attribute_items()
                group = groups.get(key) or groups.setdefault(key, (point, []))
                member = totals.member(unit.attributes.items, point.start_ns, build)
                group[1].append((member, point.start_ns, point.value))
        scope = (resource.attributes.items, metric.definition.name)
        accumulates = _accumulates(metric.definition)
        return [Point(first.attributes, first.extra,
                      *(totals.total((scope, key), members) if accumulates else plain_sum(members)))
                for key, (first, members) in groups.items()]

    def _extra(self, metric: _FlowMetric, extra: dict[str, str]) -> AttributeSet:
        """The interned set of a field's extra attributes (e.g. network.io.direction).

        Looked up by the dict's identity first: fields hand out constant dicts for most
        extras (TRANSMIT, RECEIVE); the entry keeps the dict, so its id stays its own.
        """
        if not extra:
            return EMPTY
        by_id = self._extras.get((id(extra), id(metric)))
        if by_id is not None and by_id[0] is extra:
            return by_id[1]
        key = (metric.allowed, tuple(extra.items()))
        found = self._extras.get(key)
        if found is None:
            found = self._extras[key] = _kept(extra, metric.allowed)
        if len(self._extras) > EXTRAS_KEPT:  # fresh dicts (e.g. error.type) would pile up
            self._extras = {}
        self._extras[(id(extra), id(metric))] = (extra, found)
        return found

    def _metrics_of(self, resource: _Resource, units: list[_Unit], time_ns: int) -> list[MetricData]:
        """One MetricData per enabled flow metric with points, in catalog order.

        Cumulative metrics of a resource are carried over from last interval's (its
        `_Layout`): the same MetricData while no unit changed, came or left; else new ones
        that copy what the kept units had, a run of neighbours at a time, and take the
        points of the units that changed or came (the encoder re-encodes only those).
        Kinds with narrow units (a metric that exports fewer attributes than the unit
        has, e.g. `dns.lookup.timeout.count` without `error.type`) are made anew each
        interval: their merged points are running totals whose members must be seen
        every interval. So are all metrics with delta temporality.
        """
        # Last interval's metrics are let go first unless carried over: while everything
        # is rebuilt they would keep every old point alive.
        layout, resource.last = resource.last, None
        if self._settings.delta:
            return self._built(resource, units, time_ns)[0]
        narrow = set(map(_KIND, compress(units, map(_NARROW, units))))
        if not narrow:
            return self._carried_over(resource, layout, units, time_ns)
        fresh = self._built(resource, [unit for unit in units if unit.kind in narrow], time_ns)[0]
        units = [unit for unit in units if unit.kind not in narrow]
        if not units:
            return fresh
        order = self._order
        return sorted(self._carried_over(resource, layout, units, time_ns) + fresh,
                      key=lambda metric: order[id(metric.definition)])

    def _carried_over(self, resource: _Resource, layout: _Layout | None, units: list[_Unit],
                      time_ns: int) -> list[MetricData]:
        """The metrics of units none of which is narrow, from `layout` when it can be
        carried over; the resource's layout for next interval is kept."""
        if layout is not None:
            stale = sum(map(_STALE, units))
            if not stale and layout.units == units:
                resource.last = layout
                return layout.metrics
            if stale <= len(units) * PATCH_MAX_SHARE:
                changed = set(compress(units, map(_STALE, units)))
                if layout.columns is None:
                    layout.locate()  # offsets from last interval's points, before they change
                for unit in changed:
                    self._settle(unit)
                by_kind = layout.by_kind if layout.units == units else _by_kind(units)
                metrics, in_place = layout.carried(by_kind, changed, self._flow_metrics)
                resource.last = _Layout(units, by_kind, self._by_kind, metrics)
                if in_place:  # every unit where it was: the offsets still hold
                    resource.last.index, resource.last.columns = layout.index, layout.columns
                return metrics
        del layout
        metrics, by_kind = self._built(resource, units, time_ns)
        resource.last = _Layout(units, by_kind, self._by_kind, metrics)
        return metrics

    def _built(self, resource: _Resource, units: list[_Unit],
               time_ns: int) -> tuple[list[MetricData], dict[RecordKind, list[_Unit]]]:
        """The units' metrics made anew (catalog order), and the units by kind."""
        for unit in units:
            self._settle(unit)
        by_kind = _by_kind(units)
        narrow = {unit.kind for unit in units if unit.narrow}
        runs = {kind: [(shape, list(run)) for shape, run in groupby(kind_units, _SHAPE)]
                for kind, kind_units in by_kind.items()}
        metrics = []
        for metric in self._flow_metrics:
            kind_units = by_kind.get(metric.field.kind)
            if not kind_units:
                continue
            i = metric.index
            if metric.field.kind in narrow and any(u.projection(i) is not u.attributes for u in kind_units):
                points = self._merged(resource, metric, kind_units)
            else:
                points = _gathered(runs[metric.field.kind], i)
            if points:
                metrics.append(self._metric(metric.definition, ("flow", resource.attributes.items),
                                            points, time_ns))
        return metrics, by_kind

    # -- agent's own telemetry -----------------------------------------------------------

    def _agent_metrics(self, enriched: EnrichedSnapshot, telemetry: AgentTelemetry) -> list[MetricData]:
        readings: dict[str, dict[AttrKey, tuple[int, object]]] = {}
        start, time_ns = self._start_ns, enriched.time_ns
        name, key = fields.AGENT_LOSSES
        readings[name] = {((key, reason),): (start, n) for reason, n in enriched.losses.items()}
        name, key = fields.AGENT_GAUGES
        readings[name] = {((key, gauge),): (time_ns, float(n)) for gauge, n in enriched.gauges.items()}
        readings[fields.AGENT_MAP_FILL[0]] = _map_fill(enriched.gauges, time_ns)
        name, key = fields.AGENT_FLOWS_TRACKED
        tracked = Counter(map(_KIND, enriched.records))  # (an enum's .value is a slow property)
        readings[name] = {((key, kind.value),): (time_ns, tracked[kind]) for kind in RecordKind}
        name, key = fields.AGENT_EXPORT_FAILURES
        readings[name] = {((key, exporter),): (start, n) for exporter, n in telemetry.export_failures.items()}
        if telemetry.collection_duration_s is not None:
            readings[fields.AGENT_COLLECTION_DURATION] = {(): (time_ns, telemetry.collection_duration_s)}
        metrics = []
        for name, readings_of in readings.items():
            if readings_of and name in self._settings.enabled_metrics:
                definition = self._catalog.metrics[name]
                points = [Point(AttributeSet(attributes), EMPTY, begin if definition.kind != "gauge" else 0,
                                _typed(definition, value))
                          for attributes, (begin, value) in readings_of.items()]
                metrics.append(self._metric(definition, ("agent",), points, time_ns))
        return metrics

    # -- OTLP data -------------------------------------------------------------------------

    def _scope(self, scope: str, metrics: list[MetricData]) -> ScopeData:
        return ScopeData(scope, __version__, metrics)

    def _metric(self, definition: MetricDef, scope_key: tuple, points: list[Point],
                time_ns: int) -> MetricData:
        delta = self._settings.delta and (definition.monotonic or definition.kind == "histogram")
        if not delta:
            return MetricData(definition, CUMULATIVE, points)
        deltas = []
        for point in points:
            state_key = (scope_key, definition.name, point.attribute_items())
            start, value = self._delta(state_key, point, time_ns)
            deltas.append(Point(point.attributes, point.extra, start, value))
        return MetricData(definition, DELTA, deltas)

    def _delta(self, state_key: tuple, point: Point, time_ns: int):
        """(start, value) of a delta point. A series that restarted (new start, or went
        backwards) starts over; one absent for some intervals continues where it was."""
        previous = self._previous.get(state_key)
        self._previous[state_key] = (point.start_ns, time_ns, point.value, self._builds)
        if previous is None or previous[0] != point.start_ns or went_backwards(previous[2], point.value):
            return point.start_ns, point.value
        return previous[1], subtract(point.value, previous[2])

    def _forget_old_series(self) -> None:
        """Drop delta state and totals merged across units unseen for DELTA_MEMORY_BUILDS
        intervals, units (with their totals) and resources unseen for CACHE_BUILDS."""
        if self._builds % DELTA_MEMORY_BUILDS == 0:
            oldest = self._builds - DELTA_MEMORY_BUILDS
            self._previous = {k: v for k, v in self._previous.items() if v[3] > oldest}
        self._across_units.advance(self._builds)  # fed only while narrow metrics have points
        if self._builds % CACHE_BUILDS == 0:
            oldest = self._builds - CACHE_BUILDS
            self._units = {k: u for k, u in self._units.items() if u.build > oldest}
            self._park_totals(oldest)
            self._by_series = {k: u for k, u in self._by_series.items() if u.build > oldest}
            self._by_attributes = {k: u for k, u in self._by_attributes.items() if u.build > oldest}
            self._resources = {k: r for k, r in self._resources.items() if r.build > oldest}


def _map_fill(gauges: dict[str, float], time_ns: int) -> dict[AttrKey, tuple[int, float]]:
    """`<map>.tracked / <map>.capacity` for every map that reports both."""
    _, key, tracked, capacity = fields.AGENT_MAP_FILL
    fill = {}
    for gauge, value in gauges.items():
        if gauge.endswith(tracked):
            map_name = gauge[: -len(tracked)]
            total = gauges.get(map_name + capacity)
            if total:
                fill[((key, map_name),)] = (time_ns, value / total)
    return fill


def _converter(definition: MetricDef) -> Callable:
    if definition.kind == "histogram":
        return _as_is
    return int if definition.value_type == "int" else float


def _as_is(value):
    return value


def _typed(definition: MetricDef, value):
    """A number as the metric's value type; a Histogram as it is (never modified)."""
    if isinstance(value, Histogram):
        return value
    return int(value) if definition.value_type == "int" else float(value)


def _accumulates(definition: MetricDef) -> bool:
    """Whether merged points of the metric are running totals (monotonic sums and
    histograms; a non-monotonic sum may go down, a gauge is a reading)."""
    return definition.monotonic or definition.kind == "histogram"


def _identity(record: Record) -> tuple:
    """Who a record is among the members of a merged point: its resource and attributes
    as the enricher gave them, before any opt-out (the series start is added to it)."""
    return record.resource, tuple(sorted(record.attributes.items()))


def _unit_key(unit: _Unit) -> tuple:
    """A unit's key by content (its resource may be forgotten and made anew with it)."""
    return unit.resource.attributes.items, unit.kind, unit.attributes.items
