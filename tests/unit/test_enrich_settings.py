"""The `enrich:` YAML section to EnrichConfig, with one-line errors."""

import pytest
import yaml

from otel_netreceiver.config import ConfigError
from otel_netreceiver.enrich import EnrichConfig, KubernetesConfig
from otel_netreceiver.enrich.settings import enrich_config

FULL = """
containers: true
peers: false
process: {pid: true, command: true}
cloud: {detectors: [ec2, gcp], timeout: 500ms}
kubernetes:
  enabled: true
  node_name: node-7
  kubeconfig: /etc/kube/config
  labels: [app, app.kubernetes.io/name]
  annotations: ["*"]
  sync_timeout: 3s
"""


def test_defaults():
    assert enrich_config(None) == EnrichConfig()
    assert enrich_config({}) == EnrichConfig()


def test_every_key():
    assert enrich_config(yaml.safe_load(FULL)) == EnrichConfig(
        containers=True, peers=False, process_pid=True, process_command=True,
        cloud_detectors=("ec2", "gcp"), cloud_timeout_s=0.5,
        kubernetes=KubernetesConfig(True, "node-7", "/etc/kube/config",
                                    ("app", "app.kubernetes.io/name"), ("*",), 3.0))


def test_empty_detector_list_turns_cloud_detection_off():
    assert enrich_config({"cloud": {"detectors": []}}).cloud_detectors == ()


@pytest.mark.parametrize("document, message", [
    ({"containerz": True}, "enrich: unknown key 'containerz'"),
    ({"cloud": {"detectors": ["aws"]}}, "enrich.cloud.detectors: unknown detector 'aws'"),
    ({"cloud": {"timeout": "soon"}}, "enrich.cloud.timeout: bad duration"),
    ({"kubernetes": {"enabled": "yes"}}, "enrich.kubernetes.enabled: expected true or false"),
    ({"kubernetes": {"labels": "app"}}, "enrich.kubernetes.labels: expected a list"),
    ({"process": []}, "enrich.process: expected a mapping"),
])
def test_errors_name_the_key(document, message):
    with pytest.raises(ConfigError) as error:
        enrich_config(document)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
