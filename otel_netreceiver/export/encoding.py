"""A Batch -> ExportMetricsServiceRequest bytes (OTLP protobuf wire format), by hand.

The SDK builds a Python object per data point and re-encodes every point's attributes
each interval; at 10k series that is seconds of CPU and hundreds of MiB. Here:

* an AttributeSet's KeyValues are encoded once and kept on it (the builder hands out the
  same set for a series every interval and forgets it when the series is gone); each
  KeyValue is kept too (bounded), so a new series' set encodes only its new values;
* a Point's own fields (start, value; tag and length in front) are encoded once and kept
  on it (the builder hands out the same Point while its start and value are unchanged);
  its attributes are not copied into it, so the cache costs ~50 bytes a point;
* a data point is then four pieces: its own fields, its attribute sets' bytes and the
  batch's time field (the same for every point); a histogram's bounds ride with its extra
  attributes' piece, shared by the metric's points, not copied into each point's own;
* a metric's pieces are kept on its MetricData (`_data_points`): when the builder hands
  out that MetricData again (nothing changed) or one carried over from it (its pieces
  copied, new points listed `stale`), only the stale points are gathered. Where a request
  puts the time, the kept pieces hold the point's encoded size (an int), so a request's
  slice knows its size without a len() per piece; the slice gets the time by one slice
  assignment;
* the pieces are nested, never joined per metric: each request is joined once;
* requests of at most `max_points` points and `max_bytes` bytes are encoded one at a
  time (the kept sizes tell where a request is full without encoding it).

Field numbers are those of opentelemetry/proto/{metrics,common,resource}/v1/*.proto and
collector/metrics/v1/metrics_service.proto; tests compare the result with the SDK's.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Iterator

from otel_netreceiver.metrics.catalog import MetricDef
from otel_netreceiver.metrics.points import AttributeSet, Batch, MetricData, Point, ScopeData

# Tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited).
_LEN1 = 0x0A                      # field 1, length-delimited (many messages' first field)
_NUMBER_ATTRS, _HISTOGRAM_ATTRS = 0x3A, 0x4A
_START, _TIME = 0x11, 0x19         # start_time_unix_nano, time_unix_nano (fixed64)
_AS_DOUBLE, _AS_INT = 0x21, 0x31   # NumberDataPoint value oneof
_GAUGE, _SUM, _HISTOGRAM = 0x2A, 0x3A, 0x4A  # Metric data oneof
_NUMBER_POINT = struct.Struct("<BQBq").pack
_DOUBLE_POINT = struct.Struct("<BQBd").pack
_HISTOGRAM_HEAD = struct.Struct("<BQBQBd").pack  # start, count (0x21), sum (0x29)
_HEAD = 6  # a nested message's tag and length: at most 1 + 5 bytes (below 32 GiB)
_NUMBER_OWN = 27  # a NumberDataPoint's start, value and time fields: 3 x (tag + 8 bytes)


@dataclass(frozen=True, slots=True)
class EncodedRequest:
    """One serialized ExportMetricsServiceRequest and how many data points it holds."""

    payload: bytes
    points: int


def requests(batch: Batch, max_points: int, max_bytes: int = 1 << 62) -> Iterator[EncodedRequest]:
    """The batch as requests of at most `max_points` data points and `max_bytes` bytes,
    encoded one at a time (a data point too large for `max_bytes` alone still goes, alone)."""
    time_field = bytes([_TIME]) + struct.pack("<Q", batch.time_ns)
    pending = _Request()
    for resource, scope, metric in batch.metrics():
        count = len(metric.points)
        parts = _data_points(metric) if count else []
        done = 0
        while done < count:
            take = min(max_points - pending.points, count - done)
            sizes = parts[4 * done + 3:4 * (done + take):4]
            size = sum(sizes)
            room = max_bytes - pending.size - pending.overhead(resource.attributes, scope, metric.definition)
            full = pending.points + take >= max_points
            if size > room:  # as many points as fit; none: the next request
                fit = bisect_right(list(accumulate(sizes)), room)
                if not fit and pending.points:
                    yield pending.encode()
                    pending = _Request()
                    continue
                take, full = max(fit, 1), True
                size = sum(sizes[:take])
            # The time goes into this request's copy of the pieces, never into the kept ones:
            # an abandoned export still encoding an older batch cannot mix its time in.
            chunk = parts[4 * done:4 * (done + take)]
            chunk[3::4] = [time_field] * take
            pending.add(resource.attributes, scope, _metric(metric, chunk, size), take)
            done += take
            if full:
                yield pending.encode()
                pending = _Request()
    if pending.points:
        yield pending.encode()


class _Message:
    """A message as lists of pieces and their total size: nesting adds a tag and a length
    in front, never copies the body nor its list of pieces (a request is joined once, at
    the end)."""

    __slots__ = ("lists", "size")

    def __init__(self, *parts: bytes) -> None:
        self.lists = [list(parts)]
        self.size = sum(map(len, parts))

    def add(self, *parts: bytes) -> None:
        self.lists.append(parts)
        self.size += sum(map(len, parts))

    def nest(self, tag: int, inner: "_Message") -> None:
        """Append `inner` as field `tag`."""
        self.add(bytes([tag]) + _varint(inner.size))
        self.lists.extend(inner.lists)
        self.size += inner.size

    def join(self) -> bytes:
        # one flat list first: join() makes a list of any other iterable anyway, and
        # extending by whole lists is cheaper than chain's item by item
        flat: list[bytes] = []
        for pieces in self.lists:
            flat += pieces
        return b"".join(flat)


class _Request:
    """The metrics gathered for one request, nested as resource -> scope -> metric, and an
    upper bound of its encoded size."""

    def __init__(self) -> None:
        self.points = self.size = 0
        self._resources: list[tuple[AttributeSet, list[tuple[str, str, list[_Message]]]]] = []

    def overhead(self, resource: AttributeSet, scope: ScopeData, definition: MetricDef | None = None) -> int:
        """At most how many bytes, besides its data points, a metric of `definition` adds
        (without `definition`: besides the Metric message)."""
        extra = _HEAD
        if definition is not None:  # name, description, unit, the data's head, temporality, monotonic
            extra += len(_metric_head(definition)) + _HEAD + 4
        new_resource = not self._resources or self._resources[-1][0] is not resource
        if new_resource:
            extra += 2 * _HEAD + len(_resource(resource))
        if new_resource or self._resources[-1][1][-1][:2] != (scope.name, scope.version):
            extra += 2 * _HEAD + len(_instrumentation_scope(scope.name, scope.version))
        return extra

    def add(self, resource: AttributeSet, scope: ScopeData, metric: _Message, points: int) -> None:
        self.size += self.overhead(resource, scope) + metric.size
        if not self._resources or self._resources[-1][0] is not resource:
            self._resources.append((resource, []))
        scopes = self._resources[-1][1]
        if not scopes or scopes[-1][:2] != (scope.name, scope.version):
            scopes.append((scope.name, scope.version, []))
        scopes[-1][2].append(metric)
        self.points += points

    def encode(self) -> EncodedRequest:
        request = _Message()
        for resource, scopes in self._resources:
            resource_metrics = _Message(_field(_LEN1, _resource(resource)))
            for scope, version, metrics in scopes:
                scope_metrics = _Message(_field(_LEN1, _instrumentation_scope(scope, version)))
                for metric in metrics:
                    scope_metrics.nest(0x12, metric)
                resource_metrics.nest(0x12, scope_metrics)
            request.nest(_LEN1, resource_metrics)
        return EncodedRequest(request.join(), self.points)


def _metric(metric: MetricData, parts: list[bytes], size: int) -> _Message:
    """A Metric message holding the data points whose pieces are `parts` (`size` bytes)."""
    definition = metric.definition
    data = _Message()
    data.lists[0], data.size = parts, size
    message = _Message(_metric_head(definition))
    if definition.kind == "gauge":
        message.nest(_GAUGE, data)
        return message
    data.add(bytes([0x10, metric.temporality]))
    if definition.kind == "sum" and definition.monotonic:
        data.add(b"\x18\x01")
    message.nest(_SUM if definition.kind == "sum" else _HISTOGRAM, data)
    return message


def _data_points(metric: MetricData) -> list:
    """The metric's repeated `data_points` as four pieces a point: its cached own fields, its
    attribute sets' cached KeyValues and, where a request puts the time, the point's size.

    Kept on the MetricData: when the builder hands it out again, only the points it
    replaced are gathered again (all in one go, then put in place point by point).
    """
    parts, stale, points = metric.parts, metric.stale, metric.points
    if parts is None or len(parts) != 4 * len(points):
        # new, or made without pieces (the builder leaves them out when many points are
        # new or an unfinished export left gaps): gathered anew
        parts = metric.parts = _pieces(metric.definition, points)
    elif stale:
        fresh = _pieces(metric.definition, list(map(points.__getitem__, stale)))
        for at, n in enumerate(stale):
            parts[4 * n:4 * n + 4] = fresh[4 * at:4 * at + 4]
    metric.stale = []
    return parts


def _pieces(definition: MetricDef, points: list[Point]) -> list:
    """Per point: own fields, attributes, extra attributes and the point's size."""
    if definition.kind == "histogram":
        return _histogram_pieces(points)
    if definition.value_type == "int":
        return _number_pieces(points, _NUMBER_POINT, _AS_INT)
    return _number_pieces(points, _DOUBLE_POINT, _AS_DOUBLE)


