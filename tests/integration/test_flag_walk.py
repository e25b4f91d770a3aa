"""No flag accepted and then ignored (issue 19, point 5): every option of every verb's parser
has a row here -- a new option without one fails :func:`test_every_flag_of_every_parser_has_a_row`
-- and each row runs its command with the option and without it on one simulated host and
shows that something differs: what the command prints or its exit status, or what a probe then
finds (the kernel's view from inside the sandbox, ``inspect``, the logs).  An option lowbridge
refuses must fail with one line.  A few options whose proof is costly are proven by the test a
row names (which must exist and use the option)."""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import inspect
import os
import shlex
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable

import pytest

from lowbridge.cli.parser import build_parser
from lowbridge.simhost import SimHost
from tests.integration.conftest import ip_of

SERVE = "-- socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo web'"
DIR = tempfile.mkdtemp(prefix="lowbridge-walk-")  # (the rows name its files at import)
atexit.register(shutil.rmtree, DIR, True)  # each process that imports this module made one
ENV_FILE = os.path.join(DIR, "walk.env")
LAB = os.path.join(DIR, "walk.yaml")
TERM_TRAP = (
    '-- sh -c \'trap "sleep 0.3; echo clean-exit; exit 3" TERM; echo trap-set; '
    "while :; do sleep 0.1; done'"
)
USR1_TRAP = "-- sh -c 'trap \"exit 7\" USR1; while :; do sleep 0.1; done'"


@dataclasses.dataclass
class Row:
    """``with_`` and ``without`` are lowbridge argv (``{n}``: the row's own name); ``probe``
    what then differs (default: the exit status and stdout); ``setup`` and ``cleanup`` run
    before and after each of the two (lowbridge argv -- ``cleanup``'s ``;``-separated -- or, for
    ``setup``, a callable)."""

    with_: str
    without: str | None = None  # None: the option is refused (with_ must fail, one line)
    probe: Callable[[SimHost, str], object] | None = None
    setup: str | Callable[[SimHost, str], None] = ""
    cleanup: str = ""
    input: str = ""
    stream: str = "stdout"


@dataclasses.dataclass
class Elsewhere:
    """Proven by another test (named ``file::function``), which uses the option."""

    test: str
    option: str


def lbq(h: SimHost, line: str) -> str:
    """stdout of a lowbridge command that must succeed."""
    return h.lb(*shlex.split(line), timeout=60).stdout.strip()


def sh(h: SimHost, n: str, script: str) -> str:
    proc = h.lb("exec", n, "sh", "-c", script, check=False, timeout=30)
    return proc.stdout.strip() if proc.returncode == 0 else f"exit {proc.returncode}"


def fmt(template: str) -> Callable[[SimHost, str], object]:
    """A probe: ``inspect -f TEMPLATE {n}`` (what the record says)."""
    return lambda h, n: h.lb("inspect", "-f", template, n, check=False).stdout.strip()


def net_fmt(template: str) -> Callable[[SimHost, str], object]:
    return lambda h, n: h.lb("network", "inspect", "-f", template, n, check=False).stdout.strip()


def in_box(script: str) -> Callable[[SimHost, str], object]:
    """A probe: what ``script`` prints inside the sandbox ``{n}`` (the kernel's view)."""
    return lambda h, n: sh(h, n, script)


def first_sandbox(what: str) -> Callable[[SimHost, str], object]:
    """A probe of a network: a sandbox made on it, its address or its interface name."""

    def probe(h: SimHost, n: str) -> object:
        h.lb("container", "create", "--name", f"{n}c", "--network", n)
        try:
            if what == "ip":
                return ip_of(h, f"{n}c", n)
            return h.run(["ip", "-n", f"{n}c", "-o", "link", "show", "up"]).stdout.split(":")[1]
        finally:
            h.lb("rm", "-f", f"{n}c")

    return probe


