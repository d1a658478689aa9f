"""The `probes:` section of the agent's YAML: map sizes and capture settings of the collectors.

Keys (all optional; docs/configuration.md describes them):

    probes:
      tcp: {max_sockets: 65536, max_flows: 16384, max_listeners: 4096, idle_intervals: 10}
      udp: {max_flows: 16384, idle_intervals: 10}
      dns:
        ports: [53]               # UDP and TCP ports whose traffic is parsed as DNS
        over_tcp: true
        timeout: 5s               # no answer after this long: dns.lookup.timeout.count
        max_names: 100            # distinct dns.question.name per workload per interval
        max_pending: 65536        # queries waiting for an answer
        ring_buffer_size: 8388608 # bytes; a power of two
        names_cache_size: 20000   # IP -> name entries behind server.address

Histogram bounds are not here: they come from the metric catalog (metadata.yaml).
Errors are `ConfigError`s whose text is one line naming the key, like the rest of config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from otel_netreceiver.config import ConfigError, boolean, duration, mapping
from otel_netreceiver.probes.abi import MAX_DNS_PORTS
from otel_netreceiver.probes.cgroup_skb import SkbSettings
from otel_netreceiver.probes.dns import DnsSettings
from otel_netreceiver.probes.tcp import TcpSettings
from otel_netreceiver.probes.udp import UdpSettings

PAGE_SIZE = 4096


@dataclass(frozen=True)
class ProbesConfig:
    """Settings of the three collectors; UDP and DNS share one cgroup_skb setting block."""

    tcp: TcpSettings = field(default_factory=TcpSettings)
    udp: UdpSettings = field(default_factory=UdpSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    names_cache_size: int = 20000


def probes_config(value: Any, where: str = "probes") -> ProbesConfig:
    """A ProbesConfig from the parsed (env-expanded) `probes:` mapping; None gives defaults."""
    top = mapping(value, where, {"tcp", "udp", "dns"})
    tcp = mapping(top.get("tcp"), f"{where}.tcp",
                   {"max_sockets", "max_flows", "max_listeners", "idle_intervals"})
    udp = mapping(top.get("udp"), f"{where}.udp", {"max_flows", "idle_intervals"})
    dns = mapping(top.get("dns"), f"{where}.dns",
                   {"ports", "over_tcp", "timeout", "max_names", "max_pending",
                    "ring_buffer_size", "names_cache_size"})
    skb = _skb(dns, f"{where}.dns")
    return ProbesConfig(
        tcp=TcpSettings(
            sockets_max=_count(tcp, "max_sockets", f"{where}.tcp", TcpSettings.sockets_max),
            flows_max=_count(tcp, "max_flows", f"{where}.tcp", TcpSettings.flows_max),
            listeners_max=_count(tcp, "max_listeners", f"{where}.tcp", TcpSettings.listeners_max),
            idle_intervals=_count(tcp, "idle_intervals", f"{where}.tcp", TcpSettings.idle_intervals),
        ),
        udp=UdpSettings(
            max_flows=_count(udp, "max_flows", f"{where}.udp", UdpSettings.max_flows),
            idle_intervals=_count(udp, "idle_intervals", f"{where}.udp", UdpSettings.idle_intervals),
            skb=skb,
        ),
        dns=DnsSettings(
            skb=skb,
            timeout=duration(dns["timeout"], f"{where}.dns.timeout")
            if "timeout" in dns else DnsSettings.timeout,
            max_names=_count(dns, "max_names", f"{where}.dns", DnsSettings.max_names),
            max_pending=_count(dns, "max_pending", f"{where}.dns", DnsSettings.max_pending),
            ring_buffer_bytes=_ring_size(dns, f"{where}.dns"),
        ),
        names_cache_size=_count(dns, "names_cache_size", f"{where}.dns",
                                ProbesConfig.names_cache_size),
    )


def _count(section: dict, key: str, where: str, default: int) -> int:
    """A whole number of at least 1 (map entries, names, intervals)."""
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.{key}: expected a whole number of at least 1, got {value!r}")
    return value


def _ring_size(dns: dict, where: str) -> int:
    size = _count(dns, "ring_buffer_size", where, DnsSettings.ring_buffer_bytes)
    if size < PAGE_SIZE or size & (size - 1):
        raise ConfigError(f"{where}.ring_buffer_size: expected a power of two of at least "
                          f"{PAGE_SIZE} bytes, got {size}")
    return size


def _skb(dns: dict, where: str) -> SkbSettings:
    ports = dns.get("ports", list(SkbSettings.dns_ports))
    if not isinstance(ports, list) or not 1 <= len(ports) <= MAX_DNS_PORTS:
        raise ConfigError(f"{where}.ports: expected a list of 1 to {MAX_DNS_PORTS} ports")
    for index, port in enumerate(ports):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"{where}.ports[{index}]: expected a port from 1 to 65535, got {port!r}")
    over_tcp = boolean(dns.get("over_tcp", True), f"{where}.over_tcp")
    return SkbSettings(dns_ports=tuple(ports), dns_over_tcp=over_tcp)
