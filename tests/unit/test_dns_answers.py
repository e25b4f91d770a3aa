"""The resolver's memo of answers (server.Resolver.answer): a question asked again gets the bytes
a fresh answer would have, with its own ID; shuffled answers are never kept; the memo is bounded.
(That a sync empties it is shown with real queries: tests/integration/test_dns.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import dns.message
import pytest

from lowbridge.dns import records as R
from lowbridge.dns import server

WEB, POOL = "10.0.0.2", ["10.0.0.3", "10.0.0.4"]


def _resolver() -> server.Resolver:
    """A resolver with one sandbox's view and no sockets (answer() needs neither)."""
    r = server.Resolver.__new__(server.Resolver)
    r.generation = r.generation_seen = b"\0" * 8
    zone = R.Zone("front", by_name={"web": [WEB], "pool": list(POOL)}, ptr={WEB: "web.front"})
    r.views, r.answers, r.library_only = {"c1": R.View([zone])}, {}, False
    return r


def _query(name: str, qtype: str, qid: int, edns: bool = False) -> bytes:
    msg = dns.message.make_query(name, qtype, use_edns=0 if edns else False)
    msg.id = qid
    return msg.to_wire()


SANDBOX = SimpleNamespace(cid="c1")


@pytest.mark.parametrize("tcp", [False, True])
@pytest.mark.parametrize(
    "name, qtype, edns",
    [("web", "A", False), ("WEB.front", "A", True), ("web", "AAAA", False),
     ("2.0.0.10.in-addr.arpa", "PTR", True)],
)  # fmt: skip
def test_a_repeated_question_gets_a_fresh_answers_bytes_with_its_own_id(name, qtype, edns, tcp):
    memo = _resolver()
    first = memo.answer(SANDBOX, _query(name, qtype, 0x1111, edns), tcp)
    again = memo.answer(SANDBOX, _query(name, qtype, 0x2222, edns), tcp)
    fresh = _resolver().answer(SANDBOX, _query(name, qtype, 0x2222, edns), tcp)
    assert len(memo.answers) == 1 and again == fresh and first[2:] == again[2:]
    assert dns.message.from_wire(again).id == 0x2222


def test_shuffled_addresses_and_forwarded_questions_are_not_kept():
    r = _resolver()
    orders = set()
    for qid in range(40):
        reply = dns.message.from_wire(r.answer(SANDBOX, _query("pool", "A", qid), False))
        orders.add(tuple(rr.address for rrset in reply.answer for rr in rrset))
    assert orders == {tuple(POOL), tuple(reversed(POOL))}
    assert r.answer(SANDBOX, _query("example.test", "A", 1), False) is None  # forwarded
    assert r.answers == {}


def test_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(server, "ANSWERS_KEPT", 3)
    r = _resolver()
    for qid in range(10):
        r.answer(SANDBOX, _query("web", "A", 1, edns=bool(qid % 2)), qid % 4 > 1)
        assert len(r.answers) <= 3
