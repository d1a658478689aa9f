"""The agent: wires the stages in order and runs them once per collection interval.

collectors (kernel maps -> Snapshot) -> enricher (-> EnrichedSnapshot) -> builders
(catalog -> a metrics Batch, one per temporality) -> exporters. Stages that are disabled
are left out here, at wiring time.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import socket
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from otel_netreceiver import __version__
from otel_netreceiver.config import Config
from otel_netreceiver.enrich import build_enricher
from otel_netreceiver.enrich.base import Enricher
from otel_netreceiver.export import Exporter, create
from otel_netreceiver.flows.model import RecordKind, Snapshot
from otel_netreceiver.logs import RateLimited
from otel_netreceiver.metrics import fields
from otel_netreceiver.metrics.builder import AgentTelemetry, BuildSettings, MetricsBuilder
from otel_netreceiver.metrics.catalog import Catalog, load as load_catalog

log = logging.getLogger(__name__)

FINAL_EXPORT_TIMEOUT_S = 3.0  # leaves time for detaching within the 5 s a stop may take


@dataclass
class Pipeline:
    """One temporality: a builder and the exporters that want its output."""

    builder: MetricsBuilder
    exporters: list[Exporter] = field(default_factory=list)


class Agent:
    """Runs collect -> enrich -> build -> export per interval until `stop` is set."""

    def __init__(self, collectors: list, enricher: Enricher, pipelines: list[Pipeline],
                 interval_s: float, initial_delay_s: float = 0.0,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._collectors = collectors
        self._enricher = enricher
        self._pipelines = pipelines
        self._interval_s = interval_s
        self._initial_delay_s = initial_delay_s
        self._clock = clock
        self._telemetry = AgentTelemetry()
        self._errors = RateLimited()
        self._stop = threading.Event()

    def run(self, stop: threading.Event, ready: Callable[[], None] = lambda: None) -> None:
        """Attach, export every interval, then a final export and a clean detach.

        Intervals are kept on a fixed schedule (a slow tick does not shift the next one).
        """
        self._stop = stop
        try:
            with ExitStack() as attached:
                for collector in self._collectors:
                    attached.enter_context(collector)
                ready()
                due = time.monotonic() + self._initial_delay_s
                while not stop.wait(max(0.0, due - time.monotonic())):
                    self.tick()
                    due = max(due + self._interval_s, time.monotonic())
                self.tick(final=True)
        finally:
            self.shutdown()

    def tick(self, final: bool = False) -> None:
        """One interval through every stage."""
        started = time.perf_counter()
        # 1. A new snapshot for this interval.
        snapshot = Snapshot(self._clock())
        # 2. Kernel maps -> cumulative series, losses and gauges.
        for collector in self._collectors:
            self._collect(collector, snapshot)
        # 3. Workloads -> resources, flow keys -> attributes.
        enriched = self._enricher.enrich(snapshot)
        self._telemetry.collection_duration_s = time.perf_counter() - started
        failed = False
        for pipeline in self._pipelines:
            # 4. Catalog -> a metrics Batch in this pipeline's temporality.
            data = pipeline.builder.build(enriched, self._telemetry)
            # 5. Out to every exporter of this temporality.
            for exporter in pipeline.exporters:
                failed = not self._export(exporter, data, final) or failed
        _GARBAGE.after_interval(failed)

    def shutdown(self) -> None:
        """Stop enrichment watchers, then every exporter (each at most once)."""
        self._enricher.shutdown()
        for pipeline in self._pipelines:
            for exporter in pipeline.exporters:
                try:
                    exporter.shutdown()
                except Exception as err:  # shutting down must finish for every exporter
                    log.warning("exporter %s: shutdown failed: %s", exporter.name, err)

    def _collect(self, collector, snapshot: Snapshot) -> None:
        try:
            collector.collect(snapshot)
        except Exception as err:  # one bad read must not stop the agent; the rest still goes out
            if self._errors.allow(f"collect {type(collector).__name__}"):
                log.warning("%s: collect failed: %s", type(collector).__name__, err)

    def _export(self, exporter: Exporter, data, final: bool) -> bool:
        # A stop must not wait for a slow backend: a periodic export is abandoned when stop
        # is set, the final one after FINAL_EXPORT_TIMEOUT_S.
        limit, stop = (FINAL_EXPORT_TIMEOUT_S, None) if final else (None, self._stop)
        ok = _export_within(exporter, data, limit, stop)
        if not ok:
            failures = self._telemetry.export_failures
            failures[exporter.name] = failures.get(exporter.name, 0) + 1
            if self._errors.allow(f"export {exporter.name}"):
                log.warning("exporter %s: export failed (%d so far; logged at most once a minute)",
                            exporter.name, failures[exporter.name])
        return ok


def _export_within(exporter: Exporter, data, timeout_s: float | None,
                   stop: threading.Event | None) -> bool:
    """Export in a helper thread; give up after `timeout_s` or once `stop` is set."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(exporter.export(data)), daemon=True,
                              name=f"export {exporter.name}")
    thread.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while thread.is_alive() and not (stop is not None and stop.is_set()):
        left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
        if left <= 0:
            break
        thread.join(left)
    return bool(result and result[0])


