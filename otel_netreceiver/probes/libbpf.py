"""A thin ctypes binding to the system libbpf (libbpf.so.1, Debian libbpf1 >= 1.1).

Only what the probes need: open an object, write its `const volatile` globals, size its
maps, load, attach, batch-read maps, create iterators and poll ring buffers. libbpf's own
log lines are routed into Python logging. Errors raise `LibbpfError` with the call that
failed and the errno text; `loader.py` turns them into one-line ProbeLoadError messages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_int, c_size_t, c_uint,
                    c_uint32, c_uint64, c_void_p)

log = logging.getLogger(__name__)

LIBRARY = "libbpf.so.1"

# enum bpf_map_type / libbpf_print_level / BTF kinds (uapi, stable)
BPF_MAP_TYPE_HASH = 1
BPF_ANY = 0
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2
BTF_KIND_STRUCT = 4
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15


class LibbpfError(OSError):
    """A libbpf call failed; str() names the call and the errno."""

    def __init__(self, call: str, err: int):
        super().__init__(err, f"{call}: {os.strerror(err)}")
        self.call = call


class LibbpfMissing(RuntimeError):
    """libbpf.so.1 could not be loaded."""


class BatchOpts(Structure):
    """struct bpf_map_batch_opts (libbpf >= 0.0.7)."""

    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class _BtfType(Structure):
    """struct btf_type header: name_off, info (vlen | kind << 24), size-or-type."""

    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size", c_uint32)]


class _BtfMember(Structure):
    _fields_ = [("name_off", c_uint32), ("type", c_uint32), ("offset", c_uint32)]


class _BtfVarSecinfo(Structure):
    _fields_ = [("type", c_uint32), ("offset", c_uint32), ("size", c_uint32)]


PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
RINGBUF_SAMPLE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)

# name -> (restype, argtypes); pointers to opaque libbpf objects are c_void_p
_SIGNATURES = {
    "libbpf_set_print": (c_void_p, [PRINT_FN]),
    "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__btf": (c_void_p, [c_void_p]),
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
    "bpf_map__name": (c_char_p, [c_void_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
    "bpf_map__max_entries": (c_uint32, [c_void_p]),
    "bpf_map__initial_value": (c_void_p, [c_void_p, POINTER(c_size_t)]),
    "bpf_map__key_size": (c_uint32, [c_void_p]),
    "bpf_map__value_size": (c_uint32, [c_void_p]),
    "bpf_program__name": (c_char_p, [c_void_p]),
    "bpf_program__section_name": (c_char_p, [c_void_p]),
    "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
    "bpf_program__attach": (c_void_p, [c_void_p]),
    "bpf_program__attach_cgroup": (c_void_p, [c_void_p, c_int]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_link__destroy": (c_int, [c_void_p]),
    "bpf_link__fd": (c_int, [c_void_p]),
    "bpf_iter_create": (c_int, [c_int]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_create": (c_int, [c_int, c_char_p, c_uint32, c_uint32, c_uint32, c_void_p]),
    "bpf_map_lookup_batch": (c_int, [c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                                     POINTER(c_uint32), POINTER(BatchOpts)]),
    "bpf_map_lookup_and_delete_batch": (c_int, [c_int, c_void_p, c_void_p, c_void_p,
                                                c_void_p, POINTER(c_uint32),
                                                POINTER(BatchOpts)]),
    "ring_buffer__new": (c_void_p, [c_int, RINGBUF_SAMPLE_FN, c_void_p, c_void_p]),
    "ring_buffer__poll": (c_int, [c_void_p, c_int]),
    "ring_buffer__consume": (c_int, [c_void_p]),
    "ring_buffer__free": (None, [c_void_p]),
    "btf__parse_elf": (c_void_p, [c_char_p, c_void_p]),
    "btf__free": (None, [c_void_p]),
    "btf__find_by_name_kind": (c_int, [c_void_p, c_char_p, c_uint]),
    "btf__type_by_id": (POINTER(_BtfType), [c_void_p, c_uint32]),
    "btf__name_by_offset": (c_char_p, [c_void_p, c_uint32]),
}

_lib: ctypes.CDLL | None = None
_print_fn = None  # keep the C callback alive for the process lifetime


def lib() -> ctypes.CDLL:
    """The loaded libbpf, with signatures declared and its log routed to Python."""
    global _lib
    if _lib is None:
        try:
            handle = ctypes.CDLL(LIBRARY, use_errno=True)
        except OSError as err:
            raise LibbpfMissing(f"{LIBRARY} not found (install the libbpf1 package)") from err
        for name, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(handle, name)
            func.restype, func.argtypes = restype, argtypes
        _lib = handle
        _route_log(handle)
    return _lib


# --- logging ---------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_libc.vsnprintf.restype = c_int
_LEVELS = {LIBBPF_WARN: logging.WARNING, LIBBPF_INFO: logging.INFO,
           LIBBPF_DEBUG: logging.DEBUG}
_libbpf_log = logging.getLogger(__name__ + ".native")


def format_va(fmt: bytes, va_list: int) -> str:
    """Format a C printf format string and va_list with the C library's vsnprintf."""
    # one call can carry a whole verifier log; a va_list cannot be read twice (no va_copy
    # from ctypes), so the buffer is sized for that once and for all
    buf = ctypes.create_string_buffer(1 << 20)
    _libc.vsnprintf(buf, len(buf), fmt, va_list)
    return buf.value.decode(errors="replace").rstrip("\n")


