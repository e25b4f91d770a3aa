"""The bridge driver and sandboxes, proven with packets inside simulated hosts."""

from __future__ import annotations

import json

from tests.integration.conftest import ip_of, lb_json, ping, state


def test_user_network_sandboxes_ping_each_other(host):
    host.lb("network", "create", "alpine-net")
    host.lb("container", "create", "--name", "a1", "--network", "alpine-net")
    host.lb("container", "create", "--name", "a2", "--network", "alpine-net")
    a1, a2 = ip_of(host, "a1", "alpine-net"), ip_of(host, "a2", "alpine-net")
    assert (a1, a2) == ("172.18.0.2", "172.18.0.3")  # first user network after the default one
    assert ping(host, "a1", a2) and ping(host, "a2", a1)
    assert ping(host, "a1", "172.18.0.1")  # the gateway on the bridge
    route = host.run(["ip", "-n", "a1", "-j", "route", "show", "default"]).stdout
    assert json.loads(route)[0]["gateway"] == "172.18.0.1"


def test_default_bridge_sandboxes_ping_each_other(host):
    host.lb("container", "create", "--name", "d1")
    host.lb("container", "create", "--name", "d2")
    assert ip_of(host, "d1", "bridge") == "172.17.0.2"
    assert ping(host, "d1", ip_of(host, "d2", "bridge"))
    bridge = json.loads(host.run(["ip", "-j", "-d", "link", "show", "lowbridge0"]).stdout)[0]
    assert bridge["linkinfo"]["info_kind"] == "bridge"
    assert bridge["ifalias"].startswith("lowbridge:")
    ports = json.loads(host.run(["ip", "-j", "link", "show", "master", "lowbridge0"]).stdout)
    assert len(ports) == 2 and all(p["ifname"].startswith("lbv") for p in ports)


def test_user_bridge_device_and_settings(host):
    net_id = host.lb(
        "network",
        "create",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "--label",
        "env=lab",
        "mtunet",
    ).stdout.strip()
    device = "lb-" + net_id[:12]
    link = json.loads(host.run(["ip", "-j", "-d", "link", "show", device]).stdout)[0]
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    addrs = json.loads(host.run(["ip", "-j", "addr", "show", device]).stdout)[0]["addr_info"]
    assert {"local": "172.18.0.1", "prefixlen": 16} in [
        {"local": a["local"], "prefixlen": a["prefixlen"]} for a in addrs
    ]
    assert host.run(["cat", f"/proc/sys/net/ipv6/conf/{device}/accept_ra"]).stdout.strip() == "0"
    host.lb("container", "create", "--name", "m", "--network", "mtunet")
    eth0 = json.loads(host.run(["ip", "-n", "m", "-j", "link", "show", "eth0"]).stdout)[0]
    assert eth0["mtu"] == 1400 and eth0["address"] == "02:42:ac:12:00:02"
    # IPv4-only: no IPv6 at all on eth0, not even link-local (Docker's setIPv6).
    v6 = host.run(["ip", "-n", "m", "-6", "addr", "show", "eth0"]).stdout
    assert v6.strip() == ""
    doc = lb_json(host, "network", "inspect", "mtunet")[0]
    assert doc["Labels"] == {"env": "lab"}
    assert doc["Options"] == {"com.docker.network.driver.mtu": "1400"}
    assert doc["Containers"][lb_json(host, "inspect", "m")[0]["Id"]]["Name"] == "m"


def test_existing_bridge_is_used_and_kept(host):
    host.run(["ip", "link", "add", "br-mine", "type", "bridge"])
    host.lb("network", "create", "-o", "com.docker.network.bridge.name=br-mine", "--subnet",
            "10.78.0.0/24", "mine")  # fmt: skip
    host.lb("container", "create", "--name", "m1", "--network", "mine")
    assert ping(host, "m1", "10.78.0.1")
    host.lb("rm", "m1")
    host.lb("network", "rm", "mine")
    link = json.loads(host.run(["ip", "-j", "addr", "show", "br-mine"]).stdout)[0]
    assert [a["local"] for a in link["addr_info"] if a["family"] == "inet"] == []


def test_named_bridge_option(host):
    host.lb(
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=br-lab",
        "--subnet",
        "10.77.0.0/24",
        "named",
    )
    host.lb("container", "create", "--name", "n1", "--network", "named", "--ip", "10.77.0.50")
    assert ip_of(host, "n1", "named") == "10.77.0.50"
    assert ping(host, "n1", "10.77.0.1")
    host.lb("rm", "n1")
    host.lb("network", "rm", "named")
    assert host.run(["ip", "link", "show", "br-lab"], check=False).returncode != 0


