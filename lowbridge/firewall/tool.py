"""Running the firewall tools (iptables-save/-restore, nft): one exec, errors as KernelError."""

from __future__ import annotations

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
    import threading

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
    if killed:
        raise KernelError(f"{what}: {argv[0]} did not finish in {TIMEOUT:g} s")
    if proc.returncode != 0:
        reason = [ln for ln in (err or out).strip().splitlines() if ln.strip()]
        raise KernelError(f"{what}: {argv[0]} failed: {reason[0] if reason else proc.returncode}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def in_scratch(commands: str, stdin: str, what: str, package: str) -> str:
    """Run shell ``commands`` in a new, empty network namespace (``unshare --net``: its own
    firewall, gone with the process) and return their output: how the kernel reads back
    rules it was given, for ``check`` to compare with the host's."""
    return run(["unshare", "--net", "sh", "-ec", commands], stdin, what, package).stdout