def _number_pieces(points: list[Point], pack, value_tag: int) -> list:
    """`_pieces` of NumberDataPoints, in one loop (the all-changed interval's hot path)."""
    out: list = []
    add, heads = out.extend, _HEADS
    for point in points:
        attributes, extra = point.attributes, point.extra
        mine, theirs = attributes.as_number, extra.as_number
        if mine is None:
            mine = attributes.as_number = _tagged(attributes, _NUMBER_ATTRS)
        if theirs is None:
            theirs = extra.as_number = _tagged(extra, _NUMBER_ATTRS)
        head, size = heads[_NUMBER_OWN + len(mine) + len(theirs)]
        own = point.encoded
        if own is None:
            own = point.encoded = head + pack(_START, point.start_ns, value_tag, point.value)
        add((own, mine, theirs, size))
    return out


def _histogram_pieces(points: list[Point]) -> list:
    """`_pieces` of HistogramDataPoints, in one loop (the attribute lookups are written out
    as in `_number_pieces`, not shared: a call a point costs more than they do).

    The bounds go after the extra attributes, in one piece shared by the points that have
    the same extras and bounds (all of a metric's, mostly): a point's own bytes hold only
    its start, count, sum and bucket counts (field order is free in protobuf)."""
    out: list = []
    add, heads, sizes = out.extend, _HEADS, _SIZES
    bounds, tails = None, {}  # theirs -> theirs + the packed bounds, while the bounds are the same
    for point in points:
        attributes, extra, value = point.attributes, point.extra, point.value
        mine, theirs = attributes.as_histogram, extra.as_histogram
        if mine is None:
            mine = attributes.as_histogram = _tagged(attributes, _HISTOGRAM_ATTRS)
        if theirs is None:
            theirs = extra.as_histogram = _tagged(extra, _HISTOGRAM_ATTRS)
        if value.bounds is not bounds:
            bounds, tails = value.bounds, {}
        tail = tails.get(theirs)
        if tail is None:
            tail = tails[theirs] = theirs + _packed_bounds(bounds)
        own = point.encoded
        if own is None:
            own = (_HISTOGRAM_HEAD(_START, point.start_ns, 0x21, value.count, 0x29, value.sum)
                   + _packed_counts(value.counts))
            own = point.encoded = heads[len(own) + len(mine) + len(tail) + 9][0] + own
        add((own, mine, tail, sizes.setdefault(size := len(own) + len(mine) + len(tail) + 9, size)))
    return out


