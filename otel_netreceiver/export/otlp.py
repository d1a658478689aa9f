"""OTLP over gRPC or HTTP/protobuf through the OpenTelemetry SDK's own exporters.

Everything the configuration resolved (endpoint, headers, TLS, compression, timeout) is
passed explicitly, so the SDK does not read the environment a second time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData

from otel_netreceiver.config import ExporterConfig

log = logging.getLogger(__name__)

# Data points per request. A node with 10k flow series has ~120k points (36 MB in one
# request): more than a Collector's gRPC receiver accepts by default (4 MiB) and than the
# SDK's HTTP exporter sends (64 MiB). ~300 bytes a point keeps a request near 2.5 MB.
MAX_POINTS_PER_REQUEST = 8192


class OtlpExporter:
    """Sends MetricsData to an OTLP endpoint; `export` never raises."""

    def __init__(self, config: ExporterConfig) -> None:
        self.name = config.name
        self.delta = config.delta
        self._timeout_s = config.timeout_s
        self._sdk = _grpc(config) if config.type == "otlp" else _http(config)

    def export(self, data: MetricsData) -> bool:
        try:
            result = self._sdk.export(data, timeout_millis=self._timeout_s * 1000)
        except Exception as err:  # the SDK should not raise; a bug there must not stop the agent
            log.warning("exporter %s: export failed: %s", self.name, err)
            return False
        return result is MetricExportResult.SUCCESS

    def shutdown(self) -> None:
        self._sdk.shutdown()


def _grpc(config: ExporterConfig):
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    parsed = urlparse(config.endpoint if "://" in config.endpoint else f"//{config.endpoint}")
    insecure = config.tls.insecure if config.tls.insecure is not None else parsed.scheme == "http"
    credentials = None if insecure else grpc.ssl_channel_credentials(
        root_certificates=_read(config.tls.ca_file),
        private_key=_read(config.tls.key_file),
        certificate_chain=_read(config.tls.cert_file),
    )
    compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}.get(
        config.compression, grpc.Compression.NoCompression)
    return OTLPMetricExporter(endpoint=parsed.netloc, insecure=insecure, credentials=credentials,
                              headers=dict(config.headers), timeout=config.timeout_s,
                              max_export_batch_size=MAX_POINTS_PER_REQUEST,
                              compression=compression)


def _http(config: ExporterConfig):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=config.endpoint, certificate_file=config.tls.ca_file,
                              client_key_file=config.tls.key_file,
                              client_certificate_file=config.tls.cert_file,
                              headers=dict(config.headers), timeout=config.timeout_s,
                              max_export_batch_size=MAX_POINTS_PER_REQUEST,
                              compression=Compression(config.compression),
                              session=_session() if config.tls.ca_file else None)


def _session():
    """A requests Session that keeps the configured CA.

    requests replaces a session's `verify` with $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE when
    those are set (a long-standing requests behaviour), which would silently ignore ca_file.
    """
    import requests

    class PinnedCa(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            merged["verify"] = self.verify
            return merged

    return PinnedCa()


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None
