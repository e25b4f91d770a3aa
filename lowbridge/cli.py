"""The ``lowbridge`` command line: parse, call the controller, render.  Nothing else.

Verbs and flags follow the ``docker`` CLI.  User errors print one line on stderr and exit with the
error's code (see :mod:`lowbridge.errors`); ``run`` and ``exec`` exit with the command's own status,
or 125 when lowbridge itself failed, 126 when the command cannot run, 127 when it is not found, as
``docker run`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import types
from collections.abc import Sequence

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


def cmd_network_ls(args: argparse.Namespace) -> int:
    from lowbridge import output

    nets = _controller(args).networks()
    if args.quiet:
        for n in nets:
            print(n.id if args.no_trunc else n.id[:12])
        return 0
    print(
        output.table(
            ["NETWORK ID", "NAME", "DRIVER", "SCOPE"], output.network_rows(nets, args.no_trunc)
        )
    )
    return 0


def cmd_network_inspect(args: argparse.Namespace) -> int:
    from lowbridge import output

    ctl = _controller(args)
    ctrs = {c.id: c for c in ctl.containers()}
    docs = []
    for ref in args.networks:
        net = ctl.network(ref)
        hosts = ctl.cluster.hosts() if ctl.cluster and net.driver == "overlay" else None
        docs.append(output.network_doc(net, ctl.endpoints(network=net), ctrs, hosts))
    _print_json(docs)
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
    from lowbridge import output, ports

    ctl = _controller(args)
    ctrs = ctl.containers()
    if args.quiet:
        for c in ctrs:
            print(c.id if args.no_trunc else c.id[:12])
        return 0
    pids = ctl.running(ctrs)
    nets = {n.id: n.name for n in ctl.store.networks()}
    rows = []
    for c in ctrs:
        eps = ctl.endpoints(container=c)
        cmd = " ".join(c.command)
        if not args.no_trunc and len(cmd) > 20:
            cmd = cmd[:19] + "…"
        rows.append(
            [
                c.id if args.no_trunc else c.id[:12],
                json.dumps(cmd),
                output.ago(c.created),
                output.container_status(c, pids[c.id]),
                ports.docker_ps([ports.PortMapping.from_doc(d) for d in c.ports]),
                ",".join(nets.get(e.network_id, "?") for e in eps),
                c.name,
            ]
        )
    headers = ["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NETWORKS", "NAMES"]
    print(output.table(headers, rows))
    return 0


def cmd_container_inspect(args: argparse.Namespace) -> int:
    from lowbridge import output

    ctl = _controller(args)
    nets = {n.id: n for n in ctl.store.networks()}
    docs = []
    for ref in args.containers:
        ctr = ctl.container(ref)
        pids = ctl.running([ctr])[ctr.id]
        docs.append(output.container_doc(ctr, ctl.endpoints(container=ctr), nets, pids))
    _print_json(docs)
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
    from lowbridge import sandbox

    command = _command(args)
    if not command:
        raise InvalidInput("run needs a command after '--' (container create makes a bare sandbox)")
    ctl = _controller(args)
    try:
        ctr = ctl.container_create(_container_request(args, command))
    except LowbridgeError as exc:
        exc.exit_code = 125
        raise
    if args.detach:
        argv = ctl.exec_argv(ctr, command)
        if args.rm:
            # Docker's run -d --rm: a small supervisor waits for the command, then removes the
            # sandbox.  It lives in the host's namespaces; the command in the sandbox.
            argv = [sys.executable, "-m", "lowbridge", *_global_args(args), "_supervise",
                    ctr.id, "--", *argv]  # fmt: skip
        env = sandbox.environment(ctr.environment)
        pid, start = sandbox.spawn_detached(argv, ctl.paths.logs(ctr.id), env)
        ctl.record_process(ctr, pid, start)
        print(ctr.id)
        return 0
    try:
        import subprocess

        proc = subprocess.Popen(
            ctl.exec_argv(ctr, command),
            env=sandbox.environment(ctr.environment),
        )
    except OSError as exc:
        return _spawn_failure(exc)
    ctl.record_process(ctr, proc.pid, sandbox.start_time(proc.pid))
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
    return agent.main(Paths.resolve(args.root), url)


def cmd_demo(args: argparse.Namespace) -> int:
    from lowbridge import demo

    return demo.main(keep=args.keep)


# ---------------------------------------------------------------------------- parser
def _add_network_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="name (default: the short id); also the netns name")
    p.add_argument("--network", "--net", default="bridge", help="network to join (default: bridge)")
    p.add_argument("--ip", help="IPv4 address on that network (user-defined networks only)")
    p.add_argument(
        "-p",
        "--publish",
        action="append",
        metavar="[IP:][HOSTPORT:]PORT[/PROTO]",
        help="publish a container port on the host (ranges: 8000-8010:80-90)",
    )
    p.add_argument("--hostname", help="host name seen by processes in the sandbox")
    p.add_argument(
        "--add-host",
        action="append",
        metavar="NAME:IP",
        help="add a line to /etc/hosts (IP may be host-gateway)",
    )
    p.add_argument("--dns", action="append", metavar="IP", help="nameserver for resolv.conf")
    p.add_argument("--dns-search", action="append", metavar="DOMAIN", help="search domain")
    p.add_argument("--dns-option", action="append", metavar="OPT", help="resolv.conf option")
    p.add_argument(
        "--network-alias",
        action="append",
        metavar="ALIAS",
        help="another DNS name on the (user-defined) network",
    )
    p.add_argument(
        "--link",
        action="append",
        metavar="NAME[:ALIAS]",
        help="legacy link to another sandbox (hosts entry and environment)",
    )
    p.add_argument(
        "--expose", action="append", metavar="PORT[/PROTO]", help="expose a port (for links)"
    )
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="set a variable")


class _Skipped:
    """Stands in for the parser of a subcommand the command line does not name."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        pass

    def set_defaults(self, **kwargs: object) -> None:
        pass

    def add_subparsers(self, **kwargs: object) -> None:
        return None


