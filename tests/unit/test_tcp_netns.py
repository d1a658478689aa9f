"""Which namespaces the TCP collector's per-interval pass visits: sockstat's TCP `inuse`."""

from __future__ import annotations

import pytest

from otel_netreceiver.probes.netns import tcp_sockets_in_use

SOCKSTAT = """sockets: used 9
TCP: inuse {v4} orphan 0 tw 27490 alloc 1 mem 0
UDP: inuse 3 mem 2
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
"""
SOCKSTAT6 = """TCP6: inuse {v6}
UDP6: inuse 5
UDPLITE6: inuse 0
RAW6: inuse 1
FRAG6: inuse 0 memory 0
"""


@pytest.mark.parametrize("v4, v6, expected", [
    (0, 0, 0),        # only TIME_WAIT and UDP: nothing for the pass
    (2, 0, 2),
    (0, 7, 7),
    (3, 4, 7),
    (1, None, 1),     # no IPv6 in the kernel: no sockstat6
])
def test_tcp_sockets_in_use_counts_v4_and_v6(tmp_path, v4, v6, expected):
    (tmp_path / "sockstat").write_text(SOCKSTAT.format(v4=v4))
    if v6 is not None:
        (tmp_path / "sockstat6").write_text(SOCKSTAT6.format(v6=v6))
    assert tcp_sockets_in_use(tmp_path) == expected
