"""What the metrics builder hands to the exporters: resources, scopes, metrics, points.

Plain slotted objects instead of the SDK's data classes. Two of them carry a cache for the
OTLP encoder (`export/encoding.py`): an `AttributeSet` keeps its encoded KeyValues, a
`Point` its encoded bytes. The builder hands out the *same* AttributeSet for a series in
every interval and the *same* Point while its start and value are unchanged, so those
bytes are encoded once, not once per interval. A `MetricData` keeps the encoder's pieces
of its data points, which the builder carries over to next interval's.
"""

from __future__ import annotations

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
    point's encoded size), kept while the builder hands out this MetricData again, and
    the positions of points whose pieces are not there yet. The builder may make a new
    MetricData from an old one's points and pieces (never changing the old one: an
    export of it may still be running), with the points it put in listed as stale.
    """

    definition: MetricDef
    temporality: int  # DELTA or CUMULATIVE (ignored for gauges)
    points: list[Point]
    parts: list[bytes | int] | None = field(default=None, repr=False, compare=False)
    stale: list[int] = field(default_factory=list, repr=False, compare=False)


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
