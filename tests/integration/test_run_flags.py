"""The flags of ``run`` and ``container create`` that labs need (issue 19, point 4), on one
simulated host, each proven by what the kernel then holds and by packets: ``--network
container:NAME`` shares the other sandbox's namespace (its loopback, its addresses, its host
name), ``--mac-address`` is the MAC neighbours learn, ``-P`` publishes the exposed ports on
free host ports, ``--sysctl`` sets the namespace's own settings, ``--env-file``,
``--domainname``, and ``--link NAME:ALIAS`` with ``_`` in the alias."""

from __future__ import annotations

import os
import tempfile

import pytest

from lowbridge.simhost import SimHost
from tests.integration.conftest import ip_of, lb_json, ping
from tests.integration.test_lifecycle import SERVE, state, tcp, wait_for


@pytest.fixture(scope="module")
def h():
    with SimHost("flags") as host:
        host.lb("network", "create", "--subnet", "10.71.0.0/24", "n1")
        host.lb("run", "-d", "--name", "web", "--network", "n1", "--hostname", "webhost", *SERVE)
        host.lb("container", "create", "--name", "cli", "--network", "n1")
        yield host


def sandboxes(h: SimHost) -> list[str]:
    return sorted(h.lb("ps", "-a", "--format", "{{.Names}}").stdout.split())


def refused(h: SimHost, *argv: str) -> str:
    """Run a lowbridge command that must fail, changing nothing; its one-line error."""
    before = (sandboxes(h), h.run(["ip", "netns", "list"]).stdout)
    proc = h.lb(*argv, check=False)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    assert (sandboxes(h), h.run(["ip", "netns", "list"]).stdout) == before
    return proc.stderr


def sh(h: SimHost, sandbox: str, script: str, check: bool = True) -> str:
    return h.lb("exec", sandbox, "sh", "-c", script, check=check).stdout.strip()


def test_container_mode_shares_the_other_sandboxs_namespace(h):
    web = lb_json(h, "inspect", "web")[0]
    h.lb("run", "-d", "--name", "side", "--network", "container:web", "--", "sleep", "infinity")
    # Its loopback is web's: web's server answers on 127.0.0.1 inside the side sandbox.
    # (until web's server listens again: socat's refused connection is a probe's "not yet")
    wait_for(lambda: sh(h, "side", "socat -T2 - TCP:127.0.0.1:80 </dev/null", False) == "web")
    addrs = sh(h, "side", "ip -o -4 addr show eth0")
    assert f"inet {ip_of(h, 'web', 'n1')}/24" in addrs
    assert sh(h, "side", "hostname") == "webhost"
    assert sh(h, "side", "cat /etc/hosts") == sh(h, "web", "cat /etc/hosts")
    doc = lb_json(h, "inspect", "side")[0]
    assert doc["HostConfig"]["NetworkMode"] == f"container:{web['Id']}"
    assert doc["NetworkSettings"]["SandboxKey"] == "" and doc["NetworkSettings"]["Networks"] == {}
    assert doc["HostsPath"] == web["HostsPath"]
    assert "side" not in h.run(["ip", "netns", "list"]).stdout  # no namespace of its own
    assert h.lb("check").returncode == 0

    for flags in (["-p", "81:80"], ["--ip", "10.71.0.9"], ["--hostname", "x"], ["--dns", "1.1.1.1"],
                  ["--mac-address", "02:00:00:00:00:01"], ["--expose", "80"]):  # fmt: skip
        assert "conflicting options" in refused(h, "run", "-d", "--network", "container:web",
                                                *flags, "--", "true")  # fmt: skip
    assert "No such container: nosuch" in refused(h, "run", "--network", "container:nosuch",
                                                  "--", "true")  # fmt: skip
    assert "cannot be connected" in refused(h, "network", "connect", "n1", "side")

    # web stops: the namespace goes, and with it what ran in it.
    h.lb("stop", "-t", "1", "web")
    wait_for(lambda: state(h, "side")["Status"] == "exited")
    assert "non running container" in refused(h, "start", "side")
    h.lb("start", "web", "side")
    # (until web's server listens again: socat's refused connection is a probe's "not yet")
    wait_for(lambda: sh(h, "side", "socat -T2 - TCP:127.0.0.1:80 </dev/null", False) == "web")
    h.lb("rm", "-f", "side")
    assert h.lb("check").returncode == 0
    assert "web" in h.run(["ip", "netns", "list"]).stdout


def test_mac_address_is_what_neighbours_learn(h):
    mac = "02:42:0a:47:00:99"
    bad = refused(h, "container", "create", "--network", "n1", "--mac-address", "02:42:zz:0:0:1")
    assert "is not a valid mac address" in bad
    h.lb("container", "create", "--name", "mac", "--network", "n1", "--mac-address", mac.upper())
    link = h.run(["ip", "-j", "-n", "mac", "link", "show", "eth0"]).stdout
    assert f'"address":"{mac}"' in link
    address = ip_of(h, "mac", "n1")
    assert ping(h, "cli", address)
    assert f"lladdr {mac}" in h.run(["ip", "-n", "cli", "neigh", "show", address]).stdout
    assert lb_json(h, "inspect", "mac")[0]["Config"]["MacAddress"] == mac
    h.lb("rm", "mac")


