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

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from lowbridge.models import Container, Endpoint, Network

MAX_UPSTREAMS = 3  # Docker uses at most three nameservers


def dns_enabled(net: Network) -> bool:
    """User-defined networks of drivers that have the resolver get it (Docker: every driver
    but host/none; the default bridge is predefined)."""
    from lowbridge import drivers

    return not net.predefined and drivers.get(net.driver).dns


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
    return Builder().build(networks, containers, endpoints, host_upstreams)


class Builder:
    """:func:`build` that keeps what it built, for a reader that rebuilds on every change (the
    resolver re-reads the store after each command: at 1000 sandboxes a full build took ~10 ms
    of this 2-CPU VM's time per change, and its ~4000 new objects a build set off a full
    garbage collection every few changes).

    Records are recognised by identity -- the store's memo hands back the same object for an
    unchanged row -- so a build costs a pass of identity checks over the records, and work is
    redone only for what changed: a new, changed or gone endpoint's names enter or leave its
    network's Zone one by one (views share the Zone), and a view is rebuilt for a container
    whose record or endpoints changed, that is on a network whose record changed (its Zone is
    rebuilt), or that has links (they look at other containers).  Each build returns a new dict
    equal to a fresh build's; views returned earlier see later changes of their zones."""

    def __init__(self) -> None:
        self._nets: dict[str, Network] = {}
        self.containers: dict[str, Container] = {}  # the last build's, by id
        # endpoint id -> (endpoint, its container's record, the names it registers)
        self._eps: dict[str, tuple[Endpoint, Container | None, list[str]]] = {}
        self._attached: dict[str, dict[str, Endpoint]] = {}  # container id -> its endpoints
        self._zones: dict[str, _Records] = {}
        self._views: dict[str, View] = {}
        self._host: list[str] | None = None

    def build(
        self,
        networks: Iterable[Network],
        containers: Iterable[Container],
        endpoints: Iterable[Endpoint],
        host_upstreams: list[str],
    ) -> dict[str, View]:
        nets = {n.id: n for n in networks}
        ctrs = {c.id: c for c in containers}
        old_nets, old_ctrs = self._nets, self.containers
        replaced = {i for i in old_nets.keys() | nets.keys() if old_nets.get(i) is not nets.get(i)}
        redo = {i for i in old_ctrs.keys() | ctrs.keys() if old_ctrs.get(i) is not ctrs.get(i)}
        for nid in replaced:  # a new Zone (or none), filled below from all its endpoints
            self._zones.pop(nid, None)
        seen: set[str] = set()
        for ep in endpoints:
            seen.add(ep.id)
            ctr = ctrs.get(ep.container_id)
            kept = self._eps.get(ep.id)
            if kept is not None and kept[0] is ep and kept[1] is ctr:
                continue
            if kept is not None:
                self._forget(kept, redo)
            # A sandbox of another host (overlay): the names its endpoint was registered with.
            found = endpoint_names(ctr, ep) if ctr is not None else list(ep.dns_names)
            entry = self._eps[ep.id] = (ep, ctr, found if ep.ip or ep.ip6 else [])
            self._attached.setdefault(ep.container_id, {})[ep.id] = ep
            records = self._zones.get(ep.network_id)
            if records is not None:
                records.add(entry)
            redo.add(ep.container_id)
        for gone in self._eps.keys() - seen:
            self._forget(self._eps.pop(gone), redo)
        if replaced:
            for nid in replaced:
                net = nets.get(nid)
                if net is not None and dns_enabled(net):
                    self._zones[nid] = _Records(Zone(net.name.lower(), net.internal))
            for entry in sorted(self._eps.values(), key=lambda e: e[0].id):
                ep = entry[0]
                if ep.network_id in replaced:  # its sandboxes get the new zone, or lose it
                    redo.add(ep.container_id)
                    records = self._zones.get(ep.network_id)
                    if records is not None:
                        records.add(entry)

        if host_upstreams != self._host:
            self._host = list(host_upstreams)
            redo.update(ctrs)
        redo.update(c.id for c in ctrs.values() if c.links)
        zones = {nid: records.zone for nid, records in self._zones.items()}
        for cid in redo:
            ctr = ctrs.get(cid)
            if ctr is None or not ctr.dns_ports:
                self._views.pop(cid, None)
                continue
            attached = self._attached.get(cid, {}).values()
            self._views[cid] = _view(ctr, attached, nets, zones, ctrs, self._attached, self._host)
        self._nets, self.containers = nets, ctrs
        return dict(self._views)

    def _forget(self, entry: tuple[Endpoint, Container | None, list[str]], redo: set[str]) -> None:
        """Take a gone or changed endpoint out of its network's Zone and its sandbox's list."""
        ep = entry[0]
        attached = self._attached.get(ep.container_id, {})
        attached.pop(ep.id, None)
        if not attached:
            self._attached.pop(ep.container_id, None)
        records = self._zones.get(ep.network_id)
        if records is not None:
            records.remove(entry)
        redo.add(ep.container_id)