class _Heads(dict):
    """A data point's tag and length, and its whole size, by length (a few hundred distinct
    lengths: the kept sizes share these ints instead of holding one each)."""

    def __missing__(self, size: int) -> tuple[bytes, int]:
        head = bytes([_LEN1]) + _varint(size)
        entry = self[size] = (head, _SIZES.setdefault(len(head) + size, len(head) + size))
        return entry


_SIZES: dict[int, int] = {}  # a data point's whole size, one int object a value
_HEADS = _Heads()


# -- data points' own fields ------------------------------------------------------------------

class _CountsFields(dict):
    """A `bucket_counts` field's tag and length, and its packer, by number of counts."""

    def __missing__(self, count: int) -> tuple[bytes, object]:
        field = self[count] = (bytes([0x32]) + _varint(8 * count), struct.Struct(f"<{count}Q").pack)
        return field


_COUNTS_FIELDS = _CountsFields()


def _packed_counts(counts: list[int]) -> bytes:
    if not counts:
        return b""
    head, pack = _COUNTS_FIELDS[len(counts)]
    return head + pack(*counts)


def _packed_bounds(bounds: tuple[float, ...]) -> bytes:
    # not cached by value: a cache keyed by the tuple would serve (0.0,) for (-0.0,)
    return _field(0x3A, struct.pack(f"<{len(bounds)}d", *bounds)) if bounds else b""


