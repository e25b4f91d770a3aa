"""Each verb of the command line: one controller call, and what it prints (lowbridge.output)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lowbridge.errors import Conflict, InvalidInput, LowbridgeError

PROG = "lowbridge"


def _bool(value: str, flag: str) -> bool:
    """A docker-style boolean flag's value (``--ipv4=false``)."""
    word = value.strip().lower()
    if word not in ("true", "false", "1", "0"):
        raise InvalidInput(f"invalid {flag} value {value!r}: true or false")
    return word in ("true", "1")


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
    ctl = Controller(Paths.resolve(args.root), firewall_backend=args.firewall_backend)
    args.controller = ctl  # main() says at the end if the cluster store could not be read
    return ctl


def _print_json(doc: object) -> None:
    print(json.dumps(doc, indent=4))


# ---------------------------------------------------------------------------- network
def cmd_network_create(args: argparse.Namespace) -> int:
    from lowbridge.drivers.base import NetworkRequest

    pairs = {}  # one value per family: NetworkRequest.by_family sorts them
    for flag in ("subnet", "gateway", "ip_range"):
        given = getattr(args, flag) or []
        if len(given) > 2:
            name = flag.replace("_", "-")
            raise InvalidInput(f"only one IPv4 and one IPv6 --{name} per network are supported")
        pairs[flag], pairs[flag + "6"] = (given + [None, None])[:2]
    req = NetworkRequest(
        name=args.name,
        driver=args.driver,
        **pairs,
        aux_addresses=_pairs(args.aux_address, "--aux-address"),
        internal=args.internal,
        labels=_pairs(args.label, "--label", need_value=False),
        options=_pairs(args.opt, "--opt"),
        attachable=args.attachable,
        ipv6=args.ipv6,
        ipv4=_bool(args.ipv4, "--ipv4"),
    ).by_family()
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
        for n in sorted(view.networks, key=lambda n: n.name)
        if not want
        or filters.network(want, id=n.id, name=n.name, driver=output.driver_name(n),
                           scope=output.scope(n), labels=n.labels, predefined=n.predefined,
                           in_use=n.id in used)
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
    docs, missing = [], []
    for ref in args.networks:
        try:
            net = view.network(ref)
        except LowbridgeError:
            missing.append(f"No such network: {ref}")
            continue
        scope = drivers.get(net.driver).scope
        hosts = ctl.cluster.hosts() if ctl.cluster and scope == "global" else None
        docs.append(output.network_doc(net, view.endpoints_on(net.id), view.ctrs, hosts))
    return _documents(docs, missing, args.format)


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
    question = ("WARNING! This will remove all custom networks not used by at least one "
                "container.\nAre you sure you want to continue?")  # fmt: skip
    if not args.force and not _confirm(question):
        return 0
    removed = _controller(args).network_prune()
    if removed:
        print("Deleted Networks:")
        for net in removed:
            print(net.name)
    return 0


def cmd_network_connect(args: argparse.Namespace) -> int:
    _controller(args).network_connect(
        args.network, args.container, ip=args.ip, aliases=list(args.alias or []), ip6=args.ip6
    )
    return 0


def cmd_network_disconnect(args: argparse.Namespace) -> int:
    if args.force:  # docker's -f deletes an endpoint whose container is gone: none can be here
        raise InvalidInput("disconnect -f is not needed: lowbridge's endpoints never outlive "
                           "their sandbox (lowbridge gc removes leftovers)")  # fmt: skip
    _controller(args).network_disconnect(args.network, args.container)
    return 0


