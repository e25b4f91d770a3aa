"""IPv6 dual stack on bridge networks, both backends, proven with real traffic.

A simulated host with a dual-stack uplink (192.168.78.2, 2001:db8:78::2) faces a LAN namespace
(.1, ::1) that runs a server answering with the address it sees.  The IPv4 behaviour of the same
paths is test_firewall's; here every IPv6 path is checked, each "blocked" beside a positive
control through the same path.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from lowbridge.simhost import SimHost, outside
from tests.integration.conftest import lb_json, ping, state
from tests.integration.conftest import wait_for as _wait

UPLINK4, LAN4 = "192.168.78.2", "192.168.78.1"
UPLINK6, LAN6 = "2001:db8:78::2", "2001:db8:78::1"


@dataclass
class Lab:
    host: SimHost
    lan: SimHost
    backend: str


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(request):
    env = {"LOWBRIDGE_FIREWALL_BACKEND": request.param}
    with SimHost("v6", env=env) as h, outside("lan6") as lan:
        h.wire(lan, "uplink0", "lan0", f"{UPLINK4}/24", f"{LAN4}/24")
        h.run(["ip", "addr", "add", f"{UPLINK6}/64", "dev", "uplink0", "nodad"])
        lan.run(["ip", "addr", "add", f"{LAN6}/64", "dev", "lan0", "nodad"])
        h.run(["ip", "route", "add", "default", "via", LAN4])
        h.run(["ip", "-6", "route", "add", "default", "via", LAN6])
        lan.popen(["socat", "TCP6-LISTEN:7000,fork,reuseaddr", "SYSTEM:echo lan-$SOCAT_PEERADDR"])
        _wait(lambda: tcp(lan, None, LAN6, 7000))
        yield Lab(h, lan, request.param)


def tcp(h: SimHost, ns: str | None, ip: str, port: int, timeout: int = 2) -> str | None:
    """Connect (an IPv6 address in brackets) and read the server's line; the address it names
    in socat's expanded form is given back compressed."""
    where = f"[{ip}]" if ":" in ip else ip
    argv = ["socat", f"-T{timeout}", "-", f"TCP:{where}:{port},connect-timeout={timeout}"]
    argv = ["ip", "netns", "exec", ns, *argv] if ns else argv
    out = h.run(argv, check=False, timeout=timeout + 20, input="").stdout.strip()
    if not out:
        return None
    name, _, peer = out.partition("-")
    peer = peer.strip("[]")
    if peer.startswith("::ffff:") or peer.startswith("0000:0000:0000:0000:0000:ffff:"):
        return f"{name}-{ipaddress.IPv6Address(peer).ipv4_mapped}"
    return f"{name}-{ipaddress.ip_address(peer)}"


def udp6(h: SimHost, ip: str, port: int) -> str | None:
    """One datagram to [ip]:port from the host; the server's reply (its peer, compressed)."""
    proc = h.run(["socat", "-T2", "-", f"UDP6:[{ip}]:{port}"], check=False, input="x\n",
                 timeout=20)  # fmt: skip
    name, _, peer = proc.stdout.strip().partition("-")
    return f"{name}-{ipaddress.ip_address(peer.strip('[]'))}" if peer else None


def serve(h: SimHost, name: str, network: str, *extra: str) -> None:
    """A sandbox answering on TCP and UDP 80 -- IPv4 and IPv6 -- with "<name>-<peer address>"."""
    reply = f"'SYSTEM:echo {name}-$SOCAT_PEERADDR'"
    script = (f"socat TCP6-LISTEN:80,fork,reuseaddr,ipv6only=0 {reply} & "
              f"socat UDP6-RECVFROM:80,fork,ipv6only=0 {reply} & wait")  # fmt: skip
    h.lb("run", "-d", "--name", name, "--network", network, *extra, "--", "sh", "-c", script)


def addr6(h: SimHost, name: str, network: str) -> str:
    return lb_json(h, "inspect", name)[0]["NetworkSettings"]["Networks"][network][
        "GlobalIPv6Address"
    ]


