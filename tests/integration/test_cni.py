"""``lowbridge-cni`` driven as a CNI runtime drives it (SPEC.md's execution protocol): every
command and error path, with real packets between the runtime's namespaces, and DEL after an
ADD killed between any two of its steps.  Podman itself drives it in test_podman.py."""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from lowbridge.plugins import cniservice
from lowbridge.simhost import SimHost
from lowbridge.txn import FAIL_ENV, TRACE_ENV
from tests.integration.conftest import UPLINK, members, on_a_lan, ping, state, wait_for
from tests.integration.test_firewall import tcp

# The plugin as ``lowbridge plugin cni`` installs it (test_plugin_cni_installs_...: the command
# itself, and the same answers as the ``lowbridge-cni`` console script's).
PLUGIN_DIR = tempfile.mkdtemp(prefix="lowbridge-cni-")
atexit.register(shutil.rmtree, PLUGIN_DIR, True)  # each process that imports this module made one
PLUGIN = [cniservice.install(PLUGIN_DIR)]
CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "lowbridge-cni")


@pytest.fixture(scope="module")
def site():
    with on_a_lan("cni") as (h, lan):
        yield h, lan


def conf(name: str, subnet: str, version: str = "1.0.0", **extra: object) -> dict:
    return {"cniVersion": version, "name": name, "type": "lowbridge", "subnet": subnet, **extra}


def cni(h: SimHost, command: str, config: dict | str | None, cid: str = "", netns: str = "",
        ifname: str = "eth0", pod: str = "", env: dict | None = None,
        plugin: list[str] = PLUGIN):  # fmt: skip
    """Run the plugin as a runtime does; (exit status, its JSON or None, stderr)."""
    args = "IgnoreUnknown=1" + (f";K8S_POD_NAME={pod}" if pod else "")
    cni_env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
               "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": "/usr/lib/cni"}  # fmt: skip
    stdin = config if isinstance(config, str) else json.dumps(config or {})
    proc = h.run(plugin, check=False, input=stdin,
                 env={**os.environ, **h.env, **cni_env, **(env or {})})  # fmt: skip
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out, proc.stderr


def runtime_netns(h: SimHost, name: str) -> str:
    """A namespace as a runtime makes one for its container (not lowbridge's)."""
    h.run(["ip", "netns", "add", name])
    return f"/run/netns/{name}"


def links_in(h: SimHost, netns: str) -> list[str]:
    return [x["ifname"] for x in json.loads(h.run(["ip", "-n", netns, "-j", "link"]).stdout)]


def veths(h: SimHost) -> list[str]:
    return [x["ifname"] for x in json.loads(h.run(["ip", "-j", "link"]).stdout)
            if x["ifname"].startswith("lbv")]  # fmt: skip


def dig(h: SimHost, netns: str, name: str) -> str:
    argv = [
        "ip",
        "netns",
        "exec",
        netns,
        "dig",
        "@127.0.0.11",
        "+short",
        "+time=2",
        "+tries=2",
        name,
    ]
    return h.run(argv, check=False).stdout.strip()


