"""``-p/--publish`` specs in Docker's syntax.

``[hostip:][hostport[-end]:]containerport[-end][/proto]``.

Pure parsing and expansion; choosing free host ports and checking that they are free is the
controller's (it needs the host).  Ranges map one to one when both sides are ranges of the same
length; a host range with a single container port means "any free port of that range"
(``-p 8000-8010:80``), as in Docker.  IPv4 only, like the rest of lowbridge so far.
"""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass
from typing import NamedTuple

from lowbridge.errors import Conflict, InvalidInput
from lowbridge.ipam import parse_address

PROTOCOLS = ("tcp", "udp")
MAX_RANGE = 1024  # one rule per port per table: keep a typo from making 60k rules


class Exposed(NamedTuple):
    """A port the container says it serves (``--expose``, Docker's ExposedPorts key)."""

    port: int
    proto: str

    def __str__(self) -> str:
        return f"{self.port}/{self.proto}"


@dataclass(frozen=True)
class PortRequest:
    """One container port to publish; ``host_ports`` is None (any free one) or candidates."""

    host_ip: str
    host_ports: tuple[int, ...] | None
    container_port: int
    proto: str
    given_ip: bool = False  # the spec named the host address (else the network's default)


@dataclass(frozen=True)
class PortMapping:
    """A resolved binding: host_ip:host_port/proto -> container_port on the gateway endpoint."""

    host_ip: str
    host_port: int
    container_port: int
    proto: str

    def to_doc(self) -> dict:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict) -> PortMapping:
        return cls(**doc)

    def overlaps(self, other: PortMapping) -> bool:
        """Same port and protocol on addresses that can both receive a packet (0.0.0.0 is every
        IPv4 address, :: every IPv6 one)."""
        if (self.host_port, self.proto) != (other.host_port, other.proto):
            return False
        if (":" in self.host_ip) != (":" in other.host_ip):
            return False
        any_ip = ("0.0.0.0", "::")
        return self.host_ip in any_ip or other.host_ip in any_ip or self.host_ip == other.host_ip


def _port(text: str, spec: str) -> int:
    # isascii: str.isdigit() and int() also take other scripts' digits ("٨١٨١" is 8181).
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise InvalidInput(f"invalid port {text!r} in publish spec {spec!r}: must be 1-65535")
    return int(text)


def _range(text: str, spec: str) -> list[int]:
    first, sep, last = text.partition("-")
    start = _port(first, spec)
    end = _port(last, spec) if sep else start
    if end < start:
        raise InvalidInput(f"invalid port range {text!r} in publish spec {spec!r}")
    if end - start >= MAX_RANGE:
        raise InvalidInput(f"port range {text!r} in {spec!r} is longer than {MAX_RANGE}")
    return list(range(start, end + 1))


