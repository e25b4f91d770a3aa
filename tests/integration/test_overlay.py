"""Overlay networks across three simulated hosts sharing etcd (Debian's etcd-server).

Nobody starts ``lowbridge agent``: the first overlay sandbox of a host starts one there (issue
21, point 3); sandboxes on different hosts talk over VXLAN, by address and by name, without
commands on the other hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from lowbridge.simcluster import Cluster
from tests.integration.conftest import eventually, ip_of, lb_json, members, ping

pytestmark = pytest.mark.skipif(not shutil.which("etcd"), reason="etcd-server not installed")


def agents(h) -> list[str]:  # noqa: ANN001
    """The pids of the agents running in ``h``."""
    return h.run("pgrep -f 'lowbridge [_]agent'", check=False).stdout.split()


@pytest.fixture(scope="module")
def cluster():
    with Cluster(3) as c:
        yield c
        for h in c.hosts:  # (shown with a failure: what the agents did)
            print(f"--- {h.name}", h.run("cat /run/lowbridge/agent.log", check=False).stdout)


def test_sandboxes_on_different_hosts_talk_by_address_and_name(cluster):
    h1, h2, h3 = cluster.hosts
    h1.lb("network", "create", "-d", "overlay", "--attachable", "ov1")
    assert agents(h1) == []  # no overlay namespace here yet: nothing to follow
    h1.lb("container", "create", "--name", "a1", "--network", "ov1")
    assert len(agents(h1)) == 1  # started by that command
    h2.lb("container", "create", "--name", "b1", "--network", "ov1")
    h3.lb("container", "create", "--name", "c1", "--network", "ov1")
    a1, b1, c1 = (ip_of(h, n, "ov1") for h, n in ((h1, "a1"), (h2, "b1"), (h3, "c1")))
    assert len({a1, b1, c1}) == 3 and all(ip.startswith("10.0.0.") for ip in (a1, b1, c1))
    # h1 ran no command since b1 and c1 appeared: its agent, which nobody started by hand,
    # programmed them.  One agent per host, whatever the number of commands.
    assert eventually(lambda: ping(h1, "a1", b1) and ping(h1, "a1", c1))
    assert ping(h2, "b1", a1) and ping(h3, "c1", b1)
    assert eventually(lambda: b1 in h1.run("ip netns exec a1 getent hosts b1", check=False).stdout)
    assert c1 in h2.run("ip netns exec b1 getent hosts c1.ov1").stdout
    # inspect anywhere: every endpoint of the cluster, and the hosts (VTEPs) that have one.
    doc = lb_json(h3, "network", "inspect", "ov1")[0]
    assert doc["Scope"] == "global" and doc["Driver"] == "overlay"
    assert {c["Name"] for c in doc["Containers"].values()} == {"a1", "b1", "c1"}
    assert [p["IP"] for p in doc["Peers"]] == ["10.200.0.1", "10.200.0.2", "10.200.0.3"]
    assert doc["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4096"
    assert "ov1" in h2.lb("network", "ls").stdout
    assert [len(agents(h)) for h in (h1, h2, h3)] == [1, 1, 1]


def test_mtu_1450_across_hosts(cluster):
    h1, h2, _ = cluster.hosts
    b1 = ip_of(h2, "b1", "ov1")
    ok = h1.run(["ip", "netns", "exec", "a1", "ping", "-c1", "-w3", "-M", "do", "-s", "1422", b1],
                check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    big = h1.run(["ip", "netns", "exec", "a1", "ping", "-c1", "-w2", "-M", "do", "-s", "1472", b1],
                 check=False)  # fmt: skip
    assert big.returncode != 0
    assert "message too long" in (big.stdout + big.stderr).lower()


def test_two_overlays_are_isolated(cluster):
    h1, h2, _ = cluster.hosts
    h2.lb("network", "create", "-d", "overlay", "ov2")
    h2.lb("container", "create", "--name", "b2", "--network", "ov2")
    h1.lb("container", "create", "--name", "a2", "--network", "ov2")
    b2 = ip_of(h2, "b2", "ov2")
    assert eventually(lambda: ping(h1, "a2", b2))
    vnis = {lb_json(h1, "network", "inspect", n)[0]["Options"][
        "com.docker.network.driver.overlay.vxlanid_list"] for n in ("ov1", "ov2")}  # fmt: skip
    assert vnis == {"4096", "4097"}
    # a1 (ov1 only) cannot reach b2 even when told the way: different VNI, different L2.
    h1.run(["ip", "netns", "exec", "a1", "ip", "route", "add", "10.0.1.0/24", "dev", "eth0"],
           check=False)  # fmt: skip
    assert not ping(h1, "a1", b2)
    assert h1.run("ip netns exec a1 getent hosts b2", check=False).returncode == 2


def test_removal_and_agent_restart_lose_nothing(cluster):
    h1, h2, h3 = cluster.hosts
    c1 = ip_of(h3, "c1", "ov1")
    # The agent of h3 is killed while sandboxes come and go elsewhere, longer than the host's
    # lease lives: h3 is taken for dead and its sandbox withdrawn...
    h3.run("pkill -KILL -f 'lowbridge [_]agent'")
    h1.lb("container", "create", "--name", "late", "--network", "ov1")
    late = ip_of(h1, "late", "ov1")
    b1 = ip_of(h2, "b1", "ov1")
    h2.lb("rm", "b1")
    assert eventually(lambda: "c1" not in members(h1, "ov1"))
    # ...the next command there (a read) starts it again: it lists and reconciles (the new one
    # reachable, the removed gone) and announces c1 again, which everyone reaches once more.
    h3.lb("ps")
    assert len(agents(h3)) == 1
    assert eventually(lambda: ping(h3, "c1", late))
    assert eventually(lambda: ping(h1, "a1", c1))
    assert "c1" in members(h1, "ov1")

    def fdb(h) -> str:  # noqa: ANN001
        """vxlan0's own (self) entries: the bridge's learned ones age out on their own."""
        out = h.run("for n in /run/netns/lbo-*; do ip netns exec $(basename $n) "
                    "bridge fdb show dev vxlan0; done").stdout  # fmt: skip
        return "\n".join(line for line in out.splitlines() if " self " in line)

    mac_b1 = "02:42:" + ":".join(f"{int(x):02x}" for x in b1.split("."))
    assert eventually(lambda: mac_b1 not in fdb(h3) and mac_b1 not in fdb(h1))
    assert not ping(h3, "c1", b1)


def test_agents_survive_an_etcd_restart(cluster):
    h1, h2, h3 = cluster.hosts
    cluster.stop_etcd()
    time.sleep(1)
    cluster.start_etcd()
    h2.lb("container", "create", "--name", "after", "--network", "ov1")
    after = ip_of(h2, "after", "ov1")
    assert eventually(lambda: ping(h1, "a1", after) and ping(h3, "c1", after), 20)


def test_concurrent_creates_on_two_hosts_get_distinct_addresses(cluster):
    h1, h2, _ = cluster.hosts
    procs = []
    for h, tag in ((h1, "x"), (h2, "y")):
        for i in range(5):
            argv = [sys.executable, "-m", "lowbridge", "container", "create", "--name",
                    f"{tag}{i}", "--network", "ov1"]  # fmt: skip
            procs.append(h.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env={**os.environ, **h.env}))  # fmt: skip
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    ips = [ip_of(h, f"{t}{i}", "ov1") for h, t in ((h1, "x"), (h2, "y")) for i in range(5)]
    assert len(set(ips)) == 10
    doc = lb_json(h1, "network", "inspect", "ov1")[0]
    held = [c["IPv4Address"] for c in doc["Containers"].values()]
    assert len(held) == len(set(held))


def test_etcd_unreachable_fails_cleanly_and_changes_nothing(cluster):
    h1 = cluster.hosts[0]
    before = h1.run("ip -br link; ls /run/netns").stdout
    cluster.stop_etcd()
    try:
        for argv in (("network", "create", "-d", "overlay", "nope"),
                     ("container", "create", "--name", "nope", "--network", "ov1")):  # fmt: skip
            proc = h1.lb(*argv, check=False)
            assert proc.returncode == 6, proc.stderr
            assert "unreachable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert h1.run("ip -br link; ls /run/netns").stdout == before
        # Local work never needs the store (issue 21): reads answer with this host's records
        # and say what was left out; bridge networks and their sandboxes come and go.
        proc = h1.lb("network", "ls", check=False)
        assert proc.returncode == 0 and "bridge" in proc.stdout and "ov1" not in proc.stdout
        assert "unreachable" in proc.stderr and "left out" in proc.stderr
        h1.lb("network", "create", "--subnet", "10.77.0.0/24", "local1")
        h1.lb("container", "create", "--name", "loc1", "--network", "local1")
        h1.lb("container", "create", "--name", "loc2", "--network", "local1")
        assert ping(h1, "loc1", ip_of(h1, "loc2", "local1"))
        h1.lb("rm", "-f", "loc1", "loc2")
        h1.lb("network", "rm", "local1")
        assert h1.run("ip -br link; ls /run/netns").stdout == before
    finally:
        cluster.start_etcd()
    assert "nope" not in h1.lb("ps").stdout
    proc = h1.lb("network", "ls")
    assert "ov1" in proc.stdout and "unreachable" not in proc.stderr


def test_network_rm_refuses_while_any_host_has_endpoints_then_cleans_every_host(cluster):
    h1, h2, h3 = cluster.hosts
    proc = h3.lb("network", "rm", "ov2", check=False)
    assert proc.returncode == 4 and "active endpoints" in proc.stderr
    h1.lb("rm", "a2")
    h2.lb("rm", "b2")
    h3.lb("network", "rm", "ov2")
    assert "ov2" not in h1.lb("network", "ls").stdout
    ns = json.dumps([h.run("ls /run/netns").stdout for h in cluster.hosts])
    net_id_prefix = "lbo-"
    assert ns.count(net_id_prefix) == 3  # ov1's on each host; ov2's gone everywhere


def test_egress_through_the_gwbridge_and_none_for_internal_overlays(cluster):
    h1 = cluster.hosts[0]
    cluster.switch.run("ip addr add 10.200.0.254/24 dev under", check=False)  # "the internet"
    # a1 (on ov1) leaves by lowbridge_gwbridge, masqueraded: the switch has no route back to it.
    doc = lb_json(h1, "inspect", "a1")[0]["NetworkSettings"]["Networks"]
    assert set(doc) == {"ov1", "lowbridge_gwbridge"}
    route = h1.run("ip netns exec a1 ip route").stdout
    assert f"default via {doc['lowbridge_gwbridge']['Gateway']}" in route
    assert ping(h1, "a1", "10.200.0.254")
    assert "lowbridge_gwbridge" in h1.lb("network", "ls").stdout
    # An internal overlay gives no way out.
    h1.lb("network", "create", "-d", "overlay", "--internal", "ovi")
    h1.lb("container", "create", "--name", "sealed", "--network", "ovi")
    assert "default" not in h1.run("ip netns exec sealed ip route").stdout
    assert not ping(h1, "sealed", "10.200.0.254")
    assert set(lb_json(h1, "inspect", "sealed")[0]["NetworkSettings"]["Networks"]) == {"ovi"}
    # Leaving the last non-internal overlay also leaves the gwbridge.
    h1.lb("network", "connect", "ov1", "sealed")
    assert (
        "lowbridge_gwbridge" in lb_json(h1, "inspect", "sealed")[0]["NetworkSettings"]["Networks"]
    )
    h1.lb("network", "disconnect", "ov1", "sealed")
    assert set(lb_json(h1, "inspect", "sealed")[0]["NetworkSettings"]["Networks"]) == {"ovi"}


def test_two_host_lab_each_host_makes_its_part_and_they_talk(cluster):
    """examples/overlay-two-hosts.yaml applied on every host: each makes what ``host:`` places
    on it; the sandboxes talk across hosts by address and name; destroy keeps the network
    while another host's sandbox is on it."""
    from tests.integration.test_lab import EXAMPLES, tcp

    h1, h2, h3 = cluster.hosts
    lab = os.path.join(EXAMPLES, "overlay-two-hosts.yaml")
    first = h1.lb("apply", "-f", lab).stdout
    assert "left to other hosts: client (h2)" in first and "2 added" in first
    assert "1 added" in h2.lb("apply", "-f", lab).stdout  # the network is found, not made again
    assert "nothing to change" in h3.lb("apply", "-f", lab).stdout  # nothing is placed on h3
    names = [
        {name for name in h.lb("ps", "--format", "{{.Names}}").stdout.split() if "ovl-" in name}
        for h in (h1, h2, h3)
    ]
    assert names == [{"ovl-web"}, {"ovl-client"}, set()]
    assert ip_of(h1, "ovl-web", "ovl-mesh") == "10.60.0.10"
    # (the agent on h1 once removed the fresh network's namespace here: tests/unit/test_agent)
    assert eventually(lambda: ping(h2, "ovl-client", "10.60.0.10"))
    # by the short name and the alias (the cluster's DNS records), to the web's command
    assert tcp(h2, "ovl-client", "web:80") == "web on h1"
    assert tcp(h2, "ovl-client", "www:80") == "web on h1"
    client = ip_of(h2, "ovl-client", "ovl-mesh")
    assert ping(h1, "ovl-web", client)
    for h in (h1, h2):
        assert "nothing to change" in h.lb("apply", "-f", lab).stdout
    out = h1.lb("destroy", "-f", lab).stdout
    assert "destroyed 1 sandboxes and 0 networks" in out and "kept network ovl-mesh" in out
    assert "ovl-mesh" in h3.lb("network", "ls").stdout
    assert "destroyed 1 sandboxes and 1 networks" in h2.lb("destroy", "-f", lab).stdout
    for h in (h1, h2, h3):
        assert "ovl-mesh" not in h.lb("network", "ls").stdout
        assert "ovl-" not in h.run("ip -o link; ip netns list").stdout