def exists(kind: str) -> Callable[[SimHost, str], object]:
    return lambda h, n: h.lb(*kind.split(), "inspect", n, check=False).returncode


def exit_code_after(h: SimHost, n: str) -> object:
    h.lb("wait", n, timeout=30)
    return fmt("{{.State.ExitCode}}")(h, n)


def logs_ready(h: SimHost, n: str) -> None:
    h.lb(
        "run",
        "-d",
        "--name",
        n,
        "--network",
        "n1",
        "--",
        "sh",
        "-c",
        "echo a; echo b; echo c; sleep 4; echo d",
    )
    deadline = time.monotonic() + 10
    while "c" not in h.lb("logs", n).stdout.split():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def without_default_route(h: SimHost, n: str) -> None:
    """A drift gc mends: a sandbox whose default route was deleted by hand."""
    h.lb("container", "create", "--name", n, "--network", "n1")
    h.run(["ip", "-n", n, "route", "del", "default"])


def resolves_from_idle(name: str) -> Callable[[SimHost, str], object]:
    return lambda h, n: sh(h, "idle", f"getent hosts {name.replace('{n}', n)} >/dev/null; echo $?")


def _create_rows(verb: str) -> dict[str, Row | Elsewhere]:
    """The rows of the flags ``container create`` and ``run`` share."""
    run = verb == "run"
    tail = " -d -- sleep infinity" if run else ""
    mk = f"{verb} --name {{n}} --network n1"

    def row(flags: str, probe, without: str = "", extra: str = "") -> Row:  # noqa: ANN001
        return Row(f"{mk} {flags}{tail}", f"{mk} {without}{tail}", probe, cleanup="rm -f {n}")

    rows: dict[str, Row | Elsewhere] = {
        "--name": Row(
            f"{verb} --name {{n}}{tail}", f"{verb}{tail}", fmt("{{.Name}}"), cleanup="rm -f {n}"
        ),
        "--network": Row(
            f"{verb} --name {{n}} --network n1{tail}",
            f"{verb} --name {{n}}{tail}",
            in_box("ip -o -4 addr show eth0 | cut -d' ' -f7"),
            cleanup="rm -f {n}",
        ),
        "--ip": row("--ip 10.72.0.200", in_box("ip -o -4 addr show eth0 | cut -d' ' -f7")),
        "--ip6": row(
            "--ip6 fd00:72::c8", in_box("ip -o -6 addr show eth0 scope global | cut -d' ' -f7")
        ),
        "--publish": row("-p 18080:80", lambda h, n: h.lb("port", n).stdout),
        "--hostname": row("--hostname walker", in_box("hostname")),
        "--add-host": row("--add-host db:10.9.9.9", in_box("getent hosts db")),
        "--dns": row("--dns 10.9.9.53", in_box("grep -c 10.9.9.53 /etc/resolv.conf")),
        "--dns-search": row("--dns-search walk.test", in_box("grep -c walk.test /etc/resolv.conf")),
        "--dns-option": row("--dns-option ndots:3", in_box("grep -c ndots:3 /etc/resolv.conf")),
        "--network-alias": row("--network-alias al-{n}", resolves_from_idle("al-{n}")),
        "--link": row("--link web:lk_web", in_box("getent hosts lk_web | cut -d' ' -f1")),
        "--expose": row("--expose 9090", fmt("{{json .Config.ExposedPorts}}")),
        "--env": Row(
            f"{mk} -e X=1{tail}", f"{mk}{tail}", fmt("{{json .Config.Env}}"), cleanup="rm -f {n}"
        ),
        "--label": row("-l tier=walk", fmt("{{json .Config.Labels}}")),
        "--restart": row("--restart always", fmt("{{.HostConfig.RestartPolicy.Name}}")),
        "--mac-address": row(
            "--mac-address 02:42:0a:48:00:77", in_box("cat /sys/class/net/eth0/address")
        ),
        "--publish-all": row(
            "--expose 80 -P", fmt("{{json .NetworkSettings.Ports}}"), without="--expose 80"
        ),
        "--env-file": row(f"--env-file {ENV_FILE}", fmt("{{json .Config.Env}}")),
        "--sysctl": row(
            "--sysctl net.ipv4.ip_forward=1", in_box("cat /proc/sys/net/ipv4/ip_forward")
        ),
        "--domainname": row("--domainname walk.test", in_box("cat /proc/sys/kernel/domainname")),
    }
    if run:
        rows["--rm"] = Row(
            f"{mk} --rm -- true", f"{mk} -- true", exists("container"), cleanup="rm -f {n}"
        )
        rows["--detach"] = Row(
            f"{mk} -d -- echo hi",
            f"{mk} -- echo hi",
            lambda h, n: "hi" in h.lb("logs", n).stdout and h.lb("wait", n).stdout,
            cleanup="rm -f {n}",
        )
        rows["--interactive"] = Row(f"{mk} --rm -i -- cat", f"{mk} --rm -- cat", input="typed")
        rows["--tty"] = Row(
            f"{mk} --rm -t -- sh -c 'test -t 1 && echo tty || echo pipe'",
            f"{mk} --rm -- sh -c 'test -t 1 && echo tty || echo pipe'",
        )
    else:
        rows["--rm"] = row("--rm", fmt("{{.HostConfig.AutoRemove}}"))
        rows["--netns"] = Row(
            "container create --name {n} --netns /run/netns/{n}src",
            "container create --name {n}",
            fmt("{{.LowbridgeNetnsOwned}}"),
            setup=lambda h, n: h.run(f"ip netns del {n}src 2>/dev/null; ip netns add {n}src"),
            cleanup="rm -f {n}",
        )
    return rows


