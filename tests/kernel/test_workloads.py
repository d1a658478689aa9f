"""Workload identity on the real kernel: containers and a host process as Resources, peers named.

Two namespace hosts (prefix `nrd`, 198.18.40.0/24). In the client host runs an emulated
docker container (systemd scope); in the server host an emulated Kubernetes pod
container (containerd, besteffort) and a plain host process. They exchange
request/response traffic in three directions; the real TcpCollector sees it, and the
real resolvers (cgroup2 tree walk, /proc, namespace addresses) turn it into Resources and
peer attributes. Expectations come from the emulated containers and the generators'
own reports (pid, comm), never from the agent.
"""

from __future__ import annotations

import pytest

from otel_netreceiver.enrich.base import Enricher
from otel_netreceiver.enrich.cgroups import CgroupPaths, walk_cgroup2
from otel_netreceiver.enrich.containers import ContainerResolver
from otel_netreceiver.enrich.kubernetes import PodStore
from otel_netreceiver.enrich.peers import WorkloadPeers
from tests.support import traffic
from tests.support.hosts import cgroup2_root, emulated_container, host_pair

pytestmark = pytest.mark.kernel

HOST = {"host.name": "nrd-node", "host.id": "nrd-machine", "os.type": "linux"}
COUNT, POD_PORT, HOST_PORT, DOCKER_PORT = 3, 8080, 9090, 7070


def _pod(container) -> dict:
    """The pod object the API server would hold for the emulated pod container."""
    return {
        "metadata": {"name": "api-5c7d9f8b6-qx2lp", "namespace": "shop", "uid": container.pod_uid,
                     "labels": {"app": "api", "pod-template-hash": "5c7d9f8b6"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "api-5c7d9f8b6",
                                          "controller": True}]},
        "spec": {"nodeName": "nrd-node"},
        "status": {"podIPs": [{"ip": "198.18.40.2"}],
                   "containerStatuses": [{"name": "api",
                                          "containerID": f"containerd://{container.container_id}"}]},
    }


def _serve(argv):
    server = traffic.Generator(argv)
    assert server.line().get("ready")
    return server


def _records(enriched, **attributes):
    return [r for r in enriched.records
            if all(r.attributes.get(k) == v for k, v in attributes.items())]


def _one(enriched, **attributes):
    found = _records(enriched, **attributes)
    assert len(found) == 1, f"expected one record for {attributes}, got {found}"
    return found[0]


@pytest.fixture(scope="module")
def collector():
    from otel_netreceiver.probes.tcp import TcpCollector
    with TcpCollector() as tcp:
        yield tcp


