"""lowbridge's lists and inspect documents against docker 20.10's own, captured from a real
dockerd (tests/golden/docker-20.10: shared/bench/peers/docker_lab.sh; the commands are in
tests/golden/docker-20.10/README.md).  Each key lowbridge prints is one docker prints, in docker's
order, with docker's kind of value; the differences left on purpose are named here and in the
README (no images, mounts or cgroups; no IPv6 yet; lowbridge's own extras)."""

from __future__ import annotations

import datetime
import json
import os

from lowbridge import output, ports
from lowbridge.ipam import plan_pool
from lowbridge.models import Container, Endpoint, Join, Network
from lowbridge.ports import Exposed, PortMapping

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "docker-20.10")
EXTRAS = {"LowbridgeNetnsOwned", "DNSNames", "Interface", "HostInterface", "Device"}
NOW = datetime.datetime(2026, 12, 6, 6, 1, 52, tzinfo=datetime.timezone.utc)


def golden(name: str):  # noqa: ANN201
    with open(os.path.join(GOLDEN, name)) as f:
        return json.load(f) if name.endswith(".json") else f.read()


# Maps keyed by an id or a name of the capture's own: their values are compared in order.
BY_ITEM = (".Containers", ".NetworkSettings.Networks")


def same_shape(ours: object, theirs: object, path: str = "") -> None:
    """Every key of ``ours`` is docker's, in docker's order, holding the same kind of value."""
    if path in BY_ITEM and isinstance(ours, dict) and isinstance(theirs, dict):
        for mine, docker in zip(ours.values(), theirs.values(), strict=False):
            same_shape(mine, docker, path + "[]")
    elif isinstance(ours, dict) and isinstance(theirs, dict):
        keys = [k for k in ours if k not in EXTRAS]
        missing = [k for k in keys if k not in theirs]
        assert not missing, f"{path}: not docker's: {missing}"
        order = [k for k in theirs if k in keys]
        if path not in (
            ".NetworkSettings.Ports",
            ".HostConfig.PortBindings",
            ".Config.ExposedPorts",
            ".Config.Labels",
            ".NetworkSettings.Networks",
        ):
            assert keys == order, f"{path}: order {keys} against docker's {order}"  # fmt: skip
        for k in keys:
            same_shape(ours[k], theirs[k], f"{path}.{k}")
    elif ours is not None and theirs is not None:
        kind = (int, float) if isinstance(theirs, int | float) else type(theirs)
        assert isinstance(ours, kind), f"{path}: {ours!r} against docker's {theirs!r}"


NET = Network(id="9aa4b64704ab" + "0" * 52, name="n1", driver="bridge", user_subnet=True,
              pool=plan_pool(subnet="10.77.0.0/24", gateway=None, ip_range=None,
                             aux_addresses=None, taken=[]),
              created="2026-12-06T06:01:49.353937+00:00", device="lb-9aa4b64704ab")  # fmt: skip
WEB = Container(
    id="0c0a50d78b89" + "c" * 52, name="web", netns="/run/netns/web", command=("sleep", "1000"),
    hostname="0c0a50d78b89", network_mode="n1", labels={"tier": "front"},
    ports=(PortMapping("0.0.0.0", 8080, 80, "tcp"),
           *(PortMapping("0.0.0.0", p, p, "tcp") for p in (7000, 7001, 7002))),
    expose=(Exposed(9000, "tcp"),), created="2026-12-06T06:01:49.443053+00:00",
    started_at="2026-12-06T06:01:49.709582+00:00", pid=12964,
)  # fmt: skip
WEB_EP = Endpoint(id="a6906730abb9" + "e" * 52, network_id=NET.id, container_id=WEB.id,
                  ifname="eth0", ip="10.77.0.10", prefixlen=24, gateway="10.77.0.1",
                  mac="02:42:0a:4d:00:0a", host_ifname="lbv0", aliases=("www",),
                  requested_ip="10.77.0.10")  # fmt: skip
FOUR = Container(
    id="877564c9288c" + "f" * 52, name="four", netns="/run/netns/four",
    command=("sh", "-c", "exit 4"), state="exited", exit_code=4,
    created="2026-12-06T06:01:49.800000+00:00", started_at="2026-12-06T06:01:49.888877+00:00",
    finished_at="2026-12-06T06:01:49.890069+00:00", joins=(Join(NET.id),),
)  # fmt: skip
MADE = Container(id="e3dc5c2995a1" + "a" * 52, name="made", netns="/run/netns/made",
                 command=("sleep", "5"), state="created",
                 created="2026-12-06T06:01:50+00:00")  # fmt: skip