def test_add_check_del_with_real_packets(site):
    h, lan = site
    ports = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    web_ns, peer_ns = runtime_netns(h, "rt-web"), runtime_netns(h, "rt-peer")
    cfg = conf("cninet", "10.91.0.0/24", runtimeConfig=ports)
    rc, res, err = cni(h, "ADD", cfg, "webid", web_ns, pod="web")
    assert rc == 0, (res, err)
    rc, peer, err = cni(h, "ADD", conf("cninet", "10.91.0.0/24"), "peerid", peer_ns, pod="peer")
    assert rc == 0, (peer, err)

    # The result as SPEC.md 1.0 shapes it, and as the kernel has it.
    assert res["cniVersion"] == "1.0.0"
    host_end, inside = res["interfaces"]
    assert inside["name"] == "eth0" and inside["sandbox"] == web_ns
    assert json.loads(h.run(["ip", "-j", "link", "show", host_end["name"]]).stdout)[0]["master"]
    (addr,) = res["ips"]
    ip = addr["address"].split("/")[0]
    assert addr == {"address": f"{ip}/24", "gateway": "10.91.0.1", "interface": 1}
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.91.0.1"}]
    assert res["dns"]["nameservers"][0] == "127.0.0.11"
    kernel = json.loads(h.run(["ip", "-n", "rt-web", "-j", "addr", "show", "eth0"]).stdout)
    assert [a["local"] for a in kernel[0]["addr_info"] if a["family"] == "inet"] == [ip]
    assert inside["mac"] == kernel[0]["address"]

    # lowbridge knows them as its own sandboxes: ps, network inspect, DNS by name, NAT.
    assert {"web", "peer"} <= set(h.lb("ps", "--format", "{{.Names}}").stdout.split())
    assert members(h, "cninet") == {"web", "peer"}
    assert ping(h, "rt-peer", ip)
    assert dig(h, "rt-peer", "web") == ip
    h.popen(["ip", "netns", "exec", "rt-web", "socat", "TCP-LISTEN:80,fork,reuseaddr",
             "SYSTEM:echo web"])  # fmt: skip
    wait_for(lambda: h.run(["ip", "netns", "exec", "rt-web", "ss", "-Htln", "sport = :80"]).stdout)
    assert tcp(lan, None, UPLINK, 8080) == "web"

    # CHECK: silent when all is as prevResult says; an error when it is not.
    rc, out, err = cni(h, "CHECK", {**cfg, "prevResult": res}, "webid", web_ns)
    assert (rc, out) == (0, None), err
    wrong = json.loads(json.dumps(res).replace(ip, "10.91.0.200"))
    rc, out, _ = cni(h, "CHECK", {**cfg, "prevResult": wrong}, "webid", web_ns)
    assert rc == 1 and out["code"] == 7 and "10.91.0.200" in out["msg"]

    # DEL: gone from the kernel, the firewall and the records; again: still success.
    rc, out, err = cni(h, "DEL", {**cfg, "prevResult": res}, "webid", web_ns)
    assert (rc, out) == (0, None), err
    assert links_in(h, "rt-web") == ["lo"]
    assert not ping(h, "rt-peer", ip)
    assert tcp(lan, None, UPLINK, 8080, timeout=1) is None
    assert members(h, "cninet") == {"peer"}
    assert ip not in dig(h, "rt-peer", "web")  # (no upstream here: the query times out)
    assert dig(h, "rt-peer", "peer") == peer["ips"][0]["address"].split("/")[0]
    assert cni(h, "DEL", cfg, "webid", web_ns)[:2] == (0, None)
    assert cni(h, "DEL", cfg, "webid", "")[:2] == (0, None)  # no CNI_NETNS: still success
    assert cni(h, "DEL", conf("cninet", "10.91.0.0/24"), "peerid", peer_ns)[0] == 0
    assert h.lb("check").stdout == ""
    assert veths(h) == []


