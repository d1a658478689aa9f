"""Test helper: the SDK's MetricsData for a Batch, as the builder produced before Batch.

The SDK's data classes (one object per data point) are what the tests compare with: the
OTLP encoder's bytes must equal the SDK's `encode_metrics` of this, and the builder tests
read points through it as they always did.
"""

from __future__ import annotations

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

from otel_netreceiver.flows.model import Histogram
from otel_netreceiver.metrics.points import DELTA, Batch, MetricData


def to_sdk(batch: Batch) -> MetricsData:
    return MetricsData([
        ResourceMetrics(Resource(dict(resource.attributes.items), ""),
                        [ScopeMetrics(InstrumentationScope(scope.name, scope.version),
                                      [_metric(m, batch.time_ns) for m in scope.metrics], "")
                         for scope in resource.scopes], "")
        for resource in batch.resources])


def _metric(metric: MetricData, time_ns: int) -> Metric:
    definition = metric.definition
    points = [_point(p, time_ns) for p in metric.points]
    temporality = AggregationTemporality.DELTA if metric.temporality == DELTA else AggregationTemporality.CUMULATIVE
    if definition.kind == "histogram":
        data = OtlpHistogram(points, temporality)
    elif definition.kind == "sum":
        data = Sum(points, temporality, definition.monotonic)
    else:
        data = Gauge(points)
    return Metric(definition.name, definition.description, definition.unit, data)


def _point(point, time_ns: int):
    attributes = dict(point.attribute_items())
    value = point.value
    if isinstance(value, Histogram):
        return HistogramDataPoint(attributes, point.start_ns, time_ns, value.count, value.sum,
                                  list(value.counts), list(value.bounds), None, None)
    return NumberDataPoint(attributes, point.start_ns, time_ns, value)
