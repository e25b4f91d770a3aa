"""Cluster mode that survives its store and its hosts (issue 21), in simulated hosts with a
3-member etcd (Debian's etcd-server) on the underlay:

* the leader killed in the middle of ``container create`` on an overlay: the command succeeds
  whole (it reads back and sends again through another member), nothing is lost;
* a TLS store with client certificates and a login: the overlay works; a wrong password, or
  plaintext to the TLS store, fails in one line;
* a host that dies (its agent killed, its uplink down): within the lease TTL its sandbox leaves
  every other host's forwarding entries, DNS and ``network inspect``, and its address is free;
* a host cut off from etcd in the middle of ``network connect``, after the transaction was sent
  and before its answer came back: the command fails in one line, and once the partition heals
  nothing half-done is left on either side (``check`` clean everywhere).

The changes are paused at a named step (LOWBRIDGE_FAIL_AT=<op>:<step>:pause:<file>, lowbridge.txn)
while the test does its damage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from lowbridge.simcluster import PASSWORD, Cluster
from tests.integration.conftest import eventually, ip_of, lb_json, members, ping

pytestmark = [
    pytest.mark.skipif(not shutil.which("etcd"), reason="etcd-server not installed"),
    pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed"),
]


def paused(h, argv: list[str], at: str, env: dict | None = None):  # noqa: ANN001, ANN201
    """Start ``lowbridge ARGV`` in ``h`` paused after step ``at``; return the process and the
    marker to delete to let it go on (once it exists, the change is at that step)."""
    marker = os.path.join(h.dir, f"pause-{time.monotonic_ns()}")
    env = {**os.environ, **h.env, **(env or {}), "LOWBRIDGE_FAIL_AT": f"{at}:pause:{marker}"}
    proc = h.popen([sys.executable, "-m", "lowbridge", *argv], stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert eventually(lambda: os.path.exists(marker) or proc.poll() is not None, 30)
    assert proc.poll() is None, proc.communicate()
    return proc, marker


def clean(h) -> bool:  # noqa: ANN001
    proc = h.lb("check", "--json", check=False)
    if proc.returncode != 0:
        print(proc.returncode, proc.stdout, proc.stderr)  # (shown when the test fails)
    return proc.returncode == 0 and json.loads(proc.stdout) == []


def fdb(h) -> str:  # noqa: ANN001
    out = h.run("for n in /run/netns/lbo-*; do ip netns exec $(basename $n) "
                "bridge fdb show dev vxlan0; done", check=False).stdout  # fmt: skip
    return "\n".join(line for line in out.splitlines() if " self " in line)


@pytest.fixture(scope="module")
def cluster():
    with Cluster(3, members=3) as c:
        h1 = c.hosts[0]
        h1.lb("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.0.9.0/24", "ov")
        for h, name in zip(c.hosts, ("s1", "s2", "s3"), strict=True):
            h.lb("container", "create", "--name", name, "--network", "ov")
        yield c


def test_several_members_and_the_leader_killed_mid_create(cluster):
    h1, h2, _ = cluster.hosts
    assert eventually(lambda: ping(h1, "s1", ip_of(h2, "s2", "ov")))
    leader = cluster.leader()
    # The command talks to the leader first (its member list starts with it), plans, makes the
    # sandbox, and is paused just before its etcd transaction; the leader dies meanwhile.
    order = [leader] + [m for m in cluster.members if m is not leader]
    store = "etcd://" + ",".join(f"{m.ip}:2379" for m in order)
    proc, marker = paused(h1, ["container", "create", "--name", "mid", "--network", "ov"],
                          "container-create:persist", {"LOWBRIDGE_STORE": store})  # fmt: skip
    cluster.kill(leader)
    try:
        os.unlink(marker)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err  # the others elected a leader; it went through them
        mid = ip_of(h1, "mid", "ov")
        assert eventually(lambda: ping(h2, "s2", mid))  # h2's agent failed over too
        assert "mid" in h2.run("ip netns exec s2 getent hosts mid", check=False).stdout
        doc = lb_json(h2, "network", "inspect", "ov")[0]
        assert {c["Name"] for c in doc["Containers"].values()} >= {"s1", "s2", "s3", "mid"}
        assert clean(h1) and clean(h2)
        h1.lb("rm", "-f", "mid")
        assert eventually(lambda: "mid" not in members(h2, "ov"))
    finally:
        cluster.start_etcd(only=leader)


def test_an_address_given_up_on_one_host_and_taken_on_another_is_reached_at_once(cluster):
    """The MAC comes from the address: h2's br0 learned it behind vxlan0 while it was h1's;
    once it is h2's own sandbox's, frames from the VXLAN reach it at once (a static entry on
    its port), not after the bridge's 300 s ageing."""
    h1, h2, _ = cluster.hosts
    h1.lb("container", "create", "--name", "hop", "--network", "ov", "--ip", "10.0.9.200")
    assert eventually(lambda: ping(h2, "s2", "10.0.9.200"))  # h2's br0 learns its MAC
    h1.lb("rm", "-f", "hop")
    h2.lb("container", "create", "--name", "hop2", "--network", "ov", "--ip", "10.0.9.200")
    assert eventually(lambda: ping(h1, "s1", "hop2"), 10)
    h2.lb("rm", "-f", "hop2")


