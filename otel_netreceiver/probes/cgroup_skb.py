"""What the two cgroup_skb collectors (UDP flows, DNS) share.

One BPF object, bpf/skb.bpf.c, serves both: a single cgroup_skb program per direction
counts UDP and captures DNS, so every packet of the host (TCP included) enters one
program per direction, not two. `SkbProbe` loads it once for the collectors that use
it: each collector says in its constructor which part it needs (`use`), the first
`__enter__` loads the object with only those parts enabled, the last `__exit__`
detaches it. A collector given no probe makes its own.

Also here: the names they use for the ctypes mirrors of bpf/netreceiver.h (defined
once, in abi.py), the cgroup v2 root they attach to, the settings they are loaded with,
and decoding of addresses and per-CPU loss counters.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
from contextlib import contextmanager
from ctypes import c_uint64
from dataclasses import dataclass
from pathlib import Path

from ..flows.model import Family, Workload
from . import abi, libbpf
from .loader import Loader, ProbeAttachError, object_path

# the ctypes mirrors of the C structs live in abi.py, one per struct
MAX_DNS_PORTS = abi.MAX_DNS_PORTS
SETTING_IPV6, SETTING_DNS_TCP = abi.SKB_SETTING_IPV6, abi.SKB_SETTING_DNS_TCP
PART_FLAGS = {"udp": abi.SKB_SETTING_UDP, "dns": abi.SKB_SETTING_DNS}  # SkbProbe.use
BIND_PROGRAMS = ("udp_bind4", "udp_bind6")  # only the UDP part needs them
SMALLEST_RING = 4096  # a page: the ring buffer of an object without the DNS part
LOSS_FLOWS_FULL, LOSS_RINGBUF_FULL, LOSS_OWNERS_FULL = (
    int(abi.SkbLoss.FLOWS_FULL), int(abi.SkbLoss.RINGBUF_FULL), int(abi.SkbLoss.OWNERS_FULL))
LOSS_MAX = abi.SKB_LOSS_MAX
FAMILIES = {4: Family.IPV4, 6: Family.IPV6}

PAYLOAD_OFFSET = abi.DnsEvent.payload.offset


@dataclass(frozen=True)
class SkbSettings:
    """Settings common to both objects."""

    dns_ports: tuple[int, ...] = (53,)
    ipv6: bool = True
    dns_over_tcp: bool = True

    def to_c(self, parts: frozenset[str] = frozenset(PART_FLAGS)) -> abi.SkbSettings:
        """The C settings with the given parts ("udp", "dns") enabled."""
        if not 1 <= len(self.dns_ports) <= MAX_DNS_PORTS:
            raise ValueError(f"between 1 and {MAX_DNS_PORTS} DNS ports, got {self.dns_ports}")
        settings = abi.SkbSettings()
        for index, port in enumerate(self.dns_ports):
            settings.dns_ports[index] = port
        settings.flags = (SETTING_IPV6 if self.ipv6 else 0) | (
            SETTING_DNS_TCP if self.dns_over_tcp and "dns" in parts else 0)
        for part in parts:
            settings.flags |= PART_FLAGS[part]
        return settings


def address_text(raw, family: int) -> str:
    """Text of a 16-byte address; IPv4 is stored v4-mapped and printed as IPv4."""
    packed = bytes(raw)
    if family == 4:
        return str(ipaddress.IPv4Address(packed[12:]))
    return str(ipaddress.IPv6Address(packed))


def workload(identity: abi.Identity) -> Workload:
    comm = bytes(identity.comm).split(b"\0", 1)[0].decode(errors="replace")
    return Workload(identity.cgroup_id, identity.tgid, comm)


def cgroup2_root(mounts: str = "/proc/self/mounts") -> Path:
    """The cgroup v2 mount: /sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup."""
    for line in Path(mounts).read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    raise ProbeAttachError("no cgroup v2 mount in /proc/self/mounts (cgroup_skb needs one)")


def read_losses(loaded, names: dict[int, str]) -> dict[str, int]:
    """Sum the per-CPU `losses` array of an object into {reason: count}."""
    cpus = libbpf.possible_cpus()
    values = libbpf.read_array(loaded.map("losses").fd, c_uint64 * cpus, LOSS_MAX)
    return {name: sum(values[index]) for index, name in names.items()}


@contextmanager
def attached(name: str, configure, path: str | None = None, cgroup: Path | None = None,
             skip: frozenset[str] = frozenset()):
    """Load `<name>.bpf.o` and attach its cgroup programs to the cgroup v2 root.

    Programs named in `skip` are neither loaded nor attached.
    """
    root = cgroup or cgroup2_root()
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise ProbeAttachError(f"cannot open cgroup {root}: {err.strerror}") from err

    def configure_all(obj: libbpf.BpfObject) -> None:
        for program in obj.programs():
            if program.name in skip:
                program.set_autoload(False)
        configure(obj)

    def attach(program: libbpf.BpfProgram):
        return _NOT_ATTACHED if program.name in skip else program.attach_cgroup(fd)

    try:
        with Loader(object_path(name, path), configure_all, attach=attach) as loaded:
            yield loaded
    finally:
        os.close(fd)


class _NotAttached:
    """Stands for the link of a program left out (nothing to destroy)."""

    def destroy(self) -> None:
        pass


_NOT_ATTACHED = _NotAttached()


class SkbProbe:
    """skb.bpf.o loaded once for the UDP and DNS collectors (see the module docstring).

    `use(part, configure)` before the first `__enter__`: `configure(obj)` sizes that
    part's maps. Entering again only counts; `loaded` is the shared `Loaded`.
    """

    def __init__(self, settings: SkbSettings | None = None, object_path: str | None = None,
                 cgroup: Path | None = None) -> None:
        self.settings = settings or SkbSettings()
        self._object_path, self._cgroup = object_path, cgroup
        self._parts: dict[str, object] = {}  # part -> configure(obj)
        self._users = 0
        self._stack = None
        self.loaded = None

    def use(self, part: str, configure) -> None:
        if part not in PART_FLAGS:
            raise ValueError(f"unknown cgroup_skb part {part!r}; expected one of {sorted(PART_FLAGS)}")
        if self._users:
            raise RuntimeError(f"cgroup_skb part {part!r} added after the object was loaded")
        self._parts[part] = configure

    def __enter__(self):
        if not self._parts:
            raise ValueError("cgroup_skb object entered with no part in use: nothing to attach")
        if not self._users:
            parts = frozenset(self._parts)
            skip = frozenset() if "udp" in parts else frozenset(BIND_PROGRAMS)
            stack = attached("skb", self._configure, self._object_path, self._cgroup, skip)
            self.loaded = stack.__enter__()
            self._stack = stack
        self._users += 1
        return self.loaded

    def __exit__(self, *exc) -> None:
        if not self._users:
            return
        self._users -= 1
        if not self._users:
            stack, self._stack, self.loaded = self._stack, None, None
            stack.__exit__(None, None, None)

    def _configure(self, obj: libbpf.BpfObject) -> None:
        obj.set_global("settings", bytes(self.settings.to_c(frozenset(self._parts))))
        if "udp" not in self._parts:  # unused maps kept as small as the kernel allows
            for name in ("udp_flows_a", "udp_flows_b"):
                obj.map(name).set_max_entries(1)
        if "dns" not in self._parts:
            obj.map("dns_events").set_max_entries(SMALLEST_RING)
        for configure in self._parts.values():
            configure(obj)


def ctypes_layout(struct) -> tuple[int, dict[str, int]]:
    """(size, {field: offset}) of a ctypes mirror, for the ABI test."""
    return ctypes.sizeof(struct), {name: getattr(struct, name).offset
                                   for name, *_ in struct._fields_}
