"""Labs end to end: the examples applied, proven with packets, re-applied, edited, planned and
destroyed; bad files and failed applies change nothing; a killed apply is completed by the next.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys

import pytest

from lowbridge.simhost import SimHost, outside
from lowbridge.txn import FAIL_ENV, TRACE_ENV
from tests.integration.conftest import ip_of, lb_json, on_a_lan, ping, state
from tests.unit.test_lab_topology import BAD

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
UPLINK, LAN_IP = "192.168.79.2", "192.168.79.1"
TIER = ("tier-web", "tier-app", "tier-db")


def tcp(h: SimHost, ns: str | None, target: str, timeout: int = 2) -> str | None:
    """Connect to ``target`` (HOST:PORT) from ``ns`` (None: the host) and read one line."""
    argv = ["socat", f"-T{timeout}", "-", f"TCP:{target},connect-timeout={timeout}"]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    proc = h.run(argv, check=False, timeout=timeout + 20, input="")
    return proc.stdout.strip() or None


def wait_for(probe, seconds: float = 5.0):  # noqa: ANN001, ANN201
    import time

    deadline = time.monotonic() + seconds
    while True:
        got = probe()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def lab_file(h: SimHost, name: str, text: str | None = None) -> str:
    """A copy of example ``name`` (or ``text``) in the host's directory."""
    path = os.path.join(h.dir, name)
    if text is None:
        shutil.copy(os.path.join(EXAMPLES, name), path)
    else:
        with open(path, "w") as f:
            f.write(text)
    return path


@pytest.fixture
def lanhost():
    with on_a_lan("lab", "lablan", UPLINK, LAN_IP) as (h, lan):
        lan.popen(["socat", "TCP-LISTEN:7000,fork,reuseaddr", "SYSTEM:echo lan"])
        yield h, lan


def _shown(part: str, shown: str) -> bool:
    """Whether ``part`` of a rule's text is in ``firewall show``'s: an nft set's elements may
    be written there together, in one ``add element`` line."""
    if not part.startswith("add element "):
        return part in shown
    head, _, elems = part.partition(" { ")
    have = [line.partition(" { ")[2].rstrip(" }") for line in shown.splitlines()
            if line.startswith(head + " { ")]  # fmt: skip
    listed = {e.strip() for line in have for e in line.split(",")}
    return all(e.strip() in listed for e in elems.rstrip(" }").split(","))


def ids(h: SimHost, *names: str) -> dict[str, str]:
    return {doc["Name"].lstrip("/"): doc["Id"] for doc in lb_json(h, "inspect", *names)}


