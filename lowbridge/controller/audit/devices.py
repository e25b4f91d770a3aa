"""The networks' own kernel objects on this host, as their drivers say they need them
(``host_links``, ``host_namespaces``): present, of their kind, a port of their bridge, marked,
up, carrying their address.  An endpoint's host end that is missing or on the wrong bridge makes
the endpoint broken (made again whole, :func:`.sandboxes.broken`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lowbridge import drivers
from lowbridge.controller.audit.drift import DEVICE, Drift
from lowbridge.controller.audit.sandboxes import broken

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.drivers.base import LinkWant
    from lowbridge.kernel.rtnl import Link, Session
    from lowbridge.models import Endpoint, Network, View


def survey(ctl: Controller, nl: Session, view: View, links: dict[str, Link]) -> list[Drift]:
    return _Host(ctl, nl, view, links).survey()


class _Host:
    """The host's links (and, once asked for, their addresses) while one survey runs."""

    def __init__(self, ctl: Controller, nl: Session, view: View, links: dict[str, Link]):
        self.ctl, self.nl, self.view, self.links = ctl, nl, view, links
        self.names = {link.index: link.name for link in links.values()}
        self._addresses: dict[str, set[tuple[str, int]]] | None = None

    def addresses(self, name: str) -> set[tuple[str, int]]:
        if self._addresses is None:
            self._addresses = {}
            for index, _, ip, plen in self.nl.labelled_addresses():
                self._addresses.setdefault(self.names.get(index, ""), set()).add((ip, plen))
        return self._addresses.get(name, set())

    def survey(self) -> list[Drift]:
        out: list[Drift] = []
        for net in self.view.networks:
            driver = drivers.get(net.driver)
            local = [e for e in self.view.endpoints_on(net.id) if e.container_id in self.view.ctrs]
            for path in driver.host_namespaces(net, local):
                if not self.ctl.kernel.is_netns(path):
                    out.append(self._drift(net, "namespace", path, "present", "none",
                                           "make it again", self._ensure(net)))  # fmt: skip
            for want in driver.host_links(net, local):
                out += self._link(net, want, local)
        return out

    def _drift(self, net: Network, what: str, name: str, expected: str, found: str, fix: str,
               mend: Callable[[], object] | None) -> Drift:  # fmt: skip
        return Drift(what, f"{name} of network {net.name}", expected, found, fix, DEVICE, mend)

    def _ensure(self, net: Network) -> Callable[[], object]:
        return lambda: drivers.get(net.driver).ensure(net, self.ctl.kernel, self.nl)

    def _link(self, net: Network, want: LinkWant, local: list[Endpoint]) -> list[Drift]:
        link, kind, nl = self.links.get(want.name), want.kind or "link", self.nl
        end = next((e for e in local if e.host_ifname == want.name), None)  # an endpoint's?
        if link is None and end is not None:
            return [broken(self.ctl, self.view, end, f"{kind} {want.name}", "none")]
        if link is None:
            fix = "make it again" if want.ours else "nothing (it is not lowbridge's)"
            mend = self._ensure(net) if want.ours else None
            return [self._drift(net, kind, want.name, "present", "none", fix, mend)]
        if want.kind and link.kind != want.kind:
            return [self._drift(net, kind, want.name, f"a {want.kind}", f"a {link.kind}",
                                "nothing (not lowbridge's to replace)", None)]  # fmt: skip
        master = self.names.get(link.master) if link.master else None
        if want.master and master != want.master and end is not None:
            return [broken(self.ctl, self.view, end, f"{kind} {want.name}",
                           f"a port of {master or 'nothing'}")]  # fmt: skip
        out = []
        if want.alias and link.alias != want.alias:
            mark = lambda n=want.name, a=want.alias: nl.set_alias(n, a)  # noqa: E731
            out.append(self._drift(net, kind, want.name, f"alias {want.alias}",
                                   link.alias or "none", "mark it", mark))  # fmt: skip
        if not link.up:
            up = lambda n=want.name: nl.set_up(n)  # noqa: E731
            out.append(self._drift(net, kind, want.name, "up", "down", "set it up", up))
        if want.address and want.address not in self.addresses(want.name):
            ip, plen = want.address
            have = ", ".join(f"{a}/{p}" for a, p in sorted(self.addresses(want.name)))
            add = lambda n=want.name: nl.add_address(n, ip, plen)  # noqa: E731
            out.append(self._drift(net, "address", f"on {want.name}", f"{ip}/{plen}",
                                   have or "none", "add it", add))  # fmt: skip
        return out
