"""Simulated hosts: throwaway machines made of namespaces, for tests, the demo and benchmarks.

A :class:`SimHost` is a fresh network + mount + PID namespace held by one tiny init process (the
way netavark's and CNI's own tests build a "host"), with private ``/run`` (so ``/run/netns`` and
``/run/lowbridge`` start empty), its own ``/var/lib/lowbridge``, ``/etc/netns`` and
``/etc/resolv.conf``, and ``/sys`` remounted for its network namespace.  lowbridge runs inside it
through :meth:`SimHost.run`; nothing it does reaches the machine's own namespace.  Killing the
holder (PID 1 of the host's PID namespace) kills every process in the host, which drops the last
reference to its mount namespace (and with it the sandboxes' bind mounts) and to its network
namespace, so every link it held goes too.

An *outside* namespace (:meth:`SimHost.outside`, a SimHost without lowbridge state) plays the LAN
or the internet: :meth:`SimHost.wire` joins two hosts with a veth pair.  Several hosts may exist at
once.  Addresses used here are private and only ever live inside these namespaces.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

# Mount points that must exist on the machine for the host's private mounts (empty directories;
# `ip netns` creates /etc/netns itself on first use anyway).
_MOUNT_POINTS = ("/var/lib/lowbridge", "/etc/netns")
# The resolver address written into a simulated host's /etc/resolv.conf: TEST-NET-3, never routed;
# only an outside namespace of a test may own it.
SIM_NAMESERVER = "203.0.113.53"

_SETUP = r"""
set -e
mount -t tmpfs -o mode=755 lowbridge-sim-run /run
mkdir -p /run/netns /run/lowbridge
mount --bind "$SIM_LIB" /var/lib/lowbridge
mount --bind "$SIM_DIR/etc-netns" /etc/netns
mount --bind "$SIM_DIR/resolv.conf" /etc/resolv.conf
mount -t sysfs lowbridge-sim-sys /sys
ip link set lo up
echo ready
exec "$SIM_PYTHON" -c "$SIM_INIT"
"""
# PID 1 of the host: reaps orphans (detached sandbox processes whose lowbridge exited), as a
# machine's init does, so killed processes do not linger as zombies.
_INIT = """
import ctypes, os, signal, time
# Die with the holder (unshare): a host whose creator was killed must not linger.
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


def _die_with_parent() -> None:
    """In the holder (unshare), before exec: SIGKILL when the Python that made the host dies,
    even by a signal that skips :meth:`SimHost.close` (the host's init follows the holder)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SimHost:
    """One simulated machine.  Use as a context manager, or call :meth:`close` (idempotent)."""

    def __init__(
        self,
        name: str = "host",
        state_dir: str | None = None,
        lowbridge: bool = True,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"lowbridge-sim-{name}-")
        # A caller-owned state_dir outlives the host: a new host on it is the same machine
        # after a reboot (fresh /run, same /var/lib/lowbridge).
        self.state_dir = state_dir or os.path.join(self.dir, "lib")
        os.makedirs(self.state_dir, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "etc-netns"), exist_ok=True)
        with open(os.path.join(self.dir, "resolv.conf"), "w") as f:
            f.write(f"nameserver {SIM_NAMESERVER}\n")
        for path in _MOUNT_POINTS:
            os.makedirs(path, exist_ok=True)
        holder_env = dict(
            os.environ,
            SIM_DIR=self.dir,
            SIM_LIB=self.state_dir,
            SIM_PYTHON=sys.executable,
            SIM_INIT=_INIT,
        )
        self._proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc",
             "--propagation", "private", "--", "sh", "-c", _SETUP],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=holder_env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        line = self._proc.stdout.readline().decode().strip()
        if line != "ready":
            err = self._proc.stderr.read().decode().strip()
            self._proc.kill()
            self._proc.wait()
            self._remove_dir()
            raise RuntimeError(f"simulated host {name} did not start: {err or line}")
        self.pid = self._holder_pid()
        self.lowbridge = lowbridge
        self.env = dict(env or {})  # extra environment for lowbridge commands (lb)

    def _holder_pid(self) -> int:
        """PID (in our PID namespace) of the host's init: the child of unshare."""
        for _ in range(200):
            path = f"/proc/{self._proc.pid}/task/{self._proc.pid}/children"
            with open(path) as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
            time.sleep(0.005)
        raise RuntimeError("simulated host has no init process")

    # -- running things inside
    def argv(self, command: Sequence[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "-p", "--", *command]

    def run(
        self, command: Sequence[str] | str, check: bool = True, timeout: float = 60, **kw
    ) -> subprocess.CompletedProcess:
        """Run a command inside the host (a string goes through ``sh -c``); capture its output."""
        if isinstance(command, str):
            command = ["sh", "-c", command]
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        proc = subprocess.run(self.argv(command), timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, shlex.join(command), proc.stdout, proc.stderr
            )
        return proc

    def popen(self, command: Sequence[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(command), **kw)

    def lb(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """Run ``lowbridge ARGS`` inside the host with this interpreter's lowbridge."""
        kw["env"] = {**os.environ, **self.env, **(kw.get("env") or {})}
        return self.run([sys.executable, "-m", "lowbridge", *args], check=check, **kw)

    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    # -- wiring
    def wire(
        self,
        other: SimHost,
        ifname: str,
        other_ifname: str,
        address: str | None = None,
        other_address: str | None = None,
    ) -> None:
        """Join this host and ``other`` with a veth pair (``ifname`` here, ``other_ifname`` there),
        optionally addressed (CIDR), both ends up."""
        # Only the network namespace is entered here: `netns PID` must name the other host's
        # holder as *our* PID namespace sees it, which the host's own PID namespace cannot.
        subprocess.run(
            ["nsenter", "-t", str(self.pid), "-n", "--", "ip", "link", "add", ifname, "type",
             "veth", "peer", "name", other_ifname, "netns", str(other.pid)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        self.run(["ip", "link", "set", ifname, "up"])
        other.run(["ip", "link", "set", other_ifname, "up"])
        if address:
            self.run(["ip", "addr", "add", address, "dev", ifname])
        if other_address:
            other.run(["ip", "addr", "add", other_address, "dev", other_ifname])

    # -- teardown
    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream:
                stream.close()
        self._remove_dir()

    def _remove_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SimHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def outside(name: str = "outside") -> SimHost:
    """A namespace playing the LAN or the internet (no lowbridge in it)."""
    return SimHost(name, lowbridge=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lowbridge.simhost [COMMAND...]``: a shell (or COMMAND) in a throwaway
    simulated host; everything in it goes when it exits."""
    command = list(argv if argv is not None else sys.argv[1:]) or [os.environ.get("SHELL", "sh")]
    with SimHost("shell") as host:
        env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
        return subprocess.call(host.argv(command), env=env)


if __name__ == "__main__":
    sys.exit(main())
