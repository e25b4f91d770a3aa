"""All-or-nothing mutations: injected failures, bad input, concurrency, reboots."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile

import pytest

from lowbridge.simhost import SimHost
from lowbridge.txn import FAIL_ENV, TRACE_ENV
from tests.integration.conftest import ip_of, lb_json, ping, state


def _setup_for_connect(h: SimHost) -> None:
    h.lb("network", "create", "--subnet", "10.60.0.0/24", "target")
    h.lb("network", "create", "--subnet", "10.61.0.0/24", "home")
    h.lb("container", "create", "--name", "peer", "--network", "target")
    h.lb("container", "create", "--name", "c", "--network", "home")
    h.lb("container", "create", "--name", "b")  # default bridge: no embedded DNS yet


def _setup_macvlan(h: SimHost) -> None:
    h.run("ip link add mvp type veth peer name mvq && ip link set mvp up && ip link set mvq up")
    h.lb("network", "create", "-d", "macvlan", "--subnet", "10.64.0.0/24", "-o", "parent=mvp",
         "-o", "lowbridge.host_shim=true", "mv")  # fmt: skip
    h.lb("container", "create", "--name", "c", "--network", "mv")
    h.lb("container", "create", "--name", "m")


def _setup_adopt_macvlan(h: SimHost) -> None:
    """A namespace of another tool's: removing lowbridge's name for it does not take the
    macvlan child along, so only the child's own undo can."""
    _setup_macvlan(h)
    h.run(["ip", "netns", "add", "ext"])


MACVLAN_SHIM = ("network", "create", "-d", "macvlan", "--subnet", "10.65.0.0/24",
                "-o", "parent=mvp", "-o", "lowbridge.host_shim=true", "mv2")  # fmt: skip

CASES = [
    # macvlan: a parent of lowbridge's own (internal), a host shim, a child with a shim route.
    (
        "network-create",
        None,
        ("network", "create", "-d", "macvlan", "--subnet", "10.63.0.0/24", "mvi"),
    ),  # fmt: skip
    ("network-create", _setup_macvlan, MACVLAN_SHIM),
    ("network-connect", _setup_macvlan, ("network", "connect", "mv", "m")),
    (
        "container-create",
        _setup_adopt_macvlan,
        ("container", "create", "--name", "ad", "--netns", "/run/netns/ext", "--network", "mv"),
    ),
    ("network-create", None, ("network", "create", "--subnet", "10.62.0.0/24", "fresh")),
    # Connecting to the default bridge also exercises the lazy creation of its device.
    ("network-connect", _setup_for_connect, ("network", "connect", "bridge", "c")),
    ("network-connect", _setup_for_connect, ("network", "connect", "target", "c")),
    # b's first user-defined network: its resolver sockets and DNS redirect are made.
    ("network-connect", _setup_for_connect, ("network", "connect", "target", "b")),
    (
        "container-create",
        _setup_for_connect,
        ("container", "create", "--name", "new", "--network", "target"),
    ),
]


def traced_steps(h: SimHost, op: str, argv: tuple, env: dict | None = None) -> list[str]:
    """Every step ``argv`` runs for ``op``, learnt by running it with the trace on and a failure
    injected at its commit (``persist``), which rolls it back: the caller's host is as before."""
    trace = os.path.join(h.dir, "steps")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(trace)
    env = dict(env or {}, **{FAIL_ENV: f"{op}:persist", TRACE_ENV: trace})
    proc = h.lb(*argv, check=False, env={**os.environ, **env})
    assert proc.returncode == 9, proc.stderr
    with open(trace) as f:
        steps = [line.strip().split(":", 1)[1] for line in f if line.startswith(f"{op}:")]
    assert steps[0] == "journal" and steps[-1] == "persist", steps
    return steps


@pytest.mark.parametrize(
    "op, setup, argv, backend",
    [(op, setup, argv, "auto") for op, setup, argv in CASES]
    # The firewall's and resolver's steps once more with the other backend (auto is nftables
    # when nft works).
    + [(op, setup, argv, "iptables") for op, setup, argv in CASES if op != "network-create"],
    ids=lambda v: v if isinstance(v, str) else None,
)  # fmt: skip
def test_injected_failure_at_every_step_changes_nothing(op, setup, argv, backend):
    """A failure after any step leaves the kernel, the firewall and the store as before; one
    simulated host serves every step of a case, since each rollback brings it back."""
    with SimHost("t") as host:
        host.env["LOWBRIDGE_FIREWALL_BACKEND"] = backend
        host.lb("network", "ls")  # the predefined networks exist before the snapshot
        if setup:
            setup(host)
        before = state(host)
        steps = traced_steps(host, op, argv)
        assert state(host) == before
        for step in steps:
            proc = host.lb(*argv, check=False, env={**os.environ, FAIL_ENV: f"{op}:{step}"})
            assert proc.returncode == 9, (step, proc.stderr)
            assert f"injected failure after step {step}" in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1, (step, proc.stderr)
            assert state(host) == before, step
        # ... and the same command then succeeds, so the rollbacks left nothing in its way.
        host.lb(*argv)


