"""The process a sandbox runs (``run``): started only once its record names it.

The process is spawned behind a gate -- a shell that waits for one line on a pipe before it
execs the command -- while the host lock is held; its pid is written to the sandbox's record,
and only then is the gate opened.  So no command runs that the store does not know: an ``rm -f``
waiting for the lock finds the pid (and kills its process group), a sandbox removed meanwhile
gets no process at all (the gate is closed instead, and the shell exits), and if lowbridge dies
before opening the gate, the pipe's end closes with it and the command never starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
from typing import TYPE_CHECKING

from lowbridge import sandbox
from lowbridge.errors import KernelError, NotFound
from lowbridge.models import RUNNING, now
from lowbridge.txn import Transaction

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.models import Container

# exec "$@" only after a line arrives on stdin, the gate's pipe; EOF -- lowbridge died, or shut
# the gate -- exits 125.  The command's own stdin is /dev/null, as docker run's without -i.
_GATE = 'read -r _ || exit 125; exec "$@" </dev/null'
# The same with the gate's pipe on another descriptor (its number first), when the command keeps
# our stdin (-i) or a terminal of its own (-t): bash, as dash takes no descriptor above 9.
_GATE_FD = 'g=$0; read -r _ <&"$g" || exit 125; exec "$@" {g}<&-'


def start(
    ctl: Controller,
    ctr: Container,
    argv: list[str],
    detach: bool,
    stdio: tuple[int | None, int | None, int | None] | None = None,
    tty: bool = False,
) -> subprocess.Popen:
    """Start ``argv`` for ``ctr`` (see the module docstring): detached -- under its supervisor
    (lowbridge.controller.supervisor), in a session of its own, output to the sandbox's log --
    or attached: to our terminal, its stdin /dev/null unless ``stdio`` gives the command's
    (stdin, stdout, stderr): ours (-i), or a terminal of its own (``tty``: it becomes the
    command's controlling terminal, in a session of its own).  The caller holds the host
    lock."""
    from lowbridge.controller import supervisor

    log = ctl.paths.logs(ctr.id) if detach else None
    env = sandbox.environment(ctr.environment)
    if log is not None:
        ctl.paths.run_dir("containers")
        with contextlib.suppress(FileNotFoundError):  # the new supervisor writes it when ready
            os.unlink(supervisor.pid_file(ctl, ctr.id))
        argv = supervisor.argv(ctl, ctr.id, argv)
        env.update(supervisor.environment(ctl))
    hooks = Transaction("container-start")  # no undos: only the tests' kill/trace hooks
    read_end, write_end = os.pipe()
    gated = ["sh", "-c", _GATE, "lowbridge-start", *argv]
    try:
        if log is not None:
            proc = sandbox.spawn_detached(gated, log, env, stdin=read_end)
        elif stdio is None:
            proc = subprocess.Popen(gated, env=env, stdin=read_end)
        else:
            # setsid --ctty: a session of its own, whose controlling terminal is its stdin; it
            # does not fork (the gate's shell leads no group), so the pid stays the recorded one.
            ctty = ["setsid", "--ctty"] if tty else []
            gated = ["bash", "-c", _GATE_FD, str(read_end), *ctty, *argv]
            stdin, stdout, stderr = stdio
            proc = subprocess.Popen(gated, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                                    pass_fds=(read_end,))  # fmt: skip
    except OSError as exc:
        os.close(write_end)
        raise KernelError.from_os(f"start {argv[0]}", exc) from None
    finally:
        os.close(read_end)
    try:
        hooks.check("spawn")
        record(ctl, ctr, proc.pid, sandbox.start_time(proc.pid))
        hooks.check("record")
    except BaseException:
        os.close(write_end)  # the gate stays shut: the shell exits
        proc.wait()
        raise
    os.write(write_end, b"go\n")
    os.close(write_end)
    return proc


def record(ctl: Controller, ctr: Container, pid: int, start_time: int | None) -> None:
    """Write the process into the sandbox's record -- if the sandbox is still the same one --
    which now runs."""
    current = ctl.store.view().ctrs.get(ctr.id)
    if current is None:
        raise NotFound(f"container {ctr.name} was removed while its process started")
    started = current.started_at if current.state == RUNNING and current.started_at else now()
    with ctl.store.transaction():
        ctl.store.put_container(dataclasses.replace(
            current, pid=pid, pid_start=start_time, state=RUNNING, started_at=started))  # fmt: skip
