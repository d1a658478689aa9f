"""A Prometheus scrape endpoint (prometheus_client) serving the latest cumulative export.

Names are converted as the Collector's prometheus exporter converts them: dots become
underscores, the unit becomes a suffix (`By` -> `_bytes`, `s` -> `_seconds`, `1` on a
gauge -> `_ratio`; `{annotations}` are dropped) and monotonic sums end in `_total`.
Resource attributes become labels on every series (the Collector's
`resource_to_telemetry_conversion`), so a query can select by container or host directly.
"""

from __future__ import annotations

import logging
import re
import threading

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from otel_netreceiver.config import ExporterConfig
from otel_netreceiver.metrics.points import Batch, MetricData

log = logging.getLogger(__name__)

UNIT_SUFFIXES = {"By": "bytes", "s": "seconds", "ms": "milliseconds", "1": "ratio"}


def metric_name(name: str, unit: str, kind: str, monotonic: bool) -> str:
    """The Prometheus name of an OTLP metric (without `_total` / `_bucket` sample suffixes)."""
    base = sanitize(name)
    suffix = UNIT_SUFFIXES.get(unit, "") if not unit.startswith("{") else ""
    if suffix == "ratio" and kind != "gauge":
        suffix = ""
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    return base


def sanitize(name: str) -> str:
    """Dots and other characters Prometheus does not allow become underscores."""
    clean = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    return f"_{clean}" if clean[:1].isdigit() else clean


class PrometheusExporter:
    """Keeps the last Batch and renders it on each scrape."""

    delta = False

    def __init__(self, config: ExporterConfig) -> None:
        self.name = config.name
        host, _, port = config.endpoint.rpartition(":")
        self._latest: Batch | None = None
        self._lock = threading.Lock()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        try:
            self._server, self._thread = start_http_server(int(port), host.strip("[]"), registry)
        except OSError as err:
            raise OSError(f"prometheus exporter: cannot listen on {config.endpoint}: {err.strerror}") from err
        log.info("prometheus exporter listening on http://%s/metrics", config.endpoint)

    def export(self, batch: Batch) -> bool:
        with self._lock:
            self._latest = batch
        return True

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def collect(self):
        """prometheus_client's custom collector hook: one family per metric name."""
        with self._lock:
            data = self._latest
        if data is None:
            return []
        families: dict[str, Metric] = {}
        for resource in data.resources:
            resource_labels = _labels(resource.attributes.items)
            for scope in resource.scopes:
                for metric in scope.metrics:
                    _add_samples(families, metric, resource_labels)
        return list(families.values())


def _add_samples(families: dict[str, Metric], metric: MetricData, resource_labels: dict[str, str]) -> None:
    definition = metric.definition
    monotonic = definition.kind == "sum" and definition.monotonic
    kind = "histogram" if definition.kind == "histogram" else "counter" if monotonic else "gauge"
    name = metric_name(definition.name, definition.unit or "", kind, monotonic)
    family = families.setdefault(name, Metric(name, definition.description or definition.name, kind))
    for point in metric.points:
        labels = {**resource_labels, **_labels(point.attribute_items())}
        if kind == "histogram":
            _histogram_samples(family, name, labels, point)
        else:
            family.add_sample(f"{name}_total" if monotonic else name, labels, point.value)


def _histogram_samples(family: Metric, name: str, labels: dict[str, str], point) -> None:
    cumulative, value = 0, point.value
    for bound, count in zip([*value.bounds, float("inf")], value.counts):
        cumulative += count
        family.add_sample(f"{name}_bucket", {**labels, "le": floatToGoString(bound)}, cumulative)
    family.add_sample(f"{name}_sum", labels, value.sum)
    family.add_sample(f"{name}_count", labels, value.count)


def _labels(items) -> dict[str, str]:
    return {sanitize(k): str(v) for k, v in items}