def parse(spec: str, default_ip: str = "0.0.0.0") -> list[PortRequest]:
    """Parse one ``-p`` value into one request per container port; ``default_ip``: the host
    address of a spec that names none (the network's host_binding_ipv4 option)."""
    rest, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidInput(f"invalid protocol {proto!r} in publish spec {spec!r}: tcp or udp")
    host_ip, given = default_ip, False
    if rest.startswith("["):  # [IPv6]:hostport:containerport, as docker writes it
        address, bracket, rest = rest[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise InvalidInput(f"invalid publish spec {spec!r}: [ipv6]:[hostport:]containerport")
        host_ip, given = _host_address(address, spec, 6), True
        rest = rest[1:]
        if rest.count(":") != 1:
            rest = ":" + rest  # [::]:80 -- no host port
        rest = "x:" + rest  # a placeholder for the address already read
    parts = rest.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise InvalidInput(f"invalid publish spec {spec!r}: [hostip:][hostport:]containerport")
    if len(parts) == 3 and parts[0] and not given:
        host_ip, given = _host_address(parts[0], spec, 4), True
    container = _range(parts[-1], spec)
    host_text = parts[-2] if len(parts) >= 2 else ""
    if not host_text:
        return [PortRequest(host_ip, None, c, proto, given) for c in container]
    host = _range(host_text, spec)
    if len(host) == len(container):
        return [PortRequest(host_ip, (h,), c, proto, given)
                for h, c in zip(host, container, strict=False)]  # fmt: skip
    if len(container) == 1:
        return [PortRequest(host_ip, tuple(host), container[0], proto, given)]
    raise InvalidInput(
        f"invalid publish spec {spec!r}: host and container port ranges differ in length"
    )


def _host_address(text: str, spec: str, version: int) -> str:
    # [::1] is served by a userland relay, not DNAT (lowbridge.proxy).
    return str(parse_address(text, f"host address in {spec!r}", version))


def shown(ip: str) -> str:
    """A host address as docker prints it beside a port: ``[::]`` for IPv6."""
    return f"[{ip}]" if ":" in ip else ip


def docker_ports(
    mappings: list[PortMapping], exposed: list[Exposed] | None = None
) -> dict[str, list[dict[str, str]] | None]:
    """``NetworkSettings.Ports`` as docker inspect shows it: each published port's bindings,
    and an exposed port that is not published as null."""
    out: dict[str, list[dict[str, str]] | None] = {}
    for m in sorted(mappings, key=lambda m: (m.container_port, m.proto, m.host_port)):
        out.setdefault(f"{m.container_port}/{m.proto}", []).append(  # type: ignore[union-attr]
            {"HostIp": m.host_ip, "HostPort": str(m.host_port)}
        )
    for e in exposed or ():
        out.setdefault(str(e), None)
    return out


def docker_bindings(mappings: list[PortMapping]) -> dict[str, list[dict[str, str]]]:
    """``HostConfig.PortBindings``: what was asked for (docker keeps an address that was not
    given as "")."""
    out: dict[str, list[dict[str, str]]] = {}
    for m in sorted(mappings, key=lambda m: (m.container_port, m.proto, m.host_port)):
        host_ip = "" if m.host_ip == "0.0.0.0" else m.host_ip
        out.setdefault(f"{m.container_port}/{m.proto}", []).append(
            {"HostIp": host_ip, "HostPort": str(m.host_port)}
        )
    return out


def docker_ps(mappings: list[PortMapping], exposed: list[Exposed] | None = None) -> str:
    """The PORTS column of ``docker ps`` (docker/cli DisplayablePorts): ports published on the
    same number grouped into ranges per address and protocol (``0.0.0.0:7000-7002->7000-7002/
    tcp``), exposed ones alone likewise (``9000/tcp``), then the mappings to other numbers."""
    entries = [(m.container_port, m.host_ip, m.host_port, m.proto) for m in mappings]
    mapped = {(m.container_port, m.proto) for m in mappings}
    entries += [(e.port, "", 0, e.proto) for e in exposed or () if (e.port, e.proto) not in mapped]
    groups: dict[str, list[int]] = {}  # key -> [first, last], in the order keys appear
    result, other = [], []
    for port, ip, public, proto in sorted(entries):
        if ip and public != port:
            other.append(f"{shown(ip)}:{public}->{port}/{proto}")
            continue
        key = f"{shown(ip)}/{proto}" if ip else proto
        group = groups.get(key)
        if group is not None and port == group[1] + 1:
            group[1] = port
            continue
        if group is not None:
            result.append(_group(key, *group))
        groups[key] = [port, port]
    result += [_group(key, first, last) for key, (first, last) in groups.items()]
    return ", ".join(result + other)


def _group(key: str, first: int, last: int) -> str:
    ip, _, proto = key.rpartition("/")
    span = str(first) if first == last else f"{first}-{last}"
    return f"{ip}:{span}->{span}/{proto}" if ip else f"{span}/{proto}"


def docker_port_lines(mappings: list[PortMapping], which: str | None = None) -> list[str]:
    """What ``docker port`` prints: ``80/tcp -> 0.0.0.0:8080`` a mapping; for one port
    (``80`` or ``80/udp``), its host sides only."""
    ordered = sorted(mappings, key=lambda m: (m.container_port, m.proto, m.host_port))
    if which is None:
        return [f"{m.container_port}/{m.proto} -> {shown(m.host_ip)}:{m.host_port}"
                for m in ordered]  # fmt: skip
    port, _, proto = which.partition("/")
    return [f"{shown(m.host_ip)}:{m.host_port}" for m in ordered
            if str(m.container_port) == port and m.proto == (proto or "tcp")]  # fmt: skip


def ephemeral_range() -> range:
    """Ports for ``-p CONTAINERPORT``: the kernel's ip_local_port_range, as Docker takes them."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        low, high = 49153, 65535
    return range(low, high + 1)


def check_free(mapping: PortMapping) -> None:
    """Raise Conflict if a socket on this host already holds the port (a bind test).

    Docker keeps such a socket open for as long as the mapping lives; lowbridge has no daemon to
    hold it, so it only checks at publish time (see README, "Not done yet").
    """
    import socket  # here: a read-only command needs no socket module (bench/cli.py)

    kind = socket.SOCK_STREAM if mapping.proto == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in mapping.host_ip else socket.AF_INET
    with socket.socket(family, kind) as sock:
        # SO_REUSEADDR: ignore TIME_WAIT leftovers, still fail against a listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # [::] is IPv6's alone (0.0.0.0 is checked on its own)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((mapping.host_ip, mapping.host_port))
        except OSError as exc:
            where = f"{shown(mapping.host_ip)}:{mapping.host_port}"
            if exc.errno == errno.EADDRINUSE:
                raise Conflict(f"Bind for {where} failed: port is already allocated") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidInput(
                    f"cannot publish on {where}: not an address of this host"
                ) from None
            raise Conflict(f"Bind for {where} failed: {exc.strerror}") from None


def parse_expose(spec: str) -> list[Exposed]:
    """``--expose PORT[-END][/PROTO]`` -> the exposed ports (Docker's ExposedPorts keys)."""
    rest, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidInput(f"invalid protocol {proto!r} in --expose {spec!r}: tcp or udp")
    return [Exposed(port, proto) for port in _range(rest, spec)]
