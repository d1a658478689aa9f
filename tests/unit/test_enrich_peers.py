"""WorkloadPeers: both halves of local connections name each other; pods by IP."""

from pathlib import Path

import pytest

from otel_netreceiver.enrich.base import Enricher, HostOnly
from otel_netreceiver.enrich.dns_names import DnsNames, DnsPeerResolver
from otel_netreceiver.enrich.peers import WorkloadPeers, parse_fib_trie, parse_if_inet6
from otel_netreceiver.flows.dns_parser import Answer
from otel_netreceiver.flows.model import (
    Direction, Family, FlowKey, Series, Snapshot, TcpStats, Transport, Workload,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "proc"
WEB = Workload(10, 100, "curl")       # container, netns 1000, 198.18.40.1
API = Workload(11, 200, "api")        # container, netns 2000, 198.18.40.2
HOSTP = Workload(1, 300, "python3")   # host process, netns 2000 too (shares .2)
NETNS = {100: (1000, frozenset({"198.18.40.1", "127.0.0.1"})),
         200: (2000, frozenset({"198.18.40.2", "127.0.0.1"})),
         300: (2000, frozenset({"198.18.40.2", "127.0.0.1"}))}


class Resources:
    def resource(self, workload):
        return {10: {"container.id": "aa" * 32, "k8s.pod.label.x": "y"},
                11: {"container.id": "bb" * 32, "k8s.pod.name": "api-0"}}.get(workload.cgroup_id, {})

    def point_attributes(self, workload):
        return {"process.executable.name": workload.comm}


class Pods:
    class Pod:
        attributes = {"k8s.pod.name": "db-0", "k8s.namespace.name": "shop",
                      "k8s.statefulset.name": "db", "k8s.pod.label.app": "db", "k8s.node.name": "n1"}

    def by_ip(self, ip):
        return self.Pod() if ip == "10.244.2.9" else None


def _key(workload, direction, peer, port, local=""):
    return FlowKey(workload, Transport.TCP, Family.IPV4, direction, peer, port, local)


OUT, IN = Direction.OUTGOING, Direction.INCOMING
FLOWS = [
    _key(WEB, OUT, "198.18.40.2", 8080),                       # web -> api
    _key(API, IN, "198.18.40.1", 8080, "198.18.40.2"),
    _key(WEB, OUT, "198.18.40.2", 9000),                       # web -> host process
    _key(HOSTP, IN, "198.18.40.1", 9000, "198.18.40.2"),
    _key(API, OUT, "198.18.40.1", 7000),                       # api -> web
    _key(WEB, IN, "198.18.40.2", 7000, "198.18.40.1"),
    _key(HOSTP, OUT, "198.18.40.1", 7000),                     # host process -> web, same port
    _key(API, OUT, "127.0.0.1", 6379),                         # api -> loopback (nobody local)
    _key(WEB, OUT, "10.244.2.9", 5432),                        # web -> a pod elsewhere on the node
]


@pytest.fixture
def peers():
    resolver = WorkloadPeers(Resources(), Pods(), netns=NETNS.__getitem__)
    resolver.observe(Snapshot(0, tcp={k: Series(0, TcpStats()) for k in FLOWS}))
    return resolver


API_PEER = {"peer.container.id": "bb" * 32, "peer.k8s.pod.name": "api-0",
            "peer.process.executable.name": "api"}
WEB_PEER = {"peer.container.id": "aa" * 32, "peer.process.executable.name": "curl"}


@pytest.mark.parametrize("index, expected", [
    (0, API_PEER),
    (1, WEB_PEER),
    (2, {"peer.process.executable.name": "python3"}),
    (3, WEB_PEER),
    (4, WEB_PEER),
    (5, {}),  # api and the host process both connect from .2 to web:7000: ambiguous
    (6, WEB_PEER),
    (7, {}),
    (8, {"peer.k8s.pod.name": "db-0", "peer.k8s.namespace.name": "shop",
         "peer.k8s.statefulset.name": "db"}),
])
def test_peer_attributes(peers, index, expected):
    assert peers.peer_attributes(FLOWS[index]) == expected


def test_loopback_peers_are_matched_within_one_namespace_only():
    a_client, a_server = Workload(20, 400, "c"), Workload(21, 401, "s")
    b_client = Workload(22, 500, "c2")  # another namespace, same loopback address and port
    netns = {400: (1, frozenset({"127.0.0.1"})), 401: (1, frozenset({"127.0.0.1"})),
             500: (2, frozenset({"127.0.0.1"}))}
    flows = [_key(a_client, OUT, "127.0.0.1", 80), _key(a_server, IN, "127.0.0.1", 80, "127.0.0.1"),
             _key(b_client, OUT, "127.0.0.1", 80)]
    resolver = WorkloadPeers(HostOnly(), netns=netns.__getitem__)
    resolver.observe(Snapshot(0, tcp={k: Series(0, TcpStats()) for k in flows}))
    assert resolver.peer_attributes(flows[0]) == {"peer.process.executable.name": "s"}
    assert resolver.peer_attributes(flows[1]) == {"peer.process.executable.name": "c"}
    assert resolver.peer_attributes(flows[2]) == {}


def test_enricher_observes_before_resolving():
    flows = FLOWS[:2]
    resolver = WorkloadPeers(Resources(), netns=NETNS.__getitem__)
    enriched = Enricher({"host.name": "h"}, Resources(), [resolver]).enrich(
        Snapshot(0, tcp={k: Series(0, TcpStats()) for k in flows}))
    assert enriched.records[0].attributes["peer.container.id"] == "bb" * 32
    assert enriched.records[1].attributes["peer.container.id"] == "aa" * 32


def test_parse_namespace_addresses():
    assert parse_fib_trie((FIXTURES / "fib_trie.txt").read_text()) == {"127.0.0.1", "198.18.40.1"}
    assert parse_if_inet6((FIXTURES / "if_inet6.txt").read_text()) == {"::1", "fe80::3c1f:4aff:fe2b:9c01", "fe80::a464:73ff:fe4c:80d1"}


class Changing:
    """A workload resolver whose answers the test changes between snapshots."""

    def __init__(self):
        self.pods = {10: "web-0", 11: "api-0"}

    def resource(self, workload):
        return {"k8s.pod.name": self.pods[workload.cgroup_id]}

    def point_attributes(self, workload):
        return {"process.executable.name": workload.comm}


def test_unchanged_keys_keep_their_attribute_dicts_and_changes_are_seen():
    """Each snapshot is resolved again: what came out the same is the same dict (the
    builder's cue that nothing changed); what changed is new, on both halves."""
    resolver = Changing()
    enricher = Enricher({"host.name": "h"}, resolver, [WorkloadPeers(resolver, netns=NETNS.__getitem__)])
    snapshot = Snapshot(0, tcp={k: Series(0, TcpStats()) for k in FLOWS[:2]})
    first = enricher.enrich(snapshot).records
    second = enricher.enrich(snapshot).records
    assert [r.attributes for r in second] == [r.attributes for r in first]
    assert all(a.attributes is b.attributes and a.resource is b.resource for a, b in zip(first, second))
    resolver.pods[11] = "api-1"  # the server's pod was replaced
    client, server = enricher.enrich(snapshot).records
    assert client.attributes is not first[0].attributes and client.attributes["peer.k8s.pod.name"] == "api-1"
    assert client.resource is first[0].resource
    assert dict(server.resource)["k8s.pod.name"] == "api-1" and server.attributes is first[1].attributes


def test_a_peer_that_leaves_the_snapshot_is_no_longer_named():
    resolver = WorkloadPeers(Resources(), netns=NETNS.__getitem__)
    enricher = Enricher({"host.name": "h"}, Resources(), [resolver])
    both = enricher.enrich(Snapshot(0, tcp={k: Series(0, TcpStats()) for k in FLOWS[:2]})).records
    assert both[0].attributes["peer.container.id"] == "bb" * 32
    [alone] = enricher.enrich(Snapshot(0, tcp={FLOWS[0]: Series(0, TcpStats())})).records
    assert "peer.container.id" not in alone.attributes


class VersionedPods(Pods):
    version = 1


def test_workload_peers_say_unchanged_only_for_the_same_keys_workloads_and_pods():
    pods = VersionedPods()
    resolver = WorkloadPeers(Resources(), pods, netns=NETNS.__getitem__)
    snapshot = Snapshot(0, tcp={k: Series(0, TcpStats()) for k in FLOWS})
    resolver.observe(snapshot)
    assert not resolver.unchanged
    resolver.observe(snapshot)
    assert resolver.unchanged
    pods.version = 2  # a pod came or went
    resolver.observe(snapshot)
    assert not resolver.unchanged
    resolver.observe(Snapshot(0, tcp={k: Series(0, TcpStats()) for k in FLOWS[1:]}))
    assert not resolver.unchanged
    assert not WorkloadPeers(Resources(), Pods(), netns=NETNS.__getitem__).unchanged  # no version: never


def test_a_name_learned_between_snapshots_reaches_unchanged_flows():
    """Flows whose resolvers all stay unchanged keep their dicts without being asked; a
    name learned meanwhile makes the DNS resolver changed, and the flow gets the name."""
    names = DnsNames()
    enricher = Enricher({"host.name": "h"}, Resources(),
                        [WorkloadPeers(Resources(), netns=NETNS.__getitem__), DnsPeerResolver(names)])
    snapshot = Snapshot(0, tcp={k: Series(0, TcpStats()) for k in FLOWS[:2]})
    enricher.enrich(snapshot)
    first = enricher.enrich(snapshot).records
    again = enricher.enrich(snapshot).records
    assert all(a.attributes is b.attributes for a, b in zip(first, again))
    names.learn(WEB.cgroup_id, "api.test", [Answer("api.test", 1, 300, "198.18.40.2")])
    client, server = enricher.enrich(snapshot).records
    assert client.attributes["server.address"] == "api.test" and server.attributes is first[1].attributes


# -- keys that come and go: only the keys whose peer may have moved are asked again ------

ANON = Workload(12, 0, "anon")  # its namespace is unknown: it offers the wildcard client entry
MOVING = {
    "C": _key(WEB, OUT, "198.18.40.2", 8080),                  # client of S from .1
    "S": _key(API, IN, "198.18.40.1", 8080, "198.18.40.2"),    # wants C's entry, then the wildcard
    "S2": _key(HOSTP, IN, "198.18.40.1", 8080, "198.18.40.2"), # a second server on S's address
    "A": _key(ANON, OUT, "198.18.40.2", 8080),                 # a client S finds by the wildcard
    "P": _key(WEB, OUT, "10.244.2.9", 5432),                   # a pod elsewhere
    "U": _key(API, OUT, "127.0.0.1", 6379),                    # nobody's peer, nobody local
}


class Renamed(Resources):
    """Resources whose pod names the test changes between snapshots."""

    def __init__(self):
        self.names, self.commands = {11: "api-0"}, {}

    def resource(self, workload):
        found = dict(super().resource(workload))
        if workload.cgroup_id in self.names:
            found["k8s.pod.name"] = self.names[workload.cgroup_id]
        return found

    def point_attributes(self, workload):
        command = self.commands.get(workload.cgroup_id)
        return {**super().point_attributes(workload), **({"process.command": command} if command else {})}


class MovingPods:
    def __init__(self):
        self.version, self.ips = 1, {"10.244.2.9": VersionedPods.Pod()}

    def by_ip(self, ip):
        return self.ips.get(ip)


class OtherPod:
    attributes = {"k8s.pod.name": "db-1", "k8s.namespace.name": "shop"}


def _rename(world):
    world[0].names[11] = "api-1"


def _new_command(world):
    world[0].commands[10] = "curl -v"  # a point attribute no peer description holds


def _new_pod(world):
    world[1].ips, world[1].version = {"10.244.2.9": OtherPod()}, world[1].version + 1


# (keys per snapshot, what changes before the last one, the keys named for the last one)
@pytest.mark.parametrize("steps, change, asked", [
    (["C", "C S"], None, {"C"}),                 # a server came: its client
    (["C S", "C"], None, {"C"}),                 # it left
    (["C S", "C S S2", "C S"], None, {"C"}),     # a second server made it ambiguous, then left
    (["S", "S A"], None, {"S"}),                 # found by the second entry it wants only
    (["S A", "S A C"], None, {"S"}),             # an exact client comes before the wildcard
    (["S A C", "S A"], None, {"S"}),             # and leaves: the wildcard again
    (["C S", "C", "C S"], None, {"C"}),          # a key that left and came back
    (["C S P", "C S P U"], None, set()),         # a key nobody looks for: nobody asked
    (["C S U", "C S"], None, set()),
    (["C S", "C S A"], _rename, {"S", "C", "A"}),  # a description changed as keys came
    (["C P", "C P S"], _new_pod, None),          # the pods changed too: every key asked
    (["C S", "C S U"], _new_command, set()),     # no peer moved, but C's own attributes did
])
def test_keys_that_come_and_go_give_what_a_fresh_enricher_gives(steps, change, asked):
    world = (Renamed(), MovingPods())
    peers = WorkloadPeers(world[0], world[1], netns=NETNS.__getitem__)
    enricher = Enricher({"host.name": "h"}, world[0], [peers])
    for n, names in enumerate(steps):
        if change is not None and n == len(steps) - 1:
            change(world)
        snapshot = Snapshot(0, tcp={MOVING[name]: Series(0, TcpStats()) for name in names.split()})
        got = [(r.resource, r.attributes) for r in enricher.enrich(snapshot).records]
        fresh = Enricher({"host.name": "h"}, world[0],
                         [WorkloadPeers(world[0], world[1], netns=NETNS.__getitem__)])
        assert got == [(r.resource, r.attributes) for r in fresh.enrich(snapshot).records], names
    assert peers.changed_keys == (None if asked is None else {MOVING[name] for name in asked})
