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
* :class:`LifecycleVerbs` -- the controller's verbs of it (start, stop, kill, wait, prune,
  what a supervisor reports, what a boot starts); the restart policies are
  lowbridge.restarts'.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import TYPE_CHECKING

from lowbridge import drivers, names, ports, restarts
from lowbridge.errors import Conflict, NotFound, context
from lowbridge.models import CREATED, EXITED, GWBRIDGE, RUNNING, Container, Endpoint, Join, now

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.controller.change import Change
    from lowbridge.controller.sandboxes import SandboxPlan


def joins(c: Change, ctr: Container) -> tuple[Join, ...]:
    """The networks ``ctr`` is on, as start joins them again: its first network first (the one
    it was made on), the cluster's gateway bridge left to the overlay that brings it."""
    nets = c.view.nets
    eps = [e for e in c.view.endpoints_of(ctr.id) if e.network_id in nets]
    eps = [e for e in eps if nets[e.network_id].name != GWBRIDGE]
    eps.sort(key=lambda e: nets[e.network_id].name != ctr.network_mode)
    return tuple(Join(e.network_id, e.requested_ip, tuple(e.aliases), e.requested_ip6) for e in eps)


def leave(c: Change, ended: list[tuple[Container, int]]) -> list[Container]:
    """Take sandboxes down to ``exited`` with their exit codes, keeping their records."""
    from lowbridge.controller import teardown

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
    from lowbridge.controller import attach
    from lowbridge.controller.sandboxes import SandboxPlan

    if ctr.share:  # --network container:NAME: that sandbox must stand
        other = c.view.container(ctr.share)
        if other.state != RUNNING:
            raise Conflict(f"cannot join network of a non running container: {other.id}")
        return SandboxPlan(dataclasses.replace(
            ctr, state=CREATED if ctr.command else RUNNING, started_at=now(), exit_code=0,
            stopped=False, netns=other.netns))  # fmt: skip
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
        mac = ctr.mac_address if first else None
        p = attach.plan(c, net, standing, j.ip, j.aliases, mac=mac, ip6=j.ip6)
        plans += attach.with_egress(c, p)
    return SandboxPlan(standing, tuple(plans))


def alive(ctr: Container) -> bool:
    """Whether the process the record names (its supervisor, or an attached run's command)
    still runs."""
    from lowbridge import sandbox

    return bool(ctr.pid) and sandbox.start_time(ctr.pid) == ctr.pid_start


def signal(ctl: Controller, ctr: Container, sig: int) -> None:
    """Send ``sig`` to the sandbox's command: through its supervisor, which passes it on --
    except SIGKILL and SIGSTOP, which no process can pass on: those go to the command itself,
    whose pid the supervisor keeps beside the log.  A supervisor still starting (``kill`` right
    after ``run -d``) is waited for: its handlers are not in place before it writes that pid."""
    import signal as signals

    pid = ctr.pid
    _wait_ready(ctl, ctr)
    if sig in (signals.SIGKILL, signals.SIGSTOP):
        pid = _command_pid(ctl, ctr) or pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_ready(ctl: Controller, ctr: Container, seconds: float = 5.0) -> None:
    from lowbridge.controller.supervisor import pid_file

    try:
        with open(f"/proc/{ctr.pid}/cmdline", "rb") as f:
            if b"\0_supervise\0" not in f.read():
                return  # an attached run's command: no supervisor
    except OSError:
        return
    deadline = time.monotonic() + seconds
    while not os.path.exists(pid_file(ctl, ctr.id)) and alive(ctr):
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


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


