"""Shell completion: verbs, flags, network and sandbox names, through bash's own completion
machinery (and zsh's registration), in a simulated host with a store to read names from."""

from __future__ import annotations

import shutil
import sys

import pytest

from lowbridge.simhost import SimHost

LB = f"{sys.executable} -m lowbridge"


@pytest.fixture(scope="module")
def h():
    with SimHost("compl") as host:
        host.lb("network", "create", "--subnet", "10.66.0.0/24", "front")
        host.lb("network", "create", "--subnet", "10.67.0.0/24", "back")
        host.lb("container", "create", "--name", "web", "--network", "front")
        host.lb("container", "create", "--name", "worker", "--network", "back")
        yield host


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
