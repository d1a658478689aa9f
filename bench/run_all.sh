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
# churn also runs the agent with only its TCP collector (agent-tcp), to split the cost
$PY -m bench churn --no-bpf-stats --cases off,agent,agent-tcp,peer --json "$OUT/churn.json" \
    > "$OUT/network.md" 2> "$OUT/network.log"
for name in bulk keepalive dns; do
    $PY -m bench $name --no-bpf-stats --json "$OUT/$name.json" >> "$OUT/network.md" 2>> "$OUT/network.log"
done
$PY -m bench cost --seconds 20 --json "$OUT/cost.json" > "$OUT/cost.md" 2> "$OUT/cost.log"
# 20k then 100k connections: the entries read per interval (tcp.flows.drained) and the
# collect() CPU should not grow with the number of connections
$PY -m bench completeness --connections 20000 > "$OUT/completeness.md" 2> "$OUT/completeness.log"
$PY -m bench completeness --connections 100000 >> "$OUT/completeness.md" 2>> "$OUT/completeness.log"
if [ -z "${SKIP_SERIES:-}" ]; then  # CPU-time measures, little moved by other load
    $PY -m bench flows --sizes 1000,10000,100000 > "$OUT/flows.md" 2> "$OUT/flows.log"
    $PY -m bench series --sizes 1000,10000,100000 > "$OUT/series.md" 2> "$OUT/series.log"
    # the collector's interval CPU with 1, 10, 50 network namespaces holding connections
    $PY -m bench netns --namespaces 1,10,50 --intervals 6 > "$OUT/netns.md" 2> "$OUT/netns.log"
fi
date -u +"end %Y-%m-%dT%H:%M:%SZ" >> "$OUT/times.txt"
