"""``lowbridge graph``: the topology as it is, as a Graphviz graph (pure: a View in, DOT out).

Networks are boxes (driver, subnet, gateway, the bridge device), sandboxes ellipses, each
endpoint an edge labelled with the interface inside, its address and the veth's host end; the
host is a node of its own when ports are published, with an edge per port.  Written with the
``graphviz`` package (its quoting is DOT's); pictures (svg, png) need Graphviz's ``dot``.
"""

from __future__ import annotations

import graphviz

from lowbridge import drivers
from lowbridge.models import Container, Network, View


def build(view: View, networks: list[Network], sandboxes: list[Container]) -> graphviz.Graph:
    """The graph of ``sandboxes`` and ``networks`` (records of ``view``)."""
    g = graphviz.Graph("lowbridge", graph_attr={"rankdir": "LR", "fontname": "Helvetica"},
                       node_attr={"fontname": "Helvetica", "fontsize": "10"},
                       edge_attr={"fontname": "Helvetica", "fontsize": "9"})  # fmt: skip
    shown = {n.id for n in networks}
    for net in networks:
        lines = [net.name, net.driver + (" internal" if net.internal else "")]
        if net.pool:
            lines.append(str(net.pool.subnet))
            if net.pool.gateway:
                lines.append(f"gateway {net.pool.gateway}")
        if net.device:
            lines.append(f"device {net.device}")
        g.node(f"net_{net.id[:12]}", "\n".join(lines), shape="box", style="rounded,filled",
               fillcolor="#dbe9f6")  # fmt: skip
    ports = []
    for ctr in sandboxes:
        g.node(f"ctr_{ctr.id[:12]}", ctr.name, shape="ellipse", style="filled", fillcolor="#fdf1d6")
        for ep in view.endpoints_of(ctr.id):
            if ep.network_id not in shown:
                continue
            net = view.nets[ep.network_id]
            end = drivers.get(net.driver).host_end(ep)
            label = " ".join(x for x in (ep.ifname, ep.ip, f"({end})" if end else "") if x)
            g.edge(f"ctr_{ctr.id[:12]}", f"net_{net.id[:12]}", label=label)
        ports += [(ctr, m) for m in ctr.ports]
    if ports:
        g.node("host", "host", shape="house", style="filled", fillcolor="#e3f1dc")
        for ctr, m in ports:
            g.edge("host", f"ctr_{ctr.id[:12]}", label=f"{m.host_ip}:{m.host_port} -> "
                   f"{m.container_port}/{m.proto}", style="dashed")  # fmt: skip
    return g
