"""``check`` and ``gc``: what differs between the records and the host, and how it is mended.

:func:`survey` reads the store, the journal, the kernel (links, namespaces, each sandbox's
addresses and default route, /etc files, UTS namespaces), the firewall (lowbridge's rules as
the kernel lists them) and the resolver, and returns each difference as a :class:`Drift`:
what, where, what the records expect, what was found, and how ``gc`` mends it.  Two kinds:

* what the records say should exist and does not (or not as recorded): mended by making it
  again -- a network's device, an endpoint's interface (same names and address), a route, the
  files, the rules, the resolver;
* what carries lowbridge's mark and has no owner: a link with lowbridge's alias of a network
  the store does not know, an ``lbv`` veth no endpoint names, a namespace with lowbridge's UTS
  namespace beside it, an overlay's ``lbo-`` namespace, a UTS namespace or /etc/netns directory
  of no sandbox, a journal entry a dead process left (settled as the next command would).
  Nothing without the mark is touched.

A survey settles nothing (``check`` reports a killed command's leftovers as they are); ``gc``
first settles through the usual change machinery, then surveys again and mends the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lowbridge import drivers, names
from lowbridge.controller import etc
from lowbridge.controller.plan import Draft
from lowbridge.errors import LowbridgeError
from lowbridge.models import Container, Endpoint, Network, View, gateway_endpoint

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.kernel.rtnl import Link, Session

# The order gc mends in: leftovers first (they may hold names and addresses), then devices,
# what hangs off them, the firewall and the resolver last (they follow the rest).
SETTLE, REMOVE, DEVICE, ENDPOINT, SANDBOX, FIREWALL, RESOLVER = range(7)


@dataclass(frozen=True)
class Drift:
    """One difference (see the module docstring); ``mend`` is what gc does about it."""

    what: str
    where: str
    expected: str
    found: str
    fix: str
    rank: int = SANDBOX
    mend: Callable[[], object] | None = field(default=None, compare=False, repr=False)
    # What the mend acts on, when several differences share one mend (an endpoint made
    # again, the rules rewritten): it runs once for all of them.
    target: object = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        return f"{self.what} {self.where}: expected {self.expected}, found {self.found}"

    def doc(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("what", "where", "expected", "found", "fix")}


def survey(ctl: Controller, nl: Session) -> list[Drift]:
    """Every difference on this host, read under the host lock (see the module docstring)."""
    view = ctl.store.view()
    links = {link.name: link for link in nl.links()}
    out = _journal(ctl)
    out += _networks(ctl, nl, view, links)
    out += _leftover_links(ctl, nl, view, links)
    out += _namespaces(ctl, view)
    draft = Draft(view)
    for ctr in view.containers:
        out += _sandbox(ctl, view, draft, ctr)
    out += _firewall(ctl, view)
    out += _resolver(ctl, view)
    return out


def _journal(ctl: Controller) -> list[Drift]:
    from lowbridge.controller.journal import kind_of

    return [
        Drift(
            "change",
            f"{e.op} {e.id[:12]}",
            "none under way",
            f"one left unfinished by a process that died (begun {e.created})",
            f"{kind_of(e.op)} it",
            SETTLE,
        )
        for e in ctl.store.journal()
    ]


def _local(view: View, net: Network) -> list[Endpoint]:
    """The endpoints of ``net`` whose sandbox is on this host."""
    return [e for e in view.endpoints_on(net.id) if e.container_id in view.ctrs]


def _networks(ctl: Controller, nl: Session, view: View, links: dict[str, Link]) -> list[Drift]:
    out: list[Drift] = []
    by_index = {link.index: link.name for link in links.values()}
    addresses: dict[str, set[tuple[str, int]]] | None = None
    for net in view.networks:
        driver = drivers.get(net.driver)
        local = _local(view, net)
        where = f"of network {net.name}"
        for path in driver.host_namespaces(net, local):
            if not ctl.kernel.is_netns(path):
                out.append(
                    Drift(
                        "namespace",
                        f"{path} {where}",
                        "present",
                        "none",
                        "make it again",
                        DEVICE,
                        _ensure(ctl, nl, net),
                    )
                )
        for want in driver.host_links(net, local):
            link = links.get(want.name)
            name = f"{want.name} {where}"
            kind = want.kind or "link"
            if link is None:
                if want.kind == "veth":  # an endpoint's host end: the endpoint is broken
                    ep = next(e for e in local if e.host_ifname == want.name)
                    out.append(_broken(ctl, view, ep, f"{kind} {want.name}", "none"))
                else:
                    fix = "make it again" if want.ours else "nothing (it is not lowbridge's)"
                    mend = _ensure(ctl, nl, net) if want.ours else None
                    out.append(Drift(kind, name, "present", "none", fix, DEVICE, mend))
                continue
            if want.kind and link.kind != want.kind:
                out.append(Drift(kind, name, f"a {want.kind}", f"a {link.kind}", "nothing"))
                continue
            master = by_index.get(link.master) if link.master else None
            if want.master and master != want.master:
                ep = next(e for e in local if e.host_ifname == want.name)
                out.append(
                    _broken(
                        ctl, view, ep, f"{kind} {want.name}", f"a port of {master or 'nothing'}"
                    )
                )
                continue
            if want.alias and link.alias != want.alias:
                out.append(
                    Drift(
                        kind,
                        name,
                        f"alias {want.alias}",
                        f"{link.alias or 'none'}",
                        "mark it",
                        DEVICE,
                        lambda n=want.name, a=want.alias: nl.set_alias(n, a),
                    )
                )
            if not link.up:
                out.append(
                    Drift(
                        kind,
                        name,
                        "up",
                        "down",
                        "set it up",
                        DEVICE,
                        lambda n=want.name: nl.set_up(n),
                    )
                )
            if want.address:
                if addresses is None:
                    addresses = {}
                    for index, _, ip, plen in nl.labelled_addresses():
                        addresses.setdefault(by_index.get(index, ""), set()).add((ip, plen))
                if want.address not in addresses.get(want.name, set()):
                    ip, plen = want.address
                    have = ", ".join(f"{a}/{p}" for a, p in sorted(addresses.get(want.name, ())))
                    add = lambda n=want.name, a=ip, p=plen: nl.add_address(n, a, p)  # noqa: E731
                    out.append(
                        Drift(
                            "address",
                            f"on {name}",
                            f"{ip}/{plen}",
                            have or "none",
                            "add it",
                            DEVICE,
                            add,
                        )
                    )
    return out


def _ensure(ctl: Controller, nl: Session, net: Network) -> Callable[[], object]:
    return lambda: drivers.get(net.driver).ensure(net, ctl.kernel, nl)


def _leftover_links(
    ctl: Controller, nl: Session, view: View, links: dict[str, Link]
) -> list[Drift]:
    """Links with lowbridge's mark that no record owns: a bridge or shim whose alias names a
    network the store does not know, an ``lbv`` veth no endpoint names."""
    known = {n.id for n in view.networks}
    ends = {e.host_ifname for e in view.endpoints if e.host_ifname}
    out = []
    for link in links.values():
        alias = link.alias or ""
        orphan = (
            alias.startswith(names.ALIAS_PREFIX) and alias[len(names.ALIAS_PREFIX) :] not in known
        )
        orphan = orphan or (
            link.kind == "veth" and names.is_veth_host_name(link.name) and link.name not in ends
        )
        if orphan:
            what = f"{link.kind or 'link'} {link.name}"
            out.append(
                Drift(
                    what,
                    "(lowbridge's mark)",
                    "an owner in the store",
                    "none",
                    "remove it",
                    REMOVE,
                    lambda n=link.name: nl.delete_link(n),
                )
            )
    return out


def _namespaces(ctl: Controller, view: View) -> list[Drift]:
    """Namespaces, UTS namespaces and /etc/netns directories of lowbridge's with no sandbox."""
    from lowbridge.drivers.overlay import NS_PREFIX, ns_path

    k, paths = ctl.kernel, ctl.paths
    sandboxes = {c.name for c in view.containers}
    overlays = {ns_path(n) for n in view.networks if drivers.get(n.driver).scope == "global"}
    uts_dir = os.path.dirname(paths.uts("x"))
    uts = set(_listdir(uts_dir))
    out = []
    for path in sorted(k.listed_netns()):
        name = os.path.basename(path)
        mine = name in uts or (name.startswith(NS_PREFIX) and path not in overlays)
        if mine and name not in sandboxes and path not in overlays:
            out.append(
                Drift(
                    "namespace",
                    path,
                    "a sandbox or network of it",
                    "none",
                    "remove it",
                    REMOVE,
                    lambda p=path: _remove_netns(ctl, p),
                )
            )
    for name in sorted(uts - sandboxes):
        path = paths.uts(name)
        out.append(
            Drift(
                "uts namespace",
                path,
                "a sandbox of it",
                "none",
                "remove it",
                REMOVE,
                lambda p=path: k.remove_ns(p),
            )
        )
    for name in sorted(set(_listdir(paths.etc_netns)) - sandboxes):
        directory = paths.etc_dir(name)
        if _ours(directory) and not k.is_netns(k.netns_path(name)):
            from lowbridge import sandbox

            out.append(
                Drift(
                    "files",
                    directory,
                    "a sandbox of them",
                    "none",
                    "remove them",
                    REMOVE,
                    lambda d=directory: sandbox.remove_files(d),
                )
            )
    return out


