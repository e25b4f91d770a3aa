"""Which names a sandbox resolves, as Docker's embedded DNS answers them (pure, no I/O).

From shared/reference/docker-mechanics.md 3.3 (moby ``sandbox.ResolveName``/``ResolveIP``,
``network.addSvcRecords``, ``buildEndpointDNSNames``):

* only user-defined networks register names (the default bridge, host and none do not);
* per endpoint, in order: the container name, its aliases on that network, the short id, the
  hostname -- deduplicated, lower-cased; the first one names the address for PTR as
  ``<name>.<network>``;
* a sandbox sees only the networks it is attached to; ``a.b.c`` is tried as ``a.b.c`` on each of
  them, then ``a.b`` on network ``c``, then ``a`` on network ``b.c``; the first network that
  knows the name answers, with every address registered under it (several sandboxes sharing an
  alias give round robin);
* legacy ``--link`` aliases of the sandbox itself are checked first.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from lowbridge.models import Container, Endpoint, Network

# Drivers whose networks get the embedded resolver when user-defined (Docker: every driver but
# host/none; the default bridge is predefined).
DNS_DRIVERS = frozenset({"bridge", "macvlan", "overlay"})
MAX_UPSTREAMS = 3  # Docker uses at most three nameservers


def dns_enabled(net: Network) -> bool:
    return not net.predefined and net.driver in DNS_DRIVERS


def endpoint_names(ctr: Container, ep: Endpoint) -> list[str]:
    """The names an endpoint registers on its network, in Docker's order, lower-cased."""
    out: list[str] = []
    for name in (ctr.name, *ep.aliases, ctr.id[:12], ctr.hostname):
        key = name.lower().rstrip(".")
        if key and key not in out:
            out.append(key)
    return out


@dataclass
class Zone:
    """One network's records."""

    name: str  # the network name, lower-cased
    internal: bool = False
    by_name: dict[str, list[str]] = field(default_factory=dict)
    ptr: dict[str, str] = field(default_factory=dict)  # address -> "<name>.<network>"


@dataclass
class View:
    """What one sandbox's resolver socket answers from."""

    zones: list[Zone]
    local: dict[str, list[str]] = field(default_factory=dict)  # --link aliases
    upstreams: list[str] = field(default_factory=list)
    upstreams_in_sandbox: bool = False  # --dns servers are queried from the sandbox's netns
    forward: bool = True  # False: only internal networks (Docker's proxyDNS=false)
    ndots_set: bool = False  # the user chose ndots: single-label misses are not forwarded


def build(
    networks: Iterable[Network],
    containers: Iterable[Container],
    endpoints: Iterable[Endpoint],
    host_upstreams: list[str],
) -> dict[str, View]:
    """Container id -> its view, for every container that has resolver ports."""
    nets = {n.id: n for n in networks}
    ctrs = {c.id: c for c in containers}
    eps = list(endpoints)
    zones: dict[str, Zone] = {}
    for net in nets.values():
        if dns_enabled(net):
            zones[net.id] = Zone(net.name.lower(), net.internal)
    for ep in sorted(eps, key=lambda e: e.id):
        zone, ctr = zones.get(ep.network_id), ctrs.get(ep.container_id)
        if zone is None or not ep.ip:
            continue
        # A sandbox of another host (overlay): the names its endpoint was registered with.
        found = endpoint_names(ctr, ep) if ctr is not None else list(ep.dns_names)
        if not found:
            continue
        for name in found:
            ips = zone.by_name.setdefault(name, [])
            if ep.ip not in ips:
                ips.append(ep.ip)
        zone.ptr.setdefault(ep.ip, f"{found[0]}.{zone.name}")
    by_ctr: dict[str, list[Endpoint]] = {}
    for ep in eps:
        by_ctr.setdefault(ep.container_id, []).append(ep)
    views: dict[str, View] = {}
    for ctr in ctrs.values():
        if not ctr.dns_ports:
            continue
        mine = sorted(
            (e for e in by_ctr.get(ctr.id, []) if e.network_id in nets),
            key=lambda e: (nets[e.network_id].internal, nets[e.network_id].name),
        )
        view_zones = [zones[e.network_id] for e in mine if e.network_id in zones]
        local: dict[str, list[str]] = {}
        for target, alias in ctr.links:
            child = next((c for c in ctrs.values() if c.name == target), None)
            if child is None:
                continue
            ips = [e.ip for e in by_ctr.get(child.id, []) if e.ip and e.network_id in zones]
            if ips:
                local[alias.lower()] = ips
        external = any(not nets[e.network_id].internal for e in mine)
        views[ctr.id] = View(
            zones=view_zones,
            local=local,
            upstreams=list(ctr.dns or host_upstreams)[:MAX_UPSTREAMS],
            upstreams_in_sandbox=bool(ctr.dns),
            forward=external or bool(ctr.dns),
            ndots_set=any(o.startswith("ndots:") for o in ctr.dns_options),
        )
    return views


