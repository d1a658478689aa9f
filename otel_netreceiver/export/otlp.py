"""OTLP over gRPC or HTTP/protobuf through the OpenTelemetry SDK's own exporters.

Each Batch is encoded here (`export/encoding.py`), one request of at most
MAX_POINTS_PER_REQUEST points at a time, and each request is sent by the SDK's exporter
(`export/transport.py`). Everything the configuration resolved (endpoint, headers, TLS,
compression, timeout) is passed explicitly, so the SDK does not read the environment a
second time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from otel_netreceiver.config import ExporterConfig
from otel_netreceiver.export import encoding, transport
from otel_netreceiver.metrics.points import Batch

log = logging.getLogger(__name__)

# Data points per request. A node with 10k flow series has ~120k points (36 MB in one
# request): more than a Collector's gRPC receiver accepts by default (4 MiB) and than the
# SDK's HTTP exporter sends (64 MiB). ~300 bytes a point keeps a request near 2.5 MB.
MAX_POINTS_PER_REQUEST = 8192


class OtlpExporter:
    """Sends a Batch to an OTLP endpoint; `export` never raises."""

    def __init__(self, config: ExporterConfig) -> None:
        self.name = config.name
        self.delta = config.delta
        self._sdk = _grpc(config) if config.type == "otlp" else _http(config)

    def export(self, batch: Batch) -> bool:
        """Every request of the batch, in order; stops at the first that fails."""
        try:
            for request in encoding.requests(batch, MAX_POINTS_PER_REQUEST):
                if not self._sdk.send(request):
                    return False
        except Exception as err:  # the SDK should not raise; a bug there must not stop the agent
            log.warning("exporter %s: export failed: %s", self.name, err)
            return False
        return True

    def shutdown(self) -> None:
        self._sdk.shutdown()


def _grpc(config: ExporterConfig):
    import grpc

    parsed = urlparse(config.endpoint if "://" in config.endpoint else f"//{config.endpoint}")
    insecure = config.tls.insecure if config.tls.insecure is not None else parsed.scheme == "http"
    credentials = None if insecure else grpc.ssl_channel_credentials(
        root_certificates=_read(config.tls.ca_file),
        private_key=_read(config.tls.key_file),
        certificate_chain=_read(config.tls.cert_file),
    )
    compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}.get(
        config.compression, grpc.Compression.NoCompression)
    return transport.grpc_exporter(endpoint=parsed.netloc, insecure=insecure, credentials=credentials,
                                   headers=dict(config.headers), timeout=config.timeout_s,
                                   compression=compression)


def _http(config: ExporterConfig):
    from opentelemetry.exporter.otlp.proto.http import Compression

    return transport.http_exporter(endpoint=config.endpoint, certificate_file=config.tls.ca_file,
                                   client_key_file=config.tls.key_file,
                                   client_certificate_file=config.tls.cert_file,
                                   headers=dict(config.headers), timeout=config.timeout_s,
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
