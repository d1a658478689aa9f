"""Configuration: file shape, ${env:VAR} expansion, OTEL_* variables and their precedence."""

import pytest

from otel_netreceiver import config
from otel_netreceiver.config import ConfigError, expand, load


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment():
    settings = load(None, {})
    assert (settings.collection_interval_s, settings.initial_delay_s) == (10.0, 1.0)
    [debug] = settings.exporters
    assert (debug.name, debug.type, debug.delta) == ("debug", "debug", False)
    assert "tcp.io" in settings.enabled_metrics and not settings.sdk_disabled


def test_full_file(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = load(write(tmp_path, f"""
collection_interval: 1m30s
initial_delay: 500ms
metrics:
  tcp.rtt: {{enabled: false}}
attributes:
  network.peer.address: {{enabled: false}}
resource_attributes:
  host.id: {{enabled: false}}
exporters:
  otlp:
    endpoint: collector:4317
    headers: {{api-key: secret}}
    tls: {{ca_file: {ca}}}
    compression: gzip
    timeout: 3s
  otlphttp/backup:
    endpoint: https://backend:4318
    temporality: delta
  prometheus:
    endpoint: 127.0.0.1:9999
  debug:
    verbosity: detailed
service:
  telemetry:
    logs: {{level: debug, encoding: json}}
"""), {})
    assert (settings.collection_interval_s, settings.initial_delay_s) == (90.0, 0.5)
    assert "tcp.rtt" not in settings.enabled_metrics
    assert settings.dropped_attributes == {"network.peer.address"}
    assert settings.dropped_resource_attributes == {"host.id"}
    otlp, http, prom, debug = settings.exporters
    assert (otlp.endpoint, otlp.headers, otlp.tls.ca_file, otlp.compression, otlp.timeout_s) == (
        "collector:4317", {"api-key": "secret"}, str(ca), "gzip", 3.0)
    assert (http.name, http.type, http.endpoint, http.delta) == (
        "otlphttp/backup", "otlphttp", "https://backend:4318/v1/metrics", True)
    assert prom.endpoint == "127.0.0.1:9999" and debug.verbosity == "detailed"
    assert (settings.log_level, settings.log_encoding) == ("debug", "json")


ENV_ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317"}


@pytest.mark.parametrize("environ, expected", [
    (ENV_ENDPOINT, ("otlp", "http://env:4317")),
    ({**ENV_ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ("otlphttp", "http://env:4317/v1/metrics")),
    ({**ENV_ENDPOINT, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
      "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("otlphttp", "http://env:4317/v1/metrics")),
    ({**ENV_ENDPOINT, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:1/custom"}, ("otlp", "http://m:1/custom")),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4318/custom", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
     ("otlphttp", "http://m:4318/custom")),
])
def test_environment_endpoint_selects_exporter(environ, expected):
    [exporter] = load(None, environ).exporters
    assert (exporter.type, exporter.endpoint) == expected


def test_environment_settings(tmp_path):
    cert = tmp_path / "ca.pem"
    cert.write_text("x")
    environ = {**ENV_ENDPOINT, "OTEL_EXPORTER_OTLP_HEADERS": "Api-Key=a%20b,x=1",
               "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "only=metrics",
               "OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
               "OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert), "OTEL_METRIC_EXPORT_INTERVAL": "5000",
               "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "DELTA",
               "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=net%2Fops",
               "OTEL_SERVICE_NAME": "edge", "OTEL_SDK_DISABLED": "false"}
    settings = load(None, environ)
    [otlp] = settings.exporters
    assert otlp.headers == {"only": "metrics"}
    assert (otlp.timeout_s, otlp.compression, otlp.tls.ca_file, otlp.delta) == (2.5, "gzip", str(cert), True)
    assert settings.collection_interval_s == 5.0
    assert settings.resource_attributes == {"deployment.environment": "prod", "team": "net/ops"}
    assert settings.service_name == "edge" and not settings.sdk_disabled


def test_file_wins_over_environment(tmp_path):
    environ = {**ENV_ENDPOINT, "OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_METRIC_EXPORT_INTERVAL": "5000",
               "OTEL_EXPORTER_OTLP_HEADERS": "a=env,b=env",
               "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"}
    settings = load(write(tmp_path, """
collection_interval: 20s
exporters:
  otlp:
    endpoint: file:4317
    timeout: 7s
    headers: {a: file}
    temporality: cumulative
"""), environ)
    [otlp] = settings.exporters
    assert settings.collection_interval_s == 20.0
    assert (otlp.endpoint, otlp.timeout_s, otlp.delta) == ("file:4317", 7.0, False)
    assert otlp.headers == {"a": "file", "b": "env"}


def test_environment_fills_what_the_file_leaves_out(tmp_path):
    settings = load(write(tmp_path, "exporters:\n  otlp: {}\n"), {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://e:4317"})
    assert settings.exporters[0].endpoint == "https://e:4317"


def test_sdk_disabled():
    assert load(None, {"OTEL_SDK_DISABLED": "TRUE"}).sdk_disabled


@pytest.mark.parametrize("value, environ, expected", [
    ("${env:A}", {"A": "x"}, "x"),
    ("${env:N}", {"N": "42"}, 42),
    ("${env:B}", {"B": "true"}, True),
    ("pre-${env:A}-post", {"A": "x"}, "pre-x-post"),
    ("${env:MISSING}", {}, ""),
    ("${env:MISSING:-fallback}", {}, "fallback"),
    ("${env:A:-fallback}", {"A": "set"}, "set"),
    ("cost $$5", {}, "cost $5"),
    ({"k": ["${env:A}"]}, {"A": "x"}, {"k": ["x"]}),
])
def test_expansion(value, environ, expected):
    assert expand(value, environ) == expected


def test_expansion_rejects_other_syntax():
    with pytest.raises(ConfigError, match="use"):
        expand("${HOME}", {})


def test_expanded_values_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="collection_interval: bad duration"):
        load(write(tmp_path, "collection_interval: ${env:I}\n"), {"I": "soon"})


def test_initial_delay_may_be_zero(tmp_path):
    assert load(write(tmp_path, "initial_delay: 0s\n"), {}).initial_delay_s == 0


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("500ms", 0.5), ("1m30s", 90), ("1h", 3600), ("1.5s", 1.5)])
def test_durations(text, seconds):
    assert config.duration(text, "x") == seconds


BAD_FILES = [
    ("collection_interval: 10\n", "collection_interval: bad duration"),
    ("collection_interval: 0s\n", "collection_interval: duration must be greater than zero"),
    ("initial_delay: fast\n", "initial_delay: bad duration"),
    ("colection_interval: 10s\n", "colection_interval: unknown key"),
    ("metrics:\n  tcp.bogus: {enabled: false}\n", "metrics.tcp.bogus: unknown metric"),
    ("metrics:\n  tcp.io: {enabled: maybe}\n", "metrics.tcp.io.enabled: expected true or false"),
    ("metrics:\n  tcp.io: {enable: false}\n", "metrics.tcp.io.enable: unknown key"),
    ("attributes:\n  peer.ip: {enabled: false}\n", "attributes.peer.ip: unknown attribute"),
    ("metrics: [tcp.io]\n", "metrics: expected a mapping, got a list"),
    ("exporters:\n  kafka: {}\n", "exporters.kafka: unknown exporter type 'kafka'"),
    ("exporters: {}\n", "exporters: no exporter configured"),
    ("exporters:\n  otlp: {endpoint: 'collector'}\n", "exporters.otlp.endpoint: bad endpoint 'collector'"),
    ("exporters:\n  otlp: {endpoint: 'c:99999'}\n", "exporters.otlp.endpoint: bad endpoint 'c:99999'"),
    ("exporters:\n  otlphttp: {endpoint: 'collector:4318'}\n", "exporters.otlphttp.endpoint: bad endpoint"),
    ("exporters:\n  otlp: {compression: zstd}\n", "exporters.otlp.compression: 'zstd' is not one of"),
    ("exporters:\n  otlp: {timeout: -1s}\n", "exporters.otlp.timeout: bad duration"),
    ("exporters:\n  otlp: {tls: {ca_file: /nonexistent.pem}}\n", "exporters.otlp.tls.ca_file: no such file"),
    ("exporters:\n  otlp: {tls: {insecure: yes please}}\n", "exporters.otlp.tls.insecure: expected true or false"),
    ("exporters:\n  otlp: {headers: [a]}\n", "exporters.otlp.headers: expected a mapping"),
    ("exporters:\n  otlp: {temporality: sometimes}\n", "exporters.otlp.temporality: 'sometimes' is not one of"),
    ("exporters:\n  prometheus: {endpoint: 9464}\n", "exporters.prometheus.endpoint: bad endpoint"),
    ("exporters:\n  debug: {verbosity: loud}\n", "exporters.debug.verbosity: 'loud' is not one of"),
    ("exporters:\n  debug: {endpoint: x:1}\n", "exporters.debug.endpoint: unknown key"),
    ("service:\n  telemetry:\n    logs: {level: chatty}\n", "service.telemetry.logs.level: 'chatty' is not one of"),
    ("service:\n  telemetry:\n    logs: {encoding: xml}\n", "service.telemetry.logs.encoding: 'xml' is not one of"),
    ("service:\n  pipelines: {}\n", "service.pipelines: unknown key"),
    ("- a\n- b\n", "expected a mapping at the top level"),
    ("enrich:\n  containers: 0\n", "enrich.containers: expected true or false"),
    ("enrich:\n  cloud: {detectors: [aws]}\n", "enrich.cloud.detectors: unknown detector 'aws'"),
    ("enrich:\n  cloud: {timeout: 2}\n", "enrich.cloud.timeout: bad duration"),
    ("enrich:\n  kubernetes: {enabled: true, nodename: x}\n", "enrich.kubernetes: unknown key 'nodename'"),
    ("enrich:\n  kubernetes: {labels: app}\n", "enrich.kubernetes.labels: expected a list"),
    ("a: [\n", "not valid YAML"),
    ("probes:\n  tcp: {max_sockets: 0}\n", "probes.tcp.max_sockets: expected a whole number of at least 1"),
    ("probes:\n  tcp: {max_flows: lots}\n", "probes.tcp.max_flows: expected a whole number"),
    ("probes:\n  tcp: {sockets: 10}\n", "probes.tcp: unknown key 'sockets'"),
    ("probes:\n  udp: {max_flows: true}\n", "probes.udp.max_flows: expected a whole number"),
    ("probes:\n  dns: {ports: 53}\n", "probes.dns.ports: expected a list of 1 to 8 ports"),
    ("probes:\n  dns: {ports: [53, 70000]}\n", "probes.dns.ports[1]: expected a port from 1 to 65535"),
    ("probes:\n  dns: {timeout: 5}\n", "probes.dns.timeout: bad duration"),
    ("probes:\n  dns: {ring_buffer_size: 10000}\n", "probes.dns.ring_buffer_size: expected a power of two"),
    ("probes:\n  dns: {over_tcp: no thanks}\n", "probes.dns.over_tcp: expected true or false"),
    ("probes: [tcp]\n", "probes: expected a mapping"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_bad_files(tmp_path, text, message):
    with pytest.raises(ConfigError, match=None) as raised:
        load(write(tmp_path, text), {})
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("environ, expected", [
    ({"OTEL_METRICS_EXPORTER": "console"}, [("debug", "")]),
    ({"OTEL_METRICS_EXPORTER": "prometheus"}, [("prometheus", "127.0.0.1:9464")]),
    ({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "0.0.0.0",
      "OTEL_EXPORTER_PROMETHEUS_PORT": "9000"}, [("prometheus", "0.0.0.0:9000")]),
    ({"OTEL_METRICS_EXPORTER": "otlp,prometheus", **ENV_ENDPOINT},
     [("otlp", "http://env:4317"), ("prometheus", "127.0.0.1:9464")]),
    ({"OTEL_METRICS_EXPORTER": "otlp"}, [("otlp", "http://localhost:4317")]),
    ({"OTEL_METRICS_EXPORTER": "none", **ENV_ENDPOINT}, []),
])
def test_otel_metrics_exporter(environ, expected):
    assert [(e.type, e.endpoint) for e in load(None, environ).exporters] == expected


def test_other_sdk_variables(tmp_path):
    settings = load(None, {**ENV_ENDPOINT, "OTEL_METRIC_EXPORT_TIMEOUT": "4000", "OTEL_LOG_LEVEL": "debug"})
    assert settings.exporters[0].timeout_s == 4.0 and settings.log_level == "debug"
    settings = load(write(tmp_path, "service: {telemetry: {logs: {level: error}}}\n"), {"OTEL_LOG_LEVEL": "debug"})
    assert settings.log_level == "error"


BAD_ENVIRONMENT = [
    ("OTEL_METRICS_EXPORTER", "otlp,zipkin"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "http"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "70000"),
    ("OTEL_METRIC_EXPORT_TIMEOUT", "soon"),
    ("OTEL_LOG_LEVEL", "verbose"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "abc"),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "-5"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "foo"),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://:4317"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
    ("OTEL_EXPORTER_OTLP_INSECURE", "perhaps"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "10s"),
    ("OTEL_RESOURCE_ATTRIBUTES", "=x"),
    ("OTEL_SDK_DISABLED", "yes"),
    ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "sometimes"),
]


@pytest.mark.parametrize("name, value", BAD_ENVIRONMENT)
def test_bad_environment(name, value):
    with pytest.raises(ConfigError) as raised:
        load(None, {name: value})
    assert str(raised.value).startswith(f"environment variable {name}=")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.yaml", {})


def test_enrich_section(tmp_path):
    settings = load(write(tmp_path, """
enrich:
  containers: true
  peers: false
  process: {pid: true}
  cloud: {detectors: [ec2, gcp], timeout: 500ms}
  kubernetes:
    enabled: true
    node_name: node-1
    labels: [app, "*"]
    sync_timeout: 2s
"""), {})
    enrich = settings.enrich
    assert (enrich.containers, enrich.peers, enrich.process_pid, enrich.cloud_detectors,
            enrich.cloud_timeout_s) == (True, False, True, ("ec2", "gcp"), 0.5)
    assert (enrich.kubernetes.enabled, enrich.kubernetes.node_name, enrich.kubernetes.labels,
            enrich.kubernetes.sync_timeout_s) == (True, "node-1", ("app", "*"), 2.0)


def test_probe_settings_come_from_the_file(tmp_path):
    settings = load(write(tmp_path, """
probes:
  tcp: {max_sockets: 200000, idle_intervals: 3}
  dns: {ports: [53, 5353], over_tcp: false, timeout: 1500ms, names_cache_size: 10}
"""), {})
    probes = settings.probes
    assert (probes.tcp.sockets_max, probes.tcp.flows_max, probes.tcp.idle_intervals) == (200000, 16384, 3)
    assert (probes.dns.timeout, probes.names_cache_size) == (1.5, 10)
    assert probes.udp.skb == probes.dns.skb
    assert (probes.dns.skb.dns_ports, probes.dns.skb.dns_over_tcp) == ((53, 5353), False)


def test_probe_settings_default_without_the_section(tmp_path):
    assert load(write(tmp_path, "collection_interval: 5s\n"), {}).probes is None
