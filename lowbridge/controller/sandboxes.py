"""Creating sandboxes -- one, or a batch in one change, all or none.

:func:`plan` validates a request and decides the sandbox: its record, its namespace (made, or
adopted with what it had), and its first network's :class:`~.attach.AttachPlan`.  :func:`steps`
are its named steps -- ``create-netns`` or ``adopt-netns``, ``create-uts``, ``loopback-up``, then
the attachment's -- and :func:`create` runs every sandbox's steps and commits them all at once.

A batch keeps the namespace worker busy beside the wiring (bench/lab.py): each sandbox starts the
next one's network namespace once it has its own, and its UTS namespace and resolver sockets
without waiting; they are waited for where their results are needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lowbridge import drivers, names
from lowbridge.controller import attach, requests
from lowbridge.controller.attach import AttachPlan
from lowbridge.drivers.base import SandboxRef, Step
from lowbridge.errors import Conflict, InvalidInput, LowbridgeError
from lowbridge.kernel.netns import Future
from lowbridge.models import Container, Endpoint

if TYPE_CHECKING:
    import socket

    from lowbridge.controller.change import Change
    from lowbridge.controller.requests import ContainerRequest
    from lowbridge.kernel import Kernel
    from lowbridge.models import View


@dataclass(frozen=True)
class SandboxPlan:
    """One sandbox to make (see the module docstring)."""

    container: Container
    attaches: tuple[AttachPlan, ...] = ()  # its first network (and, in a cluster, the way out)
    endpoint: Endpoint | None = None  # the host network's endpoint (no kernel object)
    adopt: str | None = None  # --netns: the namespace adopted
    lo: tuple[bool, tuple[tuple[str, int], ...]] = (True, ())  # adopted: lo up?, its addresses

    def to_doc(self) -> dict:
        return {
            "container": self.container.to_doc(),
            "attaches": [p.to_doc() for p in self.attaches],
            "endpoint": self.endpoint.to_doc() if self.endpoint else None,
            "adopt": self.adopt,
            "lo": [self.lo[0], [list(a) for a in self.lo[1]]],
        }

    @classmethod
    def from_doc(cls, doc: dict) -> SandboxPlan:
        up, addrs = doc["lo"]
        return cls(
            Container.from_doc(doc["container"]),
            tuple(AttachPlan.from_doc(d) for d in doc["attaches"]),
            Endpoint.from_doc(doc["endpoint"]) if doc["endpoint"] else None,
            doc["adopt"],
            (up, tuple((ip, plen) for ip, plen in addrs)),
        )

    @property
    def endpoints(self) -> list[Endpoint]:
        return [p.endpoint for p in self.attaches] + ([self.endpoint] if self.endpoint else [])


def plan(c: Change, req: ContainerRequest, cid: str) -> SandboxPlan:
    """Validate ``req`` and decide its sandbox (id ``cid``); the draft gains it."""
    draft = c.draft
    name = requests.sandbox_name(req, cid)
    draft.take_name(name)
    if req.network.startswith("container:"):
        ctr = requests.in_container(req, cid, name, draft.container(req.network[10:]))
        draft.add(ctr)
        return SandboxPlan(ctr)
    net = draft.view.network(req.network)
    driver = drivers.get(net.driver)
    if driver.shares_host:
        ctr = requests.on_host(req, cid, name, net)
        ep = Endpoint(id=names.new_id(), network_id=net.id, container_id=cid, ifname="")
        draft.add(ctr, [ep])
        return SandboxPlan(ctr, endpoint=ep)
    if (req.ip is not None or req.ip6 is not None) and net.predefined:
        raise InvalidInput("user specified IP address is supported on user defined networks only")
    if req.publish and not driver.publishes:
        raise InvalidInput(f"cannot publish ports of a container on network {net.name}")
    if req.runtime is not None:  # its namespace may not exist yet: nothing adopted
        if not draft.take_netns(req.netns):
            raise Conflict(f"sandbox key {req.netns} is already a sandbox's")
        ctr = requests.container(req, cid, name, req.netns, net, draft)
        first = attach.plan(c, net, ctr, req.ip, tuple(req.aliases), ifnames=set(),
                            mac=ctr.mac_address, ifname=req.ifname)  # fmt: skip
        return SandboxPlan(ctr, (first,))
    path = c.kernel.netns_path(name)
    if not draft.take_netns(path) or (os.path.lexists(path) and path not in draft.freed):
        raise Conflict(f"network namespace {name} already exists (not lowbridge's)")
    ctr = requests.container(req, cid, name, path, net, draft)
    adopt, lo, ifnames = None, (True, ()), None
    if req.netns is not None:
        adopt = req.netns
        lo, route, ifnames = _adoptable(c, adopt)
        ctr = _with_route(ctr, route)
    first = attach.plan(c, net, ctr, req.ip, tuple(req.aliases), ifnames=ifnames,
                        mac=ctr.mac_address, ip6=req.ip6, ifname=req.ifname)  # fmt: skip
    return SandboxPlan(ctr, tuple(attach.with_egress(c, first)), adopt=adopt, lo=lo)


def check_adoptable(k: Kernel, view: View, source: str) -> None:
    """Refuse to adopt ``source`` unless it is a network namespace that is neither the one
    lowbridge runs in, the host's (PID 1's) nor a sandbox's: lowbridge would replace their
    default route.  (Also asked before anything is made for it: lowbridge.plugins.cni.)"""
    found = k.ns_identity(source)
    if found is None or not k.is_netns(source):
        raise InvalidInput(f"--netns {source} is not a network namespace")
    if found in (k.ns_identity("/proc/self/ns/net"), k.ns_identity("/proc/1/ns/net")):
        raise InvalidInput(f"--netns {source} is the host's own network namespace")
    for other in view.containers:
        if other.netns and k.ns_identity(other.netns) == found:
            raise Conflict(f"--netns {source} is already the namespace of sandbox {other.name}")


def _adoptable(c: Change, source: str) -> tuple:
    """What an adopted namespace has that its undo and its teardown put back: lo's state, its
    default route, its interface names (once :func:`check_adoptable` let it be adopted)."""
    k = c.kernel
    check_adoptable(k, c.view, source)
    with k.session(source) as s:
        lo = s.link("lo")
        lo_state = (bool(lo and lo.up), tuple(s.ipv4_addresses("lo")) if lo else ())
        links = s.links()
        route = s.default_route()
    by_index = {link.index: link.name for link in links}
    route_ = (route[0] or "", by_index[route[1]]) if route and route[1] in by_index else None
    return lo_state, route_, {link.name for link in links}


def _with_route(ctr: Container, route: tuple[str, str] | None) -> Container:
    return dataclasses.replace(ctr, adopted_route=route)


# ------------------------------------------------------------------ steps
@dataclass
class Live:
    """A sandbox's handles while its steps run: the namespace's fd and session (closed when it
    is done), its UTS namespace's future, and the batch's namespaces made ahead."""

    stack: contextlib.ExitStack
    ahead: dict[str, Future] = field(default_factory=dict)
    following: object = None  # starts the next sandbox's namespace
    sb: SandboxRef = field(default_factory=lambda: SandboxRef(-1, None))  # type: ignore[arg-type]
    uts: Future | None = None

    def open(self, c: Change, path: str, sock: socket.socket) -> None:
        self.sb.nl = self.stack.enter_context(c.kernel.session(path, sock))
        self.sb.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.stack.callback(os.close, self.sb.fd)


def steps(c: Change, sp: SandboxPlan, live: Live | None) -> list[Step]:
    """The sandbox's steps (``live`` None: only their undos are wanted)."""
    ctr, k = sp.container, c.kernel
    if ctr.borrows:  # no namespace of its own
        return []
    if ctr.handed_off:  # its interfaces are made here, in the host's namespace
        if live is not None:
            here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            live.sb.fd, live.sb.nl = here, c.nl
            live.stack.callback(os.close, live.sb.fd)
        return [s for p in sp.attaches for s in attach.steps(c, p, live.sb if live else None)]
    out = []
    if sp.adopt is None:

        def make() -> None:
            made = live.ahead.pop(ctr.name, None) or k.create_netns(ctr.name, ctr.ipv6)
            live.open(c, ctr.netns, made.result())
            if live.following is not None:
                live.following()

        out.append(Step("create-netns", make, lambda: k.remove_ns(ctr.netns)))
    else:

        def adopt() -> None:
            k.adopt_netns(sp.adopt, ctr.name)
            live.open(c, ctr.netns, k.netlink_socket(ctr.netns))

        out.append(Step("adopt-netns", adopt, lambda: k.remove_ns(ctr.netns)))
    uts = c.paths.uts(ctr.name)

    def make_uts() -> None:
        c.paths.run_dir("uts")
        live.uts = k.create_uts(uts, ctr.hostname, ctr.domainname)

    def remove_uts() -> None:
        if live is not None and live.uts is not None:
            with contextlib.suppress(Exception):  # a job that failed removed its file
                live.uts.result()
        k.remove_ns(uts)

    out.append(Step("create-uts", make_uts, remove_uts))
    out.append(Step("loopback-up", lambda: live.sb.nl.set_up("lo"), _lo_undo(c, sp)))
    for p in sp.attaches:
        out += attach.steps(c, p, live.sb if live else None)
    if ctr.sysctls:  # --sysctl: after its interfaces (a key may name eth0), before any command
        # runs -- as runc writes them once the network is set up (libcontainer's init).
        out.append(Step("sysctls", lambda: k.write_sysctls(list(ctr.sysctls), ctr.netns)))
    return out


