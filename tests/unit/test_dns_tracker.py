"""DnsTracker: matching, durations, timeouts, the name guard, and losses."""

import dns.message
import dns.rcode
import dns.rrset
import pytest

from otel_netreceiver.flows.dns_tracker import OTHER_NAME, DnsPacket, DnsTracker
from otel_netreceiver.flows.model import DnsKey, Snapshot, Workload

APP = Workload(cgroup_id=42, pid=7, comm="app")
CLIENT, SERVER = ("198.18.30.1", 40000), ("198.18.30.2", 53)
MS = 1_000_000


def query(name="known.test.", ident=1):
    message = dns.message.make_query(name, "A")
    message.id = ident
    return message


def reply(message, rcode=dns.rcode.NOERROR, addresses=()):
    answer = dns.message.make_response(message)
    answer.set_rcode(rcode)
    if addresses:
        answer.answer.append(dns.rrset.from_text(message.question[0].name, 60, "IN", "A",
                                                 *addresses))
    return answer


def sent(message, ts, local=CLIENT, workload=APP):
    return DnsPacket(ts, workload, True, local, SERVER, message.to_wire())


def received(message, ts, local=CLIENT, workload=APP):
    # the kernel knows no process on receive; only the cgroup is the socket's
    return DnsPacket(ts, Workload(workload.cgroup_id, 0, ""), False, local, SERVER,
                     message.to_wire())


def stats(tracker, name="known.test", error="", workload=APP, now=0):
    snapshot = Snapshot(0)
    tracker.collect(snapshot, now)
    return snapshot.dns.get(DnsKey(workload, name, SERVER[0], error))


@pytest.mark.parametrize("rcode, error", [
    (dns.rcode.NOERROR, ""), (dns.rcode.NXDOMAIN, "nxdomain"),
    (dns.rcode.SERVFAIL, "servfail"), (dns.rcode.REFUSED, "refused"),
])
def test_response_ends_lookup_with_duration_and_error_type(rcode, error):
    tracker = DnsTracker(timeout_ns=5000 * MS)
    q = query()
    tracker.observe(sent(q, 1000 * MS))
    tracker.observe(received(reply(q, rcode), 1003 * MS))
    series = stats(tracker, error=error)
    histogram = series.stats.duration
    assert (histogram.count, histogram.sum) == (1, pytest.approx(0.003))
    assert histogram.counts[histogram.bounds.index(0.005)] == 1  # 3 ms lands in (2.5, 5] ms
    assert series.stats.timeouts == 0 and tracker.pending == 0


def test_unanswered_query_times_out_once():
    tracker = DnsTracker(timeout_ns=1000 * MS)
    tracker.observe(sent(query(), 0))
    assert stats(tracker, now=999 * MS) is None
    assert stats(tracker, now=1000 * MS).stats.timeouts == 1
    assert stats(tracker, now=5000 * MS).stats.timeouts == 1


def test_late_answer_is_a_timeout_whenever_it_is_read():
    tracker = DnsTracker(timeout_ns=1000 * MS)
    q = query()
    tracker.observe(sent(q, 0))
    tracker.observe(received(reply(q), 1500 * MS))
    series = stats(tracker, now=1500 * MS)
    assert (series.stats.timeouts, series.stats.duration.count) == (1, 0)


def test_retransmission_keeps_the_first_send_time():
    tracker = DnsTracker()
    q = query()
    tracker.observe(sent(q, 0))
    tracker.observe(sent(q, 1000 * MS))
    tracker.observe(received(reply(q), 1200 * MS))
    assert stats(tracker).stats.duration.sum == pytest.approx(1.2)


@pytest.mark.parametrize("response", [
    reply(query(ident=2)),                          # another id
    reply(query(name="other.test.", ident=1)),      # same id, another question
])
def test_responses_that_do_not_match_are_counted(response):
    tracker = DnsTracker()
    tracker.observe(sent(query(), 0))
    tracker.observe(received(response, 1))
    assert tracker.losses["dns.unmatched_response"] == 1 and tracker.pending == 1


def test_match_needs_the_same_socket_and_cgroup():
    tracker = DnsTracker()
    q = query()
    tracker.observe(sent(q, 0))
    tracker.observe(received(reply(q), 1, local=("198.18.30.1", 40001)))
    tracker.observe(received(reply(q), 1, workload=Workload(43, 0, "")))
    assert tracker.losses["dns.unmatched_response"] == 2


