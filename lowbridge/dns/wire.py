"""DNS on the wire: a fast path for the resolver's everyday answers, dnspython for the rest.

The fast path handles the common query exactly as dnspython would -- one uncompressed question
of class IN, an optional EDNS(0) OPT record, opcode QUERY -- and builds the A/AAAA/PTR/empty/
error answers arithmetically.  Anything else (several questions, compression in a query, other
classes, EDNS versions, malformed packets) is handed to dnspython.  Why: dnspython costs ~450 us per
answer on these machines and caps the resolver at ~3.5k queries/s, against ~5 us and ~30k for
the fast path, the league of aardvark-dns (shared/reference/dns-notes.md 3-4; bench/dns.py).
tests/unit/test_dns_wire.py checks the fast path against dnspython's encoder with generated
queries and feeds both malformed packets.

Answers follow Docker's resolver (miekg/dns): RA set, AA and AD clear, RD copied, TTL 600,
OPT echoed when the query had one, UDP answers cut to 512 bytes or the client's EDNS size by
dropping records and setting TC (the question is kept: glibc drops answers without it).
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from lowbridge.dns import TTL
from lowbridge.dns.records import AAAA, FORMERR, NOTIMP, PTR, SERVFAIL, Answer

HEADER = struct.Struct("!HHHHHH")
OPT_TYPE = 41
CLASS_IN = 1
UDP_MIN = 512  # RFC 1035 4.2.1
OUR_EDNS_SIZE = 1232  # the payload size we advertise (DNS flag day 2020)
TCP_MAX = 65535
_QR, _AA, _TC, _RD, _RA, _AD, _CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
# OPT RR we append to answers: root name, type 41, class = our payload size, TTL 0, no options.
_NAME_BYTES = b"-_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_OPT = b"\x00" + struct.pack("!HHIH", OPT_TYPE, OUR_EDNS_SIZE, 0, 0)


class Query(NamedTuple):
    """A query the fast path understood (a NamedTuple: ~3x cheaper to make than a frozen
    dataclass, and this is made once per query)."""

    id: int
    flags: int
    question: bytes  # QNAME QTYPE QCLASS as received
    qname: str  # lower-cased, dotted, without the trailing dot ("" for the root)
    qtype: int
    edns: int | None  # the client's UDP payload size, None without EDNS

    def limit(self, tcp: bool) -> int:
        """Largest answer this client takes."""
        if tcp:
            return TCP_MAX
        return max(UDP_MIN, self.edns) if self.edns is not None else UDP_MIN


def parse(data: bytes) -> Query | None:
    """The query in ``data`` if it is an everyday one (see the module docstring), else None."""
    if len(data) < 17:  # header + root name + type + class
        return None
    qid, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    if flags & 0xF800 or qd != 1 or an or ns or ar > 1:  # QR set, opcode != QUERY, odd counts
        return None
    pos, labels = 12, []
    while True:
        if pos >= len(data):
            return None
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63 or pos + 1 + length > len(data):  # compression pointers land here too
            return None
        label = data[pos + 1 : pos + 1 + length]
        if label.translate(None, _NAME_BYTES):  # other bytes: leave escaping to the library
            return None
        labels.append(label.decode().lower())
        pos += 1 + length
        if pos - 12 > 255:
            return None
    if pos + 4 > len(data):
        return None
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    question = data[12 : pos + 4]
    pos += 4
    if qclass != CLASS_IN:
        return None
    edns = None
    if ar:
        # OPT: root name, TYPE 41, CLASS = payload size, TTL = ext-rcode/version/flags, RDATA.
        if pos + 11 > len(data) or data[pos] != 0:
            return None
        rtype, size, ttl, rdlen = struct.unpack_from("!HHIH", data, pos + 1)
        if rtype != OPT_TYPE or (ttl >> 16) & 0xFF != 0 or pos + 11 + rdlen != len(data):
            return None  # not OPT, or EDNS version != 0 (BADVERS): the library's business
        edns = size
        pos += 11 + rdlen
    if pos != len(data):
        return None
    return Query(qid, flags, question, ".".join(labels), qtype, edns)


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


# An A record's fixed part: a pointer to the question's name, TYPE A, CLASS IN, TTL, RDLENGTH 4.
_A_HEAD = b"\xc0\x0c" + struct.pack("!HHIH", 1, CLASS_IN, TTL, 4)
_AAAA_HEAD = b"\xc0\x0c" + struct.pack("!HHIH", AAAA, CLASS_IN, TTL, 16)


def _record(rtype: int, value: str) -> bytes:
    if rtype == PTR:
        rdata = encode_name(value)
        return b"\xc0\x0c" + struct.pack("!HHIH", rtype, CLASS_IN, TTL, len(rdata)) + rdata
    if rtype == AAAA:
        return _AAAA_HEAD + socket.inet_pton(socket.AF_INET6, value)
    return _A_HEAD + socket.inet_aton(value)  # A


def build(query: Query, answer: Answer, tcp: bool = False) -> bytes:
    """The response to ``query``: ``answer``'s rcode and records, cut to fit (TC)."""
    records = [_record(rtype, value) for rtype, value in answer.records]
    opt = _OPT if query.edns is not None else b""
    room = query.limit(tcp) - HEADER.size - len(query.question) - len(opt)
    flags = _QR | (query.flags & _RD) | _RA | (answer.rcode & 0xF)
    kept, used = 0, 0
    for rr in records:
        if used + len(rr) > room:
            flags |= _TC
            break
        used += len(rr)
        kept += 1
    header = HEADER.pack(query.id, flags, 1, kept, 0, 1 if opt else 0)
    return header + query.question + b"".join(records[:kept]) + opt