def _list_rows(verb: str) -> dict[str, Row | Elsewhere]:
    return {
        "--all": Row(f"{verb} -a --format {{{{.Names}}}}", f"{verb} --format {{{{.Names}}}}"),
        "--quiet": Row(f"{verb} -q -a", f"{verb} -a"),
        "--no-trunc": Row(f"{verb} --no-trunc -a", f"{verb} -a"),
        "--filter": Row(f"{verb} -a -f name=web", f"{verb} -a"),
        "--format": Row(f"{verb} -a --format {{{{.Names}}}}", f"{verb} -a"),
    }


def _stop_rows(verb: str) -> dict[str, Row | Elsewhere]:
    # A command that takes 0.3 s to end after SIGTERM: -t 0 kills it first (stop: 137 rather
    # than 3; restart: its log lacks the clean exit).
    probe = exit_code_after if verb.endswith("stop") else cleanly_ended
    return {
        "--time": Row(
            f"{verb} -t 0 {{n}}", f"{verb} {{n}}", probe, setup=trapping, cleanup="rm -f {n}"
        )
    }


def trapping(h: SimHost, n: str) -> None:
    """A sandbox whose command has set its TERM trap: a signal sent before the shell set it
    would end it at once (no clean exit), with or without ``-t``."""
    lbq(h, f"run -d --name {n} --network n1 {TERM_TRAP}")
    deadline = time.monotonic() + 10
    while "trap-set" not in h.lb("logs", n).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.05)


