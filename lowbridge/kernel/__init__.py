"""The kernel, as lowbridge reaches it: netlink sessions, namespaces, sysctls, conntrack.

    rtnl        Session: RTNL verbs on one namespace (pyroute2, with a struct fast path)
    wire        the fast path's messages, encoded by hand (pure; byte-for-byte tests)
    netns       named namespaces as files; work inside one through the worker's submit()
    conntrack   forgetting flows that NAT decided before a rule changed
    netfilter   whether the packet filter changed since lowbridge last wrote it

:class:`Kernel` gathers what the controller and the drivers call, so that they reach the kernel
through one object and the controller's policy can be tested against a fake one
(tests/unit/fakes.py).  The firewall (rules) and the resolver (a process) have their own
objects.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from lowbridge.kernel import netns
from lowbridge.kernel.netns import Future

if TYPE_CHECKING:
    from lowbridge.kernel.deletion import Deletion
    from lowbridge.kernel.rtnl import Session

_T = TypeVar("_T")


class Kernel:
    """The real kernel (see the module docstring).  Stateless: one per controller."""

    netns_dir = netns.NETNS_RUN_DIR

    @contextlib.contextmanager
    def session(
        self, path: str | None = None, sock: socket.socket | None = None
    ) -> Iterator[Session]:
        """A netlink session on the namespace at ``path`` (None: the caller's own); ``sock``
        reuses a socket opened inside it (:meth:`create_netns`), which the session closes."""
        from lowbridge.kernel import rtnl

        with rtnl.session(path, sock) as s:
            yield s

    def delete_links(self, names: list[str]) -> Deletion:
        """Start deleting the caller's namespace's links ``names`` in one unregister batch
        (a thread of its own); :meth:`Deletion.wait` returns once they are gone, before the
        kernel's wait for their last references ends (kernel.deletion)."""
        from lowbridge.kernel.deletion import Deletion

        return Deletion(names, self.session)

    # -- namespaces
    def netns_path(self, name: str) -> str:
        return netns.path_of(name)

    def create_netns(self, name: str, ipv6: bool = False) -> Future[socket.socket]:
        """A named network namespace (IPv6 off in it from birth unless ``ipv6``)."""
        return netns.create(name, ipv6_off=not ipv6)

    def adopt_netns(self, source: str, name: str) -> str:
        return netns.adopt(source, name)

    def create_uts(self, path: str, hostname: str, domainname: str = "") -> Future[None]:
        return netns.create_uts(path, hostname, domainname)

    def remove_ns(self, path: str) -> None:
        netns.remove(path)

    def is_netns(self, path: str) -> bool:
        return netns.is_netns(path)

    def ns_identity(self, path: str) -> tuple[int, int] | None:
        return netns.identity(path)

    def listed_netns(self) -> set[str]:
        return netns.listed()

    def submit(self, fn: Callable[[], _T], path: str | None = None) -> Future[_T]:
        return netns.submit(fn, path)

    def netlink_socket(self, path: str) -> socket.socket:
        return netns.netlink_socket(path)

    # -- sysctls and conntrack
    def write_sysctls(self, settings: list[tuple[str, str]], path: str | None = None) -> None:
        netns.write_sysctls(settings, path)

    def read_sysctl(self, key: str, path: str | None = None) -> str:
        return netns.read_sysctl(key, path)

    def flush_conntrack(self, **match: object) -> int:
        from lowbridge.kernel import conntrack

        return conntrack.flush(**match)  # type: ignore[arg-type]
