"""The long-lived Enricher, MetricsBuilder and encoder against fresh ones, over random intervals.

Everything that is kept across intervals (the enricher's per-key attribute dicts and its
resolvers' promises, the builder's units, shapes and layouts, the encoder's cached bytes
and pieces) must give what a fresh pipeline gives for the same snapshot. The world changes
at random between intervals: keys come, go and come back, series grow (failures, first
histogram samples) and restart, pod names and the pod store change, DNS names are learned and expire.
The fresh side is a new Enricher every interval, with a new MetricsBuilder where the
builder holds no state that changes its output (cumulative without opt-outs); otherwise
(delta, and opt-outs whose merged points are running totals) a second long-lived builder.
Requests are split at random sizes. Two long-lived builders only agree with each other,
so merged points are also checked against what they must be (see below).
"""
import random

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_netreceiver.enrich.base import Enricher
from otel_netreceiver.enrich.dns_names import DnsNames, DnsPeerResolver
from otel_netreceiver.enrich.peers import WorkloadPeers
from otel_netreceiver.export import encoding
from otel_netreceiver.flows.dns_parser import Answer
from otel_netreceiver.flows.model import (Direction, Family, FailureReason, FlowKey, Histogram, Series,
                                          Snapshot, TcpStats, Transport, Workload)
from otel_netreceiver.metrics import catalog
from otel_netreceiver.metrics.builder import AgentTelemetry, BuildSettings, MetricsBuilder

CATALOG = catalog.load()
S = 1_000_000_000
WL = [Workload(10, 100, "curl"), Workload(11, 200, "api"), Workload(1, 300, "python3")]
NETNS = {100: (1000, frozenset({"198.18.40.1", "127.0.0.1"})),
         200: (2000, frozenset({"198.18.40.2", "127.0.0.1"})),
         300: (2000, frozenset({"198.18.40.2", "127.0.0.1"}))}


class Clock:
    now = 1000.0
    def __call__(self):
        return self.now


class Changing:
    def __init__(self, rnd):
        self.rnd, self.pods = rnd, {10: "web-0", 11: "api-0", 1: None}
    def resource(self, w):
        name = self.pods[w.cgroup_id]
        return {"k8s.pod.name": name, "container.id": f"c{w.cgroup_id}"} if name else {}
    def point_attributes(self, w):
        return {"process.executable.name": w.comm}


class Pods:
    version = 0
    def __init__(self):
        self.ips = {}
    def by_ip(self, ip):
        return self.ips.get(ip)


class Pod:
    def __init__(self, name):
        self.attributes = {"k8s.pod.name": name, "k8s.namespace.name": "ns"}


KEYS = [FlowKey(w, Transport.TCP, Family.IPV4, d, peer, port, local if d is Direction.INCOMING else "")
        for w in WL for d in Direction for peer in ("198.18.40.1", "198.18.40.2", "10.0.0.9")
        for port in (80, 443) for local in ("198.18.40.2",)]


def hist(rnd):
    return Histogram((0.1, 1.0), [rnd.randint(0, 3) for _ in range(3)], rnd.random(), 0) if rnd.random() < .5 else None


def grow(rnd, stats):
    failed = dict(stats.failed)
    if rnd.random() < .3:
        r = rnd.choice(list(FailureReason))
        failed[r] = failed.get(r, 0) + 1
    def h(old):
        if rnd.random() < .6:
            return old
        counts = [rnd.randint(0, 3) for _ in range(3)]
        if sum(counts) == 0:
            return old
        if old is None:
            return Histogram((0.1, 1.0), counts, 0.5, sum(counts))
        return Histogram(old.bounds, [a + b for a, b in zip(old.counts, counts)], old.sum + 0.5, old.count + sum(counts))
    return TcpStats(stats.opened + rnd.randint(0, 2), stats.closed, rnd.randint(0, 3), failed,
                    stats.bytes_sent + rnd.randint(0, 100), stats.bytes_received, 0, 0, 0, 0, 0,
                    h(stats.duration), h(stats.rtt))


