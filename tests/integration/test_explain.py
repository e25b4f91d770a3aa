"""``explain A B`` against real traffic: for each case of the isolation matrix, its verdict (exit
0: reaches, 1: does not) must be what a real ping or TCP connection finds, on both backends.

One simulated host per backend holds every case: networks n1 (a serves TCP 80, published on
8080 and on 127.0.0.1:8081; b), n2 (c), internal inner (i1 serves 80; i2), icc=false noicc (x1
serves 80; x2), and d on the default bridge; a LAN namespace behind the uplink serves TCP 7000
and has routes to the sandboxes' subnets (so that direct access is tried for real).
"""

from __future__ import annotations

import time

import pytest

from lowbridge.simhost import SimHost
from tests.integration.conftest import ip_of, on_a_lan, ping

UPLINK, LAN_IP = "192.168.78.2", "192.168.78.1"
SERVE = ["--", "socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo hi"]


class Matrix:
    def __init__(self, host: SimHost, lan: SimHost):
        self.host, self.lan = host, lan


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def matrix(request):
    env = {"LOWBRIDGE_FIREWALL_BACKEND": request.param}
    with on_a_lan("explain", "exlan", UPLINK, LAN_IP, env=env) as (h, lan):
        lan.run(["ip", "route", "add", "172.16.0.0/12", "via", UPLINK])
        lan.popen(["socat", "TCP-LISTEN:7000,fork,reuseaddr", "SYSTEM:echo lan"])
        h.lb("network", "create", "n1")
        h.lb("network", "create", "n2")
        h.lb("network", "create", "--internal", "inner")
        h.lb("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "noicc")
        h.lb("run", "-d", "--name", "a", "--network", "n1", "-p", "8080:80",
             "-p", "127.0.0.1:8081:80", *SERVE)  # fmt: skip
        h.lb("run", "-d", "--name", "i1", "--network", "inner", *SERVE)
        h.lb("run", "-d", "--name", "x1", "--network", "noicc", *SERVE)
        for name, net in (("b", "n1"), ("c", "n2"), ("i2", "inner"), ("x2", "noicc"),
                          ("d", "bridge")):  # fmt: skip
            h.lb("container", "create", "--name", name, "--network", net)
        # Every server up before any case (the host reaches each sandbox's address).
        servers = [f"{ip_of(h, n, net)}:80" for n, net in (("a", "n1"), ("i1", "inner"),
                                                           ("x1", "noicc"))]  # fmt: skip
        deadline = time.monotonic() + 15
        while not all(_tcp(h, None, s) for s in servers) and time.monotonic() < deadline:
            time.sleep(0.1)
        yield Matrix(h, lan)


def _tcp(h: SimHost, ns: str | None, target: str) -> bool:
    argv = ["socat", "-T1", "-", f"TCP:{target},connect-timeout=1"]
    proc = h.run(["ip", "netns", "exec", ns, *argv] if ns else argv, check=False, input="",
                 timeout=20)  # fmt: skip
    return bool(proc.stdout.strip())


# (A, B, port or None): A is a sandbox, "host" or "lan"; B a sandbox name, an address, "host",
# or "@a" for a's address on n1 (and so on).
CASES = [
    ("b", "a", None),
    ("b", "a", 80),
    ("b", "@a", 80),  # same network
    ("c", "a", None),
    ("c", "@a", None),
    ("c", "@a", 80),
    ("b", "@c", None),  # across
    ("i2", "i1", 80),
    ("i2", "lan", None),
    ("i1", "@a", None),  # internal
    ("x2", "x1", 80),
    ("x2", "@x1", None),
    ("x2", "lan", 7000),  # icc=false
    ("lan", "host", 8080),
    ("lan", "host", 8081),
    ("lan", "@a", 80),
    ("lan", "@a", None),
    ("host", "127.0.0.1", 8080),
    ("host", "127.0.0.1", 8081),
    ("host", "@a", 80),  # ports
    ("b", "host", 8080),
    ("c", "host", 8080),  # another sandbox through a published port
    ("b", "lan", 7000),
    ("b", "lan", None),
    ("d", "lan", 7000),
    ("d", "@a", None),  # outbound
    ("d", "a", None),  # no name on the default bridge
]


def _where(m: Matrix, ref: str) -> str:
    if ref == "lan":
        return LAN_IP
    if ref.startswith("@"):
        name = ref[1:]
        net = {"a": "n1", "c": "n2", "x1": "noicc", "i1": "inner"}[name]
        return ip_of(m.host, name, net)
    return ref


def _really(m: Matrix, a: str, b: str, port: int | None) -> bool:
    """What real traffic finds."""
    h = m.host
    target = UPLINK if (b == "host" and a == "lan") else _where(m, b)
    if b == "host" and a != "lan":
        target = {"host": "127.0.0.1"}.get(a) or _gateway(m, a)
    if a == "lan":
        if port:
            return _tcp(m.lan, None, f"{target}:{port}")
        return m.lan.run(["ping", "-n", "-c1", "-w2", target], check=False).returncode == 0
    ns = None if a == "host" else a
    if port:
        return _tcp(h, ns, f"{target}:{port}")
    if ns is None:
        return h.run(["ping", "-n", "-c1", "-w2", target], check=False).returncode == 0
    return ping(h, ns, target)


def _gateway(m: Matrix, sandbox: str) -> str:
    route = m.host.run(["ip", "-n", sandbox, "route", "show", "default"]).stdout.split()
    return route[2]


@pytest.mark.parametrize(("a", "b", "port"), CASES, ids=[f"{a}-{b}-{p}" for a, b, p in CASES])
def test_explain_agrees_with_real_traffic(matrix, a, b, port):
    source = LAN_IP if a == "lan" else a
    target = _where(matrix, b) if b != "host" else "host"
    argv = ["explain", source, target] + (["--port", str(port)] if port else [])
    proc = matrix.host.lb(*argv, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    said = proc.returncode == 0
    assert said == _really(matrix, a, b, port), proc.stdout
    # Every verdict names its reason: a rule, a route, or the DNS answer.
    assert proc.stdout.strip().splitlines()[-1].startswith(f"=> {source} ")
