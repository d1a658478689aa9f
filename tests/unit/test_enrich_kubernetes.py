"""Pod objects to k8sattributes-style attributes; the store's indexes."""

import json
from pathlib import Path

import pytest

from otel_netreceiver.enrich.cgroups import ContainerInfo
from otel_netreceiver.enrich.kubernetes import PodStore, owner_attributes, pod_info

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "k8s"


def _ref(kind, name, controller=True):
    return {"kind": kind, "name": name, "controller": controller}


@pytest.mark.parametrize("metadata, expected", [
    ({"ownerReferences": [_ref("ReplicaSet", "api-6b7c8d9f4")],
      "labels": {"pod-template-hash": "6b7c8d9f4"}},
     {"k8s.replicaset.name": "api-6b7c8d9f4", "k8s.deployment.name": "api"}),
    ({"ownerReferences": [_ref("ReplicaSet", "bare-rs")]},  # not made by a Deployment
     {"k8s.replicaset.name": "bare-rs"}),
    ({"ownerReferences": [_ref("StatefulSet", "db")]}, {"k8s.statefulset.name": "db"}),
    ({"ownerReferences": [_ref("DaemonSet", "agent")]}, {"k8s.daemonset.name": "agent"}),
    ({"ownerReferences": [_ref("Job", "migrate")]}, {"k8s.job.name": "migrate"}),
    ({"ownerReferences": [_ref("Job", "nightly-29399040")]},
     {"k8s.job.name": "nightly-29399040", "k8s.cronjob.name": "nightly"}),
    ({"ownerReferences": [_ref("Node", "node-1")]}, {}),  # static pod mirror
    ({"ownerReferences": [_ref("ReplicaSet", "x", controller=False)]}, {}),
    ({}, {}),
])
def test_owner_attributes(metadata, expected):
    assert owner_attributes(metadata) == expected


def test_pod_info_from_recorded_list():
    items = json.loads((FIXTURES / "pods_list.json").read_bytes())["items"]
    pods = {p.attributes["k8s.pod.name"]: p for p in (pod_info(raw, ["*"]) for raw in items)}
    checkout = pods["checkout-7d9f8b6c5-x2k4p"]
    assert checkout.ips == ("10.244.1.17",)
    assert checkout.containers == {"c1" * 32: ("app", "containerd")}
    assert checkout.attributes["k8s.pod.label.pod-template-hash"] == "7d9f8b6c5"
    assert pods["node-exporter-q7zrm"].ips == ()  # hostNetwork
    assert pods["node-exporter-q7zrm"].attributes["k8s.daemonset.name"] == "node-exporter"


@pytest.mark.parametrize("labels, annotations, expected_keys", [
    ((), (), set()),
    (("app",), (), {"k8s.pod.label.app"}),
    (("app", "missing"), ("prometheus.io/scrape",),
     {"k8s.pod.label.app", "k8s.pod.annotation.prometheus.io/scrape"}),
])
def test_only_chosen_labels_and_annotations(labels, annotations, expected_keys):
    raw = json.loads((FIXTURES / "pods_list.json").read_bytes())["items"][0]
    attributes = pod_info(raw, labels, annotations).attributes
    assert {k for k in attributes if ".label." in k or ".annotation." in k} == expected_keys


def test_store_apply_and_replace():
    items = json.loads((FIXTURES / "pods_list.json").read_bytes())["items"]
    store = PodStore()
    store.replace(items)
    uid = items[0]["metadata"]["uid"]
    info = ContainerInfo("c1" * 32, "containerd", uid)
    assert store.pod_attributes(info)["k8s.container.name"] == "app"
    assert store.pod_attributes(ContainerInfo("00" * 32, "", uid))["k8s.pod.name"]
    store.apply("DELETED", items[0])
    assert store.pod_attributes(info) == {}
    assert store.by_ip("10.244.1.17") is None


def test_store_version_moves_with_every_change_by_ip_could_see():
    items = json.loads((FIXTURES / "pods_list.json").read_bytes())["items"]
    store = PodStore()
    versions = [store.version]
    store.replace(items)
    versions.append(store.version)
    store.apply("MODIFIED", items[0])
    versions.append(store.version)
    store.apply("DELETED", items[0])
    versions.append(store.version)
    assert len(set(versions)) == 4
