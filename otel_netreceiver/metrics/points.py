"""What the metrics builder hands to the exporters: resources, scopes, metrics, points.

Plain slotted objects instead of the SDK's data classes. Two of them carry a cache for the
OTLP encoder (`export/encoding.py`): an `AttributeSet` keeps its encoded KeyValues, a
`Point` its encoded bytes. The builder hands out the *same* AttributeSet for a series in
every interval and the *same* Point while its start and value are unchanged, so those
bytes are encoded once, not once per interval. A `MetricData` keeps the encoder's pieces
of its data points while the builder hands it out again (see `MetricData.renewed`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from otel_netreceiver.flows.model import Histogram
from otel_netreceiver.metrics.catalog import MetricDef

AttrItems = tuple[tuple[str, object], ...]
DELTA, CUMULATIVE = 1, 2  # OTLP AggregationTemporality values


class AttributeSet:
    """An ordered set of attributes; `as_number` / `as_histogram` are the encoder's cache
    (its KeyValues as a NumberDataPoint's / HistogramDataPoint's attributes field)."""

    __slots__ = ("items", "as_number", "as_histogram")

    def __init__(self, items: AttrItems) -> None:
        self.items = items
        self.as_number: bytes | None = None
        self.as_histogram: bytes | None = None

    def __repr__(self) -> str:
        return f"AttributeSet({self.items!r})"


EMPTY = AttributeSet(())


class Point:
    """One data point: `attributes` then `extra` (e.g. network.io.direction) are its
    attributes; `value` is an int, a float or a Histogram; `encoded` is the encoder's
    (the point's own fields, without attributes and time)."""

    __slots__ = ("attributes", "extra", "start_ns", "value", "encoded")

    def __init__(self, attributes: AttributeSet, extra: AttributeSet, start_ns: int,
                 value: int | float | Histogram) -> None:
        self.attributes = attributes
        self.extra = extra
        self.start_ns = start_ns
        self.value = value
        self.encoded: bytes | None = None

    def attribute_items(self) -> AttrItems:
        return self.attributes.items + self.extra.items if self.extra.items else self.attributes.items

    def __repr__(self) -> str:
        return f"Point({dict(self.attribute_items())}, start={self.start_ns}, value={self.value!r})"


@dataclass(slots=True)
class MetricData:
    """The points of one catalog metric in one resource and scope.

    `parts` and `stale` are the encoder's: its data points' pieces (bytes, and each
    point's encoded size), kept while the builder hands out this MetricData again (or a
    `renewed` copy), and the positions of points the builder replaced since they were
    made.
    """

    definition: MetricDef
    temporality: int  # DELTA or CUMULATIVE (ignored for gauges)
    points: list[Point]
    parts: list[bytes | int] | None = field(default=None, repr=False, compare=False)
    stale: list[int] = field(default_factory=list, repr=False, compare=False)

    def renewed(self) -> "MetricData":
        """A copy whose points may be replaced, with copies of the encoder's pieces.

        This one is left as it is: an export of it may still be running (one abandoned
        at stop). `stale` is copied before `parts`: the encoder patches `parts` before it
        empties `stale`, so whatever it does meanwhile, the copy's pieces are either
        patched or listed as stale.
        """
        stale = list(self.stale)
        parts = None if self.parts is None else self.parts.copy()
        return MetricData(self.definition, self.temporality, self.points.copy(), parts, stale)

    def replace(self, positions: list[int], points: Sequence[Point]) -> None:
        """Put points[n] at positions[n] (the encoder re-encodes them)."""
        consume(map(self.points.__setitem__, positions, points))
        if self.parts is None:
            return  # never encoded (e.g. only Prometheus or debug exporters): nothing to patch
        self.stale += positions
        if len(self.stale) > len(self.points) // 4:
            self.parts, self.stale = None, []  # cheaper to gather every piece again


# Runs an iterator to its end, in C: e.g. consume(map(a_list.__setitem__, positions, items))
# puts each item at its position without a Python loop.
consume = deque(maxlen=0).extend


@dataclass(slots=True)
class ScopeData:
    name: str
    version: str
    metrics: list[MetricData] = field(default_factory=list)


@dataclass(slots=True)
class ResourceData:
    attributes: AttributeSet
    scopes: list[ScopeData] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    """One interval's output; every point's time_unix_nano is `time_ns`."""

    time_ns: int
    resources: list[ResourceData] = field(default_factory=list)

    def metrics(self):
        """(resource, scope, metric) for every metric, in order."""
        for resource in self.resources:
            for scope in resource.scopes:
                for metric in scope.metrics:
                    yield resource, scope, metric

    def point_count(self) -> int:
        return sum(len(metric.points) for _, _, metric in self.metrics())
