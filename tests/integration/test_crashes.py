"""A command killed (SIGKILL) after any of its steps is finished or undone by the next command.

Each case kills one verb after every step it runs (learnt from the step trace, so no step is
missed when one is added), lets a read-only command (``ps``) settle what the kill left, and
compares the whole host -- links, addresses, routes, namespaces, files, both firewalls, every
store row and the journal -- with what it was: a create that was killed before it committed is
undone; one killed after its commit is complete (and works) and is then removed by its inverse;
a teardown is always finished.  Finally a new sandbox gets the lowest free address, and exactly
one namespace answers for it (no ``DUP!``): no address is ever held twice.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from lowbridge.simhost import SimHost
from lowbridge.txn import FAIL_ENV, TRACE_ENV
from tests.integration.conftest import ip_of, lb_json, ping, state

SLEEP = ("--", "sleep", "infinity")


def _base(h: SimHost) -> None:
    """What every case starts from: two networks, a running sandbox on n1, one on n2, and one on
    the default bridge (so its device exists before the snapshots)."""
    h.lb("network", "create", "--subnet", "10.50.0.0/24", "n1")
    h.lb("network", "create", "--subnet", "10.51.0.0/24", "n2")
    h.lb("run", "-d", "--name", "a", "--network", "n1", *SLEEP)
    h.lb("container", "create", "--name", "c", "--network", "n2")
    h.lb("container", "create", "--name", "w")


@dataclass(frozen=True)
class Verb:
    """A verb under test: ``setup`` makes what it acts on (teardowns), ``argv`` runs it,
    ``done`` tells whether it took effect, ``check`` proves a finished one works with
    packets, ``inverse`` takes a finished create back."""

    argv: tuple[str, ...]
    done: Callable[[SimHost], bool]
    setup: Callable[[SimHost], object] | None = None
    check: Callable[[SimHost], None] | None = None
    inverse: Callable[[SimHost], object] | None = None


def _has_ctr(name: str) -> Callable[[SimHost], bool]:
    return lambda h: h.lb("inspect", name, check=False).returncode == 0


def _has_net(name: str) -> Callable[[SimHost], bool]:
    return lambda h: h.lb("network", "inspect", name, check=False).returncode == 0


def _connected(h: SimHost) -> bool:
    doc = lb_json(h, "inspect", "c")[0]
    return "n1" in doc["NetworkSettings"]["Networks"]


def _reaches(name: str, net: str) -> Callable[[SimHost], None]:
    def check(h: SimHost) -> None:
        assert ping(h, "a", ip_of(h, name, net)), f"a cannot reach {name}"
        assert ping(h, "a", name), f"a cannot reach {name} by name"

    return check


def _gateway_answers(h: SimHost) -> None:
    """The finished network carries packets: a sandbox on it reaches its gateway."""
    h.lb("container", "create", "--name", "p", "--network", "nc")
    try:
        assert ping(h, "p", "10.52.0.1")
    finally:
        h.lb("rm", "p")


VERBS = {
    "network-create": Verb(
        ("network", "create", "--subnet", "10.52.0.0/24", "nc"),
        _has_net("nc"),
        check=_gateway_answers,
        inverse=lambda h: h.lb("network", "rm", "nc"),
    ),
    "container-create": Verb(
        ("container", "create", "--name", "k", "--network", "n1"),
        _has_ctr("k"),
        check=_reaches("k", "n1"),
        inverse=lambda h: h.lb("rm", "-f", "k"),
    ),
    "run": Verb(
        ("run", "-d", "--name", "k", "--network", "n1", *SLEEP),
        _has_ctr("k"),
        check=_reaches("k", "n1"),
        inverse=lambda h: h.lb("rm", "-f", "k"),
    ),
    "network-connect": Verb(
        ("network", "connect", "n1", "c"),
        _connected,
        check=_reaches("c", "n1"),
        inverse=lambda h: h.lb("network", "disconnect", "n1", "c"),
    ),
    "network-disconnect": Verb(
        ("network", "disconnect", "n1", "c"),
        lambda h: not _connected(h),
        setup=lambda h: h.lb("network", "connect", "n1", "c"),
    ),
    "container-rm": Verb(
        ("rm", "-f", "v"),
        lambda h: not _has_ctr("v")(h),
        setup=lambda h: h.lb("run", "-d", "--name", "v", "--network", "n1", *SLEEP),
    ),
    "network-rm": Verb(
        ("network", "rm", "nr"),
        lambda h: not _has_net("nr")(h),
        setup=lambda h: h.lb("network", "create", "--subnet", "10.53.0.0/24", "nr"),
    ),
}


def _steps(h: SimHost, verb: Verb) -> list[tuple[str, str]]:
    """Every (op, step) the verb runs, from one traced run (undone afterwards)."""
    trace = os.path.join(h.dir, "steps")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(trace)
    if verb.setup:
        verb.setup(h)
    h.lb(*verb.argv, env={**os.environ, TRACE_ENV: trace})
    if verb.inverse:
        verb.inverse(h)
    with open(trace) as f:
        steps = [tuple(line.strip().split(":", 1)) for line in f]
    # Only the verb's own changes: not the reaping or settling a command may do first.
    steps = [s for s in steps if not s[0].startswith("recover")]
    assert steps and ("journal" in dict(steps).values() or steps[0][1] == "journal"), steps
    return steps


def _no_address_twice(h: SimHost, ip: str) -> None:
    holders = [
        ns
        for ns in h.run(["ls", "/run/netns"]).stdout.split()
        if f"inet {ip}/" in h.run(["ip", "-n", ns, "-4", "addr"], check=False).stdout
    ]
    assert len(holders) == 1, (ip, holders)
    out = h.run(["ip", "netns", "exec", "a", "ping", "-n", "-c", "3", "-i", "0.2", ip]).stdout
    assert "DUP!" not in out, out


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
@pytest.mark.parametrize("name", list(VERBS))
def test_kill_after_every_step_is_settled_by_the_next_command(name, backend):
    verb = VERBS[name]
    with SimHost("k") as h:
        h.env["LOWBRIDGE_FIREWALL_BACKEND"] = backend
        _base(h)
        before = state(h)
        steps = _steps(h, verb)
        assert state(h) == before
        for op, step in steps:
            if verb.setup:
                verb.setup(h)
            proc = h.lb(*verb.argv, check=False, env={**os.environ, FAIL_ENV: f"{op}:{step}:kill"})
            assert proc.returncode == -9, (op, step, proc.returncode, proc.stderr)
            h.lb("ps")  # any command settles what the kill left
            if verb.inverse is None:
                assert verb.done(h), (op, step)  # a teardown is finished
            elif verb.done(h):
                verb.check(h)
                verb.inverse(h)
            assert state(h) == before, (op, step)
        # A new sandbox takes the lowest free address (.3: a has .2), and only it answers there.
        h.lb("run", "-d", "--name", "j", "--network", "n1", *SLEEP)
        assert ip_of(h, "j", "n1") == "10.50.0.3"
        _no_address_twice(h, "10.50.0.3")
        # and the verb itself works once more, with nothing left in its way.
        if verb.setup:
            verb.setup(h)
        h.lb(*verb.argv)
        assert verb.done(h)
