"""Exporters: OTLP gRPC and HTTP into in-test receivers, the debug summary, Prometheus."""

import dataclasses
import io
import urllib.request

import pytest

from otel_netreceiver.config import ExporterConfig, TlsSettings
from otel_netreceiver.enrich.base import Enricher
from otel_netreceiver.export import create
from otel_netreceiver.export.debug import DebugExporter
from otel_netreceiver.export import otlp
from otel_netreceiver.export.prometheus import metric_name
from otel_netreceiver.flows.model import Series, Snapshot
from otel_netreceiver.metrics import catalog
from otel_netreceiver.metrics.builder import AgentTelemetry, BuildSettings, MetricsBuilder
from tests.support import fake_source
from tests.support.otlp_server import GrpcReceiver, HttpReceiver, make_tls_files

CATALOG = catalog.load()


@pytest.fixture
def data():
    builder = MetricsBuilder(CATALOG, BuildSettings(frozenset(CATALOG.metrics)), {"host.name": "h"}, 1)
    snapshot = Snapshot(2_000_000_000)
    fake_source.FakeCollector().collect(snapshot)
    return builder.build(Enricher({"host.name": "h"}).enrich(snapshot), AgentTelemetry({}, 0.5))


@pytest.mark.parametrize("receiver_type, kind, compression", [
    (GrpcReceiver, "otlp", "none"), (GrpcReceiver, "otlp", "gzip"),
    (HttpReceiver, "otlphttp", "none"), (HttpReceiver, "otlphttp", "gzip"),
])
def test_otlp_exporters_deliver_metrics_and_headers(data, receiver_type, kind, compression):
    with receiver_type() as receiver:
        suffix = "/v1/metrics" if kind == "otlphttp" else ""
        config = ExporterConfig(kind, kind, endpoint=receiver.endpoint + suffix,
                                headers={"x-tenant": "t1"}, compression=compression, timeout_s=5)
        exporter = create(config)
        assert exporter.export(data)
        exporter.shutdown()
        points = receiver.received.points()
    io_points = [p for p in points if p.name == "tcp.io"]
    assert sorted(p.value for p in io_points) == [100, 100, 1000, 1000]
    assert {p.unit for p in io_points} == {"By"} and all(p.monotonic for p in io_points)
    assert receiver.received.headers[0]["x-tenant"] == "t1"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("receiver_type, kind", [(GrpcReceiver, "otlp"), (HttpReceiver, "otlphttp")])