def _route_log(handle: ctypes.CDLL) -> None:
    global _print_fn

    def _print(level: int, fmt: bytes, va_list: int) -> int:
        py_level = _LEVELS.get(level, logging.DEBUG)
        if _libbpf_log.isEnabledFor(py_level):
            _libbpf_log.log(py_level, "%s", format_va(fmt, va_list))
        return 0

    _print_fn = PRINT_FN(_print)
    handle.libbpf_set_print(_print_fn)


def _errno_or(default: int = errno.EINVAL) -> int:
    return ctypes.get_errno() or default


def check(call: str, ret: int) -> int:
    """Raise LibbpfError for a negative libbpf return code (-errno)."""
    if ret < 0:
        raise LibbpfError(call, -ret)
    return ret


def check_ptr(call: str, ptr: int | None) -> int:
    """Raise LibbpfError for a NULL pointer (libbpf 1.x sets errno)."""
    if not ptr:
        raise LibbpfError(call, _errno_or())
    return ptr


# --- objects, maps, programs -----------------------------------------------------------

class BpfObject:
    """An opened (and later loaded) BPF object file; close() frees everything."""

    def __init__(self, path: str):
        self.path = path
        self.ptr = check_ptr(f"open {path}", lib().bpf_object__open_file(path.encode(), None))

    def maps(self) -> list["BpfMap"]:
        """All maps of the object, including .rodata/.bss."""
        result, cur = [], None
        while cur := lib().bpf_object__next_map(self.ptr, cur):
            result.append(BpfMap(cur))
        return result

    def map(self, name: str) -> "BpfMap":
        ptr = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not ptr:
            raise LibbpfError(f"map {name} in {self.path}", errno.ENOENT)
        return BpfMap(ptr)

    def programs(self) -> list["BpfProgram"]:
        result, cur = [], None
        while cur := lib().bpf_object__next_program(self.ptr, cur):
            result.append(BpfProgram(cur))
        return result

    def set_global(self, name: str, data: bytes) -> None:
        """Write a `const volatile` global (in .rodata) before load; sizes must match."""
        offset, size = self._var_location(".rodata", name)
        if size != len(data):
            raise ValueError(f"{name}: object has {size} bytes, got {len(data)}")
        rodata = next((m for m in self.maps() if m.name.endswith(".rodata")), None)
        if rodata is None:
            raise LibbpfError(f".rodata of {self.path}", errno.ENOENT)
        total = c_size_t()
        base = check_ptr(f"initial value of {rodata.name}",
                         lib().bpf_map__initial_value(rodata.ptr, ctypes.byref(total)))
        ctypes.memmove(base + offset, data, size)

    def _var_location(self, section: str, name: str) -> tuple[int, int]:
        btf = check_ptr(f"BTF of {self.path}", lib().bpf_object__btf(self.ptr))
        sec_id = check(f"BTF {section} in {self.path}",
                       lib().btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC))
        for info in _secinfos(btf, sec_id):
            var = lib().btf__type_by_id(btf, info.type).contents
            if lib().btf__name_by_offset(btf, var.name_off) == name.encode():
                return info.offset, info.size
        raise LibbpfError(f"global {name} in {self.path}", errno.ENOENT)

    def load(self) -> None:
        check(f"load {self.path}", lib().bpf_object__load(self.ptr))

    def close(self) -> None:
        if self.ptr:
            lib().bpf_object__close(self.ptr)
            self.ptr = None


