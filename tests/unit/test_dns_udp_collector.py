"""UdpCollector's user-space half: deltas to cumulative series, idle keys dropped.

The kernel maps are replaced by a list of per-interval deltas (the swap/drain pair is
exercised for real in tests/kernel/test_udp_flows.py).
"""

import pytest

from otel_netreceiver.flows.model import Snapshot
from otel_netreceiver.probes import abi, udp
from otel_netreceiver.probes.udp import UdpCollector, UdpSettings


class FakeKernel(UdpCollector):
    def __init__(self, intervals, **settings):
        super().__init__(UdpSettings(**settings), wall_clock=lambda: 123)
        self._intervals = list(intervals)

    def _swap(self):
        return "udp_flows_a"

    def _drain(self, name):
        return self._intervals.pop(0)


def delta(port, sent, received=0):
    key = abi.FlowKey(server_port=port, direction=0, transport=17, family=4)
    key.peer[10:16] = [0xFF, 0xFF, 198, 18, 30, 2]
    return key, abi.UdpStats(bytes_tx=sent, bytes_rx=received, packets_tx=1,
                          packets_rx=1 if received else 0)


@pytest.fixture(autouse=True)
def no_kernel_losses(monkeypatch):
    monkeypatch.setattr(udp, "read_losses", lambda loaded, names: {n: 0 for n in names.values()})


def collect(collector):
    snapshot = Snapshot(0)
    collector.collect(snapshot)
    return {key.server_port: (s.start_ns, s.stats.bytes_sent, s.stats.packets_sent,
                              s.stats.bytes_received) for key, s in snapshot.udp.items()}


def test_deltas_accumulate_per_key():
    collector = FakeKernel([[delta(53, 40, 100), delta(9999, 7)], [delta(53, 60, 50)]])
    assert collect(collector) == {53: (123, 40, 1, 100), 9999: (123, 7, 1, 0)}
    assert collect(collector) == {53: (123, 100, 2, 150), 9999: (123, 7, 1, 0)}


def test_idle_keys_are_reported_then_dropped():
    collector = FakeKernel([[delta(53, 1)], [], [], []], idle_intervals=2)
    assert [sorted(collect(collector)) for _ in range(4)] == [[53], [53], [53], []]