def _remove_netns(ctl: Controller, path: str) -> None:
    from lowbridge import sandbox

    sandbox.kill_all(path)
    ctl.kernel.remove_ns(path)
    name = os.path.basename(path)
    ctl.kernel.remove_ns(ctl.paths.uts(name))
    sandbox.remove_files(ctl.paths.etc_dir(name))


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _ours(directory: str) -> bool:
    """An /etc/netns directory lowbridge wrote: its resolv.conf begins with lowbridge's line."""
    from lowbridge.sandbox import RESOLV_HEADER

    try:
        with open(os.path.join(directory, "resolv.conf")) as f:
            return f.readline() == RESOLV_HEADER
    except OSError:
        return False


def _broken(ctl: Controller, view: View, ep: Endpoint, what: str, found: str) -> Drift:
    """An endpoint whose interface is missing or not as recorded: made again, as recorded."""
    ctr, net = view.ctrs[ep.container_id], view.nets[ep.network_id]
    return Drift(
        what,
        f"of sandbox {ctr.name} on {net.name}",
        "present",
        found,
        "connect it again",
        ENDPOINT,
        lambda: ctl.repair_endpoint(ep),
        ep.key,
    )


def _sandbox(ctl: Controller, view: View, draft: Draft, ctr: Container) -> list[Drift]:
    """A sandbox's namespace, UTS namespace, interfaces and addresses, default route, files."""
    k, paths = ctl.kernel, ctl.paths
    if ctr.host_network:
        return []
    where = f"of sandbox {ctr.name}"
    if not k.is_netns(ctr.netns):
        return [
            Drift(
                "namespace",
                f"{ctr.netns} {where}",
                "present",
                "none",
                "remove the sandbox (as the next command would)",
                SETTLE,
                lambda: ctl.container_rm(ctr.id, force=True),
            )
        ]
    out = []
    uts = paths.uts(ctr.name)
    if ctr.netns_owned and not k.is_netns(uts):
        out.append(
            Drift(
                "uts namespace",
                f"{uts} {where}",
                "present",
                "none",
                "make it again",
                SANDBOX,
                lambda: k.create_uts(uts, ctr.hostname).result(),
            )
        )
    eps = view.endpoints_of(ctr.id)
    with k.session(ctr.netns) as s:
        held: dict[str, tuple[int, set[tuple[str, int]]]] = {}
        for index, label, ip, plen in s.labelled_addresses():
            held.setdefault(label, (index, set()))[1].add((ip, plen))
        route = s.default_route()
    broken = set()
    for ep in eps:
        net = view.nets.get(ep.network_id)
        if net is None or not ep.ip or not drivers.get(net.driver).has_interfaces:
            continue
        have = held.get(ep.ifname, (0, set()))[1]
        if (ep.ip, ep.prefixlen) not in have:
            found = ", ".join(f"{a}/{p}" for a, p in sorted(have)) or "none"
            out.append(
                _broken(ctl, view, ep, f"address {ep.ip}/{ep.prefixlen} on {ep.ifname}", found)
            )
            broken.add(ep.key)
    gw = gateway_endpoint(eps, view.nets)
    if gw is not None and gw.key not in broken and gw.ifname in held:
        want = (gw.gateway, held[gw.ifname][0])
        if route != want:
            found = f"via {route[0]}" if route else "none"
            out.append(
                Drift(
                    "default route",
                    where,
                    f"via {gw.gateway} dev {gw.ifname}",
                    found,
                    "set it again",
                    SANDBOX,
                    lambda: _route(ctl, ctr, gw),
                )
            )
    content = etc.files(ctr, eps, view.nets, lambda name: _bridge_address(draft, name))
    stale = [n for n, text in content.items() if _read(paths.etc_dir(ctr.name), n) != text]
    if stale:
        out.append(
            Drift(
                "files",
                f"{paths.etc_dir(ctr.name)} {where}",
                "as recorded",
                f"{', '.join(stale)} differing",
                "write them again",
                SANDBOX,
                lambda: etc.write(paths, ctr, content),
            )
        )
    return out


