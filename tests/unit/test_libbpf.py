"""The ctypes binding's pure helpers (no root, no BPF)."""

from __future__ import annotations

import pytest

from otel_netreceiver.probes import libbpf


@pytest.mark.parametrize("text, count", [("0-1\n", 2), ("0\n", 1), ("0-3,5,7-8\n", 7)])
def test_possible_cpus(tmp_path, text, count):
    path = tmp_path / "possible"
    path.write_text(text)
    assert libbpf.possible_cpus(str(path)) == count


def test_log_callback_formats_libbpf_messages():
    """libbpf's printf-style log reaches Python formatted (vsnprintf on its va_list):
    opening a missing object makes libbpf log the path."""
    captured = []

    def record(level, fmt, va_list):
        captured.append(libbpf.format_va(fmt, va_list))
        return 0

    callback = libbpf.PRINT_FN(record)
    libbpf.lib().libbpf_set_print(callback)
    try:
        with pytest.raises(OSError):
            libbpf.BpfObject("/nonexistent/x.bpf.o")
    finally:
        libbpf._route_log(libbpf.lib())
    assert any("/nonexistent/x.bpf.o" in line for line in captured), captured


def test_check_raises_with_call_and_errno():
    with pytest.raises(libbpf.LibbpfError, match="bpf_map_update_elem: No such file"):
        libbpf.check("bpf_map_update_elem", -2)
    assert libbpf.check("ok", 3) == 3
