"""IPv6 as pure logic: the ULA default pool, IPAM of both families, the request's families, the
IPv6 rules of both backends, and the resolver's AAAA and ip6.arpa answers (no root)."""

from __future__ import annotations

import ipaddress

import pytest

from lowbridge import ipam
from lowbridge.dns import records as R
from lowbridge.drivers.base import HostView, NetworkRequest, plan_ipv6
from lowbridge.errors import Conflict, InvalidInput
from lowbridge.firewall import iptables, nftables
from lowbridge.firewall import rules as FR
from lowbridge.models import Container, Endpoint, Network


# ------------------------------------------------------------------ IPAM
def test_ula_pool_is_rfc4193_and_derived_from_the_host_id():
    ((base, size),) = ipam.ula_pool("host-a")
    net = ipaddress.IPv6Network(base)
    assert net.prefixlen == 48 and size == 64
    assert net.subnet_of(ipaddress.IPv6Network("fd00::/8"))  # L=1, locally assigned
    assert ipam.ula_pool("host-a") == ((base, 64),)  # stable
    assert ipam.ula_pool("host-b")[0][0] != base  # another host, another global ID


def test_default_ipv6_subnet_is_the_first_free_64_of_the_ula_pool():
    pools = ipam.ula_pool("h")
    first = ipam.plan_pool(subnet=None, gateway=None, ip_range=None, aux_addresses=None,
                           taken=[], pools=pools, version=6)  # fmt: skip
    base = ipaddress.IPv6Network(pools[0][0])
    assert first.subnet == next(base.subnets(new_prefix=64))
    assert first.gateway == first.subnet.network_address + 1  # ::1, as Docker
    second = ipam.plan_pool(subnet=None, gateway=None, ip_range=None, aux_addresses=None,
                            taken=[first.subnet, ipaddress.ip_network("10.0.0.0/8")],
                            pools=pools, version=6)  # fmt: skip
    assert second.subnet == list(base.subnets(new_prefix=64))[1]


def _pool6(subnet="fd00:1::/64", **kw):
    return ipam.plan_pool(
        subnet=subnet,
        gateway=kw.get("gateway"),
        ip_range=kw.get("ip_range"),
        aux_addresses=kw.get("aux"),
        taken=kw.get("taken", []),
        version=6,
    )


def test_ipv6_addresses_go_lowest_first_and_skip_the_anycast_address():
    pool = _pool6()
    assert str(pool.gateway) == "fd00:1::1"
    assert str(ipam.allocate(pool, [])) == "fd00:1::2"
    assert str(ipam.allocate(pool, ["fd00:1::2", "fd00:1::3"])) == "fd00:1::4"
    assert str(ipam.allocate(pool, ["fd00:1::2"], "fd00:1::99")) == "fd00:1::99"
    ranged = _pool6(ip_range="fd00:1::100/120")
    # The gateway is drawn first, from the range too (as for IPv4): ::100, then ::101.
    assert str(ranged.gateway) == "fd00:1::100"
    assert str(ipam.allocate(ranged, [])) == "fd00:1::101"
    with pytest.raises(InvalidInput):  # the subnet-router anycast address
        ipam.allocate(pool, [], "fd00:1::")
    with pytest.raises(InvalidInput):
        ipam.allocate(pool, [], "fd00:2::5")
    with pytest.raises(Conflict):
        ipam.allocate(pool, ["fd00:1::5"], "fd00:1::5")


@pytest.mark.parametrize(
    "subnet, gateway, message",
    [
        ("fd00::zz/64", None, "invalid subnet"),
        ("fd00::/127", None, "at most /126"),
        ("fd00::1/128", None, "at most /126"),
        ("fe80::/64", None, "link-local"),
        ("ff02::/64", None, "multicast"),
        ("::1/128", None, "loopback"),
        ("fd00::1/64", None, "it should be fd00::/64"),
        ("fd00:1::/64", "fd00:2::1", "not a usable address"),
        ("fd00:1::/64", "10.0.0.1", "not an IPv6 address"),
        ("10.0.0.0/24", None, "not an IPv6 subnet"),
    ],
)
def test_bad_ipv6_pools_are_refused_in_one_line(subnet, gateway, message):
    with pytest.raises(InvalidInput, match=message) as err:
        _pool6(subnet, gateway=gateway)
    assert "\n" not in str(err.value)


def test_overlapping_ipv6_subnets_conflict():
    with pytest.raises(Conflict, match="overlaps"):
        _pool6("fd00:1::/64", taken=[ipaddress.ip_network("fd00:1::/48")])


