"""The command line's parser: Docker's verbs and flags (argparse).

:func:`parser_for` builds only the parsers a command line needs (building all ~25 costs every
command ~5 ms more, bench/cli.py); everything when the command line names no known command, so
that help and errors read as always.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from lowbridge import __version__
from lowbridge.cli import commands as C
from lowbridge.cli import labs as L
from lowbridge.cli import lifecycle as LC
from lowbridge.cli import ops as O
from lowbridge.cli.startup import Formatter

PROG = "lowbridge"


def _add_network_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="name (default: the short id); also the netns name")
    p.add_argument(
        "--network",
        "--net",
        default="bridge",
        help="network to join (default: bridge); container:NAME: NAME's namespace",
    )
    p.add_argument("--ip", help="IPv4 address on that network (user-defined networks only)")
    p.add_argument("--ip6", help="IPv6 address on that network (one with --ipv6 and --subnet)")
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
    p.add_argument("-l", "--label", action="append", metavar="KEY=VALUE", help="set metadata")
    p.add_argument("--restart", metavar="POLICY", default="no",
                   help="no (default), on-failure[:N], always, unless-stopped")  # fmt: skip
    p.add_argument("--rm", action="store_true", help="remove the sandbox when its command exits")
    p.add_argument("--mac-address", metavar="MAC", help="its first network's interface's MAC")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every exposed port on a free host port")  # fmt: skip
    p.add_argument("--env-file", action="append", metavar="FILE", help="variables from a file")
    p.add_argument("--sysctl", action="append", metavar="KEY=VALUE",
                   help="a net.* setting of its network namespace")  # fmt: skip
    p.add_argument("--domainname", metavar="NAME", help="its NIS domain name")


def _add_terminal(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached")
    p.add_argument("-t", "--tty", action="store_true", help="a terminal of its own (a pty)")


def _add_format(p: argparse.ArgumentParser, example: str, short: bool = False) -> None:
    """docker's ``--format`` (``-f`` too where docker has it: inspect's)."""
    flags = ("-f", "--format") if short else ("--format",)
    p.add_argument(*flags, metavar="FORMAT",
                   help=f"a Go template (e.g. '{example}'), or json")  # fmt: skip


# One example per verb, shown at the end of its --help ("container X" shares "X"'s).
EXAMPLES = {
    "network create": "lowbridge network create --subnet 10.10.0.0/24 mynet",
    "network ls": "lowbridge network ls -f driver=bridge --format '{{.Name}}'",
    "network inspect": "lowbridge network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "
    "mynet",
    "network rm": "lowbridge network rm mynet",
    "network prune": "lowbridge network prune -f",
    "network connect": "lowbridge network connect --alias db mynet web",
    "network disconnect": "lowbridge network disconnect mynet web",
    "create": "lowbridge container create --name web --network mynet -p 8080:80",
    "ls": "lowbridge ps -a -f status=exited",
    "inspect": "lowbridge inspect -f '{{.NetworkSettings.Networks.mynet.IPAddress}}' web",
    "rm": "lowbridge rm -f web",
    "start": "lowbridge start web",
    "stop": "lowbridge stop -t 2 web",
    "restart": "lowbridge restart web",
    "kill": "lowbridge kill -s HUP web",
    "wait": "lowbridge wait web",
    "port": "lowbridge port web 80/tcp",
    "logs": "lowbridge logs -f --tail 10 web",
    "prune": "lowbridge container prune -f",
    "ps": "lowbridge ps -a --format '{{.Names}}\t{{.Status}}'",
    "run": "lowbridge run -d --name web --network mynet -p 8080:80 -- python3 -m http.server 80",
    "exec": "lowbridge exec -it web sh",
    "apply": "lowbridge apply -f examples/three-tier.yaml",
    "plan": "lowbridge plan -f examples/three-tier.yaml",
    "destroy": "lowbridge destroy -f examples/three-tier.yaml",
    "graph": "lowbridge graph --format svg -o lab.svg",
    "explain": "lowbridge explain web db --port 5432",
    "check": "lowbridge check --json",
    "gc": "lowbridge gc --dry-run",
    "firewall show": "lowbridge firewall show",
    "firewall reapply": "lowbridge firewall reapply",
    "version": "lowbridge version",
    "agent": "lowbridge --store etcd://10.0.0.1:2379 agent",
    "plugin docker": "lowbridge plugin docker --socket /run/docker/plugins/lowbridge.sock",
    "plugin cni": "lowbridge plugin cni --dir /usr/lib/cni",
    "completion": "source <(lowbridge completion bash)",
    "demo": "sudo lowbridge demo --keep",
}


def example(path: str) -> str | None:
    """The example of the verb at ``path`` ("container stop" shares "stop"'s)."""
    return EXAMPLES.get(path) or EXAMPLES.get(path.removeprefix("container "))


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
        if example(full):
            kwargs.setdefault("epilog", f"Example: {example(full)}")
        return self.action.add_parser(name, formatter_class=Formatter, **kwargs)


class _Parser(argparse.ArgumentParser):
    """argparse, with docker's answer to a wrong command line: the usage of the (sub)command
    that was meant, the error, ``See 'lowbridge network ls --help'.`` -- an unknown flag
    reported by the subcommand it was given to (argparse's own reports it at the top); the
    subcommands' parsers are of this class too."""

    chosen: _Parser | None = None  # the deepest parser the command line reached

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201
        _Parser.chosen = self  # a subcommand's parser starts after its parent's
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            what = "unknown flag" if extras[0].startswith("-") else "unexpected argument"
            (_Parser.chosen or self).error(f"{what}: {extras[0]}")
        return parsed

    def error(self, message: str) -> NoReturn:
        import re

        from lowbridge.errors import one_line

        wrong = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if wrong:  # docker's words, and not the hidden verbs argparse would list
            message = f"'{wrong.group(1)}' is not a lowbridge command"

        self.exit(2, f"{self.format_usage()}{PROG}: error: {one_line(message)}\n"
                     f"See '{self.prog} --help'.\n")  # fmt: skip


_GLOBAL_WITH_VALUE = ("--root", "--store", "--firewall-backend")
_GROUPS = ("network", "container", "firewall", "plugin")
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


def _lifecycle(sub: _Group, csub: _Group) -> None:
    """start, stop, restart, kill, wait, port, logs: both ``lowbridge VERB`` and ``lowbridge
    container VERB``, as docker has them; ``container prune``."""
    for parent in (sub, csub):
        p = parent.add_parser("start", help="start stopped sandboxes (their networks, command)")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=LC.cmd_start)
        for verb, text in (("stop", "stop sandboxes: their command, then their networks"),
                           ("restart", "stop, then start sandboxes")):  # fmt: skip
            p = parent.add_parser(verb, help=text)
            p.add_argument("-t", "--time", type=int, default=10, metavar="SECONDS",
                           help="seconds to wait before killing it (default 10)")  # fmt: skip
            p.add_argument("containers", nargs="+", metavar="CONTAINER")
            p.set_defaults(func=LC.cmd_stop if verb == "stop" else LC.cmd_restart)
        p = parent.add_parser("kill", help="send a signal to sandboxes' commands")
        p.add_argument("-s", "--signal", default="KILL", help="signal (default KILL)")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=LC.cmd_kill)
        p = parent.add_parser("wait", help="wait until sandboxes exit; print their exit codes")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=LC.cmd_wait)
        p = parent.add_parser("port", help="list a sandbox's published ports")
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("port", nargs="?", metavar="PORT[/PROTO]")
        p.set_defaults(func=LC.cmd_port)
        p = parent.add_parser("logs", help="what a detached sandbox's command wrote")
        p.add_argument("-f", "--follow", action="store_true", help="follow, until it exits")
        p.add_argument("--tail", default="all", metavar="N", help="the last N lines only")
        p.add_argument("-t", "--timestamps", action="store_true", help="with their times")
        p.add_argument("container", metavar="CONTAINER")
        p.set_defaults(func=LC.cmd_logs)
    p = csub.add_parser("prune", help="remove every stopped sandbox")
    p.add_argument("-f", "--force", action="store_true", help="do not ask first")
    p.set_defaults(func=LC.cmd_container_prune)


