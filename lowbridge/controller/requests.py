"""A ``run`` / ``container create`` request, and its validation into a sandbox's record.

Everything the user typed is checked here once, as Docker checks it, and comes out typed: host
names, ``--add-host`` lines, ``--dns*`` values (no value may carry a line of its own into
resolv.conf), exposed and published ports (resolved to free host ports), legacy links and their
environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field

from lowbridge import ipam, links, names, ports
from lowbridge.controller.plan import Draft
from lowbridge.errors import Conflict, InvalidInput, LowbridgeError, NotFound
from lowbridge.models import (
    CREATED,
    DEFAULT_NETWORK,
    OPT_HOST_BINDING,
    RUNNING,
    Container,
    Network,
    frozen,
    now,
)
from lowbridge.ports import PortMapping


@dataclass
class ContainerRequest:
    """What ``container create`` / ``run`` asks for, as docker's flags say it."""

    name: str | None = None
    network: str = DEFAULT_NETWORK
    ip: str | None = None
    ip6: str | None = None  # --ip6
    netns: str | None = None  # adopt this namespace instead of creating one
    command: list[str] | None = None
    publish: list[str] = field(default_factory=list)  # -p specs
    hostname: str | None = None
    add_hosts: list[str] = field(default_factory=list)  # NAME:IP or NAME:host-gateway
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)  # --network-alias
    links: list[str] = field(default_factory=list)  # --link NAME[:ALIAS]
    expose: list[str] = field(default_factory=list)  # --expose PORT[/PROTO]
    env: list[str] = field(default_factory=list)  # -e KEY=VALUE (or KEY: from our environment)
    labels: dict[str, str] = field(default_factory=dict)  # --label KEY=VALUE
    restart: str = "no"  # --restart
    auto_remove: bool = False  # --rm
    mac_address: str | None = None  # --mac-address
    publish_all: bool = False  # -P
    env_files: list[str] = field(default_factory=list)  # --env-file
    sysctls: dict[str, str] = field(default_factory=dict)  # --sysctl
    domainname: str | None = None  # --domainname
    ifname: str | None = None  # its interface's name in the sandbox (a CNI runtime's CNI_IFNAME)
    runtime: str | None = None  # "docker": dockerd moves and configures the interface itself
    dns_at_gateway: bool = False  # its resolver answers at its network's gateway too (CNI)


def sandbox_name(req: ContainerRequest, cid: str) -> str:
    """The name a create gives its sandbox: the short id unless named."""
    return names.validate_name("container", req.name or names.short_id(cid))


def container(
    req: ContainerRequest, cid: str, name: str, netns: str, net: Network, draft: Draft
) -> Container:
    """The record of the sandbox ``req`` asks for (its namespace at ``netns``), on its first
    network ``net``."""
    if req.runtime not in (None, "docker"):
        raise InvalidInput(f"unknown runtime {req.runtime!r} (docker)")
    if req.runtime and req.netns is None:
        raise InvalidInput(f"runtime {req.runtime} needs its sandbox key (netns)")
    for server in req.dns:
        ipam.parse_address(server, "--dns server", None)
    for flag, values in (("--dns-search", req.dns_search), ("--dns-option", req.dns_options)):
        for value in values:
            if not value or not value.isprintable() or any(ch.isspace() for ch in value):
                raise InvalidInput(f"invalid {flag} {value!r}: one word, no spaces or newlines")
    expose = tuple(dict.fromkeys(p for spec in req.expose for p in ports.parse_expose(spec)))
    linked, link_env = _links(req, net, name, draft)
    specs = list(req.publish)
    if req.publish_all:  # -P: each exposed port not published yet, on a free host port
        given = {(p.port, p.proto) for spec in req.publish for p in ports.parse_expose(
            spec.rsplit(":", 1)[-1])}  # fmt: skip
        specs += [f"{e.port}/{e.proto}" for e in expose if (e.port, e.proto) not in given]
    return Container(
        **_life(req),
        **_extras(req),
        id=cid,
        name=name,
        netns=netns,
        netns_owned=req.netns is None,
        runtime=req.runtime,
        dns_at=_dns_at(req, net),
        ipv6=net.ipv6 and req.netns is None,
        command=tuple(req.command or ()),
        hostname=names.validate_hostname(req.hostname) if req.hostname else names.short_id(cid),
        network_mode=net.name,
        ports=tuple(publish(specs, draft, _binding(net), net.ipv6, ipv4=net.pool is not None)),
        extra_hosts=tuple(extra_host(spec, draft) for spec in req.add_hosts),
        dns=tuple(req.dns),
        dns_search=tuple(req.dns_search),
        dns_options=tuple(req.dns_options),
        expose=expose,
        links=linked,
        env=environment(req),
        labels=frozen(req.labels),
        link_env=link_env,
    )


