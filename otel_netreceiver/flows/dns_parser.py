"""A small, strict DNS message parser for captured packets (RFC 1035 wire format).

Only what the agent needs: the header, the first question, and the A / AAAA / CNAME
records of the answer section. Every read is bounds-checked: labels are at most 63
bytes, names at most 255 wire bytes, compression pointers must point strictly
backwards (so they cannot loop) and are capped in number, and section counts are never
trusted beyond the bytes present. Anything else raises `MalformedPacket`, the only
exception this module raises on bad input.

The per-packet cost matters (every DNS packet of the host goes through here): an
uncompressed name (the usual question), or a lone pointer to one (the usual answer
owner), is walked once and its text looked up in a small cache keyed by its wire
bytes; `parse(..., answers=False)` stops after the question, which is all that
matching a response to its query needs.

The answer section is read leniently: packets are captured with a bounded length, so a
long response may be cut short; the records before the cut are kept and
`answers_complete` says whether the section was read to its end.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")
FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength of a resource record
QFIXED = struct.Struct("!HH")  # qtype, qclass

MAX_LABEL = 63
MAX_NAME = 255
MAX_POINTERS = 64  # far more than any real name needs; bounds work on hostile input
MAX_ANSWERS = 64
MAX_CACHED_NAMES = 4096  # wire form -> text; cleared when full (hostile input stays bounded)

TYPE_A, TYPE_CNAME, TYPE_AAAA = 1, 5, 28
CLASS_IN = 1

# Printable bytes that need no escape in presentation format (as dnspython prints them).
_SAFE = bytes(c for c in range(0x21, 0x7F) if c not in b'"().;\\@$')
_ESCAPES = [
    chr(c) if c in _SAFE else ("\\" + chr(c) if 0x20 < c < 0x7F else f"\\{c:03d}")
    for c in range(256)
]

RCODE_NAMES = {
    # rcode -> error.type; NOERROR (0) has none. Names as IANA registers them, lowercase.
    1: "formerr", 2: "servfail", 3: "nxdomain", 4: "notimp", 5: "refused",
    6: "yxdomain", 7: "yxrrset", 8: "nxrrset", 9: "notauth", 10: "notzone",
}


class MalformedPacket(ValueError):
    """The bytes are not a DNS message this parser can read; str() says why and where."""


@dataclass(slots=True)  # not frozen: built per packet, and frozen init costs ~2 µs
class Question:
    name: str  # lowercase, no final dot; "." for the root
    qtype: int
    qclass: int


@dataclass(slots=True)  # not frozen: built per packet, and frozen init costs ~2 µs
class Answer:
    """An A / AAAA record (data = address text) or a CNAME (data = target name)."""

    name: str
    rtype: int
    ttl: int
    data: str


@dataclass(slots=True)  # not frozen: built per packet, and frozen init costs ~2 µs
class Message:
    id: int
    is_response: bool
    opcode: int
    rcode: int
    truncated: bool
    question: Question | None
    answers: tuple[Answer, ...] = ()
    answers_complete: bool = True
    answer_count: int = 0  # ANCOUNT of the header, whether or not the answers were read
    answers_at: int = 0  # offset of the answer section after the one question; 0: none

    @property
    def error_type(self) -> str:
        """The `error.type` value: lowercase rcode name, "" for NOERROR."""
        if self.rcode == 0:
            return ""
        return RCODE_NAMES.get(self.rcode, f"rcode{self.rcode}")


def parse(data: bytes, max_answers: int = MAX_ANSWERS, answers: bool = True) -> Message:
    """Parse one DNS message; raise MalformedPacket if header or question is unreadable.

    With `answers=False` the answer section is not read (`answers` stays empty and
    `answers_complete` False when there are some); the result is otherwise the same.
    """
    if len(data) < HEADER.size:
        raise MalformedPacket(f"{len(data)} bytes, shorter than a DNS header")
    ident, flags, qdcount, ancount, _, _ = HEADER.unpack_from(data)
    question, offset = None, HEADER.size
    if qdcount:
        question, offset = _question(data, offset)
    single = qdcount == 1  # with more questions, the answers are not ours to judge
    message = Message(ident, bool(flags & 0x8000), (flags >> 11) & 0xF, flags & 0xF,
                      bool(flags & 0x0200), question, (),
                      qdcount == 0 or (single and not ancount), ancount, offset if single else 0)
    if answers:
        read_answers(data, message, max_answers)
    return message


def read_answers(data: bytes, message: Message, max_answers: int = MAX_ANSWERS) -> None:
    """Fill `answers` of a message parsed with `answers=False` (from the same bytes)."""
    if message.answers_at and message.answer_count:
        message.answers, message.answers_complete = _answers(
            data, message.answers_at, message.answer_count, max_answers)


def _question(data: bytes, offset: int) -> tuple[Question, int]:
    name, offset = read_name(data, offset)
    if offset + QFIXED.size > len(data):
        raise MalformedPacket(f"question cut at byte {offset}")
    qtype, qclass = QFIXED.unpack_from(data, offset)
    return Question(name, qtype, qclass), offset + QFIXED.size


def _answers(data: bytes, offset: int, count: int, limit: int) -> tuple[tuple[Answer, ...], bool]:
    """Read up to `count` records; keep A/AAAA/CNAME of class IN, at most `limit`."""
    kept: list[Answer] = []
    try:
        for _ in range(count):
            answer, offset = _record(data, offset)
            if answer is not None and len(kept) < limit:
                kept.append(answer)
    except MalformedPacket:
        return tuple(kept), False
    return tuple(kept), True


def _record(data: bytes, offset: int) -> tuple[Answer | None, int]:
    name, offset = read_name(data, offset)
    if offset + FIXED.size > len(data):
        raise MalformedPacket(f"record header cut at byte {offset}")
    rtype, rclass, ttl, rdlength = FIXED.unpack_from(data, offset)
    start = offset + FIXED.size
    end = start + rdlength
    if end > len(data):
        raise MalformedPacket(f"rdata cut at byte {start}")
    if rclass != CLASS_IN:
        return None, end
    return _rdata(data, name, rtype, ttl, start, end), end


def _rdata(data: bytes, name: str, rtype: int, ttl: int, start: int, end: int) -> Answer | None:
    size = end - start
    if rtype == TYPE_A and size == 4:
        return Answer(name, rtype, ttl, socket.inet_ntop(socket.AF_INET, data[start:end]))
    if rtype == TYPE_AAAA and size == 16:
        return Answer(name, rtype, ttl, socket.inet_ntop(socket.AF_INET6, data[start:end]))
    if rtype == TYPE_CNAME:
        target, stop = read_name(data, start)
        if stop != end:
            raise MalformedPacket(f"CNAME rdata length {size} disagrees with its name")
        return Answer(name, rtype, ttl, target)
    if rtype in (TYPE_A, TYPE_AAAA):
        raise MalformedPacket(f"type {rtype} record with {size} bytes of rdata")
    return None


_names: dict[bytes, str] = {}


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """Read a possibly compressed name at `offset`; return (text, offset after it).

    Fast path: an uncompressed name, or a lone pointer back to one (how answers name
    their owner), is walked label by label (lengths only) and its text taken from the
    cache; anything else (more pointers, bad lengths, too long, cut) goes through
    `_read_name`, which raises the precise error.
    """
    start, after = offset, -1
    if offset + 1 < len(data) and data[offset] >= 0xC0:
        target = ((data[offset] & 0x3F) << 8) | data[offset + 1]
        if target < offset:
            start, after = target, offset + 2
    found = _cached_name(data, start)
    if found is None:
        return _read_name(data, offset)
    return found[0], (found[1] if after < 0 else after)


def _cached_name(data: bytes, offset: int) -> tuple[str, int] | None:
    """(text, offset after it) of an uncompressed, well-formed name, else None."""
    end, size = offset, len(data)
    while end < size:
        length = data[end]
        if length == 0:
            if end - offset >= MAX_NAME:
                return None
            wire = data[offset:end]
            text = _names.get(wire)
            if text is None:
                text = _read_name(data, offset)[0]
                if len(_names) >= MAX_CACHED_NAMES:
                    _names.clear()
                _names[wire] = text
            return text, end + 1
        if length > MAX_LABEL:
            return None
        end += length + 1
    return None


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """read_name without the cache: every check, and compression pointers."""
    labels: list[bytes] = []
    wire_length, pointers, after, limit = 1, 0, -1, offset
    while True:
        if offset >= len(data):
            raise MalformedPacket(f"name runs past the end at byte {offset}")
        length = data[offset]
        if length >= 0xC0:
            after = offset + 2 if after < 0 else after
            offset = limit = _follow(data, offset, limit, pointers)
            pointers += 1
            continue
        if length > MAX_LABEL:
            raise MalformedPacket(f"label type 0x{length:02x} at byte {offset}")
        if length == 0:
            return _text(labels), (offset + 1 if after < 0 else after)
        wire_length += length + 1
        if wire_length > MAX_NAME:
            raise MalformedPacket(f"name longer than {MAX_NAME} bytes at byte {offset}")
        labels.append(data[offset + 1:offset + 1 + length])
        offset += length + 1


def _follow(data: bytes, offset: int, limit: int, pointers: int) -> int:
    """Resolve a compression pointer; it must point before every earlier pointer target."""
    if pointers >= MAX_POINTERS:
        raise MalformedPacket(f"more than {MAX_POINTERS} compression pointers")
    if offset + 1 >= len(data):
        raise MalformedPacket(f"compression pointer cut at byte {offset}")
    target = ((data[offset] & 0x3F) << 8) | data[offset + 1]
    if target >= limit:
        raise MalformedPacket(f"compression pointer at byte {offset} does not point back")
    return target


def _text(labels: list[bytes]) -> str:
    if not labels:
        return "."
    return ".".join(_label_text(label.lower()) for label in labels)


def _label_text(label: bytes) -> str:
    if not label.translate(None, _SAFE):
        return label.decode("ascii")
    return "".join(_ESCAPES[c] for c in label)


def tcp_messages(stream: bytes) -> tuple[list[bytes], bool]:
    """Split DNS-over-TCP bytes (2-byte length prefixes) into messages.

    Returns the messages and whether the bytes ended on a message boundary. A last
    message cut short (by the capture length, or continued in the next segment) is
    still returned when its header is there: its question and rcode are readable, and
    the parser keeps the answers before the cut.
    """
    messages: list[bytes] = []
    offset = 0
    while offset + 2 <= len(stream):
        length = (stream[offset] << 8) | stream[offset + 1]
        end = offset + 2 + length
        if length == 0:
            return messages, False
        if end > len(stream):
            if len(stream) - offset - 2 >= HEADER.size:
                messages.append(stream[offset + 2:])
            return messages, False
        messages.append(stream[offset + 2:end])
        offset = end
    return messages, offset == len(stream)
