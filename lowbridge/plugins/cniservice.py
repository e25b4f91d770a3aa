"""``lowbridge-cni``, the executable, and the warm process that does its calls.

A CNI runtime runs the plugin once per command, and Podman runs VERSION before each ADD and
DEL: as a fresh Python process each call spent ~90 % of its time starting and importing
(bench/podman.py: ~20 ms for VERSION, ~95 ms for an ADD whose work is ~6 ms warm).  So the
executable is a thin client -- it imports nothing but ``os``, ``sys`` and ``_socket`` -- that
hands its environment and stdin to one lowbridge process per run directory, the *service*, over
``<run>/cni.sock``, and prints what it answers.  This is the shape of Multus's "thick" plugin
and of Cilium's and Calico's CNI binaries (a shim in front of a resident agent).

The service does each call exactly as a fresh process would: with the caller's environment
(os.environ is replaced for the call: ``LOWBRIDGE_*``, PATH, the test hooks), a new
controller, one call at a time (a runtime may call in parallel; lowbridge's changes are
serialized by the host lock anyway), its stderr sent back for the client to print; a bug that
escapes a call fails that call (code 5, the traceback on the caller's stderr), not the service.  The
first call that finds no service starts one (a flock keeps it to one per run directory) and
waits for its socket; the service exits after ``LOWBRIDGE_CNI_IDLE`` seconds without a call
(default 60) or on SIGTERM.  A service killed during a call -- its changes are journaled, as
every command's -- answers nothing: an idempotent command (all but ADD) is sent once more, to a
new service; an ADD gets the spec's "try again later" (11), and the next call's service settles
what the killed one left before anything else.

``lowbridge plugin cni`` installs the plugin where a runtime looks for it (:func:`install`): not
this console script but a few lines of sh (:func:`shim`) that print VERSION's answer themselves
and run the client with ``python -S -I`` (no site: its imports need none), ~10 ms less per
container than the console script (bench/podman.py).

Wire (both ends here): the request is the environment's ``KEY=VALUE`` entries, NUL-separated,
after their 4-byte length, then stdin up to the end of the stream; the answer is the exit
status (one byte), stdout's length (4 bytes) and stdout, then stderr up to the end.
"""

from __future__ import annotations

import _socket  # (socket.py imports enum and more: ~5 ms of every call)
import os
import sys

SOCKET, LOCK, LOG = "cni.sock", "cni.lock", "cni.log"
IDLE_ENV, IDLE = "LOWBRIDGE_CNI_IDLE", 60.0
DIED = (b'{"cniVersion": "1.1.0", "code": 11, "msg": "lowbridge\'s CNI service ended during '
        b'the call: the next call finishes or undoes what it left", '
        b'"details": "see LOG"}\n')  # fmt: skip


def run_dir(env: dict | os._Environ) -> str:
    """lowbridge's run directory for ``env``: what ``config.Paths.resolve().run`` says (not
    imported here: dataclasses alone costs the client ~5 ms)."""
    root = env.get("LOWBRIDGE_ROOT")
    return os.path.join(os.path.abspath(root), "run") if root else "/run/lowbridge"


# ------------------------------------------------------------------ the wire
def request(env: dict | os._Environ, stdin: bytes) -> bytes:
    block = b"\0".join(f"{k}={v}".encode() for k, v in env.items())
    return len(block).to_bytes(4, "big") + block + stdin


def parse_request(data: bytes) -> tuple[dict[str, str], bytes]:
    size = int.from_bytes(data[:4], "big")
    pairs = (item.decode().partition("=") for item in data[4 : 4 + size].split(b"\0") if item)
    return {k: v for k, _, v in pairs}, data[4 + size :]


def answer(status: int, out: bytes, err: bytes) -> bytes:
    return bytes([status]) + len(out).to_bytes(4, "big") + out + err


def parse_answer(data: bytes) -> tuple[int, bytes, bytes] | None:
    """(status, stdout, stderr), or None for an answer cut short (the service died)."""
    if len(data) < 5 or len(data) < 5 + int.from_bytes(data[1:5], "big"):
        return None
    size = int.from_bytes(data[1:5], "big")
    return data[0], data[5 : 5 + size], data[5 + size :]


def _read_all(sock) -> bytes:  # noqa: ANN001 - a socket (the client's is _socket's)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------ the client
def main() -> int:
    """The ``lowbridge-cni`` executable (see the module docstring)."""
    stdin = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    # Every command but ADD may be sent again to a new service when the one that had it ended
    # before answering (they are idempotent: DEL, CHECK, STATUS, GC, VERSION); an ADD may have
    # committed before its service died, so it is the runtime's to retry, as the spec says.
    # (A dying service's listener may outlive the connection it dropped by a moment: a retry
    # then reaches it and is reset, and the next one finds it gone and starts another.)
    tries = 1 if os.environ.get("CNI_COMMAND") == "ADD" else 5
    for attempt in range(tries):
        if attempt:
            import time

            time.sleep(0.02)
        got = _ask(request(os.environ, stdin))
        if got is not None:
            break
    if got is None or got is False:
        sys.stdout.buffer.write(_died(b"did not start for" if got is False else b"ended during"))
        return 1
    status, out, err = got
    sys.stdout.buffer.write(out)
    sys.stderr.buffer.write(err)
    return status


