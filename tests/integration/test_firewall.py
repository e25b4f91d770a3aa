"""Docker's packet behaviour with lowbridge's rules, both backends, proven with real traffic.

Each test builds a simulated host whose uplink (192.168.77.2) faces a LAN namespace (192.168.77.1)
running a server that answers with the address it sees.  Every "blocked" check is paired with a
positive control through the same path, so a broken tool cannot pass for a dropped packet.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import pytest

from lowbridge.simhost import SimHost
from tests.integration.conftest import LAN_IP, UPLINK, ip_of, lb_json, on_a_lan, ping
from tests.integration.conftest import wait_for as _wait

UDP_RECORDER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7001))
while True:
    with open("/run/udp", "a") as f:
        f.write(s.recvfrom(64)[1][0] + "\\n")
"""


@dataclass
class Lab:
    host: SimHost
    lan: SimHost
    backend: str


@pytest.fixture(params=["iptables", "nftables"])
def lab(request):
    env = {"LOWBRIDGE_FIREWALL_BACKEND": request.param}
    with on_a_lan("fw", env=env) as (h, lan):
        lan.popen(["socat", "TCP-LISTEN:7000,fork,reuseaddr", "SYSTEM:echo lan-$SOCAT_PEERADDR"])
        # One process records each datagram's source (socat's UDP-RECVFROM,fork hands each
        # datagram to a child and could lose the second of two while it forks).
        lan.popen([sys.executable, "-c", UDP_RECORDER])
        _wait(lambda: tcp(lan, None, LAN_IP, 7000))
        yield Lab(h, lan, request.param)