class _Group:
    """A subparsers action (None under a skipped parser) that builds only the parsers ``want``
    names ("network", "network connect"; None: all), and adds every name it was asked for,
    aliases included, to ``seen``."""

    def __init__(self, action, path: str, want: set[str] | None, seen: set[str]):  # noqa: ANN001
        self.action, self.path, self.want, self.seen = action, path, want, seen

    def add_parser(self, name: str, **kwargs):  # noqa: ANN003, ANN201
        full = f"{self.path} {name}".strip()
        self.seen.update(f"{self.path} {n}".strip() for n in [name, *kwargs.get("aliases", [])])
        if self.action is None or (self.want is not None and full not in self.want):
            return _Skipped()
        return self.action.add_parser(name, formatter_class=_Formatter, **kwargs)


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without ``shutil``: argparse makes one per argument added and
    imports shutil (with bz2, lzma ...: ~4 ms here) for its terminal size.  The same size:
    $COLUMNS, else the terminal's, else 80 columns; less 2."""

    def __init__(self, prog: str, **kwargs: object) -> None:
        if kwargs.get("width") is None:
            try:
                columns = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                try:
                    columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    columns = 80
            kwargs["width"] = columns - 2
        super().__init__(prog, **kwargs)  # type: ignore[arg-type]


def _defer_inspect() -> None:
    """Load ``inspect`` on its first use: a stand-in module takes its place in sys.modules.

    Every dataclass module imports dataclasses, which imports inspect (with ast, dis, tokenize:
    ~12 ms of a command's start-up here, bench/cli.py) and calls it only for a class without a
    docstring; lowbridge's have docstrings.  (importlib.util.LazyLoader does not help: an
    ``import inspect`` statement reads the module's ``__spec__``, which loads it.)"""
    if "inspect" not in sys.modules:
        sys.modules["inspect"] = _Deferred("inspect")


