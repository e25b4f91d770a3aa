"""The firewall's view of the store: the rules' plain data (:class:`.rules.Model`) from records.

Bridge networks that have a device get rules, and so do published ports and legacy links.  The
default bridge gets rules while it has endpoints (its device appears with the first one), so that
with no network in use no lowbridge rule, chain or table remains.
"""

from __future__ import annotations

from typing import NamedTuple

from lowbridge.firewall import rules as R
from lowbridge.models import OPT_ICC, Container, Endpoint, Network, View, gateway_endpoint

OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"


def model(view: View) -> R.Model:
    """The rules' model of ``view`` (a fresh pass; :class:`Modeler` keeps its last result)."""
    return Modeler().model(view)


class _Kept(NamedTuple):
    """What a Modeler keeps of its last result to extend it."""

    networks: tuple[Network, ...]
    containers: tuple[Container, ...]
    endpoints: tuple[Endpoint, ...]
    model: R.Model
    bridges: dict[str, tuple[str, str]]  # network id -> (name, device) of the bridge networks
    idle: set[str]  # predefined bridge networks without endpoints (so without rules)
    special: list[Container]  # those with links or published ports


class Modeler:
    """:func:`model`, keeping its last result: it runs on every change (bench/growth.py).

    When the networks are the same records and the endpoints and containers extend the last
    ones (a create or a connect: the store lists records in the order they were made), only the
    new ones are looked at, and the result shares the last one's records -- which lets the
    rendering compare them by identity first.  Any other change is a pass over everything.
    Records are compared by value (an identical record compares equal at once): a record
    changed by ``replace`` is a different value, so a changed option always reaches the rules.
    """

    def __init__(self) -> None:
        self._kept: _Kept | None = None

    def model(self, view: View) -> R.Model:
        nets_t, ctrs_t, eps_t = view.networks, view.containers, view.endpoints
        last = self._kept
        if (
            last is not None
            and nets_t == last.networks
            and eps_t[: len(last.endpoints)] == last.endpoints
            and ctrs_t[: len(last.containers)] == last.containers
        ):
            new_eps, new_ctrs = eps_t[len(last.endpoints) :], ctrs_t[len(last.containers) :]
            kept_eps, special = last.model.endpoints, list(last.special)
        else:
            last, new_eps, new_ctrs, kept_eps, special = None, eps_t, ctrs_t, (), []
        out = R.Model()
        if last is not None and not any(e.network_id in last.idle for e in new_eps):
            out.networks, bridges, idle = last.model.networks, last.bridges, last.idle
        else:  # (a predefined network coming into use gets its rules)
            bridges, idle = _networks(out, nets_t, {e.network_id for e in eps_t})
        # tuple.__new__ makes the same FwEndpoint as its constructor, without a Python-level
        # call per endpoint (a third of the cost at 1000 endpoints).
        new = tuple.__new__
        out.endpoints = kept_eps + tuple(
            [
                new(R.FwEndpoint, (e.ip, *bridges[e.network_id], 4))
                for e in new_eps
                if e.ip and e.network_id in bridges
            ]
        )
        if any(e.ip6 for e in new_eps):  # a dual-stack endpoint's IPv6 rule right after its own
            out.endpoints = kept_eps + tuple(_dual(new_eps, bridges))
        special += [c for c in new_ctrs if c.links or c.ports]
        self._kept = _Kept(nets_t, ctrs_t, eps_t, out, bridges, idle, special)
        if special:
            _links_and_ports(out, special, view)
        if last is not None and last.model.v6 is not None:
            # The same networks (and idle ones): their IPv6 part again; the ports afresh, as
            # the IPv4 ones (a connect may have moved a sandbox's gateway endpoint).
            out.v6 = R.Model(networks=last.model.v6.networks)
            _ports6(out.v6, view, special)
        elif any(n.pool6 is not None for n in nets_t):
            out.v6 = _model6(view, idle, special)
        return out


def _flag(options: dict[str, str], key: str) -> bool:
    return options.get(key, "true").lower() != "false"