def test_inspect_of_a_running_sandbox_is_shaped_as_dockers():
    ours = output.container_doc(WEB, [WEB_EP], {NET.id: NET}, [12964])
    theirs = golden("inspect-web.json")[0]
    same_shape(ours, theirs)
    for key in ("State", "Name", "RestartCount"):
        want = theirs[key]
        if key == "State":
            want = {**want, "Pid": 12964, "StartedAt": "2026-12-06T06:01:49.709582Z"}
        assert ours[key] == want, key
    assert ours["Created"] == "2026-12-06T06:01:49.443053Z"  # RFC 3339, UTC as Z
    mine, docker = (
        ours["NetworkSettings"]["Networks"]["n1"],
        theirs["NetworkSettings"]["Networks"]["n1"],
    )
    for key in ("IPAMConfig", "Gateway", "IPAddress", "IPPrefixLen", "MacAddress", "Links",
                "DriverOpts"):  # fmt: skip
        assert mine[key] == docker[key], key
    assert mine["Aliases"] == ["www", WEB.id[:12]] and docker["Aliases"] == ["www", "0c0a50d78b89"]
    # docker publishes on IPv6 too (:::8080); lowbridge has no IPv6 yet (issue 20).
    v4 = {k: [b for b in v if b["HostIp"] != "::"] if v else v
          for k, v in theirs["NetworkSettings"]["Ports"].items()}  # fmt: skip
    assert ours["NetworkSettings"]["Ports"] == v4
    assert ours["Config"]["ExposedPorts"] == theirs["Config"]["ExposedPorts"]
    assert ours["HostConfig"]["RestartPolicy"] == theirs["HostConfig"]["RestartPolicy"]


def test_inspect_of_an_exited_and_a_created_sandbox_are_shaped_as_dockers():
    four = output.container_doc(FOUR, [], {NET.id: NET}, [])
    theirs = golden("inspect-four.json")[0]
    same_shape(four, theirs)
    assert four["State"] == {**theirs["State"], "StartedAt": "2026-12-06T06:01:49.888877Z",
                             "FinishedAt": "2026-12-06T06:01:49.890069Z"}  # fmt: skip
    released = four["NetworkSettings"]["Networks"]["n1"]
    docker = theirs["NetworkSettings"]["Networks"]["bridge"]
    assert {k: v for k, v in released.items() if k not in ("NetworkID", "Aliases")} == {
        k: v for k, v in docker.items() if k not in ("NetworkID", "Aliases")}  # fmt: skip
    assert four["NetworkSettings"]["Ports"] == theirs["NetworkSettings"]["Ports"] == {}
    made = output.container_doc(MADE, [], {}, [])
    assert made["State"] == golden("inspect-made.json")[0]["State"]


def test_ps_lines_as_dockers():
    # docker 20.10: ps -a, with its IMAGE column and IPv6 bindings (which lowbridge lacks).
    lines = golden("ps-a.txt").splitlines()
    status = {ln.split()[-1]: ln for ln in lines[1:]}
    assert "Up Less than a second" in status["dflt"]
    up = output.status_text(WEB, NOW)
    assert up == "Up 2 seconds"
    assert output.status_text(FOUR, NOW) == "Exited (4) 2 seconds ago"
    assert output.status_text(MADE, NOW) == "Created"
    assert "Exited (4) Less than a second ago" in status["four"] and "Created" in status["made"]
    want = "0.0.0.0:7000-7002->7000-7002/tcp, 9000/tcp, 0.0.0.0:8080->80/tcp"
    assert ports.docker_ps(list(WEB.ports), list(WEB.exposed)) == want
    assert (
        want.replace(", 9000/tcp", ", :::7000-7002->7000-7002/tcp, 9000/tcp").replace(
            "0.0.0.0:8080->80/tcp", "0.0.0.0:8080->80/tcp, :::8080->80/tcp"
        )
        in status["web"]
    )
    # (docker lists them in its map's order, which Go leaves random)
    assert set(ports.docker_port_lines(list(WEB.ports))) == {
        line for line in golden("port-web.txt").splitlines() if ":::" not in line}  # fmt: skip


def test_network_inspect_and_ls_as_dockers():
    ours = output.network_doc(NET, [WEB_EP], {WEB.id: WEB})
    theirs = golden("network-inspect-n1.json")[0]
    same_shape(ours, theirs)
    assert ours["IPAM"] == theirs["IPAM"]  # a user's subnet without a gateway: no Gateway
    assert ours["Containers"][WEB.id] == theirs["Containers"]["0c0a50d78b89c29ee794c409b3d0b3a9ea7799b25ab983243be818582d223d7c"] | {  # noqa: E501
        "Name": "web", "EndpointID": WEB_EP.id}  # fmt: skip
    none = Network(id="4c3bf4a43d2c" + "0" * 52, name="none", driver="none", predefined=True)
    assert output.NetworkRow(none).Driver == "null"  # docker's name for it
    table = golden("network-ls.txt").splitlines()
    assert table[0] == "NETWORK ID     NAME      DRIVER    SCOPE"
    assert [ln.split()[1] for ln in table[1:]] == sorted(ln.split()[1] for ln in table[1:])
