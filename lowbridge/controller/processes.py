"""The process a sandbox runs (``run``): started only once its record names it.

The process is spawned behind a gate -- a shell that waits for one line on a pipe before it
execs the command -- while the host lock is held; its pid is written to the sandbox's record,
and only then is the gate opened.  So no command runs that the store does not know: an ``rm -f``
waiting for the lock finds the pid (and kills its process group), a sandbox removed meanwhile
gets no process at all (the gate is closed instead, and the shell exits), and if lowbridge dies
before opening the gate, the pipe's end closes with it and the command never starts.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from typing import TYPE_CHECKING

from lowbridge import sandbox
from lowbridge.errors import KernelError, NotFound
from lowbridge.txn import Transaction

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.models import Container

# exec "$@" only after a line arrives on stdin, the gate's pipe; EOF -- lowbridge died, or shut
# the gate -- exits 125.  The command's own stdin is /dev/null, as docker run's without -i.
_GATE = 'read -r _ || exit 125; exec "$@" </dev/null'


def start(ctl: Controller, ctr: Container, argv: list[str], detach: bool) -> subprocess.Popen:
    """Start ``argv`` for ``ctr`` (see the module docstring): detached (a session of its own,
    output to the sandbox's log) or attached to our terminal.  The caller holds the host
    lock."""
    log = ctl.paths.logs(ctr.id) if detach else None
    if log is not None:
        ctl.paths.run_dir("containers")
    hooks = Transaction("container-start")  # no undos: only the tests' kill/trace hooks
    read_end, write_end = os.pipe()
    gated = ["sh", "-c", _GATE, "lowbridge-start", *argv]
    env = sandbox.environment(ctr.environment)
    try:
        if log is not None:
            proc = sandbox.spawn_detached(gated, log, env, stdin=read_end)
        else:
            proc = subprocess.Popen(gated, env=env, stdin=read_end)
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
    """Write the process into the sandbox's record -- if the sandbox is still the same one."""
    current = ctl.store.view().ctrs.get(ctr.id)
    if current is None:
        raise NotFound(f"container {ctr.name} was removed while its process started")
    with ctl.store.transaction():
        ctl.store.put_container(dataclasses.replace(current, pid=pid, pid_start=start_time))