def _dns_at(req: ContainerRequest, net: Network) -> str | None:
    """The gateway address its resolver answers at too, when asked (a CNI ``dns: gateway``)."""
    from lowbridge.dns.records import dns_enabled

    if not req.dns_at_gateway:
        return None
    if not dns_enabled(net) or net.pool is None or net.pool.gateway is None:
        raise InvalidInput(f"network {net.name} has no resolver at a gateway to answer at")
    return str(net.pool.gateway)


def _extras(req: ContainerRequest) -> dict:
    """--mac-address, -P, --sysctl, --domainname, checked as Docker checks them."""
    mac = req.mac_address
    if mac is not None and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac):
        raise InvalidInput(f"{mac} is not a valid mac address")
    for key, value in req.sysctls.items():
        if not key.startswith("net."):
            raise InvalidInput(f"sysctl '{key}={value}' is not allowed: a sandbox has a network "
                               "namespace of its own only (net.*)")  # fmt: skip
    if req.domainname:
        names.validate_hostname(req.domainname)
    return {"mac_address": mac.lower() if mac else None, "publish_all": req.publish_all,
            "sysctls": tuple(req.sysctls.items()), "domainname": req.domainname or ""}  # fmt: skip


def environment(req: ContainerRequest) -> tuple[str, ...]:
    """--env-file's variables, then -e's (the later one of a name wins, as Docker's)."""
    items: list[str] = []
    for path in req.env_files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise InvalidInput(f"open {path}: {exc.strerror}") from None
        for line in lines:
            line = line.lstrip()
            if line and not line.startswith("#"):
                key = line.partition("=")[0]
                if any(ch.isspace() for ch in key):
                    raise InvalidInput(f"invalid environment variable {line!r} in {path}: "
                                       f"variable '{key}' contains whitespaces")  # fmt: skip
                items.append(env_item(line))
    return tuple(items + [env_item(item) for item in req.env])


def _life(req: ContainerRequest) -> dict:
    """The lifecycle fields of a new sandbox: ``created`` until its command starts (a sandbox
    without one stands at once), its restart policy, --rm."""
    from lowbridge.restarts import parse_policy

    policy = parse_policy(req.restart)
    if req.auto_remove and policy != "no":
        raise InvalidInput("conflicting options: cannot both remove and restart containers")
    stands = not req.command
    return {"state": RUNNING if stands else CREATED, "started_at": now() if stands else None,
            "restart": policy, "auto_remove": req.auto_remove}  # fmt: skip


def on_host(req: ContainerRequest, cid: str, name: str, net: Network) -> Container:
    """``--network host``: no namespace of its own; processes run in the host's network and UTS
    namespaces and see the host's /etc files (Docker shares all three).  What only a namespace
    of its own can have is refused, as Docker refuses it."""
    import socket

    _refuse_shared(req, "the network mode host", _NAMESPACE_FLAGS)
    expose = tuple(dict.fromkeys(p for spec in req.expose for p in ports.parse_expose(spec)))
    return Container(
        **_life(req),
        id=cid,
        name=name,
        netns="",
        netns_owned=False,
        command=tuple(req.command or ()),
        hostname=socket.gethostname(),
        network_mode=net.name,
        expose=expose,
        env=environment(req),
        labels=frozen(req.labels),
    )


# What only a sandbox with a namespace of its own can have: refused by --network host and
# container:NAME, as Docker refuses them ("conflicting options: ... and the network mode").
_NAMESPACE_FLAGS = {
    "-p/--publish (its ports are the namespace's it shares)": "publish",
    "-P/--publish-all": "publish_all",
    "--ip": "ip",
    "--network-alias": "aliases",
    "--link": "links",
    "--hostname": "hostname",
    "--domainname": "domainname",
    "--add-host": "add_hosts",
    "--dns/--dns-search/--dns-option": ("dns", "dns_search", "dns_options"),
    "--mac-address": "mac_address",
    "--sysctl": "sysctls",
    "--netns": "netns",
}


def _refuse_shared(req: ContainerRequest, mode: str, flags: dict) -> None:
    for flag, attrs in flags.items():
        if any(getattr(req, a) for a in (attrs if isinstance(attrs, tuple) else (attrs,))):
            raise InvalidInput(f"conflicting options: {flag} and {mode}")


def in_container(req: ContainerRequest, cid: str, name: str, other: Container) -> Container:
    """``--network container:NAME``: the namespace (and with it the interfaces, addresses, /etc
    files and host name) of the sandbox ``other``, none of its own -- Docker's container
    network mode."""
    _refuse_shared(req, "the network mode container", {**_NAMESPACE_FLAGS, "--expose": "expose"})
    if other.state != RUNNING or other.host_network:
        raise Conflict(f"cannot join network of a non running container: {other.id}")
    return Container(
        **_life(req),
        id=cid,
        name=name,
        netns=other.netns,
        netns_owned=False,
        share=other.share or other.id,
        command=tuple(req.command or ()),
        hostname=other.hostname,
        network_mode=f"container:{other.share or other.id}",
        env=environment(req),
        labels=frozen(req.labels),
    )


