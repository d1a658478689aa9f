"""The hand-written DNS parser on packets built by dnspython and on crafted bad ones."""

import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from otel_netreceiver.flows.dns_parser import (
    MAX_ANSWERS,
    MalformedPacket,
    parse,
    read_answers,
    read_name,
    tcp_messages,
)


def response(qname="www.example.com.", rdtype="A", rcode=dns.rcode.NOERROR, records=()):
    query = dns.message.make_query(qname, rdtype)
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    for name, ttl, rtype, *data in records:
        reply.answer.append(dns.rrset.from_text(name, ttl, "IN", rtype, *data))
    return reply


def header(ident=1, flags=0, qd=1, an=0):
    return struct.pack("!HHHHHH", ident, flags, qd, an, 0, 0)


def test_query_header_and_question():
    query = dns.message.make_query("WWW.Example.COM.", "AAAA")
    message = parse(query.to_wire())
    assert (message.id, message.is_response, message.opcode, message.rcode) == (query.id, False, 0, 0)
    assert (message.question.name, message.question.qtype, message.question.qclass) == (
        "www.example.com", 28, 1)
    assert message.answers == () and message.answers_complete


def test_answers_a_aaaa_cname_with_ttls():
    reply = response(records=[
        ("www.example.com.", 300, "CNAME", "cdn.example.net."),
        ("cdn.example.net.", 60, "A", "198.18.31.50"),
        ("cdn.example.net.", 30, "AAAA", "2001:db8::1"),
        ("cdn.example.net.", 30, "TXT", '"ignored"'),
    ])
    answers = [(a.name, a.rtype, a.ttl, a.data) for a in parse(reply.to_wire()).answers]
    assert answers == [
        ("www.example.com", 5, 300, "cdn.example.net"),
        ("cdn.example.net", 1, 60, "198.18.31.50"),
        ("cdn.example.net", 28, 30, "2001:db8::1"),
    ]


@pytest.mark.parametrize("rcode, error_type", [
    (dns.rcode.NOERROR, ""),
    (dns.rcode.NXDOMAIN, "nxdomain"),
    (dns.rcode.SERVFAIL, "servfail"),
    (dns.rcode.REFUSED, "refused"),
    (dns.rcode.FORMERR, "formerr"),
    (dns.rcode.NOTIMP, "notimp"),
])
def test_rcode_to_error_type(rcode, error_type):
    assert parse(response(rcode=rcode).to_wire()).error_type == error_type


@pytest.mark.parametrize("wire, text", [
    (b"\x00", "."),
    (b"\x03ABC\x00", "abc"),
    (b"\x03a.b\x00", "a\\.b"),
    (b"\x02\x00\xff\x00", "\\000\\255"),
    (b"\x01 \x00", "\\032"),
    (b"\x01@\x00", "\\@"),
])
def test_name_text_matches_presentation_format(wire, text):
    assert read_name(wire, 0) == (text, len(wire))


def test_compression_pointer_resumes_after_pointer():
    data = b"\x03abc\x00" + b"\x01x\xc0\x00" + b"tail"
    assert read_name(data, 5) == ("x.abc", 9)


@pytest.mark.parametrize("data, offset, why", [
    (b"\x40abc", 0, "label type"),
    (b"\x80abc", 0, "label type"),
    (b"\x05ab", 0, "past the end"),
    (b"\xc0\x00", 0, "point back"),  # a pointer to itself: a loop
    (b"\x01a\xc0\x00", 0, "point back"),  # a pointer forward of the name start
    (b"\x01a\x00\xc0\x05\xc0\x03", 5, "point back"),  # two pointers forming a loop
    (b"\xc0", 0, "cut"),
    (b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3f" + b"d" * 63 + b"\x00",
     0, "longer than 255"),
])
def test_bad_names_raise(data, offset, why):
    with pytest.raises(MalformedPacket, match=why):
        read_name(data, offset)


def test_name_of_exactly_255_bytes_is_accepted():
    wire = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(wire) == 255
    assert read_name(wire, 0)[1] == 255


@pytest.mark.parametrize("data, why", [
    (b"", "shorter than a DNS header"),
    (b"\x00" * 11, "shorter than a DNS header"),
    (header(qd=1), "past the end"),  # the count says one question; there is none
    (header(qd=1) + b"\x00\x00", "question cut"),
])
def test_bad_headers_and_questions_raise(data, why):
    with pytest.raises(MalformedPacket, match=why):
        parse(data)


def test_lying_answer_count_keeps_what_is_there():
    wire = response(records=[("www.example.com.", 60, "A", "198.18.31.1")]).to_wire()
    lying = wire[:6] + struct.pack("!H", 500) + wire[8:]
    message = parse(lying)
    assert [a.data for a in message.answers] == ["198.18.31.1"]
    assert not message.answers_complete


def test_truncated_capture_keeps_header_question_and_whole_records():
    records = [("www.example.com.", 60, "A", f"198.18.31.{i}") for i in range(1, 41)]
    wire = response(records=records).to_wire()
    message = parse(wire[:300])
    assert message.question.name == "www.example.com"
    assert 0 < len(message.answers) < 40 and not message.answers_complete


def test_answers_are_bounded():
    records = [("www.example.com.", 60, "A", f"198.18.{i // 250}.{i % 250}") for i in range(200)]
    message = parse(response(records=records).to_wire())
    assert len(message.answers) == MAX_ANSWERS and message.answers_complete


def test_a_record_with_wrong_length_stops_the_answers():
    wire = header(flags=0x8000, an=1) + b"\x01a\x00\x00\x01\x00\x01"
    wire += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x03\x01\x02\x03"
    message = parse(wire)
    assert message.answers == () and not message.answers_complete


@pytest.mark.parametrize("stream, expected", [
    (b"", ([], True)),
    (b"\x00\x03abc", ([b"abc"], True)),
    (b"\x00\x03abc\x00\x01z", ([b"abc", b"z"], True)),
    (b"\x00\x05abc", ([], False)),
    (b"\x00\x40" + bytes(12) + b"xy", ([bytes(12) + b"xy"], False)),  # cut after its header
    (b"\x00\x03abc\x00", ([b"abc"], False)),
    (b"\x00\x00", ([], False)),
])
def test_tcp_messages(stream, expected):
    assert tcp_messages(stream) == expected


@pytest.mark.parametrize("wire", [
    response(records=[("www.example.com.", 300, "CNAME", "cdn.example.net."),
                      ("cdn.example.net.", 60, "A", "198.18.80.50")]).to_wire(),
    response(rcode=dns.rcode.NXDOMAIN).to_wire(),
    dns.message.make_query("a.example.", "AAAA").to_wire(),
    header(qd=0, an=1) + b"\x00" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes(4),
    header(qd=2, an=1) + b"\x01a\x00\x00\x01\x00\x01" * 2 + b"\x00"
    + struct.pack("!HHIH", 1, 1, 5, 4) + bytes(4),
    response(records=[("www.example.com.", 60, "A", "198.18.80.50")]).to_wire()[:-2],  # cut
])
def test_answers_read_later_equal_a_full_parse(wire):
    later = parse(wire, answers=False)
    assert later.answers == ()
    read_answers(wire, later)
    assert later == parse(wire)