def _lo_undo(c: Change, sp: SandboxPlan):  # noqa: ANN202
    """How to put an adopted namespace's ``lo`` back: down again, without the 127.0.0.1/8 the
    kernel gives it on the way up (a namespace lowbridge made goes whole)."""
    up, had = sp.lo
    if sp.adopt is None or up:
        return None
    path = sp.container.netns

    def undo() -> None:
        if not c.kernel.is_netns(path):
            return
        with c.kernel.session(path) as s:
            s.set_up("lo", up=False)
            for address, plen in s.ipv4_addresses("lo"):
                if (address, plen) not in had:
                    s.delete_address("lo", address, plen)

    return undo


def create(c: Change, plans: list[SandboxPlan]) -> list[Container]:
    """Make every planned sandbox, then commit them all (see the module docstring)."""
    c.journal({"sandboxes": [p.to_doc() for p in plans], "claims": c.draft.claims()})
    ahead: dict[str, Future] = {}
    made: list[Container] = []
    try:
        for i, sp in enumerate(plans):
            following = plans[i + 1] if i + 1 < len(plans) else None
            with contextlib.ExitStack() as stack:
                live = Live(stack, ahead, lambda nxt=following: _make_ahead(c, nxt, ahead))
                try:
                    c.run(steps(c, sp, live))
                    if live.uts is not None:
                        live.uts.result()
                except LowbridgeError as exc:
                    if len(plans) > 1:
                        raise exc.within(f"create container {sp.container.name}") from None
                    raise
            # The sandbox's record with its resolver's ports, if a network of it has them bound.
            resolver = next((p for p in sp.attaches if p.redirect), None)
            made.append(attach.finish(c, resolver) if resolver else sp.container)
            if c.ctl.progress is not None:
                c.ctl.progress(sp.container.name)
    except BaseException:
        _drop_ahead(c, ahead)
        raise
    eps = [e for sp in plans for e in sp.endpoints]
    c.commit(put=[*made, *eps])
    for ctr in made:
        c.after.append(lambda ctr=ctr: _forget_udp_flows(c, ctr))
    return made


