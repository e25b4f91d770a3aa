"""Each verb of the command line: one controller call, and what it prints (lowbridge.output)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from lowbridge.errors import InvalidInput, LowbridgeError

PROG = "lowbridge"


def _pairs(values: list[str] | None, what: str, need_value: bool = True) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not key or (need_value and not sep):
            raise InvalidInput(f"invalid {what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _controller(args: argparse.Namespace):  # noqa: ANN202
    from lowbridge.config import Paths
    from lowbridge.controller import Controller

    if args.store:
        os.environ["LOWBRIDGE_STORE"] = args.store  # also for the processes lowbridge starts
    return Controller(Paths.resolve(args.root), firewall_backend=args.firewall_backend)


def _print_json(doc: object) -> None:
    print(json.dumps(doc, indent=4))


# ---------------------------------------------------------------------------- network
def cmd_network_create(args: argparse.Namespace) -> int:
    from lowbridge.drivers.base import NetworkRequest

    if len(args.subnet or []) > 1 or len(args.gateway or []) > 1 or len(args.ip_range or []) > 1:
        raise InvalidInput("only one --subnet, --gateway and --ip-range are supported so far")
    req = NetworkRequest(
        name=args.name,
        driver=args.driver,
        subnet=(args.subnet or [None])[0],
        gateway=(args.gateway or [None])[0],
        ip_range=(args.ip_range or [None])[0],
        aux_addresses=_pairs(args.aux_address, "--aux-address"),
        internal=args.internal,
        labels=_pairs(args.label, "--label", need_value=False),
        options=_pairs(args.opt, "--opt"),
    )
    net = _controller(args).network_create(req)
    print(net.id)
    return 0


def _write_rows(rows: list, fmt: str, titles: dict[str, str]) -> None:
    from lowbridge.cli import formats

    sys.stdout.write(formats.rows(rows, fmt, titles))


def _write_docs(docs: list[dict], fmt: str | None) -> None:
    if fmt:
        from lowbridge.cli import formats

        sys.stdout.write(formats.documents(docs, fmt))
    else:
        _print_json(docs)


def cmd_network_ls(args: argparse.Namespace) -> int:
    from lowbridge import filters, output

    want = filters.parse(args.filter, filters.NETWORK_KEYS)
    view = _controller(args).view()
    used = {e.network_id for e in view.endpoints}
    rows = [
        output.NetworkRow(n, trunc=not args.no_trunc)
        for n in view.networks
        if not want
        or filters.network(want, id=n.id, name=n.name, driver=n.driver, scope=output.scope(n),
                           labels=n.labels, predefined=n.predefined, in_use=n.id in used)
    ]  # fmt: skip
    if args.quiet:
        for r in rows:
            print(r.ID)
    elif args.format:
        _write_rows(rows, args.format, output.NetworkRow.HEADERS)
    else:
        table = [[r.ID, r.Name, r.Driver, r.Scope] for r in rows]
        print(output.table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], table))
    return 0


def cmd_network_inspect(args: argparse.Namespace) -> int:
    from lowbridge import drivers, output

    ctl = _controller(args)
    view = ctl.view()
    docs = []
    for ref in args.networks:
        net = view.network(ref)
        scope = drivers.get(net.driver).scope
        hosts = ctl.cluster.hosts() if ctl.cluster and scope == "global" else None
        docs.append(output.network_doc(net, view.endpoints_on(net.id), view.ctrs, hosts))
    _write_docs(docs, args.format)
    return 0


def _each(refs: list[str], fn) -> int:  # noqa: ANN001
    """Docker's multi-argument verbs: try every argument, report each failure, fail at the end."""
    status = 0
    for ref in refs:
        try:
            print(fn(ref))
        except LowbridgeError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            status = exc.exit_code
    return status


def cmd_network_rm(args: argparse.Namespace) -> int:
    ctl = _controller(args)
    return _each(args.networks, lambda ref: ref if ctl.network_rm(ref) else ref)


def cmd_network_prune(args: argparse.Namespace) -> int:
    removed = _controller(args).network_prune()
    if removed:
        print("Deleted Networks:")
        for net in removed:
            print(net.name)
    return 0


def cmd_network_connect(args: argparse.Namespace) -> int:
    _controller(args).network_connect(
        args.network, args.container, ip=args.ip, aliases=list(args.alias or [])
    )
    return 0


def cmd_network_disconnect(args: argparse.Namespace) -> int:
    _controller(args).network_disconnect(args.network, args.container)
    return 0


# ---------------------------------------------------------------------------- containers
def _container_request(args: argparse.Namespace, command: list[str]):  # noqa: ANN202
    from lowbridge.controller import ContainerRequest

    return ContainerRequest(
        name=args.name,
        network=args.network,
        ip=args.ip,
        netns=getattr(args, "netns", None),
        command=command,
        publish=list(args.publish or []),
        hostname=args.hostname,
        add_hosts=list(args.add_host or []),
        dns=list(args.dns or []),
        dns_search=list(args.dns_search or []),
        dns_options=list(args.dns_option or []),
        aliases=list(args.network_alias or []),
        links=list(args.link or []),
        expose=list(args.expose or []),
        env=list(args.env or []),
        labels=_pairs(args.label, "--label", need_value=False),
    )


