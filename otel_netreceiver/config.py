"""Configuration: one YAML file shaped like a Collector component's, plus OTEL_* variables.

An explicit file setting wins over the environment; the environment fills what the file
leaves out; defaults fill the rest. Every problem raises `ConfigError` with one line that
names the key or variable (the command line prints it and exits 2). The shape is
documented in docs/configuration.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import unquote, urlparse

import yaml

from otel_netreceiver.enrich import EnrichConfig
from otel_netreceiver.metrics.catalog import Catalog
from otel_netreceiver.metrics.catalog import load as load_catalog

if TYPE_CHECKING:  # probes.settings imports this module
    from otel_netreceiver.probes.settings import ProbesConfig

EXPORTER_TYPES = ("otlp", "otlphttp", "debug", "prometheus")
PROTOCOLS = {"grpc": "otlp", "http/protobuf": "otlphttp"}
COMPRESSIONS = ("none", "gzip", "deflate")
LOG_LEVELS = ("debug", "info", "warn", "warning", "error")
LOG_ENCODINGS = ("console", "json")
TEMPORALITIES = {"cumulative": False, "delta": True, "lowmemory": True}
VERBOSITIES = ("basic", "normal", "detailed")
DEFAULT_PROMETHEUS = "127.0.0.1:9464"


class ConfigError(ValueError):
    """A configuration problem; str() is one line naming the key or variable."""


@dataclass(frozen=True)
class TlsSettings:
    insecure: bool | None = None  # None: decided by the endpoint's scheme
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class ExporterConfig:
    """One exporter instance; `name` is the key in the file (`otlp`, `otlp/backup`)."""

    name: str
    type: str
    endpoint: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    tls: TlsSettings = TlsSettings()
    compression: str = "none"
    timeout_s: float = 10.0
    delta: bool = False
    verbosity: str = "normal"


@dataclass(frozen=True)
class Config:
    collection_interval_s: float = 10.0
    initial_delay_s: float = 1.0
    enabled_metrics: frozenset[str] = frozenset()
    dropped_attributes: frozenset[str] = frozenset()
    dropped_resource_attributes: frozenset[str] = frozenset()
    exporters: tuple[ExporterConfig, ...] = ()
    log_level: str = "info"
    log_encoding: str = "console"
    resource_attributes: dict[str, str] = field(default_factory=dict)
    service_name: str | None = None
    sdk_disabled: bool = False
    enrich: EnrichConfig = field(default_factory=EnrichConfig)
    probes: ProbesConfig | None = None  # None: the collectors' own defaults


# -- entry points ------------------------------------------------------------------------

def load(path: str | Path | None, environ: Mapping[str, str] | None = None,
         catalog: Catalog | None = None) -> Config:
    """Read, expand, validate and resolve the configuration file (None: defaults only)."""
    environ = os.environ if environ is None else environ
    document = _read(Path(path)) if path else {}
    document = expand(document, environ)
    return resolve(document, Env(environ), catalog or load_catalog())


def _read(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(err, 'problem', err)}") from err
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return document


# -- ${env:VAR} expansion, as the Collector does --------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_REFERENCE = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.S)


def expand(value: Any, environ: Mapping[str, str]) -> Any:
    """Replace `${env:NAME}` / `${env:NAME:-default}` in every string; `$$` is a literal `$`."""
    if isinstance(value, dict):
        return {k: expand(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, environ) for v in value]
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    text = _REFERENCE.sub(lambda m: _substitute(m, environ), value)
    if whole and whole.group(0) != "$$":
        parsed = yaml.safe_load(text) if text.strip() else text
        return parsed if isinstance(parsed, (str, int, float, bool)) else text
    return text


def _substitute(match: re.Match, environ: Mapping[str, str]) -> str:
    if match.group(0) == "$$":
        return "$"
    reference = _ENV_REFERENCE.fullmatch(match.group(1))
    if not reference:
        raise ConfigError(f"unsupported reference {match.group(0)!r}: use ${{env:NAME}}")
    name, default = reference.groups()
    return environ.get(name) or (default or "")


# -- OTEL_* environment ---------------------------------------------------------------------

class Env:
    """The standard OTEL_* variables, each parsed and checked; metric-specific ones win."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.sdk_disabled = self._bool("OTEL_SDK_DISABLED")
        self.insecure = self._pick("INSECURE", _boolean)
        self.protocol = self._pick("PROTOCOL", _choice(tuple(PROTOCOLS)))
        self.headers = self._pick("HEADERS", _headers)
        self.timeout_s = self._pick("TIMEOUT", _milliseconds)
        self.compression = self._pick("COMPRESSION", _choice(("none", "gzip")))
        self.ca_file = self._pick("CERTIFICATE", _existing_file)
        self.cert_file = self._pick("CLIENT_CERTIFICATE", _existing_file)
        self.key_file = self._pick("CLIENT_KEY", _existing_file)
        self.temporality = self._parse("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                                       _choice(tuple(TEMPORALITIES)))
        self.interval_s = self._parse("OTEL_METRIC_EXPORT_INTERVAL", _milliseconds)
        self.resource = self._parse("OTEL_RESOURCE_ATTRIBUTES", _key_values) or {}
        self.service_name = self._environ.get("OTEL_SERVICE_NAME") or None
        self.export_timeout_s = self._parse("OTEL_METRIC_EXPORT_TIMEOUT", _milliseconds)
        self.metrics_exporter = self._parse("OTEL_METRICS_EXPORTER", _exporter_names)
        self.prometheus_host = self._parse("OTEL_EXPORTER_PROMETHEUS_HOST", _hostname)
        self.prometheus_port = self._parse("OTEL_EXPORTER_PROMETHEUS_PORT", _port)
        self.log_level = self._parse("OTEL_LOG_LEVEL", _choice(LOG_LEVELS))
        self.metrics_endpoint = self._parse("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", _url)
        self.base_endpoint = self._parse("OTEL_EXPORTER_OTLP_ENDPOINT", _url)

    def endpoint_for(self, kind: str) -> str | None:
        """The endpoint the environment gives an exporter of `kind`, in its own form."""
        if self.metrics_endpoint:
            return self.metrics_endpoint
        if self.base_endpoint and kind == "otlphttp":
            return self.base_endpoint.rstrip("/") + "/v1/metrics"
        return self.base_endpoint

    def _bool(self, name: str) -> bool | None:
        return self._parse(name, _boolean)

    def _pick(self, suffix: str, parser: Callable[[str], Any]) -> Any:
        specific = self._parse(f"OTEL_EXPORTER_OTLP_METRICS_{suffix}", parser)
        return specific if specific is not None else self._parse(f"OTEL_EXPORTER_OTLP_{suffix}", parser)

    def _parse(self, name: str, parser: Callable[[str], Any]) -> Any:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return None
        try:
            return parser(raw)
        except ValueError as err:
            raise ConfigError(f"environment variable {name}={raw!r}: {err}") from None


ENV_EXPORTERS = ("otlp", "prometheus", "console", "none")


def _exporter_names(raw: str) -> tuple[str, ...]:
    """OTEL_METRICS_EXPORTER: a comma-separated list of otlp, prometheus, console, none."""
    names = tuple(n.strip().lower() for n in raw.split(",") if n.strip())
    for name in names:
        if name not in ENV_EXPORTERS:
            raise ValueError(f"unknown exporter {name!r} (known: {', '.join(ENV_EXPORTERS)})")
    return names


def _hostname(raw: str) -> str:
    if not urlparse(f"//{raw}").hostname:
        raise ValueError("expected a host name or address")
    return raw


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError("expected a port number between 1 and 65535")
    return int(raw)


def _boolean(raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise ValueError("expected true or false")
    return raw.lower() == "true"


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return raw.lower()
    return parse


def _milliseconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of milliseconds") from None
    if value <= 0:
        raise ValueError("expected a positive number of milliseconds")
    return value / 1000


def _key_values(raw: str) -> dict[str, str]:
    """`k1=v1,k2=v2` with percent-encoded values (W3C baggage style)."""
    pairs = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value pairs separated by commas, got {item!r}")
        pairs[key.strip()] = unquote(value.strip())
    return pairs


def _headers(raw: str) -> dict[str, str]:
    return {k.lower(): v for k, v in _key_values(raw).items()}


def _existing_file(raw: str) -> str:
    if not Path(raw).is_file():
        raise ValueError("no such file")
    return raw


def _url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("expected a URL like http://collector:4317")
    _port_of(parsed)
    return raw


def _port_of(parsed) -> int | None:
    try:
        return parsed.port
    except ValueError:
        raise ValueError("port is not a number between 0 and 65535") from None


# -- the file's sections ---------------------------------------------------------------------

class _Section:
    """A mapping being read key by key; `done()` rejects the keys nobody asked for."""

    def __init__(self, value: Any, where: str) -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where or 'config'}: expected a mapping, got {_kind(value)}")
        self._value, self._where, self._seen = value, where, set()

    def path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def get(self, key: str, parser: Callable[[Any, str], Any], default: Any = None) -> Any:
        self._seen.add(key)
        if key not in self._value or self._value[key] is None:
            return default
        return parser(self._value[key], self.path(key))

    def keys(self) -> list[str]:
        self._seen.update(self._value)
        return list(self._value)

    def done(self) -> None:
        unknown = sorted(str(k) for k in set(self._value) - self._seen)
        if unknown:
            allowed = ", ".join(sorted(self._seen)) or "none"
            raise ConfigError(f"{self.path(unknown[0])}: unknown key (allowed here: {allowed})")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(value: Any, where: str, allow_zero: bool = False) -> float:
    """A Go-style duration (`10s`, `500ms`, `1m30s`) in seconds; positive unless `allow_zero`."""
    text = str(value).strip() if isinstance(value, str) else None
    if not text or not re.fullmatch(f"(?:{_DURATION.pattern})+", text):
        raise ConfigError(f"{where}: bad duration {value!r} (expected e.g. 10s, 500ms, 1m)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text))
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(f"{where}: duration must be greater than zero")
    return seconds


def mapping(value: Any, where: str, known: set[str]) -> dict:
    """A mapping whose keys are all in `known`; None is an empty mapping."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(str(key) for key in set(value) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def string(value: Any, where: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected a string, got {_kind(value)}")
    return str(value)


def one_of(allowed) -> Callable[[Any, str], str]:
    def parse(value: Any, where: str) -> str:
        text = string(value, where).lower()
        if text not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
        return text
    return parse


def existing_file(value: Any, where: str) -> str:
    path = string(value, where)
    if not Path(path).is_file():
        raise ConfigError(f"{where}: no such file {path!r}")
    return path


def string_map(value: Any, where: str) -> dict[str, str]:
    section = _Section(value, where)
    return {str(key): string(section.get(key, lambda v, w: v), section.path(key))
            for key in section.keys()}


# -- resolution ------------------------------------------------------------------------------

def resolve(document: dict[str, Any], env: Env, catalog: Catalog) -> Config:
    """Validate the expanded document and merge it with the environment."""
    top = _Section(document, "")
    interval = top.get("collection_interval", duration, env.interval_s or 10.0)
    initial_delay = top.get("initial_delay", lambda v, w: duration(v, w, allow_zero=True), 1.0)
    enabled = _enabled_metrics(top.get("metrics", _toggles(set(catalog.metrics), "metric"), {}), catalog)
    dropped = top.get("attributes", _toggles(catalog.attribute_names(), "attribute"), {})
    dropped_resource = top.get("resource_attributes", _toggles(None, "resource attribute"), {})
    exporters = top.get("exporters", lambda v, w: _exporters(v, w, env), None)
    level, encoding = top.get("service", lambda v, w: _service(v, w, env), (env.log_level or "info", "console"))
    enrich = top.get("enrich", _enrich, EnrichConfig())
    probes = top.get("probes", _probes, None)
    top.done()
    return Config(
        collection_interval_s=interval,
        initial_delay_s=initial_delay,
        enabled_metrics=enabled,
        dropped_attributes=frozenset(k for k, on in dropped.items() if not on),
        dropped_resource_attributes=_dropped_resource(dropped_resource, catalog),
        exporters=exporters if exporters is not None else _exporters_from_env(env),
        log_level=level,
        log_encoding=encoding,
        resource_attributes=env.resource,
        service_name=env.service_name,
        sdk_disabled=bool(env.sdk_disabled),
        enrich=enrich,
        probes=probes,
    )


def _toggles(known: set[str] | None, what: str) -> Callable[[Any, str], dict[str, bool]]:
    """`name: {enabled: bool}` entries; names must be in `known` (None: any name)."""
    def parse(value: Any, where: str) -> dict[str, bool]:
        section, out = _Section(value, where), {}
        for name in section.keys():
            if known is not None and name not in known:
                raise ConfigError(f"{section.path(name)}: unknown {what} {name!r}")
            entry = _Section(section.get(name, lambda v, w: v, {}), section.path(name))
            out[name] = entry.get("enabled", boolean, True)
            entry.done()
        return out
    return parse


def _enabled_metrics(toggles: dict[str, bool], catalog: Catalog) -> frozenset[str]:
    return frozenset(name for name, m in catalog.metrics.items() if toggles.get(name, m.enabled))


def _dropped_resource(toggles: dict[str, bool], catalog: Catalog) -> frozenset[str]:
    defaults = {n for n, a in catalog.resource_attributes.items() if not a.enabled}
    enabled = {n for n, on in toggles.items() if on}
    return frozenset((defaults | {n for n, on in toggles.items() if not on}) - enabled)


def _service(value: Any, where: str, env: Env) -> tuple[str, str]:
    service = _Section(value, where)
    telemetry = _Section(service.get("telemetry", lambda v, w: v, {}), service.path("telemetry"))
    logs = _Section(telemetry.get("logs", lambda v, w: v, {}), telemetry.path("logs"))
    level = logs.get("level", one_of(LOG_LEVELS), env.log_level or "info")
    encoding = logs.get("encoding", one_of(LOG_ENCODINGS), "console")
    for section in (logs, telemetry, service):
        section.done()
    return level, encoding


def _enrich(value: Any, where: str) -> EnrichConfig:
    """`enrich:` is parsed by enrichment's own reader (docs/resources.md)."""
    from otel_netreceiver.enrich.settings import enrich_config  # it imports this module
    return enrich_config(value, where)


def _probes(value: Any, where: str):
    """`probes:` is parsed by the probes' own reader (map sizes, DNS capture)."""
    from otel_netreceiver.probes.settings import probes_config  # it imports this module
    return probes_config(value, where)


def _exporters(value: Any, where: str, env: Env) -> tuple[ExporterConfig, ...]:
    section = _Section(value, where)
    names = section.keys()
    if not names:
        raise ConfigError(f"{where}: no exporter configured (remove the key to use the default)")
    return tuple(_exporter(str(name), section.get(name, lambda v, w: v, {}), section.path(name), env)
                 for name in names)


def _exporter(name: str, value: Any, where: str, env: Env) -> ExporterConfig:
    kind = name.split("/", 1)[0]
    if kind not in EXPORTER_TYPES:
        raise ConfigError(f"{where}: unknown exporter type {kind!r} (known: {', '.join(EXPORTER_TYPES)})")
    section = _Section(value, where)
    exporter = _EXPORTER_READERS[kind](name, section, env)
    section.done()
    return exporter


def _otlp(name: str, section: _Section, env: Env, kind: str = "otlp") -> ExporterConfig:
    endpoint = section.get("endpoint", _endpoint_parser(kind), None)
    if kind == "otlphttp":
        if endpoint:
            endpoint = endpoint.rstrip("/") + "/v1/metrics"
        endpoint = section.get("metrics_endpoint", _endpoint_parser(kind), endpoint)
    endpoint = endpoint or env.endpoint_for(kind) or _DEFAULT_ENDPOINTS[kind]
    tls = section.get("tls", lambda v, w: _tls(v, w, env), None) or _tls({}, section.path("tls"), env)
    return ExporterConfig(
        name=name,
        type=kind,
        endpoint=endpoint,
        headers={**(env.headers or {}), **section.get("headers", string_map, {})},
        tls=tls,
        compression=section.get("compression", one_of(COMPRESSIONS), env.compression or "none"),
        timeout_s=section.get("timeout", duration, env.timeout_s or env.export_timeout_s or 10.0),
        delta=section.get("temporality", _temporality, TEMPORALITIES[env.temporality or "cumulative"]),
    )


def _otlphttp(name: str, section: _Section, env: Env) -> ExporterConfig:
    return _otlp(name, section, env, "otlphttp")


def _debug(name: str, section: _Section, env: Env) -> ExporterConfig:
    return ExporterConfig(
        name=name,
        type="debug",
        verbosity=section.get("verbosity", one_of(VERBOSITIES), "normal"),
        delta=section.get("temporality", _temporality, TEMPORALITIES[env.temporality or "cumulative"]),
    )


def _prometheus(name: str, section: _Section, env: Env) -> ExporterConfig:
    host, _, port = DEFAULT_PROMETHEUS.rpartition(":")
    default = f"{env.prometheus_host or host}:{env.prometheus_port or port}"
    endpoint = section.get("endpoint", _host_port, default)
    return ExporterConfig(name=name, type="prometheus", endpoint=endpoint)


_EXPORTER_READERS = {"otlp": _otlp, "otlphttp": _otlphttp, "debug": _debug, "prometheus": _prometheus}
_DEFAULT_ENDPOINTS = {"otlp": "http://localhost:4317", "otlphttp": "http://localhost:4318/v1/metrics"}


def _temporality(value: Any, where: str) -> bool:
    return TEMPORALITIES[one_of(tuple(TEMPORALITIES))(value, where)]


def _tls(value: Any, where: str, env: Env) -> TlsSettings:
    section = _Section(value, where)
    tls = TlsSettings(
        insecure=section.get("insecure", boolean, env.insecure),
        ca_file=section.get("ca_file", existing_file, env.ca_file),
        cert_file=section.get("cert_file", existing_file, env.cert_file),
        key_file=section.get("key_file", existing_file, env.key_file),
    )
    section.done()
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError(f"{where}: cert_file and key_file go together (client certificate)")
    return tls


def _endpoint_parser(kind: str) -> Callable[[Any, str], str]:
    """gRPC takes `host:port` or a URL; HTTP takes a URL."""
    def parse(value: Any, where: str) -> str:
        text = string(value, where).strip()
        if kind == "otlp" and "://" not in text:
            return _host_port(text, where)
        try:
            return _url(text)
        except ValueError as err:
            raise ConfigError(f"{where}: bad endpoint {text!r}: {err}") from None
    return parse


def _host_port(value: Any, where: str) -> str:
    text = string(value, where).strip()
    parsed = urlparse(f"//{text}")
    try:
        port = _port_of(parsed)
    except ValueError as err:
        raise ConfigError(f"{where}: bad endpoint {text!r}: {err}") from None
    if not parsed.hostname or port is None or parsed.path:
        raise ConfigError(f"{where}: bad endpoint {text!r}: expected host:port")
    return text


def _exporters_from_env(env: Env) -> tuple[ExporterConfig, ...]:
    """No exporters in the file: OTEL_METRICS_EXPORTER if set; else OTLP when the
    environment names an endpoint; else debug."""
    names = env.metrics_exporter
    if names is None:
        names = ("otlp",) if env.metrics_endpoint or env.base_endpoint else ("console",)
    return tuple(_env_exporter(name, env) for name in names if name != "none")


def _env_exporter(name: str, env: Env) -> ExporterConfig:
    if name == "console":
        return _debug("debug", _Section({}, "exporters.debug"), env)
    if name == "prometheus":
        return _prometheus("prometheus", _Section({}, "exporters.prometheus"), env)
    kind = PROTOCOLS[env.protocol or "grpc"]
    return _otlp(kind, _Section({}, f"exporters.{kind}"), env, kind)