def test_three_tier_example_apply_reapply_edit_plan_destroy(lanhost):
    h, lan = lanhost
    # What is not the lab's, named like the lab's: it must survive everything below.
    h.lb("network", "create", "tier-extra")
    h.lb("container", "create", "--name", "tier-keep", "--network", "tier-extra")
    before = state(h)
    path = lab_file(h, "three-tier.yaml")
    plan = h.lb("plan", "-f", path).stdout
    assert plan.splitlines()[0] == (
        "lab tier: plan: 5 to add, 0 to change, 0 to remove (0 unchanged)"
    )
    assert "+ sandbox tier-db" in plan and "    + veth eth0 on tier-back (10.41.0.50)" in plan
    assert "    + veth eth0 on tier-front (10.40.0.2)" in plan  # web: the next free address
    assert "+ network tier-front: bridge, 10.40.0.0/24" in plan
    assert state(h) == before  # plan touches nothing
    come = [line[6:] for line in plan.split("firewall rules that come:\n")[1].splitlines()]
    assert any("8080" in r and "10.40.0.2" in r for r in come), come  # web's DNAT
    assert any("<bridge of tier-back>" in r for r in come), come  # the internal network's
    out = h.lb("apply", "-f", path)
    assert out.stdout.strip() == "lab tier: 5 added, 0 changed, 0 removed (0 unchanged)"
    # The rules the plan said would come are the kernel's now (the bridges by their devices).
    shown = h.lb("firewall", "show").stdout
    for doc in lb_json(h, "network", "inspect", "tier-front", "tier-back"):
        come = [r.replace(f"<bridge of {doc['Name']}>", doc["Device"]) for r in come]
    assert [part for r in come for part in r.split("; ") if not _shown(part, shown)] == []
    assert "create sandboxes: 3" in out.stderr  # not a terminal: plain progress lines

    # The packets: names and aliases on each network, the internal network's isolation, the
    # published port from the LAN.
    assert wait_for(lambda: tcp(h, "tier-web", "app:80")) == "app"
    assert wait_for(lambda: tcp(h, "tier-app", "db:5432")) == "db"
    assert tcp(h, "tier-app", "api:80") == "app"
    assert ip_of(h, "tier-db", "tier-back") == "10.41.0.50"
    assert tcp(h, "tier-web", "10.41.0.50:5432", timeout=1) is None  # another network
    assert wait_for(lambda: tcp(h, "tier-web", f"{LAN_IP}:7000")) == "lan"  # the front: LAN ...
    assert tcp(h, "tier-db", f"{LAN_IP}:7000", timeout=1) is None  # ... the internal back not
    assert wait_for(lambda: tcp(lan, None, f"{UPLINK}:8080")) == "web"

    # The picture names each network, sandbox, address, veth and published port.
    dot = h.lb("graph", "-f", path).stdout
    ep = lb_json(h, "inspect", "tier-db")[0]["NetworkSettings"]["Networks"]["tier-back"]
    for words in ("tier-front", "10.41.0.0/24", "tier-web", "eth0 10.41.0.50",
                  "0.0.0.0:8080 -> 80/tcp", "tier-extra"):  # fmt: skip
        assert (words in dot) == (words != "tier-extra"), words  # not the lab's: not drawn
    assert ep["IPAddress"] == "10.41.0.50"
    svg = os.path.join(h.dir, "lab.svg")
    h.lb("graph", "-f", path, "--format", "svg", "-o", svg)
    with open(svg) as f:
        assert "<svg" in f.read()

    # The same file again: nothing changes.
    applied, first = state(h), ids(h, *TIER)
    assert h.lb("apply", "-f", path).stdout.strip() == (
        "lab tier: nothing to change (5 entries as the file says)"
    )
    assert state(h) == applied and ids(h, *TIER) == first

    # An edit changes only its difference: the database's environment.
    with open(path) as f:
        text = f.read()
    lab_file(h, "three-tier.yaml", text.replace("POSTGRES_DB: shop", "POSTGRES_DB: shop2"))
    plan = h.lb("plan", "-f", path).stdout
    assert plan.splitlines()[0] == (
        "lab tier: plan: 0 to add, 1 to change, 0 to remove (4 unchanged)"
    )
    assert "~ sandbox tier-db (its spec changed)" in plan
    assert "    - netns /run/netns/tier-db" in plan
    assert h.lb("apply", "-f", path).stdout.strip() == (
        "lab tier: 0 added, 1 changed, 0 removed (4 unchanged)"
    )
    now = ids(h, *TIER)
    assert now["tier-web"] == first["tier-web"] and now["tier-app"] == first["tier-app"]
    assert now["tier-db"] != first["tier-db"]
    env = lb_json(h, "inspect", "tier-db")[0]["Config"]["Env"]
    assert "POSTGRES_DB=shop2" in env
    assert wait_for(lambda: tcp(h, "tier-app", "db:5432")) == "db"

    # A removed sandbox goes, with its rules: the plan names them in the backend's syntax, and
    # they are the ones the kernel then loses (and the published port closes).
    lab_file(h, "three-tier.yaml", text[: text.index("  web:")] + text[text.index("  app:") :])
    plan = h.lb("plan", "-f", path).stdout
    assert "- sandbox tier-web" in plan
    gone = [line.strip()[2:] for line in plan.split("firewall rules that go:\n")[1].splitlines()]
    web = ip_of(h, "tier-web", "tier-front")
    assert any("8080" in rule and "dnat" in rule.lower() for rule in gone), gone
    assert all(web in rule or "tier-web" in rule for rule in gone), gone  # web's, only
    assert "tier-web" in h.lb("firewall", "show").stdout
    h.lb("apply", "-f", path)
    assert h.lb("inspect", "tier-web", check=False).returncode != 0
    assert "tier-web" not in h.lb("firewall", "show").stdout
    assert tcp(lan, None, f"{UPLINK}:8080", timeout=1) is None

    # destroy removes what the lab owns, only that; it reads only the lab's name (a file that
    # no longer validates can still be destroyed; apply refuses it).
    with open(path, "a") as f:
        f.write("bogus: 1\n")
    assert h.lb("apply", "-f", path, check=False).returncode == 2
    out = h.lb("destroy", "-f", path)
    assert out.stdout.strip() == "lab tier: destroyed 2 sandboxes and 2 networks"
    assert state(h) == before
    assert h.lb("destroy", "-f", path).stdout.strip() == (
        "lab tier: destroyed 0 sandboxes and 0 networks"
    )


