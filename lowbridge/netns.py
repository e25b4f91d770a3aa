"""Network namespaces as files, and per-namespace work done in a worker thread (no pyroute2).

A named namespace is a bind mount of an nsfs inode on ``/run/netns/<name>``, exactly what
``ip netns add`` makes, so ``ip netns list`` / ``ip netns exec`` see lowbridge's sandboxes.

``setns(2)`` switches only the calling *thread*, and ``/proc/sys/net`` resolves against the netns
of the task that opens the file, so sysctls and sockets for another namespace are done in a
thread that joins it (shared/reference/pyroute2-notes.md section 2 and pitfall 13).  The main
thread never moves.  That thread is a long-lived worker that goes back to the process's own
network and UTS namespaces after each job (:func:`in_thread`): starting and joining a thread per
job cost ~0.3 ms, three times per sandbox (bench/attach.py).  Jobs can also be queued without
waiting (:func:`start`, :func:`start_in`, :func:`create_start`, :func:`create_uts_start` return
the wait): the caller wires one sandbox while the worker makes the namespaces of the next, on the
second CPU (the kernel work releases the GIL; bench/lab.py).  Python 3.12 has ``os.setns``;
3.10/3.11 need libc via ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import queue
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from lowbridge.errors import Conflict, KernelError, NotFound

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)
_T = TypeVar("_T")


def _check(ret: int, what: str) -> None:
    if ret != 0:
        code = ctypes.get_errno()
        raise KernelError.from_os(what, OSError(code, os.strerror(code)))


def in_thread(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` in the namespace worker and return its result (or raise its exception).

    ``fn`` may move the worker into other network or UTS namespaces (setns, unshare): the worker
    returns to the process's own afterwards.  A job that asks for another job runs it in a
    thread of its own (the worker is busy with it)."""
    return start(fn)()


def start(fn: Callable[[], _T]) -> Callable[[], _T]:
    """Queue ``fn`` for the namespace worker (as :func:`in_thread`) without waiting; return a
    function that waits for it and returns its result or raises its exception (callable again:
    the same outcome).  The caller's thread goes on meanwhile -- the kernel work of a job
    (unshare, mount, a netfilter commit) releases the GIL."""
    box: dict = {}
    done: threading.Lock | None = threading.Lock()
    done.acquire()  # released by the worker
    if not _submit((fn, box, done)):  # called from a job
        thread = threading.Thread(target=_run, args=(fn, box), name="lowbridge-netns")
        thread.start()
        thread.join()
        done = None

    def wait() -> _T:
        if done is not None and "finished" not in box:
            done.acquire()
            box["finished"] = True
        if "error" in box:
            raise box["error"]
        return box["value"]

    return wait


def _run(fn: Callable[[], object], box: dict) -> None:
    try:
        box["value"] = fn()
    except BaseException as exc:  # re-raised in the caller
        box["error"] = exc


