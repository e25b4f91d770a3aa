"""Sandboxes: run, exec, their own /etc files, adoption, none, and rm -f."""

from __future__ import annotations

import json
import time

from lowbridge.sandbox import RESOLV_HEADER
from tests.integration.conftest import ip_of, lb_json, ping


def test_run_foreground_exit_code_and_own_etc_files(host):
    host.lb("network", "create", "web-net")
    proc = host.lb(
        "run",
        "--name",
        "fg",
        "--network",
        "web-net",
        "--",
        "sh",
        "-c",
        "cat /etc/hosts; ip -4 -br addr show eth0; exit 7",
        check=False,
    )
    assert proc.returncode == 7
    cid = lb_json(host, "inspect", "fg")[0]["Id"]
    assert f"172.18.0.2\t{cid[:12]}" in proc.stdout
    assert "172.18.0.2/16" in proc.stdout
    # The host's own /etc/hosts is untouched; only the sandbox sees its file.
    assert cid[:12] not in host.run(["cat", "/etc/hosts"]).stdout
    assert lb_json(host, "inspect", "fg")[0]["State"]["Status"] == "exited"


def test_hostname_extra_hosts_and_dns_flags(host):
    host.lb("network", "create", "dn")
    flags = ["--hostname", "web1", "--add-host", "db:10.1.2.3", "--add-host",
             "gw:host-gateway", "--dns", "10.9.9.9", "--dns-search", "lab.example",
             "--dns-option", "ndots:2"]  # fmt: skip
    script = "hostname; cat /etc/hosts /etc/resolv.conf"
    host.lb("container", "create", "--name", "w", "--network", "dn", *flags)
    out = host.lb("exec", "w", "--", "sh", "-c", script).stdout
    lines = out.splitlines()
    assert lines[0] == "web1"
    assert lines[-7:] == [
        "10.1.2.3\tdb", "172.17.0.1\tgw", "172.18.0.2\tweb1", RESOLV_HEADER.strip(),
        # A user-defined network: the embedded resolver, which forwards to 10.9.9.9.
        "nameserver 127.0.0.11", "search lab.example", "options ndots:2",
    ]  # fmt: skip
    out = host.lb("run", "--rm", "--dns", "10.9.9.9", "--", "cat", "/etc/resolv.conf").stdout
    assert out == RESOLV_HEADER + "nameserver 10.9.9.9\n"  # the default bridge: the servers
    # exec sees the same host name; the host's own is untouched.
    assert host.lb("exec", "w", "--", "hostname").stdout.strip() == "web1"
    assert host.run(["hostname"]).stdout.strip() != "web1"
    assert lb_json(host, "inspect", "w")[0]["Config"]["Hostname"] == "web1"
    host.lb("rm", "w")
    assert host.run(["ls", "/run/lowbridge/uts"]).stdout.strip() == ""
    # Without --hostname the host name is the short id, as in Docker.
    host.lb("container", "create", "--name", "plain", "--network", "dn")
    cid = lb_json(host, "inspect", "plain")[0]["Id"]
    assert host.lb("exec", "plain", "--", "hostname").stdout.strip() == cid[:12]


def test_run_rm_removes_the_sandbox(host):
    proc = host.lb("run", "--rm", "--name", "once", "--", "true", check=False)
    assert proc.returncode == 0
    assert "once" not in host.lb("ps").stdout
    assert "once" not in host.run(["ip", "netns", "list"]).stdout


def test_detached_run_with_rm_goes_away_when_its_command_exits(host):
    host.lb("network", "create", "--subnet", "10.57.0.0/24", "brief")
    host.lb("run", "-d", "--rm", "--name", "short", "--network", "brief", "--", "sleep", "0.3")
    assert "short" in host.lb("ps").stdout
    deadline = time.monotonic() + 10
    while "short" in host.lb("ps").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "short" not in host.lb("ps").stdout
    assert host.run(["ip", "netns", "list"]).stdout.strip() == ""
    host.lb("container", "create", "--name", "next", "--network", "brief")
    assert ip_of(host, "next", "brief") == "10.57.0.2"  # its address was released


