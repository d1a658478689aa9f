"""Load a BPF object and attach all its programs inside a `with` block.

Nothing is pinned: links and maps live as long as this process's file descriptors, so
leaving the block, or the process being killed, detaches everything. A failure raises
ProbeLoadError / ProbeAttachError whose str() is one line saying what is missing.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

from . import libbpf

log = logging.getLogger(__name__)

OBJECTS_DIR = Path(__file__).resolve().parent / "objects"
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
TRACEFS_EVENTS = (Path("/sys/kernel/tracing/events"), Path("/sys/kernel/debug/tracing/events"))
CAPABILITIES = {"CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


class ProbeError(RuntimeError):
    """Base of probe failures; str() is a single line meant for the user."""


class ProbeLoadError(ProbeError):
    """The object could not be opened or loaded."""


class ProbeAttachError(ProbeError):
    """A program could not be attached (e.g. its tracepoint is missing)."""


def object_path(name: str, override: str | os.PathLike | None = None) -> Path:
    """Where `<name>.bpf.o` is: the override if given, else the package's objects dir."""
    return Path(override) if override else OBJECTS_DIR / f"{name}.bpf.o"


@dataclass
class Loaded:
    """A loaded object and its links, by program name."""

    obj: libbpf.BpfObject
    links: dict[str, libbpf.Link] = field(default_factory=dict)

    def map(self, name: str) -> libbpf.BpfMap:
        return self.obj.map(name)


class Loader:
    """Open, configure, load and attach one object; undo everything on exit.

    `configure(obj)` runs between open and load, to write `const volatile` settings and
    map sizes.
    """

    def __init__(self, path: Path, configure=None, attach=None):
        self.path = Path(path)
        self.configure = configure
        self.attach = attach  # attach(program) -> Link; default: by section name
        self.loaded: Loaded | None = None

    def __enter__(self) -> Loaded:
        obj = self._open()
        try:
            if self.configure:
                self.configure(obj)
            self._load(obj)
            self.loaded = Loaded(obj)
            self._attach_all(obj)
        except BaseException:
            self.__exit__(None, None, None)
            obj.close()
            raise
        return self.loaded

    def __exit__(self, *exc) -> None:
        if self.loaded is None:
            return
        for link in self.loaded.links.values():
            link.destroy()
        self.loaded.obj.close()
        self.loaded = None

    def _open(self) -> libbpf.BpfObject:
        if not self.path.exists():
            raise ProbeLoadError(f"BPF object {self.path} not built: run `make bpf`")
        try:
            return libbpf.BpfObject(str(self.path))
        except libbpf.LibbpfMissing as err:
            raise ProbeLoadError(str(err)) from err
        except OSError as err:
            raise ProbeLoadError(f"cannot open {self.path}: {err}") from err

    def _load(self, obj: libbpf.BpfObject) -> None:
        try:
            obj.load()
        except OSError as err:
            raise ProbeLoadError(diagnose(self.path.name, err)) from err

    def _attach_all(self, obj: libbpf.BpfObject) -> None:
        for prog in obj.programs():
            try:
                self.loaded.links[prog.name] = (self.attach or _by_section)(prog)
            except OSError as err:
                raise ProbeAttachError(attach_reason(prog.section, err)) from err


def _by_section(prog: libbpf.BpfProgram) -> libbpf.Link:
    return prog.attach()


def diagnose(what: str, err: OSError, status: str | None = None) -> str:
    """One line naming the most likely missing piece after a failed load."""
    missing = missing_capabilities(status)
    if missing:
        return f"cannot load {what}: not root and missing {', '.join(missing)}"
    if not VMLINUX_BTF.exists():
        return f"cannot load {what}: kernel has no BTF ({VMLINUX_BTF} missing)"
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if err.errno == 1 and soft != resource.RLIM_INFINITY and soft < 64 << 20:
        return (f"cannot load {what}: memlock limit too low ({soft} bytes); "
                "raise it (ulimit -l unlimited / LimitMEMLOCK=infinity)")
    return f"cannot load {what}: {err} (libbpf log above has details)"


def attach_reason(section: str, err: OSError) -> str:
    """One line for an attach failure; names a tracepoint that does not exist."""
    kind, _, name = section.partition("/")
    if kind in ("tp_btf", "tracepoint", "tp", "raw_tp") and not tracepoint_exists(name):
        return f"cannot attach {section}: tracepoint {name} not present in this kernel"
    return f"cannot attach {section}: {err}"


def tracepoint_exists(name: str) -> bool:
    """Whether a tracepoint (`cat/name` or bare `name`) exists in tracefs."""
    leaf = name.split("/")[-1]
    for events in TRACEFS_EVENTS:
        if events.is_dir():
            return any(events.glob(f"*/{leaf}")) if "/" not in name else (events / name).is_dir()
    return True  # tracefs not mounted: cannot tell, do not blame the tracepoint


def missing_capabilities(status: str | None = None) -> list[str]:
    """Capabilities from CAPABILITIES absent in /proc/self/status CapEff (empty if root-like).

    CAP_SYS_ADMIN alone is enough; otherwise both CAP_BPF and CAP_PERFMON are needed.
    """
    if status is None:
        status = Path("/proc/self/status").read_text()
    effective = next(int(line.split()[1], 16) for line in status.splitlines()
                     if line.startswith("CapEff:"))
    have = {name for name, bit in CAPABILITIES.items() if effective >> bit & 1}
    if "CAP_SYS_ADMIN" in have or {"CAP_BPF", "CAP_PERFMON"} <= have:
        return []
    return sorted(set(CAPABILITIES) - have)
