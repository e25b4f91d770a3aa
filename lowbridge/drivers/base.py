"""The driver protocol: validate / create / delete / connect / disconnect, and the driver's policy.

Drivers are told *what* to build (plain records, decided before any kernel change) and given the
kernel to build it with; they never touch the store, never lock, and decide no policy that spans
networks (which endpoint provides the default route is the controller's).

* ``validate`` turns a user's request into a :class:`~lowbridge.models.Network` without touching
  the kernel; everything that can be rejected is rejected here, and ``check_connect`` /
  ``check_disconnect`` refuse what the driver never allows.
* ``create_steps`` / ``connect_steps`` return the driver's named :class:`Step`\\ s.  A step's
  ``undo`` reads nothing but the plan and the kernel -- never what a ``do`` returned -- and is
  idempotent: a rollback runs the undos of the steps done, and the next command runs the undos of
  every step of a change whose process died (lowbridge.controller.journal).
* ``delete`` / ``disconnect`` are best effort and idempotent: "already gone" is success.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, NamedTuple, Protocol

from lowbridge import ipam
from lowbridge.errors import InvalidInput, KernelError

if TYPE_CHECKING:
    from lowbridge.kernel import Kernel
    from lowbridge.kernel.rtnl import Session
    from lowbridge.models import Container, Endpoint, Network


class Step(NamedTuple):
    """One named kernel change and how to take it back (None: it goes with an earlier one)."""

    name: str
    do: Callable[[], object]
    undo: Callable[[], object] | None = None


def undo_all(steps: list[Step]) -> list[str]:
    """Run every step's undo, newest first, whatever the others do; return the errors (the
    undo of a change whose process died: each undo works from the plan alone)."""
    errors = []
    for step in reversed(steps):
        if step.undo is None:
            continue
        try:
            step.undo()
        except Exception as exc:  # best effort: report, continue
            errors.append(f"{step.name}: {exc}")
    return errors


@dataclass
class NetworkRequest:
    """A ``network create`` request as the user typed it (strings, unvalidated)."""

    name: str
    driver: str = "bridge"
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    attachable: bool = False  # --attachable: inspect says so (any sandbox may join any network)
    ipv6: bool = False  # --ipv6: an IPv6 pool beside the IPv4 one
    ipv4: bool = True  # --ipv4=false: no IPv4 pool (an IPv6-only network, Docker 28)
    subnet6: str | None = None
    gateway6: str | None = None
    ip_range6: str | None = None
    aux_addresses6: dict[str, str] = field(default_factory=dict)

    def by_family(self) -> NetworkRequest:
        """The request with every IPv6 value in an IPv6 field: ``docker network create
        --subnet 10.1.0.0/24 --subnet fd00::/64`` gives both in one flag, as may a library
        caller; two values of one family are refused."""
        fields: dict = {}
        for name in ("subnet", "gateway", "ip_range"):
            values = [v for v in (getattr(self, name), getattr(self, name + "6")) if v is not None]
            by = {4: [], 6: []}
            for value in values:
                by[ipam.family_of(value) or 4].append(value)
            for version, suffix in ((4, ""), (6, "6")):
                if len(by[version]) > 1:
                    flag = "--" + name.replace("_", "-")
                    raise InvalidInput(f"only one IPv{version} {flag} per network is supported")
                fields[name + suffix] = by[version][0] if by[version] else None
        aux: dict[int, dict[str, str]] = {4: {}, 6: {}}
        for key, value in (*self.aux_addresses.items(), *self.aux_addresses6.items()):
            aux[ipam.family_of(value) or 4][key] = value
        return dataclasses.replace(self, **fields, aux_addresses=aux[4], aux_addresses6=aux[6])


class HostLink(NamedTuple):
    """A link of the host as validation sees it."""

    kind: str | None
    alias: str | None


@dataclass(frozen=True)
class HostView:
    """What validation may look at: other networks, the host's links and the prefixes to avoid
    (on-link routes, nameservers, subnets held by lowbridge bridges the store does not know)."""

    networks: tuple[Network, ...]
    links: dict[str, HostLink]
    reserved: tuple[IPv4Network, ...]
    addresses: frozenset[str] = frozenset()  # the host's own IPv4 addresses
    held: tuple[tuple[IPv4Network, str], ...] = ()  # (subnet, device) of lowbridge orphans
    ipv6_pools: tuple[tuple[str, int], ...] = ()  # the host's ULA pool (ipam.ula_pool)


def check_families(req: NetworkRequest) -> None:
    """Docker 28's rule: a network has IPv4, IPv6 or both; IPv4 values need IPv4."""
    if req.ipv4:
        return
    if not req.ipv6:
        raise InvalidInput("IPv4 or IPv6 must be enabled (--ipv4=false needs --ipv6)")
    given = req.subnet or req.gateway or req.ip_range or next(iter(req.aux_addresses), "")
    if given:
        raise InvalidInput(f"IPv4 address {given} given, but the network has --ipv4=false")


