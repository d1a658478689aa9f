"""The agent loop and its wiring, with the fake collector and a recording exporter."""

import gc
import threading
import weakref

import pytest

from otel_netreceiver import agent
from otel_netreceiver.config import Config, ExporterConfig
from otel_netreceiver.enrich import EnrichConfig
from otel_netreceiver.enrich.base import Enricher
from otel_netreceiver.flows.model import RecordKind
from otel_netreceiver.metrics import catalog
from otel_netreceiver.metrics.builder import BuildSettings, MetricsBuilder
from otel_netreceiver.probes.settings import ProbesConfig, probes_config
from tests.support.fake_source import FakeCollector
from tests.unit.sdk_data import to_sdk

CATALOG = catalog.load()


class Recorder:
    def __init__(self, name="rec", ok=True):
        self.name, self.delta, self.ok = name, False, ok
        self.exports, self.shut = [], False

    def export(self, data):
        self.exports.append(data)
        return self.ok

    def shutdown(self):
        self.shut = True


def make_agent(collector, *exporters, interval_s=0.01):
    builder = MetricsBuilder(CATALOG, BuildSettings(frozenset(CATALOG.metrics)), {"host.name": "h"}, 0)
    pipeline = agent.Pipeline(builder, list(exporters))
    clock = iter(range(1, 10**6)).__next__
    return agent.Agent([collector], Enricher({"host.name": "h"}), [pipeline], interval_s, 0, clock=clock)


def values(data, name):
    return [p.value for rm in to_sdk(data).resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics if m.name == name for p in m.data.data_points]


def test_run_until_stopped_then_final_export_and_detach():
    collector, recorder, stop = FakeCollector(), Recorder(), threading.Event()
    instance = make_agent(collector, recorder)
    instance.run(stop, ready=lambda: threading.Timer(0.2, stop.set).start())
    assert collector.entered and collector.exited and recorder.shut
    assert len(recorder.exports) == collector.step >= 2
    assert values(recorder.exports[-1], "tcp.connection.opened") == [2 * collector.step] * 2


def test_stop_before_first_interval_still_exports_once():
    collector, recorder, stop = FakeCollector(), Recorder(), threading.Event()
    stop.set()
    make_agent(collector, recorder, interval_s=60).run(stop)
    assert len(recorder.exports) == 1 and collector.exited


def test_export_failures_are_counted_per_exporter():
    good, bad = Recorder("good"), Recorder("bad", ok=False)
    instance = make_agent(FakeCollector(), good, bad)
    for _ in range(3):
        instance.tick()
    assert values(good.exports[-1], "otel_netreceiver.export.failures") == [2]


def test_failing_collector_does_not_stop_export():
    class Broken(FakeCollector):
        def collect(self, snapshot):
            raise RuntimeError("map read failed")
    recorder = Recorder()
    make_agent(Broken(), recorder).tick()
    assert values(recorder.exports[0], "otel_netreceiver.flows.tracked") == [0, 0, 0]


def test_final_export_gives_up_after_the_timeout(monkeypatch):
    monkeypatch.setattr(agent, "FINAL_EXPORT_TIMEOUT_S", 0.1)
    release = threading.Event()

    class Stuck(Recorder):
        def export(self, data):
            release.wait(5)
            return True
    stuck = Stuck()
    instance = make_agent(FakeCollector(), stuck)
    instance.tick(final=True)
    release.set()
    assert instance._telemetry.export_failures == {"rec": 1}


@pytest.mark.parametrize("disabled, kinds", [
    (set(), [RecordKind.TCP, RecordKind.UDP, RecordKind.DNS]),
    ({"udp.io", "udp.packet.count"}, [RecordKind.TCP, RecordKind.DNS]),
    ({n for n in CATALOG.metrics if n.startswith("tcp.")}, [RecordKind.UDP, RecordKind.DNS]),
])
def test_collectors_for_leaves_out_unused_kinds(disabled, kinds):
    loaders = {kind: (lambda kind=kind: kind) for kind in RecordKind}
    assert agent.collectors_for(frozenset(set(CATALOG.metrics) - disabled), loaders) == kinds


def test_host_resource(tmp_path):
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("abc123\n")
    config = Config(resource_attributes={"deployment.environment": "prod"}, service_name="edge")
    resource = agent.host_resource(config, machine_id, hostname=lambda: "node-1")
    assert resource == {"host.name": "node-1", "host.id": "abc123", "os.type": "linux",
                        "deployment.environment": "prod", "service.name": "edge"}
    assert agent.agent_resource({"host.name": "n"})["service.name"] == "otel-netreceiver"


def test_build_groups_exporters_by_temporality():
    exporters = (ExporterConfig("debug", "debug"), ExporterConfig("debug/delta", "debug", delta=True),
                 ExporterConfig("debug/2", "debug"))
    config = Config(enabled_metrics=frozenset(CATALOG.metrics), exporters=exporters,
                    enrich=EnrichConfig(containers=False, cloud_detectors=()))
    instance = agent.build(config, loaders={RecordKind.TCP: FakeCollector})
    pipelines = {p.builder.temporality.name: [e.name for e in p.exporters] for p in instance._pipelines}
    assert pipelines == {"CUMULATIVE": ["debug", "debug/2"], "DELTA": ["debug/delta"]}