def build_parser(
    want: set[str] | None = None, seen: set[str] | None = None
) -> argparse.ArgumentParser:
    """The command line's parser; with ``want``, only those subcommands' parsers are built
    (see :func:`parser_for`), and every subcommand's name goes into ``seen``."""
    seen = set() if seen is None else seen

    def group(action, path: str) -> _Group:  # noqa: ANN001
        return _Group(action, path, want, seen)

    parser = _Parser(
        prog=PROG,
        description="Docker's network drivers, built directly in the kernel with pyroute2.",
        formatter_class=Formatter,
    )
    parser.add_argument(
        "--root",
        help="state directory (default /var/lib/lowbridge and /run/lowbridge; env LOWBRIDGE_ROOT)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print each kernel step as it runs, and the traceback of an internal error",
    )
    parser.add_argument("--version", action="version", version=f"lowbridge version {__version__}")
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
        "--attachable", action="store_true", help="marked attachable (sandboxes may always join)"
    )
    p.add_argument("--subnet", action="append", help="subnet in CIDR format")
    p.add_argument("--gateway", action="append", help="gateway for the subnet")
    p.add_argument("--ip-range", action="append", help="allocate endpoint addresses from here")
    p.add_argument("--aux-address", action="append", metavar="NAME=IP", help="reserve an address")
    p.add_argument("--internal", action="store_true", help="no outside access")
    p.add_argument(
        "--ipv6", action="store_true", help="IPv6 as well (an IPv6 --subnet, or a ULA /64)"
    )
    p.add_argument(
        "--ipv4",
        nargs="?",
        const="true",
        default="true",
        metavar="BOOL",
        help="IPv4 (default true; --ipv4=false with --ipv6: an IPv6-only network)",
    )
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="set metadata")
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        metavar="KEY=VALUE",
        help="driver option, e.g. com.docker.network.bridge.name=br0",
    )
    p.add_argument("name", metavar="NETWORK")
    p.set_defaults(func=C.cmd_network_create)

    p = nsub.add_parser("ls", aliases=["list"], help="list networks")
    p.add_argument("-q", "--quiet", action="store_true", help="only the ids")
    p.add_argument("--no-trunc", action="store_true", help="whole ids")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        metavar="KEY=VALUE",
        help="driver, id, label, name, scope, type (custom|builtin), dangling",
    )
    _add_format(p, "table {{.ID}}\\t{{.Name}}")
    p.set_defaults(func=C.cmd_network_ls)

    p = nsub.add_parser("inspect", help="show networks as JSON")
    _add_format(p, "{{.IPAM.Config}}", short=True)
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=C.cmd_network_inspect)

    p = nsub.add_parser("rm", aliases=["remove"], help="remove networks")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=C.cmd_network_rm)

    p = nsub.add_parser("prune", help="remove all unused user-defined networks")
    p.add_argument("-f", "--force", action="store_true", help="do not ask first")
    p.set_defaults(func=C.cmd_network_prune)

    p = nsub.add_parser("connect", help="connect a container to a network")
    p.add_argument("--ip", help="IPv4 address")
    p.add_argument("--ip6", help="IPv6 address")
    p.add_argument("--alias", action="append", metavar="ALIAS", help="another DNS name there")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=C.cmd_network_connect)

    p = nsub.add_parser("disconnect", help="disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true", help="refused: see 'not done' in README")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=C.cmd_network_disconnect)

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
    p.set_defaults(func=C.cmd_container_create)

    for parent, name in ((csub, "ls"), (sub, "ps")):
        aliases = ["list"] if name == "ls" else []
        p = parent.add_parser(name, help="list containers", aliases=aliases)
        p.add_argument("-a", "--all", action="store_true", help="also those that exited")
        p.add_argument("-q", "--quiet", action="store_true", help="only the ids")
        p.add_argument("--no-trunc", action="store_true", help="whole ids and commands")
        p.add_argument(
            "-f",
            "--filter",
            action="append",
            metavar="KEY=VALUE",
            help="id, label, name, network, status",
        )
        _add_format(p, "table {{.Names}}\\t{{.Networks}}")
        p.set_defaults(func=C.cmd_container_ls)

    for parent in (csub, sub):
        p = parent.add_parser("inspect", help="show containers as JSON")
        _add_format(p, "{{.NetworkSettings.IPAddress}}", short=True)
        if parent is sub:
            p.add_argument("--type", choices=("container", "network"), help="only of this kind")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=C.cmd_container_inspect)
        p = parent.add_parser("rm", help="remove containers")
        p.add_argument("-f", "--force", action="store_true", help="kill what runs inside first")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=C.cmd_container_rm)

    p = sub.add_parser("run", help="create a sandbox, connect it, run a command in it")
    _add_network_flags(p)
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    _add_terminal(p)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=C.cmd_run)

    _lifecycle(sub, csub)

    p = sub.add_parser("exec", help="run a command in a sandbox")
    _add_terminal(p)
    p.add_argument("-d", "--detach", action="store_true", help="run it in the background")
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="set a variable")
    p.add_argument("-w", "--workdir", metavar="DIR", help="the command's working directory")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=C.cmd_exec)

    for verb, func, text in (
        ("apply", L.cmd_apply, "make a lab's topology file so (only the difference)"),
        ("plan", L.cmd_plan, "print what apply would change, touching nothing"),
        ("destroy", L.cmd_destroy, "remove what a lab owns"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("-f", "--file", required=True, metavar="FILE", help="topology (YAML)")
        p.set_defaults(func=func)

    p = sub.add_parser("graph", help="a picture of the networks and sandboxes (Graphviz)")
    p.add_argument("-f", "--file", metavar="FILE", help="only this lab's (its topology file)")
    p.add_argument("--format", choices=("dot", "svg", "png"), default="dot")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(func=L.cmd_graph)

    p = sub.add_parser("explain", help="whether A reaches B, and why, step by step")
    p.add_argument("a", metavar="A", help="a sandbox, 'host' or an outside address")
    p.add_argument("b", metavar="B", help="a sandbox, a name A resolves, an address or 'host'")
    p.add_argument("--port", metavar="PORT[/tcp|udp]", help="a TCP or UDP port (default: a ping)")
    p.set_defaults(func=L.cmd_explain)

    p = sub.add_parser("check", help="what differs between lowbridge's records and this host")
    p.add_argument(
        "--json", action="store_true", help="as JSON (what, where, expected, found, fix)"
    )
    p.set_defaults(func=O.cmd_check)
    p = sub.add_parser("gc", help="settle, remove lowbridge's orphans, make missing things again")
    p.add_argument("--dry-run", action="store_true", help="only say what it would do")
    p.set_defaults(func=O.cmd_gc)

    fw = sub.add_parser("firewall", help="lowbridge's firewall rules")
    fsub = group(
        fw.add_subparsers(dest="firewall_command", metavar="COMMAND", required=True), "firewall"
    )
    p = fsub.add_parser("show", help="print lowbridge's rules in the backend's syntax")
    p.set_defaults(func=C.cmd_firewall_show)
    p = fsub.add_parser("reapply", help="re-apply every rule (after iptables -F, nft flush ...)")
    p.set_defaults(func=C.cmd_firewall_reapply)

    p = sub.add_parser("_supervise")  # internal: a detached command's supervisor
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=LC.cmd_supervise)
    p = sub.add_parser("_boot")  # internal: systemd/lowbridge-restore.service
    p.set_defaults(func=LC.cmd_boot)
    p = sub.add_parser("version", help="lowbridge's version")
    p.set_defaults(func=LC.cmd_version, rootless=True)

    p = sub.add_parser(
        "agent", help="keep this host's overlay entries in step with the cluster store"
    )
    p.set_defaults(func=C.cmd_agent)
    p = sub.add_parser("_agent")  # internal: the agent a command starts (lowbridge.agent)
    p.set_defaults(func=C.cmd_agent_on_demand)

    plug = sub.add_parser("plugin", help="serve other runtimes: dockerd, CNI runtimes (Podman)")
    psub = group(
        plug.add_subparsers(dest="plugin_command", metavar="COMMAND", required=True), "plugin"
    )
    p = psub.add_parser("docker", help='be dockerd\'s remote network driver "lowbridge"')
    p.add_argument("--socket", default=None, metavar="PATH",
                   help="where dockerd finds it: its name is the driver's "
                   "(default /run/docker/plugins/lowbridge.sock)")  # fmt: skip
    p.set_defaults(func=O.cmd_plugin_docker)
    p = psub.add_parser("cni", help="install the CNI plugin where a runtime looks for plugins")
    p.add_argument("--dir", default="/opt/cni/bin", metavar="DIR",
                   help="the runtime's plugin directory (default /opt/cni/bin; Debian's "
                   "Podman also looks in /usr/lib/cni)")  # fmt: skip
    p.add_argument(
        "--name",
        default="lowbridge",
        metavar="NAME",
        help='its file name: the "type" its configurations name (default lowbridge)',
    )
    p.set_defaults(func=O.cmd_plugin_cni)

    p = sub.add_parser("completion", help="print the shell completion script (bash or zsh)")
    p.add_argument("shell", choices=("bash", "zsh"), help="source <(lowbridge completion bash)")
    p.set_defaults(func=C.cmd_completion, rootless=True)

    p = sub.add_parser("demo", help="Docker's bridge tutorial in a throwaway simulated host")
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=C.cmd_demo)
    return parser
