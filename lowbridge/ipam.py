"""Address management, Docker's way: pure functions over plain data (IPv4 and IPv6).

Subnet choice (moby ``ipams/defaultipam/address_space.go`` allocatePredefinedPool): first fit in
the local-scope default pools, in this order -- 172.17.0.0/16, 172.18.0.0/16, 172.19.0.0/16, then
172.20.0.0/14, 172.24.0.0/14, 172.28.0.0/14 split in /16s, then 192.168.0.0/16 split in /20s -- the
lowest one that overlaps neither another network's subnet nor a *reserved* prefix (the host's
on-link routes and nameservers, moby ``netutils/utils_linux.go`` InferReservedNetworks).

Addresses (moby ``ipams/defaultipam/allocator.go``): the network address and, except in a /31,
the broadcast address are never handed out; the gateway is requested first and so gets the lowest
free address of the pool (``--ip-range`` if given, else the subnet) unless ``--gateway`` names one;
``--aux-address`` entries are reserved; endpoints get the lowest free address, and a released
address is reused at once (allocation is not serial on local networks).

IPv6 (moby ``daemon.go`` deriveULABaseNetwork; shared/reference/docker-mechanics.md 1.4): without
``--subnet``, a /64 of a ULA /48 (RFC 4193) whose 40-bit global ID is the low 40 bits of
SHA-256(host id); the subnet-router anycast address (the network address) is never handed out,
and there is no broadcast address.  Both families share one code path: addresses as integers,
the lowest free one found by walking up from the pool's first (the walk stops after at most as
many steps as addresses are taken, so a /64 costs what a /24 does).  netaddr, which the design
card names for sets and ranges, is not needed for that and would add ~25 ms of import to every
dual-stack command (bench/cli.py's budget): ``ipaddress`` does both families.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from lowbridge.errors import Conflict, InvalidInput

# (pool, size of the subnets it is split into), moby ipamutils/utils.go localScopeDefaultNetworks.
DEFAULT_POOLS: tuple[tuple[str, int], ...] = (
    ("172.17.0.0/16", 16),
    ("172.18.0.0/16", 16),
    ("172.19.0.0/16", 16),
    ("172.20.0.0/14", 16),
    ("172.24.0.0/14", 16),
    ("172.28.0.0/14", 16),
    ("192.168.0.0/16", 20),
)


@dataclass(frozen=True)
class Pool:
    """The validated IPAM configuration of one network (Docker's IPAM.Config entry)."""

    subnet: IPv4Network | IPv6Network
    gateway: IPv4Address | IPv6Address | None
    ip_range: IPv4Network | IPv6Network | None = None
    aux_addresses: dict[str, IPv4Address | IPv6Address] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return self.subnet.version

    def reserved(self) -> set[IPv4Address | IPv6Address]:
        """Addresses no endpoint may take: the gateway and the aux addresses."""
        taken = set(self.aux_addresses.values())
        if self.gateway is not None:
            taken.add(self.gateway)
        return taken

    def to_doc(self) -> dict:
        doc: dict = {"Subnet": str(self.subnet)}
        if self.ip_range is not None:
            doc["IPRange"] = str(self.ip_range)
        if self.gateway is not None:
            doc["Gateway"] = str(self.gateway)
        if self.aux_addresses:
            doc["AuxiliaryAddresses"] = {k: str(v) for k, v in self.aux_addresses.items()}
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> Pool:
        net, addr = ipaddress.ip_network, ipaddress.ip_address
        return cls(
            subnet=net(doc["Subnet"]),
            gateway=addr(doc["Gateway"]) if doc.get("Gateway") else None,
            ip_range=net(doc["IPRange"]) if doc.get("IPRange") else None,
            aux_addresses={k: addr(v) for k, v in doc.get("AuxiliaryAddresses", {}).items()},
        )


def default_subnets(
    pools: Iterable[tuple[str, int]] = DEFAULT_POOLS,
) -> Iterator[IPv4Network | IPv6Network]:
    """Every candidate subnet of the default pools, in Docker's order."""
    for pool, size in pools:
        yield from ipaddress.ip_network(pool).subnets(new_prefix=size)


def ula_pool(host_id: str) -> tuple[tuple[str, int], ...]:
    """The IPv6 default pool of a host: its ULA /48 in /64s (moby deriveULABaseNetwork: ``fd``
    then the low 40 bits of SHA-256(host id) as the global ID, RFC 4193 3.2)."""
    import hashlib

    digest = hashlib.sha256(host_id.encode()).digest()
    global_id = int.from_bytes(digest[-5:], "big")
    base = IPv6Network(((0xFD << 120) | (global_id << 80), 48))
    return ((str(base), 64),)


def parse_network(text: str, what: str, version: int | None = 4) -> IPv4Network | IPv6Network:
    """Parse a CIDR strictly (no host bits), with a one-line error naming ``what``; of IP
    ``version`` (None: either)."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:  # host bits set: say what was meant, as Docker >= 25 does
            fixed = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidInput(f"invalid {what} {text!r}: {exc}") from None
        raise InvalidInput(f"invalid {what} {text}: it should be {fixed}") from None
    if version is not None and net.version != version:
        raise InvalidInput(f"invalid {what} {text}: not an IPv{version} subnet")
    return net


def parse_address(text: str, what: str, version: int | None = 4) -> IPv4Address | IPv6Address:
    """Parse an address of IP ``version`` (None: either), with a one-line error."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInput(f"invalid {what} {text!r}: not an IP address") from None
    if version is not None and addr.version != version:
        raise InvalidInput(f"invalid {what} {text}: not an IPv{version} address")
    return addr


def family_of(text: str) -> int | None:
    """4 or 6 for an address or CIDR, None for neither (the caller's parse says why)."""
    try:
        return ipaddress.ip_network(text, strict=False).version
    except ValueError:
        return None


def choose_subnet(
    taken: Iterable[IPv4Network | IPv6Network],
    reserved: Iterable[IPv4Network | IPv6Network] = (),
    pools: Iterable[tuple[str, int]] = DEFAULT_POOLS,
) -> IPv4Network | IPv6Network:
    """First default-pool subnet overlapping none of ``taken`` (other networks) or ``reserved``
    (``pools``: Docker's local-scope pools unless given, e.g. the overlay's 10.0.0.0/8 in /24s)."""
    pools = tuple(pools)
    version = ipaddress.ip_network(pools[0][0]).version if pools else 4
    blocked = [n for n in (*taken, *reserved) if n.version == version]
    for candidate in default_subnets(pools):
        if not any(candidate.overlaps(other) for other in blocked):
            return candidate
    raise Conflict("no free subnet left in the default address pools; give one with --subnet")


def _usable(subnet: IPv4Network | IPv6Network, addr: IPv4Address | IPv6Address) -> bool:
    if addr.version != subnet.version or addr not in subnet:
        return False
    if subnet.version == 6:  # the subnet-router anycast address; no broadcast in IPv6
        return addr != subnet.network_address
    if subnet.prefixlen >= 31:
        return True
    return addr not in (subnet.network_address, subnet.broadcast_address)


# Prefixes no network may use: they mean something to every IPv4 stack (RFC 6890): "this
# network", loopback, multicast, reserved and broadcast.
SPECIAL = tuple(
    (IPv4Network(prefix), what)
    for prefix, what in (
        ("0.0.0.0/8", '"this network" (0.0.0.0/8)'),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4, with the broadcast address)"),
    )
)