# Outcomes of a lookup.
NOT_FOUND = None


def resolve(view: View, qname: str) -> list[str] | None:
    """Addresses for ``qname`` (IPv4 only: lowbridge networks have no IPv6), or None when no
    network of the view knows the name.  An existing name with no address of the requested
    family is Docker's "family miss": the caller answers NOERROR with no records."""
    name = qname.lower().rstrip(".")
    if not name:
        return None
    if name in view.local:
        return list(view.local[name])
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        host, network = ".".join(parts[:cut]), ".".join(parts[cut:])
        for zone in view.zones:
            if network and zone.name != network:
                continue
            ips = zone.by_name.get(host)
            if ips:
                return list(ips)
    return None


def reverse_name_to_ip(qname: str) -> str | None:
    """``4.3.2.1.in-addr.arpa`` -> ``1.2.3.4`` (None for anything else)."""
    name = qname.lower().rstrip(".")
    suffix = ".in-addr.arpa"
    if not name.endswith(suffix):
        return None
    octets = name[: -len(suffix)].split(".")
    if len(octets) != 4 or not all(o.isdigit() and len(o) <= 3 and int(o) < 256 for o in octets):
        return None
    return ".".join(str(int(o)) for o in reversed(octets))


def reverse(view: View, qname: str) -> str | None:
    """The PTR target for a reverse name of one of the view's addresses, else None."""
    ip = reverse_name_to_ip(qname)
    if ip is None:
        return None
    for zone in view.zones:
        if ip in zone.ptr:
            return zone.ptr[ip]
    return None


# -- what to answer (query types by number, RFC 1035 / 3596)
A, PTR, MX, AAAA = 1, 12, 15, 28
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5


class Answer(NamedTuple):
    """A local answer: an rcode and records as (type, value) -- an IPv4 address for A, an
    absolute name (trailing dot) for PTR.  (A NamedTuple: one is made per query.)"""

    rcode: int = NOERROR
    records: tuple[tuple[int, str], ...] = ()


FORWARD = None  # decide(): not ours, ask the upstream servers


def decide(view: View, qname: str, qtype: int, shuffle=None) -> Answer | None:  # noqa: ANN001
    """Docker's serveDNS: A/AAAA/MX answered locally for known names, PTR for known addresses,
    everything else forwarded (None).  ``shuffle`` reorders addresses (round robin; default
    :func:`random.shuffle`)."""
    if qtype in (A, AAAA, MX):
        ips = resolve(view, qname)
        if ips is None:
            single_label = "." not in qname.rstrip(".")
            if view.ndots_set and single_label and qtype != MX:
                return Answer()  # let the client walk its search list (Docker)
            return FORWARD
        if qtype != A:
            return Answer()  # the name exists without such records: NODATA, not forwarded
        (shuffle or random.shuffle)(ips)
        return Answer(NOERROR, tuple([(A, ip) for ip in ips]))
    if qtype == PTR:
        target = reverse(view, qname)
        if target is not None:
            return Answer(NOERROR, ((PTR, target + "."),))
    return FORWARD
