"""Agent cost at a fixed connection rate (default 5,000/s): its CPU as % of one core.

The rate is paced (one `ab -n RATE` burst per second) so the number answers "what does
the agent cost a host that opens RATE connections a second", not "at saturation".
"""

from __future__ import annotations

import functools

from bench import servers, workloads

from bench.runner import Table, interleave, render_programs


def cost(args, monitors) -> list[Table]:
    with servers.hosts() as pair, servers.nginx(pair.server) as web:
        work = functools.partial(workloads.paced_ab, pair.client, web.url, args.rate, args.seconds)
        table = interleave(f"paced churn {args.rate:,} conn/s ({args.seconds:g} s)",
                           monitors, work, args.rounds)
    print("BPF programs, last round, from load to stop (includes start-up and settle):\n"
          + render_programs(monitors) + "\n", flush=True)
    return [table]
