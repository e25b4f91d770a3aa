"""The rule model against golden files, for both backends, and the iptables executor's script.

Regenerate them with ``LOWBRIDGE_REGEN_GOLDEN=1 pytest tests/unit/test_firewall_rules.py``
and review the diff: they are the contract with the kernel.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lowbridge.firewall import iptables, nftables
from lowbridge.firewall import rules as R
from lowbridge.ports import PortMapping

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
REGEN = os.environ.get("LOWBRIDGE_REGEN_GOLDEN") == "1"

BR1 = R.FwNetwork("net1", "lb-1111111111aa", "172.18.0.0/16")
BR2 = R.FwNetwork("net2", "lb-2222222222bb", "172.19.0.0/16")
DEFAULT = R.FwNetwork("bridge", "lowbridge0", "172.17.0.0/16")


def _eps(*pairs: tuple[R.FwNetwork, str]) -> tuple[R.FwEndpoint, ...]:
    return tuple(R.FwEndpoint(ip, net.name, net.device) for net, ip in pairs)


def _model(*nets: R.FwNetwork, ports=()) -> R.Model:
    """``nets`` with one endpoint each (``.2`` of the subnet), in network order."""
    eps = _eps(*((n, n.subnet.split("/")[0][:-1] + "2") for n in nets))
    return R.Model(list(nets), list(ports), endpoints=eps)


def _port(host_ip, host_port, cport, proto="tcp", ip="172.18.0.2"):
    return R.FwPort(PortMapping(host_ip, host_port, cport, proto), ip, BR1.device, "web")


SCENARIOS = {
    "fresh-host": R.Model(),
    "default-bridge": _model(DEFAULT),
    "one-network": _model(BR1),
    "two-networks": _model(BR1, BR2),
    "internal": _model(R.FwNetwork("inner", "lb-3333333333cc", "10.30.0.0/24", internal=True)),
    "icc-false": _model(R.FwNetwork("noicc", "lb-4444444444dd", "172.18.0.0/16", icc=False)),
    "masquerade-off": _model(R.FwNetwork("nomasq", "lb-5555555555ee", "172.18.0.0/16",
                                         masquerade=False)),
    "published-ports": _model(
        BR1,
        ports=[
            _port("0.0.0.0", 8080, 80),
            _port("0.0.0.0", 5353, 53, "udp"),
            _port("0.0.0.0", 9000, 7000),
            _port("0.0.0.0", 9001, 7001),
            _port("192.168.77.2", 8443, 443),
            _port("127.0.0.1", 8081, 80),
        ],
    ),
}  # fmt: skip


def _check(path: Path, text: str) -> None:
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: regenerate with LOWBRIDGE_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs: review, then regenerate"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_iptables_golden(name):
    _check(GOLDEN / "iptables" / f"{name}.rules", iptables.render(R.render(SCENARIOS[name])))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_nftables_golden(name):
    _check(GOLDEN / "nftables" / f"{name}.nft", nftables.render(R.render(SCENARIOS[name])))


def test_every_rule_carries_a_lowbridge_comment():
    for model in SCENARIOS.values():
        for rule in R.render(model):
            assert rule.comment.startswith("lowbridge")


def test_no_network_means_no_rules():
    assert R.render(R.Model()) == []
    assert iptables.render([]) == "" and nftables.render([]) == ""


def test_isolation_needs_no_chain_raw_drops_cover_both_directions():
    rules = R.render(SCENARIOS["two-networks"])
    raw = {(dict(r.match)["dst"], dict(r.match)["!iif"]) for r in rules if r.chain == R.PREROUTING}
    assert raw == {("172.18.0.2", BR1.device), ("172.19.0.2", BR2.device)}


def test_settings():
    assert R.settings(SCENARIOS["internal"]) == R.Settings(False, False, ())
    assert R.settings(SCENARIOS["one-network"]) == R.Settings(True, False, ())
    assert R.settings(SCENARIOS["icc-false"]).br_netfilter
    pub = R.settings(SCENARIOS["published-ports"])
    assert pub.br_netfilter and pub.route_localnet == (BR1.device,)


# -- the iptables executor's script, from what iptables-save showed
def test_first_apply_declares_chains_and_inserts_hooks_user_first():
    text = iptables.script(R.render(SCENARIOS["one-network"]), {}, forward_drop=True)
    filt = text.split("*filter\n")[1].split("COMMIT")[0].splitlines()
    assert filt[0] == ":FORWARD DROP [0:0]"
    assert ":LOWBRIDGE-USER - [0:0]" in filt
    hooks = [ln for ln in filt if ln.startswith("-I FORWARD")]
    assert hooks == [
        '-I FORWARD 1 -m comment --comment "lowbridge" -j LOWBRIDGE-FORWARD',
        '-I FORWARD 1 -m comment --comment "lowbridge" -j LOWBRIDGE-USER',
    ]  # inserted in this order, USER ends up first


def _saved_with_hooks(user_rules=()):
    return {
        "filter": [":FORWARD ACCEPT [0:0]", ":LOWBRIDGE-USER - [0:0]", ":LOWBRIDGE-FORWARD - [0:0]",
                   ":LOWBRIDGE - [0:0]", "-A FORWARD -s 10.9.9.9/32 -j ACCEPT",
                   "-A FORWARD -m comment --comment lowbridge -j LOWBRIDGE-USER",
                   "-A FORWARD -m comment --comment lowbridge -j LOWBRIDGE-FORWARD",
                   *user_rules],
        "nat": [":LOWBRIDGE - [0:0]", ":LOWBRIDGE-POSTROUTING - [0:0]",
                "-A POSTROUTING -m comment --comment lowbridge -j LOWBRIDGE-POSTROUTING"],
        "raw": [],
    }  # fmt: skip


def test_reapply_never_flushes_user_chain_nor_duplicates_hooks():
    text = iptables.script(R.render(SCENARIOS["one-network"]), _saved_with_hooks(), None)
    assert ":LOWBRIDGE-USER" not in text
    assert "-I FORWARD" not in text and "-I POSTROUTING" not in text
    assert "-I PREROUTING 1" in text  # nat and raw PREROUTING hooks were missing
    assert ":FORWARD" not in text  # policy untouched
    assert "10.9.9.9" not in text  # what is not lowbridge's is never mentioned


def test_last_network_gone_removes_hooks_and_chains_but_keeps_user_rules():
    text = iptables.script([], _saved_with_hooks(), None)
    assert '-D FORWARD -m comment --comment "lowbridge" -j LOWBRIDGE-FORWARD' in text
    assert "-X LOWBRIDGE-FORWARD" in text and "-X LOWBRIDGE-USER" in text
    assert "-X LOWBRIDGE-POSTROUTING" in text
    kept = iptables.script([], _saved_with_hooks(["-A LOWBRIDGE-USER -s 1.1.1.1 -j DROP"]), None)
    assert "-X LOWBRIDGE-USER" not in kept and "-j LOWBRIDGE-USER" not in kept
    assert iptables.script([], {}, None) == ""


# -- the insert-only fast path
def test_a_new_endpoint_or_port_is_pure_insertions():
    old = R.render(SCENARIOS["two-networks"])
    two = SCENARIOS["two-networks"]
    grown = R.Model(two.networks, [_port("0.0.0.0", 8080, 80)],
                    endpoints=two.endpoints + _eps((BR1, "172.18.0.3")))  # fmt: skip
    new = R.render(grown)
    inserts = R.insertions(old, new)
    assert inserts is not None
    # Replaying the insertions on the old chains gives exactly the new ones.
    chains: dict = {}
    for r in old:
        chains.setdefault((r.table, r.chain), []).append(r)
    at_end = R.appended(inserts, new)
    assert any(at_end) and not all(at_end)  # both kinds occur here
    for (index, r), end in zip(inserts, at_end, strict=True):
        chain = chains.setdefault((r.table, r.chain), [])
        assert end == (index == len(chain))  # "appended" means it lands last when it goes in
        chain.insert(index, r)
    assert [r for rules in chains.values() for r in rules] == sorted(
        new, key=lambda r: list(chains).index((r.table, r.chain))
    )
    assert all(r.chain not in R.BUILTIN_CHAINS for _, r in inserts)


def test_appended_marks_only_the_inserted_suffix_of_each_chain():
    def rule(chain: str, n: int) -> R.Rule:
        return R.Rule("filter", chain, (("src", f"10.0.0.{n}"),), "DROP", "c")

    final = [rule("A", i) for i in range(5)] + [rule("B", i) for i in range(2)]
    inserts = [(1, final[1]), (3, final[3]), (4, final[4]), (0, final[5])]
    assert R.appended(inserts, final) == [False, True, True, False]


def test_a_new_endpoint_of_an_older_network_is_an_append_in_endpoint_order():
    def model(extra: tuple[str, ...]) -> R.Model:
        two = SCENARIOS["two-networks"]
        return R.Model(two.networks, endpoints=two.endpoints + _eps(*((BR1, ip) for ip in extra)))

    old, new = R.render(model(())), R.render(model(("172.18.0.3", "172.18.0.4")))
    inserts = R.insertions(old, new)
    assert [(i, dict(r.match)["dst"]) for i, r in inserts] == [(2, "172.18.0.3"), (3, "172.18.0.4")]
    assert R.appended(inserts, new) == [True, True]
    assert new[: len(old)] == old  # the rendering grew at its end: the prefix path


def test_insertions_in_the_middle_of_chains_take_the_general_path():
    plain = R.render(SCENARIOS["two-networks"])
    ported = R.render(R.Model(SCENARIOS["two-networks"].networks, [_port("0.0.0.0", 8080, 80)],
                              endpoints=SCENARIOS["two-networks"].endpoints))  # fmt: skip
    assert ported[: len(plain)] != plain
    inserts = R.insertions(plain, ported)
    assert inserts and {r.table for _, r in inserts} == {"filter", "nat"}
    assert not all(R.appended(inserts, ported))


def test_a_rule_of_a_builtin_chain_is_never_inserted():
    one = R.render(SCENARIOS["one-network"])
    hooked = [*one, R.Rule("nat", "OUTPUT", (("dst", "10.1.1.1"),), "JUMP:LOWBRIDGE")]
    assert R.insertions(one, hooked) is None


def test_rendering_keeps_no_state_between_models():
    a, b = R.render(SCENARIOS["one-network"]), R.render(SCENARIOS["icc-false"])
    assert R.render(SCENARIOS["one-network"]) == a and a != b
    internal = R.render(SCENARIOS["internal"])
    assert not [r for r in internal if r.chain == R.PREROUTING]  # no direct drops when internal


def test_removals_and_first_apply_need_the_full_path():
    one, two = R.render(SCENARIOS["one-network"]), R.render(SCENARIOS["two-networks"])
    assert R.insertions([], one) is None
    assert R.insertions(two, one) is None  # net2 removed
    assert R.insertions(one, []) is None
    assert R.insertions(one, one) == []


def test_rules_round_trip_through_the_record():
    rules = R.render(SCENARIOS["published-ports"])
    assert R.from_doc(json.loads(json.dumps(R.to_doc(rules)))) == rules  # as the file holds it


def test_render_keeps_its_last_rendering_only_while_it_is_still_right():
    """A Renderer extends its last rendering when the endpoints grow; whatever else changes
    (an endpoint removed, networks changed, an internal network's endpoints) it renders anew:
    every result equals a rendering from nothing (the pure render())."""
    inner = R.FwNetwork("inner", "lb-3333333333cc", "172.20.0.0/16", internal=True)
    eps = _eps(*((BR1, f"172.18.0.{i}") for i in range(2, 6)))
    inner_eps = _eps((inner, "172.20.0.2"))
    sequence = [
        R.Model([BR1, BR2], endpoints=eps[:2]),
        R.Model([BR1, BR2], endpoints=eps[:3]),  # grown
        R.Model([BR1, BR2], endpoints=eps[:4]),  # grown
        R.Model([BR1, BR2], endpoints=eps[:3] + eps[4:]),  # the last one replaced
        R.Model([BR1, BR2], endpoints=eps[:1] + eps[2:4]),  # one removed
        R.Model([BR1], endpoints=eps[:1] + eps[2:4]),  # a network gone
        R.Model([BR1, inner], endpoints=eps[:1] + inner_eps),  # internal: no direct rule
        R.Model([BR1, inner], endpoints=eps[:1] + inner_eps + eps[1:2]),  # grown past it
        R.Model([BR1, BR2], endpoints=eps[:1] + eps[1:2]),
    ]
    renderer = R.Renderer()
    for model in sequence:
        kept = renderer.render(model)
        assert kept == R.render(model)
        renderer.render(model).append("scribbled on")  # the caller's list, not the kept one
        assert renderer.render(model) == kept


def test_appends_finds_only_plain_additions_at_the_end():
    def model(*extra: str) -> R.Model:
        return R.Model([BR1], endpoints=_eps(*((BR1, ip) for ip in ("172.18.0.2", *extra))))

    old = R.render(model())
    assert R.appends(old, R.render(model("172.18.0.3"))) == R.render(model("172.18.0.3"))[-1:]
    assert R.appends(old, old) == []
    assert R.appends(R.render(model("172.18.0.3")), old) is None  # one removed
    ported = R.render(R.Model([BR1], [_port("0.0.0.0", 8080, 80)], endpoints=model().endpoints))
    assert R.appends(old, ported) is None  # rules in the middle of chains, and a new hook


def removals(old: list[R.Rule], new: list[R.Rule]) -> list[R.Rule] | None:
    """The rules at R.removed_at's positions (what a backend is asked to delete)."""
    at = R.removed_at(old, new)
    return None if at is None else [old[i] for i in at]


def test_removals_finds_only_plain_deletions():
    def model(*ips: str, ports=()) -> R.Model:
        return R.Model([BR1], list(ports), endpoints=_eps(*((BR1, ip) for ip in ips)))

    full = R.render(model("172.18.0.2", "172.18.0.3", "172.18.0.4"))
    middle_gone = R.render(model("172.18.0.2", "172.18.0.4"))
    assert removals(full, middle_gone) == [full[-2]]  # the drop of 172.18.0.3
    assert removals(full, R.render(model("172.18.0.2"))) == full[-2:]
    assert removals(full, full) is None  # nothing removed
    assert removals(middle_gone, full) is None  # one added
    assert removals(full, R.render(model("172.18.0.2", "172.18.0.9"))) is None  # replaced
    assert removals(full, []) is None  # the last rules go: the table goes with them
    # A published port's rules (accept, DNAT, hairpin masquerade) are deletions too.
    ported = R.render(model("172.18.0.2", "172.18.0.3", ports=[_port("0.0.0.0", 8080, 80)]))
    plain = R.render(model("172.18.0.2", "172.18.0.3"))
    gone = removals(ported, plain)
    assert gone == [r for r in ported if r not in plain]
    assert [(r.table, r.target) for r in gone] == [
        ("filter", "ACCEPT"),
        ("nat", "DNAT:172.18.0.2:80"),
        ("nat", "MASQUERADE"),
    ]
    # ...but a hook never goes by itself (other software's rules share builtin chains).
    hookless = [r for r in plain if r.chain not in R.BUILTIN_CHAINS]
    assert removals(plain, hookless) is None


def test_nftables_deletes_only_direct_access_elements(monkeypatch):
    """An endpoint's drop is a set element: its removal is two element deletions; an address
    another bridge's endpoint still has stays in the address set; any other rule makes the
    backend decline (the caller rewrites the table)."""
    sent = []
    monkeypatch.setattr(nftables, "run_script", lambda script, what, ctx=None: sent.append(script))
    br2 = R.FwNetwork("other", "lb-2222222222bb", "172.19.0.0/16")
    eps = _eps((BR1, "172.18.0.2"), (BR1, "172.18.0.3"), (br2, "172.18.0.3"))
    rules = R.render(R.Model([BR1, br2], endpoints=eps))
    kept = R.render(R.Model([BR1, br2], endpoints=eps[:1] + eps[2:]))
    gone = removals(rules, kept)
    assert nftables.NftablesBackend().remove(gone, kept) is True
    assert sent == [
        f'delete element ip lowbridge direct {{ 172.18.0.3 . "{BR1.device}" }}\n'
    ]  # 172.18.0.3 stays in direct-addrs: the other bridge's endpoint has it
    sent.clear()
    remaining = R.render(R.Model([BR1, br2], endpoints=eps[:1]))
    assert nftables.NftablesBackend().remove(removals(rules, remaining), remaining) is True
    assert "delete element ip lowbridge direct-addrs { 172.18.0.3 }" in sent[0]
    sent.clear()
    hook_like = [r for r in rules if nftables.direct_parts(r) is None][:1]
    assert nftables.NftablesBackend().remove(hook_like, rules) is False and sent == []


def test_a_whole_record_is_known_by_its_identity_after_the_rename(tmp_path, monkeypatch):
    """The rename that puts a whole rule record in place sets its ctime: the identity kept for
    it is the one after the rename, so the next change of this object reads nothing back."""
    from lowbridge.firewall import record

    rec = record.Record(str(tmp_path))
    rules = R.render(R.Model([BR1], endpoints=_eps((BR1, "172.18.0.2"))))
    rec.write(rules, "nftables")
    assert rec._kept[0] == record._identity(os.stat(tmp_path / "firewall-rules"))
    monkeypatch.setattr(record.json, "loads", lambda *a: 1 / 0)  # nothing is parsed again
    assert rec.rules("nftables", False) == rules
    assert stat.S_IMODE(os.stat(tmp_path / "firewall-rules").st_mode) == 0o600


def test_a_record_another_process_changed_is_read_again(tmp_path):
    from lowbridge.firewall import record

    mine, theirs = record.Record(str(tmp_path)), record.Record(str(tmp_path))
    one = R.render(R.Model([BR1], endpoints=_eps((BR1, "172.18.0.2"))))
    two = R.render(R.Model([BR1], endpoints=_eps((BR1, "172.18.0.2"), (BR1, "172.18.0.3"))))
    mine.write(one, "iptables")
    assert theirs.rules("iptables", False) == one
    theirs.append(two, two[len(one) :], "iptables", False)
    assert mine.rules("iptables", False) == two  # the file grew: parsed again
    assert mine.rules("nftables", False) is None  # another backend's: not known


def test_a_deletion_grows_the_record_by_its_positions(tmp_path, monkeypatch):
    """A change that only removed rules adds their positions to the record, one that only
    appended adds the rules: another process reads back exactly the rules recorded; after
    GROWN such lines the record is written whole again."""
    from lowbridge.firewall import record

    def rules(*ips: str) -> list[R.Rule]:
        return R.render(R.Model([BR1], endpoints=_eps(*((BR1, ip) for ip in ips))))

    mine = record.Record(str(tmp_path))
    three, two = rules("172.18.0.2", "172.18.0.3", "172.18.0.4"), rules("172.18.0.2", "172.18.0.4")
    mine.write(three, "iptables")
    at = R.removed_at(three, two)
    assert [three[i] for i in at] == removals(three, two)
    mine.remove(two, at, "iptables", False)
    again = rules("172.18.0.2", "172.18.0.4", "172.18.0.5")
    mine.append(again, again[len(two) :], "iptables", False)
    lines = (tmp_path / "firewall-rules").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[1]) == {"gone": at}
    assert record.Record(str(tmp_path)).rules("iptables", False) == again
    monkeypatch.setattr(record, "GROWN", 3)
    mine.remove(two, R.removed_at(again, two), "iptables", False)  # the third grown line
    mine.append(again, again[len(two) :], "iptables", False)  # one more: written whole
    assert len((tmp_path / "firewall-rules").read_text().splitlines()) == 1
    assert record.Record(str(tmp_path)).rules("iptables", False) == again


def test_the_fingerprint_last_recorded_answers_while_the_kernel_shows_it(tmp_path, monkeypatch):
    """A record that wrote the fingerprint reads no file while the kernel still has it; another
    fingerprint (anyone's later change) sends it to the file, and a change under way (its
    fingerprint removed) forgets it."""
    from lowbridge.firewall import record

    mine, theirs = record.Record(str(tmp_path)), record.Record(str(tmp_path))
    mine.set("fingerprint", "7")
    assert theirs.matches("7") and not theirs.matches("8")
    opened = []
    real_open = os.open
    monkeypatch.setattr(record.os, "open", lambda *a: opened.append(a[0]) or real_open(*a))
    assert mine.matches("7") and opened == []
    theirs.set("fingerprint", "8")  # their change moved the kernel on
    assert mine.matches("8") and opened  # read from the file
    mine.set("fingerprint", None)
    assert not mine.matches("7") and not mine.matches("8")
