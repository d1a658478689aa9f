"""Exporters: OTLP gRPC / HTTP, a readable debug summary on stdout, a Prometheus endpoint.

Every exporter has the same small shape (`Exporter`); `create` turns an ExporterConfig
into one. Each declares whether it wants delta points, so the agent builds each
temporality once per interval.
"""

from __future__ import annotations

from typing import Protocol

from otel_netreceiver.config import ExporterConfig
from otel_netreceiver.metrics.points import Batch


class Exporter(Protocol):
    name: str
    delta: bool

    def export(self, batch: Batch) -> bool: ...  # True on success

    def shutdown(self) -> None: ...


def create(config: ExporterConfig) -> Exporter:
    """Build the exporter a configuration entry describes."""
    if config.type in ("otlp", "otlphttp"):
        from otel_netreceiver.export.otlp import OtlpExporter
        return OtlpExporter(config)
    if config.type == "prometheus":
        from otel_netreceiver.export.prometheus import PrometheusExporter
        return PrometheusExporter(config)
    from otel_netreceiver.export.debug import DebugExporter
    return DebugExporter(config)
