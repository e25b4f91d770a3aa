"""Where lowbridge keeps things.

Defaults follow the FHS and Docker: persistent state in ``/var/lib/lowbridge`` (the SQLite store and
the lock), runtime files in ``/run/lowbridge`` (gone after a reboot, which is how lowbridge notices
one), per-sandbox ``hosts``/``resolv.conf`` in ``/etc/netns/<name>`` (where ``ip netns exec`` looks
for them).  ``--root DIR`` or ``LOWBRIDGE_ROOT=DIR`` moves the first two under ``DIR/lib`` and
``DIR/run``; the namespace files stay where ``ip netns`` expects them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from lowbridge.errors import InvalidInput, StoreError

ROOT_ENV = "LOWBRIDGE_ROOT"
BACKEND_ENV = "LOWBRIDGE_FIREWALL_BACKEND"
CONFIG_ENV = "LOWBRIDGE_CONFIG"
CONFIG_FILE = "/etc/lowbridge/lowbridge.conf"


def setting(key: str, env: str, default: str) -> str:
    """A setting from the environment, else the config file's ``[lowbridge]`` section
    (``$LOWBRIDGE_CONFIG`` or /etc/lowbridge/lowbridge.conf), else ``default``."""
    if os.environ.get(env):
        return os.environ[env]
    path = os.environ.get(CONFIG_ENV, CONFIG_FILE)
    if not os.path.exists(path):  # the usual case: no configparser import (~3 ms, 8 regexes)
        return default
    import configparser

    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise InvalidInput(f"config file {path}: {first}") from None
    return parser.get("lowbridge", key, fallback=default)


def firewall_backend() -> str:
    """iptables, nftables or auto (the default: nftables when nft works here)."""
    return setting("firewall_backend", BACKEND_ENV, "auto")


ICC_ENV = "LOWBRIDGE_ICC"
STORE_ENV = "LOWBRIDGE_STORE"
VTEP_ENV = "LOWBRIDGE_VTEP"
HOST_NAME_ENV = "LOWBRIDGE_HOST_NAME"


def store_url() -> str | None:
    """The cluster store (``etcd://HOST:2379[,…]``; --store, LOWBRIDGE_STORE or config key
    ``store``), None for the embedded store alone."""
    return setting("store", STORE_ENV, "") or None


def vtep_address() -> str | None:
    """This host's VXLAN endpoint address (LOWBRIDGE_VTEP or config ``vtep``); None: the
    source address of the route towards the cluster store."""
    return setting("vtep", VTEP_ENV, "") or None


LEASE_TTL_ENV = "LOWBRIDGE_LEASE_TTL"


def lease_ttl() -> int:
    """Seconds a host's etcd lease lives unrenewed: how long a dead host's endpoints stay
    announced (config ``lease_ttl``, environment LOWBRIDGE_LEASE_TTL; default 10)."""
    text = setting("lease_ttl", LEASE_TTL_ENV, "10")
    if not text.isdigit() or not 2 <= int(text) <= 3600:
        raise InvalidInput(f"invalid lease_ttl {text!r}: seconds within 2-3600")
    return int(text)


def host_name() -> str:
    """This host's name in a cluster, and the ``host:`` a lab's sandbox names to be made here
    (LOWBRIDGE_HOST_NAME or config ``host_name``; default the system's host name)."""
    import socket

    return setting("host_name", HOST_NAME_ENV, "") or socket.gethostname()


def default_bridge_icc() -> bool:
    """Whether sandboxes on the default bridge may talk to each other (dockerd ``--icc``;
    config key ``icc``, environment LOWBRIDGE_ICC; default true)."""
    value = setting("icc", ICC_ENV, "true").strip().lower()
    return value not in ("false", "0", "no", "off")


IPV6_ENV = "LOWBRIDGE_IPV6"
FIXED_CIDR_V6_ENV = "LOWBRIDGE_FIXED_CIDR_V6"


def default_bridge_ipv6() -> str | None:
    """The default bridge's IPv6 (dockerd ``ipv6`` and ``fixed-cidr-v6``: config keys ``ipv6``
    and ``fixed_cidr_v6``, environment LOWBRIDGE_IPV6 and LOWBRIDGE_FIXED_CIDR_V6): None when
    off, "" when on without a subnet (a /64 of the host's ULA pool), else the subnet."""
    if setting("ipv6", IPV6_ENV, "false").strip().lower() not in ("true", "1", "yes", "on"):
        return None
    return setting("fixed_cidr_v6", FIXED_CIDR_V6_ENV, "").strip()


@contextlib.contextmanager
def host_lock(paths: Paths) -> Iterator[None]:
    """The host-wide mutation lock: flock on a file in the state directory (every command that
    changes something, and the agent, take it).

    flock is released by the kernel when the process dies, so a crash never wedges it; the fd
    is close-on-exec so processes started under it (run -d) do not inherit it.
    """
    private_dir(paths.state)
    fd = private_file(paths.lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Paths:
    """Where lowbridge keeps its store (``state``), its per-boot runtime files (``run``) and
    the sandboxes' /etc files (``etc_netns``, as ``ip netns exec`` reads them)."""

    state: str = "/var/lib/lowbridge"
    run: str = "/run/lowbridge"
    etc_netns: str = "/etc/netns"

    @classmethod
    def resolve(cls, root: str | None = None) -> Paths:
        """``root`` (from --root), else $LOWBRIDGE_ROOT, else the system defaults."""
        root = root or os.environ.get(ROOT_ENV)
        if root:
            root = os.path.abspath(root)
            return cls(state=os.path.join(root, "lib"), run=os.path.join(root, "run"))
        return cls()

    @property
    def db(self) -> str:
        return os.path.join(self.state, "lowbridge.db")

    @property
    def lock(self) -> str:
        return os.path.join(self.state, "lock")

    @property
    def host_id(self) -> str:
        """This host's identity in a cluster (written once it has joined one)."""
        return os.path.join(self.state, "host-id")

    @property
    def engine_id(self) -> str:
        """This host's identity for IPv6 defaults (Docker's /var/lib/docker/engine-id)."""
        return os.path.join(self.state, "engine-id")

    @property
    def boot_marker(self) -> str:
        return os.path.join(self.run, "booted")

    def run_dir(self, *sub: str) -> str:
        """``run`` (or a directory in it), made if missing: root's alone (0700), as everything
        lowbridge keeps there is for lowbridge (sockets, logs, rule records, UTS namespaces)."""
        path = private_dir(self.run)
        for part in sub:
            path = private_dir(os.path.join(path, part))
        return path

    def logs(self, container_id: str) -> str:
        return os.path.join(self.run, "containers", container_id + ".log")

    def uts(self, name: str) -> str:
        """The sandbox's UTS namespace (its hostname), a bind mount like /run/netns/<name>."""
        return os.path.join(self.run, "uts", name)

    def etc_dir(self, netns_name: str) -> str:
        return os.path.join(self.etc_netns, netns_name)


def engine_id(paths: Paths) -> str:
    """This host's random identity, made on first use and kept with the store: the seed of
    its IPv6 ULA pool (lowbridge.ipam.ula_pool), stable across reboots as Docker's engine ID."""
    import uuid

    private_dir(paths.state)
    for _ in range(2):
        try:
            with open(paths.engine_id) as f:
                if found := f.read().strip():
                    return found
        except FileNotFoundError:
            pass
        try:  # O_EXCL: of two processes making it, one writes and both read its id
            fd = private_file(paths.engine_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except StoreError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex + "\n")
    with open(paths.engine_id) as f:
        return f.read().strip()


def private_dir(path: str, mode: int = 0o700) -> str:
    """Make ``path`` (and missing parents) a directory of ours with exactly ``mode``, whatever
    the umask; refuse a symlink or a directory another user owns, where someone else could plant
    files lowbridge then writes through as root.  Returns ``path``."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        private_dir(parent, mode)  # os.makedirs would give missing parents the umask's mode
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise StoreError(f"make directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise StoreError(f"{path} is not a directory of lowbridge's (a link, or another user's)")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return path


def private_file(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` of a file lowbridge keeps: never through a symlink (O_NOFOLLOW), close on
    exec, created with ``mode`` whatever the umask.  Returns the descriptor."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise StoreError(f"open {path}: {exc.strerror}") from None
    if flags & os.O_CREAT and stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)
    return fd


def write_durably(path: str, data: bytes) -> None:
    """Write ``path`` (private) and fsync it: it is there after a crash of the host."""
    fd = private_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