# -- attributes -----------------------------------------------------------------------------

def _tagged(attributes: AttributeSet, tag: int) -> bytes:
    """The set's KeyValues as repeated field `tag`.

    Each tagged KeyValue is kept by (tag, key, value's type, value): series share most of
    their attributes (transport, type, direction, process, peer), so a new series encodes
    only what is new in it. Floats are not kept (0.0 == -0.0), and the whole cache is
    dropped when it holds _KEPT_KEY_VALUES (series churn cannot grow it without bound).
    """
    prefix, kept, out = _SMALL[tag], _KEY_VALUES, []
    for key, value in attributes.items:
        kind = type(value)
        if kind is float:
            out.append(prefix + _key_value(key, value))
            continue
        field = kept.get((tag, key, kind, value))
        if field is None:
            if len(kept) >= _KEPT_KEY_VALUES:
                kept.clear()
            field = kept[(tag, key, kind, value)] = prefix + _key_value(key, value)
        out.append(field)
    return b"".join(out)


_KEY_VALUES: dict[tuple, bytes] = {}
_KEPT_KEY_VALUES = 1 << 16


def _key_value(key: str, value) -> bytes:
    """A length-prefixed KeyValue message (without its field tag)."""
    body = _field(_LEN1, key.encode()) + _field(0x12, any_value(value))
    return _varint(len(body)) + body


def any_value(value) -> bytes:
    """An AnyValue message body for a str, bool, int or float attribute value."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, str):
        return _field(_LEN1, value.encode())
    raise TypeError(f"attribute value {value!r}: only str, bool, int and float are exported")


# -- messages around the points --------------------------------------------------------------

def _metric_head(definition: MetricDef) -> bytes:
    return _head(definition.name, definition.description, definition.unit)


@lru_cache(maxsize=256)
def _head(name: str, description: str, unit: str) -> bytes:
    """name, description and unit of a Metric."""
    head = _field(_LEN1, name.encode())
    if description:
        head += _field(0x12, description.encode())
    if unit:
        head += _field(0x1A, unit.encode())
    return head


@lru_cache(maxsize=4096)
def _resource(attributes: AttributeSet) -> bytes:
    """A Resource's attributes (the builder keeps one AttributeSet per resource: by identity)."""
    return _tagged(attributes, _LEN1)


@lru_cache(maxsize=16)
def _instrumentation_scope(name: str, version: str) -> bytes:
    return _field(_LEN1, name.encode()) + (_field(0x12, version.encode()) if version else b"")


def _field(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _varint(len(body)) + body


_SMALL = [bytes([n]) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
