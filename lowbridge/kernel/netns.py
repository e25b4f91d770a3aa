"""Network namespaces as files, and work done inside a namespace (no pyroute2 here).

A named namespace is a bind mount of an nsfs inode on ``/run/netns/<name>``, exactly what
``ip netns add`` makes, so ``ip netns list`` / ``ip netns exec`` see lowbridge's sandboxes.

``setns(2)`` switches only the calling *thread*, and ``/proc/sys/net`` resolves against the netns
of the task that opens the file, so sysctls and sockets for another namespace are made in a
thread that joins it (shared/reference/pyroute2-notes.md section 2 and pitfall 13); the main
thread never moves.  :func:`submit` is the one way in: it queues a job for a long-lived worker
thread -- optionally joined to a namespace first -- and returns its :class:`Future`.  After each
job the worker goes back to the process's own network and UTS namespaces, so a job never
inherits another's.  One worker, not a thread per job
(which cost ~0.3 ms, three times per sandbox: bench/attach.py); and a caller that does not wait
at once wires one sandbox while the worker makes the next one's namespaces on the second CPU
(the kernel work releases the GIL: bench/lab.py).  Python 3.12 has ``os.setns``; 3.10/3.11 need
libc through ctypes.
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
from typing import Generic, TypeVar

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


# -- the worker --------------------------------------------------------------------------------
class Future(Generic[_T]):
    """A job's outcome: :meth:`result` waits for it, then returns its value or raises its
    exception, as often as it is asked.  (concurrent.futures.Future does as much, but its
    import brings logging along: ~6 ms of every command's start-up, bench/cli.py.)"""

    __slots__ = ("_waiting", "_value", "_error")

    def __init__(self) -> None:
        self._waiting = threading.Lock()
        self._waiting.acquire()  # released once settled
        self._error: BaseException | None = None

    def set_result(self, value: _T) -> None:
        self._value = value
        self._waiting.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._waiting.release()

    def done(self) -> bool:
        if self._waiting.acquire(blocking=False):
            self._waiting.release()
            return True
        return False

    def result(self) -> _T:
        with self._waiting:  # waits until settled, and leaves it open for the next caller
            pass
        if self._error is not None:
            raise self._error
        return self._value


def submit(fn: Callable[[], _T], netns: str | None = None) -> Future[_T]:
    """Run ``fn`` in the namespace worker -- inside the network namespace at ``netns`` when
    given -- and return its future.  ``fn`` may move the worker into other network or UTS
    namespaces (setns, unshare): the worker returns to the process's own afterwards.

    A job that submits another job (the worker is busy with it) gets it run at once in a thread
    of its own: the returned future is already done."""
    job = fn if netns is None else functools.partial(_inside, netns, fn)
    future: Future[_T] = Future()
    if not _queue(job, future):
        thread = threading.Thread(target=_run, args=(job, future), name="lowbridge-netns")
        thread.start()
        thread.join()
    return future


def run(fn: Callable[[], _T], netns: str | None = None) -> _T:
    """:func:`submit` and wait: ``fn``'s result or its exception.  With ``netns`` None, ``fn``
    runs right here (the caller's own namespace)."""
    if netns is None:
        return fn()
    return submit(fn, netns).result()


def _inside(path: str, fn: Callable[[], _T]) -> _T:
    _join(path)
    return fn()


def _run(fn: Callable[[], object], future: Future) -> None:
    try:
        result = fn()
    except BaseException as exc:  # re-raised by future.result()
        future.set_exception(exc)
    else:
        future.set_result(result)


class _Worker(threading.Thread):
    """The thread that namespace jobs run in; see :func:`submit`."""

    def __init__(self) -> None:
        super().__init__(name="lowbridge-netns", daemon=True)
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.broken = False
        # The namespaces to come back to: the process's own (the main thread's).
        self.home = [
            (os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC), flag)
            for kind, flag in (("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS))
        ]

    def run(self) -> None:
        while True:
            fn, future = self.jobs.get()
            result: list = []
            failure: list[BaseException] = []
            try:
                result.append(fn())
            except BaseException as exc:
                failure.append(exc)
            if not self._home() and not failure:
                failure.append(KernelError("namespace worker: cannot return to its namespaces"))
            # The future is settled only once the worker is home: a caller that goes on at once
            # must not find the worker still in the job's namespace.
            if failure:
                future.set_exception(failure[0])
            else:
                future.set_result(result[0])
            if self.broken:
                self._retire()
                return

    def _retire(self) -> None:
        """A broken worker's jobs still queued go to a new worker.  Taken under the lock
        :func:`_queue` queues under: a job queued after this sees the worker broken and goes
        to the new one."""
        for fd, _ in self.home:
            os.close(fd)
        leftover = []
        with _workers_lock:
            while not self.jobs.empty():
                leftover.append(self.jobs.get_nowait())
        for job in leftover:
            _queue(*job)

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


def _queue(fn: Callable[[], object], future: Future) -> bool:
    """Queue a job for the live worker (started on first use, again after a failure or a
    fork); False, queueing nothing, when called from the worker itself."""
    with _workers_lock:
        current = _workers[0] if _workers else None
        if current is None or current.broken:
            current = _Worker()
            current.start()
            _workers[:] = [current]
        elif threading.current_thread() is current:
            return False
        current.jobs.put((fn, future))
        return True


def _join(path: str) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"enter network namespace {path}")
    finally:
        os.close(fd)


# -- named namespaces --------------------------------------------------------------------------
def path_of(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def netlink_socket(path: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket bound to the namespace at ``path`` (no fork, unlike pyroute2's)."""
    try:
        return run(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0), path)
    except FileNotFoundError:
        raise NotFound(f"network namespace {path} does not exist") from None


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2's netns_add does.

    Shared propagation matters: processes started with ``ip netns exec`` live in slave copies of
    the mount namespace, and only a shared /run/netns lets a later unmount reach those copies --
    otherwise each copy would keep the deleted namespace (and its veths) alive.  (0755: ``ip
    netns`` lists and enters the namespaces as any user may.)
    """
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    if _libc.mount(b"none", NETNS_RUN_DIR.encode(), None, MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(-1, f"make {NETNS_RUN_DIR} shared")
    # Not a mount point yet: bind it onto itself, then make that shared.
    run_dir = NETNS_RUN_DIR.encode()
    _check(_libc.mount(run_dir, run_dir, b"none", MS_BIND | MS_REC, None), f"bind {NETNS_RUN_DIR}")
    _check(
        _libc.mount(b"none", run_dir, None, MS_SHARED | MS_REC, None),
        f"make {NETNS_RUN_DIR} shared",
    )


def _placeholder(path: str) -> None:
    try:
        flags = os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(path, flags, 0o444))
    except FileExistsError:
        raise Conflict(f"network namespace {path} already exists") from None


def create(name: str, ipv6_off: bool = True) -> Future[socket.socket]:
    """Create the named namespace: the file ``path_of(name)`` is claimed now (Conflict if it
    exists), the namespace made by the worker; the future gives a netlink socket inside it.  A
    failure leaves no file behind.

    With ``ipv6_off`` IPv6 is disabled namespace-wide before any interface exists.  Fork-free: a
    thread unshares its network namespace and bind-mounts ``/proc/thread-self/ns/net`` (not
    ``/proc/self``, which is the main thread's) on the path.
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
                knob = f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6"
                with contextlib.suppress(FileNotFoundError), open(knob, "w") as f:
                    f.write("1")  # (no such file: a kernel without IPv6)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)

    return _claimed(path, inside)


def create_uts(path: str, hostname: str, domainname: str = "") -> Future[None]:
    """A UTS namespace with ``hostname`` (and NIS ``domainname``), bind-mounted on ``path``
    (what ``--hostname`` gives the processes lowbridge starts in a sandbox; ``nsenter
    --uts=PATH`` enters it), made by the worker as :func:`create` makes a network namespace:
    the process's own hostname never changes."""
    _placeholder(path)

    def inside() -> None:
        _check(_libc.unshare(CLONE_NEWUTS), "unshare UTS namespace")
        name = hostname.encode()
        _check(_libc.sethostname(name, len(name)), f"set hostname {hostname}")
        if domainname:
            domain = domainname.encode()
            _check(_libc.setdomainname(domain, len(domain)), f"set domain name {domainname}")
        _check(
            _libc.mount(b"/proc/thread-self/ns/uts", path.encode(), b"none", MS_BIND, None),
            f"bind-mount UTS namespace on {path}",
        )

    return _claimed(path, inside)


def _claimed(path: str, inside: Callable[[], _T]) -> Future[_T]:
    """Submit ``inside`` -- which mounts a namespace on ``path``, a file just claimed -- and
    remove the file again if it fails."""

    def job() -> _T:
        try:
            return inside()
        except BaseException:
            _unlink(path)
            raise

    try:
        return submit(job)
    except BaseException:
        _unlink(path)
        raise


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
    """The device of nsfs, the one pseudo filesystem of every namespace inode."""
    return os.stat("/proc/self/ns/net").st_dev


def is_netns(path: str) -> bool:
    """True if ``path`` is an nsfs inode of a network namespace (a live mount, not a stale file)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_dev == _nsfs_dev()


def identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the namespace at ``path``, None if there is none: two paths name the
    same namespace when these are equal."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def listed() -> set[str]:
    """The paths of the named namespaces (one listing of /run/netns)."""
    try:  # every change lists them: one format per name, not an os.path.join
        return {f"{NETNS_RUN_DIR}/{name}" for name in os.listdir(NETNS_RUN_DIR)}
    except OSError:
        return set()


# -- sysctls -----------------------------------------------------------------------------------
def sysctl_path(key: str) -> str:
    """``/proc/sys/...`` of a key: dotted (``net.ipv4.ip_forward``) or slash-separated, which
    interface names with dots (eth0.10) need."""
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def write_sysctls(settings: list[tuple[str, str]], netns: str | None = None) -> None:
    """Write sysctls in one visit of the namespace at ``netns`` (None: the caller's own)."""

    def write() -> None:
        for key, value in settings:
            try:
                with open(sysctl_path(key), "w") as f:
                    f.write(value)
            except OSError as exc:
                raise KernelError.from_os(f"set sysctl {key}={value}", exc) from None

    run(write, netns)


def read_sysctl(key: str, netns: str | None = None) -> str:
    def read() -> str:
        with open(sysctl_path(key)) as f:
            return f.read().strip()

    return run(read, netns)