def _links(
    req: ContainerRequest, net: Network, name: str, draft: Draft
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """Validate ``--link``s; return (name, alias) pairs and the environment they add (default
    bridge only; on user-defined networks a link is a sandbox-local DNS alias)."""
    from lowbridge import drivers

    if req.links and drivers.get(net.driver).exclusive:
        raise InvalidInput(f"conflicting options: {net.driver} networking can't be used with links")
    out, env = [], []
    for spec in req.links:
        target, alias = links.parse(spec)
        try:
            child = draft.container(target)
        except NotFound:
            raise InvalidInput(f"could not get container for {target}: no such container") from None
        if child.name == name:
            raise InvalidInput(f"cannot link {name} to itself")
        out.append((child.name, alias))
        if net.is_default_bridge:
            ip = next(
                (
                    e.ip
                    for e in draft.endpoints_of(child.id)
                    if draft.view.nets[e.network_id].is_default_bridge and e.ip
                ),
                None,
            )
            if ip is None:
                raise InvalidInput(
                    f"Cannot link to /{child.name}, as it does not belong to the default network"
                )
            env += links.env(name, alias, ip, child.exposed, child.env)
    return tuple(out), tuple(env)


def extra_host(spec: str, draft: Draft) -> tuple[str, str]:
    """``--add-host NAME:IP`` (or ``NAME=IP``); ``host-gateway`` is the default bridge's
    gateway address, as Docker resolves it."""
    sep = "=" if "=" in spec else ":"
    name, _, ip = spec.partition(sep)
    if not name or not ip:
        raise InvalidInput(f"invalid --add-host {spec!r}: expected NAME:IP")
    names.validate_hostname(name)
    if ip == "host-gateway":
        bridge = draft.view.network(DEFAULT_NETWORK)
        return name, str(bridge.pool.gateway)
    try:
        return name, str(ipaddress.ip_address(ip.strip("[]")))
    except ValueError:
        raise InvalidInput(f"invalid --add-host {spec!r}: {ip!r} is not an address") from None


def env_item(item: str) -> str:
    """``-e KEY=VALUE`` as given; ``-e KEY`` takes KEY's value from our environment (Docker)."""
    key, sep, _ = item.partition("=")
    if not key or " " in key:
        raise InvalidInput(f"invalid environment variable {item!r}")
    if sep:
        return item
    return f"{key}={os.environ.get(key, '')}"


def _binding(net: Network) -> str:
    """The host address of a ``-p`` spec without one: the network's host_binding_ipv4 option,
    else every address of the host's (``::`` alone on an IPv6-only network)."""
    return net.options.get(OPT_HOST_BINDING, "0.0.0.0" if net.pool is not None else "::")


def publish(
    specs: list[str],
    draft: Draft,
    default_ip: str = "0.0.0.0",
    ipv6: bool = False,
    ipv4: bool = True,
) -> list[PortMapping]:
    """Resolve ``-p`` specs to free host ports (Docker: "port is already allocated"); the draft
    knows the ports taken, by committed sandboxes and by those planned before; ``default_ip``:
    the host address of a spec without one.  On a network with IPv6 (``ipv6``), a spec without
    an address is published on ``[::]`` too, on the same host port (Docker's default binding
    gives both families, moby portallocator)."""
    out: list[PortMapping] = []
    for spec in specs:
        for req in ports.parse(spec, default_ip):
            if not ipv4 and ":" not in req.host_ip:
                raise InvalidInput(f"publish {spec}: the network has no IPv4 (--ipv4=false): "
                                   "publish on an IPv6 address, or without one")  # fmt: skip
            mapping = _pick_port(req, draft.ports + out, spec)
            out.append(mapping)
            if ipv6 and not req.given_ip and mapping.host_ip == "0.0.0.0":
                same = dataclasses.replace(req, host_ip="::", host_ports=(mapping.host_port,))
                out.append(_pick_port(same, draft.ports + out, spec))
    return out


def _pick_port(req: ports.PortRequest, taken: list[PortMapping], spec: str) -> PortMapping:
    candidates = req.host_ports or ports.ephemeral_range()
    last_error: LowbridgeError | None = None
    for port in candidates:
        mapping = PortMapping(req.host_ip, port, req.container_port, req.proto)
        if any(mapping.overlaps(t) for t in taken):
            last_error = Conflict(
                f"Bind for {req.host_ip}:{port} failed: port is already allocated"
            )
            continue
        try:
            ports.check_free(mapping)
        except Conflict as exc:
            last_error = exc
            continue
        return mapping
    raise (last_error or Conflict(f"no free host port for {spec}")).within(f"publish {spec}")
