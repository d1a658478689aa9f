"""DNS lookups on the real kernel: dnsmasq in a namespace host, a client in a container.

Ground truth is what the client received (per name and rcode) and which queries it
gave up on; the agent's numbers must equal it exactly. Assertions are filtered to the
emulated container's cgroup: other engineers' traffic may be seen at the same time.
"""

import time

import pytest

from otel_netreceiver.enrich.dns_names import DnsNames
from otel_netreceiver.flows.model import Snapshot
from otel_netreceiver.probes.dns import DnsCollector, DnsSettings
from tests.support.dns import add_ipv6, client_argv, dnsmasq, run_client
from tests.support.hosts import emulated_container, host_pair

pytestmark = pytest.mark.kernel

RECORDS = {"known.test": "198.18.84.50", "www.known.test": "198.18.84.51"}
TIMEOUT = 1.0


@pytest.fixture
def collector():
    names = DnsNames()
    with DnsCollector(DnsSettings(timeout=TIMEOUT), names=names) as running:
        yield running


def lookups(collector, cgroup_id, wait=0.0):
    """{(name, error_type): answered}, {name: timeouts}, durations, workloads of a cgroup."""
    time.sleep(wait)
    snapshot = Snapshot(time.time_ns())
    collector.collect(snapshot)
    answered, timeouts, durations, workloads = {}, {}, [], set()
    for key, series in snapshot.dns.items():
        if key.workload.cgroup_id != cgroup_id:
            continue
        workloads.add((key.workload.pid, key.workload.comm, key.server_address))
        histogram = series.stats.duration
        if histogram.count:
            pair = (key.question_name, key.error_type or "noerror")
            answered[pair] = answered.get(pair, 0) + histogram.count
            durations.append(histogram.sum / histogram.count)
        if series.stats.timeouts:
            timeouts[key.question_name] = timeouts.get(key.question_name, 0) + series.stats.timeouts
    return answered, timeouts, durations, workloads, snapshot


def truth(report):
    answered = {tuple(k.split(" ")): v for k, v in report["answered"].items()}
    return answered, dict(report["timeouts"])


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_counts_per_name_and_rcode_are_exact(collector, tcp):
    with host_pair("nru", "198.18.84") as hosts, emulated_container("containerd") as box:
        cgroup_id = box.cgroup_id
        with dnsmasq(hosts.server, RECORDS) as server:
            names = ["known.test", "www.known.test", "missing.test", "nx.known.test"]
            report = run_client(box.argv(*hosts.client.argv(
                *client_argv(server.address, names, 5, tcp=tcp))))
            answered, timeouts, durations, workloads, snapshot = lookups(collector, cgroup_id,
                                                                         wait=0.5)
    expected_answered, expected_timeouts = truth(report)
    assert expected_answered == {("known.test", "noerror"): 5, ("www.known.test", "noerror"): 5,
                                 ("missing.test", "nxdomain"): 5, ("nx.known.test", "nxdomain"): 5}
    assert answered == expected_answered and timeouts == expected_timeouts == {}
    assert workloads == {(report["pid"], report["comm"], "198.18.84.2")}
    assert all(0 < d < 1.0 for d in durations)  # a veth round trip: well under a second
    assert snapshot.losses["dns.ring_buffer_full"] == 0
    assert collector.names.name_for(cgroup_id, "198.18.84.51") == "www.known.test"


def test_timeouts_are_exact_when_queries_are_dropped(collector):
    with host_pair("nru", "198.18.80") as hosts, emulated_container() as box:
        cgroup_id = box.cgroup_id
        with dnsmasq(hosts.server, RECORDS) as server:
            hosts.server.run("iptables", "-I", "INPUT", "-p", "udp", "--dport", "53",
                             "-m", "string", "--string", "dropped", "--algo", "bm", "-j", "DROP")
            report = run_client(box.argv(*hosts.client.argv(*client_argv(
                server.address, ["known.test", "dropped.test", "nxdropped.test"], 4,
                timeout=0.4))))
            answered, timeouts, *_ = lookups(collector, cgroup_id, wait=TIMEOUT + 1.5)
    expected_answered, expected_timeouts = truth(report)
    assert expected_timeouts == {"dropped.test": 4, "nxdropped.test": 4}
    assert timeouts == expected_timeouts
    assert answered == expected_answered == {("known.test", "noerror"): 4}


def test_name_guard_caps_distinct_names_per_interval():
    with DnsCollector(DnsSettings(timeout=TIMEOUT, max_names=2)) as collector:
        with host_pair("nru", "198.18.81") as hosts, emulated_container() as box:
            cgroup_id = box.cgroup_id
            with dnsmasq(hosts.server, RECORDS) as server:
                run_client(box.argv(*hosts.client.argv(*client_argv(
                    server.address, ["known.test", "www.known.test", "a.test", "b.test"], 1))))
                answered, *_ = lookups(collector, cgroup_id, wait=0.5)
    assert answered == {("known.test", "noerror"): 1, ("www.known.test", "noerror"): 1,
                        ("_OTHER", "nxdomain"): 2}


