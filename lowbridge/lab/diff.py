"""What a topology asks of lowbridge beside what the store holds: the difference, and the requests
that make it (pure: it reads a View and writes nothing).

A lab owns the networks and sandboxes whose labels name it (``lowbridge.lab``); each also carries
the digest of the spec it was made from (``lowbridge.lab.spec``).  An entry is *changed* when its
digest differs -- or, for a sandbox, when one of its networks is changed, or it is not whole (a
network it should be on, its static address or its started command missing: what a killed
``apply`` can leave) -- and a change is a removal and an addition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lowbridge.controller.preview import Join
from lowbridge.controller.requests import ContainerRequest
from lowbridge.drivers.base import NetworkRequest
from lowbridge.lab.marks import LAB, SPEC, owned
from lowbridge.lab.topology import NetworkSpec, SandboxSpec, Topology
from lowbridge.models import Container, Network, View


@dataclass
class Diff:
    """The difference, by the lab's short names; ``change`` ones are in both lists below."""

    topo: Topology
    add_networks: list[str] = field(default_factory=list)
    remove_networks: list[Network] = field(default_factory=list)
    add_sandboxes: list[str] = field(default_factory=list)
    remove_sandboxes: list[Container] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # "network NAME" / "sandbox NAME"
    why: dict[str, str] = field(default_factory=dict)  # sandbox NAME -> what made it change
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.add_networks or self.remove_networks or self.add_sandboxes
                    or self.remove_sandboxes)  # fmt: skip

    # -- the requests that make the additions
    def network_requests(self) -> list[NetworkRequest]:
        topo = self.topo
        return [_network_request(topo, name, topo.networks[name]) for name in self.add_networks]

    def sandbox_requests(self) -> list[ContainerRequest]:
        return [_sandbox_request(self.topo, name) for name in self.add_sandboxes]

    def connects(self) -> list[Join]:
        out = []
        for name in self.add_sandboxes:
            box = self.topo.sandboxes[name]
            for net, attach in list(box.networks.items())[1:]:
                full = self.topo.network_name(net), self.topo.sandbox_name(name)
                out.append(Join(*full, attach.ipv4_address, _aliases(self.topo, name, net)))
        return out

    def commands(self) -> list[str]:
        """The sandboxes whose command starts once everything is connected."""
        return [self.topo.sandbox_name(n) for n in self.add_sandboxes
                if self.topo.sandboxes[n].command]  # fmt: skip


def diff(topo: Topology, view: View) -> Diff:
    """What :func:`apply <lowbridge.lab.run.apply>` must do to bring the store to ``topo``."""
    d = Diff(topo)
    nets, boxes = owned(view, topo.lab)
    have_nets = {n.name: n for n in nets}
    for name, spec in topo.networks.items():
        net = have_nets.pop(topo.network_name(name), None)
        if net is not None and net.labels.get(SPEC) == spec.digest:
            d.unchanged += 1
            continue
        if net is not None:
            d.remove_networks.append(net)
            d.changed.add(f"network {name}")
        d.add_networks.append(name)
    d.remove_networks += have_nets.values()
    remade = {topo.network_name(n) for n in d.add_networks}
    have_boxes = {c.name: c for c in boxes}
    for name, spec in topo.sandboxes.items():
        ctr = have_boxes.pop(topo.sandbox_name(name), None)
        if ctr is not None:
            why = _stale(topo, spec, ctr, view, remade)
            if why is None:
                d.unchanged += 1
                continue
            d.remove_sandboxes.append(ctr)
            d.changed.add(f"sandbox {name}")
            d.why[name] = why
        d.add_sandboxes.append(name)
    d.remove_sandboxes += have_boxes.values()
    return d


def _stale(
    topo: Topology, spec: SandboxSpec, ctr: Container, view: View, remade: set[str]
) -> str | None:
    """Why an existing sandbox must be made again (None: it is as the file asks)."""
    if ctr.labels.get(SPEC) != spec.digest:
        return "its spec changed"
    on = {view.nets[e.network_id].name: e for e in view.endpoints_of(ctr.id)
          if e.network_id in view.nets}  # fmt: skip
    for net, attach in spec.networks.items():
        full = topo.network_name(net)
        if full in remade:
            return f"network {net} is made again"
        if net in ("host", "none") and full not in on:
            continue  # no endpoint: the mode is the record's
        ep = on.get(full)
        if ep is None:
            return f"it is not on network {net}"
        if attach.ipv4_address and ep.ip != attach.ipv4_address:
            return f"its address on {net} is not {attach.ipv4_address}"
    if spec.command and ctr.pid is None:
        return "its command was never started"
    return None


# ---------------------------------------------------------------------------- requests
def _network_request(topo: Topology, name: str, spec: NetworkSpec) -> NetworkRequest:
    return NetworkRequest(
        name=topo.network_name(name),
        driver=spec.driver,
        subnet=spec.subnet,
        gateway=spec.gateway,
        ip_range=spec.ip_range,
        aux_addresses=dict(spec.aux_addresses),
        internal=spec.internal,
        labels={**spec.labels, LAB: topo.lab, SPEC: spec.digest},
        options=dict(spec.options),
    )


def _aliases(topo: Topology, name: str, net: str) -> tuple[str, ...]:
    """A sandbox's names on ``net``: its own aliases, and its short name on the lab's networks
    (as a Compose service's name), where the embedded resolver answers for it."""
    attach = topo.sandboxes[name].networks[net]
    extra = (name,) if net in topo.networks else ()
    return tuple(dict.fromkeys((*attach.aliases, *extra)))


def _sandbox_request(topo: Topology, name: str) -> ContainerRequest:
    spec = topo.sandboxes[name]
    first, attach = next(iter(spec.networks.items()))
    links = []
    for link in spec.links:
        target, _, alias = link.partition(":")
        links.append(f"{topo.sandbox_name(target)}:{alias or target}")
    return ContainerRequest(
        name=topo.sandbox_name(name),
        network=topo.network_name(first),
        ip=attach.ipv4_address,
        command=list(spec.command) or None,
        publish=list(spec.ports),
        hostname=spec.hostname,
        add_hosts=list(spec.extra_hosts),
        dns=list(spec.dns),
        dns_search=list(spec.dns_search),
        dns_options=list(spec.dns_options),
        aliases=list(_aliases(topo, name, first)),
        links=links,
        expose=list(spec.expose),
        env=list(spec.environment),
        labels={**spec.labels, LAB: topo.lab, SPEC: spec.digest},
    )