def test_versions_and_errors_change_nothing(site):
    h, _ = site
    rc, out, _ = cni(h, "VERSION", {"cniVersion": "1.1.0"})
    assert rc == 0 and out == {"cniVersion": "1.1.0", "supportedVersions": [
        "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}  # fmt: skip
    ns = runtime_netns(h, "rt-bad")
    good = conf("errnet", "10.95.0.0/24")
    h.lb("network", "ls")  # (the store made, should this test run alone: state() reads it)
    before = state(h)
    cases = [
        ("ADD", good, "c1", "", "eth0", 4, "CNI_NETNS"),
        ("ADD", conf("errnet", "10.95.0.0/24", "0.2.0"), "c1", ns, "eth0", 1, "0.2.0"),
        ("ADD", "{not json", "c1", ns, "eth0", 6, "decode"),
        ("ADD", {**good, "ipam": {"type": "host-local"}}, "c1", ns, "eth0", 2, "ipam"),
        ("ADD", good, "c1", "/run/netns/nosuch", "eth0", 7, "not a network namespace"),
        ("ADD", good, "-bad", ns, "eth0", 4, "CNI_CONTAINERID"),
        ("ADD", good, "c1", ns, "a/b", 4, "CNI_IFNAME"),
        ("ADD", conf("errnet", "10.95.0.0/33"), "c1", ns, "eth0", 7, "10.95.0.0/33"),
        ("ADD", {**good, "runtimeConfig": {"portMappings": [{"hostPort": "x"}]}}, "c1", ns,
         "eth0", 7, "portMappings"),
        ("CHECK", {**good, "prevResult": {}}, "c1", ns, "eth0", 3, "c1"),
        ("NOPE", good, "c1", ns, "eth0", 4, "NOPE"),
    ]  # fmt: skip
    for command, cfg, cid, netns, ifname, code, text in cases:
        rc, out, err = cni(h, command, cfg, cid, netns, ifname)
        assert rc == 1 and out["code"] == code and text in out["msg"] + out.get("details", ""), (
            command, cfg, out, err)  # fmt: skip
        assert "Traceback" not in err
    rc, out, _ = cni(h, "ADD", good, "c1", ns, env={"CNI_ARGS": "FOO=1"})
    assert rc == 1 and out["code"] == 2 and "FOO" in out["msg"]
    assert state(h) == before
    assert cni(h, "STATUS", conf("errnet", "10.95.0.0/24", "1.1.0"))[:2] == (0, None)


def test_second_network_isolation_and_gc(site):
    h, _ = site
    a, b, c = (conf(n, s) for n, s in (("neta", "10.92.0.0/24"), ("netb", "10.93.0.0/24"),
                                       ("netc", "10.94.0.0/24")))  # fmt: skip
    multi, near, far = (runtime_netns(h, f"rt-{n}") for n in ("multi", "near", "far"))
    ips = {}
    for cfg, cid, netns, pod, ifname in ((a, "multiid", multi, "multi", "eth0"),
                                         (b, "multiid", multi, "multi", "net1"),
                                         (a, "nearid", near, "near", "eth0"),
                                         (c, "farid", far, "far", "eth0")):  # fmt: skip
        rc, res, err = cni(h, "ADD", cfg, cid, netns, ifname, pod=pod)
        assert rc == 0, (res, err)
        assert res["interfaces"][-1]["name"] == ifname
        ips[(pod, cfg["name"])] = res["ips"][0]["address"].split("/")[0]
    assert links_in(h, "rt-multi") == ["lo", "eth0", "net1"]
    multi_a = ips[("multi", "neta")]
    assert ping(h, "rt-near", multi_a)  # the control: same network
    assert not ping(h, "rt-far", multi_a)  # another lowbridge network: isolated
    assert not ping(h, "rt-far", ips[("multi", "netb")])

    # DEL of the second network leaves the first; GC removes what the runtime no longer has.
    assert cni(h, "DEL", b, "multiid", multi, "net1")[:2] == (0, None)
    assert links_in(h, "rt-multi") == ["lo", "eth0"] and ping(h, "rt-near", multi_a)
    gc = {
        **a,
        "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": "nearid", "ifname": "eth0"}],
    }
    assert cni(h, "GC", gc)[:2] == (0, None)
    assert links_in(h, "rt-multi") == ["lo"]
    assert members(h, "neta") == {"near"}
    assert "multi" not in h.lb("ps", "-a", "--format", "{{.Names}}").stdout.split()
    for cfg, cid, netns in ((a, "nearid", near), (c, "farid", far)):
        assert cni(h, "DEL", cfg, cid, netns)[0] == 0
    assert h.lb("check").stdout == "" and veths(h) == []


def test_del_after_add_killed_between_any_two_steps(site, tmp_path):
    """An ADD killed right after each of its steps (the first one also makes the network): the
    plugin says "try again later", the runtime's DEL succeeds, and nothing of it is left -- no
    sandbox, no veth, nothing in the runtime's namespace, ``check`` clean."""
    h, _ = site
    trace = tmp_path / "steps"
    ns = runtime_netns(h, "rt-crash")
    cfg = conf("crashnet", "10.96.0.0/24")
    assert cni(h, "ADD", cfg, "probe", ns, env={TRACE_ENV: str(trace)})[0] == 0
    assert cni(h, "DEL", cfg, "probe", ns)[0] == 0
    h.lb("network", "rm", "crashnet")
    steps = trace.read_text().split()
    assert any(s.startswith("network-create:") for s in steps)
    assert "container-create:create-interface" in steps
    for step in steps:
        rc, out, _ = cni(h, "ADD", cfg, "crashid", ns, env={FAIL_ENV: f"{step}:kill"})
        assert (rc, out["code"]) == (1, 11), step  # the service that did it was killed
        rc, out, err = cni(h, "DEL", cfg, "crashid", ns)
        log = h.run(["cat", "/run/lowbridge/cni.log"], check=False).stdout[-3000:]
        assert (rc, out) == (0, None), (step, out, err, log)
        assert links_in(h, "rt-crash") == ["lo"], step
        assert veths(h) == [], step
        assert "cni-crashid" not in h.lb("ps", "-a", "--format", "{{.Names}}").stdout, step
        assert h.lb("check").stdout == "", step


