"""The seam into the SDK's OTLP exporters: fails loudly if a new SDK moves it."""

import inspect

import pytest
from opentelemetry.exporter.otlp.proto.grpc import exporter as grpc_mixin
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from otel_netreceiver.export import transport
from otel_netreceiver.export.encoding import EncodedRequest
from tests.support.otlp_server import GrpcReceiver, HttpReceiver

SEAM_BROKEN = ("the OpenTelemetry SDK no longer has the private seam export/transport.py relies on: "
               "re-check its docstring against the installed SDK")


@pytest.mark.parametrize("function, needles", [
    (HttpExporter._export_batch, ["SerializeToString()", "self._client.export(serialized_data)",
                                  "_count_data_points(export_request)"]),
    (grpc_mixin.OTLPExporterMixin._export, ["self._client.Export(", "request=self._translate_data(data)",
                                            "self._count_data(data)"]),
    (grpc_mixin.OTLPExporterMixin._initialize_channel_and_stub, ["self._client = self._stub(self._channel)"]),
])
def test_sdk_still_has_the_seam(function, needles):
    source = inspect.getsource(function)
    for needle in needles:
        assert needle in source, f"{SEAM_BROKEN}: {function.__qualname__} lacks {needle!r}"


def test_grpc_service_path_matches_the_proto():
    service = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"]
    assert service.full_name == transport._SERVICE and "Export" in service.methods_by_name, SEAM_BROKEN


def _request():
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    request.resource_metrics.add().resource.attributes.add(key="k").value.string_value = "v"
    return EncodedRequest(request.SerializeToString(), 0)


@pytest.mark.parametrize("make, receiver_type, suffix", [
    (lambda endpoint: transport.grpc_exporter(endpoint=endpoint, insecure=True, timeout=5), GrpcReceiver, ""),
    (lambda endpoint: transport.http_exporter(endpoint=endpoint, timeout=5), HttpReceiver, "/v1/metrics"),
])
def test_bytes_arrive_unchanged(make, receiver_type, suffix):
    with receiver_type() as receiver:
        exporter = make(receiver.endpoint.removeprefix("http://") if not suffix else receiver.endpoint + suffix)
        assert exporter.send(_request())
        exporter.shutdown()
        [received] = receiver.received.requests
    assert received.SerializeToString() == _request().payload


def test_grpc_reconnect_keeps_the_bytes_stub():
    exporter = transport.grpc_exporter(endpoint="127.0.0.1:1", insecure=True, timeout=0.2)
    exporter._initialize_channel_and_stub()  # what the SDK does after UNAVAILABLE
    assert isinstance(exporter._client, transport.BytesMetricsStub)
    assert exporter.send(_request()) is False  # nothing listens: a failure, not an exception
    exporter.shutdown()


def test_http_send_after_shutdown_fails():
    exporter = transport.http_exporter(endpoint="http://127.0.0.1:1/v1/metrics", timeout=0.2)
    exporter.shutdown()
    assert exporter.send(_request()) is False


def test_sdk_classes_are_the_ones_subclassed():
    assert isinstance(transport.grpc_exporter(endpoint="127.0.0.1:1", insecure=True), GrpcExporter)
    assert isinstance(transport.http_exporter(endpoint="http://127.0.0.1:1/v1/metrics"), HttpExporter)