def test_ipv6_inside_the_vxlan_across_hosts(cluster):
    """--ipv6 on an overlay (issue 20): every host's sandboxes get addresses of one IPv6 subnet
    and reach each other over the VXLAN (the proxy answers neighbour solicitations from the
    entries the agents program), by address and by name (AAAA)."""
    h1, h2, _ = cluster.hosts
    h1.lb("network", "create", "-d", "overlay", "--ipv6", "--subnet", "fd00:ee::/64", "ov6")
    h1.lb("container", "create", "--name", "x6", "--network", "ov6")
    h2.lb("container", "create", "--name", "y6", "--network", "ov6")
    x6 = lb_json(h1, "inspect", "x6")[0]["NetworkSettings"]["Networks"]["ov6"]
    y6 = lb_json(h2, "inspect", "y6")[0]["NetworkSettings"]["Networks"]["ov6"]
    assert {x6["GlobalIPv6Address"], y6["GlobalIPv6Address"]} == {"fd00:ee::2", "fd00:ee::3"}
    peer = y6["GlobalIPv6Address"]
    assert eventually(lambda: ping(h1, "x6", peer))
    assert ping(h2, "y6", x6["GlobalIPv6Address"])
    assert eventually(lambda: peer in h1.run("ip netns exec x6 getent ahostsv6 y6",
                                             check=False).stdout)  # fmt: skip
    for h, name in ((h1, "x6"), (h2, "y6")):
        h.lb("rm", "-f", name)
    h1.lb("network", "rm", "ov6")


def test_an_agent_started_on_demand_leaves_with_the_hosts_last_overlay_sandbox(cluster):
    """h3's last overlay sandbox goes: its agent revokes the host's lease (the host key goes
    with it) and exits; the next overlay sandbox there starts one again."""
    h1, _, h3 = cluster.hosts
    hosts_of = (
        "from lowbridge.store import open_store\nfrom lowbridge.config import Paths\n"
        "print(sorted(d['name'] for d in open_store(Paths.resolve()).hosts().values()))"
    )
    names = lambda: h1.run([sys.executable, "-c", hosts_of],  # noqa: E731
                           env={**os.environ, **h1.env}).stdout  # fmt: skip
    assert "h3" in names()
    h3.lb("rm", "-f", "c1")
    assert eventually(lambda: agents(h3) == [] and "h3" not in names())
    assert "lbo-" not in h3.run("ls /run/netns").stdout
    h3.lb("container", "create", "--name", "c9", "--network", "ov1")
    assert len(agents(h3)) == 1 and "h3" in names()
    assert eventually(lambda: ping(h1, "a1", ip_of(h3, "c9", "ov1")))
    h3.lb("rm", "-f", "c9")
