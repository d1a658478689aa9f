"""DnsNames (IP -> resolved name cache) and its PeerResolver."""

import pytest

from otel_netreceiver.enrich.dns_names import (DnsNames, DnsPeerResolver, canonical_address,
                                               resolved_addresses)
from otel_netreceiver.flows.dns_parser import Answer
from otel_netreceiver.flows.model import Direction, Family, FlowKey, Transport, Workload


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def a(name, address, ttl=300):
    return Answer(name, 28 if ":" in address else 1, ttl, address)


def cname(name, target, ttl=300):
    return Answer(name, 5, ttl, target)


def key(cgroup_id, peer, direction=Direction.OUTGOING):
    return FlowKey(Workload(cgroup_id, 1, "app"), Transport.TCP, Family.IPV4, direction, peer, 443)


@pytest.mark.parametrize("answers, expected", [
    ([a("api.test", "198.18.31.1")], [("198.18.31.1", 300)]),
    ([cname("api.test", "edge.cdn"), cname("edge.cdn", "e1.cdn"), a("e1.cdn", "198.18.31.2", 20)],
     [("198.18.31.2", 20)]),
    ([a("unrelated.test", "198.18.31.3")], []),  # not reached from the question: ignored
    ([a("api.test", "2001:db8::1")], [("2001:db8::1", 300)]),
])
def test_resolved_addresses_follow_the_cname_chain(answers, expected):
    assert resolved_addresses("api.test", answers) == expected


@pytest.mark.parametrize("text, canonical", [
    ("198.18.31.1", "198.18.31.1"), ("::ffff:198.18.31.1", "198.18.31.1"),
    ("2001:DB8:0::1", "2001:db8::1"),
])
def test_canonical_address(text, canonical):
    assert canonical_address(text) == canonical


def test_per_workload_name_wins_over_host_wide():
    names = DnsNames(clock=Clock())
    names.learn(1, "shop.test", [a("shop.test", "198.18.31.1")])
    names.learn(2, "blog.test", [a("blog.test", "198.18.31.1")])  # one IP, two names
    assert names.name_for(1, "198.18.31.1") == "shop.test"
    assert names.name_for(2, "198.18.31.1") == "blog.test"
    assert names.name_for(3, "198.18.31.1") == "blog.test"  # host-wide: the latest answer
    assert names.name_for(1, "198.18.31.9") is None


def test_ttl_with_floor_and_ceiling():
    clock = Clock()
    names = DnsNames(min_ttl=60, max_ttl=600, clock=clock)
    names.learn(1, "short.test", [a("short.test", "198.18.31.1", ttl=0)])
    names.learn(1, "long.test", [a("long.test", "198.18.31.2", ttl=86400)])
    clock.now += 59
    assert names.name_for(1, "198.18.31.1") == "short.test"
    clock.now += 2
    assert names.name_for(1, "198.18.31.1") is None
    clock.now += 538
    assert names.name_for(1, "198.18.31.2") == "long.test"
    clock.now += 2
    assert names.name_for(1, "198.18.31.2") is None


def test_capacity_is_bounded_least_recently_learned_first():
    names = DnsNames(capacity=4, clock=Clock())
    for index in range(3):
        names.learn(1, f"n{index}.test", [a(f"n{index}.test", f"198.18.31.{index}")])
    assert len(names) == 4 and names.evictions == 2
    assert names.name_for(1, "198.18.31.2") == "n2.test"
    assert names.name_for(1, "198.18.31.0") is None


def test_peer_resolver_names_outgoing_flows_only():
    names = DnsNames(clock=Clock())
    names.learn(1, "db.test", [a("db.test", "198.18.31.5")])
    resolver = DnsPeerResolver(names)
    assert resolver.peer_attributes(key(1, "198.18.31.5")) == {"server.address": "db.test"}
    assert resolver.peer_attributes(key(1, "198.18.31.5", Direction.INCOMING)) == {}
    assert resolver.peer_attributes(key(1, "198.18.31.6")) == {}


def test_peer_resolver_looks_names_up_again_each_snapshot():
    """One lookup per (workload, address) and snapshot, the same answer object per name;
    a name learned or expired since is seen in the next snapshot."""
    clock = Clock()
    names = DnsNames(clock=clock, min_ttl=60)
    resolver = DnsPeerResolver(names)
    resolver.observe(None)
    assert resolver.peer_attributes(key(1, "198.18.31.5")) == {}
    names.learn(1, "db.test", [a("db.test", "198.18.31.5")])
    assert resolver.peer_attributes(key(1, "198.18.31.5")) == {}  # same snapshot
    resolver.observe(None)
    first = resolver.peer_attributes(key(1, "198.18.31.5"))
    assert first == {"server.address": "db.test"}
    resolver.observe(None)
    assert resolver.peer_attributes(key(1, "198.18.31.5")) is first
    clock.now += 3600
    resolver.observe(None)
    assert resolver.peer_attributes(key(1, "198.18.31.5")) == {}


def test_version_changes_exactly_when_an_answer_may_change():
    clock = Clock()
    names = DnsNames(capacity=4, clock=clock, min_ttl=60)
    seen = [names.version()]

    def changed() -> bool:
        seen.append(names.version())
        return seen[-1] != seen[-2]

    assert not changed()
    names.learn(1, "db.test", [a("db.test", "198.18.31.5")])
    assert changed()  # a new name
    clock.now += 10
    names.learn(1, "db.test", [a("db.test", "198.18.31.5")])
    assert not changed()  # the same name again, only its expiry moves
    names.learn(1, "db2.test", [a("db2.test", "198.18.31.5")])
    assert changed()  # the address now names another question
    clock.now += 3600
    assert changed()  # expired
    assert not changed()
    names.learn(1, "db2.test", [a("db2.test", "198.18.31.5")])
    assert changed()  # the same name again, after it had expired
    for index in range(3):
        names.learn(2, f"n{index}.test", [a(f"n{index}.test", f"198.18.32.{index}")])
    assert changed() and names.evictions > 0


def test_peer_resolver_says_when_every_answer_is_last_snapshots():
    clock = Clock()
    names = DnsNames(clock=clock, min_ttl=60)
    resolver = DnsPeerResolver(names)
    resolver.observe(None)
    assert not resolver.unchanged  # nothing to compare with yet
    resolver.observe(None)
    assert resolver.unchanged
    names.learn(1, "db.test", [a("db.test", "198.18.31.5")])
    resolver.observe(None)
    assert not resolver.unchanged
    resolver.observe(None)
    assert resolver.unchanged
    clock.now += 3600
    resolver.observe(None)
    assert not resolver.unchanged
