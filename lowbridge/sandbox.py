"""Sandboxes' files and processes (no netlink here).

Per-sandbox ``/etc/hosts`` and ``/etc/resolv.conf`` live in ``/etc/netns/<name>/``;
``ip netns exec <name>`` bind-mounts every file there over ``/etc/`` in a private mount namespace,
so only processes started in the sandbox see them (ip-netns(8)).  Files are rewritten in place, not
renamed over: a bind mount pins the inode, and a running process must see updates (Docker also
rewrites the hosts file in place).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from lowbridge.errors import KernelError

if TYPE_CHECKING:
    import subprocess

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
# Docker's fallback when the host has no usable (non-loopback) nameserver
# (moby libnetwork/internal/resolvconf defaultIPv4NSs).
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
EMBEDDED_NAMESERVER = "127.0.0.11"  # lowbridge.dns.ADDRESS (not imported: keep this module light)


def render_hosts(
    hostname: str, addresses: Iterable[str], extra: Iterable[tuple[str, str]] = ()
) -> str:
    """The sandbox's /etc/hosts as Docker writes it: the localhost block, the ``--add-host``
    entries, then each of the sandbox's own addresses -> its hostname."""
    lines = [f"{ip}\t{name}\n" for name, ip in extra]
    lines += [f"{ip}\t{hostname}\n" for ip in addresses]
    return HOSTS_HEADER + "".join(lines)


def render_resolv_conf(
    host_resolv_conf: str,
    nameservers: Iterable[str] = (),
    search: Iterable[str] = (),
    options: Iterable[str] = (),
    embedded: bool = False,
) -> str:
    """A sandbox's resolv.conf: ``--dns``/``--dns-search``/``--dns-option`` where given, else the
    host's servers, search list and options.  The host's loopback servers are dropped (they
    would point into the sandbox itself) and Docker's fallback servers used if none is left;
    ``--dns-search .`` means no search list (moby libnetwork/internal/resolvconf).

    ``embedded`` (a sandbox on a user-defined network): the only server is the embedded resolver
    at 127.0.0.11 (which forwards to the others) and ``ndots:0`` is added unless an ndots option
    is there (moby ``TransformForIntNS``)."""
    host_servers, host_search, host_options = [], [], []
    for line in host_resolv_conf.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver":
            try:
                if not ipaddress.ip_address(fields[1].split("%")[0]).is_loopback:
                    host_servers.append(fields[1])
            except ValueError:
                continue
        elif fields[0] in ("search", "domain"):
            host_search = fields[1:]  # the last one wins, as in the resolver
        elif fields[0] == "options":
            host_options += fields[1:]
    servers = list(nameservers) or host_servers or list(FALLBACK_NAMESERVERS)
    search = list(search) or host_search
    if search == ["."]:
        search = []
    options = list(options) or host_options
    if embedded:
        servers = [EMBEDDED_NAMESERVER]
        if not any(o.startswith("ndots:") for o in options):
            options.append("ndots:0")
    out = [f"nameserver {ns}" for ns in servers]
    if search:
        out.append("search " + " ".join(search))
    if options:
        out.append("options " + " ".join(options))
    return "\n".join(out) + "\n"


def read_host_resolv_conf() -> str:
    try:
        with open("/etc/resolv.conf") as f:
            return f.read()
    except OSError:
        return ""


def host_nameservers(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0] == "nameserver":
            found.append(fields[1])
    return found


def read_files(directory: str) -> dict[str, str] | None:
    """Current contents of a sandbox's /etc/netns files (None if the directory is absent)."""
    if not os.path.isdir(directory):
        return None
    out = {}
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as f:
            out[name] = f.read()
    return out


def write_files(directory: str, files: dict[str, str] | None) -> None:
    """Make ``directory`` hold exactly ``files`` (None: remove it), writing in place."""
    if files is None:
        remove_files(directory)
        return
    # 0755 and 0644: processes in the sandbox read these as any user (ip netns exec binds them
    # over /etc/hosts and /etc/resolv.conf).
    from lowbridge.config import private_dir, private_file

    private_dir(directory, 0o755)
    for name, text in files.items():
        fd = private_file(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.truncate()
    for name in os.listdir(directory):
        if name not in files:
            os.unlink(os.path.join(directory, name))


def remove_files(directory: str) -> None:
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


# -- processes
def exec_argv(netns_name: str, command: list[str], uts: str | None = None) -> list[str]:
    """argv that runs ``command`` in the sandbox with its /etc files (``ip netns exec``) and,
    if it has one, its UTS namespace (its hostname)."""
    argv = ["ip", "netns", "exec", netns_name, *command]
    if uts and os.path.exists(uts):
        argv = ["nsenter", f"--uts={uts}", "--", *argv]
    return argv


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks (field 22 of /proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(")") + 2 :].split()[19])


def environment(items: Iterable[str]) -> dict[str, str]:
    """Our environment plus the sandbox's KEY=VALUE items (later ones win)."""
    env = dict(os.environ)
    for item in items:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def spawn_detached(
    argv: list[str], log_path: str, env: dict[str, str] | None = None, stdin: int | None = None
) -> subprocess.Popen:
    """Start ``argv`` (see :func:`exec_argv`) detached: a session of its own, its output
    appended to ``log_path`` (root's alone: 0600, never through a symlink)."""
    import subprocess

    from lowbridge.config import private_file

    fd = private_file(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with os.fdopen(fd, "ab") as log:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            raise KernelError.from_os(f"start {argv[0]}", exc) from None


def running_pids(netns_paths: Iterable[str]) -> dict[str, list[int]]:
    """For each namespace path, the pids living in it (``ip netns pids``; one scan of /proc for
    all of them)."""
    wanted: dict[tuple[int, int], str] = {}
    out: dict[str, list[int]] = {}
    for path in netns_paths:
        out[path] = []
        try:
            st = os.stat(path)
        except OSError:
            continue
        wanted[(st.st_dev, st.st_ino)] = path
    if not wanted:
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        path = wanted.get((st.st_dev, st.st_ino))
        if path is not None:
            out[path].append(int(entry))
    return out


def kill_all(netns_path: str, timeout: float = 5.0) -> None:
    """SIGKILL every process in the namespace and wait until they are gone (``docker rm -f``)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = running_pids([netns_path])[netns_path]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap(pids)
        if time.monotonic() > deadline:
            raise KernelError(f"processes {pids} in {netns_path} did not exit")
        time.sleep(0.01)


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (a process started with its own session), or
    ``pid`` alone when it leads none."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap([pid])


def _reap(pids: list[int]) -> None:
    """Collect our own exited children so they do not linger as zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
