"""UDP flows on the real kernel: exact payload bytes and datagrams against a generator.

A client in an emulated container sends datagrams of known sizes (including ones
larger than the veth MTU, so IP fragments) to a server bound to a port in another
namespace host; the server answers each with half its size. Ground truth is what each
side wrote and read. Assertions are filtered to our namespaces' addresses.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from contextlib import ExitStack

import pytest

from otel_netreceiver.flows.model import Direction, Family, Snapshot
from otel_netreceiver.probes.cgroup_skb import SkbProbe
from otel_netreceiver.probes.dns import DnsCollector
from otel_netreceiver.probes.udp import UdpCollector
from tests.support.dns import add_ipv6
from tests.support.hosts import emulated_container, host_pair

pytestmark = pytest.mark.kernel

PORT = 7777
COMM = os.path.basename(sys.executable)[:15]  # the name execve gave the task
SIZES = [1, 100, 512, 1400, 1472, 4000, 8000, 30000]

SERVER = textwrap.dedent("""
    import json, socket, sys
    family, address, port, count = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((address, port))
    print('ready', flush=True)
    received = sent = 0
    for _ in range(count):
        data, peer = sock.recvfrom(65535)
        received += len(data)
        sent += sock.sendto(b'r' * (len(data) // 2), peer)
    print(json.dumps({'received': received, 'sent': sent}), flush=True)
""")

CLIENT = textwrap.dedent("""
    import json, socket, sys
    address, port, sizes = sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3].split(',')]
    sock = socket.socket(socket.AF_INET6 if ':' in address else socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sent = received = 0
    for size in sizes:
        sent += sock.sendto(b's' * size, (address, port))
        received += len(sock.recvfrom(65535)[0])
    print(json.dumps({'sent': sent, 'received': received, 'port': sock.getsockname()[1]}))
""")


def exchange(hosts, box, server_address):
    server = subprocess.Popen(hosts.server.argv(sys.executable, "-c", SERVER, server_address,
                                                str(PORT), str(len(SIZES))),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(box.argv(*hosts.client.argv(
            sys.executable, "-c", CLIENT, server_address, str(PORT),
            ",".join(map(str, SIZES)))), capture_output=True, text=True, timeout=30, check=True)
        server_report = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    return json.loads(client.stdout), server_report


def collectors(shared: bool, stack: ExitStack) -> UdpCollector:
    """A UDP collector alone, or sharing its cgroup_skb object with a DNS collector."""
    if not shared:
        return stack.enter_context(UdpCollector())
    probe = SkbProbe()
    udp, dns = UdpCollector(probe=probe), DnsCollector(probe=probe)
    stack.enter_context(udp)
    stack.enter_context(dns)
    assert dns.probe.loaded is udp.probe.loaded  # one object, one program per direction
    return udp


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "shared-with-dns"])
@pytest.mark.parametrize("family", [Family.IPV4, Family.IPV6])
def test_bytes_and_datagrams_are_exact_on_both_sides(family, shared):
    subnet = "198.18.80" if family == Family.IPV4 else "198.18.81"
    with ExitStack() as stack, host_pair("nru", subnet) as hosts, \
            emulated_container() as box:
        collector = collectors(shared, stack)
        cgroup_id = box.cgroup_id
        client_address, server_address = hosts.client.address, hosts.server.address
        if family == Family.IPV6:
            client_address, server_address = add_ipv6(hosts, "2001:db8:80")
        client, server = exchange(hosts, box, server_address)
        time.sleep(0.2)
        snapshot = Snapshot(time.time_ns())
        collector.collect(snapshot)
    assert client["sent"] == server["received"] == sum(SIZES)
    flows = {key: series.stats for key, series in snapshot.udp.items()
             if key.peer_address in (client_address, server_address)}
    outgoing = [(k, s) for k, s in flows.items() if k.direction == Direction.OUTGOING]
    incoming = [(k, s) for k, s in flows.items() if k.direction == Direction.INCOMING]
    assert len(outgoing) == 1 and len(incoming) == 1, flows
    (out_key, out), (in_key, inc) = outgoing[0], incoming[0]
    assert (out_key.workload.cgroup_id, out_key.workload.comm) == (cgroup_id, COMM)
    assert (out_key.peer_address, out_key.server_port, out_key.family) == (
        server_address, PORT, family)
    assert (in_key.peer_address, in_key.local_address, in_key.server_port) == (
        client_address, server_address, PORT)
    assert in_key.workload.comm == COMM and in_key.workload.pid > 0
    assert (out.bytes_sent, out.packets_sent) == (client["sent"], len(SIZES))
    assert (out.bytes_received, out.packets_received) == (client["received"], len(SIZES))
    assert (inc.bytes_received, inc.packets_received) == (server["received"], len(SIZES))
    assert (inc.bytes_sent, inc.packets_sent) == (server["sent"], len(SIZES))
    assert client["port"] not in {k.server_port for k in flows}  # no ephemeral port
    assert snapshot.losses["udp.flows_full"] == 0


def test_counts_accumulate_across_intervals_without_loss():
    with UdpCollector() as collector, host_pair("nru", "198.18.82") as hosts, \
            emulated_container() as box:
        totals = []
        for _ in range(3):
            client, _ = exchange(hosts, box, hosts.server.address)
            snapshot = Snapshot(time.time_ns())
            collector.collect(snapshot)
            # each run is a new client process, so a new key: sum the outgoing flows
            flows = [s.stats for k, s in snapshot.udp.items()
                     if k.peer_address == hosts.server.address]
            totals.append((sum(f.bytes_sent for f in flows), sum(f.packets_sent for f in flows)))
    assert totals == [(sum(SIZES) * n, len(SIZES) * n) for n in (1, 2, 3)]