def world(rnd, step, series, resolver, pods, names, clock):
    """Change the world at random: flows come, grow, restart and go; pod names, the pod
    store and DNS names change."""
    for key in rnd.sample(KEYS, rnd.choice([0, 1, 1, 2, 3, len(KEYS) // 2])):
        if key in series and rnd.random() < .2:
            del series[key]
        elif key in series and rnd.random() < .1:
            series[key] = Series(step * S, grow(rnd, TcpStats()))  # evicted and back at once
        else:
            old = series.get(key, Series(step * S, TcpStats()))
            series[key] = Series(old.start_ns, grow(rnd, old.stats))
    if rnd.random() < .05:
        resolver.pods[rnd.choice([10, 11])] = rnd.choice(["web-0", "web-1", "api-0", "api-1"])
    if rnd.random() < .07:
        pods.ips = {"10.0.0.9": Pod(rnd.choice(["db-0", "db-1"]))} if rnd.random() < .7 else {}
        pods.version += 1
    if rnd.random() < .1:
        q = rnd.choice(["a.test", "b.test"])
        names.learn(rnd.choice([10, 11, 1]), q,
                    [Answer(q, 1, rnd.randint(1, 40), rnd.choice(["198.18.40.1", "198.18.40.2", "10.0.0.9"]))])
    clock.now += rnd.choice([0, 0, 0, 1, 5, 12])


def points(batch, rnd=random.Random(1)):
    out = {}
    for r in encoding.requests(batch, rnd.choice([3, 7, 10**6]), rnd.choice([700, 3000, 10**9])):
        req = ExportMetricsServiceRequest.FromString(r.payload)
        for rm in req.resource_metrics:
            res = tuple(sorted((kv.key, kv.value.SerializeToString()) for kv in rm.resource.attributes))
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    data = getattr(m, m.WhichOneof("data"))
                    for p in data.data_points:
                        out.setdefault((res, sm.scope.name, m.name), []).append(p.SerializeToString())
    return {k: sorted(v) for k, v in out.items()}


def make(resolver, names, pods, dropped, delta=False):
    settings = BuildSettings(frozenset(CATALOG.metrics), frozenset(dropped), frozenset(), delta)
    enricher = Enricher({"host.name": "h"}, resolver,
                        [WorkloadPeers(resolver, pods, netns=NETNS.__getitem__), DnsPeerResolver(names)])
    return enricher, MetricsBuilder(CATALOG, settings, {"host.name": "h"}, S)


SEEN = set()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dropped", [(), ("network.peer.address",)])
@pytest.mark.parametrize("delta", [False, True])
def test_long_lived_equals_fresh(seed, dropped, delta):
    rnd = random.Random(seed)
    clock = Clock()
    names = DnsNames(capacity=6, clock=clock, min_ttl=5, max_ttl=30)
    resolver, pods = Changing(rnd), Pods()
    enricher, builder = make(resolver, names, pods, dropped, delta)
    _, reference = make(resolver, names, pods, dropped, delta)  # for stateful output
    series = {}
    for step in range(1, 60):
        world(rnd, step, series, resolver, pods, names, clock)
        snapshot = Snapshot(step * S + S // 2, tcp=dict(series))
        got = points(builder.build(enricher.enrich(snapshot), AgentTelemetry()))
        fresh_enricher, fresh_builder = make(resolver, names, pods, dropped, delta)
        if delta or dropped:
            fresh_builder = reference
        want = points(fresh_builder.build(fresh_enricher.enrich(snapshot), AgentTelemetry()))
        assert got == want, f"step {step}"
        blob = b"".join(b"".join(v) for v in got.values())
        SEEN.update(n for n in ("a.test", "b.test", "db-0", "db-1") if n.encode() in blob)


def test_zz_names_and_pods_were_seen():
    assert {"a.test", "b.test", "db-0", "db-1"} <= SEEN, SEEN


# -- merged points against an oracle -----------------------------------------------------
#
# Two long-lived builders with the same opt-outs only agree with each other; these check
# what the merged points must be: a monotonic sum or histogram under an opt-out never
# goes back while its start stays, holds at least what its members hold now (the fresh
# builder without opt-outs, its points summed over the dropped attributes), and its deltas
# (a long-lived delta builder) are the steps of the cumulative points.

def monotonic_points(batch):
    """{(resource, metric, attributes): (start, value)} of the monotonic sums and
    histograms; a histogram's value is (count, bucket counts)."""
    out = {}
    for r in encoding.requests(batch, 10**6, 10**9):
        for rm in ExportMetricsServiceRequest.FromString(r.payload).resource_metrics:
            res = tuple(sorted((kv.key, kv.value.SerializeToString()) for kv in rm.resource.attributes))
            for m in (m for sm in rm.scope_metrics for m in sm.metrics):
                kind = m.WhichOneof("data")
                data = getattr(m, kind)
                if kind == "histogram" or (kind == "sum" and data.is_monotonic):
                    for p in data.data_points:
                        attrs = tuple(sorted((kv.key, kv.value.SerializeToString()) for kv in p.attributes))
                        value = (p.count, tuple(p.bucket_counts)) if kind == "histogram" else p.as_int
                        out[(res, m.name, attrs)] = (p.start_time_unix_nano, value)
    return out


def at_most(a, b):
    """a <= b, a histogram's count and every bucket."""
    return a <= b if isinstance(a, int) else a[0] <= b[0] and all(map(int.__le__, a[1], b[1]))


def plus(a, b):
    return a + b if isinstance(a, int) else (a[0] + b[0], tuple(map(int.__add__, a[1], b[1])))


def summed_over(points, dropped):
    """Points summed over the dropped attributes (what the members hold now)."""
    out = {}
    for (res, name, attrs), (_, value) in points.items():
        key = (res, name, tuple(kv for kv in attrs if kv[0] not in dropped))
        out[key] = value if key not in out else plus(out[key], value)
    return out


def check_step(step, cum, delta, fresh, before):
    """The three properties above, for one interval's points (`before`: the last one's)."""
    for key, (start, value) in cum.items():
        assert at_most(fresh[key], value), f"step {step}: {key[1]} holds less than its members"
        if key in before and before[key][0] == start:
            assert at_most(before[key][1], value), f"step {step}: {key[1]} went back"
            assert plus(before[key][1], delta[key][1]) == value, f"step {step}: {key[1]} delta"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dropped", [("network.peer.address",), ("network.peer.address", "server.port"),
                                     ("server.address",), ("process.executable.name",)])
def test_merged_points_against_their_members(seed, dropped):
    rnd = random.Random(seed)
    clock = Clock()
    names = DnsNames(capacity=6, clock=clock, min_ttl=5, max_ttl=30)
    resolver, pods = Changing(rnd), Pods()
    enricher, cumulative = make(resolver, names, pods, dropped)
    _, delta = make(resolver, names, pods, dropped, delta=True)
    series, before = {}, {}
    for step in range(1, 70):
        world(rnd, step, series, resolver, pods, names, clock)
        enriched = enricher.enrich(Snapshot(step * S + S // 2, tcp=dict(series)))
        cum = monotonic_points(cumulative.build(enriched, AgentTelemetry()))
        steps = monotonic_points(delta.build(enriched, AgentTelemetry()))
        fresh_enricher, fresh = make(resolver, names, pods, ())
        now = monotonic_points(fresh.build(fresh_enricher.enrich(Snapshot(step * S + S // 2, tcp=dict(series))),
                                           AgentTelemetry()))
        check_step(step, cum, steps, summed_over(now, set(dropped)), before)
        before = cum