class _Records:
    """A network's Zone, changed one endpoint at a time.  Each name lists its addresses sorted
    (a name with several is shuffled per answer anyway); an address's PTR name is the first
    name of the endpoint with the lowest id that has it -- whatever order they came in."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.count: dict[tuple[str, str], int] = {}  # (name, address) -> endpoints giving it
        self.ptr_of: dict[str, dict[str, str]] = {}  # address -> endpoint id -> its first name

    def add(self, entry: tuple[Endpoint, Container | None, list[str]]) -> None:
        ep, _, found = entry
        if not found:
            return
        for ip in _addresses(ep):
            for name in found:
                key = (name, ip)
                self.count[key] = self.count.get(key, 0) + 1
                if self.count[key] == 1:
                    bisect.insort(self.zone.by_name.setdefault(name, []), ip)
            owners = self.ptr_of.setdefault(ip, {})
            owners[ep.id] = found[0]
            self._ptr(ip, owners)

    def remove(self, entry: tuple[Endpoint, Container | None, list[str]]) -> None:
        ep, _, found = entry
        if not found:
            return
        for ip in _addresses(ep):
            for name in found:
                key = (name, ip)
                self.count[key] -= 1
                if not self.count[key]:
                    del self.count[key]
                    ips = self.zone.by_name[name]
                    ips.remove(ip)
                    if not ips:
                        del self.zone.by_name[name]
            owners = self.ptr_of[ip]
            del owners[ep.id]
            if owners:
                self._ptr(ip, owners)
            else:
                del self.ptr_of[ip], self.zone.ptr[ip]

    def _ptr(self, ip: str, owners: dict[str, str]) -> None:
        self.zone.ptr[ip] = f"{owners[min(owners)]}.{self.zone.name}"


def _addresses(ep: Endpoint) -> tuple[str, ...]:
    """The addresses an endpoint registers its names with: IPv4, and IPv6 on a network with
    ``--ipv6`` (A and AAAA records, a PTR for each)."""
    return tuple(ip for ip in (ep.ip, ep.ip6) if ip)


def _view(
    ctr: Container,
    attached: Iterable[Endpoint],
    nets: dict[str, Network],
    zones: dict[str, Zone],
    ctrs: dict[str, Container],
    by_ctr: dict[str, dict[str, Endpoint]],
    host_upstreams: list[str],
) -> View:
    mine = sorted(
        (e for e in attached if e.network_id in nets),
        key=lambda e: (nets[e.network_id].internal, nets[e.network_id].name),
    )
    local: dict[str, list[str]] = {}
    for target, alias in ctr.links:
        child = next((c for c in ctrs.values() if c.name == target), None)
        if child is None:
            continue
        theirs = sorted(by_ctr.get(child.id, {}).values(), key=lambda e: e.id)
        ips = [e.ip for e in theirs if e.ip and e.network_id in zones]
        if ips:
            local[alias.lower()] = ips
    external = any(not nets[e.network_id].internal for e in mine)
    return View(
        zones=[zones[e.network_id] for e in mine if e.network_id in zones],
        local=local,
        upstreams=list(ctr.dns or host_upstreams)[:MAX_UPSTREAMS],
        upstreams_in_sandbox=bool(ctr.dns),
        forward=external or bool(ctr.dns),
        ndots_set=any(o.startswith("ndots:") for o in ctr.dns_options),
    )


# Outcomes of a lookup.
NOT_FOUND = None


def resolve(view: View, qname: str) -> list[str] | None:
    """Addresses for ``qname`` (of both families: IPv6 ones contain ``:``), or None when no
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
    """``4.3.2.1.in-addr.arpa`` -> ``1.2.3.4``, 32 nibbles ``.ip6.arpa`` -> the IPv6 address in
    its compressed form (None for anything else)."""
    name = qname.lower().rstrip(".")
    if name.endswith(".ip6.arpa"):
        nibbles = name[: -len(".ip6.arpa")].split(".")
        if len(nibbles) != 32 or not all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
            return None
        import ipaddress  # here: only an IPv6 reverse lookup needs it

        return str(ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)))
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


def _shuffle(items: list) -> None:
    """random.shuffle, imported on first use (a CLI command, which never answers a query, does
    not pay for importing random) and called directly from then on."""
    global _shuffle
    from random import shuffle

    _shuffle = shuffle
    shuffle(items)


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
        if qtype == MX:
            return Answer()  # the name exists without such records: NODATA, not forwarded
        # One family per query; a name without an address of it is Docker's family miss.
        ips = [ip for ip in ips if (":" in ip) == (qtype == AAAA)]
        if len(ips) > 1:
            (shuffle or _shuffle)(ips)
        return Answer(NOERROR, tuple([(qtype, ip) for ip in ips]))
    if qtype == PTR:
        target = reverse(view, qname)
        if target is not None:
            return Answer(NOERROR, ((PTR, target + "."),))
    return FORWARD
