"""Which names a sandbox resolves (lowbridge.dns.records): Docker's rules, without the wire."""

from __future__ import annotations

from lowbridge import ipam
from lowbridge.dns import records as R
from lowbridge.models import Container, Endpoint, Network


def _net(name: str, subnet: str, internal: bool = False, predefined: bool = False) -> Network:
    pool = ipam.plan_pool(subnet=subnet, gateway=None, ip_range=None, aux_addresses=None, taken=[])
    return Network(id=name * 8, name=name, driver="bridge", pool=pool, internal=internal,
                   predefined=predefined)  # fmt: skip


def _ctr(name: str, **kw) -> Container:
    hostname = kw.pop("hostname", name + "-host")
    cid = (name + "0" * 64)[:64]
    return Container(id=cid, name=name, netns=f"/run/netns/{name}", hostname=hostname,
                     dns_ports=[1000, 1001], **kw)  # fmt: skip


def _ep(net: Network, ctr: Container, ip: str, aliases=()) -> Endpoint:
    return Endpoint(id=ctr.name + net.name, network_id=net.id, container_id=ctr.id, ifname="eth0",
                    ip=ip, aliases=list(aliases))  # fmt: skip


FRONT, BACK = _net("front", "10.1.0.0/24"), _net("back", "10.2.0.0/24")
BRIDGE = _net("bridge", "172.17.0.0/16", predefined=True)
WEB, API, DB1, DB2, OLD = (_ctr(n) for n in ("web", "api", "db1", "db2", "old"))
EPS = [
    _ep(FRONT, WEB, "10.1.0.2"),
    _ep(FRONT, API, "10.1.0.3"),
    _ep(BACK, API, "10.2.0.3"),
    _ep(BACK, DB1, "10.2.0.4", aliases=["db"]),
    _ep(BACK, DB2, "10.2.0.5", aliases=["DB"]),
    _ep(BRIDGE, OLD, "172.17.0.2"),
]


def views(host=("10.53.0.1",)):
    return R.build([FRONT, BACK, BRIDGE], [WEB, API, DB1, DB2, OLD], EPS, list(host))


def test_names_are_scoped_to_the_sandboxs_networks():
    v = views()
    assert R.resolve(v[WEB.id], "api") == ["10.1.0.3"]
    assert R.resolve(v[WEB.id], "db") is None  # db is on back only
    assert sorted(R.resolve(v[API.id], "db")) == ["10.2.0.4", "10.2.0.5"]
    # The default bridge registers nothing, and its sandboxes see nothing.
    assert R.resolve(v[WEB.id], "old") is None
    assert R.resolve(v[OLD.id], "web") is None


def test_every_registered_name_and_the_network_suffix_case_insensitively():
    v = views()[API.id]
    for name in ("db1", "DB1", "db1.back", "DB1.Back.", DB1.id[:12], "db1-host"):
        assert R.resolve(v, name) == ["10.2.0.4"], name
    assert R.resolve(v, "db1.front") is None
    assert R.resolve(v, "api.front") == ["10.1.0.3"]
    assert R.resolve(v, "api.back") == ["10.2.0.3"]


def test_the_first_network_in_dockers_order_answers():
    assert R.resolve(views()[API.id], "api") == ["10.2.0.3"]  # back < front


def test_ptr_names_the_first_name_on_that_network():
    v = views()[API.id]
    assert R.reverse(v, "4.0.2.10.in-addr.arpa") == "db1.back"
    assert R.reverse(v, "2.0.1.10.in-addr.arpa.") == "web.front"
    assert R.reverse(views()[WEB.id], "4.0.2.10.in-addr.arpa") is None
    assert R.reverse(v, "1.2.3.in-addr.arpa") is None
    assert R.reverse_name_to_ip("300.0.2.10.in-addr.arpa") is None


def test_decide_follows_dockers_serve_dns():
    v = views()[API.id]
    order = iter([lambda ips: ips.reverse(), lambda ips: None])
    a = R.decide(v, "db", R.A, shuffle=lambda ips: next(order)(ips))
    b = R.decide(v, "db", R.A, shuffle=lambda ips: next(order)(ips))
    assert [r[1] for r in a.records] == ["10.2.0.5", "10.2.0.4"]
    assert [r[1] for r in b.records] == ["10.2.0.4", "10.2.0.5"]
    assert R.decide(v, "db", R.AAAA) == R.Answer()  # family miss: NODATA, not forwarded
    assert R.decide(v, "db", R.MX) == R.Answer()
    assert R.decide(v, "example.com", R.A) is R.FORWARD
    assert R.decide(v, "db", 16) is R.FORWARD  # TXT
    assert R.decide(v, "4.0.2.10.in-addr.arpa", R.PTR).records == ((R.PTR, "db1.back."),)
    assert R.decide(v, "9.9.9.10.in-addr.arpa", R.PTR) is R.FORWARD


def test_round_robin_shuffles_by_default():
    v = views()[API.id]
    orders = {tuple(r[1] for r in R.decide(v, "db", R.A).records) for _ in range(200)}
    assert orders == {("10.2.0.4", "10.2.0.5"), ("10.2.0.5", "10.2.0.4")}


