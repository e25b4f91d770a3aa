"""IPAM follows Docker's pools, order and address rules (moby ipams/defaultipam)."""

from ipaddress import IPv4Address, IPv4Network

import pytest

from lowbridge import ipam
from lowbridge.errors import Conflict, InvalidInput


def plan(**kw):
    args = dict(subnet=None, gateway=None, ip_range=None, aux_addresses=None, taken=[])
    args.update(kw)
    return ipam.plan_pool(**args)


def test_default_pool_order_matches_docker():
    subnets = list(ipam.default_subnets())
    assert [str(s) for s in subnets[:5]] == [
        "172.17.0.0/16",
        "172.18.0.0/16",
        "172.19.0.0/16",
        "172.20.0.0/16",
        "172.21.0.0/16",
    ]
    assert str(subnets[14]) == "172.31.0.0/16"
    assert [str(s) for s in subnets[15:17]] == ["192.168.0.0/20", "192.168.16.0/20"]
    assert str(subnets[-1]) == "192.168.240.0/20"
    assert len(subnets) == 31


def test_first_network_after_default_bridge_gets_172_18():
    pool = plan(taken=[IPv4Network("172.17.0.0/16")])
    assert pool.subnet == IPv4Network("172.18.0.0/16")
    assert pool.gateway == IPv4Address("172.18.0.1")


def test_reserved_host_routes_and_nameservers_are_skipped():
    pool = plan(
        taken=[IPv4Network("172.17.0.0/16")],
        reserved=[IPv4Network("172.18.5.0/24"), IPv4Network("172.19.0.53/32")],
    )
    assert pool.subnet == IPv4Network("172.20.0.0/16")


def test_pools_exhausted_is_a_conflict():
    with pytest.raises(Conflict):
        plan(taken=list(ipam.default_subnets()))


def test_explicit_subnet_gateway_range_aux():
    pool = plan(
        subnet="10.5.0.0/16",
        gateway="10.5.255.254",
        ip_range="10.5.7.0/24",
        aux_addresses={"router": "10.5.7.1"},
    )
    assert pool.gateway == IPv4Address("10.5.255.254")
    # Endpoints come from the range, skipping the aux address.
    assert ipam.allocate(pool, [IPv4Address("10.5.7.0")]) == IPv4Address("10.5.7.2")


def test_gateway_defaults_to_first_address_of_range_as_docker_does():
    # Docker 20.10, asked here: `network create --subnet 172.28.0.0/16 --ip-range 172.28.5.0/24`
    # puts 172.28.5.0/16 on the bridge -- the range's first address, even though it is the
    # range's network address (only the subnet's network and broadcast addresses are skipped).
    pool = plan(subnet="172.28.0.0/16", ip_range="172.28.5.0/24")
    assert pool.gateway == IPv4Address("172.28.5.0")
    assert ipam.allocate(pool, []) == IPv4Address("172.28.5.1")


def test_lowest_free_address_is_reused_at_once():
    pool = plan(subnet="10.7.0.0/24")
    used = [IPv4Address("10.7.0.2"), IPv4Address("10.7.0.4")]
    assert ipam.allocate(pool, used) == IPv4Address("10.7.0.3")


def test_static_ip_anywhere_in_subnet_but_not_taken():
    pool = plan(subnet="10.8.0.0/24", ip_range="10.8.0.128/25")
    assert ipam.allocate(pool, [], "10.8.0.50") == IPv4Address("10.8.0.50")
    with pytest.raises(Conflict):
        ipam.allocate(pool, [IPv4Address("10.8.0.50")], "10.8.0.50")
    with pytest.raises(Conflict):
        ipam.allocate(pool, [], str(pool.gateway))
    with pytest.raises(InvalidInput):
        ipam.allocate(pool, [], "10.9.0.5")
    for special in ("10.8.0.0", "10.8.0.255"):
        with pytest.raises(InvalidInput):
            ipam.allocate(pool, [], special)


def test_full_subnet_is_a_conflict():
    pool = plan(subnet="10.9.0.0/30")  # .1 gateway, .2 the only endpoint address
    assert ipam.allocate(pool, []) == IPv4Address("10.9.0.2")
    with pytest.raises(Conflict):
        ipam.allocate(pool, [IPv4Address("10.9.0.2")])


