"""What ``plan`` prints: the difference, and the kernel objects and firewall rules it adds or
removes (pure: a Diff, the store's View and the firewall's renderings in, lines out).

Objects that exist are named as the kernel knows them (the bridge's device, the veths' host ends,
the namespace's path, the rules in the active backend's syntax); objects still to be made are
named by what they will be, since their devices are named after ids not yet drawn."""

from __future__ import annotations

from collections.abc import Callable

from lowbridge import drivers
from lowbridge.firewall.rules import Rule
from lowbridge.lab import memo
from lowbridge.lab.diff import Diff
from lowbridge.models import View


def summary(d: Diff, done: bool) -> str:
    """One line: how many entries were (``done``) or would be added, changed and removed, or
    that none is."""
    if d.empty:
        return memo.nothing(d.topo.lab, d.unchanged)
    changed = len(d.changed)
    counts = (len(d.add_networks) + len(d.add_sandboxes) - changed, changed,
              len(d.remove_networks) + len(d.remove_sandboxes) - changed)  # fmt: skip
    words = ("added", "changed", "removed") if done else ("to add", "to change", "to remove")
    said = ", ".join(f"{n} {w}" for n, w in zip(counts, words, strict=True))
    return f"lab {d.topo.lab}: {'' if done else 'plan: '}{said} ({d.unchanged} unchanged)"


def plan_lines(
    d: Diff, view: View, rules: Callable[[View], list[Rule]], text: Callable[[Rule], str]
) -> list[str]:
    """The plan: ``+`` added, ``-`` removed, ``~`` changed (removed, then made again), each
    with its kernel objects; then the firewall rules that go.  ``rules(view)`` renders the
    firewall's rules for a view, ``text(rule)`` writes one as the backend does."""
    topo, out = d.topo, [summary(d, done=False)]
    changed = d.changed
    for net in d.remove_networks:
        short = net.name[len(topo.lab) + 1 :]
        mark = "~" if f"network {short}" in changed else "-"
        out.append(f"{mark} network {net.name}: {net.driver}, {_subnet(net)}")
        if net.device and net.device_owned:
            out.append(f"    - link {net.device}")
    for ctr in d.remove_sandboxes:
        short = ctr.name[len(topo.lab) + 1 :]
        mark = "~" if f"sandbox {short}" in changed else "-"
        why = f" ({d.why[short]})" if short in d.why else ""
        out.append(f"{mark} sandbox {ctr.name}{why}")
        if ctr.netns and ctr.netns_owned:
            out.append(f"    - netns {ctr.netns}")
        for ep in view.endpoints_of(ctr.id):
            net = view.nets.get(ep.network_id)
            end = drivers.get(net.driver).host_end(ep) if net else None
            if end:
                out.append(f"    - link {end} ({ep.ip} on {net.name})")
    for name in d.add_networks:
        spec = topo.networks[name]
        out.append(f"+ network {topo.network_name(name)}: {spec.driver}, "
                   f"{spec.subnet or 'a free subnet from the default pools'}")  # fmt: skip
        if spec.driver == "bridge":
            out.append("    + link lb-<id> (bridge, the gateway's address), its NAT and isolation"
                       " rules")  # fmt: skip
    for name in d.add_sandboxes:
        box = topo.sandboxes[name]
        full = topo.sandbox_name(name)
        out.append(f"+ sandbox {full}" if f"sandbox {name}" not in changed else
                   f"    (sandbox {full} made again)")  # fmt: skip
        out.append(f"    + netns /run/netns/{full}")
        for i, (net, attach) in enumerate(box.networks.items()):
            if net in ("host", "none"):
                continue
            where = attach.ipv4_address or "the next free address"
            out.append(f"    + veth eth{i} on {topo.network_name(net)} ({where})")
        for port in box.ports:
            out.append(f"    + DNAT -p {port}")
        if box.command:
            out.append(f"    + process {' '.join(box.command)}")
    out += _rules_gone(d, view, rules, text)
    return out


def _subnet(net) -> str:  # noqa: ANN001
    return str(net.pool.subnet) if net.pool else "no subnet"


def _rules_gone(d: Diff, view: View, rules: Callable[[View], list[Rule]],
                text: Callable[[Rule], str]) -> list[str]:  # fmt: skip
    """The rules the removals take away (as data: the rendering without them, compared), each
    in the active backend's syntax."""
    if not (d.remove_networks or d.remove_sandboxes):
        return []
    gone_nets = {n.id for n in d.remove_networks}
    gone_boxes = {c.id for c in d.remove_sandboxes}
    after = View(
        [n for n in view.networks if n.id not in gone_nets],
        [c for c in view.containers if c.id not in gone_boxes],
        [e for e in view.endpoints
         if e.network_id not in gone_nets and e.container_id not in gone_boxes],
    )  # fmt: skip
    keep = set(rules(after))
    lines = [f"    - {text(rule)}" for rule in rules(view) if rule not in keep]
    return ["firewall rules that go:", *lines] if lines else []