def plan_ipv4(
    req: NetworkRequest,
    host: HostView,
    with_gateway: bool = True,
    pools: Iterable[tuple[str, int]] = ipam.DEFAULT_POOLS,
) -> ipam.Pool:
    """The IPv4 pool of a network ``req`` asks for: its --subnet/--gateway/--ip-range/
    --aux-address against the host's other networks, its own addresses and what lowbridge's
    devices hold; else the first free subnet of ``pools``.  ``with_gateway`` False: no gateway
    of lowbridge's choosing (macvlan passes whether one was given)."""
    return ipam.plan_pool(
        subnet=req.subnet,
        gateway=req.gateway,
        ip_range=req.ip_range,
        aux_addresses=req.aux_addresses,
        taken=[n.pool.subnet for n in host.networks if n.pool is not None],
        reserved=host.reserved,
        with_gateway=with_gateway,
        pools=pools,
        host_addresses=host.addresses,
        held=host.held,
    )


def plan_ipv6(req: NetworkRequest, host: HostView, with_gateway: bool = True) -> ipam.Pool | None:
    """The IPv6 pool of a network ``req`` asks for (``--ipv6``), or None; IPv6 values without
    ``--ipv6`` are refused (Docker: an IPv6 subnet needs IPv6 enabled).  ``with_gateway``
    False: a gateway only when given (macvlan)."""
    if not req.ipv6:
        given = req.subnet6 or req.gateway6 or req.ip_range6 or next(iter(req.aux_addresses6), "")
        if given:
            raise InvalidInput(f"IPv6 address {given} given, but the network has no --ipv6")
        return None
    return ipam.plan_pool(
        subnet=req.subnet6,
        gateway=req.gateway6,
        ip_range=req.ip_range6,
        aux_addresses=req.aux_addresses6,
        taken=[n.pool6.subnet for n in host.networks if n.pool6 is not None],
        pools=host.ipv6_pools,
        version=6,
        with_gateway=with_gateway,
    )


class LinkWant(NamedTuple):
    """A host link a network needs on this host, as ``check`` compares it with the kernel."""

    name: str
    kind: str | None  # None: whatever kind (a user's macvlan parent)
    master: str | None = None  # the link it is a port of
    alias: str | None = None  # lowbridge's mark on it
    address: tuple[str, int] | None = None  # an address it carries (address, prefix length)
    ours: bool = True  # lowbridge makes it (else only the user can bring it back)


@dataclass(frozen=True)
class Attachment:
    """One endpoint to build, decided before any kernel change: the records it will commit and
    what the driver must know besides."""

    network: Network
    container: Container
    endpoint: Endpoint
    builds_network: bool = False  # the network's device was missing: this endpoint makes it
    hairpin: bool = False  # the sandbox publishes ports: its bridge port needs hairpin mode
    vtep: str | None = None  # cluster mode: this host's VXLAN endpoint address


