"""`check`: each preflight check against fixture files, no root needed."""

import resource

import pytest

from otel_netreceiver import preflight

ROOT_STATUS = "Name:\tx\nCapEff:\t000001ffffffffff\n"
USER_STATUS = "Name:\tx\nCapEff:\t0000000000000000\n"
MOUNTS_V2 = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"
MOUNTS_V1 = "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"


@pytest.fixture
def system(tmp_path):
    (tmp_path / "btf").write_bytes(b"\0".join(b"btf_trace_" + n.split("/")[-1].encode()
                                              for n in preflight.REQUIRED_TRACEPOINTS) + b"\0")
    (tmp_path / "status").write_text(ROOT_STATUS)
    (tmp_path / "mounts").write_text(MOUNTS_V2)
    objects = tmp_path / "objects"
    objects.mkdir()
    (objects / "tcp.bpf.o").write_bytes(b"\0tp_btf/inet_sock_set_state\0")
    (objects / "skb.bpf.o").write_bytes(b"\0cgroup_skb/egress\0")
    return preflight.System(release="6.12.48+deb13-amd64", btf=tmp_path / "btf", tracefs=(tmp_path / "none",),
                            mounts=tmp_path / "mounts", status=tmp_path / "status", objects=objects,
                            memlock=lambda: 65536, load_library=lambda name: object())


def test_all_pass(system):
    results = preflight.run_checks(system)
    assert [r.ok for r in results] == [True] * 8, [r.line() for r in results if not r.ok]


def broken_library(name):
    raise OSError(f"{name}: cannot open shared object file")


@pytest.mark.parametrize("change, name, fix", [
    (lambda s: s.status.write_text(USER_STATUS), "privileges", "run as root"),
    (lambda s: setattr(s, "release", "4.19.0-25-amd64"), "kernel", "6.3"),
    (lambda s: setattr(s, "release", "6.1.0-28-amd64"), "kernel", "6.3"),
    (lambda s: s.btf.unlink(), "BTF", "CONFIG_DEBUG_INFO_BTF"),
    (lambda s: setattr(s, "load_library", broken_library), "libbpf", "apt-get install libbpf1"),
    (lambda s: s.btf.write_bytes(b"btf_trace_inet_sock_set_state\0"), "tracepoints", "tracepoints"),
    (lambda s: s.mounts.write_text(MOUNTS_V1), "cgroup v2", "mount -t cgroup2"),
    (lambda s: (s.objects / "tcp.bpf.o").unlink(), "BPF objects", "make bpf"),
    (lambda s: (s.objects / "skb.bpf.o").unlink(), "BPF objects", "make bpf"),
    (lambda s: setattr(s, "release", "5.10.0"), "memlock", "ulimit -l unlimited"),
])
def test_each_failure_names_its_fix(system, change, name, fix):
    change(system)
    [result] = [r for r in preflight.run_checks(system) if r.name == name]
    assert not result.ok and fix in result.fix and result.line().startswith("FAIL")


def test_tracefs_used_when_mounted(system, tmp_path):
    events = tmp_path / "events"
    for name in [*preflight.REQUIRED_TRACEPOINTS, "sock/inet_sock_set_state"]:
        (events / name).mkdir(parents=True, exist_ok=True)
    system.tracefs = (events,)
    assert preflight.tracepoints(system).ok
    (events / "tcp/tcp_send_reset").rmdir()
    result = preflight.tracepoints(system)
    assert not result.ok and "tcp/tcp_send_reset" in result.detail


def test_memlock_unlimited_on_old_kernel(system):
    system.release, system.memlock = "5.10.0", lambda: resource.RLIM_INFINITY
    assert preflight.memlock(system).ok


def test_object_tracepoints(tmp_path):
    (tmp_path / "x.bpf.o").write_bytes(b"\0tracepoint/tcp/tcp_probe\0raw_tp/kfree_skb\0")
    assert preflight.object_tracepoints(tmp_path) == {"tcp/tcp_probe", "kfree_skb"}