def _bridge_address(draft: Draft, name: str):  # noqa: ANN202
    from lowbridge.controller.attach import bridge_address

    return bridge_address(draft, name)


def _route(ctl: Controller, ctr: Container, ep: Endpoint) -> None:
    with ctl.kernel.session(ctr.netns) as s:
        s.replace_default_route(ep.gateway, ep.ifname)


def _read(directory: str, name: str) -> str | None:
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read()
    except OSError:
        return None


def _firewall(ctl: Controller, view: View) -> list[Drift]:
    fw = ctl.firewall
    missing, extra = fw.drift(fw.model(view))

    def rule(expected: str, found: str) -> Drift:
        rewrite = lambda: fw.reapply(fw.model(ctl.store.view()))  # noqa: E731
        fix = "rewrite lowbridge's rules"
        return Drift("rule", f"({fw.backend.name})", expected, found, fix, FIREWALL, rewrite, 0)

    return [rule(line, "none") for line in missing] + [rule("none", line) for line in extra]


def _resolver(ctl: Controller, view: View) -> list[Drift]:
    want = {c.id for c in view.containers if c.dns_ports}
    serving = ctl.resolver.serving()

    def drift(where: str, expected: str, found: str, fix: str) -> Drift:
        sync = lambda: ctl.resolver.sync(bool(want))  # noqa: E731
        return Drift("resolver", where, expected, found, fix, RESOLVER, sync, 1)

    if serving is None:
        return (
            [drift("(embedded DNS)", f"running, for {len(want)} sandboxes", "none", "start it")]
            if want
            else []
        )
    return [
        drift(f"for sandbox {view.ctrs[cid].name}", "serving it", "not", "tell it")
        for cid in sorted(want - set(serving))
    ] + [
        drift(f"for container {cid[:12]}", "nothing (no such sandbox)", "serving it", "tell it")
        for cid in sorted(set(serving) - want)
    ]


def mend(drift: list[Drift]) -> tuple[list[str], list[str]]:
    """Mend each difference, in rank order (one mend per target); return the lines mended and
    those that were not (with why)."""
    done, failed, seen = [], [], set()
    for d in sorted(drift, key=lambda d: d.rank):
        if d.mend is None:
            failed.append(f"{d.line()}: left: {d.fix}")
            continue
        target = d.target if d.target is not None else d.line()
        try:
            if target not in seen:
                seen.add(target)
                d.mend()
            done.append(f"{d.line()}: {d.fix}")
        except (LowbridgeError, OSError) as exc:
            failed.append(f"{d.line()}: {d.fix}: {exc}")
    return done, failed
