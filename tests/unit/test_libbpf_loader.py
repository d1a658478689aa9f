"""Loader diagnostics: one line naming what is missing (no root needed)."""

from __future__ import annotations

import errno

import pytest

from otel_netreceiver.probes import loader
from otel_netreceiver.probes.loader import Loader, ProbeLoadError

ROOT = "CapEff:\t000001ffffffffff\n"


def status(*bits: int) -> str:
    return f"Name:\tx\nCapEff:\t{sum(1 << b for b in bits):016x}\n"


@pytest.mark.parametrize("text, missing", [
    (ROOT, []),
    (status(21), []),                              # CAP_SYS_ADMIN alone
    (status(38, 39), []),                          # CAP_BPF + CAP_PERFMON
    (status(39), ["CAP_PERFMON", "CAP_SYS_ADMIN"]),
    (status(), ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"]),
])
def test_missing_capabilities(text, missing):
    assert loader.missing_capabilities(text) == missing


def test_diagnose_names_capabilities_first():
    line = loader.diagnose("tcp.bpf.o", OSError(errno.EPERM, "x"), status())
    assert "not root" in line and "CAP_BPF" in line and "\n" not in line


def test_diagnose_names_missing_btf(monkeypatch, tmp_path):
    monkeypatch.setattr(loader, "VMLINUX_BTF", tmp_path / "vmlinux")
    line = loader.diagnose("tcp.bpf.o", OSError(errno.EINVAL, "x"), ROOT)
    assert "no BTF" in line


def test_unbuilt_object_says_make_bpf(tmp_path):
    with pytest.raises(ProbeLoadError, match="make bpf") as caught:
        with Loader(tmp_path / "nothing.bpf.o"):
            pass
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("section, exists, expected", [
    ("tp_btf/no_such_tracepoint", False, "tracepoint no_such_tracepoint not present"),
    ("iter/tcp", True, "cannot attach iter/tcp: "),
])
def test_attach_reason(monkeypatch, section, exists, expected):
    monkeypatch.setattr(loader, "tracepoint_exists", lambda name: exists)
    assert expected in loader.attach_reason(section, OSError(errno.ENOENT, "x"))
