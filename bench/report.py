"""Assemble the Markdown of one `run_all.sh` output directory (for docs/benchmarks.md).

`python -m bench.report DIR` prints the recorded tables in a fixed order with their
time window; `--into FILE` replaces the text between `<!-- results:start -->` and
`<!-- results:end -->` in FILE instead (nothing else in FILE is touched).
"""

from __future__ import annotations

import sys
from pathlib import Path

PARTS = [
    ("network.md", "Throughput with and without the agent (bpf stats off)"),
    ("cost.md", "Agent cost at a paced 5,000 connections/s (bpf stats on)"),
    ("completeness.md", "Completeness at the highest churn (default map sizes)"),
    ("flows.md", "Real kernel path: one agent interval with N flow keys"),
    ("series.md", "Synthetic N series through enrich + build + export"),
    ("netns.md", "The TCP collector's interval with N network namespaces"),
]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def assemble(directory: Path) -> str:
    times = (directory / "times.txt").read_text().split() if (directory / "times.txt").exists() else []
    window = " to ".join(t for t in times if t not in ("start", "end"))
    out = [f"Recorded {window or '(time not recorded)'} with `bench/run_all.sh`.", ""]
    for name, title in PARTS:
        path = directory / name
        body = path.read_text().strip() if path.exists() else ""
        out += [f"#### {title}", "", body.replace("### ", "##### ") or "(not recorded)", ""]
    return "\n".join(out).rstrip() + "\n"


def replace_block(text: str, block: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{block}{END}{tail}"


if __name__ == "__main__":
    block = assemble(Path(sys.argv[1]))
    if len(sys.argv) > 3 and sys.argv[2] == "--into":
        target = Path(sys.argv[3])
        target.write_text(replace_block(target.read_text(), block))
    else:
        print(block)