def test_dual_stack_sandboxes_talk_by_address_and_name_and_networks_stay_apart(lab):
    h = lab.host
    h.lb("network", "create", "--ipv6", "--subnet", "10.81.0.0/24", "--subnet", "fd00:81::/64",
         "n1")  # fmt: skip
    h.lb("network", "create", "--ipv6", "n2")  # a ULA /64 of the host's own /48
    serve(h, "a", "n1")
    h.lb("run", "-d", "--name", "b", "--network", "n1", "--ip6", "fd00:81::b", "sleep", "600")
    h.lb("run", "-d", "--name", "c", "--network", "n2", "sleep", "600")
    _wait(lambda: tcp(h, "b", "fd00:81::2", 80))
    # Same network: by address and by name (AAAA from the embedded resolver), both families.
    assert tcp(h, "b", "fd00:81::2", 80) == "a-fd00:81::b"
    assert tcp(h, "b", "10.81.0.2", 80) == "a-10.81.0.3"
    resolved = h.run(["ip", "netns", "exec", "b", sys.executable, "-c",
                      "import socket; print(socket.getaddrinfo('a', 80, socket.AF_INET6)[0][4][0])"]
                     ).stdout.strip()  # fmt: skip
    assert resolved == "fd00:81::2"
    assert ping(h, "b", "fd00:81::2") and ping(h, "b", "fd00:81::1")
    # Another network: nothing passes over IPv6, either way; its own gateway still answers.
    c6 = addr6(h, "c", "n2")
    assert ipaddress.IPv6Address(c6) in ipaddress.IPv6Network("fd00::/8")
    n2 = lb_json(h, "network", "inspect", "n2")[0]
    gw6 = n2["IPAM"]["Config"][1]["Gateway"]
    assert ping(h, "c", gw6)
    assert tcp(h, "c", "fd00:81::2", 80, timeout=1) is None
    assert not ping(h, "c", "fd00:81::2") and not ping(h, "b", c6)
    # What docker inspect shows of it.
    n1 = lb_json(h, "network", "inspect", "n1")[0]
    assert n1["EnableIPv6"] is True
    assert [c["Subnet"] for c in n1["IPAM"]["Config"]] == ["10.81.0.0/24", "fd00:81::/64"]
    assert n1["Containers"][lb_json(h, "inspect", "b")[0]["Id"]]["IPv6Address"] == "fd00:81::b/64"
    ep = lb_json(h, "inspect", "b")[0]["NetworkSettings"]["Networks"]["n1"]
    assert (ep["GlobalIPv6Address"], ep["GlobalIPv6PrefixLen"], ep["IPv6Gateway"]) == (
        "fd00:81::b", 64, "fd00:81::1")  # fmt: skip
    assert ep["IPAMConfig"] == {"IPv6Address": "fd00:81::b"}
    hosts = h.run(["ip", "netns", "exec", "b", "cat", "/etc/hosts"]).stdout
    assert "fd00:81::b\t" in hosts
    # The kernel holds the IPv6 rules in the backend's IPv6 place.
    device = n1["Device"]
    if lab.backend == "nftables":
        listed = json.loads(h.run(["nft", "-j", "list", "table", "ip6", "lowbridge"]).stdout)
        assert device in json.dumps(listed)
    else:
        assert f"-o {device}" in h.run(["ip6tables-save"]).stdout