SPECIAL6 = tuple(
    (IPv6Network(prefix), what)
    for prefix, what in (
        ("::/127", "unspecified or loopback (::/127)"),
        ("fe80::/10", "link-local (fe80::/10)"),
        ("ff00::/8", "multicast (ff00::/8)"),
    )
)


# The longest prefix that still leaves room for a gateway and an endpoint, per family.
LONGEST = {4: 30, 6: 126}


def check_usable_subnet(net: IPv4Network | IPv6Network, text: str) -> None:
    """Refuse a subnet no bridge, macvlan or overlay network can work in."""
    for prefix, what in SPECIAL if net.version == 4 else SPECIAL6:
        if net.overlaps(prefix):
            raise InvalidInput(f"invalid subnet {text}: it is {what} address space")
    longest = LONGEST[net.version]
    if net.prefixlen > longest:
        raise InvalidInput(
            f"invalid subnet {text}: a /{net.prefixlen} leaves no room for a gateway and an "
            f"endpoint (at most /{longest})"
        )


def plan_pool(
    *,
    subnet: str | None,
    gateway: str | None,
    ip_range: str | None,
    aux_addresses: dict[str, str] | None,
    taken: Iterable[IPv4Network],
    reserved: Iterable[IPv4Network] = (),
    with_gateway: bool = True,
    pools: Iterable[tuple[str, int]] = DEFAULT_POOLS,
    host_addresses: Iterable[str] = (),
    held: Iterable[tuple[IPv4Network, str]] = (),
    version: int = 4,
) -> Pool:
    """Validate the user's IPAM flags against the other networks and return the network's Pool.

    ``taken`` are the subnets of the other networks (a new subnet must overlap none of them);
    ``reserved`` are host prefixes avoided only when lowbridge picks the subnet itself, as Docker
    does; ``host_addresses`` the host's own, which a gateway must not be (a bridge that takes
    the host's address breaks the host's own network).  Raises InvalidInput for malformed or
    inconsistent values, Conflict for overlaps.  ``held`` are (subnet, device) of lowbridge's
    devices that no network of the store owns (a store lost or replaced): neither chosen nor
    given, while their devices hold them.  ``version`` is the pool's IP version (an IPv6 pool's
    ``pools`` are the host's ULA pool, :func:`ula_pool`).
    """
    taken = [n for n in taken if n.version == version]
    held = [(n, d) for n, d in held if n.version == version]
    if subnet is None:
        if gateway or ip_range or aux_addresses:
            flags = "--gateway, --ip-range and --aux-address"
            if version == 6:
                raise InvalidInput(f"IPv6 {flags} need an IPv6 --subnet")
            raise InvalidInput(f"{flags} need --subnet")
        net = choose_subnet(taken + [h for h, _ in held], reserved, pools)
    else:
        net = parse_network(subnet, "subnet", version)
        check_usable_subnet(net, subnet)
        for other in taken:
            if net.overlaps(other):
                raise Conflict(f"subnet {net} overlaps with another network's subnet {other}")
        for other, device in held:
            if net.overlaps(other):
                raise Conflict(
                    f"subnet {net} overlaps {other}, held by {device}: a device of "
                    "lowbridge's that its store does not know (was the store lost?)"
                )

    rng = None
    if ip_range is not None:
        rng = parse_network(ip_range, "ip-range", version)
        if not rng.subnet_of(net):
            raise InvalidInput(f"ip-range {rng} is not inside subnet {net}")

    aux: dict[str, IPv4Address | IPv6Address] = {}
    for key, value in (aux_addresses or {}).items():
        addr = parse_address(value, f"aux-address {key}", version)
        if not _usable(net, addr):
            raise InvalidInput(f"aux-address {key}={addr} is not a usable address of {net}")
        aux[key] = addr

    gw: IPv4Address | IPv6Address | None = None
    if gateway is not None:
        gw = parse_address(gateway, "gateway", version)
        if not _usable(net, gw):
            raise InvalidInput(f"gateway {gw} is not a usable address of subnet {net}")
        if gw in aux.values():
            raise Conflict(f"gateway {gw} is also an aux-address")
    elif with_gateway:
        gw = lowest_free(net, rng, set(aux.values()))
    if gw is not None and str(gw) in set(host_addresses):
        raise Conflict(
            f"gateway {gw} is an address of this host (subnet {net} is the host's own "
            "network): choose another --subnet or --gateway"
        )
    return Pool(subnet=net, gateway=gw, ip_range=rng, aux_addresses=aux)


