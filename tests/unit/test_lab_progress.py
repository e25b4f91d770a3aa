"""apply/destroy's progress: a bar (rich) on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from lowbridge.lab.progress import Progress


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    with Progress(out) as p:
        assert not p.bar  # a StringIO is no terminal
        p.phase("create sandboxes", 2)
        p.step("a")
        p.step("b")
        p.say("done")
    assert out.getvalue().splitlines() == [
        "create sandboxes: 2",
        "  create sandboxes: a",
        "  create sandboxes: b",
        "done",
    ]


def test_a_bar_counts_every_step():
    out = io.StringIO()
    with Progress(out, bar=True) as p:
        p.phase("remove sandboxes", 3)
        for name in "abc":
            p.step(name)
        task = p._rich.tasks[0]
        assert (task.completed, task.total, task.description) == (3, 3, "remove sandboxes")
        p.say("summary")
    assert "summary" in out.getvalue() and "  remove sandboxes: a" not in out.getvalue()
