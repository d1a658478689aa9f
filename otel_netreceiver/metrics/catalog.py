"""The metric catalog: metadata.yaml read into typed, immutable definitions.

Everything that needs a metric name, unit, kind or attribute list reads it from here:
the metrics builder, the configuration validator and the docs generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class AttributeDef:
    """A data point attribute; `name` is what is exported (`name_override` applied)."""

    key: str
    name: str
    description: str
    type: str
    enum: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResourceAttributeDef:
    name: str
    description: str
    type: str
    enabled: bool
    enum: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One catalog metric. `kind` is sum, gauge or histogram."""

    name: str
    description: str
    unit: str
    kind: str
    enabled: bool
    value_type: str = "int"
    monotonic: bool = False
    bounds: tuple[float, ...] = ()
    attributes: tuple[AttributeDef, ...] = ()


@dataclass(frozen=True, slots=True)
class Catalog:
    flows_scope: str
    agent_scope: str
    metrics: dict[str, MetricDef]
    attributes: dict[str, AttributeDef]
    resource_attributes: dict[str, ResourceAttributeDef]

    def attribute_names(self) -> set[str]:
        """Every exported data point attribute name."""
        return {a.name for a in self.attributes.values()}


def parse(document: dict[str, Any]) -> Catalog:
    """Build a Catalog from the parsed metadata.yaml document."""
    attributes = {key: _attribute(key, spec) for key, spec in document["attributes"].items()}
    metrics = {name: _metric(name, spec, attributes) for name, spec in document["metrics"].items()}
    resource = {
        name: ResourceAttributeDef(name, spec["description"], spec["type"], spec["enabled"],
                                   tuple(spec.get("enum", ())))
        for name, spec in document["resource_attributes"].items()
    }
    scopes = document["scopes"]
    return Catalog(scopes["flows"], scopes["agent"], metrics, attributes, resource)


@lru_cache(maxsize=1)
def load() -> Catalog:
    """The catalog shipped with the package."""
    text = resources.files("otel_netreceiver").joinpath("metadata.yaml").read_text()
    return parse(yaml.safe_load(text))


def _attribute(key: str, spec: dict[str, Any]) -> AttributeDef:
    return AttributeDef(key, spec.get("name_override", key), spec["description"],
                        spec["type"], tuple(spec.get("enum", ())))


def _metric(name: str, spec: dict[str, Any], attributes: dict[str, AttributeDef]) -> MetricDef:
    kind = next(k for k in ("sum", "gauge", "histogram") if k in spec)
    body = spec[kind]
    return MetricDef(
        name=name,
        description=spec["description"],
        unit=spec["unit"],
        kind=kind,
        enabled=spec["enabled"],
        value_type=body.get("value_type", "double" if kind == "histogram" else "int"),
        monotonic=body.get("monotonic", False),
        bounds=tuple(float(b) for b in body.get("bucket_boundaries", ())),
        attributes=tuple(attributes[a] for a in spec.get("attributes", ())),
    )
