"""In-memory stand-ins for the kernel, the firewall and the resolver, so that the controller's
policy -- planning, the journal, undo, reconcile, what each verb asks of the kernel -- is tested
without root (tests/unit/test_controller.py).

:class:`FakeKernel` keeps namespaces as a dict of :class:`FakeNs` (links, addresses, routes);
a named namespace is also a plain file under the test's directory, so the controller's
``os.open(netns)`` works and the fd tells which namespace it is.  It answers as the kernel does
where the controller depends on it: EEXIST for a name taken, ENODEV for a missing link, a
veth's peer appears in the namespace of the fd given, and deleting either end removes both.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lowbridge.errors import KernelError, LowbridgeError
from lowbridge.kernel.netns import Future
from lowbridge.kernel.rtnl import Link

HOST = "host"


def _done(value: object) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


def _fail(what: str, code: int) -> KernelError:
    return KernelError.from_os(what, OSError(code, os.strerror(code)))


@dataclass
class FakeLink:
    index: int
    name: str
    kind: str | None
    master: int | None = None
    alias: str | None = None
    mac: str | None = None
    mtu: int = 1500
    up: bool = False
    peer: tuple[str, str] | None = None  # (namespace, name) of a veth's other end
    addresses: set[tuple[str, int]] = field(default_factory=set)


@dataclass
class FakeNs:
    links: dict[str, FakeLink] = field(default_factory=dict)
    routes: set[tuple[str, int, str]] = field(default_factory=set)  # (dst, prefixlen, dev)
    default: tuple[str, str] | None = None  # (gateway, dev)

    def snapshot(self) -> tuple:
        links = sorted(
            (ln.name, ln.kind, ln.up, ln.alias, tuple(sorted(ln.addresses)))
            for ln in self.links.values()
        )
        return links, sorted(self.routes), self.default


@dataclass
class FakeDeletion:
    """kernel.deletion.Deletion's interface, done."""

    error: LowbridgeError | None

    def wait(self) -> None:
        if self.error is not None:
            raise self.error