@pytest.mark.parametrize("client_cert, trusted, delivered", [
    (True, True, True),     # mTLS as configured
    (False, True, False),   # the server requires a client certificate
    (True, False, False),   # the server's certificate is not signed by a CA we trust
])
def test_otlp_tls(data, tls_files, tmp_path, receiver_type, kind, client_cert, trusted, delivered):
    other_ca = tls_files.ca if trusted else make_tls_files(tmp_path).ca
    tls = TlsSettings(ca_file=other_ca, cert_file=tls_files.client_cert if client_cert else None,
                      key_file=tls_files.client_key if client_cert else None)
    with receiver_type(tls_files) as receiver:
        suffix = "/v1/metrics" if kind == "otlphttp" else ""
        exporter = create(ExporterConfig(kind, kind, endpoint=receiver.endpoint + suffix, tls=tls, timeout_s=2))
        ok = exporter.export(data)
        exporter.shutdown()
        count = len(receiver.received.requests)
    assert (ok, count) == ((True, 1) if delivered else (False, 0))


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def clean_environment(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def _closed_endpoint() -> str:
    with HttpReceiver() as receiver:
        return receiver.endpoint + "/v1/metrics"


@pytest.mark.parametrize("no_proxy, through_proxy", [(None, True), ("127.0.0.1", False), ("example.com", True)])
def test_otlp_http_honours_the_environment_proxy(data, clean_environment, no_proxy, through_proxy):
    """$HTTP_PROXY and $NO_PROXY as requests honours them: the 'proxy' is a receiver that
    takes the request for a closed endpoint (a forward proxy gets the absolute URL)."""
    endpoint = _closed_endpoint()
    with HttpReceiver() as proxy:
        clean_environment.setenv("HTTP_PROXY", proxy.endpoint)
        if no_proxy:
            clean_environment.setenv("NO_PROXY", no_proxy)
        exporter = create(ExporterConfig("otlphttp", "otlphttp", endpoint=endpoint, timeout_s=2))
        results = [exporter.export(data) for _ in range(2)]  # the second from the kept settings
        exporter.shutdown()
        paths = [headers["path"] for headers in proxy.received.headers]
    assert (results, paths) == (([True] * 2, [endpoint] * 2) if through_proxy else ([False] * 2, []))


@pytest.mark.parametrize("ca_file, bundle, delivered", [
    (None, "trusted", True),      # no ca_file: $REQUESTS_CA_BUNDLE is the CA, as requests does
    (None, "other", False),
    ("trusted", "other", True),   # a configured ca_file wins over the environment
    ("other", "trusted", False),
])
def test_otlp_http_ca_from_config_or_environment(data, tls_files, tmp_path, clean_environment, ca_file, bundle,
                                                 delivered):
    cas = {"trusted": tls_files.ca, "other": make_tls_files(tmp_path).ca}
    clean_environment.setenv("REQUESTS_CA_BUNDLE", cas[bundle])
    tls = TlsSettings(ca_file=cas.get(ca_file), cert_file=tls_files.client_cert, key_file=tls_files.client_key)
    with HttpReceiver(tls_files) as receiver:
        exporter = create(ExporterConfig("otlphttp", "otlphttp", endpoint=receiver.endpoint + "/v1/metrics",
                                         tls=tls, timeout_s=2))
        results = [exporter.export(data) for _ in range(2)]
        exporter.shutdown()
    assert results == [delivered] * 2


@pytest.mark.parametrize("environment", [
    {},
    {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "localhost"},
    {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "collector.example"},
    {"https_proxy": "http://proxy:3128", "REQUESTS_CA_BUNDLE": "/etc/ca.pem"},
    {"CURL_CA_BUNDLE": "/etc/curl.pem", "ALL_PROXY": "socks5://proxy:1080"},
])
def test_otlp_http_session_merges_the_environment_as_requests_does_once(clean_environment, environment):
    import requests

    url = "https://collector.example:4318/v1/metrics"
    for name, value in environment.items():
        clean_environment.setenv(name, value)
    session = otlp._session(ExporterConfig("otlphttp", "otlphttp", endpoint=url))
    session.verify, session.cert = True, ("client.pem", "client.key")  # as the SDK sets them
    plain = requests.Session()
    plain.verify, plain.cert = session.verify, session.cert
    expected = plain.merge_environment_settings(url, {}, None, None, None)
    assert session.merge_environment_settings(url, {}, None, None, None) == expected
    clean_environment.setenv("HTTPS_PROXY", "http://changed:1")  # read once: not seen
    assert session.merge_environment_settings(url, {}, None, None, None) == expected
    session.verify = "/etc/other.pem"  # a session setting changed: merged anew
    assert session.merge_environment_settings(url, {}, None, None, None)["verify"] == (
        environment.get("REQUESTS_CA_BUNDLE") or environment.get("CURL_CA_BUNDLE") or "/etc/other.pem")


def test_otlp_http_leaves_a_credential_provider_to_the_sdk(clean_environment):
    clean_environment.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_METRICS_CREDENTIAL_PROVIDER", "mine")
    assert otlp._session(ExporterConfig("otlphttp", "otlphttp")) is None
    tls = TlsSettings(ca_file="ca.pem")
    assert otlp._session(ExporterConfig("otlphttp", "otlphttp", tls=tls)) is not None


def test_otlp_export_failure_returns_false(data):
    with GrpcReceiver() as receiver:
        endpoint = receiver.endpoint
    exporter = create(ExporterConfig("otlp", "otlp", endpoint=endpoint, timeout_s=0.5,
                                     tls=TlsSettings(insecure=True)))
    assert exporter.export(data) is False


@pytest.mark.parametrize("verbosity", ["basic", "normal", "detailed"])
def test_debug_verbosity(data, verbosity):
    out = io.StringIO()
    DebugExporter(ExporterConfig("debug", "debug", verbosity=verbosity), out).export(data)
    text = out.getvalue().splitlines()
    metrics = [m for _, _, m in data.metrics()]
    points = data.point_count()
    assert text[0] == f"export: 1 resources, {len(metrics)} metrics, {points} data points"
    expected = {"basic": 1, "normal": 2 + len(metrics), "detailed": 2 + len(metrics) + points}
    assert len(text) == expected[verbosity]
    if verbosity == "detailed":
        assert "    value=100 {network.connection.direction=outgoing, network.io.direction=transmit," in "\n".join(text)


@pytest.mark.parametrize("name, unit, kind, monotonic, expected", [
    ("tcp.io", "By", "sum", True, "tcp_io_bytes"),
    ("tcp.connection.opened", "{connection}", "sum", True, "tcp_connection_opened"),
    ("tcp.rtt", "s", "histogram", False, "tcp_rtt_seconds"),
    ("otel_netreceiver.map.fill", "1", "gauge", False, "otel_netreceiver_map_fill_ratio"),
    ("x.duration_seconds", "s", "gauge", False, "x_duration_seconds"),
    ("9lives", "", "gauge", False, "_9lives"),
])
def test_prometheus_names(name, unit, kind, monotonic, expected):
    assert metric_name(name, unit, kind, monotonic) == expected


def test_prometheus_scrape(data, unused_port):
    exporter = create(ExporterConfig("prometheus", "prometheus", endpoint=f"127.0.0.1:{unused_port}"))
    try:
        assert urllib.request.urlopen(f"http://127.0.0.1:{unused_port}/metrics").read() == b""
        exporter.export(data)
        text = urllib.request.urlopen(f"http://127.0.0.1:{unused_port}/metrics").read().decode()
    finally:
        exporter.shutdown()
    assert ('tcp_io_bytes_total{host_name="h",network_connection_direction="outgoing",'
            'network_io_direction="transmit",network_peer_address="198.18.20.2",network_transport="tcp",'
            'network_type="ipv4",process_executable_name="curl",server_address="198.18.20.2",'
            'server_port="80"} 100.0') in text
    assert 'tcp_connection_duration_seconds_bucket{host_name="h",le="+Inf",' in text
    assert 'tcp_connection_duration_seconds_count{host_name="h",network_connection_direction="outgoing"' in text
    assert "# TYPE tcp_connection_active gauge" in text


@pytest.fixture
def unused_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("receiver_type, kind", [(GrpcReceiver, "otlp"), (HttpReceiver, "otlphttp")])
@pytest.mark.parametrize("limits", [None, (10**9, 400_000)], ids=["own", "bytes"])
def test_large_exports_are_split_into_requests_a_collector_accepts(receiver_type, kind, limits, monkeypatch):
    """1,000 flow series (>12,000 points, ~2.5 MB) leave in several requests, none over the
    limits (the exporter's own, or a bytes limit only), and every point arrives once."""
    if limits:
        monkeypatch.setitem(otlp.REQUEST_LIMITS, kind, limits)
    builder = MetricsBuilder(CATALOG, BuildSettings(frozenset(CATALOG.metrics)), {"host.name": "h"}, 1)
    snapshot = Snapshot(2_000_000_000)
    for port in range(1000):
        key = dataclasses.replace(fake_source.OUT, server_port=port + 1)
        snapshot.tcp[key] = Series(fake_source.START_NS, fake_source.tcp_stats(1))
    data = builder.build(Enricher({"host.name": "h"}).enrich(snapshot), AgentTelemetry({}, 0.5))
    sent = data.point_count()
    with receiver_type() as receiver:
        suffix = "/v1/metrics" if kind == "otlphttp" else ""
        exporter = create(ExporterConfig(kind, kind, endpoint=receiver.endpoint + suffix, timeout_s=30))
        assert exporter.export(data)
        exporter.shutdown()
        sizes = [sum(len(m.gauge.data_points) + len(m.sum.data_points) + len(m.histogram.data_points)
                     for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
                 for request in receiver.received.requests]
        payloads = [len(request.SerializeToString()) for request in receiver.received.requests]
    max_points, max_bytes = otlp.REQUEST_LIMITS[kind]
    assert sent > 12_000 and sum(sizes) == sent and len(sizes) >= 2
    assert max(sizes) <= max_points and max(payloads) <= max_bytes


def test_request_limits_stay_within_a_collectors_defaults():
    """gRPC: a 4 MiB message; OTLP/HTTP: a 20 MiB body (and the SDK's own 64 MiB)."""
    assert otlp.REQUEST_LIMITS["otlp"][1] <= 4 * 2**20
    assert otlp.REQUEST_LIMITS["otlphttp"][1] <= 20 * 2**20