def test_publish_all_puts_exposed_ports_on_free_host_ports(h):
    h.lb("run", "-d", "--name", "pub", "--network", "n1", "--expose", "80", "--expose", "81",
         "-p", "8081:81", "-P", *SERVE)  # fmt: skip
    lines = dict(
        line.split(" -> ") for line in h.lb("port", "pub").stdout.splitlines()
    )  # e.g. {"80/tcp": "0.0.0.0:49153", "81/tcp": "0.0.0.0:8081"}
    assert lines["81/tcp"] == "0.0.0.0:8081"
    host_port = int(lines["80/tcp"].rsplit(":", 1)[1])
    assert host_port not in (80, 8081)
    wait_for(lambda: tcp(h, None, "127.0.0.1", host_port) == "web")
    doc = lb_json(h, "inspect", "pub")[0]
    assert doc["HostConfig"]["PublishAllPorts"] is True
    assert doc["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"] == str(host_port)
    h.lb("rm", "-f", "pub")
    assert tcp(h, None, "127.0.0.1", host_port) is None


def test_sysctls_are_the_namespaces_own(h):
    h.lb("container", "create", "--name", "sys", "--network", "n1", "--sysctl",
         "net.ipv4.ip_forward=1", "--sysctl", "net.ipv4.conf.eth0.rp_filter=2")  # fmt: skip
    assert sh(h, "sys", "cat /proc/sys/net/ipv4/ip_forward") == "1"
    assert sh(h, "sys", "cat /proc/sys/net/ipv4/conf/eth0/rp_filter") == "2"
    assert sh(h, "cli", "cat /proc/sys/net/ipv4/ip_forward") == "0"  # its neighbour's untouched
    assert lb_json(h, "inspect", "sys")[0]["HostConfig"]["Sysctls"] == {
        "net.ipv4.ip_forward": "1", "net.ipv4.conf.eth0.rp_filter": "2"}  # fmt: skip
    assert "is not allowed" in refused(h, "container", "create", "--sysctl", "kernel.shmmax=1")
    # A key the namespace lacks fails at apply time: the undo stack takes everything back.
    assert "set sysctl net.ipv4.nosuch=1" in refused(h, "container", "create", "--name", "bad",
                                                    "--network", "n1", "--sysctl",
                                                    "net.ipv4.nosuch=1")  # fmt: skip
    h.lb("rm", "sys")


def test_env_file_domainname_and_link_aliases(h):
    with tempfile.NamedTemporaryFile("w", suffix=".env", delete=False) as f:
        f.write("# a comment\nA=from file\nB=file\n\nPATHLESS\n")
    try:
        h.env["PATHLESS"] = "inherited"
        out = h.lb("run", "--rm", "--network", "n1", "--env-file", f.name, "-e", "B=flag", "--",
                   "sh", "-c", 'echo "$A|$B|$PATHLESS"').stdout  # fmt: skip
        assert out.strip() == "from file|flag|inherited"
        assert "open /nonexistent.env" in refused(h, "run", "--env-file", "/nonexistent.env",
                                                  "--", "true")  # fmt: skip
    finally:
        os.unlink(f.name)
        del h.env["PATHLESS"]

    h.lb("container", "create", "--name", "dom", "--network", "n1", "--hostname", "box",
         "--domainname", "example.org", "--link", "web:web_alias")  # fmt: skip
    assert sh(h, "dom", "cat /proc/sys/kernel/domainname") == "example.org"
    assert sh(h, "dom", "hostname") == "box"
    assert "box.example.org box" in sh(h, "dom", "cat /etc/hosts")
    assert lb_json(h, "inspect", "dom")[0]["Config"]["Domainname"] == "example.org"
    # The alias with an underscore resolves (the embedded resolver on a user network) to web.
    got = sh(h, "dom", "getent hosts web_alias").split()
    assert got and got[0] == ip_of(h, "web", "n1") and ping(h, "dom", "web_alias")
    h.lb("rm", "dom")


def test_network_options_docker_has_are_honoured_or_refused(h):
    h.lb("network", "create", "--subnet", "10.78.0.0/24", "-o",
         "com.docker.network.bridge.host_binding_ipv4=127.0.0.1", "-o",
         "com.docker.network.container_iface_prefix=lan", "local")  # fmt: skip
    h.lb("run", "-d", "--name", "lweb", "--network", "local", "-p", "8095:80", *SERVE)
    h.lb("network", "connect", "n1", "lweb")
    # -p without an address binds the network's host_binding_ipv4: 127.0.0.1, not every address.
    assert h.lb("port", "lweb", "80").stdout.split() == ["127.0.0.1:8095"]
    wait_for(lambda: tcp(h, None, "127.0.0.1", 8095) == "web")
    assert tcp(h, None, "10.78.0.1", 8095) is None
    # Its interfaces take the network's prefix; another network's keep eth.
    names = {link.split(":")[1].strip().split("@")[0]
             for link in h.run(["ip", "-n", "lweb", "-o", "link"]).stdout.splitlines()}  # fmt: skip
    assert {"lan0", "eth0"} <= names, names
    assert lb_json(h, "network", "inspect", "local")[0]["Options"][
        "com.docker.network.container_iface_prefix"] == "lan"  # fmt: skip
    h.lb("rm", "-f", "lweb")
    h.lb("network", "rm", "local")

    for argv, error in (
        (["-o", "com.docker.network.bridge.host_binding_ipv4=nope"], "not an IP address"),
        (["-o", "com.docker.network.container_iface_prefix=a/b"], "container_iface_prefix"),
        (["-o", "com.docker.network.bridge.inhibit_ipv4=true"], "not supported by lowbridge"),
        (["-d", "overlay"], "need the cluster store"),
    ):
        proc = h.lb("network", "create", *argv, "refused", check=False)
        assert proc.returncode == 2 and error in proc.stderr and proc.stderr.count("\n") == 1, (
            proc.stderr)  # fmt: skip
    assert "refused" not in h.lb("network", "ls").stdout