def test_standalone_tutorial_example(lowbridge_lab):
    """Through lowbridge's own pytest plugin (lowbridge.testing), as a user's test would."""
    lab = lowbridge_lab(os.path.join(EXAMPLES, "standalone.yaml"))
    # On the user-defined network, names resolve; alpine3 (default bridge only) is not there.
    assert lab.ping("tut-alpine1", "alpine2") and lab.ping("tut-alpine1", "alpine4")
    assert lab.ping("tut-alpine1", "tut-alpine4")
    assert not lab.ping("tut-alpine1", "alpine3")
    alpine3 = ip_of(lab.host, "tut-alpine3", "bridge")
    assert not lab.ping("tut-alpine1", alpine3)  # not on the bridge: isolated
    assert lab.ping("tut-alpine4", alpine3)  # alpine4 is on both
    # The processes the file names run in their sandboxes.
    pids = lab.host.run(["ip", "netns", "pids", "tut-alpine2"]).stdout.split()
    assert pids and all("sleep" in lab.host.run(["cat", f"/proc/{p}/cmdline"]).stdout for p in pids)


def test_the_plugins_outside_namespace_is_reachable(lowbridge_host, lowbridge_outside):
    lan = lowbridge_outside(lowbridge_host)
    lan.popen(["socat", "TCP-LISTEN:7100,fork,reuseaddr", "SYSTEM:echo out"])
    lowbridge_host.lb("container", "create", "--name", "c")
    assert wait_for(lambda: tcp(lowbridge_host, "c", "192.168.90.1:7100")) == "out"


def test_macvlan_lan_example(lowbridge_host):
    """The sandboxes are stations of a LAN (a switch namespace with a LAN host on it)."""
    h = lowbridge_host
    with outside("switch") as sw, outside("station") as station:
        sw.run("ip link add br0 type bridge && ip link set br0 up && "
               "ip addr add 192.168.77.1/24 dev br0")  # fmt: skip
        h.wire(sw, "uplink", "sw-host", "192.168.77.2/24")
        station.wire(sw, "eth0", "sw-lan", "192.168.77.10/24")
        sw.run("ip link set sw-host master br0 && ip link set sw-lan master br0")
        path = lab_file(h, "macvlan-lan.yaml")
        h.lb("apply", "-f", path)
        laptop = ip_of(h, "lan-laptop", "lan-office")
        assert laptop.startswith("192.168.77.1") and laptop != "192.168.77.130"
        assert ping(h, "lan-laptop", "192.168.77.10")  # a LAN station reaches the LAN ...
        assert wait_for(lambda: tcp(station, None, "192.168.77.130:9100")) == "printer"  # ...
        assert wait_for(lambda: tcp(h, "lan-laptop", "printer:9100")) == "printer"  # and names
        h.lb("destroy", "-f", path)
        assert "macvlan" not in h.run(["ip", "-d", "link"]).stdout