@pytest.mark.parametrize(
    "subnet, what",
    [
        ("10.9.1.0/31", "no room"),
        ("10.9.1.0/32", "no room"),
        ("127.0.0.0/8", "loopback"),
        ("127.1.0.0/16", "loopback"),
        ("0.0.0.0/8", "this network"),
        ("224.0.0.0/24", "multicast"),
        ("239.1.0.0/16", "multicast"),
        ("255.255.255.0/24", "reserved"),
        ("240.0.0.0/4", "reserved"),
    ],
)
def test_subnets_no_network_can_work_in_are_refused(subnet, what):
    with pytest.raises(InvalidInput, match=what):
        plan(subnet=subnet)


def test_a_gateway_on_the_hosts_own_address_is_refused():
    """The host's LAN as a bridge subnet: its gateway would be the host's own address."""
    lan = dict(ip_range=None, aux_addresses=None, taken=[], host_addresses=["192.168.50.1"])
    with pytest.raises(Conflict, match="address of this host"):
        ipam.plan_pool(subnet="192.168.50.0/24", gateway=None, **lan)
    pool = ipam.plan_pool(subnet="192.168.50.0/24", gateway="192.168.50.254", **lan)
    assert str(pool.gateway) == "192.168.50.254"


def test_subnets_lowbridge_devices_hold_are_neither_chosen_nor_given():
    """A store lost beside live bridges: what they hold is not handed out again."""
    from ipaddress import IPv4Network

    held = [(IPv4Network("172.18.0.0/16"), "lb-0123456789ab")]
    pool = ipam.plan_pool(subnet=None, gateway=None, ip_range=None, aux_addresses=None,
                          taken=[IPv4Network("172.17.0.0/16")], held=held)  # fmt: skip
    assert str(pool.subnet) == "172.19.0.0/16"
    with pytest.raises(Conflict, match="held by lb-0123456789ab"):
        ipam.plan_pool(subnet="172.18.5.0/24", gateway=None, ip_range=None, aux_addresses=None,
                       taken=[], held=held)  # fmt: skip


def test_slash_30_holds_a_gateway_and_one_endpoint():
    pool = plan(subnet="10.9.1.0/30")
    assert pool.gateway == IPv4Address("10.9.1.1")
    assert ipam.allocate(pool, []) == IPv4Address("10.9.1.2")


def test_host_bits_error_names_the_canonical_subnet():
    with pytest.raises(InvalidInput, match="it should be 10.1.0.0/24"):
        plan(subnet="10.1.0.1/24")


@pytest.mark.parametrize(
    "kw, exc",
    [
        (dict(subnet="10.0.0.0/33"), InvalidInput),
        (dict(subnet="banana"), InvalidInput),
        (dict(subnet="10.0.0.1/24"), InvalidInput),  # host bits set
        (dict(subnet="fd00::/64"), InvalidInput),
        (dict(subnet="10.0.0.0/32"), InvalidInput),
        (dict(subnet="10.0.0.0/24", gateway="10.0.1.1"), InvalidInput),
        (dict(subnet="10.0.0.0/24", gateway="10.0.0.0"), InvalidInput),
        (dict(subnet="10.0.0.0/24", gateway="10.0.0.255"), InvalidInput),
        (dict(subnet="10.0.0.0/24", gateway="nope"), InvalidInput),
        (dict(subnet="10.0.0.0/24", ip_range="10.0.1.0/25"), InvalidInput),
        (dict(subnet="10.0.0.0/24", aux_addresses={"a": "10.0.2.2"}), InvalidInput),
        (dict(subnet="10.0.0.0/24", gateway="10.0.0.9", aux_addresses={"a": "10.0.0.9"}), Conflict),
        (dict(gateway="10.0.0.1"), InvalidInput),
        (dict(subnet="172.17.128.0/24", taken=[IPv4Network("172.17.0.0/16")]), Conflict),
    ],
)
def test_bad_input_is_rejected(kw, exc):
    with pytest.raises(exc):
        plan(**kw)


def test_explicit_subnet_may_overlap_host_routes_like_docker():
    pool = plan(subnet="10.10.0.0/24", reserved=[IPv4Network("10.10.0.0/16")])
    assert pool.subnet == IPv4Network("10.10.0.0/24")


def test_pool_document_round_trip():
    pool = plan(subnet="10.5.0.0/16", ip_range="10.5.7.0/24", aux_addresses={"r": "10.5.0.9"})
    assert ipam.Pool.from_doc(pool.to_doc()) == pool
    assert pool.to_doc() == {
        "Subnet": "10.5.0.0/16",
        "IPRange": "10.5.7.0/24",
        "Gateway": "10.5.7.0",
        "AuxiliaryAddresses": {"r": "10.5.0.9"},
    }