def test_upstreams_and_forwarding():
    v = views(host=("10.53.0.1", "10.53.0.2", "10.53.0.3", "10.53.0.4"))
    assert v[WEB.id].upstreams == ["10.53.0.1", "10.53.0.2", "10.53.0.3"]  # at most three
    assert v[WEB.id].forward and not v[WEB.id].upstreams_in_sandbox
    internal = _net("sealed", "10.3.0.0/24", internal=True)
    lone = _ctr("lone")
    custom = _ctr("custom", dns=["10.9.9.9"], dns_options=["ndots:2"])
    eps = [_ep(internal, lone, "10.3.0.2"), _ep(internal, custom, "10.3.0.3")]
    v = R.build([internal], [lone, custom], eps, ["10.53.0.1"])
    assert not v[lone.id].forward  # Docker's proxyDNS=false
    assert v[custom.id].forward and v[custom.id].upstreams == ["10.9.9.9"]
    assert v[custom.id].upstreams_in_sandbox
    # A chosen ndots: single-label misses are answered empty so the client tries its search list.
    assert R.decide(v[custom.id], "nothere", R.A) == R.Answer()
    assert R.decide(v[custom.id], "not.here", R.A) is R.FORWARD


def test_links_are_local_aliases_checked_first():
    linker = _ctr("linker", links=[["db1", "store"]])
    eps = [*EPS, _ep(BACK, linker, "10.2.0.9")]
    v = R.build([FRONT, BACK, BRIDGE], [WEB, API, DB1, DB2, OLD, linker], eps, [])
    assert R.resolve(v[linker.id], "store") == ["10.2.0.4"]
    assert R.resolve(v[API.id], "store") is None


def test_only_sandboxes_with_resolver_ports_get_a_view():
    plain = Container(id="p" * 64, name="plain", netns="/run/netns/plain")
    assert plain.id not in R.build([FRONT], [plain], [_ep(FRONT, plain, "10.1.0.9")], [])


def test_a_kept_builder_answers_as_a_fresh_build_through_a_run_of_changes():
    """The resolver's Builder redoes only what changed (records known by identity, as the
    store's memo hands them back); after every change its views equal a fresh build's."""
    import dataclasses

    b = R.Builder()
    nets, ctrs, eps, host = [FRONT, BACK, BRIDGE], [WEB, API, DB1, DB2, OLD], list(EPS), ["h1"]
    first = b.build(nets, ctrs, eps, host)
    assert first == R.build(nets, ctrs, eps, host)
    web_view = first[WEB.id]

    # A new sandbox on back: back's zone is refilled in place; web (front only) keeps its view.
    new = _ctr("new")
    ctrs, eps = [*ctrs, new], [*eps, _ep(BACK, new, "10.2.0.6", aliases=["db"])]
    second = b.build(nets, ctrs, eps, host)
    assert second == R.build(nets, ctrs, eps, host)
    assert second[WEB.id] is web_view
    assert sorted(R.resolve(second[API.id], "db")) == ["10.2.0.4", "10.2.0.5", "10.2.0.6"]
    assert second[API.id].zones[1] is first[API.id].zones[1]  # the same zone, refilled

    # A changed record (same id, new object): its names and its view are redone.
    renamed = dataclasses.replace(WEB, hostname="www")
    ctrs = [renamed if c is WEB else c for c in ctrs]
    third = b.build(nets, ctrs, eps, host)
    assert third == R.build(nets, ctrs, eps, host)
    assert R.resolve(third[API.id], "www") == ["10.1.0.2"]
    assert R.resolve(third[API.id], "web-host") is None

    # A disconnect, a removed sandbox, a linker and new host upstreams.
    linker = _ctr("linker", links=[["new", "alias"]])
    ctrs = [c for c in ctrs if c is not DB2] + [linker]
    eps = [e for e in eps if e.container_id != DB2.id and e.id != "apifront"]
    eps.append(_ep(FRONT, linker, "10.1.0.9"))
    eps.append(_ep(BACK, linker, "10.2.0.9"))
    for host in (["h1"], ["h2"]):
        fourth = b.build(nets, ctrs, eps, host)
        assert fourth == R.build(nets, ctrs, eps, host)
    assert DB2.id not in fourth
    assert R.resolve(fourth[linker.id], "alias") == ["10.2.0.6"]
    assert R.resolve(fourth[API.id], "web") is None and fourth[WEB.id].upstreams == ["h2"]

    # A network record replaced (same id): a new zone, and its sandboxes' views follow it.
    front2 = dataclasses.replace(FRONT, internal=True)
    nets = [front2, BACK, BRIDGE]
    fifth = b.build(nets, ctrs, eps, host)
    assert fifth == R.build(nets, ctrs, eps, host)
    assert not fifth[WEB.id].forward

    # The linker's alias follows its target's new address (links look at other sandboxes).
    eps = [e for e in eps if e.container_id != new.id] + [_ep(BACK, new, "10.2.0.7")]
    sixth = b.build(nets, ctrs, eps, host)
    assert sixth == R.build(nets, ctrs, eps, host)
    assert R.resolve(sixth[linker.id], "alias") == ["10.2.0.7"]

    # Two endpoints with one address (another host's record not yet gone): both names answer,
    # PTR names the endpoint with the lowest id, and the other one's once it goes.
    ghost = Endpoint(id="0-ghost", network_id=BACK.id, container_id="r" * 64, ifname="eth0",
                     ip="10.2.0.7", dns_names=["ghost"])  # fmt: skip
    for now in ([*eps, ghost], eps):
        seventh = b.build(nets, ctrs, now, host)
        assert seventh == R.build(nets, ctrs, now, host)
    back = next(z for z in seventh[API.id].zones if z.name == "back")
    assert back.ptr["10.2.0.7"] == "new.back" and "ghost" not in back.by_name