def test_detached_run_exec_and_rm_force(host):
    host.lb("network", "create", "svc")
    host.lb("run", "-d", "--name", "server", "--network", "svc", "--", "sleep", "300")
    host.lb("run", "-d", "--name", "client", "--network", "svc", "--", "sleep", "300")
    server_ip = ip_of(host, "server", "svc")
    out = host.lb("exec", "client", "--", "ping", "-c1", "-w3", server_ip, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Up " in host.lb("ps").stdout
    doc = lb_json(host, "inspect", "server")[0]
    assert doc["State"]["Running"] and doc["State"]["Pid"] > 0
    refused = host.lb("rm", "server", check=False)
    assert refused.returncode != 0 and "running" in refused.stderr
    host.lb("rm", "-f", "server", "client")
    assert host.run(["ip", "netns", "list"]).stdout.strip() == ""
    assert host.run("pgrep -x sleep", check=False).stdout.strip() == ""  # killed and reaped


def test_exec_exit_codes_like_docker(host):
    host.lb("container", "create", "--name", "x")
    assert host.lb("exec", "x", "--", "sh", "-c", "exit 3", check=False).returncode == 3
    assert host.lb("exec", "nosuch", "--", "true", check=False).returncode == 3  # NotFound


def test_adopt_an_existing_namespace(host):
    # A process started by another tool, in a namespace lowbridge did not make.
    other = host.popen(["unshare", "--net", "sleep", "300"])
    try:
        pid = None
        for _ in range(100):
            found = host.run("pgrep -n -x sleep", check=False).stdout.split()
            if found:
                pid = found[0]
                break
            time.sleep(0.02)
        assert pid
        host.lb("network", "create", "--subnet", "10.50.0.0/24", "adopt-net")
        host.lb("container", "create", "--name", "peer", "--network", "adopt-net")
        host.lb(
            "container",
            "create",
            "--name",
            "adopted",
            "--netns",
            f"/proc/{pid}/ns/net",
            "--network",
            "adopt-net",
        )
        # The adopted process itself now has eth0 and reaches the peer.
        seen = host.run(["nsenter", "-t", pid, "-n", "ip", "-4", "-br", "addr", "show", "eth0"])
        assert "10.50.0.3/24" in seen.stdout
        assert ping(host, "adopted", "10.50.0.2")
        assert lb_json(host, "inspect", "adopted")[0]["LowbridgeNetnsOwned"] is False
        # rm detaches without killing a process lowbridge did not start.
        host.lb("rm", "adopted")
        assert host.run(["kill", "-0", pid], check=False).returncode == 0
        gone = host.run(["nsenter", "-t", pid, "-n", "ip", "-br", "link"]).stdout
        assert "eth0" not in gone
    finally:
        other.kill()
        other.wait()


def test_none_network_has_only_loopback(host):
    host.lb("container", "create", "--name", "isolated", "--network", "none")
    links = json.loads(host.run(["ip", "-n", "isolated", "-j", "link"]).stdout)
    assert [link["ifname"] for link in links] == ["lo"]
    assert "UP" in links[0]["flags"]
    refused = host.lb("network", "connect", "bridge", "isolated", check=False)
    assert refused.returncode != 0 and "none" in refused.stderr
    assert "isolated" in json.dumps(lb_json(host, "network", "inspect", "none"))


def test_several_simulated_hosts_are_independent_and_can_be_wired():
    from lowbridge.simhost import SimHost, outside

    with SimHost("a") as a, SimHost("b") as b, outside("lan") as lan:
        for h in (a, b):  # the same names and subnets on both hosts: no clash
            h.lb("network", "create", "--subnet", "10.55.0.0/24", "same")
            h.lb("container", "create", "--name", "c", "--network", "same")
            assert ip_of(h, "c", "same") == "10.55.0.2"
        a.wire(lan, "uplink0", "lan-a", "192.168.77.2/24", "192.168.77.1/24")
        b.wire(lan, "uplink0", "lan-b", "192.168.78.2/24", "192.168.78.1/24")
        assert a.run(["ping", "-c1", "-w3", "192.168.77.1"], check=False).returncode == 0
        assert b.run(["ping", "-c1", "-w3", "192.168.78.1"], check=False).returncode == 0
        # b's uplink address is not reachable from a: lan does not route between them.
        assert a.run(["ping", "-c1", "-w1", "192.168.78.2"], check=False).returncode != 0


def test_demo_runs_the_tutorial_in_a_throwaway_host():
    import os
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "lowbridge")  # the console script
    proc = subprocess.run([exe, "demo", "--keep"], input="\n", capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "kept: nsenter -t " in proc.stdout  # --keep waited for Enter
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()
            if line.startswith("alpine") and len(line.split()) == 6}  # fmt: skip
    # Columns: alpine1@alpine-net, alpine2@alpine-net, alpine3@bridge, alpine4@alpine-net,
    # alpine4@bridge -- Docker's tutorial outcome.
    assert rows == {
        "alpine1": ["yes", "yes", "no", "yes", "no"],
        "alpine2": ["yes", "yes", "no", "yes", "no"],
        "alpine3": ["no", "no", "yes", "no", "yes"],
        "alpine4": ["yes", "yes", "yes", "yes", "yes"],
    }


