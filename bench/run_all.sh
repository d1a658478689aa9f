#!/bin/sh
# Every benchmark in one go, as recorded in docs/benchmarks.md; one Markdown file per
# benchmark under OUT (default /tmp/nre-bench-results). Root; run from the repository root.
# Throughput runs leave kernel.bpf_stats_enabled off (its two clock reads per program run
# would tax agent and peer); the cost run turns it on to measure kernel time per program.
set -u
OUT=${1:-/tmp/nre-bench-results}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
date -u +"start %Y-%m-%dT%H:%M:%SZ" > "$OUT/times.txt"
$PY -m bench network --no-bpf-stats --json "$OUT/network.json" > "$OUT/network.md" 2> "$OUT/network.log"
$PY -m bench cost --seconds 20 --json "$OUT/cost.json" > "$OUT/cost.md" 2> "$OUT/cost.log"
$PY -m bench completeness > "$OUT/completeness.md" 2> "$OUT/completeness.log"
$PY -m bench flows --sizes 1000,10000 > "$OUT/flows.md" 2> "$OUT/flows.log"
$PY -m bench series --sizes 1000,10000 > "$OUT/series.md" 2> "$OUT/series.log"
date -u +"end %Y-%m-%dT%H:%M:%SZ" >> "$OUT/times.txt"
