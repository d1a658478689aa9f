"""A readable summary of each export on stdout (the default exporter without an endpoint).

`basic`: one line per export; `normal`: one line per metric with its points' total;
`detailed`: every data point with its attributes.
"""

from __future__ import annotations

import sys
from typing import TextIO

from opentelemetry.sdk.metrics.export import HistogramDataPoint, MetricsData

from otel_netreceiver.config import ExporterConfig


class DebugExporter:
    def __init__(self, config: ExporterConfig, out: TextIO | None = None) -> None:
        self.name = config.name
        self.delta = config.delta
        self._verbosity = config.verbosity
        self._out = out

    def export(self, data: MetricsData) -> bool:
        out = self._out or sys.stdout
        out.write("\n".join(render(data, self._verbosity)) + "\n")
        out.flush()
        return True

    def shutdown(self) -> None:
        pass


def render(data: MetricsData, verbosity: str = "normal") -> list[str]:
    """The lines describing one export."""
    resources = data.resource_metrics
    metrics = [m for r in resources for s in r.scope_metrics for m in s.metrics]
    points = sum(len(m.data.data_points) for m in metrics)
    lines = [f"export: {len(resources)} resources, {len(metrics)} metrics, {points} data points"]
    if verbosity == "basic":
        return lines
    for resource in resources:
        lines.append(f"resource {_attributes(resource.resource.attributes)}")
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                lines.extend(_metric(scope.scope.name, metric, verbosity))
    return lines


def _metric(scope: str, metric, verbosity: str) -> list[str]:
    points = metric.data.data_points
    lines = [f"  {scope} {metric.name} [{metric.unit}] {len(points)} points, total {_total(points)}"]
    if verbosity == "detailed":
        lines.extend(f"    {_value(p)} {_attributes(p.attributes)}" for p in points)
    return lines


def _total(points) -> str:
    total = sum(p.count if isinstance(p, HistogramDataPoint) else p.value for p in points)
    return f"{total:g}" if isinstance(total, float) else str(total)


def _value(point) -> str:
    if isinstance(point, HistogramDataPoint):
        return f"count={point.count} sum={point.sum:g} buckets={list(point.bucket_counts)}"
    return f"value={point.value}"


def _attributes(attributes) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted((attributes or {}).items())) + "}"