class FakeSession:
    """The :class:`lowbridge.kernel.rtnl.Session` verbs the controller and drivers use."""

    def __init__(self, kernel: FakeKernel, ns: str):
        self.k, self.ns_name, self.where = kernel, ns, ns

    @property
    def ns(self) -> FakeNs:
        return self.k.namespaces[self.ns_name]

    def close(self) -> None:
        pass

    def _get(self, link: str | int) -> FakeLink:
        for candidate in self.ns.links.values():
            if candidate.name == link or candidate.index == link:
                return candidate
        raise _fail(f"find link {link} in {self.where}", errno.ENODEV)

    def _add(self, ns: str, name: str, kind: str, **kw: object) -> FakeLink:
        links = self.k.namespaces[ns].links
        if name in links:
            raise _fail(f"create {kind} {name}", errno.EEXIST)
        self.k.calls.append(("create", ns, name))
        self.k.maybe_fail("create", name)
        links[name] = FakeLink(next(self.k.indexes), name, kind, **kw)  # type: ignore[arg-type]
        return links[name]

    # -- links
    def links(self) -> list[Link]:
        return [
            Link(ln.index, ln.name, ln.kind, ln.master, ln.alias, ln.mac, ln.mtu, ln.up)
            for ln in self.ns.links.values()
        ]

    def link(self, name: str) -> Link | None:
        return next((ln for ln in self.links() if ln.name == name), None)

    def index(self, name: str) -> int | None:
        link = self.ns.links.get(name)
        return link.index if link else None

    def _ix(self, link: str | int) -> int:
        return self._get(link).index

    def create_bridge(self, name: str, *, mac: str | None, mtu: int | None) -> None:
        self._add(self.ns_name, name, "bridge", mac=mac, mtu=mtu or 1500)

    def set_alias(self, name: str, alias: str) -> None:
        self._get(name).alias = alias

    def set_up(self, link: str | int, up: bool = True) -> None:
        found = self._get(link)
        found.up = up
        if found.kind == "loopback" and up:
            found.addresses.add(("127.0.0.1", 8))

    def ipv4_addresses(self, link: str | int) -> list[tuple[str, int]]:
        return sorted(self._get(link).addresses)

    def delete_link(self, name: str) -> bool:
        link = self.ns.links.pop(name, None)
        if link is None:
            return False
        self.k.calls.append(("delete", self.ns_name, name))
        if link.peer:
            peer_ns, peer = link.peer
            self.k.namespaces.get(peer_ns, FakeNs()).links.pop(peer, None)
        self.ns.routes = {r for r in self.ns.routes if r[2] != name}
        return True

    def delete_links(self, names: list[str]) -> None:
        for name in names:
            self.delete_link(name)

    def create_veth(
        self, host: str, peer: str, *, peer_netns_fd: int, peer_mac: str, mtu: int | None,
        master: int,
    ) -> None:  # fmt: skip
        peer_ns = self.k.ns_of_fd(peer_netns_fd)
        if peer in self.k.namespaces[peer_ns].links:
            raise _fail(f"create veth {host}", errno.EEXIST)
        self._add(self.ns_name, host, "veth", master=master, up=True, peer=(peer_ns, peer))
        self._add(peer_ns, peer, "veth", mac=peer_mac, mtu=mtu or 1500,
                  peer=(self.ns_name, host))  # fmt: skip

    def create_macvlan(self, name: str, parent: str | int, *, mode: str, mac: str | None = None,
                       netns_fd: int | None = None, mtu: int | None = None) -> None:  # fmt: skip
        self._get(parent)
        ns = self.k.ns_of_fd(netns_fd) if netns_fd is not None else self.ns_name
        self._add(ns, name, "macvlan", mac=mac, mtu=mtu or 1500)

    def add_route(self, dst: str, prefixlen: int, link: str | int) -> None:
        self.ns.routes.add((dst, prefixlen, self._get(link).name))

    def delete_route(self, dst: str, prefixlen: int, link: str | int) -> None:
        self.ns.routes.discard((dst, prefixlen, self._get(link).name))

    def set_master(self, link: str | int, master: str | int) -> None:
        self._get(link).master = self._ix(master)

    def set_hairpin(self, link: str | int) -> None:
        self._get(link)

    def add_address(self, link: str | int, address: str, prefixlen: int) -> None:
        found = self._get(link)
        if (address, prefixlen) in found.addresses:
            raise _fail(f"add address {address}", errno.EEXIST)
        found.addresses.add((address, prefixlen))

    def delete_address(self, link: str | int, address: str, prefixlen: int) -> None:
        self._get(link).addresses.discard((address, prefixlen))

    def replace_default_route(self, gateway: str, link: str | int) -> None:
        self.ns.default = (gateway, self._get(link).name)

    def default_route(self) -> tuple[str | None, int] | None:
        if self.ns.default is None or self.ns.default[1] not in self.ns.links:
            return None
        gateway, dev = self.ns.default
        return gateway, self.ns.links[dev].index

    def addresses(self) -> list[tuple[int, str, int]]:
        return [(ln.index, a, p) for ln in self.ns.links.values() for a, p in sorted(ln.addresses)]

    def onlink_routes(self) -> list:
        import ipaddress

        return [
            ipaddress.ip_network(f"{a}/{p}", strict=False)
            for ln in self.ns.links.values()
            for a, p in ln.addresses
            if not a.startswith("127.")
        ]

    def route_source(self, dst: str) -> str | None:
        return None

    # overlay only (not exercised here)
    def fdb_entries(self, link: str | int) -> dict[str, str]:
        return {}

    def neighbours(self, link: str | int) -> dict[str, str]:
        return {}


