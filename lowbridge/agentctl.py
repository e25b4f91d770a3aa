"""How commands start ``lowbridge agent`` on demand (as :mod:`lowbridge.dns.control` starts the
resolver): one agent per host, holding ``<run>/agent.lock`` for its life; a command that finds
an overlay namespace and nobody holding the lock starts one (:mod:`lowbridge.agent`)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from lowbridge.config import Paths, private_file


def lock_path(paths: Paths) -> str:
    return os.path.join(paths.run, "agent.lock")


def hold_lock(paths: Paths, wait: bool) -> int | None:
    """The agent lock's descriptor, held; None if another process holds it (``wait`` false)."""
    paths.run_dir()
    fd = private_file(lock_path(paths), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def missing(paths: Paths) -> bool:
    """Whether this host has an overlay namespace and no agent following the cluster."""
    if not overlay_namespaces():
        return False
    fd = hold_lock(paths, wait=False)
    if fd is not None:
        os.close(fd)
    return fd is not None


def ensure_running(paths: Paths) -> None:
    """Start an on-demand agent unless one serves this host (called under the host lock)."""
    fd = hold_lock(paths, wait=False)
    if fd is None:
        return
    os.close(fd)  # nobody held it: start one, which takes it
    log_fd = private_file(os.path.join(paths.run, "agent.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # fmt: skip
    try:
        subprocess.Popen([sys.executable, "-m", "lowbridge", "_agent"], stdin=subprocess.DEVNULL,
                         stdout=log_fd, stderr=log_fd, start_new_session=True, cwd="/")  # fmt: skip
    finally:
        os.close(log_fd)


def overlay_namespaces() -> list[str]:
    """This host's overlay namespaces (lowbridge.drivers.overlay)."""
    from lowbridge.drivers import overlay
    from lowbridge.kernel import netns

    if not os.path.isdir(netns.NETNS_RUN_DIR):
        return []
    return [n for n in os.listdir(netns.NETNS_RUN_DIR) if n.startswith(overlay.NS_PREFIX)]