def test_containers_and_host_process_are_resources_and_name_each_other(collector):
    with host_pair("nrd", "198.18.40") as pair, \
            emulated_container("docker") as docker, emulated_container("containerd") as pod:
        client_ip, server_ip = pair.client.address, pair.server.address
        rr = dict(count=COUNT, request=200, response=3000)
        pod_server = _serve(pod.argv(*pair.server.argv(*traffic.argv(
            "rr-server", address=server_ip, port=POD_PORT, **rr))))
        host_server = _serve(pair.server.argv(*traffic.argv(
            "rr-server", address=server_ip, port=HOST_PORT, **rr)))
        docker_server = _serve(docker.argv(*pair.client.argv(*traffic.argv(
            "rr-server", address=client_ip, port=DOCKER_PORT, **rr))))
        to_pod = traffic.run(docker.argv(*pair.client.argv(*traffic.argv(
            "rr-client", address=server_ip, port=POD_PORT, count=COUNT, request=200))))
        to_host = traffic.run(docker.argv(*pair.client.argv(*traffic.argv(
            "rr-client", address=server_ip, port=HOST_PORT, count=COUNT, request=200))))
        from_host = traffic.run(pair.server.argv(*traffic.argv(
            "rr-client", address=client_ip, port=DOCKER_PORT, count=COUNT, request=200)))
        truth = {name: gen.result() for name, gen in
                 (("pod", pod_server), ("host", host_server), ("docker", docker_server))}
        assert to_pod["received"] == to_host["received"] == from_host["received"] == COUNT * 3000

        flows = [dict(direction="outgoing", peer_address=server_ip, server_port=POD_PORT),
                 dict(direction="incoming", peer_address=client_ip, server_port=POD_PORT),
                 dict(direction="outgoing", peer_address=server_ip, server_port=HOST_PORT),
                 dict(direction="incoming", peer_address=client_ip, server_port=HOST_PORT),
                 dict(direction="outgoing", peer_address=client_ip, server_port=DOCKER_PORT),
                 dict(direction="incoming", peer_address=server_ip, server_port=DOCKER_PORT)]
        snapshot = traffic.collect_until(collector, lambda s: all(
            sum(st.closed for _, st in traffic.matching(s, **f)) >= COUNT for f in flows))

        pods = PodStore(labels=["app"])
        pods.replace([_pod(pod)])
        root = cgroup2_root()
        workloads = ContainerResolver(CgroupPaths(lambda: walk_cgroup2(root)), pods=pods)
        enriched = Enricher(HOST, workloads, [WorkloadPeers(workloads, pods)]).enrich(snapshot)
        docker_cgroup, pod_cgroup = docker.cgroup_id, pod.cgroup_id

    docker_resource = {**HOST, "container.id": docker.container_id, "container.runtime": "docker"}
    pod_resource = {**HOST, "container.id": pod.container_id, "container.runtime": "containerd",
                    "k8s.pod.uid": pod.pod_uid, "k8s.pod.name": "api-5c7d9f8b6-qx2lp",
                    "k8s.namespace.name": "shop", "k8s.node.name": "nrd-node",
                    "k8s.replicaset.name": "api-5c7d9f8b6", "k8s.deployment.name": "api",
                    "k8s.pod.label.app": "api", "k8s.container.name": "api"}
    docker_peer = {"peer.container.id": docker.container_id,
                   "peer.process.executable.name": truth["docker"]["comm"]}
    pod_peer = {"peer.container.id": pod.container_id, "peer.k8s.pod.name": "api-5c7d9f8b6-qx2lp",
                "peer.k8s.namespace.name": "shop", "peer.k8s.container.name": "api",
                "peer.k8s.replicaset.name": "api-5c7d9f8b6", "peer.k8s.deployment.name": "api",
                "peer.process.executable.name": truth["pod"]["comm"]}
    host_peer = {"peer.process.executable.name": truth["host"]["comm"]}

    def attributes(direction, peer, port):
        return {"network.connection.direction": direction, "network.peer.address": peer,
                "server.port": port}

    expected = [  # (flow, resource, its process, peer attributes)
        (attributes("outgoing", server_ip, POD_PORT), docker_resource, to_pod, pod_peer),
        (attributes("incoming", client_ip, POD_PORT), pod_resource, truth["pod"], docker_peer),
        (attributes("outgoing", server_ip, HOST_PORT), docker_resource, to_host, host_peer),
        (attributes("incoming", client_ip, HOST_PORT), HOST, truth["host"], docker_peer),
        (attributes("outgoing", client_ip, DOCKER_PORT), HOST, from_host, docker_peer),
        (attributes("incoming", server_ip, DOCKER_PORT), docker_resource, truth["docker"], host_peer),
    ]
    for flow, resource, process, peer in expected:
        record = _one(enriched, **flow, **{"process.executable.name": process["comm"]})
        assert dict(record.resource) == resource, flow
        assert {k: v for k, v in record.attributes.items() if k.startswith("peer.")} == peer, flow
        assert record.series.stats.opened == COUNT
    # the kernel reported the emulated containers' own cgroups
    cgroups = {key.workload.cgroup_id for key in snapshot.tcp
               if key.workload.pid in (to_pod["pid"], truth["pod"]["pid"])}
    assert cgroups == {docker_cgroup, pod_cgroup}