def test_read_only_commands_do_not_import_pyroute2(host):
    """Nor does any command load inspect (dataclasses imports it for docstring-less classes
    only; the CLI defers it, see cli._defer_inspect)."""
    import re
    import sys

    host.lb("network", "create", "ro")
    host.lb("network", "create", "other")
    host.lb("container", "create", "--name", "r", "--network", "ro")
    read_only = (["network", "ls"], ["ps"], ["network", "inspect", "ro"], ["inspect", "r"],
                 ["firewall", "show"])  # fmt: skip
    # (A disconnect goes through pyroute2's IPRoute, whose requests module imports inspect.)
    for argv in (*read_only, ["network", "connect", "other", "r"]):
        proc = host.run([sys.executable, "-X", "importtime", "-m", "lowbridge", *argv])
        imported = re.findall(r"\|\s+([\w.]+)$", proc.stderr, re.M)
        assert "inspect" not in imported, argv
        if argv in read_only:
            assert not any(m.startswith("pyroute2") for m in imported), argv


def test_simhost_shell_entry_point():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lowbridge.simhost", "sh", "-c",
         "lowbridge network create t >/dev/null && lowbridge network ls && exit 3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3 and "bridge" in proc.stdout and " t " in proc.stdout


WORKER_CHECK = r"""
import json, os, threading
from lowbridge.kernel import netns

def where():
    return [os.stat(f"/proc/thread-self/ns/{k}").st_ino for k in ("net", "uts")]

def home():
    return [os.stat(f"/proc/self/ns/{k}").st_ino for k in ("net", "uts")]

def job(fn):
    return netns.submit(fn).result()

out = {}
def wander():  # leave both namespaces, as netns.create and create_uts do
    netns._check(netns._libc.unshare(netns.CLONE_NEWNET | netns.CLONE_NEWUTS), "unshare")
    return where()
away = job(wander)
out["moved"] = away != home()
out["back_home"] = job(where) == home()
out["same_worker"] = job(threading.get_ident) == job(threading.get_ident)
try:
    job(lambda: 1 / 0)
except ZeroDivisionError:
    out["error_raised"] = True
out["nested"] = job(lambda: job(lambda: 42))
# A worker that cannot go home breaks; a job queued behind it (submit() does not wait) goes on
# to a new worker instead of waiting for ever.
queued = threading.Event()
def breaker():
    queued.wait(5)
    w = netns._workers[0]
    w.home[0] = (os.open("/dev/null", os.O_RDONLY), w.home[0][1])  # setns() home fails
    return threading.get_ident()
first = netns.submit(breaker)
second = netns.submit(threading.get_ident)
queued.set()
try:
    first.result()
except netns.KernelError:
    out["broken"] = True
out["handed_on"] = second.result() not in (None, threading.get_ident())
pid = os.fork()
if pid == 0:  # the child has no worker thread: a new one serves it
    os._exit(0 if job(where) == home() else 1)
out["child"] = os.waitpid(pid, 0)[1] == 0
print(json.dumps(out))
"""


def test_namespace_worker_always_returns_home(host):
    """Jobs that move the worker into other namespaces never leak them into the next job."""
    import sys

    proc = host.run([sys.executable, "-c", WORKER_CHECK], timeout=60)
    want = {"moved": True, "back_home": True, "same_worker": True, "error_raised": True,
            "nested": 42, "broken": True, "handed_on": True, "child": True}  # fmt: skip
    assert json.loads(proc.stdout) == want