def test_scale_example_of_500_sandboxes(host):
    host.lb("network", "create", "warm")  # forwarding goes on with the first network, for good
    host.lb("network", "rm", "warm")
    before = state(host)
    path = lab_file(host, "scale-500.yaml")
    out = host.lb("apply", "-f", path)
    assert out.stdout.strip() == "lab scale: 510 added, 0 changed, 0 removed (0 unchanged)"
    assert len(host.lb("ps", "-a", "-q").stdout.split()) == 500
    assert ping(host, "scale-s0-1", "s0-50") and ping(host, "scale-s9-50", "s9-1")
    assert not ping(host, "scale-s0-1", ip_of(host, "scale-s1-1", "scale-net1"))
    assert host.lb("apply", "-f", path).stdout.strip() == (
        "lab scale: nothing to change (510 entries as the file says)"
    )
    # The quick answer (lowbridge.lab.memo) holds only while nothing is committed: a sandbox
    # removed by hand is made again.
    host.lb("rm", "-f", "scale-s3-7")
    assert host.lb("apply", "-f", path).stdout.strip() == (
        "lab scale: 1 added, 0 changed, 0 removed (509 unchanged)"
    )
    assert ping(host, "scale-s3-1", "s3-7")
    assert host.lb("destroy", "-f", path).stdout.strip() == (
        "lab scale: destroyed 500 sandboxes and 10 networks"
    )
    assert state(host) == before


def test_destroy_keeps_a_network_another_sandbox_is_on(host):
    path = lab_file(host, "standalone.yaml")
    host.lb("apply", "-f", path)
    host.lb("container", "create", "--name", "visitor", "--network", "tut-alpine-net")
    assert host.lb("destroy", "-f", path).stdout.strip().splitlines() == [
        "lab tut: destroyed 4 sandboxes and 0 networks",
        "lab tut: kept network tut-alpine-net: sandboxes of other hosts or labs are on it",
    ]
    net = lb_json(host, "network", "inspect", "tut-alpine-net")[0]  # still whole: its bridge
    assert ping(host, "visitor", net["IPAM"]["Config"][0]["Gateway"])  # answers the visitor
    host.lb("rm", "visitor")
    assert host.lb("destroy", "-f", path).stdout.strip() == (
        "lab tut: destroyed 0 sandboxes and 1 networks"
    )


def test_bad_files_are_one_line_exit_2_and_change_nothing(host):
    host.lb("network", "create", "x-keep")
    host.lb("container", "create", "--name", "x-box", "--network", "x-keep")
    before = state(host)
    path = os.path.join(host.dir, "bad.yaml")
    for text, line, words in BAD:
        with open(path, "w") as f:
            f.write(text)
        # destroy reads only the lab's name: it refuses what makes the file or that name bad.
        whole = "YAML" in words or words.startswith(("the file", "the top", "lab:"))
        for verb in ("apply", "plan", "destroy") if whole else ("apply", "plan"):
            proc = host.lb(verb, "-f", path, check=False)
            assert proc.returncode == 2, (text, proc.stderr)
            err = proc.stderr.strip()
            assert "\n" not in err and err.startswith(f"lowbridge: error: {path}:{line}: "), err
            assert words in err, err
    assert state(host) == before


def test_a_failed_apply_changes_nothing(host):
    """The last sandbox's published port is already taken: the networks and sandboxes made
    before it are taken back."""
    host.lb("run", "-d", "--name", "holder", "-p", "9090:80", "--", "sleep", "infinity")
    before = state(host)
    text = (
        "lab: f\nnetworks:\n  a: {}\n  b: {}\nsandboxes:\n"
        "  one: {networks: [a, b], command: sleep infinity}\n"
        "  two: {networks: [b], ports: ['9090:80']}\n"
    )
    path = lab_file(host, "fail.yaml", text)
    proc = host.lb("apply", "-f", path, check=False)
    assert proc.returncode != 0 and "9090" in proc.stderr
    # Progress lines come first (not a terminal); the error is the last line, and one line.
    assert proc.stderr.strip().splitlines()[-1].startswith("lowbridge: error: ")
    assert state(host) == before


