"""``check`` and ``gc`` in simulated hosts: a healthy host is clean; what a kill -9 after any step
of any verb leaves, what was deleted by hand and what a reboot took is reported, then mended, and
the host works (packets); lowbridge's marked leftovers go, look-alikes without the mark stay."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from lowbridge.sandbox import RESOLV_HEADER
from lowbridge.simhost import SimHost
from lowbridge.txn import FAIL_ENV
from tests.integration.conftest import ip_of, on_a_lan, ping, state
from tests.integration.test_crashes import SLEEP, VERBS, _base, _steps


def check(h: SimHost) -> tuple[int, list[str]]:
    proc = h.lb("check", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.splitlines()
    assert (proc.returncode == 1) == bool(lines), proc.stdout
    return proc.returncode, lines


def gc_clean(h: SimHost) -> list[str]:
    """gc, after which check finds nothing; gc's lines."""
    proc = h.lb("gc", check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert check(h) == (0, []), proc.stdout
    return proc.stdout.splitlines()


def _journal(h: SimHost) -> list[str]:
    out = h.run(["sqlite3", "/var/lib/lowbridge/lowbridge.db", "SELECT op FROM journal"],
                check=False)  # fmt: skip
    if out.returncode == 0:
        return out.stdout.split()
    script = ("import sqlite3; print('\\n'.join(r[0] for r in sqlite3.connect("
              "'/var/lib/lowbridge/lowbridge.db').execute('SELECT op FROM journal')))")  # fmt: skip
    return h.run(["python3", "-c", script]).stdout.split()


def test_a_healthy_host_is_clean_and_gc_changes_nothing(host):
    h = host
    h.lb("network", "create", "--subnet", "10.60.0.0/24", "n1")
    h.lb("network", "create", "--internal", "--subnet", "10.61.0.0/24", "n2")
    h.lb("run", "-d", "--name", "a", "--network", "n1", "-p", "8080:80", *SLEEP)
    h.lb("container", "create", "--name", "b", "--network", "n2")
    h.lb("network", "connect", "n1", "b")
    h.lb("container", "create", "--name", "d")  # the default bridge
    assert check(h) == (0, [])
    assert json.loads(h.lb("check", "--json").stdout) == []
    before = state(h)
    assert h.lb("gc").stdout == "" and h.lb("gc", "--dry-run").stdout == ""
    assert state(h) == before


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_what_was_deleted_by_hand_is_reported_and_made_again(backend):
    with on_a_lan("hand") as (h, lan):
        h.env["LOWBRIDGE_FIREWALL_BACKEND"] = backend
        h.lb("network", "create", "--subnet", "10.62.0.0/24", "n1")
        h.lb("network", "create", "--subnet", "10.63.0.0/24", "other")
        h.lb("run", "-d", "--name", "web", "--network", "n1", "-p", "8080:80", "--", "socat",
             "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo web")  # fmt: skip
        h.lb("container", "create", "--name", "cli", "--network", "n1")
        h.lb("container", "create", "--name", "far", "--network", "other")
        web = ip_of(h, "web", "n1")
        veth = json.loads(h.lb("inspect", "web").stdout)[0]["NetworkSettings"]["Networks"]["n1"][
            "HostInterface"]  # fmt: skip
        h.run(["ip", "link", "del", veth])  # web loses its interface
        h.run(["ip", "-n", "cli", "route", "del", "default"])  # cli its default route
        h.run(["sh", "-c", "echo junk > /etc/netns/cli/hosts"])  # and its hosts file
        h.run(["ip", "link", "set", "lb-" + _net_id(h, "other")[:12], "down"])  # far's bridge
        if backend == "nftables":
            h.run(["nft", "flush", "chain", "ip", "lowbridge", "filter-FORWARD"])
        else:
            h.run(["iptables", "-F", "LOWBRIDGE-FORWARD"])
        h.run(["pkill", "-f", "lowbridge.dns.server"])
        code, lines = check(h)
        text = "\n".join(lines)
        assert code == 1
        assert f"veth {veth} of sandbox web on n1: expected present, found none" in lines
        assert "default route of sandbox cli: expected via 10.62.0.1 dev eth0, found none" in text
        assert "files /etc/netns/cli of sandbox cli: expected as recorded, found hosts" in text
        assert "of network other: expected up, found down" in text
        assert f"rule ({backend}):" in text
        assert "resolver (embedded DNS): expected running, for 3 sandboxes, found none" in text
        assert not ping(h, "cli", web)
        done = gc_clean(h)
        assert len(done) == len(lines)
        # It all works again: names, the route, the published port from the LAN, isolation.
        assert ping(h, "cli", "web") and ping(h, "cli", "10.62.0.1")
        assert ip_of(h, "web", "n1") == web
        got = h.run(["ip", "netns", "exec", "cli", "socat", "-", f"TCP:{web}:80"]).stdout
        assert got.strip() == "web"
        assert lan.run(["socat", "-", "TCP:192.168.77.2:8080"]).stdout.strip() == "web"
        assert not ping(h, "far", web)
        assert ping(h, "far", "10.63.0.1")


def _net_id(h: SimHost, name: str) -> str:
    return json.loads(h.lb("network", "inspect", name).stdout)[0]["Id"]


def test_only_what_carries_lowbridges_mark_is_removed(host):
    h = host
    h.lb("network", "create", "--subnet", "10.64.0.0/24", "n1")
    h.lb("container", "create", "--name", "a", "--network", "n1")
    base = state(h)
    # lowbridge's, without an owner: a bridge marked for a network the store does not know, a
    # host end of the veth shape, a sandbox's namespace (its UTS namespace beside it), an
    # /etc/netns directory lowbridge wrote.
    h.run(["sh", "-ec", """
        ip link add lb-0123456789ab type bridge
        ip link set lb-0123456789ab alias lowbridge:0123456789abcdef
        ip link add lbv0123456789ab type veth peer name lost0
        ip netns add ghost && mkdir -p /run/lowbridge/uts && touch /run/lowbridge/uts/ghost
        mkdir -p /etc/netns/stale
    """])  # fmt: skip
    with open(os.path.join(h.dir, "etc-netns", "stale", "resolv.conf"), "w") as f:
        f.write(RESOLV_HEADER + "nameserver 10.0.0.1\n")
    # Look-alikes without the mark, and other people's firewall.
    h.run(["sh", "-ec", """
        ip link add lb-fedcba987654 type bridge
        ip link add lbvfoo type veth peer name lost1
        ip netns add foreign
        mkdir -p /etc/netns/theirs && echo 'nameserver 10.0.0.9' > /etc/netns/theirs/resolv.conf
        iptables -A INPUT -s 10.99.0.0/16 -j DROP
        nft add table ip theirs
    """])  # fmt: skip
    _, lines = check(h)
    assert sorted(line.split(":")[0] for line in lines) == [
        "bridge lb-0123456789ab (lowbridge's mark)",
        "files /etc/netns/stale",
        "namespace /run/netns/ghost",
        "uts namespace /run/lowbridge/uts/ghost",
        "veth lbv0123456789ab (lowbridge's mark)",
    ]
    assert len(h.lb("gc", "--dry-run").stdout.splitlines()) == 5
    gc_clean(h)
    after = h.run(["sh", "-c", "ip -br link; ip netns list; ls /etc/netns; iptables-save; "
                   "nft list tables"]).stdout  # fmt: skip
    for kept in ("lb-fedcba987654", "lbvfoo", "foreign", "theirs", "-A INPUT -s 10.99.0.0/16",
                 "table ip theirs"):  # fmt: skip
        assert kept in after, kept
    for gone in ("lb-0123456789ab", "lbv0123456789ab", "ghost", "stale"):
        assert gone not in after, gone
    h.run(["sh", "-ec", """
        ip link del lb-fedcba987654; ip link del lbvfoo; ip netns del foreign
        rm -r /etc/netns/theirs; iptables -D INPUT -s 10.99.0.0/16 -j DROP
        nft delete table ip theirs
    """])  # fmt: skip
    assert state(h) == base


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
@pytest.mark.parametrize("name", list(VERBS))
def test_check_reports_a_kill_after_every_step_and_gc_mends_it(name, backend):
    """As test_crashes, but the next commands are ``check`` (it must report the change left
    unfinished, and settle nothing) and ``gc`` (after which check is clean): the host is then
    as before the verb, or as after it, and works."""
    verb = VERBS[name]
    with SimHost("g") as h:
        h.env["LOWBRIDGE_FIREWALL_BACKEND"] = backend
        _base(h)
        before = state(h)
        for op, step in _steps(h, verb):
            if verb.setup:
                verb.setup(h)
            proc = h.lb(*verb.argv, check=False, env={**os.environ, FAIL_ENV: f"{op}:{step}:kill"})
            assert proc.returncode == -9, (op, step, proc.returncode, proc.stderr)
            pending = _journal(h)
            code, lines = check(h)
            assert _journal(h) == pending, (op, step)  # check settles nothing
            if pending:
                assert code == 1 and any(line.startswith("change ") for line in lines), lines
            gc_clean(h)
            if verb.inverse is None:
                assert verb.done(h), (op, step)
            elif verb.done(h):
                verb.check(h)
                verb.inverse(h)
            assert state(h) == before, (op, step)
        assert check(h) == (0, [])


def test_a_reboot_is_reported_and_gc_brings_the_networks_back():
    with tempfile.TemporaryDirectory(prefix="lowbridge-reboot-") as state_dir:
        with SimHost("before", state_dir=state_dir) as h:
            h.lb("network", "create", "--subnet", "10.65.0.0/24", "keep")
            h.lb("run", "-d", "--name", "gone", "--network", "keep", "-p", "8081:80", *SLEEP)
        # Same disk, fresh kernel: every link, namespace and rule is gone.
        with SimHost("after", state_dir=state_dir) as h:
            code, lines = check(h)
            text = "\n".join(lines)
            assert code == 1
            assert "bridge lb-" in text and "of network keep: expected present, found none" in text
            assert "namespace /run/netns/gone of sandbox gone: expected present, found none" in text
            assert "rule (" in text
            gc_clean(h)
            # It exited with the kernel (255, as dockerd finds its containers after a reboot):
            # kept, its address and port released.
            status = h.lb("ps", "-a", "-f", "name=gone", "--format", "{{.Status}}").stdout
            assert status.startswith("Exited (255)"), status
            h.lb("run", "-d", "--name", "x", "--network", "keep", "-p", "8081:80", "--", "socat",
                 "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo x")  # fmt: skip
            h.lb("container", "create", "--name", "y", "--network", "keep")
            assert ip_of(h, "x", "keep") == "10.65.0.2"
            assert ping(h, "y", "x")
            got = h.run(["ip", "netns", "exec", "y", "socat", "-", "TCP:10.65.0.1:8081"])
            assert got.stdout.strip() == "x"
            assert check(h) == (0, [])
