"""The SDK's OTLP exporters, sending requests this package already encoded.

Why this module exists: the agent must export through the OpenTelemetry SDK's OTLP
exporters (their retry and backoff, TLS, headers, compression, timeouts and own
telemetry), but their public `export(MetricsData)` builds a Python object per data point
and encodes them in pure Python: seconds per interval at 10k series. `export/encoding.py`
encodes the protobuf bytes directly; this module hands those bytes to the SDK at the
narrowest point where the SDK has a serialized request in hand. Both points are private
SDK API (verified with opentelemetry-exporter-otlp-proto-* 1.45.2), so
`tests/unit/test_transport.py` checks them and fails loudly if a new SDK moves them:

* OTLP/HTTP: `OTLPMetricExporter._export_batch(request)` calls
  `request.SerializeToString()`, checks the size limit and hands the bytes to its HTTP
  client (retries, compression, TLS). We pass an object whose SerializeToString returns
  our bytes.
* OTLP/gRPC: `OTLPExporterMixin._export(data)` retries
  `self._client.Export(request=self._translate_data(data), ...)`, where `self._client` is
  `self._stub(self._channel)`. We install a stub whose request serializer passes bytes
  through and a `_translate_data` that returns the bytes.

Everything else (channel, credentials, headers, compression, retries, shutdown) is the
SDK's own code.
"""

from __future__ import annotations

from otel_netreceiver.export.encoding import EncodedRequest

_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"


class _Serialized:
    """Stands in for an ExportMetricsServiceRequest the HTTP exporter serializes.

    `resource_metrics` is read only to count points for the SDK's own (opt-in)
    telemetry; it is empty here, so that count is 0.
    """

    resource_metrics = ()

    def __init__(self, payload: bytes) -> None:
        self._payload = payload

    def SerializeToString(self) -> bytes:  # noqa: N802 (protobuf's name)
        return self._payload


def http_exporter(**options):
    """The SDK's OTLP/HTTP metric exporter with a `send(EncodedRequest) -> bool`."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult

    class HttpBytesExporter(OTLPMetricExporter):
        def send(self, request: EncodedRequest) -> bool:
            if self._shutdown:
                return False
            return self._export_batch(_Serialized(request.payload)) is MetricExportResult.SUCCESS

    return HttpBytesExporter(**options)


def grpc_exporter(**options):
    """The SDK's OTLP/gRPC metric exporter with a `send(EncodedRequest) -> bool`."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult

    class GrpcBytesExporter(OTLPMetricExporter):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            # The SDK rebuilds `_client` from `_stub` when it reconnects: replace both.
            self._stub = BytesMetricsStub
            self._client = BytesMetricsStub(self._channel)

        def _translate_data(self, data: EncodedRequest) -> bytes:
            return data.payload

        def _count_data(self, data: EncodedRequest) -> int:
            return data.points

        def send(self, request: EncodedRequest) -> bool:
            return self._export(request) is MetricExportResult.SUCCESS

    return GrpcBytesExporter(**options)


class BytesMetricsStub:
    """MetricsService client whose Export takes an already serialized request."""

    def __init__(self, channel) -> None:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )

        self.Export = channel.unary_unary(  # noqa: N815 (the RPC's name)
            f"/{_SERVICE}/Export", request_serializer=_as_is,
            response_deserializer=ExportMetricsServiceResponse.FromString)


def _as_is(payload: bytes) -> bytes:
    return payload
