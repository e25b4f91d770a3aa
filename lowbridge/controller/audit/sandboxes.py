"""Each sandbox as its records say: its namespace and UTS namespace, its endpoints' interfaces
and addresses (one address dump each: an IPv4 address's label is its link's name), its
default route, its /etc files."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lowbridge import drivers
from lowbridge.controller import etc
from lowbridge.controller.audit.drift import ENDPOINT, SANDBOX, SETTLE, Drift
from lowbridge.controller.plan import Draft
from lowbridge.models import EXITED, Container, Endpoint, View, gateway_endpoint

if TYPE_CHECKING:
    from lowbridge.controller import Controller


def survey(ctl: Controller, view: View) -> list[Drift]:
    draft = Draft(view)
    return [d for ctr in view.containers for d in _sandbox(ctl, view, draft, ctr)]


def broken(ctl: Controller, view: View, ep: Endpoint, what: str, found: str) -> Drift:
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
    if ctr.borrows or ctr.state == EXITED or ctr.handed_off:  # no namespace of its own (now)
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
        held6 = {}  # only where an endpoint has IPv6: one more dump per such interface
        for e in eps:
            index = (held.get(e.ifname) or (s.index(e.ifname),))[0] if e.ip6 else None
            if index is not None:
                held6[e.ifname] = set(s.ipv6_addresses(index))
    unreachable = set()
    for ep in eps:
        net = view.nets.get(ep.network_id)
        if net is None or not drivers.get(net.driver).has_interfaces:
            continue
        wants = [(ep.ip, ep.prefixlen, held.get(ep.ifname, (0, set()))[1]),
                 (ep.ip6, ep.prefixlen6, held6.get(ep.ifname, set()))]  # fmt: skip
        for ip, plen, have in wants:
            if ip and (ip, plen) not in have:
                found = ", ".join(f"{a}/{p}" for a, p in sorted(have)) or "none"
                out.append(broken(ctl, view, ep, f"address {ip}/{plen} on {ep.ifname}", found))
                unreachable.add(ep.key)
                break
    gw = gateway_endpoint(eps, view.nets)
    if gw is not None and gw.gateway and gw.key not in unreachable and gw.ifname in held:
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
