"""What the CLI prints: docker-shaped tables and inspect documents (pure functions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lowbridge import ports
from lowbridge.models import Container, Endpoint, Network

if TYPE_CHECKING:
    import datetime as _dt


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded like docker's (Go text/tabwriter, padding 3), left aligned.

    docker's layout is four lines of tabwriter; no table library reproduces its exact spacing, and
    read-only commands must start fast, so it is written out here.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def ago(stamp: str, now: _dt.datetime | None = None) -> str:
    """'5 seconds ago', '3 minutes ago', ... like docker's CREATED column."""
    import datetime

    now = now or datetime.datetime.now(datetime.timezone.utc)
    seconds = max(0, int((now - datetime.datetime.fromisoformat(stamp)).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    if seconds < 1:
        return "Less than a second ago"
    return f"{seconds} second{'s' if seconds != 1 else ''} ago"


def network_rows(networks: list[Network], no_trunc: bool = False) -> list[list[str]]:
    return [[n.id if no_trunc else n.id[:12], n.name, n.driver, _scope(n)] for n in networks]


def _scope(net: Network) -> str:
    from lowbridge import drivers

    return drivers.get(net.driver).scope


def container_status(ctr: Container, pids: list[int]) -> str:
    if pids:
        return "running"
    return "exited" if ctr.pid else "created"


def network_doc(
    net: Network,
    endpoints: list[Endpoint],
    containers: dict[str, Container],
    hosts: dict[str, dict] | None = None,
) -> dict:
    """``docker network inspect`` shape for one network."""
    members = {}
    for ep in endpoints:
        ctr = containers.get(ep.container_id)
        members[ep.container_id] = {
            "Name": ctr.name if ctr else (ep.container_name or ""),
            "EndpointID": ep.id,
            "MacAddress": ep.mac or "",
            "IPv4Address": f"{ep.ip}/{ep.prefixlen}" if ep.ip else "",
            "IPv6Address": "",
        }
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": _scope(net),
        "Driver": net.driver,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": None if net.predefined else {},
            "Config": [net.pool.to_doc()] if net.pool else [],
        },
        "Internal": net.internal,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": members,
        "Options": dict(net.options),
        "Labels": dict(net.labels),
        "Device": net.device or "",
    } | ({"Peers": peers(endpoints, hosts or {})} if _scope(net) == "global" else {})


def peers(endpoints: list[Endpoint], hosts: dict[str, dict]) -> list[dict]:
    """An overlay's hosts that have sandboxes on it (Docker's "Peers": name and VTEP)."""
    seen: dict[str, dict] = {}
    for ep in endpoints:
        if ep.host and ep.host not in seen:
            name = hosts.get(ep.host, {}).get("name", ep.host)
            seen[ep.host] = {"Name": f"{name}-{ep.host[:8]}", "IP": ep.vtep or ""}
    return sorted(seen.values(), key=lambda p: p["IP"])


def dns_names(ctr: Container, ep: Endpoint, net: Network) -> list[str] | None:
    """The names the embedded resolver answers for this endpoint (Docker's DNSNames)."""
    if net.predefined:
        return None
    return list(dict.fromkeys([ctr.name, *ep.aliases, ctr.id[:12], ctr.hostname]))


def container_doc(
    ctr: Container,
    endpoints: list[Endpoint],
    networks: dict[str, Network],
    pids: list[int],
) -> dict:
    """``docker inspect`` shape for one container (the parts lowbridge has)."""
    status = container_status(ctr, pids)
    nets = {}
    for ep in endpoints:
        net = networks.get(ep.network_id)
        if net is None:
            continue
        nets[net.name] = {
            "NetworkID": net.id,
            "EndpointID": ep.id,
            "Gateway": ep.gateway or "",
            "IPAddress": ep.ip or "",
            "IPPrefixLen": ep.prefixlen or 0,
            "MacAddress": ep.mac or "",
            "Interface": ep.ifname,
            "HostInterface": ep.host_ifname or "",
            "Aliases": list(ep.aliases) or None,
            "DNSNames": dns_names(ctr, ep, net),
        }
    settings: dict = {
        "SandboxKey": ctr.netns,
        "Ports": ports.docker_ports(list(ctr.ports)),
        "Networks": nets,
    }
    # docker inspect repeats the default bridge endpoint's values at the top level.
    default = nets.get("bridge")
    settings.update(
        Gateway=default["Gateway"] if default else "",
        IPAddress=default["IPAddress"] if default else "",
        IPPrefixLen=default["IPPrefixLen"] if default else 0,
        MacAddress=default["MacAddress"] if default else "",
    )
    return {
        "Id": ctr.id,
        "Created": ctr.created,
        "Path": ctr.command[0] if ctr.command else "",
        "Args": ctr.command[1:],
        "State": {
            "Status": status,
            "Running": status == "running",
            "Pid": pids[0] if pids else 0,
        },
        "Name": "/" + ctr.name,
        "Config": {
            "Hostname": ctr.hostname,
            "Cmd": ctr.command or None,
            "Env": ctr.environment or None,
            "ExposedPorts": {str(p): {} for p in ctr.exposed} or None,
            "Labels": dict(ctr.labels),
        },
        "HostConfig": {
            "NetworkMode": ctr.network_mode,
            "Links": [f"/{name}:/{ctr.name}/{alias}" for name, alias in ctr.links] or None,
            "Dns": list(ctr.dns),
            "DnsSearch": list(ctr.dns_search),
            "DnsOptions": list(ctr.dns_options),
            "ExtraHosts": [f"{name}:{ip}" for name, ip in ctr.extra_hosts] or None,
            "PortBindings": ports.docker_ports(list(ctr.ports)),
        },
        "NetworkSettings": settings,
        "LowbridgeNetnsOwned": ctr.netns_owned,
    }
