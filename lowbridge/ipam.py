"""IPv4 address management, Docker's way: pure functions over plain data.

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
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

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

    subnet: IPv4Network
    gateway: IPv4Address | None
    ip_range: IPv4Network | None = None
    aux_addresses: dict[str, IPv4Address] = field(default_factory=dict)

    def reserved(self) -> set[IPv4Address]:
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
        return cls(
            subnet=IPv4Network(doc["Subnet"]),
            gateway=IPv4Address(doc["Gateway"]) if doc.get("Gateway") else None,
            ip_range=IPv4Network(doc["IPRange"]) if doc.get("IPRange") else None,
            aux_addresses={k: IPv4Address(v) for k, v in doc.get("AuxiliaryAddresses", {}).items()},
        )


def default_subnets(pools: Iterable[tuple[str, int]] = DEFAULT_POOLS) -> Iterator[IPv4Network]:
    """Every candidate subnet of the default pools, in Docker's order."""
    for pool, size in pools:
        yield from IPv4Network(pool).subnets(new_prefix=size)


def parse_network(text: str, what: str) -> IPv4Network:
    """Parse an IPv4 CIDR strictly (no host bits), with a one-line error naming ``what``."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:  # host bits set: say what was meant, as Docker >= 25 does
            fixed = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidInput(f"invalid {what} {text!r}: {exc}") from None
        raise InvalidInput(f"invalid {what} {text}: it should be {fixed}") from None
    if net.version != 4:
        raise InvalidInput(f"invalid {what} {text!r}: only IPv4 is supported so far")
    return net


def parse_address(text: str, what: str) -> IPv4Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInput(f"invalid {what} {text!r}: not an IP address") from None
    if addr.version != 4:
        raise InvalidInput(f"invalid {what} {text!r}: only IPv4 is supported so far")
    return addr


def choose_subnet(
    taken: Iterable[IPv4Network],
    reserved: Iterable[IPv4Network] = (),
    pools: Iterable[tuple[str, int]] = DEFAULT_POOLS,
) -> IPv4Network:
    """First default-pool subnet overlapping none of ``taken`` (other networks) or ``reserved``
    (``pools``: Docker's local-scope pools unless given, e.g. the overlay's 10.0.0.0/8 in /24s)."""
    blocked = list(taken) + list(reserved)
    for candidate in default_subnets(pools):
        if not any(candidate.overlaps(other) for other in blocked):
            return candidate
    raise Conflict("no free subnet left in the default address pools; give one with --subnet")


def _usable(subnet: IPv4Network, addr: IPv4Address) -> bool:
    if addr not in subnet:
        return False
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


def check_usable_subnet(net: IPv4Network, text: str) -> None:
    """Refuse a subnet no bridge, macvlan or overlay network can work in."""
    for prefix, what in SPECIAL:
        if net.overlaps(prefix):
            raise InvalidInput(f"invalid subnet {text}: it is {what} address space")
    if net.prefixlen > 30:
        raise InvalidInput(
            f"invalid subnet {text}: a /{net.prefixlen} leaves no room for a gateway and an "
            "endpoint (at most /30)"
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
) -> Pool:
    """Validate the user's IPAM flags against the other networks and return the network's Pool.

    ``taken`` are the subnets of the other networks (a new subnet must overlap none of them);
    ``reserved`` are host prefixes avoided only when lowbridge picks the subnet itself, as Docker
    does; ``host_addresses`` the host's own, which a gateway must not be (a bridge that takes
    the host's address breaks the host's own network).  Raises InvalidInput for malformed or
    inconsistent values, Conflict for overlaps.  ``held`` are (subnet, device) of lowbridge's
    devices that no network of the store owns (a store lost or replaced): neither chosen nor
    given, while their devices hold them.
    """
    taken, held = list(taken), list(held)
    if subnet is None:
        if gateway or ip_range or aux_addresses:
            raise InvalidInput("--gateway, --ip-range and --aux-address need --subnet")
        net = choose_subnet(taken + [h for h, _ in held], reserved, pools)
    else:
        net = parse_network(subnet, "subnet")
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
        rng = parse_network(ip_range, "ip-range")
        if not rng.subnet_of(net):
            raise InvalidInput(f"ip-range {rng} is not inside subnet {net}")

    aux: dict[str, IPv4Address] = {}
    for key, value in (aux_addresses or {}).items():
        addr = parse_address(value, f"aux-address {key}")
        if not _usable(net, addr):
            raise InvalidInput(f"aux-address {key}={addr} is not a usable address of {net}")
        aux[key] = addr

    gw: IPv4Address | None = None
    if gateway is not None:
        gw = parse_address(gateway, "gateway")
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
    subnet: IPv4Network, ip_range: IPv4Network | None, used: set[IPv4Address] | set[int]
) -> IPv4Address:
    """The lowest usable address of ``ip_range`` (or ``subnet``) not in ``used``.

    Walks integers, not address objects: a bridge holds up to 1023 endpoints, and this runs on
    every attach (bench/growth.py)."""
    space = ip_range or subnet
    first, last = int(space.network_address), int(space.broadcast_address)
    taken = set(map(int, used))
    if subnet.prefixlen < 31:  # the subnet's network and broadcast addresses are not usable
        taken |= {int(subnet.network_address), int(subnet.broadcast_address)}
    lo = max(first, int(subnet.network_address))
    hi = min(last, int(subnet.broadcast_address))
    for value in range(lo, hi + 1):
        if value not in taken:
            return IPv4Address(value)
    raise Conflict(f"no free address left in {space}")


def allocate(
    pool: Pool, used: Iterable[IPv4Address | str], preferred: str | None = None
) -> IPv4Address:
    """Pick an endpoint address: ``preferred`` if given and free, else the lowest free one.

    ``used`` are the addresses already held by endpoints (objects, or dotted quads as the store
    keeps them: read as integers, not parsed into objects -- a bridge holds up to 1023); the
    gateway and aux addresses are added here.  A preferred address may lie anywhere in the
    subnet, also outside ``--ip-range``, as Docker allows.
    """
    taken = _ints(used) | {int(a) for a in pool.reserved()}
    if preferred is not None:
        addr = parse_address(preferred, "ip")
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
    except TypeError:  # address objects among them
        return {_int(a) for a in addresses}


def _int(address: IPv4Address | str) -> int:
    if isinstance(address, str):
        import socket

        return int.from_bytes(socket.inet_aton(address), "big")
    return int(address)
