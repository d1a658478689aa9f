"""The ctypes binding's pure helpers (no root, no BPF)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct

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


@contextlib.contextmanager
def _hash_map(entries: dict[int, tuple[int, int]], max_entries: int):
    """A fresh BPF hash map (u64 key -> two u64) holding `entries`; closed afterwards."""
    fd = libbpf.check("bpf_map_create", libbpf.lib().bpf_map_create(
        libbpf.BPF_MAP_TYPE_HASH, b"nrc3_batch", 8, 16, max_entries, None))
    try:
        for key, (low, high) in entries.items():
            libbpf.update(fd, ctypes.c_uint64(key), (ctypes.c_uint64 * 2)(low, high))
        yield fd
    finally:
        os.close(fd)


def _pairs(keys: bytes, values: bytes) -> dict[int, tuple[int, int]]:
    return {key: value for (key,), value in zip(struct.iter_unpack("<Q", keys),
                                                 struct.iter_unpack("<QQ", values))}


@pytest.mark.kernel
@pytest.mark.parametrize("count", [0, 1, 4096, 4500])  # reads go in chunks of 4096
def test_read_batch_bytes_reads_then_drains_every_entry(count):
    entries = {7 * i + 1: (i, 1_000_000_007 * i) for i in range(count)}
    with _hash_map(entries, max_entries=5000) as fd:
        keys, values = libbpf.read_batch_bytes(fd, 8, 16, 5000)
        assert (len(keys), len(values)) == (8 * count, 16 * count)
        assert _pairs(keys, values) == entries
        assert _pairs(*libbpf.read_batch_bytes(fd, 8, 16, 5000, delete=True)) == entries
        assert libbpf.read_batch_bytes(fd, 8, 16, 5000) == (b"", b"")


@pytest.mark.kernel
def test_read_batch_gives_ctypes_pairs():
    entries = {3: (4, 5), 2**64 - 1: (0, 2**64 - 1)}
    with _hash_map(entries, max_entries=16) as fd:
        pairs = libbpf.read_batch(fd, ctypes.c_uint64, ctypes.c_uint64 * 2, 16)
    assert {key.value: tuple(value) for key, value in pairs} == entries


@pytest.mark.kernel
def test_prog_info_layout_matches_the_running_kernel():
    """recursion_misses is read at a fixed offset of struct bpf_prog_info: the kernel's
    BTF must put it there (and the struct must be at least as large as we ask for)."""
    import re
    import subprocess

    dump = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux",
                           "format", "raw"], capture_output=True, text=True, check=True).stdout
    body = dump[dump.index("STRUCT 'bpf_prog_info'"):]
    size = int(re.search(r"size=(\d+)", body).group(1))
    offset = int(re.search(r"'recursion_misses' type_id=\d+ bits_offset=(\d+)", body).group(1))
    assert offset == 8 * libbpf.PROG_INFO_RECURSION_MISSES
    assert size >= libbpf.PROG_INFO_SIZE
