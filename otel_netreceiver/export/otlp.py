"""OTLP over gRPC or HTTP/protobuf through the OpenTelemetry SDK's own exporters.

Each Batch is encoded here (`export/encoding.py`), one request within REQUEST_LIMITS
at a time, and each request is sent by the SDK's exporter (`export/transport.py`).
Everything the configuration resolved (endpoint, headers, TLS, compression, timeout) is
passed explicitly, so the SDK does not read the environment a second time; OTLP/HTTP
reads the environment's proxy and CA settings once per exporter (`_environment_once`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from otel_netreceiver.config import ExporterConfig
from otel_netreceiver.export import encoding, transport
from otel_netreceiver.metrics.points import Batch

log = logging.getLogger(__name__)

# Data points and bytes (uncompressed) per request, by exporter type. A node with 10k flow
# series has ~170k points, ~36 MB: more than a Collector's gRPC receiver accepts by default
# (4 MiB a message) and its OTLP/HTTP receiver (20 MiB a body), and than the SDK's HTTP
# exporter sends (64 MiB). 8192 points (~1.7 MB at ~210 bytes a point) and, whatever the
# attributes, never more than 4 MiB less a margin (gRPC) or 8 MiB (HTTP). Larger HTTP
# requests were measured: 8 MiB ones save ~0.7 ms of requests/http.client CPU a request
# but cost more in page faults (each payload is a fresh allocation), ~+20 ms an interval.
MAX_POINTS_PER_REQUEST = 8192
REQUEST_LIMITS = {"otlp": (MAX_POINTS_PER_REQUEST, 4 * 2**20 - 64 * 2**10),
                  "otlphttp": (MAX_POINTS_PER_REQUEST, 8 * 2**20)}


class OtlpExporter:
    """Sends a Batch to an OTLP endpoint; `export` never raises."""

    def __init__(self, config: ExporterConfig) -> None:
        self.name = config.name
        self.delta = config.delta
        self._sdk = _grpc(config) if config.type == "otlp" else _http(config)
        self._max_points, self._max_bytes = REQUEST_LIMITS["otlp" if config.type == "otlp" else "otlphttp"]

    def export(self, batch: Batch) -> bool:
        """Every request of the batch, in order; stops at the first that fails."""
        try:
            for request in encoding.requests(batch, self._max_points, self._max_bytes):
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
                                   session=_session(config))


def _session(config: ExporterConfig):
    """Ours, unless the SDK is to load one from a credential provider (and no ca_file is
    configured: the configured CA wins, as it always has)."""
    from opentelemetry.sdk import environment_variables as variables

    providers = (variables._OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER,
                 variables._OTEL_PYTHON_EXPORTER_OTLP_HTTP_METRICS_CREDENTIAL_PROVIDER)
    if not config.tls.ca_file and any(os.environ.get(name) for name in providers):
        return None
    return _environment_once(pinned_ca=bool(config.tls.ca_file))


def _environment_once(pinned_ca: bool):
    """A requests Session that reads the environment once per URL, not once per request.

    requests merges the environment's proxies ($HTTP(S)_PROXY, $NO_PROXY) and CA bundle
    ($REQUESTS_CA_BUNDLE, $CURL_CA_BUNDLE) into every request: it decodes all of
    os.environ twice a request, most of a small request's CPU. Here requests' own merge
    runs once per URL and session settings, and its result is reused (the agent's
    environment does not change while it runs; cloud enrichment only adds link-local
    metadata hosts to $NO_PROXY, never an OTLP endpoint).

    With `pinned_ca` (a configured ca_file), the session's `verify` wins: requests would
    otherwise replace it with $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE (a long-standing
    requests behaviour) and silently ignore ca_file.
    """
    import requests

    class EnvironmentOnce(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self._merged: dict[tuple, dict] = {}

        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            if proxies or stream is not None or verify is not None or cert is not None:
                merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            else:  # how the SDK calls it: nothing but the session's own settings
                key = (url, self.trust_env, tuple(self.proxies.items()), self.stream, self.verify, self.cert)
                kept = self._merged.get(key)
                if kept is None:
                    kept = self._merged[key] = super().merge_environment_settings(url, {}, None, None, None)
                merged = dict(kept, proxies=dict(kept["proxies"]))
            if pinned_ca:
                merged["verify"] = self.verify
            return merged

    return EnvironmentOnce()


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None
