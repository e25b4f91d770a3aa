"""macvlan, host and none with packets, in a simulated LAN.

The LAN is a switch namespace (bridge ``br0``, 192.168.77.1 -- also the LAN's router) with a LAN
host (192.168.77.10) and the simulated host's uplink (a veth, 192.168.77.2 on the host side)
plugged in; the uplink is the macvlan parent.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from lowbridge.simhost import SimHost, outside
from tests.integration.conftest import ip_of, lb_json, ping

SUBNET, GATEWAY, RANGE = "192.168.77.0/24", "192.168.77.1", "192.168.77.128/27"
LAN_HOST = "192.168.77.10"


class Lan:
    def __init__(self, host: SimHost, switch: SimHost, lanhost: SimHost):
        self.host, self.switch, self.lanhost = host, switch, lanhost

    def macvlan(self, name: str, *opts: str) -> None:
        self.host.lb("network", "create", "-d", "macvlan", "--subnet", SUBNET, "--gateway",
                     GATEWAY, "--ip-range", RANGE, "-o", "parent=uplink", *opts, name)  # fmt: skip

    def links(self) -> list[dict]:
        return json.loads(self.host.run(["ip", "-j", "-d", "link"]).stdout)


@pytest.fixture
def lan():
    with SimHost("mv") as h, outside("switch") as sw, outside("lanhost") as lh:
        sw.run("ip link add br0 type bridge && ip link set br0 up && "
               f"ip addr add {GATEWAY}/24 dev br0")  # fmt: skip
        h.wire(sw, "uplink", "sw-host", "192.168.77.2/24")
        lh.wire(sw, "eth0", "sw-lan", f"{LAN_HOST}/24")
        sw.run("ip link set sw-host master br0 && ip link set sw-lan master br0")
        yield Lan(h, sw, lh)


def _mac(h: SimHost, ctr: str, network: str) -> str:
    return lb_json(h, "inspect", ctr)[0]["NetworkSettings"]["Networks"][network]["MacAddress"]


def test_bridge_mode_sandboxes_are_lan_stations(lan):
    h = lan.host
    lan.macvlan("lan")
    for name in ("m1", "m2"):
        h.lb("container", "create", "--name", name, "--network", "lan")
    m1, m2 = ip_of(h, "m1", "lan"), ip_of(h, "m2", "lan")
    for ip in (m1, m2):  # IPAM hands out --ip-range addresses only
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(RANGE), ip
    assert ping(h, "m1", LAN_HOST) and ping(h, "m2", LAN_HOST)
    assert ping(h, "m1", m2)
    # Off-LAN traffic goes to the gateway given with --gateway.
    assert f"default via {GATEWAY} dev eth0" in h.run("ip netns exec m1 ip route").stdout
    # The LAN sees each sandbox with a MAC of its own (not the uplink's).
    neigh = {n["dst"]: n.get("lladdr") for n in json.loads(lan.lanhost.run("ip -j neigh").stdout)}
    uplink_mac = next(link["address"] for link in lan.links() if link["ifname"] == "uplink")
    assert neigh[m1] == _mac(h, "m1", "lan") != uplink_mac
    assert neigh[m2] == _mac(h, "m2", "lan") != neigh[m1]
    # The host cannot reach its own macvlan children (the kernel's design), nor they the host.
    assert h.run(["ping", "-c1", "-W1", m1], check=False).returncode != 0
    assert not ping(h, "m1", "192.168.77.2")
    doc = lb_json(h, "network", "inspect", "lan")[0]
    assert doc["Driver"] == "macvlan"
    assert doc["Options"]["parent"] == "uplink" and doc["Options"]["macvlan_mode"] == "bridge"
    assert set(doc["Containers"]) and doc["IPAM"]["Config"][0]["Gateway"] == GATEWAY
    # Names resolve as on any user-defined network.
    proc = h.run(["ip", "netns", "exec", "m1", "getent", "hosts", "m2"], check=False)
    assert m2 in proc.stdout
    h.lb("rm", "m1", "m2")
    h.lb("network", "rm", "lan")
    assert [link["ifname"] for link in lan.links()] == ["lo", "uplink"]


def test_private_mode_sandboxes_cannot_reach_each_other(lan):
    h = lan.host
    lan.macvlan("priv", "-o", "macvlan_mode=private")
    for name in ("p1", "p2"):
        h.lb("container", "create", "--name", name, "--network", "priv")
    assert ping(h, "p1", LAN_HOST) and ping(h, "p2", LAN_HOST)
    assert not ping(h, "p1", ip_of(h, "p2", "priv"))


def test_vepa_mode_goes_through_the_switch(lan):
    h = lan.host
    lan.macvlan("vepa", "-o", "macvlan_mode=vepa")
    for name in ("v1", "v2"):
        h.lb("container", "create", "--name", name, "--network", "vepa")
    v2 = ip_of(h, "v2", "vepa")
    assert ping(h, "v1", LAN_HOST)
    # Frames between siblings leave by the uplink; a switch sends nothing back out of the port
    # it came in by...
    assert not ping(h, "v1", v2)
    # ...unless that port is in hairpin (reflective relay) mode.
    lan.switch.run("bridge link set dev sw-host hairpin on")
    h.run("ip netns exec v1 ip neigh flush all")  # forget the failed ARP for v2
    assert ping(h, "v1", v2)


def test_host_shim_lifts_the_host_limitation_and_goes_with_the_network(lan):
    h = lan.host
    lan.macvlan("shimmed", "-o", "lowbridge.host_shim=true")
    h.lb("container", "create", "--name", "s1", "--network", "shimmed")
    s1 = ip_of(h, "s1", "shimmed")
    assert h.run(["ping", "-c1", "-W2", s1], check=False).returncode == 0
    assert ping(h, "s1", "192.168.77.2")
    assert ping(h, "s1", LAN_HOST)
    aux = lb_json(h, "network", "inspect", "shimmed")[0]["IPAM"]["Config"][0]
    shim_ip = aux["AuxiliaryAddresses"]["lowbridge-host-shim"]
    assert shim_ip != s1
    kinds = {link["ifname"]: link.get("linkinfo", {}).get("info_kind") for link in lan.links()}
    assert [k for k, v in kinds.items() if v == "macvlan"] != []
    # Disconnect takes the host route; removing the network takes the shim.
    h.lb("network", "disconnect", "shimmed", "s1")
    assert s1 not in h.run("ip route").stdout
    assert "eth0" not in h.run("ip netns exec s1 ip -br link").stdout
    h.lb("rm", "s1")
    h.lb("network", "rm", "shimmed")
    assert [link["ifname"] for link in lan.links()] == ["lo", "uplink"]
    assert h.run("ip route").stdout.count("\n") == 1


def test_no_parent_makes_an_internal_network_on_a_parent_of_its_own(lan):
    h = lan.host
    h.lb("network", "create", "-d", "macvlan", "isolated")
    for name in ("i1", "i2"):
        h.lb("container", "create", "--name", name, "--network", "isolated")
    assert ping(h, "i1", ip_of(h, "i2", "isolated"))
    assert "default" not in h.run("ip netns exec i1 ip route").stdout
    doc = lb_json(h, "network", "inspect", "isolated")[0]
    assert doc["Internal"] is True and doc["Options"]["parent"].startswith("lb-")
    h.lb("rm", "i1", "i2")
    h.lb("network", "rm", "isolated")
    assert [link["ifname"] for link in lan.links()] == ["lo", "uplink"]


def test_8021q_parent_is_made_and_removed(lan):
    h = lan.host
    proc = h.lb("network", "create", "-d", "macvlan", "--subnet", "192.168.50.0/24",
                "-o", "parent=uplink.50", "v50", check=False)  # fmt: skip
    if proc.returncode != 0 and "8021q" in proc.stderr:
        pytest.skip("the kernel has no 802.1q VLAN support (module 8021q, link kind vlan)")
    assert proc.returncode == 0, proc.stderr
    lan.lanhost.run("ip link add link eth0 name eth0.50 type vlan id 50 && ip link set eth0.50 up")
    lan.lanhost.run("ip addr add 192.168.50.10/24 dev eth0.50")
    vlan = next(link for link in lan.links() if link["ifname"] == "uplink.50")
    assert vlan["linkinfo"]["info_data"]["id"] == 50
    # A second network on the same sub-interface shares it.
    h.lb("network", "create", "-d", "macvlan", "--subnet", "192.168.51.0/24",
         "-o", "parent=uplink.50", "v50b")  # fmt: skip
    h.lb("container", "create", "--name", "t", "--network", "v50")
    assert ping(h, "t", "192.168.50.10")
    h.lb("rm", "t")
    h.lb("network", "rm", "v50")
    assert any(link["ifname"] == "uplink.50" for link in lan.links())
    h.lb("network", "rm", "v50b")
    assert not any(link["ifname"] == "uplink.50" for link in lan.links())


def test_macvlan_bad_input_is_refused_without_change(lan):
    h = lan.host
    lan.macvlan("pt", "-o", "macvlan_mode=passthru")
    before = h.run("ip -br link").stdout
    for opts, words in (
        (["-o", "parent=lo"], "loopback"),
        (["-o", "parent=nothere0"], "not found"),
        (["-o", "parent=uplink", "-o", "macvlan_mode=fast"], "macvlan_mode"),
        (["-o", "parent=uplink"], "passthru"),
        (["-o", "parent=nothere.5"], "nothere"),
        (["-o", "parent=uplink.5000"], "4094"),
        (["-o", "lowbridge.host_shim=maybe"], "host_shim"),
    ):
        proc = h.lb("network", "create", "-d", "macvlan", "--subnet", "10.44.0.0/24", *opts,
                    "bad", check=False)  # fmt: skip
        assert proc.returncode == 2 or proc.returncode == 4, (opts, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.splitlines()) == 1, (opts, proc.stderr)
    proc = h.lb("container", "create", "--name", "x", "--network", "pt", "-p", "80", check=False)
    assert proc.returncode == 2 and "publish" in proc.stderr
    assert h.run("ip -br link").stdout == before
    assert "bad" not in [line.split()[1] for line in h.lb("network", "ls").stdout.splitlines()]


def test_passthru_gives_the_parent_to_one_sandbox(lan):
    h = lan.host
    lan.macvlan("pt", "-o", "macvlan_mode=passthru")
    h.lb("container", "create", "--name", "only", "--network", "pt")
    assert ping(h, "only", LAN_HOST)


def test_network_host_runs_in_the_hosts_namespace(lan):
    h = lan.host
    out = h.lb("run", "--rm", "--network", "host", "--", "sh", "-c",
               "ip -br addr show uplink; cat /etc/resolv.conf; hostname").stdout  # fmt: skip
    assert "192.168.77.2/24" in out
    assert h.run("cat /etc/resolv.conf").stdout in out
    assert h.run("hostname").stdout.strip() == out.splitlines()[-1]
    # It reaches the LAN as the host does, with the host's address.
    assert h.lb("run", "--rm", "--network", "host", "--", "ping", "-c1", "-W2", LAN_HOST,
                check=False).returncode == 0  # fmt: skip
    h.lb("run", "-d", "--name", "hd", "--network", "host", "--", "sleep", "300")
    assert h.lb("ps", "--format", "{{.Names}} {{.State}}").stdout == "hd running\n"
    for argv, words in (
        (["run", "--network", "host", "-p", "8080:80", "--", "true"], "publish"),
        (["network", "connect", "bridge", "hd"], "cannot be connected"),
        (["network", "disconnect", "host", "hd"], "host network"),
        (["rm", "hd"], "running"),
    ):
        proc = h.lb(*argv, check=False)
        assert proc.returncode != 0 and words in proc.stderr, (argv, proc.stderr)
    assert lb_json(h, "inspect", "hd")[0]["HostConfig"]["NetworkMode"] == "host"
    h.lb("rm", "-f", "hd")
    assert h.run(["pgrep", "-x", "sleep"], check=False).returncode == 1


def test_dual_stack_macvlan_sandboxes_are_ipv6_stations_too(lan):
    """--ipv6 on macvlan (issue 20): addresses from the LAN's IPv6 subnet, the default route via
    the --gateway given; LAN hosts and the other station reach them over IPv6, AAAA by name."""
    h = lan.host
    lan.switch.run("ip addr add fd00:77::1/64 dev br0 nodad")
    lan.lanhost.run("ip addr add fd00:77::10/64 dev eth0 nodad")
    h.lb("network", "create", "-d", "macvlan", "--ipv6", "--subnet", SUBNET, "--gateway", GATEWAY,
         "--ip-range", RANGE, "--subnet", "fd00:77::/64", "--gateway", "fd00:77::1",
         "--ip-range", "fd00:77::100/120", "-o", "parent=uplink", "lan6")  # fmt: skip
    for name in ("s1", "s2"):
        h.lb("container", "create", "--name", name, "--network", "lan6")
    doc = lb_json(h, "inspect", "s1")[0]["NetworkSettings"]["Networks"]["lan6"]
    assert (doc["GlobalIPv6Address"], doc["IPv6Gateway"]) == ("fd00:77::100", "fd00:77::1")
    assert ping(h, "s1", "fd00:77::10") and ping(h, "s1", "fd00:77::1")
    assert ping(h, "s1", "fd00:77::101")
    assert "default via fd00:77::1 dev eth0" in h.run("ip netns exec s1 ip -6 route").stdout
    proc = h.run(["ip", "netns", "exec", "s1", "getent", "ahostsv6", "s2"], check=False)
    assert "fd00:77::101" in proc.stdout
    h.lb("rm", "s1", "s2")
    h.lb("network", "rm", "lan6")
    assert [link["ifname"] for link in lan.links()] == ["lo", "uplink"]
