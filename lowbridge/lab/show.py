"""What ``plan`` prints: the difference, and the kernel objects and firewall rules it adds or
removes (pure: a Diff, the store's View, the controller's Preview and the firewall's renderings
in, lines out).

Objects that exist are named as the kernel knows them (the bridge's device, the veths' host ends,
the namespace's path, the rules in the active backend's syntax).  Objects still to be made carry
the subnets and addresses the preview planned; a bridge still to be made is named by its network
(``<bridge of NET>``), since its device is named after an id drawn at apply."""

from __future__ import annotations

from collections.abc import Callable

from lowbridge import drivers
from lowbridge.controller.preview import Preview
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
    d: Diff,
    view: View,
    pv: Preview,
    rules: Callable[[View], list[Rule]],
    text: Callable[[Rule], str],
) -> list[str]:
    """The plan: ``+`` added, ``-`` removed, ``~`` changed (removed, then made again), each
    with its kernel objects; then the firewall rules that go and those that come.  ``pv`` is
    the controller's preview of the difference; ``rules(view)`` renders the firewall's rules
    for a view, ``text(rule)`` writes one as the backend does."""
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
    made = {c.name: c for c in pv.after.containers}
    for name in d.add_networks:
        net = pv.after.network_named(topo.network_name(name))
        out.append(f"+ network {net.name}: {net.driver}, {_subnet(net)}")
        if net.device and net.device_owned:
            gateway = net.pool.gateway if net.pool else None
            out.append(f"    + link <bridge of {net.name}> (bridge, {gateway or 'no address'})")
    for name in d.add_sandboxes:
        box = topo.sandboxes[name]
        ctr = made[topo.sandbox_name(name)]
        out.append(f"+ sandbox {ctr.name}" if f"sandbox {name}" not in changed else
                   f"    (sandbox {ctr.name} made again)")  # fmt: skip
        if ctr.netns_owned:
            out.append(f"    + netns {ctr.netns}")
        for ep in pv.after.endpoints_of(ctr.id):
            if ep.ifname:
                net = pv.after.nets[ep.network_id]
                out.append(f"    + veth {ep.ifname} on {net.name} ({ep.ip or 'no address'})")
        for port in box.ports:
            out.append(f"    + DNAT -p {port}")
        if box.command:
            out.append(f"    + process {' '.join(box.command)}")
    return out + _rules(view, pv, rules, text)


def _subnet(net) -> str:  # noqa: ANN001
    return str(net.pool.subnet) if net.pool else "no subnet"


def _rules(
    view: View, pv: Preview, rules: Callable[[View], list[Rule]], text: Callable[[Rule], str]
) -> list[str]:
    """The rules that go and those that come (the renderings before and after, compared), each
    in the active backend's syntax; a bridge still to be made is named by its network, since
    its device is named after an id drawn at apply."""
    before, after = rules(view), rules(pv.after)
    gone, kept = set(before) - set(after), set(before)

    def written(rule: Rule) -> str:
        line = text(rule)
        for net in pv.made:
            if net.device:
                line = line.replace(net.device, f"<bridge of {net.name}>")
        return line

    went = [f"    - {line}" for line in map(written, [r for r in before if r in gone]) if line]
    came = [f"    + {line}" for line in map(written, [r for r in after if r not in kept]) if line]
    return (["firewall rules that go:", *went] if went else []) + (
        ["firewall rules that come:", *came] if came else []
    )
