"""What the two cgroup_skb collectors (UDP flows, DNS) share.

The names they use for the ctypes mirrors of bpf/netreceiver.h (defined once, in
abi.py), the cgroup v2 root they attach to, the settings they are loaded with, and
decoding of addresses and per-CPU loss counters.
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

    def to_c(self) -> abi.SkbSettings:
        if not 1 <= len(self.dns_ports) <= MAX_DNS_PORTS:
            raise ValueError(f"between 1 and {MAX_DNS_PORTS} DNS ports, got {self.dns_ports}")
        settings = abi.SkbSettings()
        for index, port in enumerate(self.dns_ports):
            settings.dns_ports[index] = port
        settings.flags = (SETTING_IPV6 if self.ipv6 else 0) | (
            SETTING_DNS_TCP if self.dns_over_tcp else 0)
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
def attached(name: str, configure, path: str | None = None, cgroup: Path | None = None):
    """Load `<name>.bpf.o` and attach its cgroup_skb programs to the cgroup v2 root."""
    root = cgroup or cgroup2_root()
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise ProbeAttachError(f"cannot open cgroup {root}: {err.strerror}") from err
    try:
        with Loader(object_path(name, path), configure,
                    attach=lambda program: program.attach_cgroup(fd)) as loaded:
            yield loaded
    finally:
        os.close(fd)


def set_settings(obj: libbpf.BpfObject, settings: SkbSettings) -> None:
    obj.set_global("settings", bytes(settings.to_c()))


def ctypes_layout(struct) -> tuple[int, dict[str, int]]:
    """(size, {field: offset}) of a ctypes mirror, for the ABI test."""
    return ctypes.sizeof(struct), {name: getattr(struct, name).offset
                                   for name, *_ in struct._fields_}