def error(query: Query, rcode: int = SERVFAIL) -> bytes:
    return build(query, Answer(rcode))


def response_ok(reply: bytes, qid: int) -> bool:
    """An upstream reply worth relaying verbatim: a response to our id, not SERVFAIL/REFUSED
    (Docker then tries the next server)."""
    if len(reply) < HEADER.size:
        return False
    rid, flags = struct.unpack_from("!HH", reply)
    return rid == qid and bool(flags & _QR) and flags & 0xF not in (2, 5)


def query_id(data: bytes) -> int | None:
    return struct.unpack_from("!H", data)[0] if len(data) >= 2 else None


# ---------------------------------------------------------------------------- library path
def library_respond(data: bytes, decide, tcp: bool = False) -> bytes | None:  # noqa: ANN001
    """Answer what the fast path declined, with dnspython: ``decide(qname, qtype)`` gives an
    :class:`Answer` or None (forward).  Returns the response, None to forward ``data`` as it is,
    or b"" to drop it (not even a header to answer)."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.opcode
    import dns.rdataclass

    try:
        msg = dns.message.from_wire(data)
    except dns.message.ShortHeader:
        return b""
    except (dns.exception.DNSException, ValueError, IndexError):
        return _header_error(data, FORMERR)
    if msg.flags & dns.flags.QR:
        return b""  # a response sent to us: never answer it
    if msg.opcode() != dns.opcode.QUERY:
        return _header_error(data, NOTIMP, msg)
    if len(msg.question) != 1:
        return _header_error(data, FORMERR, msg)
    q = msg.question[0]
    if q.rdclass != dns.rdataclass.IN:
        return None
    result = decide(q.name.to_text(omit_final_dot=True).lower(), int(q.rdtype))
    if result is None:
        return None
    return library_build(msg, result, tcp)


def library_build(msg, answer: Answer, tcp: bool = False) -> bytes:  # noqa: ANN001
    """dnspython's encoding of ``answer`` to ``msg`` (the reference for :func:`build`)."""
    import dns.exception
    import dns.flags
    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset

    resp = dns.message.make_response(msg, our_payload=OUR_EDNS_SIZE)
    resp.flags = dns.flags.QR | (msg.flags & dns.flags.RD) | dns.flags.RA
    resp.set_rcode(answer.rcode)
    name = msg.question[0].name
    rrs = []
    for rtype, value in answer.records:
        rrset = dns.rrset.from_text(name, TTL, dns.rdataclass.IN, dns.rdatatype.RdataType(rtype),
                                    value)  # fmt: skip
        rrs.append(rrset)
    if msg.edns >= 0:
        limit = TCP_MAX if tcp else max(UDP_MIN, msg.payload)
    else:
        limit = TCP_MAX if tcp else UDP_MIN

    def wire(count: int) -> bytes:
        resp.answer = []
        for rrset in rrs[:count]:
            resp.answer.append(rrset)
        return resp.to_wire(max_size=limit)

    # Each record is its own RRset so that they keep the given (shuffled) order; cut by binary
    # search on the count (dnspython raises TooBig rather than truncating).
    try:
        return wire(len(rrs))
    except dns.exception.TooBig:
        pass
    lo, hi = 0, len(rrs)  # lo fits, hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            wire(mid)
            lo = mid
        except dns.exception.TooBig:
            hi = mid
    resp.flags |= dns.flags.TC
    return wire(lo)


def library_error(data: bytes, rcode: int) -> bytes:
    """An error answer to any query the library can read (b"" if not even a header)."""
    import dns.exception
    import dns.message

    if len(data) < HEADER.size:
        return b""
    try:
        msg = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError, IndexError):
        msg = None
    return _header_error(data, rcode, msg)


def _header_error(data: bytes, rcode: int, msg=None) -> bytes:  # noqa: ANN001
    """An error answer echoing the id (and question, when there is exactly one)."""
    if msg is not None and len(msg.question) == 1:
        import dns.message

        resp = dns.message.make_response(msg)
        resp.flags = 0x8000 | (msg.flags & _RD) | _RA
        resp.set_rcode(rcode)
        return resp.to_wire()
    qid, flags = struct.unpack_from("!HH", data)
    return HEADER.pack(qid, _QR | (flags & 0x7800) | (flags & _RD) | _RA | rcode, 0, 0, 0, 0)
