"""Attaching a sandbox to a network: the plan (validation, address, names, route) and its steps.

:func:`plan` validates one endpoint against the draft and decides everything about it -- its
interface name, address, MAC, host-side name, gateway, whether it takes the sandbox's default
route, whether the sandbox's resolver starts with it -- and returns an :class:`AttachPlan`, which
:func:`steps` turns into the named steps that build it: ``dns-redirect``, the driver's own,
``default-route``, ``etc-files``.  A plan is a JSON document too (the journal keeps it), and every
undo reads only the plan and the committed view.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lowbridge import drivers, names
from lowbridge.controller import etc
from lowbridge.controller.plan import Draft
from lowbridge.drivers.base import Attachment, SandboxRef, Step
from lowbridge.errors import Conflict, InvalidInput, KernelError
from lowbridge.models import (
    GWBRIDGE,
    OPT_IFACE_PREFIX,
    Container,
    Endpoint,
    Network,
    gateway_endpoint,
)

if TYPE_CHECKING:
    from lowbridge.controller.change import Change

IFACE_PREFIX = "eth"


@dataclass(frozen=True)
class AttachPlan:
    """One endpoint to make, and what its steps need to know (see the module docstring)."""

    att: Attachment
    redirect: bool = False  # the sandbox's first resolver network: bind sockets, redirect 53
    route: bool = False  # the endpoint takes the sandbox's default route
    previous: Endpoint | None = None  # the endpoint that had it (its route comes back on undo)

    @property
    def endpoint(self) -> Endpoint:
        return self.att.endpoint

    def to_doc(self) -> dict:
        a = self.att
        return {
            "network": a.network.to_doc(),
            "container": a.container.to_doc(),
            "endpoint": a.endpoint.to_doc(),
            "builds_network": a.builds_network,
            "hairpin": a.hairpin,
            "vtep": a.vtep,
            "redirect": self.redirect,
            "route": self.route,
            "previous": self.previous.to_doc() if self.previous else None,
        }

    @classmethod
    def from_doc(cls, doc: dict) -> AttachPlan:
        att = Attachment(
            Network.from_doc(doc["network"]),
            Container.from_doc(doc["container"]),
            Endpoint.from_doc(doc["endpoint"]),
            doc["builds_network"],
            doc["hairpin"],
            doc["vtep"],
        )
        previous = Endpoint.from_doc(doc["previous"]) if doc["previous"] else None
        return cls(att, doc["redirect"], doc["route"], previous)


def plan(
    c: Change,
    net: Network,
    ctr: Container,
    ip: str | None = None,
    aliases: tuple[str, ...] = (),
    ifnames: set[str] | None = None,
    mac: str | None = None,
    ip6: str | None = None,
    ifname: str | None = None,
) -> AttachPlan:
    """Validate attaching ``ctr`` to ``net`` and decide the endpoint; the draft gains it.
    ``ifnames``: the interface names in use in the sandbox (default: its endpoints');
    ``mac``: its interface's MAC (--mac-address), else the driver's; ``ip``/``ip6``: the
    addresses asked for; ``ifname``: the interface's name (else the network's prefix and the
    lowest free index, as Docker)."""
    draft = c.draft
    driver = drivers.get(net.driver)
    eps = draft.endpoints_of(ctr.id)
    nets = draft.view.nets
    _check_ip6(net, ip, ip6)
    _check(driver, net, ctr, eps, nets, ip, aliases)
    if ctr.handed_off and net.driver != "bridge":
        raise InvalidInput(f"network {net.name}: a runtime takes interfaces of bridges only")
    taken = ifnames if ifnames is not None else {e.ifname for e in eps}
    if ifname is not None and ifname in taken:
        raise Conflict(f"interface {ifname} already exists in sandbox {ctr.name}")
    prefix = net.options.get(OPT_IFACE_PREFIX, IFACE_PREFIX)
    ep = Endpoint(
        id=names.new_id(),
        network_id=net.id,
        container_id=ctr.id,
        ifname=(
            names.validate_ifname(ifname) if ifname else names.lowest_free_ifname(prefix, taken)
        )
        if driver.has_interfaces
        else "",  # fmt: skip
        aliases=tuple(dict.fromkeys(aliases)),
        container_name=ctr.name,
    )
    ep = dataclasses.replace(ep, dns_names=tuple(_dns_names(ctr, ep)))
    # A local network that already has endpoints (committed, or planned earlier in this
    # change) has its device: only the first one asks the kernel (a device deleted by hand
    # under endpoints is check's and gc's to find and mend).
    builds = driver.has_interfaces and not (driver.scope == "local" and draft.addresses(net))
    if driver.has_interfaces:
        if net.pool6 is not None:
            ep = _addressed6(draft, driver, net, ep, ip6)
        ep = _addressed(draft, driver, net, ep, ip, c.ctl.cluster, mac)
    previous = gateway_endpoint(eps, nets)
    route = (
        (ep.gateway or ep.gateway6) is not None
        and gateway_endpoint([*eps, ep], nets) is ep
        and not ctr.handed_off  # (else the runtime sets it)
    )
    builds = builds and driver.network_missing(net, c.kernel, c.nl)
    att = Attachment(
        net,
        ctr,
        ep,
        builds_network=builds,
        hairpin=bool(ctr.ports),
        vtep=c.ctl.cluster.vtep if c.ctl.cluster else None,
    )
    # Docker starts a sandbox's resolver when it first joins a user-defined network.
    redirect = (
        etc.uses_resolver(net)
        and not ctr.handed_off  # (else the runtime's resolver answers)
        and not ctr.dns_ports
        and not any(etc.uses_resolver(nets[e.network_id]) for e in draft.endpoints.get(ctr.id, ()))
    )
    draft.add(ctr, [ep])
    return AttachPlan(att, redirect, route, previous if route else None)


def with_egress(c: Change, p: AttachPlan) -> list[AttachPlan]:
    """``p``, and the cluster's gateway bridge when the network leaves the host through it and
    the sandbox is not on it yet (Docker's docker_gwbridge: the overlay sandbox's way out and
    default route)."""
    net, ctr = p.att.network, p.att.container
    gw = c.view.network_named(GWBRIDGE) if c.ctl.cluster is not None else None
    if gw is None or not drivers.get(net.driver).egress(net):
        return [p]
    if any(e.network_id == gw.id for e in c.draft.endpoints_of(ctr.id)):
        return [p]
    return [p, plan(c, gw, ctr)]


def _check(driver, net, ctr, eps, nets, ip, aliases) -> None:  # noqa: ANN001
    """Docker's refusals of a connect, in Docker's words."""
    if any(e.network_id == net.id for e in eps):
        raise Conflict(f"endpoint with name {ctr.name} already exists in network {net.name}")
    exclusive = driver.exclusive or any(
        drivers.get(nets[e.network_id].driver).exclusive for e in eps if e.network_id in nets
    )
    if exclusive and eps and not driver.shares_host:
        raise Conflict(
            "container cannot be connected to multiple networks with one of the networks in "
            "private (none) mode"
        )
    driver.check_connect(net)
    if ip is not None and (net.predefined or not net.user_subnet):
        raise InvalidInput(
            "user specified IP address is supported only when connecting to networks with user "
            "configured subnets"
        )
    if aliases and not etc.uses_resolver(net):
        raise InvalidInput(
            "network-scoped alias is supported only for containers in user defined networks"
        )
    for alias in aliases:
        names.validate_hostname(alias)


def _check_ip6(net: Network, ip: str | None, ip6: str | None) -> None:
    """``--ip6`` only where the network has IPv6 from a subnet the user gave (as ``--ip``);
    ``--ip`` not on an IPv6-only network."""
    if ip is not None and net.pool is None and net.pool6 is not None:
        raise InvalidInput(f"--ip {ip}: network {net.name} has no IPv4 (--ipv4=false)")
    if ip6 is None:
        return
    if net.pool6 is None:
        raise InvalidInput(f"--ip6 {ip6}: network {net.name} has no IPv6 (network create --ipv6)")
    if not net.user_subnet6:
        raise InvalidInput(
            "user specified IP address is supported only when connecting to networks with user "
            "configured subnets"
        )


def _addressed6(draft: Draft, driver, net: Network, ep: Endpoint, ip6) -> Endpoint:  # noqa: ANN001
    """The endpoint with its IPv6 address (``ip6``: asked for) and gateway."""
    pool6 = net.pool6
    address = str(draft.allocate6(net, ip6))
    no_route = net.internal or pool6.gateway is None or not driver.routes_out
    return dataclasses.replace(
        ep,
        ip6=address,
        prefixlen6=pool6.subnet.prefixlen,
        gateway6=None if no_route else str(pool6.gateway),
        requested_ip6=address if ip6 else None,
    )


def _addressed(draft: Draft, driver, net: Network, ep: Endpoint, ip, cluster, mac) -> Endpoint:  # noqa: ANN001
    """The endpoint with its address (``ip``: asked for), MAC (``mac``: asked for), host-side
    name and gateway."""
    held = draft.addresses(net, 4 if net.pool is not None else 6)
    if driver.max_endpoints is not None and len(held) >= driver.max_endpoints:
        raise Conflict(
            f"network {net.name} is full: a {driver.name} network holds at most "
            f"{driver.max_endpoints} endpoints"
        )
    if net.pool is None:  # an IPv6-only network (--ipv4=false): names from the IPv6 address
        made_mac, host_ifname = driver.endpoint_names(net, ep.container_id, ep.ip6)
        return dataclasses.replace(ep, mac=mac or made_mac, host_ifname=host_ifname)
    address = str(draft.allocate(net, ip))
    made_mac, host_ifname = driver.endpoint_names(net, ep.container_id, address)
    gateway = net.pool.gateway
    no_route = net.internal or gateway is None or not driver.routes_out
    host = vtep = None
    if cluster is not None and driver.scope == "global":
        host, vtep = cluster.host, cluster.vtep
    return dataclasses.replace(
        ep,
        ip=address,
        prefixlen=net.pool.subnet.prefixlen,
        gateway=None if no_route else str(gateway),
        mac=mac or made_mac,
        host_ifname=host_ifname,
        requested_ip=address if ip else None,
        host=host,
        vtep=vtep,
    )


def _dns_names(ctr: Container, ep: Endpoint) -> list[str]:
    from lowbridge.dns import records

    return records.endpoint_names(ctr, ep)


# ------------------------------------------------------------------ steps
def steps(c: Change, p: AttachPlan, sb: SandboxRef | None) -> list[Step]:
    """The steps that make ``p`` (``sb`` None: only their undos are wanted)."""
    att, ep, ctr = p.att, p.endpoint, p.att.container
    driver = drivers.get(att.network.driver)
    out: list[Step] = []
    if p.redirect:
        out.append(_redirect_step(c, ctr))
    made = driver.connect_steps(att, c.kernel, c.nl, sb)
    out += made
    if p.route:
        # The driver's last step returns the interface's index: the route names it (no lookup).
        index: list[int] = []
        last = made[-1]
        out[-1] = Step(last.name, lambda: index.append(last.do()) or index[0], last.undo)

        def route() -> None:
            if ep.gateway:
                sb.nl.replace_default_route(ep.gateway, index[0])
            if ep.gateway6:
                sb.nl.replace_default_route6(ep.gateway6, index[0])

        out.append(Step("default-route", route, lambda: _restore_route(c, ctr, p.previous)))
    if not ctr.handed_off:  # (the runtime writes its own)
        out.append(
            Step(
                "etc-files",
                lambda: _write_files(c, ctr),
                lambda: _write_files(c, ctr, committed=True),
            )
        )
    return out


def _redirect_step(c: Change, ctr: Container) -> Step:
    """Start binding the resolver's sockets in the sandbox and redirecting 127.0.0.11:53 to
    them, in the namespace worker: the sandbox's wiring goes on meanwhile, and the sockets are
    waited for at the end (:func:`finish`).  Docker starts a sandbox's resolver when it first
    joins a user-defined network."""
    resolver = c.ctl.resolver

    def do() -> None:
        backend = c.ctl.firewall.backend.name
        c.adopt[ctr.id] = resolver.listen(ctr.netns, backend, ctr.dns_at)  # a future

    def undo() -> None:
        started = c.adopt.pop(ctr.id, None)
        if started is not None:
            with contextlib.suppress(Exception):  # a job that failed undid itself
                for sock in _sockets(started):
                    sock.close()
        if c.kernel.is_netns(ctr.netns):
            resolver.unlisten(ctr.netns, c.ctl.firewall.backend.name, ctr.dns_at)

    return Step("dns-redirect", do, undo)


def finish(c: Change, p: AttachPlan) -> Container:
    """The sandbox's record once ``p``'s steps ran: with its resolver's ports, if they were
    bound (a failure to bind is the change's)."""
    ctr = p.att.container
    started = c.adopt.get(ctr.id)
    if not p.redirect or started is None:
        return ctr
    try:
        udp, tcp = c.adopt[ctr.id] = _sockets(started)
    except OSError as exc:
        raise KernelError.from_os("bind the DNS resolver's sockets", exc) from None
    return dataclasses.replace(ctr, dns_ports=(udp.getsockname()[1], tcp.getsockname()[1]))


def _sockets(started):  # noqa: ANN001, ANN202 - a future of (udp, tcp), or the pair
    return started.result() if hasattr(started, "result") else started


def _restore_route(c: Change, ctr: Container, previous: Endpoint | None) -> None:
    """Undo of default-route: the route of the endpoint that had it, if it is still there (the
    new one went with its interface)."""
    if previous is None or not c.kernel.is_netns(ctr.netns):
        return
    with c.kernel.session(ctr.netns) as snl, contextlib.suppress(KernelError):
        if previous.gateway:
            snl.replace_default_route(previous.gateway, previous.ifname)
        if previous.gateway6:
            snl.replace_default_route6(previous.gateway6, previous.ifname)


def _write_files(c: Change, ctr: Container, committed: bool = False) -> None:
    """The sandbox's files for its endpoints as planned (the committed ones, then those this
    change adds); with ``committed``, as the committed view has them -- no files at all for a
    sandbox the view does not have."""
    if not committed:
        eps = c.draft.endpoints_of(ctr.id)
    elif ctr.id in c.view.ctrs:
        ctr, eps = c.view.ctrs[ctr.id], c.view.endpoints_of(ctr.id)
    else:
        etc.write(c.paths, ctr, None)
        return
    content = etc.files(ctr, eps, c.view.nets, lambda name: bridge_address(c.draft, name))
    etc.write(c.paths, ctr, content)


def bridge_address(draft: Draft, name: str) -> tuple[Container, str] | None:
    """The sandbox named ``name`` and its address on the default bridge (legacy links)."""
    child = draft.container_named(name)
    if child is None:
        return None
    for ep in draft.endpoints_of(child.id):
        net = draft.view.nets.get(ep.network_id)
        if net is not None and net.is_default_bridge and ep.ip:
            return child, ep.ip
    return None


# ------------------------------------------------------------------ network connect
def connect(
    c: Change,
    net: Network,
    ctr: Container,
    ip: str | None,
    aliases: tuple[str, ...],
    ip6: str | None = None,
    ifname: str | None = None,
) -> Endpoint:
    """``network connect``: plan, journal, the steps in the sandbox, commit."""
    if ctr.borrows:
        raise Conflict(
            "container sharing network namespace with another container or host cannot be "
            "connected to any other network"
        )
    ifnames = None
    if ctr.handed_off:  # its interfaces are made in the host's namespace, for its runtime
        ifnames = set()
    elif not ctr.netns_owned:  # lowbridge adds interfaces only beside the ones already there
        with c.kernel.session(ctr.netns) as snl:
            ifnames = {link.name for link in snl.links()}
    plans = with_egress(c, plan(c, net, ctr, ip, aliases, ifnames=ifnames, ip6=ip6, ifname=ifname))
    c.journal({"attaches": [p.to_doc() for p in plans], "claims": c.draft.claims()})
    where = "/proc/thread-self/ns/net" if ctr.handed_off else ctr.netns
    fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.ExitStack() as stack:
            snl = c.nl if ctr.handed_off else stack.enter_context(c.kernel.session(ctr.netns))
            sb = SandboxRef(fd, snl)
            for p in plans:
                c.run(steps(c, p, sb))
    finally:
        os.close(fd)
    final = finish(c, plans[0])
    c.commit(put=[final, *(p.endpoint for p in plans)])
    return plans[0].endpoint


def repair(c: Change, ep: Endpoint) -> None:
    """Make an endpoint's interface again as its record says (``gc``: it was deleted, or lost
    its address, by hand): what is left of it goes, then the driver's steps, the default route
    if it has it, the files -- same names, address and MAC.  Journaled as a connect: a process
    killed meanwhile leaves it as broken as it found it."""
    view = c.view
    net, ctr = view.nets[ep.network_id], view.ctrs[ep.container_id]
    driver = drivers.get(net.driver)
    gw = gateway_endpoint(view.endpoints_of(ctr.id), view.nets)
    att = Attachment(
        net,
        ctr,
        ep,
        builds_network=driver.network_missing(net, c.kernel, c.nl),
        hairpin=bool(ctr.ports),
        vtep=c.ctl.cluster.vtep if c.ctl.cluster else None,
    )
    p = AttachPlan(att, route=gw is not None and gw.key == ep.key)
    c.journal({"attaches": [p.to_doc()], "claims": {}})
    fd = os.open(ctr.netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with c.kernel.session(ctr.netns) as snl:

            def clear() -> None:
                driver.disconnect(net, ep, c.kernel, c.nl, ctr.netns)
                if snl.index(ep.ifname) is not None:
                    snl.delete_link(ep.ifname)

            c.step("delete-interface", clear)
            c.run(steps(c, p, SandboxRef(fd, snl)))
    finally:
        os.close(fd)
    c.commit(put=[ep])


def undo_connect(c: Change, doc: dict) -> list[str]:
    """Undo a connect whose process died: its steps' undos, newest first."""
    from lowbridge.drivers.base import undo_all

    plans = [AttachPlan.from_doc(d) for d in doc["attaches"]]
    return undo_all([step for p in plans for step in steps(c, p, None)])