@dataclass
class SandboxRef:
    """An open sandbox while steps run: an fd on its namespace and its netlink session."""

    fd: int
    nl: Session


class Driver(Protocol):
    name: str
    scope: str  # "local", or "global": the network's records are the cluster store's
    has_interfaces: bool  # endpoints get an interface and an address
    dns: bool  # user-defined networks of this driver get the embedded resolver
    publishes: bool  # ports may be published (-p) on its endpoints
    routes_out: bool  # its gateway may be a sandbox's default route
    exclusive: bool  # a sandbox on it may be on no other network
    shares_host: bool  # sandboxes on it live in the host's own namespaces
    max_endpoints: int | None  # how many endpoints one network holds at most
    ipv6_only: bool  # its networks may have IPv6 alone (--ipv4=false)

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network: ...
    def check_connect(self, net: Network) -> None: ...
    def check_disconnect(self, net: Network) -> None: ...
    def endpoint_names(
        self, net: Network, container_id: str, ip: str | None
    ) -> tuple[str | None, str | None]:
        """(MAC, host-side interface name) of a new endpoint."""
        ...

    def create_steps(
        self, net: Network, k: Kernel, nl: Session, device_missing: bool
    ) -> list[Step]:
        """The steps that make the network's kernel objects; ``device_missing`` says whether
        its device was missing when the change was planned (so this change makes it)."""
        ...

    def ensure(self, net: Network, k: Kernel, nl: Session) -> bool:
        """Re-create what the network needs in the kernel if it is missing; True if it did."""
        ...

    def network_missing(self, net: Network, k: Kernel, nl: Session) -> bool:
        """Whether this host has to make the network's kernel objects before an endpoint can
        join (the default bridge's device comes with its first sandbox)."""
        ...

    def egress(self, net: Network) -> bool: ...

    def host_end(self, ep: Endpoint) -> str | None:
        """The host-side link whose deletion alone removes the endpoint (a teardown deletes
        many at once), or None: :meth:`disconnect` it."""
        ...

    def doomed_device(self, net: Network) -> str | None:
        """The link whose deletion alone removes the network's kernel objects (a removal of
        several deletes them at once), or None: :meth:`delete` it."""
        ...

    def sync_peers(self, net: Network, endpoints: list[Endpoint], host: str) -> None:
        """Global scope: program this host's forwarding to the other hosts' endpoints."""
        ...

    def delete(self, net: Network, k: Kernel, nl: Session, others: list[Network]) -> None:
        """Remove the network's kernel objects; ``others`` are the remaining networks (a
        device several networks share stays while one uses it)."""
        ...

    def connect_steps(
        self, att: Attachment, k: Kernel, nl: Session, sb: SandboxRef | None
    ) -> list[Step]:
        """The steps that build the endpoint (``sb`` is None when only the undos are wanted).
        The last step's ``do`` returns the sandbox-side interface index (None: no interface)."""
        ...

    def disconnect(self, net: Network, ep: Endpoint, k: Kernel, nl: Session, sandbox: str) -> None:
        """Remove the endpoint's kernel objects; ``sandbox`` is its namespace path (for links
        that live only there)."""
        ...