def _in(ns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


def tcp(h: SimHost, ns: str | None, ip: str, port: int, timeout: int = 2) -> str | None:
    """Connect and read the server's one line (it names what source address it saw)."""
    argv = ["socat", f"-T{timeout}", "-", f"TCP:{ip}:{port},connect-timeout={timeout}"]
    proc = h.run(_in(ns, argv), check=False, timeout=timeout + 20, input="")
    return proc.stdout.strip() or None


def udp(
    h: SimHost, ns: str | None, ip: str, port: int, timeout: int = 2, tries: int = 1
) -> str | None:
    """Send one datagram and read the reply; ``tries`` > 1 for a check that expects one (UDP
    may lose a datagram, and a loaded VM may answer late: each try is a new flow)."""
    for _ in range(tries):
        proc = h.run(_in(ns, ["socat", f"-T{timeout}", "-", f"UDP:{ip}:{port}"]), check=False,
                     timeout=timeout + 20, input="x\n")  # fmt: skip
        if proc.stdout.strip():
            return proc.stdout.strip()
    return None


def serve(h: SimHost, name: str, network: str, *extra: str, tcp_ports=(80, 4444)) -> str:
    """A sandbox answering on TCP ``tcp_ports`` and UDP 80 with "<name>-<peer address>"."""
    script = " & ".join(
        [f"socat TCP-LISTEN:{p},fork,reuseaddr 'SYSTEM:echo {name}-$SOCAT_PEERADDR'"
         for p in tcp_ports]
        + [f"socat UDP-RECVFROM:80,fork 'SYSTEM:echo {name}-$SOCAT_PEERADDR'"]
    ) + " & wait"  # fmt: skip
    h.lb("run", "-d", "--name", name, "--network", network, *extra, "--", "sh", "-c", script)
    ip = ip_of(h, name, network)
    # Both listeners start at once: wait for each (a ready TCP one says nothing of the UDP one).
    _wait(lambda: tcp(h, None, ip, tcp_ports[0]))
    _wait(lambda: udp(h, None, ip, 80, timeout=1))
    return ip


def test_members_talk_on_every_port_and_networks_are_isolated(lab):
    h = lab.host
    h.lb("network", "create", "n1")
    h.lb("network", "create", "n2")
    a = serve(h, "a", "n1")
    c = serve(h, "c", "n2")
    h.lb("container", "create", "--name", "b", "--network", "n1")
    b = ip_of(h, "b", "n1")
    # Same network: everything passes, and the peer sees b's own address.
    assert tcp(h, "b", a, 80) == f"a-{b}"
    assert tcp(h, "b", a, 4444) == f"a-{b}"
    assert udp(h, "b", a, 80, tries=3) == f"a-{b}"
    assert ping(h, "b", a)
    # Different networks: nothing passes, either way (the gateways stay reachable).
    assert ping(h, "c", "172.19.0.1") and ping(h, "c", "172.18.0.1")
    for src, dst in (("c", a), ("b", c)):
        assert tcp(h, src, dst, 80, timeout=1) is None
        assert udp(h, src, dst, 80, timeout=1) is None
        assert not ping(h, src, dst)


def test_outbound_is_masqueraded_and_can_be_turned_off(lab):
    h = lab.host
    h.lb("network", "create", "nat-on")
    h.lb("network", "create", "-o", "com.docker.network.bridge.enable_ip_masquerade=false",
         "nat-off")  # fmt: skip
    h.lb("container", "create", "--name", "on", "--network", "nat-on")
    h.lb("container", "create", "--name", "off", "--network", "nat-off")
    assert tcp(h, "on", LAN_IP, 7000) == f"lan-{UPLINK}"
    # Without masquerade the LAN sees the container's own address (and, having no route back
    # to it, cannot answer: one-way UDP shows what arrived).
    assert _arrived(lab, h, "on") == UPLINK
    assert _arrived(lab, h, "off") == ip_of(h, "off", "nat-off")
    assert "nat-off outbound" not in h.lb("firewall", "show").stdout


def _arrived(lab: Lab, h: SimHost, sender: str) -> str | None:
    """Send datagrams from ``sender`` to the LAN's recorder until one arrives; the source the
    LAN saw (the recorder's file is emptied first; a datagram may be lost, so up to 3 tries)."""
    lab.lan.run(["truncate", "-s0", "/run/udp"])
    for _ in range(3):
        assert udp(h, sender, LAN_IP, 7001, timeout=1) is None  # nothing ever answers
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if seen := lab.lan.run(["cat", "/run/udp"]).stdout.split():
                return seen[0]
            time.sleep(0.05)
    return None


def test_internal_network_reaches_only_its_members(lab):
    h = lab.host
    h.lb("network", "create", "--internal", "--subnet", "10.30.0.0/24", "inner")
    i1 = serve(h, "i1", "inner")
    h.lb("container", "create", "--name", "i2", "--network", "inner")
    assert tcp(h, "i2", i1, 80) == f"i1-{ip_of(h, 'i2', 'inner')}"
    assert h.run(["ip", "-n", "i2", "route", "show", "default"]).stdout.strip() == ""
    # Even with a default route added by hand inside, nothing leaves the network.
    h.run(["ip", "-n", "i2", "route", "add", "default", "via", "10.30.0.1"])
    assert tcp(h, "i2", LAN_IP, 7000, timeout=1) is None
    shown = h.lb("firewall", "show").stdout.splitlines()
    assert not [ln for ln in shown if "inner" in ln and "masquerade" in ln.lower()]  # no NAT
    # A normal network on the same host still reaches the LAN (positive control).
    h.lb("network", "create", "outer")
    h.lb("container", "create", "--name", "o1", "--network", "outer")
    assert tcp(h, "o1", LAN_IP, 7000) == f"lan-{UPLINK}"


def test_icc_false_blocks_members_but_not_the_outside(lab):
    h = lab.host
    h.lb("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "noicc")
    a = serve(h, "a", "noicc")
    h.lb("container", "create", "--name", "b", "--network", "noicc")
    assert tcp(h, "b", a, 80, timeout=1) is None
    assert not ping(h, "b", a)
    assert tcp(h, "b", LAN_IP, 7000) == f"lan-{UPLINK}"
    assert tcp(h, "a", LAN_IP, 7000) == f"lan-{UPLINK}"
    assert h.run(["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]).stdout.strip() == "1"


def test_published_ports(lab):
    h, lan = lab.host, lab.lan
    h.lb("network", "create", "pub")
    h.lb("network", "create", "other")
    publish = ["-p", "8080:80", "-p", "5353:80/udp", "-p", "9000-9001:80-81", "-p", "4444",
               "-p", "127.0.0.1:8081:80"]  # fmt: skip
    web = serve(h, "web", "pub", *publish, tcp_ports=(80, 81, 4444, 4445))
    gw = "172.18.0.1"
    doc = lb_json(h, "inspect", "web")[0]
    auto = int(doc["NetworkSettings"]["Ports"]["4444/tcp"][0]["HostPort"])
    assert auto >= 1024
    assert doc["NetworkSettings"]["Ports"]["80/tcp"] == [
        {"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "8081"},
        {"HostIp": "0.0.0.0", "HostPort": "9000"}]  # fmt: skip
    assert "0.0.0.0:8080->80/tcp" in h.lb("ps").stdout

    # From the LAN, at the host's uplink address: tcp, udp, a range, an auto-picked port.
    assert tcp(lan, None, UPLINK, 8080) == f"web-{LAN_IP}"
    assert udp(lan, None, UPLINK, 5353, tries=3) == f"web-{LAN_IP}"
    assert tcp(lan, None, UPLINK, 9001) == f"web-{LAN_IP}"
    assert tcp(lan, None, UPLINK, auto) == f"web-{LAN_IP}"
    # From the host itself, on 127.0.0.1 and on its own addresses.
    assert tcp(h, None, "127.0.0.1", 8080) == f"web-{gw}"
    assert tcp(h, None, UPLINK, 8080) == f"web-{gw}"
    assert tcp(h, None, "127.0.0.1", 8081) == f"web-{gw}"
    # From a peer on the same network through the gateway (hairpin), and from web itself.
    h.lb("container", "create", "--name", "peer", "--network", "pub")
    assert tcp(h, "peer", gw, 8080) == f"web-{ip_of(h, 'peer', 'pub')}"
    assert tcp(h, "web", gw, 8080) == f"web-{gw}"
    # From a sandbox on another network.
    h.lb("container", "create", "--name", "far", "--network", "other")
    assert tcp(h, "far", UPLINK, 8080) is not None
    # Not published: unreachable from the LAN even with a route to the container subnet.
    lan.run(["ip", "route", "add", "172.18.0.0/16", "via", UPLINK])
    assert tcp(lan, None, web, 80, timeout=1) is None
    assert tcp(lan, None, web, 4445, timeout=1) is None
    assert tcp(lan, None, UPLINK, 8080) == f"web-{LAN_IP}"  # control, same moment
    # Published on 127.0.0.1 only: unreachable from the LAN.
    assert tcp(lan, None, UPLINK, 8081, timeout=1) is None


def test_a_udp_flow_from_before_publishing_reaches_the_container(lab):
    """Conntrack entries that predate the DNAT are flushed (Docker: moby #8795)."""
    h, lan = lab.host, lab.lan
    h.lb("network", "create", "u")
    h.lb("container", "create", "--name", "warm", "--network", "u")

    def send(timeout: int = 1) -> str | None:
        argv = ["socat", f"-T{timeout}", "-", f"UDP:{UPLINK}:5354,sourceport=40001"]
        return lan.run(argv, check=False, input="x\n", timeout=20).stdout.strip() or None

    assert send() is None  # nothing published yet: the host answers nothing, conntrack remembers
    h.lb("run", "-d", "--name", "dns", "--network", "u", "-p", "5354:53/udp", "--",
         "socat", "UDP-RECVFROM:53,fork", "SYSTEM:echo got-$SOCAT_PEERADDR")  # fmt: skip
    _wait(lambda: udp(h, None, ip_of(h, "dns", "u"), 53))
    # The same flow (same 5-tuple), now DNATed.  A retry cannot hide a stale entry: every packet
    # of the old flow refreshes it, so it would keep bypassing the DNAT; the retries only absorb
    # a slow fork of the server's reply under load.
    answers = [send(timeout=3) for _ in range(3)]
    flows = h.run(["conntrack", "-L", "-p", "udp"], check=False).stdout
    assert f"got-{LAN_IP}" in answers, f"no answer: {answers}; conntrack:\n{flows}"


def test_port_in_use_fails_cleanly(lab):
    from tests.integration.conftest import state

    h = lab.host
    h.lb("network", "create", "pub")
    h.lb("container", "create", "--name", "first", "--network", "pub", "-p", "8080:80")
    listener = h.popen(["socat", "TCP-LISTEN:8090,reuseaddr", "-"])
    try:
        _wait(lambda: h.run(["ss", "-ltn", "sport = :8090"]).stdout.count("LISTEN") > 0)
        before = state(h)
        for port in ("8090", "8080"):
            proc = h.lb("run", "-d", "--name", "second", "--network", "pub", "-p", f"{port}:80",
                        "--", "sleep", "60", check=False)  # fmt: skip
            assert proc.returncode != 0
            assert f"0.0.0.0:{port} failed: port is already allocated" in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1
        assert state(h) == before
    finally:
        listener.kill()
        listener.wait()


def test_rules_follow_the_lifecycle_and_reapply_after_a_flush(lab):
    h = lab.host
    h.lb("network", "create", "life")
    serve(h, "web", "life", "-p", "8080:80")
    h.lb("container", "create", "--name", "tmp", "--network", "life")
    tmp_ip = ip_of(h, "tmp", "life")
    assert tmp_ip in h.lb("firewall", "show").stdout
    h.lb("rm", "tmp")
    shown = h.lb("firewall", "show").stdout
    assert tmp_ip not in shown and "8080" in shown

    # An external flush breaks publishing; reapply restores it.
    assert tcp(lab.lan, None, UPLINK, 8080) == f"web-{LAN_IP}"
    if lab.backend == "iptables":
        h.run("iptables -t nat -F; iptables -t filter -F; iptables -t raw -F")
    else:
        h.run(["nft", "flush", "ruleset"])
    assert tcp(lab.lan, None, UPLINK, 8080, timeout=1) is None
    h.lb("firewall", "reapply")
    assert tcp(lab.lan, None, UPLINK, 8080) == f"web-{LAN_IP}"

    # Everything removed: no lowbridge rule, chain or table is left.
    h.lb("rm", "-f", "web")
    h.lb("network", "rm", "life")
    saved = h.run(["iptables-save"]).stdout
    assert "LOWBRIDGE" not in saved and "lowbridge" not in saved
    assert "lowbridge" not in h.run(["nft", "list", "tables"]).stdout
    assert h.lb("firewall", "show").stdout == ""


def _direct_drops(lab: Lab) -> list[str]:
    """The destination of every direct-access drop in the kernel, as it reports them."""
    h = lab.host
    if lab.backend == "iptables":
        saved = h.run(["iptables-save", "-t", "raw"]).stdout.splitlines()
        return [ln.split()[3].removesuffix("/32") for ln in saved
                if ln.startswith("-A LOWBRIDGE-PREROUTING -d ") and "direct" in ln]  # fmt: skip
    # nftables: one rule looks the packet up in two sets; an endpoint is an element of each.
    chain = json.loads(h.run(["nft", "-j", "list", "chain", "ip", "lowbridge",
                              "raw-LOWBRIDGE-PREROUTING"]).stdout)["nftables"]  # fmt: skip
    rules = [i["rule"] for i in chain if "rule" in i and "direct" in i["rule"].get("comment", "")]
    assert len(rules) == 1, rules

    def elements(name: str) -> list:
        doc = json.loads(h.run(["nft", "-j", "list", "set", "ip", "lowbridge", name]).stdout)
        return next(i["set"] for i in doc["nftables"] if "set" in i).get("elem", [])

    pairs = [e["concat"] for e in elements("direct")]
    assert sorted(elements("direct-addrs")) == sorted(ip for ip, _ in pairs)
    return [ip for ip, _ in pairs]


def test_the_rule_record_grows_by_appends_and_a_damaged_one_is_rewritten(lab):
    """A connect records only the rules it added; a record cut short or marked as under way
    (a change that died half-way) is not trusted: the next change rewrites the rules whole, so
    the kernel never holds a rule twice."""
    h = lab.host
    record = "/run/lowbridge/firewall-rules"
    h.lb("network", "create", "rec")
    for name in ("a", "b", "c"):
        h.lb("container", "create", "--name", name, "--network", "rec")
    ips = [ip_of(h, name, "rec") for name in ("a", "b", "c")]
    lines = h.run(["cat", record]).stdout.splitlines()
    assert len(lines) >= 3 and all(json.loads(line) for line in lines)  # header + appends
    assert sorted(_direct_drops(lab)) == sorted(ips)

    text = h.run(["cat", record]).stdout
    h.run(["sh", "-c", f"printf %s '{text[:-12]}' > {record}"])  # cut short mid-line
    h.lb("container", "create", "--name", "d", "--network", "rec")
    ips.append(ip_of(h, "d", "rec"))
    assert sorted(_direct_drops(lab)) == sorted(ips)  # each exactly once
    assert len(h.run(["cat", record]).stdout.splitlines()) == 1  # rewritten whole

    # A change that died between the kernel and the record (it took the fingerprint away
    # first): here the kernel lost rules.
    h.run(["rm", "/run/lowbridge/firewall-fingerprint"])
    if lab.backend == "iptables":
        h.run(["iptables", "-t", "raw", "-F", "LOWBRIDGE-PREROUTING"])
    else:
        h.run(["nft", "flush", "chain", "ip", "lowbridge", "raw-LOWBRIDGE-PREROUTING"])
    h.lb("container", "create", "--name", "e", "--network", "rec")
    ips.append(ip_of(h, "e", "rec"))
    assert sorted(_direct_drops(lab)) == sorted(ips)
    assert "firewall-fingerprint" in h.run(["ls", "/run/lowbridge"]).stdout.split()
    h.lb("rm", "c")
    ips.remove(ip_of_removed := ips[2])
    assert ip_of_removed not in _direct_drops(lab) and sorted(_direct_drops(lab)) == sorted(ips)


def _kernel_rules(lab: Lab) -> object:
    """lowbridge's rules as the kernel lists them, without counters or handles (set elements
    sorted: their order is the kernel's)."""
    h = lab.host
    if lab.backend == "iptables":
        saved = h.run(["iptables-save"]).stdout.splitlines()
        return [ln.split(" [")[0] for ln in saved if "LOWBRIDGE" in ln or "lowbridge" in ln]
    doc = json.loads(h.run(["nft", "-j", "list", "table", "ip", "lowbridge"]).stdout)["nftables"]
    out = []
    for item in doc:
        if "rule" in item:
            out.append((item["rule"]["chain"], json.dumps(item["rule"]["expr"])))
        elif "set" in item:
            elem = sorted(json.dumps(e) for e in item["set"].get("elem", []))
            out.append((item["set"]["name"], elem))
        elif "chain" in item:
            out.append((item["chain"]["name"], item["chain"].get("policy")))
    return out


REMOVALS = r"""
import json
from lowbridge.controller import ContainerRequest, Controller
ctl = Controller()
for name in ("a", "b", "c"):
    ctl.container_create(ContainerRequest(name=name, network="del"))
ctl.container_create(ContainerRequest(name="pub", network="del", publish=["8080:80"]))
fw = ctl.firewall.backend.__class__
applied = []
real_apply = fw.apply
fw.apply = lambda self, rules, *a, **k: (applied.append(1), real_apply(self, rules, *a, **k))
out = {}
ctl.container_rm("b")
out["plain"] = len(applied)
ctl.container_rm("pub")
out["published"] = len(applied)
print(json.dumps(out))
"""


def test_removing_a_sandbox_deletes_its_rules_and_leaves_what_a_rewrite_would(lab):
    """An rm deletes the sandbox's rules (iptables: -D; nftables: its set elements; a published
    port's rules make nftables rewrite the table); the kernel then holds what a full rewrite
    makes, and the ports of the sandboxes left still answer."""
    import sys

    h = lab.host
    h.lb("network", "create", "del")
    serve(h, "web", "del", "-p", "8081:80")
    out = json.loads(h.run([sys.executable, "-c", REMOVALS], env={**os.environ, **h.env}).stdout)
    assert out == {"plain": 0, "published": 0 if lab.backend == "iptables" else 1}
    left = [ip_of(h, name, "del") for name in ("web", "a", "c")]
    assert sorted(_direct_drops(lab)) == sorted(left)
    after = _kernel_rules(lab)
    assert "8080" not in json.dumps(after)
    h.lb("firewall", "reapply")
    assert _kernel_rules(lab) == after
    assert tcp(lab.lan, None, UPLINK, 8081) == f"web-{LAN_IP}"


# A library user's process changes the firewall, a CLI process changes it, the library again.
MIXED = r"""
import json, subprocess, sys
from lowbridge.controller import ContainerRequest, Controller
ctl = Controller()
ctl.container_create(ContainerRequest(name="a", network="mix"))
subprocess.run([sys.executable, "-m", "lowbridge", "container", "create", "--name", "b",
                "--network", "mix"], check=True)
ctl.container_create(ContainerRequest(name="c", network="mix"))
"""


def test_a_process_sees_the_rule_record_another_process_changed(lab):
    """The record's parse a process keeps is dropped when another process changed the record:
    every sandbox's drop is in the kernel exactly once."""
    import sys

    h = lab.host
    h.lb("network", "create", "mix")
    h.run([sys.executable, "-c", MIXED])
    ips = [ip_of(h, name, "mix") for name in ("a", "b", "c")]
    assert sorted(_direct_drops(lab)) == sorted(ips)


def test_backend_kernel_view(lab):
    """What the kernel reports (iptables-save / nft -j) matches the chosen backend."""
    h = lab.host
    h.lb("network", "create", "view")
    h.lb("container", "create", "--name", "v", "--network", "view")
    tables = h.run(["nft", "-j", "list", "tables"]).stdout
    names = {t["table"]["name"] for t in json.loads(tables)["nftables"] if "table" in t}
    if lab.backend == "nftables":
        assert "lowbridge" in names
        assert "LOWBRIDGE" not in h.run(["iptables-save"]).stdout
    else:
        assert "lowbridge" not in names
        saved = h.run(["iptables-save"]).stdout
        assert "-A FORWARD -m comment --comment lowbridge -j LOWBRIDGE-USER" in saved
        assert saved.index("LOWBRIDGE-USER\n") < saved.index("-j LOWBRIDGE-FORWARD\n")


def test_forwarding_is_enabled_by_the_first_non_internal_network(lab):
    h = lab.host

    def forward() -> str:
        return h.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()

    assert forward() == "0"
    h.lb("network", "create", "--internal", "only-inner")
    h.lb("container", "create", "--name", "i", "--network", "only-inner")
    assert forward() == "0"  # an internal network forwards nothing
    h.lb("network", "create", "first")
    assert forward() == "1"
    # lowbridge turned forwarding on, so forwarding is default-deny (as Docker does).
    if lab.backend == "iptables":
        assert ":FORWARD DROP" in h.run(["iptables-save", "-t", "filter"]).stdout
    else:
        chain = h.run(["nft", "list", "chain", "ip", "lowbridge", "filter-FORWARD"]).stdout
        assert "policy drop" in chain


def test_switching_backend_moves_the_rules(lab):
    h = lab.host
    other = "nftables" if lab.backend == "iptables" else "iptables"
    h.lb("network", "create", "sw")
    serve(h, "web", "sw", "-p", "8080:80")
    assert tcp(lab.lan, None, UPLINK, 8080) == f"web-{LAN_IP}"
    h.lb("--firewall-backend", other, "firewall", "reapply")
    saved = h.run(["iptables-save"]).stdout
    tables = h.run(["nft", "list", "tables"]).stdout
    if other == "iptables":
        assert "LOWBRIDGE" in saved and "lowbridge" not in tables
    else:
        assert "LOWBRIDGE" not in saved and "table ip lowbridge" in tables
    assert tcp(lab.lan, None, UPLINK, 8080) == f"web-{LAN_IP}"


def test_rules_come_back_after_a_reboot():
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lowbridge-reboot-") as state_dir:
        with SimHost("before", state_dir=state_dir) as h:
            h.lb("network", "create", "--subnet", "10.85.0.0/24", "keep")
        with on_a_lan("after", state_dir=state_dir) as (h, lan):
            lan.popen(
                ["socat", "TCP-LISTEN:7000,fork,reuseaddr", "SYSTEM:echo lan-$SOCAT_PEERADDR"]
            )
            _wait(lambda: tcp(lan, None, LAN_IP, 7000))
            h.lb("container", "create", "--name", "back", "--network", "keep")
            assert tcp(h, "back", LAN_IP, 7000) == f"lan-{UPLINK}"  # NAT is back
            assert "10.85.0.0/24" in h.lb("firewall", "show").stdout


def _kernel_rules(lab: Lab) -> list[str]:
    if lab.backend == "iptables":
        return sorted(
            ln for ln in lab.host.run("iptables-save").stdout.splitlines() if ln[:1] == "-"
        )
    return sorted(lab.host.run("nft -s list table ip lowbridge").stdout.splitlines())


def test_a_changed_daemon_setting_is_in_the_kernel_after_one_command(lab):
    """Issue 17's bug: the record was edited in place while the firewall kept objects by
    identity, so the next command left the old icc rule; only the one after repaired it."""
    h = lab.host
    a = serve(h, "a", "bridge")
    h.lb("container", "create", "--name", "b")
    assert tcp(h, "b", a, 80)  # icc on: b reaches a
    h.env["LOWBRIDGE_ICC"] = "false"  # dockerd restarted with --icc=false
    h.lb("container", "create", "--name", "c")  # one command
    assert tcp(h, "b", a, 80) is None and tcp(h, "c", a, 80) is None
    # The kernel holds what a fresh process renders: re-applying it all changes nothing.
    kernel = _kernel_rules(lab)
    h.lb("firewall", "reapply")
    assert _kernel_rules(lab) == kernel
    h.env["LOWBRIDGE_ICC"] = "true"
    h.lb("container", "create", "--name", "d")
    assert tcp(h, "b", a, 80) and tcp(h, "d", a, 80)
    kernel = _kernel_rules(lab)
    h.lb("firewall", "reapply")
    assert _kernel_rules(lab) == kernel
