"""The read-only verbs as scripts use them, on one simulated host: ``--format`` and ``--filter``
of ``ps``, ``network ls`` and the inspects against what the kernel and the records hold, and
shell completion (verbs, flags, network and sandbox names) through bash's own completion
machinery and zsh's registration."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from lowbridge.simhost import SimHost

LB = f"{sys.executable} -m lowbridge"


@pytest.fixture(scope="module")
def h():
    with SimHost("reads") as host:
        host.lb("network", "create", "--subnet", "10.66.0.0/24", "--label", "tier=front", "front")
        host.lb("network", "create", "--subnet", "10.67.0.0/24", "back")
        host.lb("run", "-d", "--name", "web", "--network", "front", "-p", "8080:80",
                "--label", "app=shop", "--", "sleep", "infinity")  # fmt: skip
        host.lb("container", "create", "--name", "worker", "--network", "back")
        host.lb("network", "connect", "front", "worker")
        host.lb("run", "-d", "--name", "done", "--network", "back", "--", "true")
        yield host


def lines(h: SimHost, *argv: str) -> list[str]:
    return h.lb(*argv).stdout.splitlines()


def test_inspect_formats_read_what_the_kernel_holds(h):
    web_ip = lines(h, "inspect", "-f", "{{.NetworkSettings.Networks.front.IPAddress}}", "web")[0]
    assert f"inet {web_ip}/24" in h.run(["ip", "-n", "web", "addr", "show", "eth0"]).stdout
    both = "{{range $n, $e := .NetworkSettings.Networks}}{{$n}}={{$e.IPAddress}} {{end}}"
    got = dict(kv.split("=") for kv in lines(h, "inspect", "--format", both, "worker")[0].split())
    assert set(got) == {"front", "back"} and got["back"].startswith("10.67.0.")
    port = '{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}'
    assert lines(h, "inspect", "-f", port, "web") == ["8080"]
    assert lines(h, "inspect", "-f", "{{.Name}} {{json .Config.Labels}}", "web", "worker") == [
        '/web {"app":"shop"}', "/worker {}"]  # fmt: skip
    assert lines(h, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
                 "front") == ["10.66.0.0/24"]  # fmt: skip
    proc = h.lb("inspect", "-f", "{{.Nope}}", "web", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert 'map has no entry for key "Nope"' in proc.stderr


def test_filters_and_formats_of_the_lists(h):
    assert lines(h, "network", "ls", "--filter", "type=custom", "--format", "{{.Name}}") == [
        "back",
        "front",
    ]  # fmt: skip (sorted by name, as docker's)
    assert lines(h, "network", "ls", "-f", "label=tier=front", "--format", "{{.Name}}") == ["front"]
    assert lines(h, "network", "ls", "-f", "driver=null", "--format", "{{.Name}}") == ["none"]
    names = "{{.Names}}"
    assert set(lines(h, "ps", "--format", names)) == {"web", "worker"}  # done has exited
    assert set(lines(h, "ps", "-a", "--format", names)) == {"web", "worker", "done"}
    assert lines(h, "ps", "-a", "--filter", "status=exited", "--format", names) == ["done"]
    assert lines(h, "ps", "--filter", "status=exited", "--format", names) == ["done"]  # as -a
    assert set(lines(h, "ps", "-f", "network=front", "--format", names)) == {"web", "worker"}
    assert lines(h, "ps", "-f", "label=app", "--format", '{{.Label "app"}}') == ["shop"]
    assert lines(h, "ps", "-f", "name=^/wor", "--format", "{{.Names}} {{.Networks}}") == [
        "worker back,front"]  # fmt: skip
    table = lines(h, "ps", "-f", "name=web", "--format", "table {{.Names}}\t{{.Ports}}")
    assert table == ["NAMES     PORTS", "web       0.0.0.0:8080->80/tcp"]
    rows = [json.loads(x) for x in lines(h, "network", "ls", "--format", "json")]
    assert {r["Name"] for r in rows} == {"bridge", "host", "none", "front", "back"}
    proc = h.lb("ps", "--filter", "color=blue", check=False)
    assert (proc.returncode, proc.stderr.strip()) == (2, "lowbridge: error: Invalid filter 'color'")


def bash_complete(h: SimHost, line: str) -> list[str]:
    """What bash offers for ``line`` (its cursor at the end), with lowbridge's script sourced:
    the function ``complete -p`` registered, called as bash calls it."""
    words = line.split(" ")
    script = f"""
        lowbridge() {{ {LB} "$@"; }}
        source <({LB} completion bash)
        spec=$(complete -p lowbridge)
        func=${{spec##*-F }}; func=${{func%% *}}
        COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({" ".join(map(repr, words))})
        COMP_CWORD={len(words) - 1}; COMP_TYPE=9
        "$func" lowbridge {words[-1]!r} {words[-2]!r}
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    out = h.run(["bash", "-c", script]).stdout
    return sorted(x.strip() for x in out.splitlines() if x.strip())


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("lowbridge netw", ["network"]),
        ("lowbridge network c", ["connect", "create"]),
        ("lowbridge network create --sub", ["--subnet"]),
        ("lowbridge ps --f", ["--filter", "--format"]),
        ("lowbridge network rm ", ["back", "bridge", "front", "host", "none"]),
        ("lowbridge network inspect f", ["front"]),
        ("lowbridge network connect front w", ["web", "worker"]),
        ("lowbridge exec w", ["web", "worker"]),
        ("lowbridge rm wo", ["worker"]),
        ("lowbridge run --network b", ["back", "bridge"]),
    ],
)
def test_bash_completes_verbs_flags_and_names(h, line, want):
    assert bash_complete(h, line) == want


def test_zsh_registers_the_same_completion(h):
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (package zsh)")
    script = f"""
        autoload -U compinit && compinit -u
        source <({LB} completion zsh)
        print -r -- $_comps[lowbridge]
    """
    assert h.run(["zsh", "-f", "-c", script]).stdout.strip() == "_python_argcomplete"
    # What the zsh side of the script asks lowbridge for, and gets: names with descriptions.
    env = {"COMP_LINE": "lowbridge network rm fr", "COMP_POINT": "23", "_ARGCOMPLETE": "1",
           "_ARGCOMPLETE_SHELL": "zsh", "_ARGCOMPLETE_SUPPRESS_SPACE": "1",
           "_ARGCOMPLETE_STDOUT_FILENAME": "/run/ac.out"}  # fmt: skip
    h.lb(env=env, check=False)
    assert h.run(["cat", "/run/ac.out"]).stdout.split("\013") == ["front:bridge network"]


def test_a_closed_pipe_ends_quietly(h):
    proc = h.run(f"{LB} network ls | head -1; {LB} ps -a --no-trunc | true")
    assert proc.stderr == ""
    assert proc.stdout.split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
