"""Topology files at 500 sandboxes: ``apply``/``destroy`` beside the library's batch calls for
the same lab, and what a re-apply, a ``plan`` and an ``explain`` cost.

    sudo .venv/bin/python bench/labfile.py [-n 3]

The lab is examples/scale-500.yaml (10 networks, 500 sandboxes).  Each round builds and removes
it three times in one simulated host, taking turns: with the library (``network_create`` x 10,
one ``container_create_many``; ``container_rm_many``, ``network_rm`` x 10) in this process, its
imports already paid; with the same calls as a library script (a whole process each way,
imports included, as a user runs one); and with ``lowbridge apply -f`` / ``destroy -f`` (one
process each).  While the CLI's lab stands, the
round also times ``apply`` of the same file again (nothing to change), ``plan`` of it and of an
edited copy (one sandbox more), and ``explain`` between two sandboxes (5 runs each).
Results: bench/results/labfile.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(os.path.dirname(HERE), "examples", "scale-500.yaml")


def _library() -> tuple[float, float]:
    """Up and down with the library in this process (its imports already paid): seconds."""
    t = time.perf_counter()
    _library_up()
    up = time.perf_counter() - t
    t = time.perf_counter()
    _library_down()
    return up, time.perf_counter() - t


def _library_up() -> None:
    from lowbridge import ContainerRequest, Controller, NetworkRequest

    ctl = Controller()
    for i in range(10):
        ctl.network_create(NetworkRequest(name=f"net{i}", subnet=f"10.{120 + i}.0.0/16"))
    ctl.container_create_many(
        [ContainerRequest(name=f"s{i}", network=f"net{i % 10}") for i in range(500)]
    )


def _library_down() -> None:
    from lowbridge import Controller

    ctl = Controller()
    ctl.container_rm_many([f"s{i}" for i in range(500)])
    for i in range(10):
        ctl.network_rm(f"net{i}")


def _script(what: str) -> list[str]:
    """A library script as a user runs one: a whole process, its imports included."""
    code = f"import sys; sys.path.insert(0, {HERE!r}); import labfile; labfile._library_{what}()"
    return [sys.executable, "-c", code]


def _timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t


def inner(rounds: int) -> dict:
    lb = [sys.executable, "-m", "lowbridge"]
    edited = "/run/lowbridge-bench-edited.yaml"  # the simulated host's private /run
    with open(LAB) as f, open(edited, "w") as out:
        out.write(f.read() + "  extra: {networks: [net0]}\n")
    res: dict[str, list[float]] = {k: [] for k in (
        "library up", "library script up", "apply", "library down", "library script down",
        "destroy", "apply again (no change)",
        "plan (no change)", "plan (one sandbox more)", "explain")}  # fmt: skip
    for r in range(rounds):
        for side in ("library", "cli") if r % 2 == 0 else ("cli", "library"):
            if side == "library":
                up, down = _library()
                res["library up"].append(up)
                res["library down"].append(down)
                res["library script up"].append(_timed(_script("up")))
                res["library script down"].append(_timed(_script("down")))
                continue
            res["apply"].append(_timed([*lb, "apply", "-f", LAB]))
            for _ in range(5):
                res["apply again (no change)"].append(_timed([*lb, "apply", "-f", LAB]))
                res["plan (no change)"].append(_timed([*lb, "plan", "-f", LAB]))
                res["plan (one sandbox more)"].append(_timed([*lb, "plan", "-f", edited]))
                t = time.perf_counter()
                subprocess.run([*lb, "explain", "scale-s0-1", "s0-2"], capture_output=True)
                res["explain"].append(time.perf_counter() - t)
            res["destroy"].append(_timed([*lb, "destroy", "-f", LAB]))
    return {k: [round(x * 1000, 1) for x in v] for k, v in res.items()}


def main() -> int:
    sys.path.insert(0, HERE)
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 3, "rounds")
    res = run_inside(__file__, "-n", str(args.n))
    med = {k: statistics.median(v) for k, v in res.items()}
    rows = [f"| {k} | {v:.0f} |" for k, v in med.items()]
    rows.append("")
    rows.append("| ratio | value |")
    rows.append("|---|---|")
    ratios = {
        "apply / library up": med["apply"] / med["library up"],
        "destroy / library down": med["destroy"] / med["library down"],
        "apply / library script up": med["apply"] / med["library script up"],
        "destroy / library script down": med["destroy"] / med["library script down"],
    }
    rows += [f"| {k} | {v:.2f}× |" for k, v in ratios.items()]
    write(
        "labfile",
        f"Topology files at 500 sandboxes, medians of {args.n} rounds, ms",
        "| what | median ms |\n|---|---|",
        rows,
        {"ms": res, "ratios": {k: round(v, 3) for k, v in ratios.items()}},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