def test_request_values_are_sorted_by_family():
    aux = {"a": "10.1.0.5", "b": "fd00::5"}
    req = NetworkRequest(name="n", subnet="fd00::/64", subnet6="10.1.0.0/24", gateway="fd00::9",
                         aux_addresses=aux, ipv6=True).by_family()  # fmt: skip
    assert (req.subnet, req.subnet6, req.gateway, req.gateway6) == (
        "10.1.0.0/24", "fd00::/64", None, "fd00::9")  # fmt: skip
    assert req.aux_addresses == {"a": "10.1.0.5"} and req.aux_addresses6 == {"b": "fd00::5"}
    # An empty value stays (for the parse to refuse), it does not mean "none given".
    assert NetworkRequest(name="n", subnet="").by_family().subnet == ""
    with pytest.raises(InvalidInput, match="one IPv6 --subnet"):
        NetworkRequest(name="n", subnet="fd00::/64", subnet6="fd01::/64").by_family()


def test_ipv6_values_need_ipv6():
    host = HostView(networks=(), links={}, reserved=())
    with pytest.raises(InvalidInput, match="no --ipv6"):
        plan_ipv6(NetworkRequest(name="n", subnet6="fd00::/64"), host)
    assert plan_ipv6(NetworkRequest(name="n"), host) is None


# ------------------------------------------------------------------ firewall
def _model() -> FR.Model:
    eps = (FR.FwEndpoint("10.1.0.2", "n", "lb-n"), FR.FwEndpoint("fd00:1::2", "n", "lb-n", 6))
    v4 = FR.Model(networks=[FR.FwNetwork("n", "lb-n", "10.1.0.0/24")], endpoints=eps)
    port = FR.FwPort(ipam_mapping("::"), "fd00:1::2", "lb-n", "web")
    v4.v6 = FR.Model(networks=[FR.FwNetwork("n", "lb-n", "fd00:1::/64")], ports=[port])
    return v4


def ipam_mapping(host_ip: str):
    from lowbridge.ports import PortMapping

    return PortMapping(host_ip, 8080, 80, "tcp")


def test_ipv6_rules_follow_the_ipv4_structure_in_their_own_family():
    rules = FR.render(_model())
    v4 = [r for r in rules if r.family == 4]
    v6 = [r for r in rules if r.family == 6]
    # The static rules of each family, then the endpoints' (a connect appends at the end).
    assert [r.family for r in rules[-2:]] == [4, 6] and rules[-1].match[0] == ("dst", "fd00:1::2")
    assert {(r.table, r.chain) for r in v4} <= {(r.table, r.chain) for r in v6}
    dnat = next(r for r in v6 if r.target.startswith("DNAT:"))
    assert dnat.target == "DNAT:[fd00:1::2]:80" and ("!src", "fe80::/10") in dnat.match
    assert FR.from_doc(FR.to_doc(rules)) == rules
    # A record of before IPv6 (five fields) reads back as IPv4 rules.
    assert FR.from_doc([list(r[:5]) for r in v4]) == v4
    assert FR.settings(_model()).ip6_forward


def test_both_backends_write_the_ipv6_rules_for_their_ipv6_tools():
    rules = FR.render(_model())
    text = iptables.render(rules)
    v4_text, _, v6_text = text.partition("# ip6tables-restore\n")
    assert "-d fd00:1::2" not in v4_text and "-d 10.1.0.2" in v4_text
    assert "-A LOWBRIDGE-PREROUTING -d fd00:1::2 ! -i lb-n" in v6_text
    assert "--to-destination [fd00:1::2]:80" in v6_text
    nft = nftables.render(rules)
    ip6 = nft[nft.index("table ip6 lowbridge") :]
    assert "ip6 saddr fd00:1::/64" in ip6 and "type ipv6_addr" in ip6
    assert "dnat to [fd00:1::2]:80" in ip6 and "ip saddr" not in ip6
    assert 'add element ip6 lowbridge direct { fd00:1::2 . "lb-n" }' in ip6


def test_an_ipv4_only_model_renders_as_before():
    m = _model()
    m.v6, m.endpoints = None, m.endpoints[:1]
    assert all(r.family == 4 for r in FR.render(m))
    assert "ip6" not in nftables.render(FR.render(m)) and "#" not in iptables.render(FR.render(m))


# ------------------------------------------------------------------ DNS
def _zone_views():
    pool = ipam.plan_pool(subnet="10.1.0.0/24", gateway=None, ip_range=None, aux_addresses=None,
                          taken=[])  # fmt: skip
    net = Network(id="n" * 12, name="n", driver="bridge", pool=pool, pool6=_pool6())
    ctrs = [Container(id=(c + "0" * 64)[:64], name=c, netns=f"/run/netns/{c}", hostname=c,
                      dns_ports=(1, 2)) for c in ("a", "b")]  # fmt: skip
    eps = [
        Endpoint(id="ea", network_id=net.id, container_id=ctrs[0].id, ifname="eth0",
                 ip="10.1.0.2", ip6="fd00:1::2"),
        Endpoint(id="eb", network_id=net.id, container_id=ctrs[1].id, ifname="eth0",
                 ip="10.1.0.3"),
    ]  # fmt: skip
    return R.build([net], ctrs, eps, ["10.53.0.1"]), ctrs


