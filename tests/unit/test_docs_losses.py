"""docs/losses.md names every loss reason the collectors report, and no other."""

import re
from pathlib import Path

from otel_netreceiver.flows import dns_tracker
from otel_netreceiver.probes import abi, dns, udp

DOC = Path(__file__).resolve().parents[2] / "docs" / "losses.md"


def reported() -> set[str]:
    tcp = {f"tcp.{loss.name.lower()}" for loss in abi.Loss if loss != abi.Loss.RINGBUF_FULL}
    return (tcp | {"tcp.events_missed"} | set(udp.LOSS_NAMES.values()) | set(dns.LOSS_NAMES.values())
            | set(dns.READER_LOSSES) | set(dns_tracker.LOSS_REASONS))


def test_every_reported_reason_is_documented_and_nothing_else():
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([a-z_]+\.[a-z_]+)`", row.split("|")[1])}
    assert documented == reported()
