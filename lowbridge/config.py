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
from collections.abc import Iterator
from dataclasses import dataclass

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
    parser.read(path)
    return parser.get("lowbridge", key, fallback=default)


def firewall_backend() -> str:
    """iptables, nftables or auto (the default: nftables when nft works here)."""
    return setting("firewall_backend", BACKEND_ENV, "auto")


ICC_ENV = "LOWBRIDGE_ICC"
STORE_ENV = "LOWBRIDGE_STORE"
VTEP_ENV = "LOWBRIDGE_VTEP"


def store_url() -> str | None:
    """The cluster store (``etcd://HOST:2379[,…]``; --store, LOWBRIDGE_STORE or config key
    ``store``), None for the embedded store alone."""
    return setting("store", STORE_ENV, "") or None


def vtep_address() -> str | None:
    """This host's VXLAN endpoint address (LOWBRIDGE_VTEP or config ``vtep``); None: the
    source address of the route towards the cluster store."""
    return setting("vtep", VTEP_ENV, "") or None


def default_bridge_icc() -> bool:
    """Whether sandboxes on the default bridge may talk to each other (dockerd ``--icc``;
    config key ``icc``, environment LOWBRIDGE_ICC; default true)."""
    value = setting("icc", ICC_ENV, "true").strip().lower()
    return value not in ("false", "0", "no", "off")


@contextlib.contextmanager
def host_lock(paths: Paths) -> Iterator[None]:
    """The host-wide mutation lock: flock on a file in the state directory (every command that
    changes something, and the agent, take it).

    flock is released by the kernel when the process dies, so a crash never wedges it; the fd
    is close-on-exec so processes started under it (run -d) do not inherit it.
    """
    os.makedirs(paths.state, mode=0o700, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
    def boot_marker(self) -> str:
        return os.path.join(self.run, "booted")

    def logs(self, container_id: str) -> str:
        return os.path.join(self.run, "containers", container_id + ".log")

    def uts(self, name: str) -> str:
        """The sandbox's UTS namespace (its hostname), a bind mount like /run/netns/<name>."""
        return os.path.join(self.run, "uts", name)

    def etc_dir(self, netns_name: str) -> str:
        return os.path.join(self.etc_netns, netns_name)
