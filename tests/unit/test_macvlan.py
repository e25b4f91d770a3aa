"""macvlan validation (pure: no kernel)."""

from __future__ import annotations

import pytest

from lowbridge.drivers.base import HostLink, HostView, NetworkRequest
from lowbridge.drivers.macvlan import MacvlanDriver, split_vlan
from lowbridge.errors import Conflict, InvalidInput

HOST = HostView(
    networks=(),
    links={
        "eth0": HostLink("veth", None),
        "lo": HostLink(None, None),
        "lb-0123456789ab": HostLink("bridge", "lowbridge:0123456789ab" + "0" * 52),
    },
    reserved=(),
)


def _validate(host: HostView = HOST, **kw):
    req = NetworkRequest(name=kw.pop("name", "mv"), driver="macvlan", **kw)
    return MacvlanDriver().validate(req, "ab" * 32, host)


def test_defaults_and_docker_29_gateway_rule():
    net = _validate(subnet="192.168.1.0/24", options={"parent": "eth0"})
    assert net.options == {"parent": "eth0", "macvlan_mode": "bridge"}
    assert net.pool.gateway is None and not net.internal and not net.device_owned
    net = _validate(subnet="192.168.1.0/24", gateway="192.168.1.254", options={"parent": "eth0"})
    assert str(net.pool.gateway) == "192.168.1.254"


def test_no_parent_is_internal_on_a_link_of_its_own():
    net = _validate()
    assert net.internal and net.device_owned and net.device == "lb-" + "ab" * 6
    assert net.options["parent"] == net.device


def test_vlan_parents():
    assert split_vlan("eth0.50") == ("eth0", 50)
    assert split_vlan("eth0") is None and split_vlan("br-x.y") is None
    net = _validate(subnet="10.5.0.0/24", options={"parent": "eth0.50"})
    assert net.device == "eth0.50" and net.device_owned
    with pytest.raises(InvalidInput, match="4094"):
        split_vlan("eth0.4095")
    with pytest.raises(InvalidInput, match="base interface"):
        _validate(options={"parent": "eth9.5"})


def test_host_shim_takes_an_address_ipam_keeps_from_endpoints():
    net = _validate(subnet="192.168.1.0/24", ip_range="192.168.1.192/27",
                    options={"parent": "eth0", "lowbridge.host_shim": "true"})  # fmt: skip
    assert net.options["lowbridge.host_shim_ip"] == "192.168.1.192"
    assert str(net.pool.aux_addresses["lowbridge-host-shim"]) == "192.168.1.192"
    net = _validate(subnet="192.168.1.0/24",
                    options={"parent": "eth0", "lowbridge.host_shim": "192.168.1.250"})  # fmt: skip
    assert net.options["lowbridge.host_shim_ip"] == "192.168.1.250"


@pytest.mark.parametrize(
    "options, error",
    [
        ({"parent": "lo"}, InvalidInput),
        ({"parent": "eth1"}, InvalidInput),
        ({"parent": "eth0", "macvlan_mode": "l2"}, InvalidInput),
        ({"parent": "eth0", "lowbridge.host_shim": "yes please"}, InvalidInput),
        ({"parent": "eth0", "ipvlan_mode": "l2"}, InvalidInput),
        # A link lowbridge made for another network is no LAN to put stations on.
        ({"parent": "lb-0123456789ab"}, InvalidInput),
        ({"parent": "eth0", "com.docker.network.driver.mtu": "abc"}, InvalidInput),
        ({"parent": "eth0", "com.docker.network.driver.mtu": "٩٠٠٠"}, InvalidInput),
    ],
)
def test_bad_options(options, error):
    with pytest.raises(error):
        _validate(subnet="10.9.0.0/24", options=options)


def test_passthru_takes_the_parent_alone():
    first = _validate(subnet="10.1.0.0/24", options={"parent": "eth0", "macvlan_mode": "passthru"})
    host = HostView(networks=(first,), links=HOST.links, reserved=())
    with pytest.raises(Conflict, match="passthru"):
        _validate(host, name="b", subnet="10.2.0.0/24", options={"parent": "eth0"})
    with pytest.raises(Conflict, match="overlaps"):
        _validate(host, name="c", subnet="10.1.0.0/25", options={})