BAD = [
    (("network", "create", "--subnet", "10.0.0.0/33", "n"), "invalid subnet"),
    (("network", "create", "--subnet", "banana", "n"), "invalid subnet"),
    (("network", "create", "--subnet", "10.90.0.0/24", "dup"), "already exists"),
    (("network", "create", "--subnet", "10.90.0.128/25", "n"), "overlaps"),
    (
        ("network", "create", "--subnet", "10.91.0.0/24", "--gateway", "10.92.0.1", "n"),
        "not a usable address",
    ),
    (("network", "create", "-d", "nosuch", "n"), "unknown driver"),
    (("network", "create", "-o", "com.docker.network.driver.mtu=9", "n"), "mtu"),
    (("network", "create", "x" * 64), "at most 63"),
    (("network", "create", "bad/name"), "invalid network name"),
    (("container", "create", "--name", "c1"), "already in use"),
    (("container", "create", "--name", "y" * 64), "at most 63"),
    (("container", "create", "--name", "n2", "--network", "nosuch"), "No such"),
    (
        ("container", "create", "--name", "n3", "--network", "dup", "--ip", "10.99.0.9"),
        "not a usable address",
    ),
    (
        ("container", "create", "--name", "n4", "--network", "dup", "--ip", "10.90.0.2"),
        "already in use",
    ),
    (
        ("container", "create", "--name", "n5", "--network", "dup", "--ip", "10.90.0.1"),
        "already in use",
    ),
    (("container", "create", "--name", "n6", "--ip", "172.17.0.9"), "user defined"),
    (("network", "connect", "nosuch", "c1"), "No such"),
    (("network", "connect", "dup", "nosuch"), "No such"),
    (("network", "connect", "dup", "c1"), "already exists"),
    (("network", "connect", "--ip", "10.90.0.300", "bridge", "c1"), "user"),
    (("network", "disconnect", "bridge", "c1"), "not connected"),
    (("network", "rm", "nosuch"), "No such"),
    (("network", "rm", "bridge"), "pre-defined"),
    (("network", "rm", "dup"), "active endpoints"),
    (("rm", "nosuch"), "No such"),
    (("run", "--name", "c1", "--", "true"), "already in use"),
    (("network", "create", "--aux-address", "nokey", "--subnet", "10.93.0.0/24", "n"), "KEY=VALUE"),
]


def test_bad_input_gives_one_line_and_changes_nothing(host):
    host.lb("network", "create", "--subnet", "10.90.0.0/24", "dup")
    host.lb("container", "create", "--name", "c1", "--network", "dup")
    before = state(host)
    for argv, expected in BAD:
        proc = host.lb(*argv, check=False)
        assert proc.returncode not in (0, 70), (argv, proc.returncode, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lowbridge: error: "), (argv, proc.stderr)
        assert expected in lines[0], (argv, lines[0])
        assert "Traceback" not in proc.stderr
    assert state(host) == before


def test_parallel_connects_get_distinct_addresses(host):
    n = 20
    host.lb("network", "create", "--subnet", "10.70.0.0/24", "crowd")
    host.lb("network", "create", "--subnet", "10.71.0.0/24", "start")
    for i in range(n):
        host.lb("container", "create", "--name", f"p{i}", "--network", "start")
    procs = [
        host.popen(
            [sys.executable, "-m", "lowbridge", "network", "connect", "crowd", f"p{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    addresses = [ip_of(host, f"p{i}", "crowd") for i in range(n)]
    assert len(set(addresses)) == n
    assert sorted(addresses, key=lambda a: int(a.rsplit(".", 1)[1])) == [
        f"10.70.0.{i}" for i in range(2, 2 + n)
    ]
    for i in range(n):
        assert ping(host, f"p{i}", "10.70.0.1"), f"p{i}"


def test_reboot_recreates_networks_and_reaps_sandboxes():
    with tempfile.TemporaryDirectory(prefix="lowbridge-reboot-") as state_dir:
        with SimHost("before", state_dir=state_dir) as h:
            net_id = h.lb("network", "create", "--subnet", "10.80.0.0/24", "keep").stdout.strip()
            h.lb("container", "create", "--name", "gone", "--network", "keep")
        # Same disk, fresh kernel: /run and every namespace and link are new.
        with SimHost("after", state_dir=state_dir) as h:
            assert "keep" in h.lb("network", "ls").stdout  # read-only: nothing re-created yet
            h.lb("container", "create", "--name", "back", "--network", "keep")
            link = json.loads(h.run(["ip", "-j", "addr", "show", "lb-" + net_id[:12]]).stdout)
            assert "10.80.0.1" in [a["local"] for a in link[0]["addr_info"]]
            # The dead sandbox was reaped and its address released: "back" takes .2 again.
            assert ip_of(h, "back", "keep") == "10.80.0.2"
            assert "gone" not in h.lb("ps").stdout
            assert lb_json(h, "network", "inspect", "keep")[0]["Id"] == net_id
            assert ping(h, "back", "10.80.0.1")


def test_namespace_deleted_by_hand_is_reaped(host):
    host.lb("network", "create", "--subnet", "10.81.0.0/24", "hand")
    host.lb("container", "create", "--name", "victim", "--network", "hand")
    host.run(["ip", "netns", "del", "victim"])
    host.lb("container", "create", "--name", "next", "--network", "hand")
    assert ip_of(host, "next", "hand") == "10.81.0.2"
    assert "victim" not in host.lb("ps").stdout
