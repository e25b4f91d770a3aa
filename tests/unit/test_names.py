import pytest

from lowbridge import names
from lowbridge.errors import InvalidInput


def test_kernel_names_fit_ifnamsiz_and_carry_the_prefix():
    nid, cid = names.new_id(), names.new_id()
    assert len(nid) == 64
    bridge = names.bridge_device(nid)
    veth = names.veth_host_name(nid, cid)
    assert bridge == "lb-" + nid[:12] and len(bridge) == 15
    assert veth.startswith("lbv") and len(veth) == 15
    assert len(names.DEFAULT_BRIDGE_DEVICE) <= 15


def test_veth_name_is_deterministic_and_distinct_per_endpoint():
    n1, n2, c = names.new_id(), names.new_id(), names.new_id()
    assert names.veth_host_name(n1, c) == names.veth_host_name(n1, c)
    assert names.veth_host_name(n1, c) != names.veth_host_name(n2, c)


def test_mac_from_ip_is_docker_style_and_locally_administered():
    assert names.mac_from_ip("172.17.0.2") == "02:42:ac:11:00:02"
    mac = names.random_mac()
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01


def test_lowest_free_ifname():
    assert names.lowest_free_ifname("eth", {"lo"}) == "eth0"
    assert names.lowest_free_ifname("eth", {"lo", "eth0", "eth2"}) == "eth1"


@pytest.mark.parametrize("name", ["web", "Web-1", "a.b_c", "x" * 63, "9lives"])
def test_valid_names(name):
    assert names.validate_name("container", name) == name


@pytest.mark.parametrize("name", ["", "-web", "a/b", "a b", "x" * 64, "é", ".hidden", "a:b"])
def test_invalid_names(name):
    with pytest.raises(InvalidInput):
        names.validate_name("container", name)


@pytest.mark.parametrize("name", ["", "a" * 16, "a/b", "a b", "a:b", "..", "."])
def test_invalid_ifnames(name):
    with pytest.raises(InvalidInput):
        names.validate_ifname(name)


def test_ifname_at_the_limit():
    assert names.validate_ifname("a" * 15) == "a" * 15


@pytest.mark.parametrize("name", ["web", "web-1", "a.b.example", "x" * 63, "9"])
def test_valid_hostnames(name):
    assert names.validate_hostname(name) == name


@pytest.mark.parametrize("name", ["", "-web", "web-", "a_b", "a..b", "x" * 65, "a b"])
def test_invalid_hostnames(name):
    with pytest.raises(InvalidInput):
        names.validate_hostname(name)