def _command(args: argparse.Namespace) -> list[str]:
    command = list(args.command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    return command


def cmd_container_create(args: argparse.Namespace) -> int:
    ctr = _controller(args).container_create(_container_request(args, _command(args)))
    print(ctr.id)
    return 0


def cmd_container_ls(args: argparse.Namespace) -> int:
    from lowbridge import filters, output

    want = filters.parse(args.filter, filters.CONTAINER_KEYS)
    ctl = _controller(args)
    view = ctl.view()
    ctrs = list(view.containers)
    pids = ctl.running(ctrs)
    every = args.all or "status" in want  # docker: a status filter looks at every container
    rows = []
    for c in ctrs:
        state = output.container_status(c, pids[c.id])
        nets = {view.nets[e.network_id].name: e.network_id for e in view.endpoints_of(c.id)
                if e.network_id in view.nets}  # fmt: skip
        if (every or state == "running") and filters.container(
            want, id=c.id, name=c.name, state=state, labels=c.labels, networks=nets
        ):
            rows.append(output.ContainerRow(c, list(nets), state, trunc=not args.no_trunc))
    if args.quiet:
        for r in rows:
            print(r.ID)
    elif args.format:
        _write_rows(rows, args.format, output.ContainerRow.HEADERS)
    else:
        headers = ["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NETWORKS", "NAMES"]
        table = [[r.ID, r.Command, r.RunningFor, r.Status, r.Ports, r.Networks, r.Names]
                 for r in rows]  # fmt: skip
        print(output.table(headers, table))
    return 0


def cmd_container_inspect(args: argparse.Namespace) -> int:
    from lowbridge import output

    ctl = _controller(args)
    view = ctl.view()
    docs = []
    for ref in args.containers:
        ctr = view.container(ref)
        pids = ctl.running([ctr])[ctr.id]
        docs.append(output.container_doc(ctr, view.endpoints_of(ctr.id), view.nets, pids))
    _write_docs(docs, args.format)
    return 0


def cmd_container_rm(args: argparse.Namespace) -> int:
    status = 0
    for ref, got in _controller(args).container_rm_many(args.containers, force=args.force):
        if isinstance(got, LowbridgeError):
            print(f"{PROG}: error: {got.within(f'remove container {ref}')}", file=sys.stderr)
            status = got.exit_code
        else:
            print(ref)
    return status


def cmd_run(args: argparse.Namespace) -> int:
    command = _command(args)
    if not command:
        raise InvalidInput("run needs a command after '--' (container create makes a bare sandbox)")
    ctl = _controller(args)
    wrap = None
    if args.detach and args.rm:
        # Docker's run -d --rm: a small supervisor waits for the command, then removes the
        # sandbox.  It lives in the host's namespaces; the command in the sandbox.
        def wrap(ctr, argv: list[str]) -> list[str]:  # noqa: ANN001
            return [sys.executable, "-m", "lowbridge", *_global_args(args), "_supervise",
                    ctr.id, "--", *argv]  # fmt: skip

    try:
        ctr, proc = ctl.run(_container_request(args, command), command, args.detach, wrap)
    except LowbridgeError as exc:
        exc.exit_code = 125
        raise
    if args.detach:
        print(ctr.id)
        return 0
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    if args.rm:
        ctl.container_rm(ctr.id, force=True)
    return code


def _global_args(args: argparse.Namespace) -> list[str]:
    out = []
    if args.root:
        out += ["--root", args.root]
    if args.firewall_backend:
        out += ["--firewall-backend", args.firewall_backend]
    if args.store:
        out += ["--store", args.store]
    return out


def cmd_supervise(args: argparse.Namespace) -> int:
    """(internal) Run the command; when it exits, remove its sandbox (run -d --rm)."""
    command = _command(args)
    try:
        import subprocess

        code = subprocess.call(command)
    except OSError as exc:
        code = _spawn_failure(exc)
    with contextlib.suppress(LowbridgeError):  # removed meanwhile (rm -f): nothing left to do
        _controller(args).container_rm(args.container, force=True)
    return code


def _spawn_failure(exc: OSError) -> int:
    print(f"{PROG}: error: {exc}", file=sys.stderr)
    return 127 if isinstance(exc, FileNotFoundError) else 126


def cmd_exec(args: argparse.Namespace) -> int:
    from lowbridge import sandbox

    command = _command(args)
    if not command:
        raise InvalidInput("exec needs a command after the container name")
    ctl = _controller(args)
    ctr = ctl.container(args.container)
    argv = ctl.exec_argv(ctr, command)
    sys.stdout.flush()
    try:
        os.execvpe(argv[0], argv, sandbox.environment(ctr.environment))
    except OSError as exc:
        return _spawn_failure(exc)
    return 0  # not reached


def cmd_firewall_show(args: argparse.Namespace) -> int:
    sys.stdout.write(_controller(args).firewall_show())
    return 0


def cmd_firewall_reapply(args: argparse.Namespace) -> int:
    _controller(args).firewall_reapply()
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from lowbridge import agent, config
    from lowbridge.config import Paths

    url = args.store or config.store_url()
    if not url:
        raise InvalidInput("the agent needs the cluster store: --store etcd://HOST:2379")
    _controller(args).settle()  # joins the cluster (and settles this host) first
    return agent.main(Paths.resolve(args.root), url)


def cmd_completion(args: argparse.Namespace) -> int:
    from lowbridge.cli import completion

    sys.stdout.write(completion.script(args.shell))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lowbridge import demo

    return demo.main(keep=args.keep)


# ---------------------------------------------------------------------------- parser