def cleanly_ended(h: SimHost, n: str) -> object:
    """Whether the first run's TERM trap got to log its clean exit (the supervisor may still be
    writing its last output when restart returns: given up to 3 s on a loaded machine)."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if "clean-exit" in h.lb("logs", n).stdout.split():
            return True
        time.sleep(0.2)
    return False


ROWS: dict[str, Row | Elsewhere] = {
    # -- global options
    "--root": Row("--root /proc/lowbridge-walk ps -a", "ps -a"),  # /proc takes no state
    "--debug": Row(
        "--debug network create {n}",
        "network create {n}",
        cleanup="network rm {n}",
        stream="stderr",
    ),
    "--version": Row("--version", "version"),
    "--store": Row(
        "--store etcd://127.0.0.1:9 network create -d overlay {n}",
        "network create -d overlay {n}",
        stream="stderr",
    ),
    "--firewall-backend": Row("--firewall-backend iptables firewall show", "firewall show"),
    # -- network
    "network create --driver": Row(
        "network create -d overlay {n}", "network create {n}", cleanup="network rm {n}"
    ),
    "network create --attachable": Row(
        "network create --attachable {n}",
        "network create {n}",
        net_fmt("{{.Attachable}}"),
        cleanup="network rm {n}",
    ),
    "network create --subnet": Row(
        "network create --subnet 10.73.0.0/24 {n}",
        "network create {n}",
        first_sandbox("ip"),
        cleanup="network rm {n}",
    ),
    "network create --gateway": Row(
        "network create --subnet 10.74.0.0/24 --gateway 10.74.0.254 {n}",
        "network create --subnet 10.74.0.0/24 {n}",
        lambda h, n: h.run(["ip", "-o", "-4", "addr"]).stdout.count("10.74.0.254/24"),
        cleanup="network rm {n}",
    ),
    "network create --ip-range": Row(
        "network create --subnet 10.75.0.0/24 --ip-range 10.75.0.128/25 {n}",
        "network create --subnet 10.75.0.0/24 {n}",
        first_sandbox("ip"),
        cleanup="network rm {n}",
    ),
    "network create --aux-address": Row(
        "network create --subnet 10.76.0.0/24 --aux-address r=10.76.0.2 {n}",
        "network create --subnet 10.76.0.0/24 {n}",
        first_sandbox("ip"),
        cleanup="network rm {n}",
    ),
    "network create --ipv6": Row(
        "network create --ipv6 {n}",
        "network create {n}",
        net_fmt("{{.EnableIPv6}}"),
        cleanup="network rm {n}",
    ),
    "network create --ipv4": Row(
        "network create --ipv6 --ipv4=false {n}",
        "network create --ipv6 {n}",
        net_fmt("{{len .IPAM.Config}}"),
        cleanup="network rm {n}",
    ),
    "network create --internal": Row(
        "network create --internal {n}",
        "network create {n}",
        lambda h, n: h.lb("firewall", "show").stdout.count("isolat"),
        cleanup="network rm {n}",
    ),
    "network create --label": Row(
        "network create --label a=b {n}",
        "network create {n}",
        net_fmt("{{json .Labels}}"),
        cleanup="network rm {n}",
    ),
    "network create --opt": Row(
        "network create -o com.docker.network.container_iface_prefix=wk {n}",
        "network create {n}",
        first_sandbox("ifname"),
        cleanup="network rm {n}",
    ),
    "network ls --quiet": Row("network ls -q", "network ls"),
    "network ls --no-trunc": Row("network ls --no-trunc", "network ls"),
    "network ls --filter": Row("network ls -f name=n1", "network ls"),
    "network ls --format": Row("network ls --format {{.Name}}", "network ls"),
    "network inspect --format": Row("network inspect -f {{.Name}} n1", "network inspect n1"),
    "network prune --force": Row(
        "network prune -f",
        "network prune",
        exists("network"),
        setup="network create {n}",
        cleanup="network rm {n}",
    ),
    "network connect --ip": Row(
        "network connect --ip 10.72.0.201 n1 {n}",
        "network connect n1 {n}",
        lambda h, n: ip_of(h, n, "n1"),
        setup="container create --name {n}",
        cleanup="rm -f {n}",
    ),
    "network connect --ip6": Row(
        "network connect --ip6 fd00:72::c9 n1 {n}",
        "network connect n1 {n}",
        fmt("{{.NetworkSettings.Networks.n1.GlobalIPv6Address}}"),
        setup="container create --name {n}",
        cleanup="rm -f {n}",
    ),
    "network connect --alias": Row(
        "network connect --alias ca-{n} n1 {n}",
        "network connect n1 {n}",
        resolves_from_idle("ca-{n}"),
        setup="container create --name {n}",
        cleanup="rm -f {n}",
    ),
    "network disconnect --force": Row("network disconnect -f n1 idle"),
    # -- sandboxes
    **{f"container create {k}": v for k, v in _create_rows("container create").items()},
    **{f"run {k}": v for k, v in _create_rows("run").items()},
    **{f"container ls {k}": v for k, v in _list_rows("container ls").items()},
    **{f"ps {k}": v for k, v in _list_rows("ps").items()},
    "container inspect --format": Row(
        "container inspect -f {{.Name}} web", "container inspect web"
    ),
    "inspect --format": Row("inspect -f {{.Name}} web", "inspect web"),
    "inspect --type": Row("inspect --type network web", "inspect web"),
    "container rm --force": Row(
        "container rm -f {n}",
        "container rm {n}",
        exists("container"),
        setup="run -d --name {n} -- sleep infinity",
        cleanup="rm -f {n}",
    ),
    "rm --force": Row(
        "rm -f {n}",
        "rm {n}",
        exists("container"),
        setup="run -d --name {n} -- sleep infinity",
        cleanup="rm -f {n}",
    ),
    **{f"container stop {k}": v for k, v in _stop_rows("container stop").items()},
    **{f"stop {k}": v for k, v in _stop_rows("stop").items()},
    **{f"container restart {k}": v for k, v in _stop_rows("container restart").items()},
    **{f"restart {k}": v for k, v in _stop_rows("restart").items()},
    **{
        f"{verb} --signal": Row(
            f"{verb} -s USR1 {{n}}",
            f"{verb} {{n}}",
            exit_code_after,
            setup=f"run -d --name {{n}} --network n1 {USR1_TRAP}",
            cleanup="rm -f {n}",
        )
        for verb in ("container kill", "kill")
    },
    **{
        f"{verb} {flag}": Row(
            f"{verb} {flag}{value} {{n}}", f"{verb} {{n}}", setup=logs_ready, cleanup="rm -f {n}"
        )
        for verb in ("container logs", "logs")
        for flag, value in (("--follow", ""), ("--tail", " 1"), ("--timestamps", ""))
    },
    **{
        f"{verb} --force": Row(
            f"{verb} -f",
            verb,
            exists("container"),
            setup="run --name {n} -- true",
            cleanup="rm -f {n}",
        )
        for verb in ("container prune",)
    },
    "exec --interactive": Row("exec -i idle cat", "exec idle cat", input="typed"),
    "exec --tty": Row(
        "exec -t idle sh -c 'test -t 1 && echo tty || echo pipe'",
        "exec idle sh -c 'test -t 1 && echo tty || echo pipe'",
    ),
    "exec --detach": Row("exec -d idle echo hi", "exec idle echo hi"),
    "exec --env": Row("exec -e X=1 idle sh -c 'echo x$X'", "exec idle sh -c 'echo x$X'"),
    "exec --workdir": Row("exec -w /proc idle pwd", "exec idle pwd"),
    # -- labs, explain, operations
    "apply --file": Row(f"apply -f {LAB}", "apply", cleanup=f"destroy -f {LAB}"),
    "plan --file": Row(f"plan -f {LAB}", "plan"),
    "destroy --file": Row(
        f"destroy -f {LAB}", "destroy", setup=f"apply -f {LAB}", cleanup=f"destroy -f {LAB}"
    ),
    "graph --file": Row(
        f"graph -f {LAB}", "graph", setup=f"apply -f {LAB}", cleanup=f"destroy -f {LAB}"
    ),
    "graph --format": Row("graph --format svg", "graph"),
    "graph --output": Row(f"graph -o {DIR}/g.dot", "graph"),
    "explain --port": Row("explain idle web --port 81", "explain idle web"),
    "check --json": Row("check --json", "check"),
    "gc --dry-run": Row(
        "gc --dry-run",
        "gc",
        lambda h, n: h.run(["ip", "-n", n, "route"]).stdout,
        setup=lambda h, n: without_default_route(h, n),
        cleanup="rm -f {n}",
    ),
    "plugin docker --socket": Elsewhere(
        "test_docker.py::test_the_socket_is_the_drivers_name", '"--socket"'
    ),
    "plugin cni --dir": Elsewhere(
        "test_cni.py::test_plugin_cni_installs_what_answers_as_the_console_script", '"--dir"'
    ),
    "plugin cni --name": Elsewhere(
        "test_cni.py::test_plugin_cni_installs_what_answers_as_the_console_script", '"--name"'
    ),
    "demo --keep": Elsewhere(
        "test_sandbox.py::test_demo_runs_the_tutorial_in_a_throwaway_host", '"--keep"'
    ),
}


def parser_options() -> list[str]:
    """Every option of every parser, as ``verb [verb] --long``, each parser once (aliases
    share theirs); -h aside."""

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...], seen: set[int]):  # noqa: ANN202
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if id(sub) not in seen and not name.startswith("_"):
                        seen.add(id(sub))
                        yield from walk(sub, (*path, name), seen)
            elif action.option_strings and "-h" not in action.option_strings:
                yield " ".join((*path, max(action.option_strings, key=len)))

    return list(walk(build_parser(), (), set()))


def test_every_flag_of_every_parser_has_a_row():
    options = parser_options()
    assert len(options) > 100
    assert sorted(set(options) - set(ROWS)) == [], "options without a row"
    assert sorted(set(ROWS) - set(options)) == [], "rows of options that are gone"


@pytest.mark.parametrize("key", [k for k, r in ROWS.items() if isinstance(r, Elsewhere)])
def test_the_options_proven_elsewhere_are_used_there(key):
    row = ROWS[key]
    filename, function = row.test.split("::")
    module = __import__(f"tests.integration.{filename[:-3]}", fromlist=[function])
    assert row.option in inspect.getsource(getattr(module, function))


@pytest.fixture(scope="module")
def h():
    with open(ENV_FILE, "w") as f:
        f.write("FROM_FILE=1\n")
    with open(LAB, "w") as f:
        f.write("lab: walk\nnetworks:\n  wnet: {}\nsandboxes:\n  wbox:\n    networks: [wnet]\n")
    with SimHost("walk") as host:
        host.lb("network", "create", "--ipv6", "--subnet", "10.72.0.0/24", "--subnet",
                "fd00:72::/64", "n1")  # fmt: skip
        host.lb("run", "-d", "--name", "web", "--network", "n1", *shlex.split(SERVE))
        host.lb("container", "create", "--name", "idle", "--network", "n1")
        host.lb("run", "--name", "done", "--", "true")
        yield host


def _outcome(h: SimHost, row: Row, argv: str, n: str) -> object:
    if callable(row.setup):
        row.setup(h, n)
    elif row.setup:
        lbq(h, row.setup.replace("{n}", n))
    try:
        proc = h.lb(*shlex.split(argv.replace("{n}", n)), check=False, input=row.input, timeout=60)
        text = getattr(proc, row.stream).strip().replace("\r", "")  # a pty's line ends
        return proc, (proc.returncode, text, row.probe(h, n) if row.probe else None)
    finally:
        for line in row.cleanup.split(";"):
            if line.strip():
                h.lb(*shlex.split(line.replace("{n}", n)), check=False)


@pytest.mark.parametrize("key", [k for k, r in ROWS.items() if isinstance(r, Row)])
def test_each_flag_changes_something_or_is_refused(h, key):
    row = ROWS[key]
    n = f"f{zlib.crc32(key.encode()) % 10**6:06d}"
    proc, got = _outcome(h, row, row.with_, n)
    if row.without is None:
        assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
        return
    _, plain = _outcome(h, row, row.without, n)
    assert got != plain, f"{key}: the same with and without: {got}"
