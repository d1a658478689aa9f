"""Which BPF programs a process holds and which are loaded at all, for detach tests.

bpftool's own `pids` column needs a bpftool built with BPF skeletons (Debian's is not),
so a process's programs come from its descriptors: program and link fds name their
program in /proc/<pid>/fdinfo (`prog_id:`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


def held_by(pid: int, proc: Path = Path("/proc")) -> set[int]:
    """Ids of the BPF programs `pid` holds through program or link descriptors (none once
    the process is gone)."""
    ids: set[int] = set()
    try:
        fds = os.listdir(proc / str(pid) / "fd")
    except OSError:
        return ids
    for fd in fds:
        try:
            if os.readlink(proc / str(pid) / "fd" / fd) not in ("anon_inode:bpf-prog", "anon_inode:bpf_link"):
                continue
            text = (proc / str(pid) / "fdinfo" / fd).read_text()
        except OSError:
            continue  # closed meanwhile
        ids.update(int(line.split()[1]) for line in text.splitlines() if line.startswith("prog_id:"))
    return ids


def loaded() -> set[int]:
    """Ids of every BPF program loaded in the kernel."""
    listing = subprocess.run(["bpftool", "-j", "prog", "list"], check=True, capture_output=True,
                             text=True).stdout
    return {prog["id"] for prog in json.loads(listing)}