def test_published_ports_answer_on_both_families_and_sandboxes_go_out_over_ipv6(lab):
    h, lan = lab.host, lab.lan
    h.lb("network", "create", "--ipv6", "--subnet", "fd00:82::/64", "n3")
    serve(h, "p", "n3", "-p", "8080:80", "-p", "[::]:9090:80", "-p", "[::1]:8081:80",
          "-p", "[::1]:8081:80/udp")  # fmt: skip
    _wait(lambda: tcp(lan, None, UPLINK6, 8080))
    # -p 8080:80 is 0.0.0.0 and [::] (Docker's default binding); [::]:9090 IPv6 alone.
    assert tcp(lan, None, UPLINK6, 8080) == f"p-{LAN6}"
    assert tcp(lan, None, UPLINK4, 8080) == f"p-{LAN4}"
    assert tcp(lan, None, UPLINK6, 9090) == f"p-{LAN6}"
    assert tcp(lan, None, UPLINK4, 9090, timeout=1) is None
    ps = h.lb("ps", "--format", "{{.Ports}}", "--filter", "name=p").stdout.strip()
    assert ps == (
        "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, [::]:9090->80/tcp, [::1]:8081->80/tcp, "
        "[::1]:8081->80/udp"
    )
    # [::1]: the host itself, through lowbridge's relay (the kernel cannot DNAT ::1 off the
    # host); not from the LAN, not on the host's other addresses.
    assert tcp(h, None, "::1", 8081) == "p-fd00:82::1"
    assert udp6(h, "::1", 8081) == "p-fd00:82::1"
    assert tcp(lan, None, UPLINK6, 8081, timeout=1) is None
    # From the LAN, the sandbox's own address is not reachable (raw drop), the port is.
    lan.run(["ip", "-6", "route", "add", "fd00:82::/64", "via", UPLINK6])
    assert tcp(lan, None, "fd00:82::2", 80, timeout=1) is None
    assert tcp(lan, None, UPLINK6, 8080) == f"p-{LAN6}"
    # Out to the LAN: masqueraded behind the uplink's IPv6 address (Docker 27's default).
    assert tcp(h, "p", LAN6, 7000) == f"lan-{UPLINK6}"
    # Hairpin: the sandbox reaches its own published port through the host's IPv6 address,
    # masqueraded (to the bridge's gateway address), and so does a neighbour on its bridge.
    assert tcp(h, "p", UPLINK6, 8080) == "p-fd00:82::1"
    h.lb("run", "-d", "--name", "q", "--network", "n3", "sleep", "600")
    assert tcp(h, "q", UPLINK6, 8080) is not None


def test_icc_off_holds_over_ipv6(lab):
    h = lab.host
    h.lb("network", "create", "--ipv6", "--subnet", "fd00:84::/64", "-o",
         "com.docker.network.bridge.enable_icc=false", "quiet6")  # fmt: skip
    serve(h, "k1", "quiet6")
    h.lb("run", "-d", "--name", "k2", "--network", "quiet6", "sleep", "600")
    assert ping(h, "k2", "fd00:84::1")  # the gateway answers
    assert tcp(h, "k2", "fd00:84::2", 80, timeout=1) is None
    assert not ping(h, "k2", "fd00:84::2")
    assert tcp(h, "k2", LAN6, 7000) == f"lan-{UPLINK6}"  # and the way out stays open


def test_internal_ipv6_network_stays_inside_and_ipv4_only_sandboxes_get_no_ipv6(lab):
    h = lab.host
    h.lb("network", "create", "--ipv6", "--internal", "--subnet", "fd00:83::/64", "in6")
    serve(h, "i1", "in6")
    h.lb("run", "-d", "--name", "i2", "--network", "in6", "sleep", "600")
    _wait(lambda: tcp(h, "i2", "fd00:83::2", 80))
    assert tcp(h, "i2", "fd00:83::2", 80) == "i1-fd00:83::3"
    assert tcp(h, "i2", LAN6, 7000, timeout=1) is None
    assert tcp(h, None, LAN6, 7000) is not None  # the host itself still reaches the LAN
    # Docker 26+: an interface on an IPv4-only network has no IPv6 at all (not even fe80::).
    h.lb("network", "create", "v4only")
    h.lb("run", "-d", "--name", "four", "--network", "v4only", "sleep", "600")
    addrs = json.loads(h.run(["ip", "netns", "exec", "four", "ip", "-j", "-6", "addr"]).stdout)
    assert not [i for i in addrs if i["ifname"] != "lo" and i.get("addr_info")]