def test_server_side_packets_are_ignored():
    tracker = DnsTracker()
    q = query()
    tracker.observe(received(q, 0))          # a query arriving: we are the server
    tracker.observe(sent(reply(q), 1))       # its answer leaving
    assert tracker.pending == 0 and stats(tracker) is None


def test_name_guard_per_workload_per_interval():
    tracker = DnsTracker(max_names=2)
    other = Workload(99, 1, "other")
    for ident, (name, workload) in enumerate([("a.test.", APP), ("b.test.", APP),
                                              ("c.test.", APP), ("a.test.", APP),
                                              ("c.test.", other)]):
        q = query(name, ident)
        tracker.observe(sent(q, 0, workload=workload))
        tracker.observe(received(reply(q), 1, workload=workload))
    snapshot = Snapshot(0)
    tracker.collect(snapshot, 10)
    counts = {(k.workload.cgroup_id, k.question_name): s.stats.duration.count
              for k, s in snapshot.dns.items()}
    assert counts == {(42, "a.test"): 2, (42, "b.test"): 1, (42, OTHER_NAME): 1, (99, "c.test"): 1}
    q = query("c.test.", 9)  # a new interval: c.test gets its own series now
    tracker.observe(sent(q, 20))
    tracker.observe(received(reply(q), 21))
    assert stats(tracker, name="c.test").stats.duration.count == 1


def test_malformed_and_full_are_losses():
    tracker = DnsTracker(max_pending=1)
    tracker.observe(DnsPacket(0, APP, True, CLIENT, SERVER, b"\x00\x01"))
    tracker.observe(sent(query(ident=1), 0))
    tracker.observe(sent(query(ident=2), 0))
    assert tracker.losses["dns.malformed_packet"] == 1
    assert tracker.losses["dns.pending_full"] == 1


def test_answers_go_to_the_name_cache_hook():
    learned = []
    tracker = DnsTracker(on_answer=lambda workload, message: learned.append(
        (workload, message.question.name, [a.data for a in message.answers])))
    q = query()
    tracker.observe(sent(q, 0))
    tracker.observe(received(reply(q, addresses=["198.18.31.50"]), 1))
    assert learned == [(APP, "known.test", ["198.18.31.50"])]


def test_snapshot_holds_copies():
    tracker = DnsTracker()
    q = query()
    tracker.observe(sent(q, 0))
    tracker.observe(received(reply(q), 1))
    first = stats(tracker)
    q2 = query(ident=5)
    tracker.observe(sent(q2, 0))
    tracker.observe(received(reply(q2), 1))
    assert first.stats.duration.count == 1 and stats(tracker).stats.duration.count == 2
    assert stats(tracker).start_ns == first.start_ns


def test_unanswered_query_while_packets_were_dropped_is_uncertain_not_a_timeout():
    tracker = DnsTracker(timeout_ns=1000 * MS)
    tracker.observe(sent(query(ident=1), 0))
    tracker.observe(sent(query(ident=2), 5000 * MS))
    tracker.packets_lost(500 * MS, 800 * MS)  # the first query's answer was due then
    snapshot = Snapshot(0)
    tracker.collect(snapshot, 10000 * MS)
    (series,) = snapshot.dns.values()
    assert series.stats.timeouts == 1 and tracker.losses["dns.timeout_uncertain"] == 1


def test_idle_series_are_dropped_after_reporting():
    tracker = DnsTracker(idle_intervals=2)
    q = query()
    tracker.observe(sent(q, 0))
    tracker.observe(received(reply(q), 1))
    assert stats(tracker) is not None  # changed in this interval
    assert stats(tracker) is not None  # quiet for one interval: still reported
    assert stats(tracker) is not None  # quiet for two: reported a last time, then dropped
    assert stats(tracker) is None


def test_name_guard_budget_is_shared_by_processes_of_one_program_in_one_cgroup():
    tracker = DnsTracker(max_names=1)
    for ident, pid in enumerate((100, 101, 102)):  # e.g. three short-lived curl runs
        workload = Workload(42, pid, "curl")
        q = query(f"n{ident}.test.", ident)
        tracker.observe(sent(q, 0, workload=workload))
        tracker.observe(received(reply(q), 1, workload=workload))
    snapshot = Snapshot(0)
    tracker.collect(snapshot, 10)
    assert sorted(k.question_name for k in snapshot.dns) == ["_OTHER", "_OTHER", "n0.test"]
