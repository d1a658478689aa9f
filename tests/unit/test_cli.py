"""The command line: bad flags, configs and environment give one line and exit 2."""

import os
import subprocess
from pathlib import Path

import pytest

from otel_netreceiver import __version__, cli

ROOT = Path(__file__).resolve().parents[2]
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch):
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


CASES = [
    # (argv, config text or None, environment, text the one line must contain)
    (["--bogus"], None, {}, "unrecognized arguments: --bogus"),
    ([], None, {}, "a command is required"),
    (["launch"], None, {}, "invalid choice: 'launch'"),
    (["run", "--config"], None, {}, "expected one argument"),
    (["run", "--interval", "5"], None, {}, "unrecognized arguments: --interval"),
    (["validate"], None, {}, "the following arguments are required: --config"),
    (["run", "--config", "/nonexistent/c.yaml"], None, {}, "cannot read"),
    (["validate", "--config", "{cfg}"], "collection_interval: soon\n", {}, "collection_interval: bad duration"),
    (["validate", "--config", "{cfg}"], "exporter:\n  otlp: {}\n", {}, "exporter: unknown key"),
    (["validate", "--config", "{cfg}"], "metrics:\n  tcp.nope: {}\n", {}, "unknown metric 'tcp.nope'"),
    (["validate", "--config", "{cfg}"], "exporters:\n  zipkin: {}\n", {}, "unknown exporter type 'zipkin'"),
    (["validate", "--config", "{cfg}"], "exporters:\n  otlp: {endpoint: 'http//x'}\n", {}, "bad endpoint"),
    (["validate", "--config", "{cfg}"], "initial_delay: ${env:D}\n", {"D": "later"}, "initial_delay: bad duration"),
    (["run", "--config", "{cfg}"], "exporters:\n  otlp: {timeout: 5}\n", {}, "exporters.otlp.timeout: bad duration"),
    (["run"], None, {"OTEL_EXPORTER_OTLP_TIMEOUT": "abc"}, "OTEL_EXPORTER_OTLP_TIMEOUT='abc'"),
    (["run"], None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "foo"}, "OTEL_EXPORTER_OTLP_PROTOCOL='foo'"),
    (["run"], None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "not a url"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    (["run"], None, {"OTEL_EXPORTER_OTLP_COMPRESSION": "lz4"}, "OTEL_EXPORTER_OTLP_COMPRESSION"),
    (["run"], None, {"OTEL_EXPORTER_OTLP_HEADERS": "a"}, "OTEL_EXPORTER_OTLP_HEADERS"),
    (["run"], None, {"OTEL_METRIC_EXPORT_INTERVAL": "fast"}, "OTEL_METRIC_EXPORT_INTERVAL"),
    (["run"], None, {"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES"),
    (["run"], None, {"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"),
    (["validate", "--config", "{cfg}"], "collection_interval: 1s\n",
     {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "both"}, "TEMPORALITY_PREFERENCE"),
]


@pytest.mark.parametrize("argv, text, environ, message", CASES)
def test_user_errors_print_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, text, environ, message):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    cfg = write(tmp_path, text) if text is not None else ""
    assert cli.main([a.replace("{cfg}", cfg) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("otel-netreceiver: error: ") and message in lines[0]


@pytest.mark.parametrize("argv, text, environ, message", CASES)
def test_real_process_exit_2_one_line_no_traceback(tmp_path, argv, text, environ, message):
    """The same cases through the installed console script, as a user runs it."""
    cfg = write(tmp_path, text) if text is not None else ""
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "otel-netreceiver"),
                             *[a.replace("{cfg}", cfg) for a in argv]],
                            cwd=ROOT, env={**CLEAN_ENV, **environ}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["--version"])
    assert raised.value.code == 0 and capsys.readouterr().out.strip() == f"otel-netreceiver {__version__}"


def test_validate_ok(tmp_path, capsys):
    assert cli.main(["validate", "--config", write(tmp_path, "exporters:\n  prometheus: {}\n")]) == 0
    assert "valid" in capsys.readouterr().out


def test_sdk_disabled_exits_0_without_loading(monkeypatch, capsys):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setattr(cli.agent, "build", lambda *a: pytest.fail("must not build the agent"))
    assert cli.main(["run"]) == 0
    assert "OTEL_SDK_DISABLED=true" in capsys.readouterr().out


def test_probe_failure_is_one_line_exit_1(monkeypatch, capsys):
    from otel_netreceiver.probes import ProbeLoadError

    def fail(*args):
        raise ProbeLoadError("cannot load tcp.bpf.o: kernel has no BTF")
    monkeypatch.setattr(cli.agent, "build", fail)
    assert cli.main(["run"]) == 1
    assert capsys.readouterr().err == "otel-netreceiver: error: cannot load tcp.bpf.o: kernel has no BTF\n"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.yaml")))
def test_shipped_configs_validate(tmp_path, monkeypatch, name):
    for variable in ("OTLP_CA_FILE", "OTLP_CERT_FILE", "OTLP_KEY_FILE"):
        (tmp_path / variable).write_text("x")
        monkeypatch.setenv(variable, str(tmp_path / variable))
    assert cli.main(["validate", "--config", str(ROOT / "config" / name)]) == 0
