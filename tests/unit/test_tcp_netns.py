"""Which namespaces the TCP collector walks with iter/tcp: sockstat's TCP `inuse`, and
each namespace once, when first seen."""

from __future__ import annotations

import contextlib
import os

import pytest

from otel_netreceiver.probes import netns, tcp
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


def test_list_netns_gives_one_path_per_namespace(tmp_path):
    """Processes sharing a namespace (one inode) give one path; `ip netns` names count."""
    proc, named = tmp_path / "proc", tmp_path / "netns"
    for pid in ("1", "20", "300", "4000"):
        (proc / pid / "ns").mkdir(parents=True)
    (proc / "self" / "ns").mkdir(parents=True)
    (proc / "1" / "ns" / "net").write_text("")
    (proc / "20" / "ns" / "net").hardlink_to(proc / "1" / "ns" / "net")  # the same namespace
    (proc / "300" / "ns" / "net").write_text("")
    (proc / "self" / "ns" / "net").write_text("")  # not a process directory: ignored
    named.mkdir()
    (named / "blue").hardlink_to(proc / "300" / "ns" / "net")
    (named / "red").write_text("")                       # 4000: no ns/net (process gone)
    paths = list(netns.list_netns(proc, named).values())
    inodes = [os.stat(path).st_ino for path in paths]
    assert len(paths) == 3 and paths[-1] == f"{named}/red"
    assert sorted(inodes) == sorted(os.stat(path).st_ino for path in (
        proc / "1" / "ns" / "net", proc / "300" / "ns" / "net", named / "red"))
    assert paths[0] in (f"{proc}/1/ns/net", f"{proc}/20/ns/net", f"{proc}/300/ns/net")
    assert list(netns.list_netns(proc, tmp_path / "absent").values()) == paths[:2]


@pytest.mark.kernel
def test_list_netns_finds_our_own_namespace():
    own = netns.current_netns()
    found = [os.stat(path) for path in netns.list_netns().values()]
    assert own in [(info.st_dev, info.st_ino) for info in found]
    assert len(found) == len({(info.st_dev, info.st_ino) for info in found})


class Adoptions:
    """A TcpCollector whose iter/tcp runs and namespace switches are recorded, over
    namespace files made in `tmp_path` (no BPF, no root)."""

    def __init__(self, tmp_path, monkeypatch, in_use=None):
        self.tmp_path, self.listed, self.runs, self.inside = tmp_path, [], [], None
        self.in_use = in_use or {}
        own = self.path("own")
        info = os.stat(own)
        self.collector = tcp.TcpCollector(list_netns=self._listed)
        self.collector._adopt_link = "adopt"
        monkeypatch.setattr(tcp.netns, "current_netns", lambda: (info.st_dev, info.st_ino))
        monkeypatch.setattr(tcp.netns, "inside", self._inside)
        monkeypatch.setattr(tcp.netns, "tcp_sockets_in_use",
                            lambda: self.in_use.get(self.inside, 1))
        monkeypatch.setattr(tcp.libbpf, "run_iterator",
                            lambda link: self.runs.append((link, self.inside or "own")))

    def _listed(self) -> dict[tuple[int, int], str]:
        return {(info.st_dev, info.st_ino): path for path, info in
                ((path, os.stat(path)) for path in self.listed)}

    def path(self, name: str) -> str:
        path = self.tmp_path / name
        path.touch()
        return str(path)

    @contextlib.contextmanager
    def _inside(self, path):
        self.inside = os.path.basename(path)
        try:
            yield
        finally:
            self.inside = None

    def step(self, *names: str) -> list[str]:
        """One interval with these namespaces listed; where iter/tcp ran."""
        self.listed, self.runs = [self.path(name) for name in names], []
        self.collector._adopt_new_namespaces()
        assert all(link == "adopt" for link, _ in self.runs)
        return sorted(where for _, where in self.runs)


def test_adoption_runs_once_in_each_namespace_while_it_lives(tmp_path, monkeypatch):
    seen = Adoptions(tmp_path, monkeypatch, in_use={"empty": 0})
    assert seen.step("a", "b", "empty") == ["a", "b", "own"]  # ours too, once
    assert seen.step("a", "b", "empty") == []                  # nothing new: no walk
    assert seen.step("a", "b", "empty", "c") == ["c"]          # a new one: one walk
    assert seen.step("a", "own") == []                         # ours listed by path
    assert seen.step("a", "b") == ["b"]                        # b was gone: forgotten
    assert seen.step("a", "b", "empty") == []                  # no TCP socket: no walk


def test_adoption_that_fails_in_a_namespace_is_tried_again(tmp_path, monkeypatch, caplog):
    """The iterator failing inside a namespace that still exists (bpf_iter_create, read)
    is not the namespace being gone: its connections older than us are adopted at the
    next interval, and the failure is a warning, not a debug line."""
    seen = Adoptions(tmp_path, monkeypatch)
    record = tcp.libbpf.run_iterator
    failures = [tcp.libbpf.LibbpfError("bpf_iter_create", 12)]  # ENOMEM, once

    def failing_once(link):
        if seen.inside == "a" and failures:
            raise failures.pop()
        record(link)

    monkeypatch.setattr(tcp.libbpf, "run_iterator", failing_once)
    assert seen.step("a", "b") == ["b", "own"]
    assert "bpf_iter_create" in caplog.text and caplog.records[-1].levelname == "WARNING"
    assert seen.step("a", "b") == ["a"]
    assert seen.step("a", "b") == []