SERVICE = "lowbridge.plugins.cniservice --serve"


def service_pid(h: SimHost) -> str:
    return h.run(["pgrep", "-f", SERVICE], check=False).stdout.strip()


def test_one_warm_service_does_the_calls(site):
    """The executable hands each call to one lowbridge process per run directory: started by
    the first call, kept for the next ones, each call with its caller's environment (a trace
    file for one call only) and its stderr passed back; it leaves when idle."""
    h, _ = site
    h.run(["pkill", "-f", SERVICE], check=False)
    wait_for(lambda: not service_pid(h))
    idle = {"LOWBRIDGE_CNI_IDLE": "2"}
    status = conf("warmnet", "10.90.0.0/24", "1.1.0")
    assert cni(h, "VERSION", {"cniVersion": "1.0.0"}, env=idle)[0] == 0
    assert not service_pid(h)  # (the installed plugin answers VERSION itself)
    assert cni(h, "STATUS", status, env=idle)[0] == 0
    first = service_pid(h)
    assert first and len(first.split()) == 1
    ns = runtime_netns(h, "rt-warm")
    cfg = conf("warmnet", "10.90.0.0/24")
    trace = "/run/lowbridge-warm-trace"
    rc, res, _ = cni(h, "ADD", cfg, "warmid", ns, pod="warm", env={**idle, TRACE_ENV: trace})
    assert rc == 0 and res["ips"][0]["address"].startswith("10.90.0.")
    assert "container-create:create-interface" in h.run(["cat", trace]).stdout
    assert cni(h, "CHECK", {**cfg, "prevResult": res}, "warmid", ns, env=idle)[:2] == (0, None)
    assert h.run(["cat", trace]).stdout.count("container-create:journal") == 1  # (not CHECK's)
    assert service_pid(h) == first  # the same process did every call
    rc, out, err = cni(h, "ADD", cfg, "warmid", ns, "eth0", pod="warm", env=idle)
    assert rc == 1 and "exists" in out["msg"]
    assert cni(h, "DEL", cfg, "warmid", ns, env=idle)[:2] == (0, None)
    wait_for(lambda: not service_pid(h), seconds=10)  # idle for 2 s: gone
    assert h.run(["test", "-e", "/run/lowbridge/cni.sock"], check=False).returncode != 0
    assert cni(h, "STATUS", status)[0] == 0  # the next call starts another
    assert service_pid(h) not in ("", first)
    assert h.lb("check").stdout == ""


