"""Fuzz: 100,000+ mutated and random packets through the parser, dnspython as the oracle.

Seeded, so a failure reproduces. No exception other than MalformedPacket may escape
the parser, and none at all the tracker; outputs stay bounded; whenever dnspython
accepts a packet, the parser must accept it too and agree on header, question and
the A / AAAA / CNAME answers.
"""

import ipaddress
import random

import dns.message
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from otel_netreceiver.flows.dns_parser import MAX_ANSWERS, MalformedPacket, parse
from otel_netreceiver.flows.dns_tracker import DnsPacket, DnsTracker
from otel_netreceiver.flows.model import Workload

CASES = 100_000
KEPT_TYPES = {dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME}


def seed_packets(rng: random.Random) -> list[bytes]:
    """Real queries and responses: compression, CNAME chains, odd labels, rcodes."""
    names = ["known.test.", "WWW.Example.COM.", "a.b.c.d.e.f.g.", "x" * 63 + ".test.",
             "we\\.ird\\032label.test.", "\\255\\000.bin.", "."]
    packets = []
    for index in range(60):
        qname = names[index % len(names)]
        query = dns.message.make_query(qname, rng.choice(["A", "AAAA", "MX", "TXT"]))
        packets.append(query.to_wire())
        reply = dns.message.make_response(query)
        reply.set_rcode(rng.choice([0, 0, 0, 2, 3, 5]))
        target = f"cdn{index}.example.net."
        reply.answer.append(dns.rrset.from_text(qname, rng.randrange(1000), "IN", "CNAME", target))
        for count in range(rng.randrange(4)):
            reply.answer.append(dns.rrset.from_text(
                target, 60, "IN", "A", f"198.18.{index}.{count}"))
        reply.answer.append(dns.rrset.from_text(target, 30, "IN", "AAAA", f"2001:db8::{index:x}"))
        reply.answer.append(dns.rrset.from_text(target, 30, "IN", "MX", f"10 mail.{target}"))
        packets.append(reply.to_wire())
    return packets


def mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randrange(1, 5)):
        choice = rng.randrange(7)
        position = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[position % len(data)] ^= 1 << rng.randrange(8)
        elif choice == 1 and data:
            data[position % len(data)] = rng.randrange(256)
        elif choice == 2:
            del data[position:]
        elif choice == 3:
            data[position:position] = rng.randbytes(rng.randrange(1, 8))
        elif choice == 4 and len(data) >= 12:
            data[4 + 2 * rng.randrange(4) + 1] = rng.randrange(256)  # a section count lies
        elif choice == 5 and len(data) > 1:
            data[position % (len(data) - 1)] = 0xC0 | rng.randrange(64)  # a wild pointer
        elif choice == 6 and data:
            del data[position % len(data)]
    return bytes(data)


def oracle(packet: bytes):
    try:
        return dns.message.from_wire(packet)
    except Exception:  # dnspython rejects it: nothing to compare with
        return None


def expected_answers(message) -> set:
    found = set()
    for rrset in message.answer:
        if rrset.rdclass != dns.rdataclass.IN or rrset.rdtype not in KEPT_TYPES:
            continue
        owner = rrset.name.to_text(omit_final_dot=True).lower()
        for rdata in rrset:
            if rrset.rdtype == dns.rdatatype.CNAME:
                data = rdata.target.to_text(omit_final_dot=True).lower()
            else:
                data = str(ipaddress.ip_address(rdata.address))
            found.add((owner, int(rrset.rdtype), data))
    return found


def name_text(name) -> str:
    text = name.to_text(omit_final_dot=True).lower()
    return "." if text == "@" else text


def agree(packet: bytes, reference) -> None:
    ours = parse(packet)  # must not raise: dnspython read it
    assert ours.id == reference.id
    assert ours.is_response == bool(reference.flags & 0x8000)
    assert ours.rcode == reference.flags & 0xF
    if reference.opcode() != dns.opcode.QUERY:
        return  # UPDATE and friends name their sections differently
    if len(reference.question) == 1 and ours.question is not None:
        question = reference.question[0]
        assert (ours.question.name, ours.question.qtype) == (name_text(question.name),
                                                             int(question.rdtype))
        assert ours.answers_complete or len(ours.answers) == MAX_ANSWERS
        assert {(a.name, a.rtype, str(ipaddress.ip_address(a.data)) if a.rtype != 5 else a.data)
                for a in ours.answers} == expected_answers(reference)


def check_bounded(packet: bytes) -> None:
    try:
        message = parse(packet)
    except MalformedPacket:
        return
    assert len(message.answers) <= MAX_ANSWERS
    assert message.question is None or len(message.question.name) <= 4 * 255


@pytest.fixture(scope="module")
def packets():
    rng = random.Random(20261123)
    seeds = seed_packets(rng)
    cases = [mutate(rng, rng.choice(seeds)) for _ in range(CASES * 9 // 10)]
    cases += [rng.randbytes(rng.randrange(64)) for _ in range(CASES // 20)]
    cases += [b"\x12\x34\x81\x80" + rng.randbytes(rng.randrange(8, 200)) for _ in range(CASES // 20)]
    return seeds, cases


def test_parser_agrees_with_dnspython_on_real_packets(packets):
    seeds, _ = packets
    for packet in seeds:
        agree(packet, dns.message.from_wire(packet))


def test_fuzz_no_escape_bounded_and_agreeing(packets):
    seeds, cases = packets
    assert len(cases) >= CASES
    compared = 0
    for packet in cases:
        check_bounded(packet)
        reference = oracle(packet)
        if reference is not None:
            agree(packet, reference)
            compared += 1
    assert compared > 1000  # the mutator keeps enough packets valid to mean something


def test_fuzz_through_the_tracker_never_raises(packets):
    _, cases = packets
    tracker = DnsTracker(timeout_ns=10)
    workload = Workload(1, 1, "fuzz")
    for index, packet in enumerate(cases[:20000]):
        tracker.observe(DnsPacket(index, workload, index % 2 == 0,
                                  ("198.18.30.1", 5353), ("198.18.30.2", 53), packet))
    tracker.expire(10**12)
    assert tracker.pending == 0
    assert tracker.losses["dns.malformed_packet"] > 0