def test_aaaa_answers_the_ipv6_address_and_a_the_ipv4_one():
    views, ctrs = _zone_views()
    view = views[ctrs[1].id]
    assert R.decide(view, "a", R.AAAA) == R.Answer(R.NOERROR, ((R.AAAA, "fd00:1::2"),))
    assert R.decide(view, "a", R.A) == R.Answer(R.NOERROR, ((R.A, "10.1.0.2"),))
    # b has no IPv6 address: a family miss (NODATA), not forwarded -- Docker's ipv6Miss.
    assert R.decide(view, "b", R.AAAA) == R.Answer(R.NOERROR, ())
    reverse = ".".join(reversed(ipaddress.IPv6Address("fd00:1::2").exploded.replace(":", "")))
    assert R.decide(view, reverse + ".ip6.arpa", R.PTR) == R.Answer(
        R.NOERROR, ((R.PTR, "a.n."),))  # fmt: skip
    assert R.reverse_name_to_ip("x.ip6.arpa") is None


# ------------------------------------------------------------------ IPv6-only networks
def test_ipv6_only_requests_need_ipv6_and_no_ipv4_values():
    from lowbridge.drivers.base import check_families

    check_families(NetworkRequest(name="n", ipv4=False, ipv6=True))
    with pytest.raises(InvalidInput, match="IPv4 or IPv6 must be enabled"):
        check_families(NetworkRequest(name="n", ipv4=False))
    with pytest.raises(InvalidInput, match="--ipv4=false"):
        check_families(NetworkRequest(name="n", ipv4=False, ipv6=True, subnet="10.0.0.0/24"))


def test_an_ipv6_only_network_has_ipv6_rules_alone():
    m = FR.Model(endpoints=(FR.FwEndpoint("fd00:1::2", "n", "lb-n", 6),))
    port = FR.FwPort(ipam_mapping("::"), "fd00:1::2", "lb-n", "web")
    m.v6 = FR.Model(networks=[FR.FwNetwork("n", "lb-n", "fd00:1::/64")], ports=[port])
    rules = FR.render(m)
    assert rules and all(r.family == 6 for r in rules)
    settings = FR.settings(m)
    assert settings.ip6_forward and settings.ipv6 and settings.br_netfilter
    assert not settings.ip_forward  # nothing of IPv4's to route


def test_an_ipv6_only_endpoints_mac_comes_from_its_address():
    from lowbridge import names

    assert names.mac_from_ip("fd00:85::2") == "02:42:00:00:00:02"
    assert names.mac_from_ip("fd00:85::a:b0c") == "02:42:00:0a:0b:0c"
    assert names.mac_from_ip("10.1.2.3") == "02:42:0a:01:02:03"


# ------------------------------------------------------------------ [::1] relays
def test_loopback_ports_are_relayed_to_the_gateway_endpoint():
    from lowbridge import proxy
    from lowbridge.models import View
    from lowbridge.ports import PortMapping

    pool = ipam.plan_pool(subnet="10.1.0.0/24", gateway=None, ip_range=None, aux_addresses=None,
                          taken=[])  # fmt: skip
    net = Network(id="n" * 12, name="n", driver="bridge", pool=pool, pool6=_pool6())
    four = Network(id="f" * 12, name="f", driver="bridge", pool=pool)
    loop = (PortMapping("::1", 8081, 80, "tcp"), PortMapping("0.0.0.0", 8080, 80, "tcp"))
    a = Container(id="a" * 64, name="a", netns="/run/netns/a", ports=loop)
    b = Container(id="b" * 64, name="b", netns="/run/netns/b", ports=(
        PortMapping("::1", 9091, 53, "udp"),))  # fmt: skip
    c = Container(id="c" * 64, name="c", netns="/run/netns/c")
    eps = [
        Endpoint(id="ea", network_id=net.id, container_id=a.id, ifname="eth0", ip="10.1.0.2",
                 gateway="10.1.0.1", ip6="fd00:1::2", gateway6="fd00:1::1"),
        Endpoint(id="eb", network_id=four.id, container_id=b.id, ifname="eth0", ip="10.1.0.3",
                 gateway="10.1.0.1"),
    ]  # fmt: skip
    view = View([net, four], [a, b, c], eps)
    assert proxy.wanted(view) == {
        (8081, "tcp"): proxy.Target("fd00:1::2", 80),
        (9091, "udp"): proxy.Target("10.1.0.3", 53),  # no IPv6 there: to its IPv4 address
    }
    assert proxy.needed(view) and not proxy.needed(View([net], [c], []))
