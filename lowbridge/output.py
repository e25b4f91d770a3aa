"""What the CLI prints: docker-shaped tables and inspect documents (pure functions)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lowbridge import ports
from lowbridge.models import DEFAULT_NETWORK, Container, Endpoint, Network

if TYPE_CHECKING:
    import datetime as _dt

    from lowbridge.config import Paths


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
    """docker's ``State.Status`` of a sandbox (lowbridge.controller.lifecycle): "created",
    "running" while it stands -- its namespace is the container, as a pause container is,
    whether or not a command runs in it -- or "exited"."""
    return ctr.state


def status_text(ctr: Container, now: _dt.datetime | None = None) -> str:
    """docker ps's STATUS: ``Up 5 seconds``, ``Exited (4) 3 seconds ago``, ``Created``."""
    import datetime

    now = now or datetime.datetime.now(datetime.timezone.utc)

    def since(stamp: str | None) -> str:
        then = datetime.datetime.fromisoformat(stamp) if stamp else now
        return human_duration((now - then).total_seconds())

    if ctr.state == "running":
        return f"Up {since(ctr.started_at or ctr.created)}"
    if ctr.state == "exited":
        return f"Exited ({ctr.exit_code}) {since(ctr.finished_at)} ago"
    return "Created"


ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as docker prints an unset one


def rfc3339(stamp: str | None) -> str:
    """A stored time as docker's JSON writes it (Go's RFC 3339 with nanoseconds: trailing
    zeros of the fraction dropped, UTC as ``Z``)."""
    if not stamp:
        return ZERO_TIME
    import datetime

    t = datetime.datetime.fromisoformat(stamp).astimezone(datetime.timezone.utc)
    frac = f".{t.microsecond:06d}".rstrip("0").rstrip(".")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def driver_name(net: Network) -> str:
    """The driver as docker names it: the ``none`` network's is ``null``."""
    return "null" if net.driver == "none" else net.driver


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
            "IPv6Address": f"{ep.ip6}/{ep.prefixlen6}" if ep.ip6 else "",
        }
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": rfc3339(net.created),
        "Scope": scope(net),
        "Driver": driver_name(net),
        "EnableIPv6": net.ipv6,
        "IPAM": {
            "Driver": "default",
            "Options": None if net.predefined else {},
            "Config": _ipam_configs(net),
        },
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": members,
        "Options": dict(net.options),
        "Labels": dict(net.labels),
        "Device": net.device or "",
    } | ({"Peers": peers(endpoints, hosts or {})} if scope(net) == "global" else {})