def _ask(data: bytes) -> tuple[int, bytes, bytes] | bool | None:
    """The service's answer to ``data``; False when no service could be started, None when the
    one that had the call ended before answering."""
    path = os.path.join(run_dir(os.environ), SOCKET)
    sock = _connect(path)
    if sock is None:
        _start(os.environ)
        sock = _connect(path, wait=10.0)
        if sock is None:
            return False
    try:
        sock.sendall(data)
        sock.shutdown(_socket.SHUT_WR)
        return parse_answer(_read_all(sock))
    except OSError:
        return None
    finally:
        sock.close()


def _died(what: bytes) -> bytes:
    log = os.path.join(run_dir(os.environ), LOG).encode()
    return DIED.replace(b"ended during", what).replace(b"LOG", log)


def _connect(path: str, wait: float = 0.0) -> _socket.socket | None:
    """A connection to the service at ``path``, polling for up to ``wait`` seconds."""
    import time

    deadline = time.monotonic() + wait
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)


def _start(env: dict | os._Environ) -> None:
    """Start a service for ``env``'s run directory, detached (it outlives this call)."""
    import subprocess

    run = run_dir(env)
    os.makedirs(run, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(run, LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        subprocess.Popen([sys.executable, "-m", "lowbridge.plugins.cniservice", "--serve"],
                         stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd="/",
                         start_new_session=True)  # fmt: skip
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the installed plugin
SHIM = """#!/bin/sh
# lowbridge's CNI plugin, written by `lowbridge plugin cni` (run it again after moving or
# upgrading lowbridge).  A runtime asks VERSION before each ADD and DEL: the answer is printed
# here, without starting Python; every other command goes to lowbridge-cni's client (see
# lowbridge/plugins/cniservice.py), which imports only os, sys and _socket, so without site.
if [ "$CNI_COMMAND" = VERSION ]; then
    printf '%s\n' {version}
    exit 0
fi
exec {python} -S -I {client} "$@"
"""


def shim(python: str, client: str) -> str:
    """The installed plugin's text: ``python`` runs ``client`` (this file) for every command
    but VERSION, whose answer is cni.version_answer()'s."""
    import json
    import shlex

    from lowbridge.plugins import cni

    version = json.dumps(cni.version_answer())
    return SHIM.format(version=shlex.quote(version), python=shlex.quote(python),
                       client=shlex.quote(client))  # fmt: skip


def install(directory: str, name: str = "lowbridge") -> str:
    """Write the plugin as ``directory/name`` (CNI finds a plugin by its configuration's
    ``type``), for this interpreter; its path.  Replaces an earlier one atomically."""
    import contextlib

    from lowbridge.errors import InvalidInput, LowbridgeError

    if not name or "/" in name or name.startswith("."):
        raise InvalidInput(f"install the CNI plugin: {name!r} is not a file name")
    path = os.path.join(directory, name)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(directory, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(shim(sys.executable, os.path.abspath(__file__)))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LowbridgeError(f"install the CNI plugin as {path}: {exc.strerror}") from None
    return path


# ------------------------------------------------------------------ the service
def serve() -> None:
    """Answer calls on ``<run>/cni.sock`` until idle or terminated (one service per run
    directory: a second one finds the lock taken and leaves)."""
    import contextlib
    import fcntl
    import signal
    import socket
    import time

    from lowbridge.config import Paths, private_file

    paths = Paths.resolve()
    paths.run_dir()
    lock = private_file(os.path.join(paths.run, LOCK), os.O_RDWR | os.O_CREAT)
    deadline = time.monotonic() + 2
    while True:  # another one serves this run directory -- or is leaving it: it unlinks its
        try:  # socket, then exits (which frees the lock), and a call came in between
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
    path = os.path.join(paths.run, SOCKET)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead service's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    listener.settimeout(float(os.environ.get(IDLE_ENV) or IDLE))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    home = dict(os.environ)

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(None)
            try:
                env, stdin = parse_request(_read_all(conn))
                conn.sendall(_call(env, stdin, home))
            except OSError:  # (a client that gave up)
                pass

    try:
        while True:
            try:
                one(listener.accept()[0])
            except TimeoutError:
                break
        # Idle: the name goes first (a new call then starts another service, which waits for
        # this one's lock), then the calls that connected meanwhile are served: closing the
        # listener would reset them.
        os.unlink(path)
        listener.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                one(listener.accept()[0])
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # before the lock goes: a new service binds only a free name
        listener.close()


def _call(env: dict[str, str], stdin: bytes, home: dict[str, str]) -> bytes:
    """One call, as a fresh ``lowbridge-cni`` process with ``env`` would do it."""
    import contextlib
    import io
    import json

    from lowbridge.config import Paths
    from lowbridge.controller import Controller
    from lowbridge.plugins import cni

    err, made = io.StringIO(), []

    def controller() -> Controller:
        made.append(Controller(Paths.resolve()))
        return made[-1]

    os.environ.clear()
    os.environ.update(env)
    try:
        with contextlib.redirect_stderr(err):
            try:
                status, doc = cni.answer(os.environ, stdin.decode(errors="replace"), controller)
            except Exception as exc:  # a bug: this call fails, the service goes on
                import traceback

                traceback.print_exc()
                status, doc = (
                    1,
                    cni.CniError(
                        cni.IO_FAILURE, f"internal error: {exc.__class__.__name__}: {exc}"
                    ).doc(cni.SUPPORTED[-1]),
                )
    finally:
        os.environ.clear()
        os.environ.update(home)
        for ctl in made:  # its store's connection goes with the call, as with a process
            store = ctl.__dict__.get("store")  # (a cached property: opened only if used)
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()
    out = (json.dumps(doc) + "\n").encode() if doc is not None else b""
    return answer(status, out, err.getvalue().encode())


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
        sys.exit(0)
    sys.exit(main())