def test_ipv6_only_networks(lab):
    """--ipv4=false (Docker 28): no IPv4 on the network or its interfaces; everything else --
    names, the default route, NAT out, published ports -- over IPv6."""
    h, lan = lab.host, lab.lan
    h.lb("network", "create", "--ipv6", "--ipv4=false", "--subnet", "fd00:85::/64", "only6")
    serve(h, "o1", "only6", "-p", "8085:80")
    h.lb("run", "-d", "--name", "o2", "--network", "only6", "sleep", "600")
    _wait(lambda: tcp(h, "o2", "fd00:85::2", 80))
    assert tcp(h, "o2", "fd00:85::2", 80) == "o1-fd00:85::3"
    v4 = h.run(["ip", "netns", "exec", "o2", "ip", "-4", "-o", "addr", "show", "eth0"]).stdout
    assert v4.strip() == ""
    ep = lb_json(h, "inspect", "o2")[0]["NetworkSettings"]["Networks"]["only6"]
    assert (ep["IPAddress"], ep["GlobalIPv6Address"], ep["IPv6Gateway"]) == (
        "", "fd00:85::3", "fd00:85::1")  # fmt: skip
    assert [c["Subnet"] for c in lb_json(h, "network", "inspect", "only6")[0]["IPAM"]["Config"]
            ] == ["fd00:85::/64"]  # fmt: skip
    lookup = ("import socket\nfor f in (socket.AF_INET6, socket.AF_INET):\n"
              "    try: print(socket.getaddrinfo('o1', 80, f)[0][4][0])\n"
              "    except OSError: print('none')")  # fmt: skip
    found = h.run(["ip", "netns", "exec", "o2", sys.executable, "-c", lookup]).stdout.split()
    assert found == ["fd00:85::2", "none"]  # AAAA, and no A (a family miss)
    assert tcp(h, "o2", LAN6, 7000) == f"lan-{UPLINK6}"  # default route and NAT over IPv6
    _wait(lambda: tcp(lan, None, UPLINK6, 8085))  # (the new sandbox's neighbour discovery)
    assert tcp(lan, None, UPLINK6, 8085) == f"o1-{LAN6}"
    assert tcp(lan, None, UPLINK4, 8085, timeout=1) is None
    ps = h.lb("ps", "--format", "{{.Ports}}", "--filter", "name=o1").stdout.strip()
    assert ps == "[::]:8085->80/tcp"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["network", "create", "--ipv6", "--subnet", "fd00::zz/64", "x"], "invalid subnet"),
        (["network", "create", "--ipv6", "--subnet", "fd00:90::/127", "x"], "/126"),
        (["network", "create", "--ipv6", "--subnet", "fd00:90::/128", "x"], "/126"),
        (["network", "create", "--ipv6", "--subnet", "fe80::/64", "x"], "link-local"),
        (["network", "create", "--ipv6", "--subnet", "ff05::/64", "x"], "multicast"),
        (["network", "create", "--ipv6", "--subnet", "fd00:90::/64", "--gateway", "fd00:91::1",
          "x"], "not a usable address"),
        (["network", "create", "--ipv6", "--subnet", "fd00:81::/80", "x"], "overlaps"),
        (["network", "create", "--subnet", "fd00:90::/64", "x"], "no --ipv6"),
        (["network", "create", "--ipv6", "--subnet", "fd00:90::/64", "--subnet", "fd00:91::/64",
          "x"], "one IPv6 --subnet"),
        (["run", "--network", "v4only", "--ip6", "fd00:81::77", "true"], "has no IPv6"),
        (["run", "--network", "n2", "--ip6", "fd00:81::77", "true"], "user configured subnets"),
        (["run", "--network", "n1", "--ip6", "fd00:99::7", "true"], "not a usable address"),
        (["run", "--network", "n1", "--ip6", "fd00:81::2", "true"], "already in use"),
        (["network", "create", "--ipv4=false", "x"], "IPv4 or IPv6 must be enabled"),
        (["network", "create", "--ipv6", "--ipv4=false", "--subnet", "10.9.0.0/24", "x"],
         "--ipv4=false"),
        (["network", "create", "--ipv6", "--ipv4=nah", "x"], "true or false"),
        (["network", "create", "-d", "macvlan", "--ipv6", "--ipv4=false", "x"],
         "not supported yet"),
        (["run", "--network", "only6", "--ip", "10.9.0.7", "true"], "has no IPv4"),
        (["explain", "a", "fd00:81::2"], "explain follows IPv4 paths only"),
        (["run", "--network", "only6", "-p", "127.0.0.1:8086:80", "true"], "no IPv4"),
    ],
)  # fmt: skip
def test_bad_ipv6_input_is_one_line_and_changes_nothing(lab, argv, message):
    h = lab.host
    before = state(h)
    proc = h.lb(*argv, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert state(h) == before


def test_the_resolver_forwards_to_an_ipv6_upstream(lab):
    """A --dns server with an IPv6 address is asked over IPv6 (from the sandbox, masqueraded
    out), and its answer comes back through 127.0.0.11."""
    h, lan = lab.host, lab.lan
    server = os.path.join(os.path.dirname(__file__), "dns_upstream.py")
    up = lan.popen([sys.executable, server, LAN6, "outside.example=198.51.100.7"],
                   stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert up.stdout.readline().strip() == "ready"
        h.lb("run", "-d", "--name", "r6", "--network", "n1", "--dns", LAN6, "sleep", "600")
        proc = h.run(["ip", "netns", "exec", "r6", "getent", "hosts", "outside.example"],
                     check=False)  # fmt: skip
        assert proc.stdout.split()[:1] == ["198.51.100.7"], proc
    finally:
        up.kill()
        up.wait()
    h.lb("rm", "-f", "r6")


def test_check_finds_a_lost_ipv6_address_and_gc_makes_it_again(lab):
    h = lab.host
    h.run(["ip", "netns", "exec", "b", "ip", "-6", "addr", "del", "fd00:81::b/64", "dev", "eth0"])
    proc = h.lb("check", check=False)
    assert proc.returncode == 1 and "address fd00:81::b/64 on eth0" in proc.stdout, proc.stdout
    h.lb("gc")
    assert h.lb("check", check=False).returncode == 0
    assert ping(h, "b", "fd00:81::2") and ping(h, "b", "10.81.0.2")


def test_the_default_bridge_takes_ipv6_from_the_daemon_settings(lab):
    """dockerd's ``ipv6`` and ``fixed-cidr-v6``: the default bridge becomes dual stack; a
    changed setting waits until no sandbox is on it, then the bridge is made again."""
    h = lab.host
    six = {"LOWBRIDGE_IPV6": "true", "LOWBRIDGE_FIXED_CIDR_V6": "fd00:17::/64"}
    h.lb("run", "-d", "--name", "d1", "sleep", "600", env=six)
    h.lb("run", "-d", "--name", "d2", "sleep", "600", env=six)
    ep = lb_json(h, "inspect", "d1")[0]["NetworkSettings"]["Networks"]["bridge"]
    assert (ep["GlobalIPv6Address"], ep["IPv6Gateway"]) == ("fd00:17::2", "fd00:17::1")
    assert ping(h, "d1", "fd00:17::3") and ping(h, "d1", "fd00:17::1")
    assert lb_json(h, "network", "inspect", "bridge")[0]["EnableIPv6"] is True
    proc = h.lb("container", "create", "--name", "d3", "--network", "n1")  # setting off now
    assert "takes effect once no sandbox is on it" in proc.stderr
    h.lb("rm", "-f", "d1", "d2", "d3", env=six)
    h.lb("network", "create", "after")  # the first change without the setting
    assert lb_json(h, "network", "inspect", "bridge")[0]["EnableIPv6"] is False
    h.lb("run", "-d", "--name", "d4", "sleep", "600")
    ep = lb_json(h, "inspect", "d4")[0]["NetworkSettings"]["Networks"]["bridge"]
    assert ep["GlobalIPv6Address"] == "" and ep["IPAddress"]
    addrs = h.run(["ip", "-6", "addr", "show", "dev", "lowbridge0", "scope", "global"]).stdout
    assert "fd00:17::1" not in addrs
    h.lb("rm", "-f", "d4")
    h.lb("network", "rm", "after")


def test_removing_the_ipv6_networks_leaves_no_ipv6_rule(lab):
    h = lab.host
    for name in ("a", "b", "c", "p", "q", "i1", "i2", "four", "k1", "k2", "o1", "o2"):
        h.lb("rm", "-f", name)
    for name in ("n1", "n2", "n3", "in6", "v4only", "quiet6", "only6"):
        h.lb("network", "rm", name)
    if lab.backend == "nftables":
        assert h.run(["nft", "list", "table", "ip6", "lowbridge"], check=False).returncode != 0
    else:
        assert "LOWBRIDGE" not in h.run(["ip6tables-save"]).stdout
    proc = h.lb("check", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
