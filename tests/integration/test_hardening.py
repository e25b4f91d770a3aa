"""Hardening: the host's own namespace, races, a flushed firewall, file modes, damaged state,
input that must be refused, a killed resolver.  One test (or group) per defect of issue 22."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from lowbridge.config import CONFIG_ENV
from lowbridge.simhost import SimHost
from tests.integration.conftest import ip_of, ping, state

SLEEP = ("--", "sleep", "infinity")


def _one_line(proc: subprocess.CompletedProcess, code: int | None = None) -> str:
    assert proc.returncode not in (0, 70), (proc.returncode, proc.stderr)
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lowbridge: error: "), proc.stderr
    return lines[0]


# --------------------------------------------------------------- the host's own namespace
def test_the_hosts_own_namespace_is_never_adopted(host):
    host.lb("network", "create", "--subnet", "10.40.0.0/24", "n1")
    host.run("ip netns attach hostns 1")  # /run/netns/hostns: the host's own, by another name
    before = state(host)
    for path in ("/proc/1/ns/net", "/proc/self/ns/net", "/run/netns/hostns"):
        proc = host.lb("container", "create", "--name", "h", "--netns", path, "--network", "n1",
                       check=False)  # fmt: skip
        assert "host's own network namespace" in _one_line(proc, 2), path
    assert state(host) == before
    assert host.run("ip route show default").stdout == ""  # the host's routes are its own


def test_an_adopted_namespace_gets_its_default_route_back(host):
    host.lb("network", "create", "--subnet", "10.41.0.0/24", "n1")
    host.run("ip netns add ext && ip link add ev0 type veth peer name ev1 netns ext")
    host.run("ip -n ext link set ev1 up && ip -n ext addr add 192.0.2.2/24 dev ev1")
    host.run("ip -n ext route add default via 192.0.2.1")
    before = host.run("ip -n ext route").stdout
    host.lb("container", "create", "--name", "ad", "--netns", "/run/netns/ext", "--network", "n1")
    assert "default via 10.41.0.1" in host.run("ip -n ext route").stdout
    assert ping(host, "ext", "10.41.0.1")
    # A second sandbox may not take a namespace that already is one.
    proc = host.lb("container", "create", "--name", "ad2", "--netns", "/run/netns/ext", check=False)
    assert "already the namespace of sandbox ad" in _one_line(proc, 4)
    host.lb("rm", "ad")
    # The same route (restored by lowbridge, so its protocol says "static").
    assert host.run("ip -n ext route").stdout.replace(" proto static", "") == before
    assert "ext" in host.run("ip netns list").stdout  # not ours: it stays


# --------------------------------------------------------------- run -d against rm -f
def test_run_racing_rm_leaves_no_ghost_and_no_process(host):
    host.lb("network", "create", "--subnet", "10.42.0.0/24", "n1")
    for i in range(8):
        name = f"r{i}"
        run = host.popen(
            [sys.executable, "-m", "lowbridge", "run", "-d", "--name", name, "--network", "n1",
             "--", "sleep", f"{1000 + i}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.03 * i)  # from "rm first" to "rm while run holds the lock" to "rm after"
        host.lb("rm", "-f", name, check=False)
        run.communicate(timeout=60)
        host.lb("rm", "-f", name, check=False)  # whichever won, this one removes what is left
        assert host.lb("inspect", name, check=False).returncode != 0, name
        assert host.run(["pgrep", "-f", f"sleep {1000 + i}"], check=False).stdout == "", name
        assert name not in host.run("ip netns list").stdout
    assert host.lb("ps", "-aq").stdout.split() == []


# --------------------------------------------------------------- a flushed firewall
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_a_flushed_firewall_is_repaired_by_the_next_change(backend):
    with SimHost("fw") as h:
        h.env["LOWBRIDGE_FIREWALL_BACKEND"] = backend
        h.lb("network", "create", "--subnet", "10.43.0.0/24", "n1")
        h.lb("network", "create", "--subnet", "10.44.0.0/24", "n2")
        h.lb("container", "create", "--name", "a", "--network", "n1")
        h.lb("container", "create", "--name", "b", "--network", "n2")
        assert not ping(h, "a", ip_of(h, "b", "n2"))  # isolated
        if backend == "iptables":
            wipes = ["iptables -F FORWARD", "iptables -F && iptables -t nat -F"]
        else:
            hook = "ip lowbridge filter-FORWARD"
            wipes = [f"nft flush chain {hook} && nft delete chain {hook}", "nft flush ruleset"]
        for i, wipe in enumerate(wipes):
            h.run(wipe)
            h.lb("container", "create", "--name", f"x{i}", "--network", "n1")
            assert not ping(h, "a", ip_of(h, "b", "n2")), wipe
            assert ping(h, "a", ip_of(h, f"x{i}", "n1")), wipe
            # The kernel now holds exactly what a fresh rendering gives: reapply changes nothing.
            kernel = _rules(h, backend)
            h.lb("firewall", "reapply")
            assert _rules(h, backend) == kernel, wipe


def _rules(h: SimHost, backend: str) -> list[str]:
    if backend == "iptables":
        return [ln for ln in h.run("iptables-save").stdout.splitlines() if ln.startswith("-")]
    return sorted(h.run("nft -s list ruleset").stdout.split("\n"))


# --------------------------------------------------------------- file modes
def test_files_are_private_whatever_the_umask(host):
    umask = {**os.environ, "LOWBRIDGE_UMASK_TEST": "1"}
    host.run(["sh", "-c", f"umask 000; {sys.executable} -m lowbridge network create "
              "--subnet 10.45.0.0/24 n1"], env=umask)  # fmt: skip
    host.run(["sh", "-c", f"umask 000; {sys.executable} -m lowbridge run -d --name s "
              "--network n1 -- sleep infinity"], env=umask)  # fmt: skip
    out = host.run(
        "stat -c '%a %n' /var/lib/lowbridge /var/lib/lowbridge/lowbridge.db /run/lowbridge "
        "/run/lowbridge/* /run/lowbridge/containers/* /etc/netns/s /etc/netns/s/*"
    ).stdout
    modes = dict(reversed(line.split(" ", 1)) for line in out.splitlines())
    for path, mode in modes.items():
        if path.startswith("/etc/netns/s/"):
            assert mode == "644", (path, mode)  # read by the sandbox's processes
        elif path == "/etc/netns/s":
            assert mode == "755", (path, mode)  # `ip netns exec` bind-mounts it for them
        elif os.path.basename(path).startswith("lowbridge.db") or path.endswith(".log"):
            assert mode == "600", (path, mode)
        elif path.endswith((".sock", ".lock")):
            continue
        else:
            assert mode in ("700", "600"), (path, mode)


def test_a_planted_symlink_is_not_followed(host):
    host.lb("network", "create", "--subnet", "10.46.0.0/24", "n1")
    victim = os.path.join(host.dir, "victim")
    host.run(f"mkdir -p {victim} && ln -s {victim} /etc/netns/p")
    before = state(host)
    proc = host.lb("container", "create", "--name", "p", "--network", "n1", check=False)
    assert "/etc/netns/p" in _one_line(proc)
    assert os.listdir(victim) == []
    assert state(host) == before


# --------------------------------------------------------------- damaged state
def test_a_damaged_row_names_its_file_and_record_and_other_verbs_work(host):
    host.lb("network", "create", "--subnet", "10.47.0.0/24", "n1")
    host.lb("container", "create", "--name", "a", "--network", "n1")
    db = "/var/lib/lowbridge/lowbridge.db"
    _sql(host, db, "UPDATE containers SET doc = '{\"id\": 1, bad' WHERE name = 'a'")
    line = _one_line(host.lb("ps", check=False), 6)
    assert db in line and "container" in line and "a" in line, line
    # Networks are another table: the verbs that only read them still work.
    assert "n1" in host.lb("network", "ls").stdout
    # A change plans against every record (an address the bad one holds must not be given out
    # again): it refuses with the same line, and changes nothing.
    before = state(host)
    proc = host.lb("network", "create", "--subnet", "10.48.0.0/24", "n2", check=False)
    assert _one_line(proc, 6).endswith(line.split("error: ", 1)[1])
    assert state(host) == before


def test_an_emptied_store_is_refused_with_one_line(host):
    host.lb("network", "create", "--subnet", "10.47.0.0/24", "n1")
    host.lb("container", "create", "--name", "a", "--network", "n1")
    host.run(": > /var/lib/lowbridge/lowbridge.db && touch /var/lib/lowbridge/lowbridge.db-wal "
             "&& echo x > /var/lib/lowbridge/lowbridge.db-wal")  # fmt: skip
    started = time.monotonic()
    line = _one_line(host.lb("ps", check=False), 6)
    assert "lowbridge.db" in line
    assert time.monotonic() - started < 20  # not the old 30 s wait for a lock  # noqa: SIM300


def test_a_deleted_store_does_not_give_out_subnets_lowbridge_devices_hold(host):
    host.lb("network", "create", "--subnet", "10.49.0.0/24", "n1")
    host.run("rm -f /var/lib/lowbridge/lowbridge.db*")
    host.lb("network", "ls")  # a new, empty store
    before = state(host)
    proc = host.lb("network", "create", "--subnet", "10.49.0.0/24", "again", check=False)
    assert "10.49.0.0/24" in _one_line(proc, 4)
    assert state(host) == before
    host.lb("network", "create", "--subnet", "10.49.0.0/16", "wide", check=False)
    assert "10.49.0.0/16" not in host.lb("network", "ls").stdout


def test_a_read_only_run_dir_keeps_the_state(host):
    host.lb("network", "create", "--subnet", "10.39.0.0/24", "n1")
    # A published port: k's address is in the rules (the DNAT), so their removal can be seen.
    # A sandbox without a command: no supervisor that could record something of its own in
    # /run/lowbridge meanwhile (its write made the remount fail with EBUSY, or its change fail
    # and print a line of its own, in loaded runs).
    host.lb("container", "create", "--name", "k", "--network", "n1", "-p", "8080:80")
    assert "10.39.0.2" in host.run("iptables-save; nft list ruleset").stdout
    host.run("mount --bind /run/lowbridge /run/lowbridge")
    host.run("mount -o remount,bind,ro /run/lowbridge")
    try:
        line = _one_line(host.lb("rm", "-f", "k", check=False))
        assert "Read-only file system" in line and "next lowbridge command finishes it" in line
        # The record stays until the kernel change it describes is done.
        assert host.lb("inspect", "k", check=False).returncode == 0
    finally:
        host.run("umount /run/lowbridge")
    host.lb("ps")  # the next command finishes the removal
    assert host.lb("inspect", "k", check=False).returncode != 0
    assert "k" not in host.run("ip netns list").stdout.split()
    assert "10.39.0.2" not in host.run("iptables-save; nft list ruleset").stdout  # k's rules


def _sql(h: SimHost, db: str, statement: str) -> None:
    script = f"import sqlite3; d = sqlite3.connect({db!r}); d.execute({statement!r}); d.commit()"
    h.run([sys.executable, "-c", script])


# --------------------------------------------------------------- input that must be refused
RUN = ("run", "-d", "--name", "x")
REFUSED = [
    ((*RUN, "--dns-search", "a\nnameserver 1.2.3.4", "--", "true"), "--dns-search"),
    ((*RUN, "--dns-option", "ndots:1\nsearch evil", "--", "true"), "--dns-option"),
    (("network", "create", "-d", "macvlan", "-o", "parent=mvp", "-o", "mtu=abc", "m"), "mtu"),
    (("network", "create", "-d", "macvlan", "-o", "parent=mvp", "-o", "mtu=70000", "m"), "mtu"),
    (("network", "create", "--subnet", "127.0.0.0/8", "x"), "127.0.0.0/8"),
    (("network", "create", "--subnet", "0.0.0.0/8", "x"), "0.0.0.0/8"),
    (("network", "create", "--subnet", "224.0.0.0/24", "x"), "224.0.0.0/24"),
    (("network", "create", "--subnet", "255.255.255.0/24", "x"), "255.255.255.0/24"),
    (("network", "create", "--subnet", "10.38.0.0/31", "x"), "/31"),
    (("network", "create", "--subnet", "192.168.77.0/24", "x"), "192.168.77.1"),
    ((*RUN, "-p", "\u0668\u0660:80", "--", "true"), "port"),
    ((*RUN, "-p", "80:\u0668\u0660", "--", "true"), "port"),
]  # fmt: skip


def test_input_that_would_harm_is_refused_with_one_line(host):
    # The host's LAN: its address is the gateway a network there would take.
    out = SimHost("lan", lowbridge=False)
    try:
        host.wire(out, "eth0", "lan0", "192.168.77.1/24", "192.168.77.2/24")
        host.run("ip link add mvp type veth peer name mvq && ip link set mvp up")
        host.lb("network", "create", "--subnet", "10.37.0.0/24", "n1")
        bridge = "lb-" + json.loads(host.lb("network", "inspect", "n1").stdout)[0]["Id"][:12]
        before = state(host)
        cases = [*REFUSED, (("network", "create", "-d", "macvlan", "-o", f"parent={bridge}",
                             "mv"), "lowbridge's own")]  # fmt: skip
        for argv, expected in cases:
            line = _one_line(host.lb(*argv, check=False))
            assert expected in line, (argv, line)
        assert state(host) == before
    finally:
        out.close()


def test_a_malformed_config_file_is_one_line(host):
    bad = os.path.join(host.dir, "bad.conf")
    with open(bad, "w") as f:
        f.write("firewall_backend = nftables\n")  # no [lowbridge] section header
    assert bad in _one_line(host.lb("network", "ls", check=False, env={CONFIG_ENV: bad}), 2)


def test_not_root_is_one_line(host):
    proc = host.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     sys.executable, "-m", "lowbridge", "network", "ls"], check=False)  # fmt: skip
    assert "root" in _one_line(proc, 1)


def test_an_unreachable_etcd_writes_no_host_id(host):
    env = {"LOWBRIDGE_STORE": "etcd://127.0.0.1:1"}
    proc = host.lb("network", "create", "-d", "overlay", "ov", check=False, env=env)
    assert "127.0.0.1:1" in _one_line(proc)
    assert "host-id" not in host.run("ls -A /var/lib/lowbridge").stdout


# --------------------------------------------------------------- a killed resolver
def test_a_killed_resolver_is_restarted_by_any_command(host):
    host.lb("network", "create", "--subnet", "10.36.0.0/24", "n1")
    host.lb("run", "-d", "--name", "a", "--network", "n1", *SLEEP)
    host.lb("run", "-d", "--name", "b", "--network", "n1", *SLEEP)
    assert _resolves(host, "a", "b")
    host.run("pkill -9 -f 'lowbridge[.]dns'")  # [.]: not this shell's own command line
    host.run("for i in $(seq 50); do pgrep -f 'lowbridge[.]dns' || exit 0; sleep 0.1; done")
    assert not _resolves(host, "a", "b")
    host.lb("ps")  # read-only
    assert _resolves(host, "a", "b")


def _resolves(h: SimHost, ns: str, name: str) -> bool:
    proc = h.run(["ip", "netns", "exec", ns, "dig", "+short", "+time=1", "+tries=1",
                  "@127.0.0.11", name], check=False)  # fmt: skip
    return proc.returncode == 0 and proc.stdout.strip() != ""