class _Deferred(types.ModuleType):
    """A module that imports the real one at the first attribute it is asked for, puts it in
    sys.modules and takes on its contents."""

    def __getattr__(self, name: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = __import__(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


_GLOBAL_WITH_VALUE = ("--root", "--store", "--firewall-backend")
_GROUPS = ("network", "container", "firewall")
_ALIASES = {"list": "ls", "remove": "rm"}


def _wanted(argv: Sequence[str]) -> set[str] | None:
    """The parsers a command line needs: its command (and subcommand, for a group), or None
    (every parser) for help, a group without its subcommand, or nothing at all."""
    words: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in ("-h", "--help"):
            return None
        if token in _GLOBAL_WITH_VALUE:
            next(tokens, None)
        elif not token.startswith("-"):
            words.append(token)
            if len(words) == 2 or words[0] not in _GROUPS:
                break
    if not words or (words[0] in _GROUPS and len(words) < 2):
        return None
    want = {words[0]}
    if words[0] in _GROUPS:
        want.add(f"{words[0]} {_ALIASES.get(words[1], words[1])}")
    return want


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for ``argv``: only its command's parsers are built (building all ~25 costs
    every command ~5 ms more, bench/cli.py); everything when the command line names no known
    command, so that help and errors read as always."""
    want = _wanted(argv)
    if want is None:
        return build_parser()
    seen: set[str] = set()
    parser = build_parser(want, seen)
    return parser if want <= seen else build_parser()


def build_parser(
    want: set[str] | None = None, seen: set[str] | None = None
) -> argparse.ArgumentParser:
    """The command line's parser; with ``want``, only those subcommands' parsers are built
    (see :func:`parser_for`), and every subcommand's name goes into ``seen``."""
    seen = set() if seen is None else seen

    def group(action, path: str) -> _Group:  # noqa: ANN001
        return _Group(action, path, want, seen)

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Docker's network drivers, built directly in the kernel with pyroute2.",
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--root",
        help="state directory (default /var/lib/lowbridge and /run/lowbridge; env LOWBRIDGE_ROOT)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    parser.add_argument(
        "--store",
        metavar="etcd://HOST:2379[,…]",
        help="cluster store for overlay networks (env LOWBRIDGE_STORE, config store)",
    )
    parser.add_argument(
        "--firewall-backend",
        choices=("iptables", "nftables", "auto"),
        help="default: env LOWBRIDGE_FIREWALL_BACKEND, config, else auto (nftables when usable)",
    )
    sub = group(parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True), "")

    # network
    net = sub.add_parser("network", help="manage networks")
    nsub = group(
        net.add_subparsers(dest="network_command", metavar="COMMAND", required=True), "network"
    )
    p = nsub.add_parser("create", help="create a network")
    p.add_argument(
        "-d", "--driver", default="bridge", help="driver: bridge (default), macvlan or overlay"
    )
    p.add_argument(
        "--attachable", action="store_true", help="(overlay) accepted: sandboxes may always join"
    )
    p.add_argument("--subnet", action="append", help="subnet in CIDR format")
    p.add_argument("--gateway", action="append", help="gateway for the subnet")
    p.add_argument("--ip-range", action="append", help="allocate endpoint addresses from here")
    p.add_argument("--aux-address", action="append", metavar="NAME=IP", help="reserve an address")
    p.add_argument("--internal", action="store_true", help="no outside access")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="set metadata")
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        metavar="KEY=VALUE",
        help="driver option, e.g. com.docker.network.bridge.name=br0",
    )
    p.add_argument("name", metavar="NETWORK")
    p.set_defaults(func=cmd_network_create)

    p = nsub.add_parser("ls", aliases=["list"], help="list networks")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.set_defaults(func=cmd_network_ls)

    p = nsub.add_parser("inspect", help="show networks as JSON")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_network_inspect)

    p = nsub.add_parser("rm", aliases=["remove"], help="remove networks")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_network_rm)

    p = nsub.add_parser("prune", help="remove all unused user-defined networks")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt (never prompts)")
    p.set_defaults(func=cmd_network_prune)

    p = nsub.add_parser("connect", help="connect a container to a network")
    p.add_argument("--ip", help="IPv4 address")
    p.add_argument("--alias", action="append", metavar="ALIAS", help="another DNS name there")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_network_connect)

    p = nsub.add_parser("disconnect", help="disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_network_disconnect)

    # container
    ctr = sub.add_parser("container", help="manage containers (sandboxes)")
    csub = group(
        ctr.add_subparsers(dest="container_command", metavar="COMMAND", required=True),
        "container",
    )
    p = csub.add_parser("create", help="create a sandbox (a named network namespace)")
    _add_network_flags(p)
    p.add_argument(
        "--netns", metavar="PATH", help="adopt an existing namespace, e.g. /proc/PID/ns/net"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="command recorded for the sandbox")
    p.set_defaults(func=cmd_container_create)

    for parent, name in ((csub, "ls"), (sub, "ps")):
        aliases = ["list"] if name == "ls" else []
        p = parent.add_parser(name, help="list containers", aliases=aliases)
        p.add_argument("-a", "--all", action="store_true", help="(always on: every sandbox)")
        p.add_argument("-q", "--quiet", action="store_true")
        p.add_argument("--no-trunc", action="store_true")
        p.set_defaults(func=cmd_container_ls)

    for parent in (csub, sub):
        p = parent.add_parser("inspect", help="show containers as JSON")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_container_inspect)
        p = parent.add_parser("rm", help="remove containers")
        p.add_argument("-f", "--force", action="store_true", help="kill what runs inside first")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_container_rm)

    p = sub.add_parser("run", help="create a sandbox, connect it, run a command in it")
    _add_network_flags(p)
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    p.add_argument("--rm", action="store_true", help="remove the sandbox when the command exits")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("exec", help="run a command in a sandbox")
    p.add_argument("-i", "--interactive", action="store_true", help="(accepted, always on)")
    p.add_argument("-t", "--tty", action="store_true", help="(accepted; the terminal is shared)")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=cmd_exec)

    fw = sub.add_parser("firewall", help="lowbridge's firewall rules")
    fsub = group(
        fw.add_subparsers(dest="firewall_command", metavar="COMMAND", required=True), "firewall"
    )
    p = fsub.add_parser("show", help="print lowbridge's rules in the backend's syntax")
    p.set_defaults(func=cmd_firewall_show)
    p = fsub.add_parser("reapply", help="re-apply every rule (after iptables -F, nft flush ...)")
    p.set_defaults(func=cmd_firewall_reapply)

    p = sub.add_parser("_supervise")  # internal: run -d --rm
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_supervise)

    p = sub.add_parser(
        "agent", help="keep this host's overlay entries in step with the cluster store"
    )
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("demo", help="Docker's bridge tutorial in a throwaway simulated host")
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _defer_inspect()
    parser = parser_for(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LowbridgeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line, unless --debug
        if args.debug:
            raise
        print(
            f"{PROG}: internal error: {exc.__class__.__name__}: {exc} (rerun with --debug)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
