"""metadata.yaml against the design's catalog, the field table, and docs/metrics.md."""

from pathlib import Path

import pytest

from otel_netreceiver.metrics import catalog, docs, fields

CATALOG = catalog.load()
ROOT = Path(__file__).resolve().parents[2]

# The catalog of shared/DESIGN.md: name -> (kind, monotonic, unit, extra attributes).
DESIGN = {
    "tcp.connection.opened": ("sum", True, "{connection}", set()),
    "tcp.connection.closed": ("sum", True, "{connection}", set()),
    "tcp.connection.failed": ("sum", True, "{connection}", {"error.type"}),
    "tcp.connection.active": ("sum", False, "{connection}", set()),
    "tcp.connection.duration": ("histogram", False, "s", set()),
    "tcp.io": ("sum", True, "By", {"network.io.direction"}),
    "tcp.packet.count": ("sum", True, "{packet}", {"network.io.direction"}),
    "tcp.retransmit.count": ("sum", True, "{segment}", set()),
    "tcp.reset.count": ("sum", True, "{segment}", {"network.io.direction"}),
    "tcp.rtt": ("histogram", False, "s", set()),
    "udp.io": ("sum", True, "By", {"network.io.direction"}),
    "udp.packet.count": ("sum", True, "{packet}", {"network.io.direction"}),
}
PEER_KEYS = ("container.id", "k8s.pod.name", "k8s.namespace.name", "k8s.container.name",
             "k8s.deployment.name", "k8s.replicaset.name", "k8s.statefulset.name",
             "k8s.daemonset.name", "k8s.job.name", "k8s.cronjob.name", "process.executable.name")
FLOW_ATTRIBUTES = {"network.transport", "network.type", "network.connection.direction",
                   "network.peer.address", "server.address", "server.port",
                   "process.executable.name", "process.pid", "process.command",
                   *(f"peer.{k}" for k in PEER_KEYS)}


@pytest.mark.parametrize("name", sorted(DESIGN))
def test_flow_metric_matches_design(name):
    kind, monotonic, unit, extra = DESIGN[name]
    metric = CATALOG.metrics[name]
    assert (metric.kind, metric.monotonic, metric.unit) == (kind, monotonic, unit)
    assert {a.name for a in metric.attributes} == FLOW_ATTRIBUTES | extra


@pytest.mark.parametrize("name, attributes", [
    ("dns.lookup.duration", {"dns.question.name", "server.address", "error.type", "process.executable.name",
                             "process.pid", "process.command"}),
    ("dns.lookup.timeout.count", {"dns.question.name", "server.address", "process.executable.name",
                                  "process.pid", "process.command"}),
])
def test_dns_metric_attributes(name, attributes):
    assert {a.name for a in CATALOG.metrics[name].attributes} == attributes


def test_failed_reasons_are_the_model_enum():
    from otel_netreceiver.flows.model import FailureReason
    error_type = CATALOG.attributes["tcp.error.type"]
    assert set(error_type.enum) == {r.value for r in FailureReason}


def test_every_flow_metric_has_a_field_and_every_field_a_metric():
    flow_metrics = {n for n in CATALOG.metrics if not n.startswith("otel_netreceiver.")}
    assert flow_metrics == set(fields.FIELDS)


def test_agent_metrics_named_by_the_field_table_exist():
    names = {fields.AGENT_LOSSES[0], fields.AGENT_FLOWS_TRACKED[0], fields.AGENT_EXPORT_FAILURES[0],
             fields.AGENT_COLLECTION_DURATION, fields.AGENT_MAP_FILL[0], fields.AGENT_GAUGES[0]}
    assert names == {n for n in CATALOG.metrics if n.startswith("otel_netreceiver.")}


@pytest.mark.parametrize("name", ["tcp.connection.duration", "tcp.rtt", "dns.lookup.duration"])
def test_histogram_bounds_fit_the_kernel(name):
    bounds = CATALOG.metrics[name].bounds
    assert 0 < len(bounds) <= 16
    assert list(bounds) == sorted(set(bounds))


def test_agreed_default_bounds():
    assert CATALOG.metrics["tcp.connection.duration"].bounds == (
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)
    assert CATALOG.metrics["tcp.rtt"].bounds == (
        0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1)


def test_peer_attributes_match_enrichment():
    from otel_netreceiver.enrich.peers import PEER_KEYS as ENRICH_PEER_KEYS
    assert ENRICH_PEER_KEYS == PEER_KEYS


def test_resource_attributes_of_the_design_are_declared():
    assert {"host.name", "host.id", "os.type", "container.id", "container.runtime",
            "k8s.pod.uid"} <= set(CATALOG.resource_attributes)


def test_docs_metrics_md_is_generated_from_metadata():
    committed = (ROOT / "docs" / "metrics.md").read_text()
    assert committed == docs.render(CATALOG), (
        "docs/metrics.md is stale: run .venv/bin/python -m otel_netreceiver.metrics.docs > docs/metrics.md")


def test_no_metric_name_is_hard_coded_outside_the_catalog_and_field_table():
    package = ROOT / "otel_netreceiver"
    ours = [*package.glob("*.py"), *(package / "metrics").glob("*.py"), *(package / "export").glob("*.py")]
    for path in ours:
        if path.name == "fields.py":
            continue
        text = path.read_text()
        for name in CATALOG.metrics:
            assert f'"{name}"' not in text, f"{path.relative_to(ROOT)} hard-codes {name}"