class Policy:
    """The defaults of the driver attributes (a driver with interfaces in a local network)."""

    scope = "local"
    has_interfaces = True
    dns = True
    publishes = False
    routes_out = True
    exclusive = False
    shares_host = False
    max_endpoints: int | None = None
    ipv6_only: bool = False  # its networks may have IPv6 alone (--ipv4=false)

    def check_connect(self, net: Network) -> None:
        return None

    def check_disconnect(self, net: Network) -> None:
        return None

    def network_missing(self, net: Network, k: Kernel, nl: Session) -> bool:
        return bool(net.device) and nl.index(net.device) is None

    def host_links(self, net: Network, local: list[Endpoint]) -> list[LinkWant]:
        """The host links the network and its endpoints on this host (``local``) need."""
        return []

    def host_namespaces(self, net: Network, local: list[Endpoint]) -> list[str]:
        """The namespaces (paths) of the network's own this host needs."""
        return []

    def egress(self, net: Network) -> bool:
        """Whether a sandbox on ``net`` leaves the host through the cluster's gateway bridge."""
        return False

    def host_end(self, ep: Endpoint) -> str | None:
        return None

    def doomed_device(self, net: Network) -> str | None:
        return None

    def sync_peers(self, net: Network, endpoints: list[Endpoint], host: str) -> None:
        return None


class NoKernelDriver(Policy):
    """Base of the predefined drivers with no kernel objects of their own (host, none)."""

    name = ""
    has_interfaces = False
    dns = False
    routes_out = False
    exclusive = True

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network:
        raise InvalidInput(f'only one instance of "{self.name}" network is allowed')

    def endpoint_names(self, net: Network, container_id: str, ip: str | None) -> tuple:
        return None, None

    def create_steps(
        self, net: Network, k: Kernel, nl: Session, device_missing: bool
    ) -> list[Step]:
        return []

    def ensure(self, net: Network, k: Kernel, nl: Session) -> bool:
        return False

    def delete(self, net: Network, k: Kernel, nl: Session, others: list[Network]) -> None:
        return None

    def connect_steps(
        self, att: Attachment, k: Kernel, nl: Session, sb: SandboxRef | None
    ) -> list[Step]:
        return []

    def disconnect(self, net: Network, ep: Endpoint, k: Kernel, nl: Session, sandbox: str) -> None:
        return None


def configure_interface(k: Kernel, sb: SandboxRef, att: Attachment) -> int:
    """Address the endpoint's interface inside the sandbox and bring it up; return its index.

    Docker's setIPv6: an IPv4-only interface gets no IPv6 at all, set before it is up.  A
    namespace lowbridge makes has IPv6 off from birth, so its interfaces are born without it,
    unless the sandbox's first network has IPv6 (``ctr.ipv6``: then on from birth, ``::1``
    on loopback).  So only an interface born into the other state is set -- on, with
    loopback, or off -- as is every interface of an adopted namespace.  (Each first
    ``/proc/sys/net/ipv6`` write in a new namespace costs ~1.4 ms: README, Speed.)  The IPv6
    address goes on without duplicate address detection.
    """
    ep, ctr = att.endpoint, att.container
    index = sb.nl.index(ep.ifname)
    if index is None:
        raise KernelError(f"interface {ep.ifname} is missing in {ctr.netns}")
    born_on = ctr.netns_owned and ctr.ipv6
    if ep.ip6 and not born_on:
        knobs = [f"net/ipv6/conf/{ep.ifname}/disable_ipv6"]
        if ctr.netns_owned:
            knobs.append("net/ipv6/conf/lo/disable_ipv6")
        k.write_sysctls([(knob, "0") for knob in knobs], ctr.netns)
    elif not ep.ip6 and (born_on or not ctr.netns_owned):
        k.write_sysctls([(f"net/ipv6/conf/{ep.ifname}/disable_ipv6", "1")], ctr.netns)
    if ep.ip:
        sb.nl.add_address(index, ep.ip, ep.prefixlen)
    if ep.ip6:
        sb.nl.add_address6(index, ep.ip6, ep.prefixlen6)
    sb.nl.set_up(index)
    return index


def validate_mtu(options: dict[str, str], key: str) -> None:
    """An MTU option, if given, is a number the kernel takes for an Ethernet link."""
    if key not in options:
        return
    text = options[key]
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput(f"invalid {key} {text!r}: not a number")
    if not 68 <= int(text) <= 65535:
        raise InvalidInput(f"invalid {key} {text}: must be within 68-65535")