# ---------------------------------------------------------------------------- containers
def _container_request(args: argparse.Namespace, command: list[str]):  # noqa: ANN202
    from lowbridge.controller import ContainerRequest

    return ContainerRequest(
        name=args.name,
        network=args.network,
        ip=args.ip,
        ip6=args.ip6,
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
        restart=args.restart,
        auto_remove=args.rm,
        mac_address=args.mac_address,
        publish_all=args.publish_all,
        env_files=list(args.env_file or []),
        sysctls=_pairs(args.sysctl, "--sysctl"),
        domainname=args.domainname,
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
    view = _controller(args).view()
    every = args.all or "status" in want  # docker: a status filter looks at every container
    rows = []
    for c in sorted(view.containers, key=lambda c: c.created, reverse=True):  # newest first
        nets = {view.nets[e.network_id].name: e.network_id for e in view.endpoints_of(c.id)
                if e.network_id in view.nets}  # fmt: skip
        if (every or c.state == "running") and filters.container(
            want, id=c.id, name=c.name, state=c.state, labels=c.labels, networks=nets
        ):
            rows.append(output.ContainerRow(c, list(nets), c.state, trunc=not args.no_trunc))
    if args.quiet:
        for r in rows:
            print(r.ID)
    elif args.format:
        _write_rows(rows, args.format, output.ContainerRow.HEADERS)
    else:
        headers = ["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES", "NETWORKS"]
        table = [[r.ID, r.Command, r.RunningFor, r.Status, r.Ports, r.Names, r.Networks]
                 for r in rows]  # fmt: skip
        print(output.table(headers, table))
    return 0


def cmd_container_inspect(args: argparse.Namespace) -> int:
    """``inspect``: sandboxes (and, as docker's, networks of that name when no sandbox has it;
    ``--type`` chooses); what is found is printed, then what is not, one error each."""
    from lowbridge import drivers, output

    ctl = _controller(args)
    view = ctl.view()
    kind = getattr(args, "type", None) or ("container" if args.command_name == "container"
                                             else None)  # fmt: skip
    docs, missing = [], []
    for ref in args.containers:
        try:
            if kind != "network":
                try:
                    ctr = view.container(ref)
                except LowbridgeError:
                    if kind == "container":
                        raise
                else:
                    pids = ctl.running([ctr])[ctr.id]
                    eps = view.endpoints_of(ctr.id)
                    owner = view.ctrs.get(ctr.share or "")
                    files_of = owner.name if owner else None
                    doc = output.container_doc(ctr, eps, view.nets, pids, ctl.paths, files_of)
                    docs.append(doc)
                    continue
            net = view.network(ref)
            hosts = ctl.cluster.hosts() if ctl.cluster and drivers.get(net.driver).scope == (
                "global") else None  # fmt: skip
            docs.append(output.network_doc(net, view.endpoints_on(net.id), view.ctrs, hosts))
        except LowbridgeError:
            missing.append(f"No such object: {ref}" if kind is None else f"No such {kind}: {ref}")
    return _documents(docs, missing, args.format)


def _documents(docs: list[dict], missing: list[str], fmt: str | None) -> int:
    """What docker's inspects print: the documents found, then an error for each not found
    (exit 1 if any)."""
    if docs or not missing:
        _write_docs(docs, fmt)
    for text in missing:
        print(f"{PROG}: error: {text}", file=sys.stderr)
    return 1 if missing else 0


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
    from lowbridge import sandbox
    from lowbridge.cli import terminal
    from lowbridge.restarts import exited_with

    command = _command(args)
    if not command:
        raise InvalidInput("run needs a command after '--' (container create makes a bare sandbox)")
    if args.detach and (args.tty or args.interactive):
        raise InvalidInput("-i and -t are for a command run attached: a detached one gets no "
                           "terminal here (exec -it gives one to a running sandbox)")  # fmt: skip
    req = _container_request(args, command)
    try:
        terminal.check_command(command, sandbox.environment(req.env))
    except terminal.CannotRun as exc:
        exc.exit_code = 126 if "permission denied" in str(exc) else 127  # docker run's codes
        raise
    ctl = _controller(args)
    made: list = []

    def start(stdio, tty):  # noqa: ANN001, ANN202
        try:
            ctr, proc = ctl.run(req, command, args.detach, stdio=stdio, tty=tty)
        except LowbridgeError as exc:
            exc.exit_code = 125  # docker run's code for its own failures
            raise
        made.append(ctr)
        return proc

    if args.detach:
        start(None, False)
        print(made[0].id)
        return 0
    proc, code = terminal.attached(start, args.interactive, args.tty)
    code = exited_with(code)
    if ctl.command_exited(made[0].id, code, proc.pid):
        ctl.container_start(made[0].id)  # the restart policy: its supervisor runs it from now on
    return code


def _confirm(question: str) -> bool:
    """docker's prompt: y or yes (any case) goes on; anything else, or no answer, does not."""
    print(f"{question} [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def cmd_exec(args: argparse.Namespace) -> int:
    from lowbridge import sandbox
    from lowbridge.cli import terminal

    command = _command(args)
    if not command:
        raise InvalidInput("exec needs a command after the container name")
    ctl = _controller(args)
    ctr = ctl.container(args.container)
    if ctr.state != "running":
        raise Conflict(f"Container {ctr.id} is not running")
    env = sandbox.environment([*ctr.environment, *_env_items(args.env)])
    try:
        terminal.check_command(command, env)
    except terminal.CannotRun as exc:
        exc.exit_code = 126  # docker exec's code whatever the reason
        raise
    if args.workdir and not os.path.isdir(args.workdir):
        raise InvalidInput(f"chdir to cwd ({args.workdir!r}): no such file or directory")
    argv = ctl.exec_argv(ctr, command)
    if args.detach:
        import subprocess

        subprocess.Popen(argv, env=env, cwd=args.workdir, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
        return 0
    if args.tty:
        import subprocess

        def start(stdio, tty):  # noqa: ANN001, ANN202
            return subprocess.Popen(["setsid", "--ctty", *argv], env=env, cwd=args.workdir,
                                    stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])  # fmt: skip

        return terminal.attached(start, args.interactive, True)[1]
    if args.workdir:
        os.chdir(args.workdir)
    if not args.interactive:  # docker's exec without -i: the command reads nothing
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)
    return 0  # not reached


def _env_items(values: list[str] | None) -> list[str]:
    from lowbridge.controller.requests import env_item

    return [env_item(v) for v in values or ()]


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
    on_demand = args.func is cmd_agent_on_demand
    if not on_demand:  # (the command that starts one on demand has done this)
        _controller(args).settle()  # joins the cluster (and settles this host) first
    return agent.main(Paths.resolve(args.root), url, on_demand)


def cmd_agent_on_demand(args: argparse.Namespace) -> int:
    """``_agent``: the agent a command starts (lowbridge.agentctl.ensure_running)."""
    return cmd_agent(args)


def cmd_completion(args: argparse.Namespace) -> int:
    from lowbridge.cli import completion

    sys.stdout.write(completion.script(args.shell))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lowbridge import demo

    return demo.main(keep=args.keep)


# ---------------------------------------------------------------------------- parser
