"""Names and identifiers: pure functions, no I/O.

Kernel object names are derived deterministically from stored ids so that any lowbridge process can
find (and clean up) what another one created, and every name lowbridge creates carries its prefix:

    lowbridge0        the default ``bridge`` network's device (Docker's ``docker0``)
    lb-<id[:12]>      a user-defined bridge network's device (Docker's ``br-<id[:12]>``)
    lbv<12 hex>       the host end of a sandbox's veth, hashed from (network id, container id)

Linux limits interface names to 15 bytes (IFNAMSIZ 16 with the NUL); the kernel answers ERANGE for
longer ones, so every generator here stays within that bound.
"""

from __future__ import annotations

import os
import re

from lowbridge.errors import InvalidInput

IFNAMSIZ = 15
DEFAULT_BRIDGE_DEVICE = "lowbridge0"
BRIDGE_PREFIX = "lb-"
VETH_PREFIX = "lbv"
# Marks lowbridge's own devices (IFLA_IFALIAS) so cleanup can tell them from the user's.
ALIAS_PREFIX = "lowbridge:"

# Docker's rule for container names ([a-zA-Z0-9][a-zA-Z0-9_.-]), which also keeps names usable as
# /run/netns file names (no "/", see pyroute2-notes pitfall 2).  63 is the DNS label limit: names
# become DNS names on user-defined networks.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
MAX_NAME = 63
_IFNAME_RE = re.compile(r"^[^/\s:]+$")


def validate_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid network or container name, else raise InvalidInput."""
    if not name:
        raise InvalidInput(f"invalid {kind} name: it must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidInput(
            f"invalid {kind} name {name[:20]}...: {len(name)} characters, at most {MAX_NAME}"
        )
    if not _NAME_RE.match(name):
        raise InvalidInput(
            f"invalid {kind} name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name


_HOSTNAME_RE = re.compile(
    r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)


def validate_hostname(name: str) -> str:
    """An RFC 1123 host name (labels of letters, digits and inner hyphens; 64 bytes at most,
    the kernel's limit for a UTS name)."""
    if len(name) > 64 or not _HOSTNAME_RE.match(name):
        raise InvalidInput(f"invalid hostname {name!r}: RFC 1123 labels, at most 64 characters")
    return name


def valid_ifname(name: str) -> bool:
    """Whether the kernel would accept ``name`` as an interface name."""
    return bool(name) and len(name.encode()) <= IFNAMSIZ and bool(_IFNAME_RE.match(name)) and (
        name not in (".", ".."))  # fmt: skip


def validate_ifname(name: str) -> str:
    """Return ``name`` if the kernel would accept it as an interface name."""
    if not valid_ifname(name):
        raise InvalidInput(
            f"invalid interface name {name!r}: 1-{IFNAMSIZ} characters, no '/', ':' or spaces"
        )
    return name


def new_id() -> str:
    """A random 64-hex identifier, like Docker's network and container ids."""
    return os.urandom(32).hex()  # what secrets.token_hex(32) returns (~3 ms less to import)


def bridge_device(network_id: str) -> str:
    """Device name of a user-defined bridge network."""
    return BRIDGE_PREFIX + network_id[:12]


def veth_host_name(network_id: str, container_id: str) -> str:
    """Host-side veth name of the endpoint joining ``container_id`` to ``network_id``."""
    import hashlib  # only here: its import (OpenSSL) costs read-only commands ~5 ms

    digest = hashlib.sha256(f"{network_id}/{container_id}".encode()).hexdigest()
    return VETH_PREFIX + digest[: IFNAMSIZ - len(VETH_PREFIX)]


_VETH_RE = re.compile(rf"^{VETH_PREFIX}[0-9a-f]{{{IFNAMSIZ - len(VETH_PREFIX)}}}$")


def is_veth_host_name(name: str) -> bool:
    """Whether ``name`` is shaped as :func:`veth_host_name` makes them (lowbridge's mark on the
    host ends of its veths)."""
    return bool(_VETH_RE.match(name))


def mac_from_ip(ip: str) -> str:
    """``02:42:`` followed by the four IPv4 bytes (Docker <= 27 and its overlay driver).

    A MAC derived from the address keeps neighbour caches right when an address is reused, so no
    gratuitous ARP is needed; 02 is a locally administered unicast prefix.
    """
    if ":" in ip:  # an IPv6-only endpoint: the address's last four bytes (unique in a /96+)
        import ipaddress

        octets = list(ipaddress.IPv6Address(ip).packed[-4:])
    else:
        octets = [int(part) for part in ip.split(".")]
    return "02:42:" + ":".join(f"{o:02x}" for o in octets)


def random_mac() -> str:
    """A random locally administered unicast MAC (what Docker gives bridges)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def lowest_free_ifname(prefix: str, taken: set[str]) -> str:
    """``prefix`` + the lowest index not in ``taken`` (Docker's eth0, eth1, ... rule)."""
    index = 0
    while f"{prefix}{index}" in taken:
        index += 1
    return f"{prefix}{index}"


def short_id(full_id: str) -> str:
    return full_id[:12]
