"""build_enricher: cloud merged under the host resource, resolvers wired by config."""

import pytest

from otel_netreceiver.enrich import EnrichConfig, KubernetesConfig, build_enricher
from otel_netreceiver.enrich.containers import ContainerResolver
from otel_netreceiver.flows.model import Workload

HOST = {"host.name": "node-1", "host.id": "machine-id", "os.type": "linux", "deployment.environment": "prod"}
MOUNTS = "cgroup2 /nonexistent/cgroup cgroup2 rw 0 0\n"


class Detect:
    def __init__(self, found):
        self.found, self.calls = found, []

    def __call__(self, detectors, timeout_s):
        self.calls.append((tuple(detectors), timeout_s))
        return self.found


def test_cloud_attributes_fill_but_never_override_the_host_resource():
    detect = Detect({"cloud.provider": "aws", "cloud.region": "eu-west-1",
                     "host.id": "i-0abc", "host.type": "m6i.large"})
    enricher = build_enricher(EnrichConfig(cloud_detectors=("eks", "ec2", "gcp", "azure"),
                                           cloud_timeout_s=0.5), HOST, detect=detect,
                              mounts=lambda: MOUNTS)
    assert enricher.host_resource == {**HOST, "cloud.provider": "aws", "cloud.region": "eu-west-1",
                                      "host.type": "m6i.large"}
    assert detect.calls == [(("eks", "ec2", "gcp", "azure"), 0.5)]


def test_cloud_detection_is_off_unless_asked_for():
    detect = Detect({"cloud.provider": "aws"})
    build_enricher(EnrichConfig(), HOST, detect=detect, mounts=lambda: MOUNTS)
    assert detect.calls == []


@pytest.mark.parametrize("config, resolver_count", [
    (EnrichConfig(cloud_detectors=()), 2),
    (EnrichConfig(cloud_detectors=(), peers=False), 1),
    (EnrichConfig(cloud_detectors=(), containers=False), 1),
])
def test_peer_resolvers(config, resolver_count):
    class Dns:
        def peer_attributes(self, key):
            return {}

    enricher = build_enricher(config, HOST, peers=[Dns()], mounts=lambda: MOUNTS)
    assert len(enricher._peers) == resolver_count
    assert isinstance(enricher._peers[-1], Dns)


def test_containers_off_means_host_only():
    enricher = build_enricher(EnrichConfig(cloud_detectors=(), containers=False), HOST,
                              mounts=lambda: MOUNTS)
    assert not isinstance(enricher._workloads, ContainerResolver)
    assert enricher._workloads.point_attributes(Workload(1, 2, "sshd")) == {
        "process.executable.name": "sshd"}


def test_kubernetes_without_a_node_name_is_left_out(monkeypatch, caplog):
    monkeypatch.delenv("K8S_NODE_NAME", raising=False)
    config = EnrichConfig(cloud_detectors=(), kubernetes=KubernetesConfig(enabled=True))
    enricher = build_enricher(config, HOST, mounts=lambda: MOUNTS)
    assert "k8s.node.name" not in enricher.host_resource
    assert "node_name" in caplog.text


def test_kubernetes_without_credentials_is_left_out(tmp_path, caplog):
    config = EnrichConfig(cloud_detectors=(), kubernetes=KubernetesConfig(
        enabled=True, node_name="n1", kubeconfig=str(tmp_path / "missing")))
    enricher = build_enricher(config, HOST, mounts=lambda: MOUNTS)
    assert "cannot configure the API client" in caplog.text
    enricher.shutdown()
