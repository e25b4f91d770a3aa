"""How lowbridge commands talk to the resolver process (:mod:`.server`).

Every message is one JSON line on ``<run>/dns.sock`` (a path, not an abstract socket: those are
per network namespace -- dns-notes 2), optionally with sockets attached (SCM_RIGHTS), answered by
one JSON line (unless it says ``"reply": false``).  The only message is ``sync``: "re-read the
store; here are new sandboxes' sockets".  Commands send it while they hold the host lock, after
their change is committed.

Starting on demand: the command binds the control socket itself and passes it to the new
process (socket activation), so its first message is queued in the backlog instead of racing the
resolver's start-up (~0.2 s of Python imports).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import socket
import sys

from lowbridge.config import Paths, private_file
from lowbridge.errors import KernelError, LowbridgeError

REPLY_TIMEOUT = 10.0  # a sync re-reads the store and binds sockets: milliseconds, unless wedged
ADOPT_PER_MESSAGE = 120  # two descriptors each, under SCM_MAX_FD (253)
GENERATION_SIZE = 8


def socket_path(paths: Paths) -> str:
    return os.path.join(paths.run, "dns.sock")


def log_path(paths: Paths) -> str:
    return os.path.join(paths.run, "dns.log")


def generation_path(paths: Paths) -> str:
    return os.path.join(paths.run, "dns.gen")


def generation_map(paths: Paths) -> mmap.mmap:
    """The resolver's read-only view of the generation counter (8 bytes, created if absent)."""
    paths.run_dir()
    fd = private_file(generation_path(paths), os.O_RDWR | os.O_CREAT)
    try:
        if os.fstat(fd).st_size < GENERATION_SIZE:
            os.ftruncate(fd, GENERATION_SIZE)
        return mmap.mmap(fd, GENERATION_SIZE, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def bump(paths: Paths) -> None:
    """Move the generation on (under the host lock, after sending a message not waited for):
    the resolver's next query sees it and takes that message first."""
    fd = private_file(generation_path(paths), os.O_RDWR | os.O_CREAT)
    try:
        old = os.pread(fd, GENERATION_SIZE, 0).ljust(GENERATION_SIZE, b"\0")
        value = (int.from_bytes(old, "little") + 1) % (1 << 64)
        os.pwrite(fd, value.to_bytes(GENERATION_SIZE, "little"), 0)
    finally:
        os.close(fd)


def running(paths: Paths) -> bool:
    conn = _connect(paths)
    if conn is None:
        return False
    conn.close()
    return True


def _connect(paths: Paths) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        conn.connect(socket_path(paths))
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None
    except OSError as exc:
        conn.close()
        raise KernelError.from_os("connect to the DNS resolver", exc) from None
    return conn


def _start(paths: Paths) -> socket.socket:
    """Start a resolver on a fresh control socket; return a connection to it."""
    path = socket_path(paths)
    paths.run_dir()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead resolver's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(64)
        argv = [sys.executable, "-m", "lowbridge.dns.server", "--listen-fd",
                str(listener.fileno())]  # fmt: skip
        argv += ["--state", paths.state, "--run", paths.run]
        log_fd = private_file(log_path(paths), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        with os.fdopen(log_fd, "ab") as log:
            import subprocess

            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=[listener.fileno()],
                start_new_session=True,
                cwd="/",
            )
    except OSError as exc:
        raise KernelError.from_os("start the DNS resolver", exc) from None
    finally:
        listener.close()
    conn = _connect(paths)
    if conn is None:
        raise KernelError("start the DNS resolver: its control socket vanished")
    return conn


def sync(
    paths: Paths,
    adopt: dict[str, tuple[socket.socket, socket.socket]] | None = None,
    start: bool = False,
    wait: bool = True,
) -> dict | None:
    """Tell the resolver the store changed, handing it ``adopt``'s sockets (container id ->
    (udp, tcp)).  With ``start``, start it if it is not running (else do nothing then).

    ``wait``: read its reply (returned; None when not running and not started, or not
    waiting).  Not waiting is safe for ordering -- the resolver takes pending control messages
    before it answers any query (:meth:`.server.Resolver.answer`), so the very next query sees
    the change -- but only a sender that waits learns that the resolver is exiting because
    nothing needs it: a change after which no sandbox needs the resolver must wait.  A resolver
    this call starts is always waited for: until its first sync it has not bound the ports of
    the sandboxes it serves after a crash, and their queries would be refused.

    One message carries at most ``ADOPT_PER_MESSAGE`` sandboxes' sockets (the kernel passes
    at most 253 descriptors per SCM_RIGHTS message, SCM_MAX_FD): a batch sends several."""
    items = list((adopt or {}).items())
    chunks = [dict(items[i : i + ADOPT_PER_MESSAGE])
              for i in range(0, len(items), ADOPT_PER_MESSAGE)] or [{}]  # fmt: skip
    for chunk in chunks[:-1]:
        _sync(paths, chunk, True, False)
    return _sync(paths, chunks[-1], start, wait)


def _sync(
    paths: Paths, adopt: dict[str, tuple[socket.socket, socket.socket]], start: bool, wait: bool
) -> dict | None:
    fds: list[int] = []
    index: dict[str, list[int]] = {}
    for cid, (u, t) in adopt.items():
        index[cid] = [len(fds), len(fds) + 1]
        fds += [u.fileno(), t.fileno()]
    for attempt in range(2):
        conn = _connect(paths)
        if conn is None:
            if not (start or adopt):
                return None
            conn = _start(paths)
            wait = True
        message = json.dumps({"op": "sync", "adopt": index, "reply": wait}).encode() + b"\n"
        with conn:
            conn.settimeout(REPLY_TIMEOUT)
            try:
                socket.send_fds(conn, [message], fds)
                if not wait:
                    bump(paths)
                    return None
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            except OSError as exc:
                if attempt:
                    raise KernelError.from_os("sync the DNS resolver", exc) from None
                continue
        if reply.endswith(b"\n"):
            return json.loads(reply)
        # It closed without answering: it was exiting as we connected.  Start a new one.
    raise KernelError("sync the DNS resolver: no answer (see " + log_path(paths) + ")")


def status(paths: Paths) -> list[str] | None:
    """The sandboxes (container ids) the running resolver serves, asked without a re-read of
    the store; None when none runs."""
    conn = _connect(paths)
    if conn is None:
        return None
    with conn:
        conn.settimeout(REPLY_TIMEOUT)
        try:
            conn.sendall(json.dumps({"op": "status"}).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    return None  # it was exiting
                reply += chunk
        except OSError as exc:
            raise KernelError.from_os("ask the DNS resolver", exc) from None
    return list(json.loads(reply).get("sandboxes", []))


class Resolver:
    """The controller's handle on the resolver: binding a sandbox's sockets and redirect, and
    telling the resolver what changed (the unit tests use a fake)."""

    def __init__(self, paths: Paths):
        self.paths = paths
        # Sockets bound by this command (container id -> (udp, tcp)), for the next sync.
        self.pending: dict[str, tuple[socket.socket, socket.socket]] = {}

    def listen(self, netns: str, backend: str, also: str | None = None):  # noqa: ANN201
        """Start binding the resolver's sockets in the sandbox at ``netns`` and redirecting
        127.0.0.11:53 (and ``also``:53) to them, in the namespace worker; the future (a
        kernel.netns.Future) gives the (udp, tcp) pair."""
        from lowbridge.dns import redirect
        from lowbridge.kernel import netns as ns

        return ns.submit(lambda: redirect.listen(backend, also), netns)

    def unlisten(self, netns: str, backend: str, also: str | None = None) -> None:
        """Remove the redirect from the sandbox at ``netns``."""
        from lowbridge.dns import redirect
        from lowbridge.kernel import netns as ns

        ns.run(lambda: redirect.remove(backend, also), netns)

    def running(self) -> bool:
        return running(self.paths)

    def serving(self) -> list[str] | None:
        """The container ids the resolver serves; None when it does not run."""
        return status(self.paths)

    def sync(self, needed: bool, relays: bool = False) -> None:
        """Under the lock, after a change: the resolver in line with the store (started if a
        sandbox needs it; it exits when none does), handed the sockets bound meanwhile.  Best
        effort: a failure is a warning, and the next command retries.

        Only a change after which no sandbox needs the resolver waits for its answer (it may
        be exiting); the others go on while it re-reads the store: it applies pending messages
        before it answers any query.  With ``relays`` (a sandbox publishes on [::1]) every
        change waits: a port it opens must listen before the command returns."""
        adopt, self.pending = self.pending, {}
        try:
            sync(self.paths, adopt, start=needed or bool(adopt), wait=not needed or relays)
        except LowbridgeError as exc:
            print(f"lowbridge: warning: embedded DNS: {exc}", file=sys.stderr)
        finally:
            for pair in adopt.values():
                for sock in pair:
                    sock.close()
