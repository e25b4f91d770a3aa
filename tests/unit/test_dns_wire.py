"""The resolver's fast wire path against dnspython (the reference), and malformed packets.

lowbridge/dns/wire.py hand-encodes the everyday answers for speed; these tests hold it to
byte-for-byte equality with dnspython's encoder over generated queries and answers, and feed both
paths garbage.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rdatatype
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbridge.dns import records as R
from lowbridge.dns import wire

LDH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
labels = st.text(alphabet=LDH, min_size=1, max_size=20)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.ip_addresses(v=6).map(str)
answers = st.one_of(
    st.lists(ipv4, max_size=120, unique=True).map(
        lambda ips: R.Answer(R.NOERROR, tuple((R.A, i) for i in ips))
    ),
    st.lists(ipv6, max_size=60, unique=True).map(
        lambda ips: R.Answer(R.NOERROR, tuple((R.AAAA, i) for i in ips))
    ),
    names.map(lambda n: R.Answer(R.NOERROR, ((R.PTR, n + "."),))),
    st.sampled_from([R.SERVFAIL, R.NXDOMAIN, R.REFUSED, R.NOERROR]).map(R.Answer),
)
QTYPES = ["A", "AAAA", "PTR", "MX", "TXT", "SRV"]
edns_sizes = st.one_of(st.none(), st.sampled_from([0, 512, 1232, 4096, 65535]),
                       st.integers(0, 65535))  # fmt: skip
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _query(name: str, qtype: str, edns: int | None, qid: int, rd: bool) -> dns.message.Message:
    msg = dns.message.make_query(name, qtype, use_edns=False if edns is None else 0,
                                 payload=edns or 0 if edns is not None else 1232)  # fmt: skip
    msg.id = qid
    if not rd:
        msg.flags &= ~dns.flags.RD
    return msg


@FAST
@given(names, st.sampled_from(QTYPES), edns_sizes, st.integers(0, 65535), st.booleans(),
       answers, st.booleans())  # fmt: skip
def test_fast_path_equals_dnspython(name, qtype, edns, qid, rd, answer, tcp):
    msg = _query(name, qtype, edns, qid, rd)
    data = msg.to_wire()
    q = wire.parse(data)
    assert q is not None
    assert (q.id, q.qname, q.qtype, q.edns) == (
        qid, name.lower(), int(dns.rdatatype.from_text(qtype)), edns)  # fmt: skip
    fast, ref = wire.build(q, answer, tcp), wire.library_build(msg, answer, tcp)
    if any(rtype == R.PTR for rtype, _ in answer.records):
        # dnspython may compress the PTR target against the question; the fast path never does.
        fast_msg, ref_msg = dns.message.from_wire(fast), dns.message.from_wire(ref)
        assert fast_msg == ref_msg and fast_msg.flags == ref_msg.flags
        assert fast_msg.answer == ref_msg.answer and fast_msg.rcode() == ref_msg.rcode()
    else:
        assert fast == ref


@FAST
@given(st.lists(ipv4, min_size=1, max_size=400, unique=True), edns_sizes)
def test_truncation_keeps_the_question_and_sets_tc(ips, edns):
    msg = _query("big", "A", edns, 7, True)
    q = wire.parse(msg.to_wire())
    out = dns.message.from_wire(wire.build(q, R.Answer(R.NOERROR, tuple((R.A, i) for i in ips))))
    assert len(out.question) == 1  # glibc drops answers without it (dns-notes 3.2)
    kept = sum(len(rrset) for rrset in out.answer)
    limit = max(512, edns) if edns is not None else 512
    assert bool(out.flags & dns.flags.TC) == (kept < len(ips))
    assert len(wire.build(q, R.Answer(R.NOERROR, tuple((R.A, i) for i in ips)))) <= limit


def _lookup(name: str, qtype: int):
    if name == "web" and qtype == R.A:
        return R.Answer(R.NOERROR, ((R.A, "10.0.0.2"),))
    return None


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_breaks_either_path(data):
    q = wire.parse(data)
    if q is not None:  # the fast path only takes what dnspython reads the same way
        ref = dns.message.from_wire(data)
        assert ref.id == q.id and ref.question[0].name.to_text(True).lower() == q.qname
    out = wire.library_respond(data, _lookup)
    assert out is None or isinstance(out, bytes)
    assert isinstance(wire.library_error(data, R.SERVFAIL), bytes)


@settings(max_examples=1500, deadline=None)
@given(names, st.sampled_from(QTYPES), edns_sizes, st.data())
def test_mutated_queries(name, qtype, edns, data):
    raw = bytearray(_query(name, qtype, edns, 1, True).to_wire())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for packet in (bytes(raw), bytes(raw[:cut])):
        q = wire.parse(packet)
        if q is not None:
            ref = dns.message.from_wire(packet)
            assert ref.id == q.id and int(ref.question[0].rdtype) == q.qtype
            assert wire.build(q, R.Answer()) == wire.library_build(ref, R.Answer())
        wire.library_respond(packet, _lookup)


def test_library_path_answers_what_the_fast_path_declines():
    # Two questions: FORMERR; an opcode other than QUERY: NOTIMP; a response: dropped.
    two = dns.message.make_query("web", "A")
    two.question.append(dns.message.make_query("api", "A").question[0])
    assert dns.message.from_wire(wire.library_respond(two.to_wire(), _lookup)).rcode() == 1
    notify = dns.message.make_query("web", "A")
    notify.set_opcode(dns.opcode.NOTIFY)
    out = dns.message.from_wire(wire.library_respond(notify.to_wire(), _lookup))
    assert out.rcode() == 4
    assert wire.library_respond(dns.message.make_response(notify).to_wire(), _lookup) == b""
    # A name with an escaped byte is fine for the library.
    odd = dns.message.make_query("w\\.eb", "A")
    assert wire.parse(odd.to_wire()) is None
    assert wire.library_respond(odd.to_wire(), _lookup) is None  # not ours: forward
    web = dns.message.make_query("WEB", "A", use_edns=0)
    web.flags &= ~dns.flags.RD
    web.question[0].name  # noqa: B018
    resp = dns.message.from_wire(wire.library_respond(web.to_wire(), _lookup))
    assert resp.answer[0][0].address == "10.0.0.2"


def test_response_checks():
    q = wire.parse(dns.message.make_query("web", "A").to_wire())
    ok = wire.build(q, R.Answer(R.NXDOMAIN))
    assert wire.response_ok(ok, q.id)
    assert not wire.response_ok(ok, q.id ^ 1)
    assert not wire.response_ok(wire.build(q, R.Answer(R.SERVFAIL)), q.id)
    assert not wire.response_ok(wire.build(q, R.Answer(R.REFUSED)), q.id)
    assert not wire.response_ok(b"\x00", q.id)