class _Worker(threading.Thread):
    """The thread that namespace jobs run in; see :func:`in_thread`."""

    def __init__(self) -> None:
        super().__init__(name="lowbridge-netns", daemon=True)
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.broken = False
        # The namespaces to come back to: the process's own (the main thread's).
        self.home = [(os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC), flag)
                     for kind, flag in (("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS))]  # fmt: skip

    def run(self) -> None:
        while True:
            fn, box, done = self.jobs.get()
            _run(fn, box)
            if not self._home() and "error" not in box:
                box["error"] = KernelError("namespace worker: cannot return to its namespaces")
            done.release()
            if self.broken:
                self._retire()
                return

    def _retire(self) -> None:
        """A broken worker's jobs still queued go to a new worker (:func:`start` queues
        without waiting, so there may be some).  Taken under the lock :func:`_submit` queues
        under: a job queued after this sees the worker broken and goes to the new one."""
        for fd, _ in self.home:
            os.close(fd)
        leftover = []
        with _workers_lock:
            while not self.jobs.empty():
                leftover.append(self.jobs.get_nowait())
        for job in leftover:
            _submit(job)

    def _home(self) -> bool:
        for fd, flag in self.home:
            if _libc.setns(fd, flag) != 0:
                self.broken = True  # never run a job in a namespace it did not ask for
        return not self.broken


_workers: list[_Worker] = []
_workers_lock = threading.Lock()


def _after_fork() -> None:
    """A forked child has no worker thread, and a lock another thread held stays held."""
    global _workers_lock
    _workers.clear()
    _workers_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def _submit(job: tuple) -> bool:
    """Queue ``job`` for the live worker (started on first use, again after a failure or a
    fork: see _after_fork); False, queueing nothing, when called from the worker itself."""
    with _workers_lock:
        current = _workers[0] if _workers else None
        if current is None or current.broken:
            current = _Worker()
            current.start()
            _workers[:] = [current]
        elif threading.current_thread() is current:
            return False
        current.jobs.put(job)
        return True


def _join(path: str) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"enter network namespace {path}")
    finally:
        os.close(fd)


def run_in(path: str | None, fn: Callable[[], _T]) -> _T:
    """Run ``fn`` with the network namespace at ``path`` (None: the caller's own)."""
    if path is None:
        return fn()
    return start_in(path, fn)()


def start_in(path: str, fn: Callable[[], _T]) -> Callable[[], _T]:
    """:func:`run_in` without waiting: see :func:`start`."""

    def inside() -> _T:
        _join(path)
        return fn()

    return start(inside)


def netlink_socket(path: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket bound to the namespace at ``path`` (no fork, unlike pyroute2's)."""
    try:
        return run_in(path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0))
    except FileNotFoundError:
        raise NotFound(f"network namespace {path} does not exist") from None


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2's netns_add does.

    Shared propagation matters: processes started with ``ip netns exec`` live in slave copies of
    the mount namespace, and only a shared /run/netns lets a later unmount reach those copies --
    otherwise each copy would keep the deleted namespace (and its veths) alive.
    """
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    if _libc.mount(b"none", NETNS_RUN_DIR.encode(), None, MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(-1, f"make {NETNS_RUN_DIR} shared")
    # Not a mount point yet: bind it onto itself, then make that shared.
    run = NETNS_RUN_DIR.encode()
    _check(_libc.mount(run, run, b"none", MS_BIND | MS_REC, None), f"bind {NETNS_RUN_DIR}")
    _check(
        _libc.mount(b"none", run, None, MS_SHARED | MS_REC, None), f"make {NETNS_RUN_DIR} shared"
    )


def path_of(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def _placeholder(path: str) -> None:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    except FileExistsError:
        raise Conflict(f"network namespace {path} already exists") from None


def create(name: str, ipv6_off: bool = True) -> tuple[str, socket.socket]:
    """Create the named namespace; return its path and a netlink socket inside it.

    (:func:`create_start` and then its wait.)
    """
    return create_start(name, ipv6_off)()


def create_start(name: str, ipv6_off: bool = True) -> Callable[[], tuple[str, socket.socket]]:
    """Start creating the named namespace (see :func:`create`): the file is claimed now, the
    namespace made by the worker meanwhile; the returned function waits and returns what
    :func:`create` returns (a failure leaves no file behind).

    With ``ipv6_off`` IPv6 is disabled namespace-wide before any interface exists.

    Fork-free: a thread unshares its network namespace and bind-mounts
    ``/proc/thread-self/ns/net`` (not ``/proc/self``, which is the main thread's) on the path.
    """
    _ensure_run_dir()
    path = path_of(name)
    _placeholder(path)

    def inside() -> socket.socket:
        _check(_libc.unshare(CLONE_NEWNET), "unshare network namespace")
        _check(
            _libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
            f"bind-mount network namespace on {path}",
        )
        if ipv6_off:
            # Every interface made here later inherits "default"; "all" covers lo, which then
            # has no ::1 -- as in Docker's containers without IPv6 networks (see
            # shared/reference/docker-20.10/docker-container-netns.txt).
            for scope in ("all", "default"):
                try:
                    with open(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "w") as f:
                        f.write("1")
                except FileNotFoundError:  # kernel without IPv6: nothing to disable
                    pass
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)

    wait = _start_claimed(path, inside)
    return lambda: (path, wait())


def _start_claimed(path: str, inside: Callable[[], _T]) -> Callable[[], _T]:
    """Start ``inside`` -- which mounts a namespace on ``path``, a file just claimed -- in the
    worker; the returned wait gives its result, or removes the file and raises."""
    try:
        wait = start(inside)
    except BaseException:
        _unlink(path)
        raise

    def made() -> _T:
        try:
            return wait()
        except BaseException:
            _unlink(path)
            raise

    return made


def create_uts(path: str, hostname: str) -> None:
    """A UTS namespace with ``hostname``, bind-mounted on ``path`` (what ``--hostname`` gives
    the processes lowbridge starts in a sandbox; ``nsenter --uts=PATH`` enters it).  Made in a
    throwaway thread, like :func:`create`: the process's own hostname never changes."""
    create_uts_start(path, hostname)()


def create_uts_start(path: str, hostname: str) -> Callable[[], None]:
    """:func:`create_uts` without waiting: as :func:`create_start`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _placeholder(path)

    def inside() -> None:
        _check(_libc.unshare(CLONE_NEWUTS), "unshare UTS namespace")
        name = hostname.encode()
        _check(_libc.sethostname(name, len(name)), f"set hostname {hostname}")
        _check(
            _libc.mount(b"/proc/thread-self/ns/uts", path.encode(), b"none", MS_BIND, None),
            f"bind-mount UTS namespace on {path}",
        )

    return _start_claimed(path, inside)


def adopt(source: str, name: str) -> str:
    """Bind-mount an existing namespace (e.g. /proc/PID/ns/net) on /run/netns/<name>."""
    if not is_netns(source):
        raise NotFound(f"{source} is not a network namespace")
    _ensure_run_dir()
    path = path_of(name)
    _placeholder(path)
    try:
        _check(
            _libc.mount(source.encode(), path.encode(), b"none", MS_BIND, None),
            f"bind-mount {source} on {path}",
        )
    except BaseException:
        _unlink(path)
        raise
    return path


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove(path: str) -> None:
    """Unmount and delete a namespace file; already gone is success.

    The namespace itself dies when nothing else holds it (the kernel then destroys its devices,
    asynchronously: a veth's host end lingers for ~35 ms, pyroute2-notes 7.3).
    """
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):
            raise KernelError.from_os(f"unmount {path}", OSError(code, os.strerror(code)))
    _unlink(path)


@functools.cache
def _nsfs_dev() -> int:
    """The device of nsfs, the one pseudo filesystem of every namespace inode (a stat in /proc
    costs ~11 us here, and reconcile asks once per sandbox)."""
    return os.stat("/proc/self/ns/net").st_dev


def is_netns(path: str) -> bool:
    """True if ``path`` is an nsfs inode of a network namespace (a live mount, not a stale file)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_dev == _nsfs_dev()


def same_netns(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def sysctl_path(key: str) -> str:
    # Interface names may contain dots (eth0.10): callers pass the key with "/" already where
    # needed; plain dotted keys are converted.
    return "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key


def write_sysctls(settings: list[tuple[str, str]], netns_path: str | None = None) -> None:
    """Write sysctls (keys as in ``sysctl``, or slash-separated) in one namespace visit."""

    def write() -> None:
        for key, value in settings:
            try:
                with open(sysctl_path(key), "w") as f:
                    f.write(value)
            except OSError as exc:
                raise KernelError.from_os(f"set sysctl {key}={value}", exc) from None

    run_in(netns_path, write)


def read_sysctl(key: str, netns_path: str | None = None) -> str:
    def read() -> str:
        with open(sysctl_path(key)) as f:
            return f.read().strip()

    return run_in(netns_path, read)