def _secinfos(btf: int, type_id: int):
    header = lib().btf__type_by_id(btf, type_id)
    vlen = header.contents.info & 0xFFFF
    base = ctypes.cast(header, c_void_p).value + ctypes.sizeof(_BtfType)
    return (_BtfVarSecinfo.from_address(base + i * ctypes.sizeof(_BtfVarSecinfo))
            for i in range(vlen))


class BpfMap:
    """A map of an object: sizing before load, element and batch access after."""

    def __init__(self, ptr: int):
        self.ptr = ptr

    @property
    def name(self) -> str:
        return lib().bpf_map__name(self.ptr).decode()

    @property
    def fd(self) -> int:
        return check(f"fd of map {self.name}", lib().bpf_map__fd(self.ptr))

    @property
    def max_entries(self) -> int:
        return lib().bpf_map__max_entries(self.ptr)

    def set_max_entries(self, count: int) -> None:
        check(f"max_entries of map {self.name}",
              lib().bpf_map__set_max_entries(self.ptr, count))


class BpfProgram:
    """A program of an object; attach() returns a Link (auto-attach by section)."""

    def __init__(self, ptr: int):
        self.ptr = ptr

    @property
    def name(self) -> str:
        return lib().bpf_program__name(self.ptr).decode()

    @property
    def section(self) -> str:
        return lib().bpf_program__section_name(self.ptr).decode()

    @property
    def fd(self) -> int:
        return check(f"fd of program {self.name}", lib().bpf_program__fd(self.ptr))

    def set_autoload(self, enabled: bool) -> None:
        check(f"autoload of {self.name}", lib().bpf_program__set_autoload(self.ptr, enabled))

    def attach(self) -> "Link":
        return Link(check_ptr(f"attach {self.section}", lib().bpf_program__attach(self.ptr)))

    def attach_cgroup(self, cgroup_fd: int) -> "Link":
        """Attach a cgroup program (cgroup_skb, sockops ...) to the cgroup open at `cgroup_fd`."""
        return Link(check_ptr(f"attach {self.section} to cgroup",
                              lib().bpf_program__attach_cgroup(self.ptr, cgroup_fd)))


class Link:
    """An attachment; it lives as long as its fd, so a killed process detaches all."""

    def __init__(self, ptr: int):
        self.ptr = ptr

    @property
    def fd(self) -> int:
        return lib().bpf_link__fd(self.ptr)

    def destroy(self) -> None:
        if self.ptr:
            lib().bpf_link__destroy(self.ptr)
            self.ptr = None


def run_iterator(link: Link) -> bytes:
    """Create an iterator from an iter link and read it to EOF; returns its output."""
    fd = check("bpf_iter_create", lib().bpf_iter_create(link.fd))
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


# struct bpf_prog_info (uapi): its size here and where recursion_misses is (Linux 5.12+)
PROG_INFO_SIZE = 232
PROG_INFO_RECURSION_MISSES = 208


def recursion_misses(prog_fd: int) -> int:
    """Runs of a program the kernel skipped because it was already running on that CPU
    (a tracepoint hit again from an interrupt); 0 on kernels that do not say."""
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    size = c_uint32(PROG_INFO_SIZE)
    check("bpf_obj_get_info_by_fd", lib().bpf_obj_get_info_by_fd(prog_fd, info, ctypes.byref(size)))
    if size.value < PROG_INFO_RECURSION_MISSES + 8:
        return 0
    return c_uint64.from_buffer(info, PROG_INFO_RECURSION_MISSES).value


# --- map access by fd ------------------------------------------------------------------

def lookup(fd: int, key: ctypes._SimpleCData | Structure, value) -> bool:
    """Fill `value` with the element at `key`; False when absent."""
    if lib().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)) < 0:
        if ctypes.get_errno() == errno.ENOENT:
            return False
        raise LibbpfError("bpf_map_lookup_elem", _errno_or())
    return True


def update(fd: int, key, value, flags: int = BPF_ANY) -> None:
    check("bpf_map_update_elem",
          lib().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), flags))


def delete(fd: int, key) -> None:
    check("bpf_map_delete_elem", lib().bpf_map_delete_elem(fd, ctypes.byref(key)))