EDIT_LAB = """\
lab: e
networks:
  a: {subnet: 10.62.0.0/24}
  b: {}
sandboxes:
  web:
    networks: {a: {ipv4_address: 10.62.0.10}, b: {aliases: [www]}}
    ports: ["8091:80"]
    command: socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:"echo web"
  db:
    networks: [b]
    command: sleep infinity
"""


def test_a_failed_apply_of_an_edit_puts_back_what_it_took_down(host):
    """The edit changes web (so it is taken down and made again) and removes db, and a new
    sandbox's port is taken: the failure puts web and db back as they were -- addresses,
    names, published port, command -- and the first file is again the lab's exact state."""
    host.lb("run", "-d", "--name", "holder", "-p", "9091:80", "--", "sleep", "infinity")
    first = lab_file(host, "edit.yaml", EDIT_LAB)
    host.lb("apply", "-f", first)

    def looks() -> dict:
        docs = lb_json(host, "inspect", "e-web", "e-db")
        return {
            d["Name"]: (
                {  # the aliases but the short id (a sandbox made again has another)
                    n: (v["IPAddress"], sorted(set(v["Aliases"] or []) - {d["Id"][:12]}))
                    for n, v in d["NetworkSettings"]["Networks"].items()
                },  # fmt: skip
                d["NetworkSettings"]["Ports"],
                d["Config"]["Labels"],
                d["Config"]["Cmd"],
            )
            for d in docs
        }

    was = looks()
    edited = EDIT_LAB.replace('SYSTEM:"echo web"', 'SYSTEM:"echo web2"').replace(
        "  db:\n    networks: [b]\n    command: sleep infinity\n",
        "  two:\n    networks: [b]\n    ports: ['9091:80']\n",
    )
    second = lab_file(host, "edit2.yaml", edited)
    proc = host.lb("apply", "-f", second, check=False)
    assert proc.returncode != 0 and "9091" in proc.stderr.splitlines()[-1]
    assert looks() == was
    listed = host.lb("ps", "--format", "{{.Names}}").stdout.split()
    assert sorted(listed) == ["e-db", "e-web", "holder"]
    again = host.lb("apply", "-f", first).stdout.strip()
    assert again == "lab e: nothing to change (4 entries as the file says)"
    # Packets: web's command answers on its published port again; db reaches it by its alias.
    assert wait_for(lambda: tcp(host, None, "127.0.0.1:8091")) == "web"
    assert ping(host, "e-db", "www") and ping(host, "e-web", "e-db")


KILL_LAB = """\
lab: k
networks:
  a: {subnet: 10.60.0.0/24}
  b: {subnet: 10.61.0.0/24}
sandboxes:
  s1:
    networks: {a: {ipv4_address: 10.60.0.10}, b: {}}
    command: sleep infinity
  s2:
    networks: [b]
    ports: ["8088:80"]
"""


def test_an_apply_killed_after_any_step_is_completed_by_the_next(host):
    path = lab_file(host, "kill.yaml", KILL_LAB)
    trace = os.path.join(host.dir, "trace")
    host.lb("apply", "-f", path, env={**os.environ, TRACE_ENV: trace})
    host.lb("destroy", "-f", path)
    before = state(host)  # after one apply: forwarding is on for good, as Docker leaves it
    with open(trace) as f:
        steps = list(dict.fromkeys(line.strip() for line in f if line.strip()))
    assert len(steps) > 10, steps
    for step in steps:
        kill = {**os.environ, FAIL_ENV: f"{step}:kill"}
        proc = host.lb("apply", "-f", path, check=False, env=kill)
        assert proc.returncode == -signal.SIGKILL, (step, proc.stderr)
        done = host.lb("apply", "-f", path).stdout
        assert "removed" in done or "nothing to change" in done, (step, done)
        again = host.lb("apply", "-f", path).stdout.strip()
        assert again == "lab k: nothing to change (4 entries as the file says)", (step, again)
        assert ping(host, "k-s2", "s1") and ip_of(host, "k-s1", "k-a") == "10.60.0.10", step
        host.lb("destroy", "-f", path)
        assert state(host) == before, step


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
