"""A sandbox's life after its creation, as Docker's containers live: it stops and starts again,
its command exits, a restart policy brings it back.

States (the record's ``state``, Docker's ``State.Status``): ``created`` -- made, its command
not started yet; ``running`` -- it stands (its namespace up, its networks joined), and its
command, if it has one, runs; ``exited`` -- it left its networks: its interfaces, namespace,
rules and DNS names are gone and its dynamic addresses released, while the record keeps what
``start`` needs to make it again (:class:`~lowbridge.models.Join`: each network, an address
asked for with --ip, the aliases) and how it ended (``exit_code``, ``finished_at``).  (Docker
makes a container's network namespace at start; lowbridge's ``container create`` makes it at
once, so that tools can run in a sandbox before any command does.)

* :func:`leave` -- running to exited, in one change (a teardown that keeps the record);
* :func:`replan` -- the plan that makes an exited sandbox stand again (lowbridge.controller.
  sandboxes makes it, as a create);
* :func:`policy` -- whether a command that ended runs again (Docker's restart manager).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING

from lowbridge import drivers, names, ports
from lowbridge.controller import attach, teardown
from lowbridge.errors import Conflict, InvalidInput, NotFound
from lowbridge.models import CREATED, EXITED, GWBRIDGE, RUNNING, Container, Endpoint, Join, now

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.controller.change import Change
    from lowbridge.controller.sandboxes import SandboxPlan

POLICIES = ("no", "always", "unless-stopped", "on-failure")


def parse_policy(text: str) -> str:
    """A --restart value as Docker takes it: no, always, unless-stopped, on-failure[:N]."""
    name, _, count = text.partition(":")
    if name not in POLICIES or (count and (name != "on-failure" or not count.isdigit())):
        raise InvalidInput(f"invalid restart policy '{text}'")
    return text


def policy(ctr: Container, code: int) -> bool:
    """Whether a command that ended with ``code`` runs again (moby restartmanager: ``always``
    whatever happened; ``unless-stopped`` unless it was stopped or killed by hand;
    ``on-failure[:N]`` after a non-zero code, at most N times)."""
    name, _, count = ctr.restart.partition(":")
    if name == "always":
        return True
    if name == "unless-stopped":
        return not ctr.stopped
    if name == "on-failure":
        return code != 0 and (not count or ctr.restart_count < int(count))
    return False


def joins(c: Change, ctr: Container) -> tuple[Join, ...]:
    """The networks ``ctr`` is on, as start joins them again: its first network first (the one
    it was made on), the cluster's gateway bridge left to the overlay that brings it."""
    nets = c.view.nets
    eps = [e for e in c.view.endpoints_of(ctr.id) if e.network_id in nets]
    eps = [e for e in eps if nets[e.network_id].name != GWBRIDGE]
    eps.sort(key=lambda e: nets[e.network_id].name != ctr.network_mode)
    return tuple(Join(e.network_id, e.requested_ip, tuple(e.aliases)) for e in eps)


def leave(c: Change, ended: list[tuple[Container, int]]) -> list[Container]:
    """Take sandboxes down to ``exited`` with their exit codes, keeping their records."""
    if not ended:
        return []
    stamp = now()
    keep = {
        ctr.id: dataclasses.replace(
            ctr, state=EXITED, exit_code=code, finished_at=stamp, pid=None, pid_start=None,
            dns_ports=(), joins=joins(c, ctr) if ctr.state != EXITED else ctr.joins,
        )
        for ctr, code in ended
    }  # fmt: skip
    teardown.remove(c, [ctr for ctr, _ in ended], kill=True, keep=keep)
    return list(keep.values())


