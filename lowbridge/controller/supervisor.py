"""The per-sandbox supervisor: the process that runs a detached sandbox's command (``run -d``,
``start``, a lab's command), as Docker's containerd-shim runs a container's.

It is ``lowbridge _supervise ID -- ARGV`` (:func:`argv` makes that command line), started behind
the gate of lowbridge.controller.processes, so the sandbox's record names it (``pid``).  It

* runs ARGV as its child, the child's output written to the sandbox's log one line at a time
  as Docker's json-file driver writes it (``{"log", "stream", "time"}``: ``logs -t``),
* passes on the signals it is sent (``kill -s``, ``stop``'s SIGTERM) to the child,
* when the child ends: records how (lowbridge.controller.Controller.command_exited), which runs
  it again as the restart policy says -- after Docker's back-off: 100 ms, doubled each time up
  to a minute, back to 100 ms after a run of 10 s or more -- or takes the sandbox down.

Its own diagnostics go to the log too, as stderr lines.  A ``stop`` takes the record from it
(the record's pid is no longer its own): it then only leaves the child's exit status in
``<run>/containers/ID.exit`` for ``stop`` to record.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from lowbridge.controller import Controller

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)  # fmt: skip
FIRST_DELAY, MAX_DELAY, STEADY = 0.1, 60.0, 10.0


def argv(ctl: Controller, container_id: str, command: list[str]) -> list[str]:
    """The supervisor's command line for ``command`` of ``container_id``."""
    return [sys.executable, "-m", "lowbridge", "_supervise", container_id, "--", *command]


def environment(ctl: Controller) -> dict[str, str]:
    """What the supervisor must know of the controller that starts it: where its state is,
    which firewall backend it asked for."""
    from lowbridge.config import ROOT_ENV

    env: dict[str, str] = {}
    paths = ctl.paths
    root = os.path.dirname(paths.state)
    if paths.state == os.path.join(root, "lib") and paths.run == os.path.join(root, "run"):
        env[ROOT_ENV] = root
    if ctl.firewall.requested != "auto":
        env["LOWBRIDGE_FIREWALL_BACKEND"] = ctl.firewall.requested
    return env


def exit_file(ctl: Controller, container_id: str) -> str:
    return os.path.join(ctl.paths.run, "containers", container_id + ".exit")


def pid_file(ctl: Controller, container_id: str) -> str:
    """Where the supervisor keeps its command's pid (``kill -s KILL`` reaches it there)."""
    return os.path.join(ctl.paths.run, "containers", container_id + ".pid")


def _write(path: str, text: str) -> None:
    """A small file of the supervisor's (root's alone, never through a symlink); best effort:
    a read-only /run costs ``stop`` its exit code, not the supervisor its work."""
    from lowbridge.config import private_file
    from lowbridge.errors import LowbridgeError

    try:
        fd = private_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except LowbridgeError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(text)


class _Log:
    """The sandbox's log, one JSON line per line of output (Docker's json-file format)."""

    def __init__(self, path: str):
        from lowbridge.config import private_file

        self._fd = private_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._lock = threading.Lock()

    def write(self, stream: str, text: str) -> None:
        import datetime

        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = json.dumps({"log": text, "stream": stream, "time": stamp}) + "\n"
        with self._lock:
            os.write(self._fd, line.encode())

    def pump(self, pipe: IO[bytes], stream: str) -> None:
        for raw in iter(pipe.readline, b""):
            self.write(stream, raw.decode(errors="replace"))
        pipe.close()


def run(ctl: Controller, container_id: str, command: list[str]) -> int:
    """Supervise ``command`` (see the module docstring); returns when the sandbox no longer
    needs it."""
    log = _Log(ctl.paths.logs(container_id))
    forward = _Forward()
    for s in FORWARDED:
        signal.signal(s, forward)
    delay = FIRST_DELAY
    while True:
        started = time.monotonic()
        code = _once(ctl, container_id, command, log, forward)
        _write(exit_file(ctl, container_id), str(code))
        try:
            again = ctl.command_exited(container_id, code, os.getpid())
        except Exception as exc:  # noqa: BLE001 -- reported where the user reads: the log
            log.write("stderr", f"lowbridge: supervisor: {exc}\n")
            return 1
        if not again:
            return 0
        delay = FIRST_DELAY if time.monotonic() - started >= STEADY else min(delay * 2, MAX_DELAY)
        time.sleep(delay)


class _Forward:
    """The supervisor's handler of the signals it passes on: to its child, or -- when none runs
    (not yet, or between two runs of a restart policy) -- kept for the next one."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.pending: list[int] = []

    def __call__(self, signum: int, _frame: object) -> None:
        if self.child is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            self.child.send_signal(signum)

    def attach(self, child: subprocess.Popen | None) -> None:
        self.child = child
        while child is not None and self.pending:
            self(self.pending.pop(0), None)


def _once(
    ctl: Controller, container_id: str, command: list[str], log: _Log, forward: _Forward
) -> int:
    """Run the command once; its exit status as Docker reports it."""
    from lowbridge.restarts import exited_with

    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)  # fmt: skip
    except OSError as exc:
        log.write("stderr", f"lowbridge: {exc}\n")
        return 127 if isinstance(exc, FileNotFoundError) else 126
    forward.attach(child)
    # The pid file says the supervisor is ready: its handlers are in place (lifecycle.signal
    # waits for it before sending anything).
    _write(pid_file(ctl, container_id), f"{child.pid}\n")
    pumps = [
        threading.Thread(target=log.pump, args=(pipe, name), daemon=True)
        for pipe, name in ((child.stdout, "stdout"), (child.stderr, "stderr"))
    ]
    for t in pumps:
        t.start()
    code = child.wait()
    forward.attach(None)
    for t in pumps:  # what the child wrote last (a daemon of its own may hold the pipes)
        t.join(timeout=1)
    return exited_with(code)
