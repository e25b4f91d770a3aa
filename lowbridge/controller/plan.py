"""What a change plans against: the committed view, plus what the change has already planned.

A batch plans its sandboxes one after another; the second must not get the first's name, address
or host port.  :class:`Draft` answers those questions for the committed records, the records
planned so far, and what unfinished changes left in the journal still hold (a change whose undo
failed keeps its names and addresses until the next command finishes it).
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

from lowbridge import ipam
from lowbridge.errors import Conflict
from lowbridge.models import EXITED, Container, Endpoint, JournalEntry, Network, View
from lowbridge.ports import PortMapping


class Draft:
    """Planning state of one change (see the module docstring)."""

    def __init__(
        self, view: View, unsettled: Iterable[JournalEntry] = (), freed: Iterable[str] = ()
    ):
        """``freed``: namespace paths of sandboxes taken down before this plan is applied
        (a preview of a lab's edit: lowbridge.controller.preview)."""
        self.view = view
        self.freed = frozenset(freed)
        self.containers: dict[str, Container] = {}  # planned, by id
        self.endpoints: dict[str, list[Endpoint]] = {}  # planned, by container id
        self._names = {c.name for c in view.containers}
        self._netns: set[str] = set()
        # (network id, IP version) -> addresses: committed, planned, held by the journal
        self._addresses: dict[tuple[str, int], set[str]] = {}
        self._held: dict[tuple[str, int], set[str]] = {}  # what unfinished changes hold
        # Host ports held: an exited sandbox holds none (it takes its own again at start).
        self.ports: list[PortMapping] = [
            m for c in view.containers if c.state != EXITED for m in c.ports
        ]
        for entry in unsettled:
            claims = entry.doc.get("claims", {})
            self._names.update(claims.get("containers", ()))
            for net_id, ip in claims.get("addresses", ()):
                self._held.setdefault((net_id, 6 if ":" in ip else 4), set()).add(ip)

    # -- names
    def name_taken(self, name: str) -> bool:
        return name in self._names

    def take_name(self, name: str) -> None:
        if name in self._names:
            raise Conflict(f'the container name "{name}" is already in use')
        self._names.add(name)

    def take_netns(self, path: str) -> bool:
        """False when an earlier sandbox of this change has that namespace path already."""
        if path in self._netns:
            return False
        self._netns.add(path)
        return True

    # -- addresses
    def addresses(self, net: Network, version: int = 4) -> set[str]:
        """The addresses endpoints hold on ``net`` (of IP ``version``): committed, planned,
        held by the journal."""
        key = (net.id, version)
        if key not in self._addresses:
            eps = self.view.endpoints_on(net.id)
            found = {e.ip for e in eps if e.ip} if version == 4 else {e.ip6 for e in eps if e.ip6}
            self._addresses[key] = found | self._held.get(key, set())
        return self._addresses[key]

    def allocate(self, net: Network, preferred: str | None) -> IPv4Address:
        """An address on ``net`` for a new endpoint (``preferred`` if given and free)."""
        assert net.pool is not None
        return ipam.allocate(net.pool, self.addresses(net), preferred)

    def allocate6(self, net: Network, preferred: str | None) -> IPv6Address:
        """An IPv6 address on ``net`` (which has ``--ipv6``) for a new endpoint."""
        assert net.pool6 is not None
        return ipam.allocate(net.pool6, self.addresses(net, 6), preferred)

    # -- records
    def add(self, ctr: Container, eps: Iterable[Endpoint] = ()) -> None:
        """Record a planned sandbox (or new endpoints of a committed one)."""
        self.containers[ctr.id] = ctr
        for ep in eps:
            self.endpoints.setdefault(ctr.id, []).append(ep)
            if ep.ip:
                self.addresses(self.view.nets[ep.network_id]).add(ep.ip)
            if ep.ip6:
                self.addresses(self.view.nets[ep.network_id], 6).add(ep.ip6)
        self.ports += [m for m in ctr.ports if m not in self.ports]

    def endpoints_of(self, container_id: str) -> list[Endpoint]:
        """A sandbox's endpoints: committed, then planned."""
        return self.view.endpoints_of(container_id) + self.endpoints.get(container_id, [])

    def container_named(self, name: str) -> Container | None:
        for ctr in self.containers.values():
            if ctr.name == name:
                return ctr
        return next((c for c in self.view.containers if c.name == name), None)

    def container(self, ref: str) -> Container:
        """A committed sandbox by reference, or one planned earlier by name."""
        planned = next((c for c in self.containers.values() if ref in (c.name, c.id)), None)
        return planned or self.view.container(ref)

    def records(self) -> tuple[list[Container], list[Endpoint]]:
        """Everything planned, to commit."""
        return list(self.containers.values()), [e for eps in self.endpoints.values() for e in eps]

    def claims(self) -> dict:
        """The journal's "claims" of this plan: names and addresses it holds until it ends."""
        ctrs, eps = self.records()
        return {
            "containers": [c.name for c in ctrs],
            "addresses": address_claims(eps),
        }


def address_claims(eps: Iterable[Endpoint]) -> list[list[str]]:
    """[network id, address] of every address ``eps`` hold (a journal's claims)."""
    return [[e.network_id, ip] for e in eps for ip in (e.ip, e.ip6) if ip]
