"""A real dockerd (Debian's docker.io 20.10) uses ``lowbridge plugin docker`` as its remote
network driver, in a simulated host (lowbridge.simdocker): ``docker network create -d
lowbridge``, ``docker run --network``, ``network connect``/``disconnect``, ``stop``/``start`` and
``rm``, proven with real packets -- by name through Docker's own resolver, a published port
from a LAN peer, isolation between two such networks -- and with lowbridge's records and
``check`` after each."""

from __future__ import annotations

import json
import sys

import pytest

from lowbridge import simdocker
from lowbridge.simdocker import IMAGE, Docker
from lowbridge.simhost import SimHost
from tests.integration.conftest import UPLINK, lb_json, members, on_a_lan, wait_for
from tests.integration.test_cni import veths
from tests.integration.test_podman import http

pytestmark = pytest.mark.skipif(
    bool(simdocker.missing()),
    reason=f"needs the Debian packages {', '.join(simdocker.missing())} (apt-get install them)",
)
WEB = "echo hello-web > /index.html && exec httpd -f -p 80 -h /"


@pytest.fixture(scope="module")
def dk():
    with on_a_lan("docker") as (h, lan):
        docker = Docker(h)
        try:
            yield docker, lan
        finally:
            docker.close()


def lb_network(h: SimHost, docker_id: str) -> dict:
    """The lowbridge network behind Docker's network ``docker_id``."""
    (doc,) = lb_json(h, "network", "inspect", f"docker-{docker_id[:12]}")
    return doc


def ping(d: Docker, network: str, target: str) -> bool:
    argv = ["run", "--rm", "--network", network, IMAGE, "ping", "-c1", "-W2", target]
    return d.run(*argv, check=False).returncode == 0


def test_docker_runs_containers_on_lowbridge_networks(dk):
    d, lan = dk
    h = d.host
    nid = d.run("network", "create", "-d", "lowbridge", "--subnet", "10.99.0.0/24",
                "dnet").stdout.strip()  # fmt: skip
    net = lb_network(h, nid)
    assert net["IPAM"]["Config"][0]["Subnet"] == "10.99.0.0/24"
    assert net["Labels"] == {"io.lowbridge.docker.network-id": nid}

    d.run("run", "-d", "--name", "web", "--network", "dnet", "-p", "8080:80", IMAGE,
          "sh", "-c", WEB)  # fmt: skip
    info = json.loads(d.run("inspect", "web").stdout)[0]
    ns = info["NetworkSettings"]["Networks"]["dnet"]
    assert (ns["IPAddress"], ns["Gateway"]) == ("10.99.0.2", "10.99.0.1")
    # lowbridge has the sandbox, its address and its port; dockerd has its interface.
    (name,) = members(h, lb_network(h, nid)["Name"])
    (ctr,) = lb_json(h, "inspect", name)
    assert ctr["NetworkSettings"]["Networks"][lb_network(h, nid)["Name"]]["IPAddress"] == (
        "10.99.0.2")  # fmt: skip
    assert "0.0.0.0:8080->80/tcp" in h.lb("ps").stdout
    assert "10.99.0.2/24" in d.run("exec", "web", "ip", "-o", "addr", "show", "eth0").stdout
    assert ns["MacAddress"] in d.run("exec", "web", "ip", "link", "show", "eth0").stdout

    # By name through Docker's resolver, a published port from the LAN, and isolation.
    assert ping(d, "dnet", "web")
    assert http(lan, f"http://{UPLINK}:8080/index.html") == "hello-web"
    d.run("network", "create", "-d", "lowbridge", "--subnet", "10.100.0.0/24", "dnet2")
    assert not ping(d, "dnet2", "10.99.0.2")
    assert ping(d, "dnet", "10.99.0.2")  # the control, from the same network

    # A second network, and back; stop and start (Leave and Join again).
    d.run("network", "connect", "dnet2", "web")
    assert "10.100.0." in d.run("exec", "web", "ip", "-o", "addr", "show", "eth1").stdout
    assert ping(d, "dnet2", "web")
    d.run("network", "disconnect", "dnet2", "web")
    assert d.run("exec", "web", "ip", "link", "show", "eth1", check=False).returncode != 0
    d.run("stop", "-t", "0", "web")
    assert members(h, lb_network(h, nid)["Name"]) == set()
    assert http(lan, f"http://{UPLINK}:8080/index.html", timeout=2) is None
    d.run("start", "web")
    assert ping(d, "dnet", "web")
    assert http(lan, f"http://{UPLINK}:8080/index.html") == "hello-web"

    # docker rm, network rm: nothing of lowbridge's left.
    d.run("rm", "-f", "web")
    assert h.lb("ps", "-a", "--format", "{{.Names}}").stdout.split() == []
    assert veths(h) == [] and "lbd" not in h.run(["ip", "-br", "link"]).stdout
    assert h.lb("check").stdout == ""
    d.run("network", "rm", "dnet", "dnet2")
    assert [n for n in h.lb("network", "ls", "--format", "{{.Name}}").stdout.split()
            if n.startswith("docker-")] == []  # fmt: skip


