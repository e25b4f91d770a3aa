"""The labs' verbs (apply, plan, destroy), and graph and explain: a controller call or two, and
what they print."""

from __future__ import annotations

import argparse
import sys

from lowbridge.cli.commands import _controller
from lowbridge.errors import InvalidInput


def _unless_unchanged(args: argparse.Namespace):  # noqa: ANN202 - a Controller or None
    """None, having said "nothing to change", when the file's last complete apply still stands
    (lowbridge.lab.memo: asked first without the controller, then with it, settled); else the
    controller."""
    from lowbridge import config
    from lowbridge.lab import memo

    local = not (args.store or config.store_url())  # cluster records are not in the memo's store
    same = memo.quick(config.Paths.resolve(args.root), args.file) if local else None
    ctl = None
    if same is None:
        ctl = _controller(args)
        ctl.view()  # settles whatever needs it first (a journal entry, the resolver)
        if ctl.cluster is None:
            same = memo.unchanged(ctl.store, ctl.paths, args.file)
    if same is not None:
        print(memo.nothing(*same))
        return None
    return ctl


def _here(topo):  # noqa: ANN001, ANN202 - a Topology in, the part this host makes out
    """The part of ``topo`` an apply on this host makes, having named the sandboxes placed on
    other hosts."""
    from lowbridge import config

    host = config.host_name()
    away = topo.elsewhere(host)
    if away:
        print(f"lab {topo.lab}: left to other hosts: " + ", ".join(
            f"{name} ({topo.sandboxes[name].host})" for name in away))  # fmt: skip
    return topo.here(host)


def cmd_apply(args: argparse.Namespace) -> int:
    ctl = _unless_unchanged(args)
    if ctl is None:
        return 0
    from lowbridge.lab import run, show, topology
    from lowbridge.lab.progress import Progress

    topo = _here(topology.load(args.file))
    with Progress() as progress:
        d = run.apply(ctl, topo, progress, args.file)
    print(show.summary(d, done=True))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    ctl = _unless_unchanged(args)
    if ctl is None:
        return 0
    view = ctl.view()
    from lowbridge.lab import diff, show, topology

    topo = _here(topology.load(args.file))

    fw = ctl.firewall

    def rules(v):  # noqa: ANN001, ANN202 (a View in, its rules out)
        return fw.renderer.render(fw.model(v))

    d = diff.diff(topo, view)
    pv = ctl.preview(d.remove_networks, d.remove_sandboxes, d.network_requests(),
                     d.sandbox_requests(), d.connects())  # fmt: skip
    print("\n".join(show.plan_lines(d, view, pv, rules, fw.rule_text)))
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    from lowbridge.lab import run, yamlfile
    from lowbridge.lab.progress import Progress

    lab = yamlfile.lab_name(args.file)
    with Progress() as progress:
        nets, boxes, kept = run.destroy(_controller(args), lab, progress)
    print(f"lab {lab}: destroyed {boxes} sandboxes and {nets} networks")
    for name in kept:
        print(f"lab {lab}: kept network {name}: sandboxes of other hosts or labs are on it")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    port, proto = 0, "tcp"
    if args.port:
        text, _, proto = args.port.partition("/")
        proto = proto or "tcp"
        if not text.isdigit() or not 0 < int(text) < 65536 or proto not in ("tcp", "udp"):
            raise InvalidInput(f"invalid --port {args.port!r}: PORT[/tcp|udp]")
        port = int(text)
    result = _controller(args).explain(args.a, args.b, port, proto)
    what = f"{args.b}:{port}/{proto}" if port else f"{args.b} (ping)"
    print("\n".join(result.lines(args.a, what)))
    return 0 if result.reach else 1


def cmd_graph(args: argparse.Namespace) -> int:
    from lowbridge import graph

    view = _controller(args).view()
    nets, boxes = list(view.networks), list(view.containers)
    if args.file:
        from lowbridge.lab import marks, yamlfile

        nets, boxes = marks.owned(view, yamlfile.lab_name(args.file))
    else:  # the predefined networks only when something is on them
        used = {e.network_id for e in view.endpoints}
        nets = [n for n in nets if not n.predefined or n.id in used]
    g = graph.build(view, nets, boxes)
    if args.format == "dot":
        data = g.source.encode()
    else:
        import graphviz

        try:
            data = g.pipe(format=args.format)
        except graphviz.ExecutableNotFound:
            raise InvalidInput(
                f"graph --format {args.format} needs Graphviz's dot (apt-get install graphviz); "
                "--format dot needs nothing"
            ) from None
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
    return 0