def read_batch(fd: int, key_type, value_type, max_entries: int, delete: bool = False):
    """All (key, value) pairs of a hash map with batch calls; with delete=True, drained.

    Per-CPU maps are not handled here (their values are arrays of possible CPUs).
    """
    key_size, value_size = ctypes.sizeof(key_type), ctypes.sizeof(value_type)
    keys, values = read_batch_bytes(fd, key_size, value_size, max_entries, delete)
    return [(key_type.from_buffer_copy(keys, i * key_size),
             value_type.from_buffer_copy(values, i * value_size))
            for i in range(len(keys) // key_size)]


def read_batch_bytes(fd: int, key_size: int, value_size: int, max_entries: int,
                     delete: bool = False) -> tuple[bytes, bytes]:
    """Like read_batch, as two byte strings: entry i's key at i * key_size of the first,
    its value at i * value_size of the second (no Python object per entry)."""
    call = (lib().bpf_map_lookup_and_delete_batch if delete else lib().bpf_map_lookup_batch)
    chunk = max(1, min(max_entries, 4096))
    keys = ctypes.create_string_buffer(key_size * chunk)
    values = ctypes.create_string_buffer(value_size * chunk)
    token, out_token = c_uint64(), c_uint64()
    opts = BatchOpts(sz=ctypes.sizeof(BatchOpts))
    key_parts, value_parts, first = [], [], True
    while True:
        count = c_uint32(chunk)
        ret = call(fd, None if first else ctypes.byref(token), ctypes.byref(out_token),
                   keys, values, ctypes.byref(count), ctypes.byref(opts))
        err = ctypes.get_errno() if ret < 0 else 0
        if ret < 0 and err != errno.ENOENT:
            raise LibbpfError("bpf_map_lookup_batch", err or -ret)
        key_parts.append(ctypes.string_at(keys, count.value * key_size))
        value_parts.append(ctypes.string_at(values, count.value * value_size))
        if ret < 0:  # ENOENT: no more elements
            return b"".join(key_parts), b"".join(value_parts)
        token.value, first = out_token.value, False


def read_array(fd: int, value_type, count: int) -> list:
    """Every element of an ARRAY map (or per-CPU array, with value_type * ncpus)."""
    result = []
    for index in range(count):
        key, value = c_uint32(index), value_type()
        lookup(fd, key, value)
        result.append(value)
    return result


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """How many CPUs per-CPU map values hold (ranges like 0-3,5)."""
    total = 0
    with open(path) as handle:
        for part in handle.read().strip().split(","):
            low, _, high = part.partition("-")
            total += int(high or low) - int(low) + 1
    return total


# --- ring buffers ----------------------------------------------------------------------

class RingBuffer:
    """A ring buffer reader: `callback(bytes)` is called for each record on poll()."""

    def __init__(self, map_fd: int, callback):
        def _sample(_ctx, data, size):
            callback(ctypes.string_at(data, size))
            return 0

        self._sample = RINGBUF_SAMPLE_FN(_sample)  # keep alive while the buffer lives
        self.ptr = check_ptr("ring_buffer__new",
                             lib().ring_buffer__new(map_fd, self._sample, None, None))

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms, deliver records; returns how many were delivered."""
        ret = lib().ring_buffer__poll(self.ptr, timeout_ms)
        if ret == -errno.EINTR:
            return 0
        return check("ring_buffer__poll", ret)

    def consume(self) -> int:
        """Deliver every record there now, without waiting; returns how many."""
        return check("ring_buffer__consume", lib().ring_buffer__consume(self.ptr))

    def free(self) -> None:
        if self.ptr:
            lib().ring_buffer__free(self.ptr)
            self.ptr = None


# --- BTF layout (for the ABI test and for diagnostics) ---------------------------------

def struct_layout(path: str, name: str) -> tuple[int, dict[str, int]]:
    """(size, {member: byte offset}) of `struct name` in an object file's BTF."""
    btf = check_ptr(f"BTF of {path}", lib().btf__parse_elf(path.encode(), None))
    try:
        type_id = check(f"struct {name} in {path}",
                        lib().btf__find_by_name_kind(btf, name.encode(), BTF_KIND_STRUCT))
        header = lib().btf__type_by_id(btf, type_id)
        vlen, kflag = header.contents.info & 0xFFFF, header.contents.info >> 31
        base = ctypes.cast(header, c_void_p).value + ctypes.sizeof(_BtfType)
        members = {}
        for i in range(vlen):
            member = _BtfMember.from_address(base + i * ctypes.sizeof(_BtfMember))
            bits = member.offset & 0xFFFFFF if kflag else member.offset
            members[lib().btf__name_by_offset(btf, member.name_off).decode()] = bits // 8
        return header.contents.size, members
    finally:
        lib().btf__free(btf)
