"""Generates docs/metrics.md from metadata.yaml.

    .venv/bin/python -m otel_netreceiver.metrics.docs > docs/metrics.md

tests/unit/test_docs.py fails when the committed file and the catalog disagree.
"""

from __future__ import annotations

import sys

from otel_netreceiver.export.prometheus import metric_name
from otel_netreceiver.metrics.catalog import Catalog, MetricDef, load

HEADER = """# Metrics

<!-- Generated from otel_netreceiver/metadata.yaml by
     `python -m otel_netreceiver.metrics.docs > docs/metrics.md`; do not edit. -->

Flow metrics are under the instrumentation scope `{flows}`, one Resource per local
workload (a container, or the host for processes outside containers). The agent's own
telemetry is under the scope `{agent}` on the host resource. Metrics and attributes can
be turned off in the configuration (see configuration.md).
"""


def render(catalog: Catalog) -> str:
    parts = [HEADER.format(flows=catalog.flows_scope, agent=catalog.agent_scope)]
    parts.append(_summary(catalog))
    parts.extend(_metric(m) for m in catalog.metrics.values())
    parts.append(_attributes(catalog))
    parts.append(_resource_attributes(catalog))
    return "\n".join(parts)


def _kind(metric: MetricDef) -> str:
    if metric.kind == "sum":
        return f"sum ({'monotonic' if metric.monotonic else 'not monotonic'}, {metric.value_type})"
    return f"{metric.kind} ({metric.value_type})"


def _summary(catalog: Catalog) -> str:
    lines = ["| metric | kind | unit | enabled | Prometheus name |", "|---|---|---|---|---|"]
    for m in catalog.metrics.values():
        prom = metric_name(m.name, m.unit, m.kind, m.monotonic) + ("_total" if m.monotonic else "")
        lines.append(f"| [`{m.name}`](#{m.name.replace('.', '')}) | {_kind(m)} | `{m.unit}` | "
                     f"{str(m.enabled).lower()} | `{prom}` |")
    return "\n".join(lines) + "\n"


def _metric(m: MetricDef) -> str:
    lines = [f"## {m.name}", "", m.description, "",
             f"- kind: {_kind(m)}", f"- unit: `{m.unit}`", f"- enabled by default: {str(m.enabled).lower()}"]
    if m.bounds:
        lines.append(f"- bucket boundaries (s): {', '.join(f'{b:g}' for b in m.bounds)}")
    if m.attributes:
        lines += ["", "| attribute | type | values | description |", "|---|---|---|---|"]
        lines += [_attribute_row(a) for a in m.attributes]
    return "\n".join(lines) + "\n"


def _attributes(catalog: Catalog) -> str:
    lines = ["## Data point attributes", "", "| attribute | type | values | description |",
             "|---|---|---|---|"]
    lines += [_attribute_row(a) for a in catalog.attributes.values()]
    return "\n".join(lines) + "\n"


def _attribute_row(a) -> str:
    return f"| `{a.name}` | {a.type} | {', '.join(a.enum) or 'any'} | {a.description} |"


def _resource_attributes(catalog: Catalog) -> str:
    lines = ["## Resource attributes", "", "| attribute | type | enabled | description |",
             "|---|---|---|---|"]
    lines += [f"| `{a.name}` | {a.type} | {str(a.enabled).lower()} | {a.description} |"
              for a in catalog.resource_attributes.values()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(load()))
