"""Service discovery with real queries: the embedded resolver, hosts files, legacy links.

Every test runs in a simulated host whose /etc/resolv.conf names an "upstream" resolver living
in an outside namespace (tests/integration/dns_upstream.py), so forwarding is observable and no
query leaves the namespaces the test made.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from lowbridge.sandbox import RESOLV_HEADER
from lowbridge.simhost import SimHost, outside
from tests.integration.conftest import ip_of

UPSTREAM = "10.99.0.53"
UPSTREAM_NAMES = ("example.test=198.51.100.7",)
SERVER = os.path.join(os.path.dirname(__file__), "dns_upstream.py")


def _start_server(h: SimHost, argv: list[str]) -> subprocess.Popen:
    proc = h.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line == "ready", proc.stderr.read() if proc.poll() is not None else line
    return proc


@pytest.fixture
def lab():
    """(host, upstream): the host's resolv.conf points at the upstream's resolver."""
    with SimHost("dns") as h, outside("upstream") as up:
        h.wire(up, "up0", "eth0", "10.99.0.1/24", f"{UPSTREAM}/24")
        with open(os.path.join(h.dir, "resolv.conf"), "w") as f:
            f.write(f"nameserver {UPSTREAM}\nsearch lab.test\n")
        server = _start_server(up, [sys.executable, SERVER, UPSTREAM, *UPSTREAM_NAMES])
        try:
            yield h, up
        finally:
            server.kill()
            server.wait()


def dig(h: SimHost, sandbox: str, name: str, *opts: str, server: str = "127.0.0.11"):
    """(status, [answer data]) of one query from inside ``sandbox``."""
    out = h.run(["ip", "netns", "exec", sandbox, "dig", "+tries=1", "+time=3", f"@{server}",
                 name, *opts], check=False).stdout  # fmt: skip
    status = re.search(r"status: (\w+)", out)
    section = (
        out.split(";; ANSWER SECTION:\n", 1)[1].split("\n\n", 1)[0] if "ANSWER SEC" in out else ""
    )
    return (status.group(1) if status else "NO ANSWER"), [
        line.split()[-1] for line in section.splitlines() if line.strip()
    ]


def getent(h: SimHost, sandbox: str, name: str) -> subprocess.CompletedProcess:
    """glibc's lookup through the sandbox's resolv.conf and hosts, as `lowbridge exec` runs it."""
    return h.lb("exec", sandbox, "getent", "hosts", name, check=False)


def resolver_pids(h: SimHost) -> list[int]:
    out = h.run(["pgrep", "-f", "lowbridge.dns.server"], check=False).stdout
    return [int(p) for p in out.split()]


def test_names_resolve_on_the_sandboxs_networks_only(lab):
    h, _ = lab
    h.lb("network", "create", "front")
    h.lb("network", "create", "back")
    h.lb("container", "create", "--name", "web", "--network", "front", "--hostname", "www")
    h.lb("container", "create", "--name", "client", "--network", "front")
    h.lb("container", "create", "--name", "other", "--network", "back")
    h.lb("container", "create", "--name", "old")  # the default bridge
    web = ip_of(h, "web", "front")
    for name in ("web", "WEB", "web.front", "Web.Front.", "www"):
        assert dig(h, "client", name) == ("NOERROR", [web]), name
        assert dig(h, "client", name, "+tcp") == ("NOERROR", [web]), name
    assert web in getent(h, "client", "web").stdout
    web_id = json.loads(h.lb("inspect", "web").stdout)[0]["Id"]
    assert dig(h, "client", web_id[:12]) == ("NOERROR", [web])
    # Another network and the default bridge do not see web (the upstream says NXDOMAIN).
    assert dig(h, "other", "web") == ("NXDOMAIN", [])
    assert dig(h, "client", "web.back") == ("NXDOMAIN", [])
    assert getent(h, "other", "web").returncode == 2
    assert getent(h, "old", "web").returncode == 2
    assert h.run("cat /etc/netns/old/resolv.conf").stdout == RESOLV_HEADER + (
        f"nameserver {UPSTREAM}\nsearch lab.test\n"
    )
    assert h.run("cat /etc/netns/client/resolv.conf").stdout == RESOLV_HEADER + (
        "nameserver 127.0.0.11\nsearch lab.test\noptions ndots:0\n"
    )
    # A name that exists has no AAAA: NODATA, answered locally.
    assert dig(h, "client", "web", "AAAA") == ("NOERROR", [])


# The same query bytes every time (ID included), as the resolver's memo of answers keys them.
SAME_QUERY = """
import sys, dns.message, dns.query, dns.rcode
q = dns.message.make_query(sys.argv[1], "A")
q.id = 4660
r = dns.query.udp(q, "127.0.0.11", timeout=3)
print(dns.rcode.to_text(r.rcode()), *[rr.address for rrset in r.answer for rr in rrset])
"""


def same_query(h: SimHost, sandbox: str, name: str) -> list[str]:
    argv = ["ip", "netns", "exec", sandbox, sys.executable, "-c", SAME_QUERY, name]
    return h.run(argv).stdout.split()


def test_disconnect_removes_the_name_and_reconnect_restores_it(lab):
    h, _ = lab
    h.lb("network", "create", "front")
    h.lb("container", "create", "--name", "web", "--network", "front")
    h.lb("container", "create", "--name", "client", "--network", "front")
    web = ip_of(h, "web", "front")
    assert dig(h, "client", "web")[0] == "NOERROR"
    assert same_query(h, "client", "web") == same_query(h, "client", "web") == ["NOERROR", web]
    # The command returns once the resolver has re-read the store: the very next query sees it,
    # even a question asked before in the very same bytes (answers kept are dropped).
    h.lb("network", "disconnect", "front", "web")
    assert dig(h, "client", "web") == ("NXDOMAIN", [])
    assert same_query(h, "client", "web") == ["NXDOMAIN"]
    h.lb("network", "connect", "front", "web")
    assert dig(h, "client", "web") == ("NOERROR", [ip_of(h, "web", "front")])
    h.lb("rm", "web")
    assert dig(h, "client", "web") == ("NXDOMAIN", [])


def test_a_shared_alias_returns_every_address_in_varying_order(lab):
    h, _ = lab
    h.lb("network", "create", "front")
    h.lb("container", "create", "--name", "db1", "--network", "front", "--network-alias", "db")
    h.lb("container", "create", "--name", "db2", "--network", "front")
    h.lb("network", "disconnect", "front", "db2")
    h.lb("network", "connect", "--alias", "DB", "front", "db2")
    h.lb("container", "create", "--name", "client", "--network", "front")
    both = {ip_of(h, "db1", "front"), ip_of(h, "db2", "front")}
    orders = set()
    for _ in range(20):
        status, answers = dig(h, "client", "db")
        assert status == "NOERROR" and set(answers) == both and len(answers) == 2
        orders.add(tuple(answers))
    assert len(orders) == 2
    doc = json.loads(h.lb("inspect", "db2").stdout)[0]
    # docker 20.10 lists the short id after the aliases
    assert doc["NetworkSettings"]["Networks"]["front"]["Aliases"] == ["DB", doc["Id"][:12]]
    # An alias on the default bridge is refused, as in Docker.
    proc = h.lb("container", "create", "--name", "x", "--network-alias", "y", check=False)
    assert proc.returncode == 2 and "user defined networks" in proc.stderr


def test_ptr_forwarding_servfail_and_internal_networks(lab):
    h, up = lab
    h.lb("network", "create", "front")
    h.lb("network", "create", "--internal", "sealed")
    h.lb("container", "create", "--name", "web", "--network", "front")
    h.lb("container", "create", "--name", "client", "--network", "front")
    h.lb("container", "create", "--name", "inner", "--network", "sealed")
    h.lb("container", "create", "--name", "inner2", "--network", "sealed")
    web = ip_of(h, "web", "front")
    assert dig(h, "client", "-x", web) == ("NOERROR", ["web.front."])
    # Not ours: forwarded from the host's namespace to the host's resolver, over UDP and TCP.
    assert dig(h, "client", "example.test") == ("NOERROR", ["198.51.100.7"])
    assert dig(h, "client", "example.test", "+tcp") == ("NOERROR", ["198.51.100.7"])
    assert dig(h, "client", "nothere.test") == ("NXDOMAIN", [])
    assert "198.51.100.7" in getent(h, "client", "example.test").stdout
    # An internal network resolves its members but forwards nothing.
    assert dig(h, "inner", "inner2") == ("NOERROR", [ip_of(h, "inner2", "sealed")])
    assert dig(h, "inner", "example.test") == ("SERVFAIL", [])
    # No upstream answers: SERVFAIL (the upstream's namespace refuses port 53 once it is gone).
    up.run("pkill -f dns_upstream.py", check=False)
    assert dig(h, "client", "example.test") == ("SERVFAIL", [])


def test_the_resolver_starts_on_demand_survives_a_crash_and_exits_when_unneeded(lab):
    h, _ = lab
    h.lb("network", "create", "front")
    h.lb("container", "create", "--name", "old")
    assert resolver_pids(h) == []  # the default bridge needs none
    h.lb("container", "create", "--name", "web", "--network", "front")
    h.lb("container", "create", "--name", "client", "--network", "front")
    (pid,) = resolver_pids(h)
    # Killed: the next lowbridge command starts a new one on the same ports (the redirect rules in
    # the sandboxes stay valid).
    h.run(["kill", "-9", str(pid)])
    h.lb("network", "create", "poke")
    assert len(resolver_pids(h)) == 1 and resolver_pids(h) != [pid]
    assert dig(h, "client", "web") == ("NOERROR", [ip_of(h, "web", "front")])
    # Joining the default bridge does not need it; removing the last user-network sandbox ends it.
    h.lb("rm", "web", "client")
    deadline = time.monotonic() + 10
    while resolver_pids(h) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert resolver_pids(h) == []
    assert h.run("ls /run/lowbridge").stdout.count("dns.sock") == 0


def test_a_dns_server_of_the_sandbox_on_port_53_does_not_break_resolution(lab):
    h, _ = lab
    h.lb("network", "create", "front")
    h.lb("container", "create", "--name", "web", "--network", "front")
    h.lb("container", "create", "--name", "client", "--network", "front")
    own = _start_server(h, ["ip", "netns", "exec", "client", sys.executable, SERVER, "0.0.0.0",
                            "example.test=192.0.2.99"])  # fmt: skip
    try:
        web = ip_of(h, "web", "front")
        assert dig(h, "client", "web") == ("NOERROR", [web])
        assert dig(h, "client", "web", "+tcp") == ("NOERROR", [web])
        assert dig(h, "client", "example.test", server="127.0.0.1") == ("NOERROR", ["192.0.2.99"])
        assert dig(h, "client", "example.test") == ("NOERROR", ["198.51.100.7"])
    finally:
        own.kill()
        own.wait()


def test_legacy_links_hosts_and_environment(lab):
    h, _ = lab
    h.lb("container", "create", "--name", "db", "--expose", "5432", "-e", "PG_VERSION=16")
    out = h.lb("run", "--name", "app", "--link", "db:webdb", "--",
               "sh", "-c", "env; getent hosts webdb").stdout  # fmt: skip
    db = ip_of(h, "db", "bridge")
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["WEBDB_PORT"] == f"tcp://{db}:5432"
    assert env["WEBDB_PORT_5432_TCP"] == f"tcp://{db}:5432"
    assert env["WEBDB_PORT_5432_TCP_ADDR"] == db
    assert env["WEBDB_PORT_5432_TCP_PORT"] == "5432"
    assert env["WEBDB_PORT_5432_TCP_PROTO"] == "tcp"
    assert env["WEBDB_NAME"] == "/app/webdb"
    assert env["WEBDB_ENV_PG_VERSION"] == "16"
    hostname = json.loads(h.lb("inspect", "db").stdout)[0]["Config"]["Hostname"]
    assert re.search(rf"^{re.escape(db)}\s+webdb {hostname} db$", out, re.M), out
    # exec sees the same environment (in a sandbox that stands: app exited with its command);
    # a link to a sandbox off the default bridge is refused.
    h.lb("container", "create", "--name", "app2", "--link", "db:webdb")
    assert f"WEBDB_PORT_5432_TCP_ADDR={db}" in h.lb("exec", "app2", "env").stdout
    h.lb("network", "create", "front")
    h.lb("container", "create", "--name", "far", "--network", "front")
    proc = h.lb("container", "create", "--name", "x", "--link", "far", check=False)
    assert proc.returncode == 2 and "does not belong to the default network" in proc.stderr


def _tcp(h: SimHost, ns: str, ip: str, port: int) -> bool:
    argv = ["ip", "netns", "exec", ns, "socat", "-T2", "-", f"TCP:{ip}:{port},connect-timeout=2"]
    return "hello" in h.run(argv, check=False).stdout


def test_links_open_the_exposed_ports_when_icc_is_off(lab):
    h, _ = lab
    h.env["LOWBRIDGE_ICC"] = "false"
    h.lb("container", "create", "--name", "db", "--expose", "5432/tcp")
    h.lb("container", "create", "--name", "app", "--link", "db")
    h.lb("container", "create", "--name", "stranger")
    db = ip_of(h, "db", "bridge")
    for port in (5432, 6000):
        h.popen(["ip", "netns", "exec", "db", "socat", f"TCP-LISTEN:{port},fork,reuseaddr",
                 "SYSTEM:echo hello"])  # fmt: skip
    time.sleep(0.3)
    assert _tcp(h, "app", db, 5432)
    assert not _tcp(h, "app", db, 6000)
    assert not _tcp(h, "stranger", db, 5432)
    # With icc back on (dockerd restarted without --icc=false) everything is open again.
    h.env["LOWBRIDGE_ICC"] = "true"
    h.lb("network", "create", "poke")
    assert _tcp(h, "stranger", db, 6000)


LOAD_CLIENT = r"""
import sys, dns.message, dns.query, dns.rcode
want = dict(item.split("=") for item in sys.argv[1:])
failures = 0
for i in range(1000):
    name = list(want)[i % len(want)]
    q = dns.message.make_query(name, "A")
    try:
        r = dns.query.udp(q, "127.0.0.11", timeout=2)
        got = {rr.address for rrset in r.answer for rr in rrset}
        failures += r.rcode() != dns.rcode.NOERROR or got != set(want[name].split(","))
    except Exception:
        failures += 1