def test_two_networks_eth0_eth1_disconnect_and_reconnect(host):
    host.lb("network", "create", "--subnet", "10.10.0.0/24", "net-a")
    host.lb("network", "create", "--subnet", "10.20.0.0/24", "net-b")
    host.lb("container", "create", "--name", "peer-a", "--network", "net-a")
    host.lb("container", "create", "--name", "peer-b", "--network", "net-b")
    host.lb("container", "create", "--name", "multi", "--network", "net-a")
    host.lb("network", "connect", "net-b", "multi")

    def addrs():
        raw = json.loads(host.run(["ip", "-n", "multi", "-j", "-4", "addr"]).stdout)
        return {i["ifname"]: [a["local"] for a in i["addr_info"]] for i in raw}

    assert addrs() == {"lo": ["127.0.0.1"], "eth0": ["10.10.0.3"], "eth1": ["10.20.0.3"]}
    assert ping(host, "multi", "10.10.0.2") and ping(host, "multi", "10.20.0.2")

    host.lb("network", "disconnect", "net-a", "multi")
    assert addrs() == {"lo": ["127.0.0.1"], "eth1": ["10.20.0.3"]}
    assert ping(host, "multi", "10.20.0.2")
    assert not ping(host, "multi", "10.10.0.2")
    assert "multi" not in json.dumps(lb_json(host, "network", "inspect", "net-a"))
    # The default route moved to the remaining network.
    route = json.loads(host.run(["ip", "-n", "multi", "-j", "route", "show", "default"]).stdout)
    assert route[0]["gateway"] == "10.20.0.1" and route[0]["dev"] == "eth1"

    host.lb("network", "connect", "net-a", "multi")
    assert addrs() == {"lo": ["127.0.0.1"], "eth0": ["10.10.0.3"], "eth1": ["10.20.0.3"]}
    assert ping(host, "multi", "10.10.0.2")
    # Docker's rule: the gateway endpoint is the first network by name (net-a < net-b).
    route = json.loads(host.run(["ip", "-n", "multi", "-j", "route", "show", "default"]).stdout)
    assert route[0]["gateway"] == "10.10.0.1" and route[0]["dev"] == "eth0"


def test_internal_network_has_no_default_route(host):
    host.lb("network", "create", "--internal", "--subnet", "10.30.0.0/24", "inner")
    host.lb("container", "create", "--name", "i1", "--network", "inner")
    host.lb("container", "create", "--name", "i2", "--network", "inner")
    assert ping(host, "i1", ip_of(host, "i2", "inner"))
    assert host.run(["ip", "-n", "i1", "route", "show", "default"]).stdout.strip() == ""
    assert lb_json(host, "network", "inspect", "inner")[0]["Internal"] is True


def test_rm_leaves_no_device_veth_namespace_or_lease(host):
    host.lb("network", "create", "--subnet", "10.40.0.0/24", "tmp")
    # The default bridge's device appears with its first sandbox and stays, like docker0.
    host.lb("container", "create", "--name", "warm")
    host.lb("rm", "warm")
    before = state(host)
    host.lb("container", "create", "--name", "c1", "--network", "tmp")
    host.lb("network", "connect", "bridge", "c1")
    assert ip_of(host, "c1", "tmp") == "10.40.0.2"
    host.lb("container", "rm", "c1")
    assert state(host) == before  # no veth, no namespace, no endpoint, no /etc/netns entry
    # The lease is gone: the next sandbox gets the same lowest address.
    host.lb("container", "create", "--name", "c2", "--network", "tmp")
    assert ip_of(host, "c2", "tmp") == "10.40.0.2"
    host.lb("rm", "c2")
    net_id = lb_json(host, "network", "inspect", "tmp")[0]["Id"]
    host.lb("network", "rm", "tmp")
    links = host.run(["ip", "-br", "link"]).stdout
    assert "lb-" + net_id[:12] not in links and "lbv" not in links