def lowest_free(
    subnet: IPv4Network | IPv6Network,
    ip_range: IPv4Network | IPv6Network | None,
    used: set[IPv4Address] | set[IPv6Address] | set[int],
) -> IPv4Address | IPv6Address:
    """The lowest usable address of ``ip_range`` (or ``subnet``) not in ``used``.

    Walks integers, not address objects: a bridge holds up to 1023 endpoints, and this runs on
    every attach (bench/growth.py); the walk ends after at most ``len(used) + 2`` steps."""
    space = ip_range or subnet
    first, last = int(space.network_address), int(space.broadcast_address)
    taken = set(map(int, used))
    if subnet.version == 6:  # the subnet-router anycast address (RFC 4291 2.6.1)
        taken.add(int(subnet.network_address))
    elif subnet.prefixlen < 31:  # the subnet's network and broadcast addresses are not usable
        taken |= {int(subnet.network_address), int(subnet.broadcast_address)}
    lo = max(first, int(subnet.network_address))
    hi = min(last, int(subnet.broadcast_address))
    for value in range(lo, hi + 1):
        if value not in taken:
            return type(subnet.network_address)(value)
    raise Conflict(f"no free address left in {space}")


def allocate(
    pool: Pool, used: Iterable[IPv4Address | IPv6Address | str], preferred: str | None = None
) -> IPv4Address | IPv6Address:
    """Pick an endpoint address: ``preferred`` if given and free, else the lowest free one.

    ``used`` are the addresses already held by endpoints (objects, or dotted quads as the store
    keeps them: read as integers, not parsed into objects -- a bridge holds up to 1023); the
    gateway and aux addresses are added here.  A preferred address may lie anywhere in the
    subnet, also outside ``--ip-range``, as Docker allows.
    """
    taken = _ints(used) | {int(a) for a in pool.reserved()}
    if preferred is not None:
        addr = parse_address(preferred, "ip" if pool.version == 4 else "ip6", pool.version)
        if not _usable(pool.subnet, addr):
            raise InvalidInput(f"ip {addr} is not a usable address of subnet {pool.subnet}")
        if int(addr) in taken:
            raise Conflict(f"ip {addr} is already in use on this network")
        return addr
    return lowest_free(pool.subnet, pool.ip_range, taken)


_FROM_BYTES = functools.partial(int.from_bytes, byteorder="big")


def _ints(addresses: Iterable[IPv4Address | str]) -> set[int]:
    """The addresses as integers; dotted quads are converted in C (map, no Python call per
    address: an attach reads up to 1023 of them)."""
    import socket  # here: a read-only command needs no socket module (bench/cli.py)

    addresses = list(addresses)
    try:
        return set(map(_FROM_BYTES, map(socket.inet_aton, addresses)))
    except (TypeError, OSError):  # address objects, or IPv6 addresses, among them
        pass
    try:  # IPv6 text, converted in C as well
        six = functools.partial(socket.inet_pton, socket.AF_INET6)
        return set(map(_FROM_BYTES, map(six, addresses)))
    except (TypeError, OSError):
        return {_int(a) for a in addresses}


def _int(address: IPv4Address | IPv6Address | str) -> int:
    if isinstance(address, str):
        return int(ipaddress.ip_address(address))
    return int(address)
