"""What the CLI prints: docker-shaped tables and inspect documents (pure functions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lowbridge import ports
from lowbridge.models import Container, Endpoint, Network

if TYPE_CHECKING:
    import datetime as _dt


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns as docker's tables lay them out (:func:`tabwrite`)."""
    return tabwrite(["\t".join(row) for row in [headers, *rows]])


def tabwrite(lines: list[str], minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter as docker's tables use it (minimum width 10, padding 3, spaces): a
    cell is text ended by a tab; a column block -- consecutive lines with a cell in that
    column -- is as wide as its widest cell plus the padding; the text after a line's last tab
    is not a cell and is not padded.

    No table library lays out docker's tables exactly, and read-only commands must start fast,
    so it is written out here (Go's algorithm: text/tabwriter's format)."""
    cells = [line.split("\t") for line in lines]
    out = [""] * len(cells)

    def block(first: int, last: int, widths: list[int]) -> None:
        column, line = len(widths), first
        while line < last:
            if column >= len(cells[line]) - 1:  # no cell of this column on this line
                line += 1
                continue
            start = line
            width = minwidth
            while line < last and column < len(cells[line]) - 1:
                width = max(width, len(cells[line][column]) + padding)
                line += 1
            block(start, line, [*widths, width])
        for i in range(first, last):
            if not out[i]:  # the block that reached this line's last cell writes it
                row = cells[i]
                out[i] = "".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + row[-1]

    block(0, len(cells), [])
    return "\n".join(out)


def human_duration(seconds: float) -> str:
    """docker's units.HumanDuration ("5 seconds", "About a minute", "3 weeks")."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else f"{s} seconds"
    minutes, hours = s // 60, int(seconds / 3600 + 0.5)
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    if hours < 48:
        return "About an hour" if hours == 1 else f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(stamp: str, now: _dt.datetime | None = None) -> str:
    """docker's CREATED column: "5 seconds ago", "About an hour ago"."""
    import datetime

    now = now or datetime.datetime.now(datetime.timezone.utc)
    return human_duration((now - datetime.datetime.fromisoformat(stamp)).total_seconds()) + " ago"


def scope(net: Network) -> str:
    """The network's driver's scope: local or global."""
    from lowbridge import drivers

    return drivers.get(net.driver).scope


def container_status(ctr: Container, pids: list[int]) -> str:
    """docker's ``State.Status`` of a sandbox: "running" while it stands -- its namespace is
    the container, as a pause container is, whether or not a command runs in it -- and
    "exited" once the command it was started with has ended."""
    return "exited" if ctr.pid and not pids else "running"


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
        "Scope": scope(net),
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
    } | ({"Peers": peers(endpoints, hosts or {})} if scope(net) == "global" else {})


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


# ------------------------------------------------------------------ rows for --format
def go_time(stamp: str, fraction: bool = True) -> str:
    """A stored time as Go's ``time.Time.String()`` prints it (docker's ``CreatedAt``):
    ``2026-12-06 05:30:12.123456 +0000 UTC`` (``fraction`` False: whole seconds)."""
    import datetime

    t = datetime.datetime.fromisoformat(stamp).astimezone(datetime.timezone.utc)
    frac = f".{t.microsecond:06d}".rstrip("0").rstrip(".") if fraction else ""
    return t.strftime("%Y-%m-%d %H:%M:%S") + frac + " +0000 UTC"


def _labels(labels: dict[str, str] | object) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(dict(labels).items()))  # type: ignore[call-overload]


class Row:
    """One line of a list as docker's ``--format`` sees it: its fields are attributes named
    as docker's (``.ID``, ``.Name``), ``Label NAME`` a method, ``HEADERS`` each field's column
    title in a ``table`` format."""

    go_type = ""
    HEADERS: dict[str, str] = {}
    ERRORS = ("template parsing error", "template parsing error")  # docker's words (parse, run)

    def __init__(self, labels: object):
        self._labels = dict(labels)  # type: ignore[call-overload]
        self.Labels = _labels(self._labels)

    def Label(self, name: str) -> str:  # noqa: N802 (docker's name)
        return self._labels.get(name, "")

    def marshal(self) -> dict[str, str]:
        """``{{json .}}``: every field, by name (Go's json sorts a map's keys)."""
        return {k: getattr(self, k) for k in sorted(self.HEADERS) if k != "Label"}


class NetworkRow(Row):
    """A network in ``network ls`` (docker's networkContext)."""

    go_type = "*network.networkContext"
    HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
               "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS", "Label": "LABEL",
               "CreatedAt": "CREATED AT"}  # fmt: skip

    def __init__(self, net: Network, trunc: bool = True):
        super().__init__(net.labels)
        self.ID = net.id[:12] if trunc else net.id
        self.Name, self.Driver, self.Scope = net.name, net.driver, scope(net)
        self.IPv6, self.Internal = "false", "true" if net.internal else "false"
        self.CreatedAt = go_time(net.created)


class ContainerRow(Row):
    """A sandbox in ``ps`` (docker's ContainerContext; no images, mounts or sizes here)."""

    go_type = "*formatter.ContainerContext"
    ERRORS = ("failed to parse template", "failed to execute template")
    HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
               "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
               "State": "STATE", "Status": "STATUS", "Size": "SIZE", "Names": "NAMES",
               "Labels": "LABELS", "Label": "LABEL", "Mounts": "MOUNTS",
               "LocalVolumes": "LOCAL VOLUMES", "Networks": "NETWORKS"}  # fmt: skip

    def __init__(self, ctr: Container, networks: list[str], state: str, trunc: bool = True):
        import json

        super().__init__(ctr.labels)
        command = " ".join(ctr.command)
        if trunc and len(command) > 20:
            command = command[:19] + "…"
        self.ID = ctr.id[:12] if trunc else ctr.id
        self.Names, self.Image, self.Size, self.Mounts, self.LocalVolumes = (
            ctr.name,
            "",
            "0B",
            "",
            "0",
        )
        self.Command = json.dumps(command, ensure_ascii=False)  # Go's strconv.Quote keeps "…"
        self.CreatedAt = go_time(ctr.created, fraction=False)
        self.RunningFor = ago(ctr.created)
        self.Ports = ports.docker_ps(list(ctr.ports))
        self.State = self.Status = state
        self.Networks = ",".join(sorted(networks))