class FakeKernel:
    """The :class:`lowbridge.kernel.Kernel` interface over :class:`FakeNs` namespaces."""

    def __init__(self, root: str):
        self.netns_dir = os.path.join(root, "netns")
        os.makedirs(self.netns_dir, exist_ok=True)
        self.namespaces: dict[str, FakeNs] = {HOST: FakeNs()}
        self._lo(HOST)
        self.indexes = iter(range(2, 1 << 30))
        self.calls: list[tuple[str, str, str]] = []
        self.fail: Callable[[str, str], bool] | None = None  # (verb, name) -> raise EPERM?
        self.sysctls: dict[tuple[str | None, str], str] = {}

    def _lo(self, ns: str) -> None:
        self.namespaces[ns].links["lo"] = FakeLink(1, "lo", "loopback")

    def maybe_fail(self, verb: str, name: str) -> None:
        if self.fail is not None and self.fail(verb, name):
            raise _fail(f"{verb} {name}", errno.EPERM)

    def snapshot(self) -> dict:
        return {name: ns.snapshot() for name, ns in sorted(self.namespaces.items())}

    def ns_of_fd(self, fd: int) -> str:
        inode = os.fstat(fd).st_ino
        for name in self.namespaces:
            path = self.netns_path(name)
            if os.path.exists(path) and os.stat(path).st_ino == inode:
                return name
        raise AssertionError(f"fd {fd} is no namespace of the fake kernel")

    def _name(self, path: str | None) -> str:
        if path is None:
            return HOST
        name = os.path.basename(path)
        if name not in self.namespaces or not os.path.exists(path):
            raise _fail(f"open namespace {path}", errno.ENOENT)
        return name

    @contextlib.contextmanager
    def session(
        self, path: str | None = None, sock: socket.socket | None = None
    ) -> Iterator[FakeSession]:
        name = self._name(path)
        yield FakeSession(self, name)

    @contextlib.contextmanager
    def delete_links(self, names: list[str]) -> Iterator[FakeDeletion]:
        """Deleted at once; a failure is raised by ``wait``, as kernel.deletion's."""
        error = None
        try:
            FakeSession(self, HOST).delete_links(names)
        except LowbridgeError as exc:
            error = exc
        yield FakeDeletion(error)

    # -- namespaces
    def netns_path(self, name: str) -> str:
        return os.path.join(self.netns_dir, name)

    def create_netns(self, name: str, ipv6: bool = False) -> Future:
        path = self.netns_path(name)
        if os.path.exists(path):
            raise _fail(f"create namespace {name}", errno.EEXIST)
        self.maybe_fail("netns", name)
        open(path, "w").close()
        self.namespaces[name] = FakeNs()
        self._lo(name)
        return _done(None)

    def adopt_netns(self, source: str, name: str) -> str:
        raise NotImplementedError("adoption is tested in simulated hosts")

    def create_uts(self, path: str, hostname: str, domainname: str = "") -> Future:
        open(path, "w").close()
        return _done(None)

    def remove_ns(self, path: str) -> None:
        name = os.path.basename(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if os.path.dirname(path) == self.netns_dir:
            ns = self.namespaces.pop(name, None)
            for link in ns.links.values() if ns else ():
                if link.peer:  # a veth whose end goes with its namespace takes the other along
                    peer_ns, peer = link.peer
                    self.namespaces.get(peer_ns, FakeNs()).links.pop(peer, None)

    def is_netns(self, path: str) -> bool:
        return os.path.basename(path) in self.namespaces and os.path.exists(path)

    def ns_identity(self, path: str) -> tuple[int, int] | None:
        if not os.path.exists(path):
            return None
        st = os.stat(path)
        return st.st_dev, st.st_ino

    def listed_netns(self) -> set[str]:
        return {self.netns_path(n) for n in os.listdir(self.netns_dir)}

    def submit(self, fn: Callable[[], object], path: str | None = None) -> Future:
        return _done(fn())

    def netlink_socket(self, path: str) -> socket.socket:
        raise NotImplementedError

    # -- sysctls and conntrack
    def write_sysctls(self, settings: list[tuple[str, str]], path: str | None = None) -> None:
        for key, value in settings:
            self.sysctls[(path, key)] = value

    def read_sysctl(self, key: str, path: str | None = None) -> str:
        return self.sysctls.get((path, key), "0")

    def flush_conntrack(self, **match: object) -> int:
        return 0


class FakeBackend:
    name = "nftables"


class FakeFirewall:
    """The :class:`lowbridge.firewall.Firewall` interface: the model is the real one (pure);
    "the kernel's rules" are the last model applied."""

    def __init__(self) -> None:
        from lowbridge.firewall.model import Modeler

        self.backend = FakeBackend()
        self._modeler = Modeler()
        self.applied = None
        self.changes = 0
        self.fail = False

    def model(self, view):  # noqa: ANN001, ANN201
        return self._modeler.model(view)

    def show(self, m) -> str:  # noqa: ANN001
        return repr(m)

    def change(self, before, after) -> Callable[[], None]:  # noqa: ANN001
        return self.apply(after)

    def apply(self, m, rules=None) -> Callable[[], None]:  # noqa: ANN001
        if self.fail:
            raise _fail("apply the firewall", errno.EPERM)
        previous, self.applied = self.applied, m
        self.changes += 1

        def undo() -> None:
            self.applied = previous

        return undo

    def reapply(self, m) -> Callable[[], None]:  # noqa: ANN001
        return self.apply(m)

    @contextlib.contextmanager
    def deferred(self):  # noqa: ANN201 - nothing left exiting here
        yield


class FakeResolver:
    """The resolver: sockets are bound on the loopback of the test's own namespace."""

    def __init__(self) -> None:
        self.pending: dict = {}
        self.listening: set[str] = set()
        self.synced = 0
        self.up = False

    def listen(self, netns: str, backend: str, also: str | None = None) -> Future:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        self.listening.add(netns)
        return _done((udp, tcp))

    def unlisten(self, netns: str, backend: str, also: str | None = None) -> None:
        self.listening.discard(netns)

    def running(self) -> bool:
        return self.up

    def sync(self, needed: bool, relays: bool = False) -> None:
        for pair in self.pending.values():
            for sock in pair:
                sock.close()
        self.pending = {}
        self.synced += 1
        self.up = needed
