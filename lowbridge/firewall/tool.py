"""Running the firewall tools (iptables-save/-restore, nft): one exec, errors as KernelError; a
deletion's tool may be left to exit while the caller goes on (:func:`start`)."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING

from lowbridge.errors import KernelError

if TYPE_CHECKING:
    import subprocess

    from lowbridge.kernel.netfilter import Commits

TIMEOUT = 60.0  # seconds a tool may take before it is killed


def run(argv: list[str], stdin: str | None, what: str, package: str) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``stdin``; a failure names ``what`` and the tool's first error line.

    The timeout is a timer that kills the tool, not ``subprocess.run(timeout=...)``: with a
    timeout CPython waits for the exited child by polling waitpid with sleeps of 0.5, 1, 2 ...
    ms (Popen._wait), which added ~0.8 ms to each iptables-restore here (bench/firewall.py);
    without one it blocks in waitpid and returns as the child exits."""
    import subprocess  # here: most commands never run a tool (libnftables is in-process)

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    except FileNotFoundError:
        raise KernelError(f"{what}: {argv[0]} not found (install {package})") from None
    killed: list[bool] = []

    def kill() -> None:
        killed.append(True)
        proc.kill()

    timer = threading.Timer(TIMEOUT, kill)
    timer.start()
    try:
        out, err = proc.communicate(stdin)
    except BaseException:  # (Ctrl-C): the tool goes too, as with subprocess.run
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    _check(argv, what, bool(killed), proc.returncode, err or out)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _check(argv: list[str], what: str, killed: bool, status: int, said: str) -> None:
    if killed:
        raise KernelError(f"{what}: {argv[0]} did not finish in {TIMEOUT:g} s")
    if status != 0:
        reason = [ln for ln in said.strip().splitlines() if ln.strip()]
        raise KernelError(f"{what}: {argv[0]} failed: {reason[0] if reason else status}")


class Exiting:
    """A tool :func:`start` left running after the kernel committed its changes."""

    def __init__(self, argv: list[str], what: str, proc: subprocess.Popen, watcher: Commits):
        self.argv, self.what, self.proc, self.watcher = argv, what, proc, watcher
        self.pidfd = os.pidfd_open(proc.pid)
        self.killed: list[bool] = []
        self.timer = threading.Timer(TIMEOUT, self._kill)
        self.timer.start()
        self.done = False

    def _kill(self) -> None:
        self.killed.append(True)
        self.proc.kill()

    def wait(self) -> None:
        """Wait for the tool's exit (once: again, nothing); KernelError as :func:`run`'s."""
        if self.done:
            return
        self.done = True
        try:
            said = self.proc.stderr.read()  # (to its end: a tool blocked on a full pipe ends too)
            self.proc.wait()
        finally:
            self.timer.cancel()
            self.proc.stderr.close()
            os.close(self.pidfd)
            self.watcher.close()  # (after the exit: see kernel.netfilter.Commits)
        _check(self.argv, self.what, bool(self.killed), self.proc.returncode, said)


def start(argv: list[str], stdin: str, what: str, package: str, commits: int) -> Exiting | None:
    """Run the nf_tables tool ``argv`` (iptables-nft) as :func:`run` does, but return once the
    kernel committed the ``commits`` transactions ``stdin`` makes; the caller waits for the
    exit (:meth:`Exiting.wait`) before it relies on the tool's success.  None: it has exited
    already, successfully.

    A tool that deleted nf_tables objects spends ~13 ms in its last close(): the release of a
    NETLINK_NETFILTER socket flushes the destruction work the commit left, an RCU grace period
    (kernel.netfilter.Generation).  A teardown's own work -- the conntrack walk that must follow
    the rule change, the link deletions -- runs meanwhile.  The commits are told by their
    NEWGEN notifications (kernel.netfilter.Commits); a tool that exits first (it failed, or its
    commits could not be told) is waited for here, as :func:`run` would -- and a kernel that
    sends no notifications gets :func:`run` itself."""
    import select  # (poll(), not select(): no limit on descriptor numbers; see firewall.nftables)
    import subprocess

    from lowbridge.kernel.netfilter import Commits

    try:
        watcher = Commits()  # (listening before the tool starts: none of its commits is missed)
    except OSError:
        run(argv, stdin, what, package)
        return None
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    except FileNotFoundError:
        watcher.close()
        raise KernelError(f"{what}: {argv[0]} not found (install {package})") from None
    tool = Exiting(argv, what, proc, watcher)
    try:
        with contextlib.suppress(BrokenPipeError):  # (it ended: its exit says why)
            proc.stdin.write(stdin)
            proc.stdin.close()
        poller = select.poll()
        poller.register(watcher.fileno(), select.POLLIN)
        poller.register(tool.pidfd, select.POLLIN)
        seen = 0
        while seen < commits:
            ready = {fd for fd, _ in poller.poll()}
            got = watcher.made_by(proc.pid) if watcher.fileno() in ready else 0
            if got is None or (tool.pidfd in ready and seen + got < commits):
                break  # notifications lost, or it exited before committing them all
            seen += got
        if seen < commits:
            tool.wait()
            return None
    except BaseException:  # (Ctrl-C): nothing is left running
        if not tool.done:
            proc.kill()
            with contextlib.suppress(KernelError):
                tool.wait()
        raise
    return tool


def in_scratch(commands: str, stdin: str, what: str, package: str) -> str:
    """Run shell ``commands`` in a new, empty network namespace (``unshare --net``: its own
    firewall, gone with the process) and return their output: how the kernel reads back
    rules it was given, for ``check`` to compare with the host's."""
    return run(["unshare", "--net", "sh", "-ec", commands], stdin, what, package).stdout
