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
    with _Deadline(proc) as deadline:
        try:
            out, err = proc.communicate(stdin)
        except BaseException:  # (Ctrl-C): the tool goes too, as with subprocess.run
            proc.kill()
            proc.wait()
            raise
    _check(argv, what, deadline.killed, proc.returncode, err or out)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _check(argv: list[str], what: str, killed: bool, status: int, said: str) -> None:
    if killed:
        raise KernelError(f"{what}: {argv[0]} did not finish in {TIMEOUT:g} s")
    if status != 0:
        reason = [ln for ln in said.strip().splitlines() if ln.strip()]
        raise KernelError(f"{what}: {argv[0]} failed: {reason[0] if reason else status}")


def start(argv: list[str], stdin: str, what: str, package: str, commits: int) -> None:
    """Run the nf_tables tool ``argv`` (iptables-nft) as :func:`run` does, but return once the
    kernel committed the ``commits`` transactions ``stdin`` makes, its exit not waited for.

    A tool that deleted nf_tables objects spends ~15 ms in its last close(): the release of a
    NETLINK_NETFILTER socket flushes the destruction work the commit left, an RCU grace period
    (kernel.netfilter.kept).  Once every transaction is committed its work is done -- each is
    all or nothing, and nothing follows the last -- so the caller goes on meanwhile and the
    tool's exit is left to the kernel (CPython's subprocess reaps it later).  The commits are
    told by their NEWGEN notifications (kernel.netfilter.Commits); a tool that exits first (it
    failed, or its commits could not be told) is waited for here, as :func:`run` would -- and
    a kernel that sends no notifications gets :func:`run` itself."""
    import select  # (poll(), not select(): no limit on descriptor numbers; see firewall.nftables)
    import subprocess

    from lowbridge.kernel import netfilter

    with contextlib.ExitStack() as stack:
        try:  # (listening before the tool starts: none of its commits is missed)
            watcher = stack.enter_context(netfilter.commits())
        except OSError:
            run(argv, stdin, what, package)
            return
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
        except FileNotFoundError:
            raise KernelError(f"{what}: {argv[0]} not found (install {package})") from None
        stack.callback(proc.stderr.close)  # (what it says after its last commit changes nothing)
        deadline = stack.enter_context(_Deadline(proc))
        pidfd = os.pidfd_open(proc.pid)
        stack.callback(os.close, pidfd)
        try:
            with contextlib.suppress(BrokenPipeError):  # (it ended: its exit says why)
                proc.stdin.write(stdin)
                proc.stdin.close()
            poller = select.poll()
            poller.register(watcher.fileno(), select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            seen = 0
            while seen < commits:
                ready = {fd for fd, _ in poller.poll()}
                got = watcher.made_by(proc.pid) if watcher.fileno() in ready else 0
                if got is None or (pidfd in ready and seen + got < commits):
                    break  # notifications lost, or it exited before committing them all
                seen += got
        except BaseException:  # (Ctrl-C): nothing is left running
            proc.kill()
            proc.wait()
            raise
        if seen < commits:
            said = proc.stderr.read()  # (to its end: a tool blocked on a full pipe ends too)
            proc.wait()
            _check(argv, what, deadline.killed, proc.returncode, said)


class _Deadline:
    """Kill a tool that has not finished in TIMEOUT seconds (a timer, not Popen's timeout:
    see :func:`run`)."""

    def __init__(self, proc: subprocess.Popen):
        self.killed = False
        self._proc = proc
        self._timer = threading.Timer(TIMEOUT, self._kill)

    def _kill(self) -> None:
        self.killed = True
        self._proc.kill()

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def in_scratch(commands: str, stdin: str, what: str, package: str) -> str:
    """Run shell ``commands`` in a new, empty network namespace (``unshare --net``: its own
    firewall, gone with the process) and return their output: how the kernel reads back
    rules it was given, for ``check`` to compare with the host's."""
    return run(["unshare", "--net", "sh", "-ec", commands], stdin, what, package).stdout