def test_a_dead_host_is_withdrawn_within_its_lease(cluster):
    h1, h2, h3 = cluster.hosts
    s3 = ip_of(h3, "s3", "ov")
    mac = "02:42:" + ":".join(f"{int(x):02x}" for x in s3.split("."))
    assert eventually(lambda: ping(h1, "s1", s3) and mac in fdb(h1) and mac in fdb(h2))
    # h3 dies: nothing renews its lease any more, nothing it says reaches anyone.
    h3.run("pkill -KILL -f 'lowbridge [_]agent'; ip link set uplink down")
    try:
        for h, me in ((h1, "s1"), (h2, "s2")):
            assert eventually(lambda h=h: mac not in fdb(h))
            getent = ["ip", "netns", "exec", me, "getent", "hosts", "s3"]
            assert eventually(lambda h=h, a=getent: h.run(a, check=False).returncode == 2)
        assert "s3" not in members(h1, "ov")
        # Its address is free: another host may take it.
        proc = h2.lb("container", "create", "--name", "heir", "--network", "ov", "--ip", s3,
                     check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert ping(h1, "s1", s3)
        h2.lb("rm", "-f", "heir")
    finally:
        h3.run("ip link set uplink up")
    # Back, its next command starts its agent again, which announces s3 again (its address is
    # free again): everyone reaches it.
    h3.lb("ps")
    assert eventually(lambda: "s3" in members(h1, "ov"))
    assert eventually(lambda: ping(h1, "s1", s3), 20)


@pytest.fixture(scope="module")
def secure():
    """etcds:// with client certificates required and etcd's authentication on; a lease longer
    than a command's wait for a lost answer (so the partition test sees what it left)."""
    with Cluster(2, members=3, tls=True, auth=True, lease_ttl=30) as c:
        h1, h2 = c.hosts
        h1.lb("network", "create", "-d", "overlay", "--attachable", "ov")
        h1.lb("container", "create", "--name", "t1", "--network", "ov")
        h2.lb("container", "create", "--name", "t2", "--network", "ov")
        yield c


def test_tls_store_with_login(secure):
    """Overlay sandboxes on two hosts talk by name through a TLS store with a login; a wrong
    password or plaintext fails in one line and changes nothing."""
    c = secure
    h1, h2 = c.hosts
    assert c.store.startswith("etcds://root@")
    assert eventually(lambda: ping(h1, "t1", "t2") and ping(h2, "t2", "t1"))
    before = h1.lb("network", "ls").stdout
    bad = {"LOWBRIDGE_STORE_PASSWORD": PASSWORD + "x"}
    plain = {"LOWBRIDGE_STORE": c.store.replace("etcds://", "etcd://"),
             **dict.fromkeys(("LOWBRIDGE_STORE_CA", "LOWBRIDGE_STORE_CERT",
                              "LOWBRIDGE_STORE_KEY"), "")}  # fmt: skip
    for env, words in ((bad, "authentication failed"), (plain, "unreachable")):
        proc = h1.lb("network", "create", "-d", "overlay", "nope", check=False, env=env)
        assert proc.returncode == 6 and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert h1.lb("network", "ls").stdout == before


def test_a_partition_mid_connect_leaves_nothing_half_done(secure):
    """h1 is cut off from every etcd member after its transaction left and before the answer
    came back: the transaction was applied, the command could not know.  It fails in one line
    and leaves its journal entry; h2 sees the endpoint meanwhile.  Healed, h1's agent settles
    the entry: the endpoint goes from the store, and check is clean on both sides."""
    cluster = secure
    h1, h2 = cluster.hosts
    h1.lb("container", "create", "--name", "cut")  # (on the default bridge)
    proc, marker = paused(h1, ["network", "connect", "ov", "cut"], "network-connect:persist")
    # Drop what the members send h1 (its requests still leave: the transaction is applied).
    ips = ", ".join(m.ip for m in cluster.members)
    drop = ("table inet partition {\n chain input {\n  type filter hook input priority -300;\n"
            f"  ip saddr {{ {ips} }} drop\n }}\n}}\n")  # fmt: skip
    h1.run(["nft", "-f", "-"], input=drop)
    try:
        os.unlink(marker)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 6, err
        assert len(err.strip().splitlines()) == 1 and "unknown" in err, err
        assert "left unfinished" in err
        # The store holds the endpoint (seen from h2), h1's kernel does not.
        assert eventually(lambda: "cut" in members(h2, "ov"))
        assert "eth1" not in h1.run("ip netns exec cut ip -br link").stdout
    finally:
        h1.run("nft delete table inet partition")
    assert eventually(lambda: "cut" not in members(h2, "ov"), 30)
    assert eventually(lambda: clean(h1), 10) and clean(h2)
    assert "ov" not in lb_json(h1, "inspect", "cut")[0]["NetworkSettings"]["Networks"]
    # and connect works once more
    h1.lb("network", "connect", "ov", "cut")
    assert eventually(lambda: ping(h2, "t2", ip_of(h1, "cut", "ov")))
    h1.lb("rm", "-f", "cut")
