"""A readable summary of each export on stdout (the default exporter without an endpoint).

`basic`: one line per export; `normal`: one line per metric with its points' total;
`detailed`: every data point with its attributes.
"""

from __future__ import annotations

import sys
from typing import TextIO

from otel_netreceiver.config import ExporterConfig
from otel_netreceiver.flows.model import Histogram
from otel_netreceiver.metrics.points import Batch, MetricData, Point


class DebugExporter:
    def __init__(self, config: ExporterConfig, out: TextIO | None = None) -> None:
        self.name = config.name
        self.delta = config.delta
        self._verbosity = config.verbosity
        self._out = out

    def export(self, batch: Batch) -> bool:
        out = self._out or sys.stdout
        out.write("\n".join(render(batch, self._verbosity)) + "\n")
        out.flush()
        return True

    def shutdown(self) -> None:
        pass


def render(batch: Batch, verbosity: str = "normal") -> list[str]:
    """The lines describing one export."""
    metrics = [metric for _, _, metric in batch.metrics()]
    points = sum(len(m.points) for m in metrics)
    lines = [f"export: {len(batch.resources)} resources, {len(metrics)} metrics, {points} data points"]
    if verbosity == "basic":
        return lines
    for resource in batch.resources:
        lines.append(f"resource {_attributes(resource.attributes.items)}")
        for scope in resource.scopes:
            for metric in scope.metrics:
                lines.extend(_metric(scope.name, metric, verbosity))
    return lines


def _metric(scope: str, metric: MetricData, verbosity: str) -> list[str]:
    points, definition = metric.points, metric.definition
    lines = [f"  {scope} {definition.name} [{definition.unit}] {len(points)} points, total {_total(points)}"]
    if verbosity == "detailed":
        lines.extend(f"    {_value(p)} {_attributes(p.attribute_items())}" for p in points)
    return lines


def _total(points: list[Point]) -> str:
    total = sum(p.value.count if isinstance(p.value, Histogram) else p.value for p in points)
    return f"{total:g}" if isinstance(total, float) else str(total)


def _value(point: Point) -> str:
    value = point.value
    if isinstance(value, Histogram):
        return f"count={value.count} sum={value.sum:g} buckets={list(value.counts)}"
    return f"value={value}"


def _attributes(items) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(items)) + "}"
