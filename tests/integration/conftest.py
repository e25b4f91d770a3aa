"""Fixtures for tests that build simulated hosts (root only).

Every test gets its own :class:`~lowbridge.simhost.SimHost`; the session fails if the machine's own
network namespace differs at the end from what it was at the start (links, routes, named
namespaces, firewall, nsfs mounts), whatever the tests did.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from lowbridge.simhost import SimHost, outside

needs = [tool for tool in ("unshare", "nsenter", "ip", "ping") if not shutil.which(tool)]
pytestmark = pytest.mark.root

if os.geteuid() != 0:
    pytest.skip("simulated hosts need root (run sudo scripts/test)", allow_module_level=True)
if needs:
    pytest.skip(f"missing tools {needs}: run scripts/setup", allow_module_level=True)


def _out(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except FileNotFoundError:
        return ""


def root_snapshot() -> dict:
    """What the machine's own namespace looks like (only what tests could possibly change)."""
    links = json.loads(_out(["ip", "-j", "link", "show"]) or "[]")
    with open("/proc/self/mountinfo") as f:
        mounts = [line for line in f if "nsfs" in line or "netns" in line]
    return {
        "links": sorted(link["ifname"] for link in links),
        "routes": _out(["ip", "route", "show", "table", "all"]),
        "netns": _out(["ip", "netns", "list"]),
        "iptables": [ln for ln in _out(["iptables-save"]).splitlines() if ln[:1] in "-:"],
        "nft": _out(["nft", "list", "tables"]),
        "mounts": sorted(" ".join(m.split()[3:5]) for m in mounts),
        "etc_netns": sorted(os.listdir("/etc/netns")) if os.path.isdir("/etc/netns") else [],
        "ip_forward": _out(["cat", "/proc/sys/net/ipv4/ip_forward"]),
    }


@pytest.fixture(scope="session", autouse=True)
def machine_untouched():
    before = root_snapshot()
    yield
    after = root_snapshot()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"the machine's own namespace changed: {changed}"


# A simulated host's uplink and the LAN namespace it faces (private addresses that only ever
# live in these namespaces).
UPLINK, LAN_IP = "192.168.77.2", "192.168.77.1"


@contextlib.contextmanager
def on_a_lan(
    name: str, lan_name: str = "lan", uplink: str = UPLINK, lan_ip: str = LAN_IP, **kw: object
) -> Iterator[tuple[SimHost, SimHost]]:
    """A simulated host (``kw``: SimHost's) whose uplink0 faces a LAN namespace's lan0, its
    default route through it: (host, lan)."""
    with SimHost(name, **kw) as h, outside(lan_name) as lan:
        h.wire(lan, "uplink0", "lan0", f"{uplink}/24", f"{lan_ip}/24")
        h.run(["ip", "route", "add", "default", "via", lan_ip])
        yield h, lan


@pytest.fixture
def host():
    with SimHost("t") as h:
        yield h


def ping(h: SimHost, sandbox: str, address: str, count: int = 1) -> bool:
    """One ICMP echo from ``sandbox`` to ``address``; True if answered."""
    proc = h.run(
        ["ip", "netns", "exec", sandbox, "ping", "-n", "-c", str(count), "-w", "3", address],
        check=False,
    )
    return proc.returncode == 0


def eventually(probe, seconds: float = 15.0) -> bool:  # noqa: ANN001
    """Poll ``probe`` until it is true or ``seconds`` pass; whether it became true (what an agent
    or etcd applies asynchronously; no wall-clock is asserted)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.1)
    return probe()


def wait_for(probe, seconds: float = 5.0) -> None:  # noqa: ANN001
    """Poll ``probe`` until it is true (a server coming up), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.05)
    raise AssertionError("server did not come up")


def lb_json(h: SimHost, *args: str):
    return json.loads(h.lb(*args).stdout)


def members(h: SimHost, net: str) -> set[str]:
    """The sandboxes ``network inspect`` on ``h`` lists on ``net`` (in cluster mode: from every
    host)."""
    doc = lb_json(h, "network", "inspect", net)[0]
    return {c["Name"] for c in doc["Containers"].values()}


def ip_of(h: SimHost, container: str, network: str) -> str:
    doc = lb_json(h, "inspect", container)[0]
    return doc["NetworkSettings"]["Networks"][network]["IPAddress"]


def state(h: SimHost) -> dict:
    """Everything a failed mutation must leave unchanged: links, addresses, routes, namespaces,
    sandbox files, and every row of the store."""
    script = r"""
import json, os, sqlite3, subprocess
def run(*a): return subprocess.run(a, capture_output=True, text=True).stdout
# Carrier (operstate, "linkdown") follows ports asynchronously: compare configuration only.
links = json.loads(run("ip", "-j", "-d", "link", "show"))
out = {"links": sorted((l["ifname"], l.get("master"), "UP" in l["flags"], l.get("mtu"),
                        l.get("linkinfo", {}).get("info_kind")) for l in links),
       "addrs": sorted((i["ifname"], a["local"], a["prefixlen"])
                       for i in json.loads(run("ip", "-j", "addr")) for a in i["addr_info"]
                       if a.get("scope") != "link"),  # the kernel adds fe80:: on first carrier
       "routes": run("ip", "route").replace(" linkdown", ""),
       "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
       "etc_netns": sorted(os.listdir("/etc/netns"))}
# Firewall: rules, non-builtin chains, a DROP policy -- not the empty builtin tables and chains
# that iptables-nft leaves behind once used (they hold nothing and are not lowbridge's).
BUILTIN = (":INPUT ", ":FORWARD ACCEPT", ":OUTPUT ", ":PREROUTING ", ":POSTROUTING ")
out["iptables"] = sorted(l for l in run("iptables-save").splitlines()
                         if l.startswith("-") or (l.startswith(":") and not l.startswith(BUILTIN)))
nft = run("nft", "-s", "list", "ruleset")  # -s: no counters
out["nft"] = sorted(l.strip() for l in nft.splitlines() if l.strip() and not l.strip().startswith(
    ("table ip filter", "table ip nat", "table ip raw", "table ip mangle", "chain ", "type ", "}")))
out["nft_lowbridge"] = "table ip lowbridge" in nft
out["sysctl"] = [open("/proc/sys/net/ipv4/ip_forward").read()]
for ns in out["netns"]:
    out["ns:" + ns] = run("ip", "-n", ns, "-br", "addr") + run("ip", "-n", ns, "route")
    # The sandbox's own firewall (the embedded DNS redirect lives there).
    out["fw:" + ns] = [l for l in run("ip", "netns", "exec", ns, "iptables-save").splitlines()
                       if l.startswith("-")] + [run("ip", "netns", "exec", ns, "nft", "-s", "list",
                                                    "table", "ip", "lowbridge_dns")]
db = sqlite3.connect("/var/lib/lowbridge/lowbridge.db")
for table in ("networks", "containers", "endpoints", "journal"):
    out["db:" + table] = sorted(r[0] for r in db.execute(f"SELECT doc FROM {table}"))
print(json.dumps(out))
"""
    import sys

    return json.loads(h.run([sys.executable, "-c", script]).stdout)
