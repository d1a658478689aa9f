"""`otel-netreceiver check`: can this machine run the agent? Each check says how to fix it.

The outside world (kernel release, files, capability mask, memlock limit) is read through
a `System` whose fields tests replace with fixtures.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from otel_netreceiver.probes import loader

# Tracepoints every build needs (DESIGN.md); more are read from the built objects' sections.
REQUIRED_TRACEPOINTS = ("sock/inet_sock_set_state", "tcp/tcp_retransmit_skb",
                        "tcp/tcp_receive_reset", "tcp/tcp_send_reset")
EXPECTED_OBJECTS = ("tcp.bpf.o", "skb.bpf.o")  # TCP; UDP and DNS share skb.bpf.o
# 6.3: sock:sock_send_length / sock_recv_length (owner of accepted connections);
# 6.2: bpf_rdonly_cast (UDP server side); 5.8+ for CO-RE, ring buffer and tp_btf.
MIN_KERNEL = (6, 3)
MEMCG_KERNEL = (5, 11)  # from here BPF memory is charged to the cgroup, not to memlock
MIN_MEMLOCK = 64 << 20


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"
        return text if self.ok else f"{text}\n      fix: {self.fix}"


@dataclass
class System:
    release: str = field(default_factory=lambda: os.uname().release)
    btf: Path = loader.VMLINUX_BTF
    tracefs: tuple[Path, ...] = loader.TRACEFS_EVENTS
    mounts: Path = Path("/proc/self/mounts")
    status: Path = Path("/proc/self/status")
    objects: Path = loader.OBJECTS_DIR
    memlock: Callable[[], int] = lambda: resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    load_library: Callable[[str], object] = ctypes.CDLL


def run_checks(system: System | None = None) -> list[Check]:
    system = system or System()
    return [check(system) for check in (privileges, kernel, btf, libbpf, tracepoints,
                                        cgroup_v2, objects, memlock)]


def privileges(system: System) -> Check:
    missing = loader.missing_capabilities(system.status.read_text())
    if missing:
        return Check("privileges", False, f"missing {', '.join(missing)}",
                     "run as root, or grant CAP_BPF and CAP_PERFMON (setcap / securityContext)")
    return Check("privileges", True, "CAP_SYS_ADMIN or CAP_BPF+CAP_PERFMON")


def kernel_version(release: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def kernel(system: System) -> Check:
    ok = kernel_version(system.release) >= MIN_KERNEL
    return Check("kernel", ok, f"Linux {system.release}",
                 "upgrade to Linux 6.3 or later (tp_btf sock_send_length/sock_recv_length, bpf_rdonly_cast)")


def btf(system: System) -> Check:
    return Check("BTF", system.btf.exists(), f"{system.btf} {'present' if system.btf.exists() else 'missing'}",
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (stock Debian/Ubuntu kernels are)")


def libbpf(system: System) -> Check:
    try:
        system.load_library("libbpf.so.1")
    except OSError as err:
        return Check("libbpf", False, f"libbpf.so.1 not loadable ({err})", "apt-get install libbpf1")
    return Check("libbpf", True, "libbpf.so.1 loads")


def tracepoints(system: System) -> Check:
    """Present in tracefs, or (tracefs not mounted) as `btf_trace_<name>` in the kernel's BTF."""
    wanted = set(REQUIRED_TRACEPOINTS) | object_tracepoints(system.objects)
    leaves = {name.split("/")[-1] for name in wanted if "/" in name}
    wanted = sorted(name for name in wanted if "/" in name or name not in leaves)
    events = next((path for path in system.tracefs if path.is_dir() and any(path.iterdir())), None)
    if events is not None:
        missing = [name for name in wanted if not any(events.glob(name if "/" in name else f"*/{name}"))]
        where = str(events)
    elif system.btf.exists():
        types = system.btf.read_bytes()
        missing = [name for name in wanted if f"btf_trace_{name.split('/')[-1]}\0".encode() not in types]
        where = f"{system.btf} (tracefs not mounted)"
    else:
        return Check("tracepoints", False, "cannot tell: neither tracefs nor BTF available",
                     "mount -t tracefs nodev /sys/kernel/tracing")
    if missing:
        return Check("tracepoints", False, f"missing {', '.join(missing)}",
                     "use a kernel with these tracepoints (Linux 6.3+, CONFIG_TRACEPOINTS=y)")
    return Check("tracepoints", True, f"{len(wanted)} present in {where}")


def object_tracepoints(objects: Path) -> set[str]:
    """Tracepoints the built objects attach to, read from their section names.

    `tracepoint/cat/name` gives `cat/name`; `tp_btf/name` and `raw_tp/name` give `name`.
    """
    found = set()
    for path in sorted(objects.glob("*.bpf.o")) if objects.is_dir() else []:
        data = path.read_bytes()
        for match in re.finditer(rb"(?:tracepoint|tp)/([a-z0-9_]+/[a-z0-9_]+)", data):
            found.add(match.group(1).decode())
        for match in re.finditer(rb"(?:tp_btf|raw_tp)/([a-z0-9_]+)", data):
            found.add(match.group(1).decode())
    return found


def cgroup_v2(system: System) -> Check:
    for line in system.mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Check("cgroup v2", True, f"mounted at {fields[1]}")
    return Check("cgroup v2", False, "no cgroup2 mount (containers cannot be told apart)",
                 "mount -t cgroup2 none /sys/fs/cgroup/unified (or boot with systemd.unified_cgroup_hierarchy=1)")


def objects(system: System) -> Check:
    built = {p.name for p in system.objects.glob("*.bpf.o")} if system.objects.is_dir() else set()
    missing = [name for name in EXPECTED_OBJECTS if name not in built]
    if missing:
        return Check("BPF objects", False, f"{', '.join(missing)} missing in {system.objects}", "make bpf")
    return Check("BPF objects", True, ", ".join(sorted(built)))


def memlock(system: System) -> Check:
    if kernel_version(system.release) >= MEMCG_KERNEL:
        return Check("memlock", True, "not needed (kernel charges BPF memory to the cgroup)")
    limit = system.memlock()
    ok = limit == resource.RLIM_INFINITY or limit >= MIN_MEMLOCK
    shown = "unlimited" if limit == resource.RLIM_INFINITY else f"{limit} bytes"
    return Check("memlock", ok, f"RLIMIT_MEMLOCK {shown}",
                 "ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit")
