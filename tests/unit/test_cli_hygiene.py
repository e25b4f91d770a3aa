"""The command line's manners (issue 19, point 7), one test per line of it: an unknown flag
gets the subcommand's usage and docker's ``See '... --help'.``; a closed pipe ends quietly
(tested through a real pipe here, and on a simulated host in test_reads); not root is one line;
the cluster extra missing names the pip command; the internal verbs stay out of help; every
verb's help ends with an example that parses as that verb."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys

import pytest

from lowbridge import cli
from lowbridge.cli import commands, parser
from lowbridge.errors import InvalidInput


def fails(argv: list[str], capsys) -> str:  # noqa: ANN001
    with pytest.raises(SystemExit) as exc:
        parser.parser_for(argv).parse_args(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["network", "ls", "--foo"], "network ls"),
        (["container", "create", "--bogus", "x"], "container create"),
        (["ps", "--nope"], "ps"),
        (["network", "ls", "extra"], "network ls"),
    ],
)
def test_an_unknown_flag_gets_the_subcommands_usage_and_see_help(argv, verb, capsys):
    err = fails(argv, capsys)
    lines = err.splitlines()
    assert lines[0].startswith(f"usage: lowbridge {verb} [-h]")
    assert re.search(r"^lowbridge: error: (unknown flag: --\w+|unexpected argument: extra)$",
                     err, re.M), err  # fmt: skip
    assert lines[-1] == f"See 'lowbridge {verb} --help'."


def test_a_wrong_verb_is_named_without_the_hidden_ones(capsys):
    err = fails(["nosuch"], capsys)
    assert "lowbridge: error: 'nosuch' is not a lowbridge command" in err
    assert "_supervise" not in err and "_boot" not in err
    assert err.splitlines()[-1] == "See 'lowbridge --help'."


def test_a_closed_pipe_ends_quietly():
    # The reader is gone before the interpreter has started: every write meets EPIPE.
    proc = subprocess.run(
        ["bash", "-c", f"{shlex.quote(sys.executable)} -m lowbridge completion bash | true; "
                       "echo ${PIPESTATUS[0]}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stderr == ""
    assert proc.stdout.strip() == "141"  # as docker, killed by SIGPIPE


def test_not_root_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    def never(*_a: object) -> None:  # the guard must stop it before any controller exists
        raise AssertionError("a controller was made without root")

    monkeypatch.setattr(commands, "_controller", never)
    assert cli.main(["network", "ls"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lowbridge needs root" in err
    assert cli.main(["completion", "bash"]) == 0  # what needs no root still runs


def test_the_cluster_extra_missing_names_the_pip_command(monkeypatch):
    from lowbridge.store import etcd

    monkeypatch.setitem(sys.modules, "aetcd", None)  # import aetcd now raises ImportError
    with pytest.raises(InvalidInput, match=r"pip install 'lowbridge\[cluster\]'"):
        etcd.KV("etcd://127.0.0.1:9").get(b"k")


def test_the_internal_verbs_stay_out_of_help(capsys):
    with pytest.raises(SystemExit):
        parser.build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "_supervise" not in out and "_boot" not in out
    assert "network" in out and "completion" in out


def _verbs(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):  # noqa: ANN202
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen or name.startswith("_"):
                    continue
                seen.add(id(sub))
                if sub._subparsers is None:
                    yield " ".join((*path, name)), sub
                yield from _verbs(sub, (*path, name))


@pytest.mark.parametrize("verb", [v for v, _ in _verbs(parser.build_parser())])
def test_every_verbs_help_ends_with_an_example_that_parses_as_that_verb(verb):
    full = parser.build_parser()
    sub = dict(_verbs(full))[verb]
    text = sub.format_help()
    found = re.search(r"^Example: (.*)$", text, re.M)
    assert found, f"{verb}: no example"
    line = found.group(1)
    line = re.sub(r"^source <\((.*)\)$", r"\1", line).removeprefix("sudo ")
    argv = shlex.split(line)
    assert argv[0] == "lowbridge"
    assert full.parse_args(argv[1:]).func is sub.get_default("func"), line