def test_lookup_of_a_host_process_is_attributed_to_its_cgroup_and_process(collector):
    """Outside any container: the process's own cgroup (a slice, or the root) and pid."""
    with host_pair("nru", "198.18.83") as hosts:
        with dnsmasq(hosts.server, RECORDS) as server:
            report = run_client(hosts.client.argv(*client_argv(server.address, ["known.test"], 3)))
        snapshot = Snapshot(time.time_ns())
        collector.collect(snapshot)
    mine = {key: series for key, series in snapshot.dns.items()
            if key.workload.pid == report["pid"]}
    assert [(k.workload.comm, k.question_name, s.stats.duration.count) for k, s in mine.items()] \
        == [(report["comm"], "known.test", 3)]
    (key,) = mine
    assert key.workload.cgroup_id == own_cgroup_id()


def own_cgroup_id() -> int:
    """The cgroup v2 id of this test process (its children inherit the cgroup)."""
    import os
    from pathlib import Path

    from tests.support.hosts import cgroup2_root

    relative = next(line.split(":", 2)[2] for line in
                    Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    return os.stat(str(cgroup2_root()) + relative).st_ino


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_ipv6_lookups_are_counted_and_feed_the_name_cache(collector, tcp):
    with host_pair("nru", "198.18.83") as hosts, emulated_container() as box:
        cgroup_id = box.cgroup_id
        _, server_address = add_ipv6(hosts, "2001:db8:83")
        records = {"v6.test": "2001:db8:83::2"}
        with dnsmasq(hosts.server, records, address=server_address) as server:
            report = run_client(box.argv(*hosts.client.argv(*client_argv(
                server.address, ["v6.test", "gone.test"], 3, tcp=tcp, rdtype="AAAA"))))
        snapshot = Snapshot(time.time_ns())
        collector.collect(snapshot)
    counts = {(k.question_name, k.error_type, k.server_address): s.stats.duration.count
              for k, s in snapshot.dns.items() if k.workload.cgroup_id == cgroup_id}
    assert report["answered"] == {"v6.test noerror": 3, "gone.test nxdomain": 3}
    assert counts == {("v6.test", "", server_address): 3,
                      ("gone.test", "nxdomain", server_address): 3}
    assert collector.names.name_for(cgroup_id, "2001:db8:83::2") == "v6.test"


def test_dns_ports_are_configurable():
    """A server on port 5353 is seen only by a collector configured for that port."""
    from otel_netreceiver.probes.cgroup_skb import SkbSettings

    custom = DnsSettings(timeout=TIMEOUT, skb=SkbSettings(dns_ports=(53, 5353)))
    with DnsCollector(custom) as both, DnsCollector(DnsSettings(timeout=TIMEOUT)) as default, \
            host_pair("nru", "198.18.83") as hosts, emulated_container() as box:
        cgroup_id = box.cgroup_id
        with dnsmasq(hosts.server, RECORDS, port=5353) as server:
            report = run_client(box.argv(*hosts.client.argv(*client_argv(
                server.address, ["known.test", "nx.test"], 2, port=5353))))
        counted = [lookups(collector, cgroup_id)[0] for collector in (both, default)]
    assert report["answered"] == {"known.test noerror": 2, "nx.test nxdomain": 2}
    assert counted == [{("known.test", "noerror"): 2, ("nx.test", "nxdomain"): 2}, {}]


def test_responses_larger_than_the_capture_are_still_matched(collector):
    """60 A records: past 512 bytes. Over TCP the whole answer comes back (the capture keeps
    its first 512 bytes); over UDP dnsmasq truncates it (TC bit). Both end their lookup."""
    many = [f"198.18.83.{i}" for i in range(100, 160)]
    with host_pair("nru", "198.18.83") as hosts, emulated_container() as box:
        cgroup_id = box.cgroup_id
        with dnsmasq(hosts.server, {"big.test": many}) as server:
            reports = [run_client(box.argv(*hosts.client.argv(*client_argv(
                server.address, ["big.test"], 3, tcp=tcp)))) for tcp in (True, False)]
        answered, timeouts, *_ = lookups(collector, cgroup_id, wait=0.5)
    assert [r["answered"] for r in reports] == [{"big.test noerror": 3}] * 2
    assert answered == {("big.test", "noerror"): 6} and timeouts == {}
    assert collector.names.name_for(cgroup_id, many[0]) == "big.test"
