"""Benchmarks: what the agent costs its host, measured side by side with a peer.

Run as `python -m bench <name>` (root; see `python -m bench --help`). Every benchmark
interleaves its cases (off, agent, peer, off, agent, peer, ...) in one run and prints
the median, min-max and the ratio to `off`. Nothing here is part of the test pass/fail.
"""