def test_default_loaders_pass_catalog_bounds():
    loaders = agent.default_loaders(CATALOG, ProbesConfig())
    tcp = loaders[RecordKind.TCP]()
    assert tcp.settings.duration_bounds == CATALOG.metrics["tcp.connection.duration"].bounds
    assert tcp.settings.rtt_bounds == CATALOG.metrics["tcp.rtt"].bounds
    dns = loaders[RecordKind.DNS]()
    assert dns.settings.bounds == CATALOG.metrics["dns.lookup.duration"].bounds


def test_default_loaders_pass_the_configured_probe_settings():
    probes = probes_config({"tcp": {"max_sockets": 1000, "max_flows": 500},
                            "udp": {"max_flows": 300},
                            "dns": {"ports": [53, 5353], "timeout": "2s", "max_names": 7}})
    loaders = agent.default_loaders(CATALOG, probes)
    tcp, udp, dns = (loaders[kind]() for kind in (RecordKind.TCP, RecordKind.UDP, RecordKind.DNS))
    assert (tcp.settings.sockets_max, tcp.settings.flows_max) == (1000, 500)
    assert tcp.settings.rtt_bounds == CATALOG.metrics["tcp.rtt"].bounds
    assert udp.settings.max_flows == 300
    assert (dns.settings.timeout, dns.settings.max_names) == (2.0, 7)
    assert udp.settings.skb.dns_ports == dns.settings.skb.dns_ports == (53, 5353)


def test_stop_during_a_stuck_periodic_export_still_ends_with_the_final_one(monkeypatch):
    monkeypatch.setattr(agent, "FINAL_EXPORT_TIMEOUT_S", 0.2)
    release, stop = threading.Event(), threading.Event()

    class Hanging(Recorder):
        def export(self, data):
            self.exports.append(data)
            threading.Timer(0.1, stop.set).start()  # SIGTERM arrives during the export
            release.wait(30)
            return True
    hanging = Hanging()
    instance = make_agent(FakeCollector(), hanging, interval_s=0.01)
    instance.run(stop)
    release.set()
    assert len(hanging.exports) == 2 and hanging.shut  # the stuck one, then the final one
    assert instance._telemetry.export_failures == {"rec": 2}


def test_settle_memory_freezes_start_up_and_raises_the_young_threshold():
    before = gc.get_threshold()
    try:
        agent.settle_memory(young_threshold=12_345)
        assert gc.get_threshold()[0] == 12_345
        assert gc.get_freeze_count() > 0 and agent._GARBAGE.active
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        agent._GARBAGE.active = False


def test_interval_garbage_freezes_survivors_and_collects_cycles_every_full_interval():
    garbage = agent._IntervalGarbage()
    garbage.FULL_EVERY = 3
    gc.unfreeze()
    try:
        garbage.after_interval()
        assert gc.get_freeze_count() == 0  # not settled: the collector is left alone
        garbage.active = True
        cycle = _Probe()
        cycle.self = cycle  # garbage only the cyclic collector can free
        probe = weakref.ref(cycle)
        del cycle
        garbage.after_interval()  # interval 1: frozen, so out of the collector's sight
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert probe() is not None
        garbage.after_interval()  # 2
        garbage.after_interval()  # 3: unfrozen and collected, then frozen again
        assert probe() is None and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


class _Probe:
    pass


def test_interval_garbage_gives_freed_memory_back_once_settled(monkeypatch):
    trims = []
    monkeypatch.setattr(agent, "_MALLOC_TRIM", trims.append)
    garbage = agent._IntervalGarbage()
    try:
        garbage.after_interval()
        assert trims == []  # not settled: the allocator is left alone
        garbage.active = True
        garbage.after_interval()
        garbage.after_interval()
        assert trims == [0, 0]  # malloc_trim(0): every free page, not only the heap's top
    finally:
        gc.unfreeze()


def test_malloc_trim_is_found_on_glibc_and_harmless_to_call():
    assert agent._MALLOC_TRIM is not None  # these machines run glibc
    agent._trim_malloc()


class FailingLikeTheSdk(Recorder):
    """Fails as the SDK's OTLP exporters do when the backend is down: the error is kept in a
    local (`reason = error`), a cycle error -> traceback -> frame -> error that holds the
    frame, and through it what the frame held (there, the interval's Batch)."""

    def __init__(self):
        super().__init__("down", ok=False)
        self.held = []

    def export(self, data):
        batch_stand_in, reason = _Probe(), None
        self.held.append(weakref.ref(batch_stand_in))
        try:
            raise ConnectionError("connection refused")
        except ConnectionError as error:
            reason = error
        return reason is None  # False: failed


def test_a_failed_exports_cyclic_garbage_is_not_frozen_with_the_survivors():
    """While the backend is down every interval leaves such a cycle (holding a whole Batch):
    freezing it with the interval's survivors would keep ~60 Batches alive."""
    exporter, before = FailingLikeTheSdk(), gc.get_threshold()
    instance = make_agent(FakeCollector(), exporter)
    try:
        agent.settle_memory()
        for _ in range(3):
            instance.tick()
        assert [ref() for ref in exporter.held] == [None] * 3
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        agent._GARBAGE.active = False