def _networks(
    out: R.Model, nets_t: tuple[Network, ...], used: set[str]
) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Add the bridge networks' records, a predefined one only while it has endpoints (``used``:
    the ids of those that have); return their (name, device) by network id and the predefined
    ones left out."""
    bridges: dict[str, tuple[str, str]] = {}
    idle: set[str] = set()
    for n in nets_t:
        if n.driver != "bridge" or (n.pool is None and n.pool6 is None):
            continue
        if n.predefined and n.id not in used:
            idle.add(n.id)
            continue
        bridges[n.id] = (n.name, n.device or "")
        if n.pool is None:  # IPv6 only (--ipv4=false): its endpoints' IPv6 rules alone
            continue
        out.networks.append(_fw_network(n, str(n.pool.subnet)))
    return bridges, idle


def _fw_network(n: Network, subnet: str) -> R.FwNetwork:
    """What the rules need of bridge network ``n`` for one family (its ``subnet`` of it)."""
    return R.FwNetwork(
        name=n.name,
        device=n.device or "",
        subnet=subnet,
        internal=n.internal,
        icc=_flag(n.options, OPT_ICC),
        masquerade=_flag(n.options, OPT_MASQ),
    )


def _dual(eps: tuple[Endpoint, ...], bridges: dict[str, tuple[str, str]]):  # noqa: ANN202
    for e in eps:
        if e.network_id in bridges:
            if e.ip:
                yield R.FwEndpoint(e.ip, *bridges[e.network_id])
            if e.ip6:
                yield R.FwEndpoint(e.ip6, *bridges[e.network_id], 6)


def _model6(view: View, idle: set[str], special: list[Container]) -> R.Model:
    """The IPv6 part: the bridge networks with IPv6, and the ports published on the host's IPv6
    addresses (``-p 8080:80`` on an IPv6 network is both 0.0.0.0 and [::], as Docker's default
    binding: lowbridge.controller.requests.publish); the endpoints' IPv6 addresses are in the
    model's endpoints.  A pass over the networks, and over the sandboxes that publish."""
    out = R.Model()
    for n in view.networks:
        if n.driver != "bridge" or n.pool6 is None or n.id in idle:
            continue
        out.networks.append(_fw_network(n, str(n.pool6.subnet)))
    _ports6(out, view, special)
    return out


def _ports6(out: R.Model, view: View, special: list[Container]) -> None:
    """Add the ports published on IPv6 addresses of the sandboxes that publish."""
    nets = view.nets
    for ctr in special:
        gw = gateway_endpoint(view.endpoints_of(ctr.id), nets) if ctr.ports else None
        if gw is None or not gw.ip6:
            continue  # proxy off: host IPv6 to container IPv4 is not done (as Docker)
        for m in ctr.ports:
            # [::] (a spec without address, on IPv6) or an IPv6 address; not [::1], which the
            # kernel cannot DNAT off the host (lowbridge.proxy relays it)
            if ":" in m.host_ip and m.host_ip != "::1":
                out.ports.append(R.FwPort(m, gw.ip6, nets[gw.network_id].device, ctr.name))


def _bridge_ep(eps: list[Endpoint], nets: dict[str, Network]) -> Endpoint | None:
    """A sandbox's endpoint on the default bridge (where legacy links live)."""
    for ep in eps:
        if nets[ep.network_id].is_default_bridge and ep.ip:
            return ep
    return None


def _links_and_ports(out: R.Model, special: list[Container], view: View) -> None:
    """Add the legacy links' and published ports' records of the containers that have them."""
    nets = view.nets
    by_name = {c.name: c for c in view.containers}
    for ctr in special:
        for name, alias in ctr.links:
            child = by_name.get(name)
            if child is None:
                continue
            parent_ep = _bridge_ep(view.endpoints_of(ctr.id), nets)
            child_ep = _bridge_ep(view.endpoints_of(child.id), nets)
            if parent_ep is None or child_ep is None:
                continue
            for port, proto in child.exposed:
                out.links.append(
                    R.FwLink(
                        parent_ip=parent_ep.ip,
                        child_ip=child_ep.ip,
                        device=nets[child_ep.network_id].device,
                        port=port,
                        proto=proto,
                        name=f"{ctr.name} -> {alias}",
                    )
                )
    for ctr in special:
        if not ctr.ports:
            continue
        # Ports are published on the container's gateway endpoint only (moby
        # ProgramExternalConnectivity); a sandbox on internal networks only publishes nothing.
        gw = gateway_endpoint(view.endpoints_of(ctr.id), nets)
        if gw is None or not gw.ip:  # (an IPv6-only gateway endpoint: its ports are IPv6's)
            continue
        for mapping in ctr.ports:
            if ":" in mapping.host_ip:
                continue  # an IPv6 host address: the IPv6 rules' (_model6)
            out.ports.append(
                R.FwPort(
                    mapping=mapping,
                    container_ip=gw.ip,
                    device=nets[gw.network_id].device,
                    container=ctr.name,
                )
            )