def test_bad_calls_get_the_protocols_answers(dk):
    d, _ = dk
    # Docker's own IPAM gives every network a subnet; a driver option lowbridge refuses is
    # refused in one line, and nothing is made.
    bad = d.run("network", "create", "-d", "lowbridge", "-o",
                "com.docker.network.bridge.enable_icc=maybe", "badnet", check=False)  # fmt: skip
    assert bad.returncode != 0 and "enable_icc" in bad.stderr
    six = d.run("network", "create", "-d", "lowbridge", "--ipv6", "--subnet", "fd00:99::/64",
                "sixnet", check=False)  # fmt: skip
    assert six.returncode != 0 and "IPv4 only" in six.stderr
    names = d.run("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert "badnet" not in names and "sixnet" not in names
    assert [n for n in d.host.lb("network", "ls", "--format", "{{.Name}}").stdout.split()
            if n.startswith("docker-")] == []  # fmt: skip


def test_the_socket_is_the_drivers_name(dk):
    """``--socket``: dockerd knows a driver by its socket's name -- a second one serves as
    ``lbalt`` (with the same engine and records)."""
    d, _ = dk
    h = d.host
    sock = "/run/docker/plugins/lbalt.sock"
    server = h.popen([sys.executable, "-m", "lowbridge", "plugin", "docker", "--socket", sock],
                     env=d.env)  # fmt: skip
    try:
        wait_for(lambda: h.run(["test", "-S", sock], check=False).returncode == 0)
        nid = d.run("network", "create", "-d", "lbalt", "--subnet", "10.101.0.0/24",
                    "altnet").stdout.strip()  # fmt: skip
        assert lb_network(h, nid)["IPAM"]["Config"][0]["Subnet"] == "10.101.0.0/24"
        d.run("network", "rm", "altnet")
    finally:
        h.run(["pkill", "-f", "lbalt.sock"], check=False)
        server.wait(timeout=20)
    assert h.run(["test", "-e", sock], check=False).returncode != 0  # removed at the end


def test_the_driver_keeps_its_endpoints_across_its_restart(dk):
    """The endpoints dockerd made through the driver are in a file of the state directory, not
    in the process: a driver restarted between ``docker run`` and ``docker rm`` still takes
    the sandbox down (Leave, DeleteEndpoint) and leaves nothing."""
    d, _ = dk
    h = d.host
    nid = d.run("network", "create", "-d", "lowbridge", "--subnet", "10.102.0.0/24",
                "rnet").stdout.strip()  # fmt: skip
    d.run("run", "-d", "--name", "keep", "--network", "rnet", IMAGE, "sleep", "3600")
    assert len(members(h, lb_network(h, nid)["Name"])) == 1
    sock = "/run/docker/plugins/lowbridge.sock"
    h.run(["pkill", "-TERM", "-f", "lowbridge plugin docker$"])  # (not --socket's: its own)
    wait_for(lambda: h.run(["test", "-e", sock], check=False).returncode != 0)
    h.popen([sys.executable, "-m", "lowbridge", "plugin", "docker"], env=d.env)
    wait_for(lambda: h.run(["test", "-S", sock], check=False).returncode == 0)
    assert ping(d, "rnet", "keep")  # a Join through the new process, beside the old endpoint
    d.run("rm", "-f", "keep")
    assert members(h, lb_network(h, nid)["Name"]) == set()
    assert h.lb("check").stdout == "" and veths(h) == []
    d.run("network", "rm", "rnet")