def _make_ahead(c: Change, sp: SandboxPlan | None, ahead: dict[str, Future]) -> None:
    """Start making the next sandbox's network namespace; anything doubtful is left to its own
    step (which then says why)."""
    if sp is None or sp.adopt is not None or sp.container.borrows:
        return
    with contextlib.suppress(LowbridgeError, OSError):
        ahead[sp.container.name] = c.kernel.create_netns(sp.container.name, sp.container.ipv6)


def _drop_ahead(c: Change, ahead: dict[str, Future]) -> None:
    """Remove the namespaces made ahead that no sandbox took (the batch failed first)."""
    for name, made in ahead.items():
        with contextlib.suppress(Exception):
            made.result().close()
            c.kernel.remove_ns(c.kernel.netns_path(name))
    ahead.clear()


def _forget_udp_flows(c: Change, ctr: Container) -> None:
    """After the commit: forget UDP flows to the sandbox's published host ports that began before
    the DNAT existed (Docker #8795).  (Flows towards a *reused* address are forgotten when the
    address is released: a conntrack dump walks the kernel's whole table, ~15 ms here even when
    it is empty, which a new sandbox should not wait for.)"""
    for mapping in ctr.ports:
        if mapping.proto == "udp" and mapping.host_ip != "::1":  # (::1 is relayed, not DNATed)
            six = ":" in mapping.host_ip
            c.kernel.flush_conntrack(proto="udp", dport=mapping.host_port, ipv6=six)


def undo(c: Change, doc: dict) -> list[str]:
    """Undo a create whose process died, from its journal document: every undo of every
    sandbox, newest first (each is idempotent); return the errors."""
    from lowbridge.drivers.base import undo_all

    plans = [SandboxPlan.from_doc(d) for d in doc["sandboxes"]]
    return undo_all([step for sp in plans for step in steps(c, sp, None)])
