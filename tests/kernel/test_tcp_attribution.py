"""Who owns a flow: the cgroup of a containerised process, the tgid and comm of a host one."""

from __future__ import annotations

import os

import pytest

from otel_netreceiver.probes.tcp import TcpCollector, TcpSettings
from tests.support import traffic
from tests.support.hosts import cgroup2_root, emulated_container, host_pair

pytestmark = pytest.mark.kernel

# tests collect many times a second: never evict an idle key during a test
KEEP_ALL = TcpSettings(idle_intervals=1_000_000)


def own_cgroup_id() -> int:
    """The cgroup v2 id of this process (its children start in the same cgroup)."""
    lines = open("/proc/self/cgroup").read().splitlines()
    relative = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
    return os.stat(cgroup2_root() / relative.lstrip("/")).st_ino


@pytest.mark.parametrize("runtime", ["docker", "containerd"])
def test_container_cgroup_and_host_process_identity(runtime):
    port, count = 8090, 3
    with TcpCollector(KEEP_ALL) as collector, host_pair("nrk", "198.18.72") as pair, \
            emulated_container(runtime) as container:
        server = traffic.Generator(container.argv(*pair.server.argv(*traffic.argv(
            "rr-server", address=pair.server.address, port=port, count=count))))
        try:
            assert server.line()["ready"]
            client = traffic.run(pair.client.argv(*traffic.argv(
                "rr-client", address=pair.server.address, port=port, count=count)))
            truth = server.result()
        finally:
            server.stop()
        inc = dict(direction="incoming", peer_address=pair.client.address, server_port=port)
        out = dict(direction="outgoing", peer_address=pair.server.address, server_port=port)
        snap = traffic.collect_until(collector, lambda s: all(
            sum(st.closed for _, st in traffic.matching(s, **f)) >= count for f in (inc, out)))
        [(in_key, in_stats)] = traffic.matching(snap, **inc)
        [(out_key, out_stats)] = traffic.matching(snap, **out)
        assert in_key.workload.cgroup_id == container.cgroup_id
        assert (in_key.workload.pid, in_key.workload.comm) == (truth["pid"], truth["comm"])
        assert out_key.workload.cgroup_id == own_cgroup_id() != container.cgroup_id
        assert (out_key.workload.pid, out_key.workload.comm) == (client["pid"], client["comm"])
        assert in_stats.closed == out_stats.closed == count