def settle_memory(young_threshold: int = 50_000) -> None:
    """Call once start-up is done: keep the garbage collector off the live series, and
    the C allocator's memory in one arena.

    An interval with 10k series allocates around a million short-lived objects, almost all
    freed by reference counting. With Python's default thresholds (a young collection
    every 700 allocations, a full one every 100 x 10 of those) the collector re-scanned
    every live series several times per interval: about a third of the interval's CPU.
    What start-up made (modules, BTF, configuration) is frozen out of its sight, and a
    young collection runs every `young_threshold` allocations.

    glibc gives each new thread its own malloc arena; the export thread (a new one each
    interval) encodes megabytes of OTLP there, and what it frees stays resident in that
    arena: ~20 MiB more RSS at 10k series. Threads here take turns on the GIL anyway, so
    one arena costs no parallelism.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, 20, 100)
    _GARBAGE.active = True
    _one_malloc_arena()


class _IntervalGarbage:
    """What survives an interval is frozen out of the cyclic collector's sight.

    The collector triggers on allocations minus deallocations, so an interval that
    replaces a million kept objects (every point of 100k changed series) triggers almost
    no young collection, and the one that comes scans everything made since: 100-400 ms
    at 100k series, with nothing to collect. Freezing after each interval keeps the
    young generation to one interval's objects; every FULL_EVERY intervals everything is
    unfrozen and collected once, so cycles (rare here) are still freed.

    Then the C allocator gives back what the interval freed (glibc's malloc_trim): the
    interval's transient objects (the snapshot, deltas, requests being encoded) leave
    free pages all over the heap, and without a trim they stay resident. At 10k series
    that is ~14 MiB of RSS between intervals, for ~1 ms plus ~3-6 ms of page faults when
    the next interval needs the memory again (docs/benchmarks.md, fourth session).

    A failed export is the exception: the SDK's exporters keep the error in a local, a
    cycle that holds the frames down to the interval's Batch. Such an interval is
    collected before it is frozen (only its own objects are not frozen yet), so an
    unreachable backend does not keep a Batch alive per interval.
    """

    FULL_EVERY = 60  # intervals (10 minutes at the default 10 s)

    def __init__(self) -> None:
        self.active = False  # set by settle_memory
        self._intervals = 0

    def after_interval(self, export_failed: bool = False) -> None:
        if not self.active:
            return
        self._intervals += 1
        if self._intervals % self.FULL_EVERY == 0:
            gc.unfreeze()
            gc.collect()
        elif export_failed:
            gc.collect()
        gc.freeze()
        _trim_malloc()


_GARBAGE = _IntervalGarbage()


def _one_malloc_arena() -> None:
    if _MALLOPT is not None:
        _MALLOPT(_M_ARENA_MAX, 1)


def _trim_malloc() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _glibc(name: str):
    """A glibc malloc tuning function, or None where the C library has none (e.g. musl:
    then there is nothing to set or give back this way)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


_M_ARENA_MAX = -8  # glibc malloc.h
_MALLOPT, _MALLOC_TRIM = _glibc("mallopt"), _glibc("malloc_trim")


# -- wiring ---------------------------------------------------------------------------------

def host_resource(config: Config, machine_id: Path = Path("/etc/machine-id"),
                  hostname: Callable[[], str] = socket.gethostname) -> dict[str, object]:
    """host.*, os.type, then OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME on top."""
    resource: dict[str, object] = {"host.name": hostname(), "os.type": "linux"}
    try:
        resource["host.id"] = machine_id.read_text().strip()
    except OSError:
        log.info("no %s: host.id left out", machine_id)
    resource.update(config.resource_attributes)
    if config.service_name:
        resource["service.name"] = config.service_name
    return resource


def agent_resource(host: dict[str, object]) -> dict[str, object]:
    """The agent's own telemetry: the host resource, naming the agent as the service."""
    return {"service.name": "otel-netreceiver", **host, "service.version": __version__}


def collectors_for(enabled_metrics: frozenset[str], loaders: dict[RecordKind, Callable[[], object]]) -> list:
    """A collector per record kind that some enabled metric reads; the others are left out."""
    kinds = {f.kind for name, f in fields.FIELDS.items() if name in enabled_metrics}
    return [loaders[kind]() for kind in RecordKind if kind in kinds and kind in loaders]


def default_loaders(catalog: Catalog, probes, names=None) -> dict[RecordKind, Callable[[], object]]:
    """The kernel collectors with the configured `probes` settings (a ProbesConfig),
    each given its histogram bounds from the catalog.

    `names` (an IP -> domain name cache) is fed by the DNS collector and read by the
    enricher, so outgoing flows carry the name the workload resolved. UDP and DNS share
    one loaded cgroup_skb object (`SkbProbe`): one program per packet direction for both.
    """
    from otel_netreceiver.probes.cgroup_skb import SkbProbe
    from otel_netreceiver.probes.dns import DnsCollector
    from otel_netreceiver.probes.tcp import TcpCollector
    from otel_netreceiver.probes.udp import UdpCollector

    tcp_bounds = {keyword: catalog.metrics[name].bounds
                  for keyword, name in fields.TCP_COLLECTOR_BOUNDS.items()}
    dns_bounds = catalog.metrics[fields.DNS_COLLECTOR_BOUNDS].bounds
    skb = SkbProbe(probes.dns.skb)
    return {
        RecordKind.TCP: lambda: TcpCollector(replace(probes.tcp, **tcp_bounds)),
        RecordKind.UDP: lambda: UdpCollector(probes.udp, probe=skb),
        RecordKind.DNS: lambda: DnsCollector(replace(probes.dns, bounds=dns_bounds), names=names,
                                             probe=skb),
    }


def build(config: Config, catalog: Catalog | None = None,
          loaders: dict[RecordKind, Callable[[], object]] | None = None) -> Agent:
    """The agent a configuration describes (exporters open their endpoints here)."""
    catalog = catalog or load_catalog()
    host = host_resource(config)
    from otel_netreceiver.enrich.dns_names import DnsNames, DnsPeerResolver
    from otel_netreceiver.probes.settings import ProbesConfig
    probes = config.probes or ProbesConfig()
    names = DnsNames(capacity=probes.names_cache_size)
    if loaders is None:
        loaders = default_loaders(catalog, probes, names)
    # (with loaders of its own, e.g. a benchmark's, the agent still resolves names as `run` would)
    enricher = build_enricher(config.enrich, host, peers=[DnsPeerResolver(names)])
    start_ns = time.time_ns()
    pipelines: dict[bool, Pipeline] = {}
    for exporter_config in config.exporters:
        exporter = create(exporter_config)
        if exporter.delta not in pipelines:
            settings = BuildSettings(config.enabled_metrics, config.dropped_attributes,
                                     config.dropped_resource_attributes, exporter.delta)
            builder = MetricsBuilder(catalog, settings, agent_resource(enricher.host_resource), start_ns)
            pipelines[exporter.delta] = Pipeline(builder)
        pipelines[exporter.delta].exporters.append(exporter)
    return Agent(collectors_for(config.enabled_metrics, loaders), enricher,
                 list(pipelines.values()), config.collection_interval_s, config.initial_delay_s)