def test_plugin_cni_installs_what_answers_as_the_console_script(site, tmp_path):
    """``lowbridge plugin cni --dir --name`` writes the plugin (sh: VERSION answered without
    Python, the rest by the client); it answers as the ``lowbridge-cni`` console script does
    (VERSION whatever the configuration, STATUS, an error); a bad name or directory is refused
    in one line."""
    h, _ = site
    out = h.lb("plugin", "cni", "--dir", str(tmp_path / "cni"), "--name", "lbx").stdout
    assert out.strip() == str(tmp_path / "cni" / "lbx")
    installed = [out.strip()]
    assert pathlib.Path(installed[0]).read_text().startswith("#!/bin/sh\n")
    calls = [("VERSION", {"cniVersion": "0.4.0"}), ("VERSION", "{not json"),
             ("STATUS", conf("stnet", "10.94.0.0/24", "1.1.0")),
             ("DEL", conf("stnet", "10.94.0.0/24", "0.2.0"))]  # fmt: skip
    for command, cfg in calls:
        answers = [cni(h, command, cfg, plugin=p)[:2] for p in (installed, [CONSOLE_SCRIPT])]
        assert answers[0] == answers[1], (command, cfg, answers)
    assert answers[0][0] == 1 and answers[0][1]["code"] == 1  # (0.2.0: not supported)
    for argv, code, text in ((["--name", "a/b"], 2, "'a/b' is not a file name"),
                             (["--dir", f"{installed[0]}/sub"], 1, "Not a directory")):  # fmt: skip
        proc = h.lb("plugin", "cni", "--dir", str(tmp_path / "cni"), *argv, check=False)
        assert (proc.returncode, proc.stdout) == (code, "") and text in proc.stderr
        assert len(proc.stderr.splitlines()) == 1
    assert os.listdir(tmp_path / "cni") == ["lbx"]


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_dns_at_the_gateway_as_the_configuration_says(backend):
    """``dns: gateway``: the sandbox's resolver also answers at its network's gateway (where
    aardvark-dns answers for Podman), and the result names that address; 127.0.0.11 still
    answers; DEL takes the redirect away with the sandbox, and nothing is left."""
    with SimHost("cnidns", env={"LOWBRIDGE_FIREWALL_BACKEND": backend}) as h:
        cfg = conf("gwdns", "10.93.0.0/24", dns="gateway")
        web, cli = runtime_netns(h, "rt-web"), runtime_netns(h, "rt-cli")
        rc, res, err = cni(h, "ADD", cfg, "webid", web, pod="web")
        assert rc == 0, (res, err)
        assert res["dns"]["nameservers"] == ["10.93.0.1"]
        rc, res2, err = cni(h, "ADD", cfg, "cliid", cli, pod="cli")
        assert rc == 0, (res2, err)
        ip = res["ips"][0]["address"].split("/")[0]
        for server in ("10.93.0.1", "127.0.0.11"):
            argv = ["ip", "netns", "exec", "rt-cli", "dig", f"@{server}", "+short", "+time=2",
                    "+tries=2", "web"]  # fmt: skip
            assert h.run(argv, check=False).stdout.strip() == ip, server
            tcp = h.run([*argv, "+tcp"], check=False).stdout.strip()
            assert tcp == ip, (server, "tcp")
        # The gateway answers nothing on the host itself: the redirect is the sandbox's own.
        assert "10.93.0.1:53" not in h.run(["ss", "-Hlnu"]).stdout
        for cid, netns in (("webid", web), ("cliid", cli)):
            assert cni(h, "DEL", cfg, cid, netns)[:2] == (0, None)
        nat = h.run(["ip", "netns", "exec", "rt-cli", "sh", "-c",
                     "iptables-save -t nat; nft list ruleset"], check=False).stdout  # fmt: skip
        assert "lowbridge" not in nat
        assert h.lb("check").stdout == "" and veths(h) == []


def test_a_del_whose_service_dies_is_sent_again(site, tmp_path):
    """DEL is idempotent: when the service doing it dies (here: SIGKILL while the removal is
    paused after a step), the client sends it once more, to a new service -- which first finishes
    the removal the dead one left (the journal) -- and the runtime sees success."""
    h, _ = site
    ns = runtime_netns(h, "rt-redo")
    cfg = conf("redonet", "10.97.0.0/24")
    assert cni(h, "ADD", cfg, "redoid", ns, pod="redo")[0] == 0
    marker = "/run/lowbridge-redo-pause"
    env = {FAIL_ENV: f"container-rm:delete-interfaces:pause:{marker}"}
    argv = ["sh", "-c", f"CNI_COMMAND=DEL CNI_CONTAINERID=redoid CNI_NETNS={ns} CNI_IFNAME=eth0 "
            f"{shlex.join(PLUGIN)}"]  # fmt: skip
    proc = h.popen(argv, env={**os.environ, **h.env, **env}, stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, text=True)  # fmt: skip
    proc.stdin.write(json.dumps(cfg))
    proc.stdin.close()
    wait_for(lambda: h.run(["test", "-e", marker], check=False).returncode == 0, seconds=30)
    first = service_pid(h)
    h.run(["kill", "-KILL", first])  # (that one: a pattern could also take the next one)
    # The same environment goes with the call again: its pause (the settling of the dead one's
    # removal may pass the step too) is let go each time it comes.
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        h.run(["rm", "-f", marker])
        time.sleep(0.05)
    out = proc.stdout.read()
    log = h.run(["cat", "/run/lowbridge/cni.log"], check=False).stdout[-3000:]
    assert (proc.wait(timeout=5), out) == (0, ""), (out, first, log)
    assert service_pid(h) not in ("", first)  # a new one did it
    assert links_in(h, "rt-redo") == ["lo"] and veths(h) == []
    assert "redo" not in h.lb("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert h.lb("check").stdout == ""