def replan(c: Change, ctr: Container) -> SandboxPlan:
    """The plan that makes the exited sandbox ``ctr`` stand again as its record says: its
    namespace (same name), its networks (an address asked for kept, a dynamic one drawn
    again), its published ports (the same host ports, if free)."""
    from lowbridge.controller.sandboxes import SandboxPlan

    if not ctr.netns_owned and not ctr.host_network:
        raise Conflict(f"container {ctr.name} adopted a namespace lowbridge did not make: only "
                       "rm takes it away")  # fmt: skip
    draft = c.draft
    path = ctr.netns
    if path and (not draft.take_netns(path) or os.path.lexists(path)):
        raise Conflict(f"network namespace {ctr.name} already exists (not lowbridge's)")
    for mapping in ctr.ports:
        if any(mapping.overlaps(t) for t in draft.ports):
            raise Conflict(f"Bind for {mapping.host_ip}:{mapping.host_port} failed: port is "
                           "already allocated")  # fmt: skip
        ports.check_free(mapping)
    standing = dataclasses.replace(
        ctr, state=CREATED if ctr.command else RUNNING, started_at=now(), exit_code=0,
        stopped=False, joins=(), finished_at=ctr.finished_at,
    )  # fmt: skip
    plans: list[attach.AttachPlan] = []
    for j in ctr.joins:
        net = draft.view.nets.get(j.network_id)
        if net is None:
            raise NotFound(f"network {j.network_id[:12]} of container {ctr.name} not found")
        if drivers.get(net.driver).shares_host:
            ep = Endpoint(id=names.new_id(), network_id=net.id, container_id=ctr.id, ifname="")
            draft.add(standing, [ep])  # --network host: no kernel object
            return SandboxPlan(standing, endpoint=ep)
        first = not plans
        p = attach.plan(c, net, standing, j.ip, j.aliases, mac=ctr.mac_address if first else None)
        plans += attach.with_egress(c, p)
    return SandboxPlan(standing, tuple(plans))


def exited_with(code: int | None) -> int:
    """A process's exit status as Docker reports it: its code, or 128 + the signal that ended
    it (``None``: unknown, as after a reboot: 255)."""
    if code is None:
        return 255
    return 128 - code if code < 0 else code


def alive(ctr: Container) -> bool:
    """Whether the process the record names (its supervisor, or an attached run's command)
    still runs."""
    from lowbridge import sandbox

    return bool(ctr.pid) and sandbox.start_time(ctr.pid) == ctr.pid_start


def signal(ctl: Controller, ctr: Container, sig: int) -> None:
    """Send ``sig`` to the sandbox's command: through its supervisor, which passes it on --
    except SIGKILL and SIGSTOP, which no process can pass on: those go to the command itself,
    whose pid the supervisor keeps beside the log."""
    import signal as signals

    pid = ctr.pid
    if sig in (signals.SIGKILL, signals.SIGSTOP):
        pid = _command_pid(ctl, ctr) or pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _command_pid(ctl: Controller, ctr: Container) -> int | None:
    from lowbridge.controller.supervisor import pid_file

    try:
        with open(pid_file(ctl, ctr.id)) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def terminate(ctl: Controller, ctr: Container, timeout: float) -> int:
    """``stop``'s signals: SIGTERM to the command, SIGKILL to its whole process group when it
    has not ended after ``timeout`` seconds; the exit code to record (the supervisor's account
    of it when it gave one, 143 or 137 else; 0 for a sandbox without a command)."""
    import signal as signals
    import time

    from lowbridge import sandbox
    from lowbridge.controller.supervisor import exit_file

    if not ctr.command or not alive(ctr):
        return ctr.exit_code if ctr.command and ctr.state == RUNNING else 0
    with contextlib.suppress(FileNotFoundError):
        os.unlink(exit_file(ctl, ctr.id))
    signal(ctl, ctr, signals.SIGTERM)
    deadline = time.monotonic() + max(timeout, 0)
    while alive(ctr) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(ctr):
        sandbox.kill_group(ctr.pid)
        return 137
    try:
        with open(exit_file(ctl, ctr.id)) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 143


def on_boot(ctr: Container) -> bool:
    """Whether a sandbox starts again when the host starts (moby's daemon.restore): ``always``,
    ``unless-stopped`` unless stopped by hand, ``on-failure`` after a failure."""
    name = ctr.restart.partition(":")[0]
    if ctr.state != EXITED:
        return False
    return name == "always" or (name == "unless-stopped" and not ctr.stopped) or (
        name == "on-failure" and ctr.exit_code != 0)  # fmt: skip


def parse_signal(text: str) -> int:
    """A signal as ``docker kill -s`` takes it: KILL, SIGKILL, sigkill or 9."""
    import signal as signals

    if text.isdigit():
        number = int(text)
        if number in {s.value for s in signals.Signals}:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signals.Signals.__members__:
            return signals.Signals[name].value
    raise InvalidInput(f"invalid signal: {text}")