def _ipam_configs(net: Network) -> list[dict]:
    """The network's IPAM entries as docker keeps them, IPv4's then IPv6's: what the user gave
    (a gateway only when given, or when docker chose the subnet too; never for the default
    bridge)."""
    out = []
    for pool, subnet, gateway in ((net.pool, net.user_subnet, net.user_gateway),
                                  (net.pool6, net.user_subnet6, net.user_gateway6)):  # fmt: skip
        if pool is None:
            continue
        doc = pool.to_doc()
        if net.is_default_bridge or (subnet and not gateway):
            doc.pop("Gateway", None)
        out.append(doc)
    return out


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
    paths: Paths | None = None,
    files_of: str | None = None,
) -> dict:
    """``docker inspect`` shape for one container: docker 20.10's fields, in its order, for
    what lowbridge has (no image, mounts or cgroups); ``paths`` places its files, which are
    the sandbox ``files_of``'s when it shares that one's namespace (--network container:)."""
    nets = {}
    for ep in endpoints:
        net = networks.get(ep.network_id)
        if net is not None:
            nets[net.name] = _endpoint_doc(ctr, ep, net)
    by_id = {e.network_id for e in endpoints}
    for j in ctr.joins:  # an exited sandbox: its networks, their addresses released
        net = networks.get(j.network_id)
        if net is not None and j.network_id not in by_id:
            nets[net.name] = _endpoint_doc(ctr, None, net, j.ip, j.aliases, j.ip6)
    default = nets.get(DEFAULT_NETWORK) if ctr.state == "running" else None
    running = ctr.state == "running"
    name, _, count = ctr.restart.partition(":")
    etc = paths.etc_dir(files_of or ctr.name) if paths and ctr.netns else ""
    own = running and not ctr.borrows
    settings: dict = {
        "Bridge": "",
        "SandboxID": ctr.id if own else "",
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports.docker_ports(list(ctr.ports), list(ctr.exposed)) if running else {},
        "SandboxKey": ctr.netns if own else "",
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
    }
    for key, value in (("EndpointID", ""), ("Gateway", ""), ("GlobalIPv6Address", ""),
                       ("GlobalIPv6PrefixLen", 0), ("IPAddress", ""), ("IPPrefixLen", 0),
                       ("IPv6Gateway", ""), ("MacAddress", "")):  # fmt: skip
        # docker repeats the default bridge endpoint's values at the top level.
        settings[key] = default[key] if default else value
    settings["Networks"] = nets
    return {
        "Id": ctr.id,
        "Created": rfc3339(ctr.created),
        "Path": ctr.command[0] if ctr.command else "",
        "Args": list(ctr.command[1:]),
        "State": {
            "Status": ctr.state,
            "Running": running,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": pids[0] if pids and running else 0,
            "ExitCode": ctr.exit_code,
            "Error": "",
            "StartedAt": rfc3339(ctr.started_at),
            "FinishedAt": rfc3339(ctr.finished_at),
        },
        "Image": "",
        "ResolvConfPath": os.path.join(etc, "resolv.conf") if etc else "",
        "HostnamePath": os.path.join(etc, "hostname") if etc else "",
        "HostsPath": os.path.join(etc, "hosts") if etc else "",
        "LogPath": paths.logs(ctr.id) if paths else "",
        "Name": "/" + ctr.name,
        "RestartCount": ctr.restart_count,
        "Platform": "linux",
        "HostConfig": {
            "NetworkMode": ctr.network_mode,
            "PortBindings": ports.docker_bindings(list(ctr.ports)),
            "RestartPolicy": {"Name": name, "MaximumRetryCount": int(count or 0)},
            "AutoRemove": ctr.auto_remove,
            "Dns": list(ctr.dns),
            "DnsOptions": list(ctr.dns_options),
            "DnsSearch": list(ctr.dns_search),
            "ExtraHosts": [f"{host}:{ip}" for host, ip in ctr.extra_hosts] or None,
            "Links": [f"/{name}:/{ctr.name}/{alias}" for name, alias in ctr.links] or None,
            "PublishAllPorts": ctr.publish_all,
            **({"Sysctls": dict(ctr.sysctls)} if ctr.sysctls else {}),
        },
        "Mounts": [],
        "Config": {
            "Hostname": ctr.hostname,
            "Domainname": ctr.domainname,
            "User": "",
            **({"ExposedPorts": {str(p): {} for p in ctr.exposed}} if ctr.exposed else {}),
            "Tty": False,
            "OpenStdin": False,
            "Env": list(ctr.environment) or None,
            "Cmd": list(ctr.command) or None,
            "Image": "",
            **({"MacAddress": ctr.mac_address} if ctr.mac_address else {}),
            "Labels": dict(ctr.labels),
        },
        "NetworkSettings": settings,
        "LowbridgeNetnsOwned": ctr.netns_owned,
    }


def _endpoint_doc(
    ctr: Container,
    ep: Endpoint | None,
    net: Network,
    ip: str | None = None,
    aliases: tuple[str, ...] = (),
    ip6: str | None = None,
) -> dict:
    """One of ``NetworkSettings.Networks`` (``ep`` None: an exited sandbox's, released)."""
    requested = ep.requested_ip if ep else ip
    requested6 = ep.requested_ip6 if ep else ip6
    ipam_config = {"IPv4Address": requested} if requested else {}
    if requested6:
        ipam_config["IPv6Address"] = requested6
    names = list(ep.aliases if ep else aliases)
    if not net.predefined:  # docker 20.10 lists the short id among a user network's aliases
        names.append(ctr.id[:12])
    doc = {
        "IPAMConfig": ipam_config or None,
        "Links": None,
        "Aliases": names or None,
        "NetworkID": net.id,
        "EndpointID": ep.id if ep else "",
        "Gateway": (ep.gateway or "") if ep else "",
        "IPAddress": (ep.ip or "") if ep else "",
        "IPPrefixLen": (ep.prefixlen or 0) if ep else 0,
        "IPv6Gateway": (ep.gateway6 or "") if ep else "",
        "GlobalIPv6Address": (ep.ip6 or "") if ep else "",
        "GlobalIPv6PrefixLen": (ep.prefixlen6 or 0) if ep else 0,
        "MacAddress": (ep.mac or "") if ep else "",
        "DriverOpts": None,
    }
    if ep is not None:  # lowbridge's own: docker 26's DNSNames, and the interfaces
        doc["DNSNames"] = dns_names(ctr, ep, net)
        doc["Interface"] = ep.ifname
        doc["HostInterface"] = ep.host_ifname or ""
    return doc


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
        self.Name, self.Driver, self.Scope = net.name, driver_name(net), scope(net)
        self.IPv6 = "true" if net.ipv6 else "false"
        self.Internal = "true" if net.internal else "false"
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
        standing = ctr.state == "running"
        self.Ports = ports.docker_ps(list(ctr.ports), list(ctr.exposed)) if standing else ""
        self.State, self.Status = state, status_text(ctr)
        self.Networks = ",".join(sorted(networks))