print(failures)
"""


def test_ten_thousand_queries_from_ten_sandboxes(lab):
    h, _ = lab
    h.lb("network", "create", "front")
    h.lb("container", "create", "--name", "web", "--network", "front", "--network-alias", "pool")
    h.lb("container", "create", "--name", "api", "--network", "front", "--network-alias", "pool")
    clients = [f"c{i}" for i in range(10)]
    for name in clients:
        h.lb("container", "create", "--name", name, "--network", "front")
    web, api = ip_of(h, "web", "front"), ip_of(h, "api", "front")
    want = [f"web={web}", f"api.front={api}", f"pool={web},{api}", "example.test=198.51.100.7"]
    procs = [h.popen(["ip", "netns", "exec", c, sys.executable, "-c", LOAD_CLIENT, *want],
                     stdout=subprocess.PIPE, text=True) for c in clients]  # fmt: skip
    results = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert results == ["0"] * 10


def test_dns_servers_are_queried_from_the_sandbox(lab):
    # --dns 127.0.0.1 only makes sense from inside the sandbox (Docker queries --dns servers
    # there, the host's servers from the host): a server of the sandbox's own answers.
    h, _ = lab
    h.lb("network", "create", "front")
    h.lb("container", "create", "--name", "c", "--network", "front", "--dns", "127.0.0.1")
    assert h.run("cat /etc/netns/c/resolv.conf").stdout.startswith(
        RESOLV_HEADER + "nameserver 127.0.0.11\n"
    )
    own = _start_server(h, ["ip", "netns", "exec", "c", sys.executable, SERVER, "127.0.0.1",
                            "example.test=192.0.2.77"])  # fmt: skip
    try:
        assert dig(h, "c", "example.test") == ("NOERROR", ["192.0.2.77"])
        assert dig(h, "c", "example.test", "+tcp") == ("NOERROR", ["192.0.2.77"])
        assert dig(h, "c", "c") == ("NOERROR", [ip_of(h, "c", "front")])
    finally:
        own.kill()
        own.wait()


def _tracked(h: SimHost, sandbox: str) -> int:
    """Connections the kernel tracks inside ``sandbox`` (0 while conntrack is off there)."""
    out = h.run(
        ["ip", "netns", "exec", sandbox, "sysctl", "-n", "net.netfilter.nf_conntrack_count"]
    )
    return int(out.stdout)


# A sandbox that tracks connections itself and drops what conntrack calls invalid.
OWN_CONNTRACK = """table ip own {
    chain input { type filter hook input priority 0; ct state invalid drop; }
    chain output { type filter hook output priority 0; ct state invalid drop; }
}
"""


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_the_redirect_to_the_resolver_on_each_backend(lab, backend):
    """nftables: 127.0.0.11:53 is rewritten statelessly, so the sandbox has no connection
    tracking (a nat rule would turn it on for all its traffic); iptables: Docker's DNAT.
    Either way a sandbox that tracks connections itself still resolves over UDP and TCP."""
    h, _ = lab

    def lb(*args: str) -> None:
        h.lb("--firewall-backend", backend, *args)

    lb("network", "create", "front")
    lb("container", "create", "--name", "web", "--network", "front")
    lb("container", "create", "--name", "client", "--network", "front")
    web = ip_of(h, "web", "front")
    for opts in ((), ("+tcp",)):
        assert dig(h, "client", "web", *opts) == ("NOERROR", [web])
    if backend == "nftables":
        table = json.loads(h.run(["ip", "netns", "exec", "client", "nft", "-j", "list", "table",
                                  "ip", "lowbridge_dns"]).stdout)["nftables"]  # fmt: skip
        (chain,) = [o["chain"] for o in table if "chain" in o]
        assert (chain["type"], chain["hook"], chain["prio"]) == ("filter", "output", -300)
        rules = [o["rule"]["expr"] for o in table if "rule" in o]
        assert len(rules) == 4 and all({"notrack": None} in r for r in rules)
        assert not any("dnat" in e for r in rules for e in r)
        assert _tracked(h, "client") == 0
    else:
        assert "-j DNAT" in h.run(["ip", "netns", "exec", "client", "iptables-save"]).stdout
        assert _tracked(h, "client") >= 1
    h.run(["ip", "netns", "exec", "client", "nft", "-f", "-"], input=OWN_CONNTRACK)
    for opts in ((), ("+tcp",)):
        assert dig(h, "client", "web", *opts) == ("NOERROR", [web])
    if backend == "nftables":  # the resolver's flows stay untracked, in both directions
        assert _tracked(h, "client") == 0


HIGH_DESCRIPTORS = r"""
import json, os, resource, sys
from lowbridge.controller import ContainerRequest, Controller
from lowbridge.dns.redirect import bind_sockets
from lowbridge.drivers.base import NetworkRequest

resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
out = {}
u, t = bind_sockets()  # a sandbox's held sockets go above 1024 when the limit allows
out["lifted"] = [u.fileno() >= 1024, t.fileno() >= 1024, not u.getblocking(), not t.getblocking()]
u.close(); t.close()
# Fill every number below 1024, as a batch of a few hundred sandboxes does.
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
ctl = Controller(firewall_backend="nftables")
ctl.network_create(NetworkRequest(name="front", subnet="10.120.0.0/24"))
for name in ("web", "client"):
    ctl.container_create(ContainerRequest(name=name, network="front"))
out["made"] = True
print(json.dumps(out))
"""


def test_a_process_holding_a_thousand_descriptors_still_applies_nftables_rules(lab):
    """libnftables 1.0.6 select()s on its socket, and glibc aborts the process when that socket
    is numbered 1024 or more: a process past 1024 descriptors runs nft instead (host rules and
    the sandboxes' redirect), and the sockets a batch holds per sandbox are moved above 1024."""
    h, _ = lab
    proc = h.run([sys.executable, "-c", HIGH_DESCRIPTORS], env={**os.environ, **h.env},
                 check=False, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {"lifted": [True, True, True, True], "made": True}
    web = ip_of(h, "web", "front")
    assert dig(h, "client", "web") == ("NOERROR", [web])
    assert dig(h, "client", "web", "+tcp") == ("NOERROR", [web])
    table = json.loads(h.run(["nft", "-j", "list", "table", "ip", "lowbridge"]).stdout)
    assert any("rule" in o for o in table["nftables"])