def test_rm_of_several_sandboxes_is_one_batch_and_reports_each_failure(host):
    host.lb("network", "create", "--subnet", "10.41.0.0/24", "many")
    for name in ("a", "b", "c", "keep"):
        host.lb("container", "create", "--name", name, "--network", "many")
    host.lb("network", "connect", "bridge", "a")  # a has two host ends
    host.lb("run", "-d", "--name", "busy", "--network", "many", "--", "sleep", "600")
    keep, busy = ip_of(host, "keep", "many"), ip_of(host, "busy", "many")
    bridge = "lb-" + lb_json(host, "network", "inspect", "many")[0]["Id"][:12]

    proc = host.lb("rm", "a", "b", "nosuch", "busy", "c", check=False)
    assert proc.returncode != 0
    assert proc.stdout.split() == ["a", "b", "c"]
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2
    assert "remove container nosuch" in errors[0] and "No such container" in errors[0]
    assert "remove container busy" in errors[1] and "it is running" in errors[1]

    # Only the survivors' host ends are left (on both bridges), none carries the "about to be
    # deleted" group, and the survivors still talk.
    links = json.loads(host.run(["ip", "-j", "-d", "link", "show"]).stdout)
    assert [ln.get("master") for ln in links if ln["ifname"].startswith("lbv")] == [bridge] * 2
    assert all(ln.get("group") in (None, "default") for ln in links)
    assert host.run(["ls", "/run/netns"]).stdout.split() == ["busy", "keep"]
    assert ping(host, "keep", busy)
    # Their leases went with them: the next sandbox gets a's old address.
    host.lb("container", "create", "--name", "again", "--network", "many")
    assert ip_of(host, "again", "many") == "10.41.0.2" and keep == "10.41.0.5"
    host.lb("rm", "-f", "busy", "keep", "again")
    assert "lbv" not in host.run(["ip", "-br", "link"]).stdout


def test_network_rm_refuses_while_endpoints_remain_and_prune(host):
    host.lb("network", "create", "busy")
    host.lb("network", "create", "idle")
    host.lb("container", "create", "--name", "b1", "--network", "busy")
    proc = host.lb("network", "rm", "busy", check=False)
    assert proc.returncode != 0 and "active endpoints" in proc.stderr
    pruned = host.lb("network", "prune", "-f").stdout
    assert "idle" in pruned and "busy" not in pruned
    names = host.lb("network", "ls").stdout
    assert "busy" in names and "idle" not in names
    for predefined in ("bridge", "host", "none"):
        assert predefined in names
        assert host.lb("network", "rm", predefined, check=False).returncode != 0


BATCH = r"""
import json, sys
from lowbridge.controller import ContainerRequest, Controller
from lowbridge.errors import LowbridgeError

reqs = [ContainerRequest(name=n, network=net, ip=(ip or [None])[0])
        for n, net, *ip in json.loads(sys.argv[1])]  # [name, network(, ip)]
try:
    print(json.dumps([c.name for c in Controller().container_create_many(reqs)]))
except LowbridgeError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _batch(host, reqs: list[list[str]], **env: str):
    import os
    import sys

    out = host.run([sys.executable, "-c", BATCH, json.dumps(reqs)],
                   env={**os.environ, **host.env, **env})  # fmt: skip
    return json.loads(out.stdout)


def test_a_batch_of_sandboxes_is_one_change_all_or_none(host):
    from tests.integration.test_dns import dig

    host.lb("network", "create", "--subnet", "10.42.0.0/24", "lab")
    host.lb("container", "create", "--name", "warm", "--network", "lab")  # the resolver runs
    before = state(host)
    # A bad request anywhere, a name twice, a failure at the last step: nothing is left.
    bad = _batch(host, [["l1", "lab"], ["l2", "nosuch"], ["l3", "lab"]])
    assert bad["error"] == "create 3 containers: create container l2: No such network: nosuch"
    twice = _batch(host, [["d", "lab"], ["d", "lab"]])
    assert 'the container name "d" is already in use' in twice["error"]
    # e1 fails after it has started e2's namespace (made ahead): that one goes too.
    ahead = _batch(host, [["e1", "lab", "10.99.0.5"], ["e2", "lab"]])
    assert ahead["error"].startswith("create 2 containers: create container e1:"), ahead
    failed = _batch(host, [["f1", "lab"], ["f2", "lab"]],
                    LOWBRIDGE_FAIL_AT="container-create:persist")  # fmt: skip
    assert "injected failure" in failed["error"]
    assert state(host) == before

    assert _batch(host, [["l1", "lab"], ["l2", "lab"], ["l3", "lab"]]) == ["l1", "l2", "l3"]
    ips = [ip_of(host, name, "lab") for name in ("l1", "l2", "l3")]
    assert ips == ["10.42.0.3", "10.42.0.4", "10.42.0.5"]
    assert ping(host, "l1", ips[2]) and ping(host, "l3", ips[0])
    assert dig(host, "l1", "l3") == ("NOERROR", [ips[2]])  # the resolver knows them all
    host.lb("rm", "l1", "l2", "l3", "warm")
    # More sandboxes than one message to the resolver can hand over (SCM_MAX_FD): all resolve.
    many = [f"m{i}" for i in range(130)]
    assert _batch(host, [[name, "lab"] for name in many]) == many
    assert dig(host, "m129", "m0") == ("NOERROR", [ip_of(host, "m0", "lab")])
    assert dig(host, "m0", "m129") == ("NOERROR", [ip_of(host, "m129", "lab")])
    host.lb("rm", *many)
    assert host.run(["ls", "/run/netns"]).stdout.split() == []