class LifecycleVerbs:
    """The controller's lifecycle verbs (a part of lowbridge.controller.Controller)."""

    @context(lambda ref: f"start container {ref}")
    def container_start(self, ref: str) -> Container:
        """``start``: an exited sandbox joins its networks again; its command starts, detached
        (lowbridge.controller.lifecycle).  A sandbox that runs is left as it is."""
        from lowbridge.controller import processes, sandboxes

        with self._mutation():
            ctr = self.store.view().container(ref)
            if ctr.state == EXITED:
                with self.change("container-start") as c:
                    (ctr,) = sandboxes.create(c, [replan(c, ctr)])
                self._tell()
            if ctr.command and not alive(ctr):
                processes.start(self, ctr, self.exec_argv(ctr, list(ctr.command)), True)
            return self.store.view().ctrs[ctr.id]

    @context(lambda ref, timeout=10: f"stop container {ref}")
    def container_stop(self, ref: str, timeout: float = 10) -> Container:
        """``stop``: SIGTERM to its command, SIGKILL after ``timeout`` seconds; then it leaves
        its networks (lowbridge.controller.lifecycle)."""
        with self._mutation():
            ctr = self.store.view().container(ref)
            if ctr.state == EXITED:
                return ctr
            stopped = dataclasses.replace(ctr, stopped=True, pid=None, pid_start=None)
            if not ctr.command:  # no command to end, no supervisor to tell first: one change
                with self.change("container-stop", forward=True) as c:
                    leave(c, [(stopped, 0)])
                return self.store.view().container(ctr.id)
            self._put(stopped)  # (its supervisor then does not restart what SIGTERM ends)
        code = terminate(self, ctr, timeout)  # no lock held: others go on meanwhile
        with self.change("container-stop", forward=True) as c:
            current = c.view.ctrs.get(ctr.id)
            if current is not None and current.state != EXITED:
                leave(c, [(current, code)])
        return self.store.view().container(ctr.id)

    @context(lambda ref, sig=9: f"kill container {ref}")
    def container_kill(self, ref: str, sig: int = 9) -> Container:
        """``kill [-s SIG]``: the signal to its command (which its supervisor then reports and
        the restart policy answers); a sandbox without a command leaves its networks."""
        with self._mutation():
            ctr = self.store.view().container(ref)
            if ctr.state != RUNNING or (ctr.command and not alive(ctr)):
                raise Conflict(f"Container {ctr.id} is not running")
            self._put(dataclasses.replace(ctr, stopped=True))
            if ctr.command:
                signal(self, ctr, sig)
                return ctr
            with self.change("container-stop", forward=True) as c:
                leave(c, [(c.view.ctrs[ctr.id], 128 + sig)])
            return self.store.view().ctrs[ctr.id]

    def container_wait(self, ref: str) -> int:
        """``wait``: until the sandbox has exited; its exit code."""
        cid = self.container(ref).id
        while True:
            ctr = self.view().ctrs.get(cid)
            if ctr is None:
                raise NotFound(f"No such container: {ref}")
            if ctr.state == EXITED:
                return ctr.exit_code
            time.sleep(0.1)

    def container_prune(self) -> list[Container]:
        """``container prune``: remove every exited sandbox."""
        with self._mutation():
            down = [c.id for c in self.store.view().containers if c.state == EXITED]
            done = self.container_rm_many(down) if down else []
        return [got for _, got in done if isinstance(got, Container)]

    def command_exited(self, cid: str, code: int, owner: int) -> bool:
        """The command ``owner`` (its supervisor, or the attached ``run``) ran for sandbox
        ``cid`` ended with ``code``: record it; True when the restart policy runs it again,
        else the sandbox is removed (--rm) or leaves its networks.  Nothing when the record is
        no longer the owner's (a stop or an rm took it)."""
        with self._mutation():
            ctr = self.store.view().ctrs.get(cid)
            if ctr is None or ctr.pid != owner or ctr.state != RUNNING:
                return False
            if restarts.policy(ctr, code):
                count = ctr.restart_count + 1
                self._put(dataclasses.replace(ctr, exit_code=code, restart_count=count,
                                              finished_at=now(), started_at=now()))  # fmt: skip
                return True
            if ctr.auto_remove:
                self.container_rm(ctr.id, force=True)
                return False
            with self.change("container-stop", forward=True) as c:
                # (the owner is the caller: it is not killed with the sandbox's processes)
                done = dataclasses.replace(c.view.ctrs[cid], pid=None, pid_start=None)
                leave(c, [(done, code)])
            return False

    def boot(self) -> list[Container]:
        """After a reboot (the systemd unit lowbridge-restore.service): the networks back, the
        sandboxes whose namespace died exited (255), and those whose restart policy says so
        started again."""
        with self._mutation():
            back = [c for c in self.store.view().containers if restarts.on_boot(c)]
            return [self.container_start(c.id) for c in back]

    def _put(self, ctr: Container) -> None:
        """Write one record (a lifecycle mark that no kernel object follows)."""
        with self.store.transaction():
            self.store.put_container(ctr)
