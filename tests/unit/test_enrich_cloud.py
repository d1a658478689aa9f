"""detect_cloud: merge order, filtering, bounded waiting (detectors injected)."""

import threading

import pytest

from otel_netreceiver.enrich.cloud import DETECTORS, detect_cloud

EKS = {"cloud.provider": "aws", "cloud.platform": "aws_eks", "k8s.cluster.name": "prod"}
EC2 = {"cloud.provider": "aws", "cloud.platform": "aws_ec2", "cloud.region": "eu-west-1",
       "host.id": "i-1", "os.type": "Linux", "service.instance.id": "x", "host.name": ""}


def _failing():
    raise OSError("no route to host")


@pytest.mark.parametrize("order, expected", [
    (["eks", "ec2"], {"cloud.provider": "aws", "cloud.platform": "aws_eks",
                      "k8s.cluster.name": "prod", "cloud.region": "eu-west-1", "host.id": "i-1"}),
    (["ec2", "eks"], {"cloud.provider": "aws", "cloud.platform": "aws_ec2",
                      "k8s.cluster.name": "prod", "cloud.region": "eu-west-1", "host.id": "i-1"}),
    (["broken", "ec2"], {"cloud.provider": "aws", "cloud.platform": "aws_ec2",
                         "cloud.region": "eu-west-1", "host.id": "i-1"}),
    ([], {}),
])
def test_first_listed_detector_wins_and_only_cloud_and_host_keys_stay(order, expected):
    registry = {"eks": lambda: EKS, "ec2": lambda: EC2, "broken": _failing}
    assert detect_cloud(order, timeout_s=5, registry=registry) == expected


def test_a_detector_that_never_answers_is_left_behind():
    never = threading.Event()
    registry = {"slow": lambda: never.wait() or {"cloud.provider": "late"}, "ec2": lambda: EC2}
    assert detect_cloud(["slow", "ec2"], timeout_s=0.2, registry=registry)["cloud.provider"] == "aws"
    never.set()


def test_unknown_detector_names_are_refused():
    with pytest.raises(ValueError, match="unknown cloud detector.*azur"):
        detect_cloud(["azur"], registry=DETECTORS)
