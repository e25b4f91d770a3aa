"""Running the firewall tools (iptables-save/-restore, nft): one exec, errors as KernelError."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lowbridge.errors import KernelError

if TYPE_CHECKING:
    import subprocess


def run(argv: list[str], stdin: str | None, what: str, package: str) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``stdin``; a failure names ``what`` and the tool's first error line."""
    import subprocess  # here: most commands never run a tool (libnftables is in-process)

    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise KernelError(f"{what}: {argv[0]} not found (install {package})") from None
    if proc.returncode != 0:
        reason = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        raise KernelError(f"{what}: {argv[0]} failed: {reason[0] if reason else proc.returncode}")
    return proc
