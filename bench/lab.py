"""A lab of N sandboxes on 10 networks, built and torn down end to end (library, then CLI).

    sudo .venv/bin/python bench/lab.py [-n 500]

"Up" is: 10 bridge networks, then N sandboxes spread over them; "down" removes the sandboxes
and the networks.  The library builds the sandboxes with one ``container_create_many`` and
removes them with one ``container_rm_many``; the CLI creates each with its own
``lowbridge container create`` and removes them with one ``lowbridge rm``.  The library run
uses one Controller in one process; the CLI run one ``lowbridge`` process per command, as a
shell script would.  Each run gets a simulated host of its own.
Results: bench/results/lab.{json,md}.
"""

from __future__ import annotations

import subprocess
import sys
import time

NETWORKS = 10


def _library(n: int) -> dict:
    from lowbridge.controller import ContainerRequest, Controller
    from lowbridge.drivers.base import NetworkRequest

    ctl = Controller()
    t = time.perf_counter()
    for i in range(NETWORKS):
        ctl.network_create(NetworkRequest(name=f"net{i}", subnet=f"10.{120 + i}.0.0/16"))
    # One change for all of them (container_create_many), as a lab script would ask for.
    ctl.container_create_many(
        [ContainerRequest(name=f"s{i}", network=f"net{i % NETWORKS}") for i in range(n)]
    )
    up = time.perf_counter() - t
    t = time.perf_counter()
    ctl.container_rm_many([f"s{i}" for i in range(n)])  # as `docker rm` of them all would
    for i in range(NETWORKS):
        ctl.network_rm(f"net{i}")
    return {"up_s": round(up, 2), "down_s": round(time.perf_counter() - t, 2)}


def _cli(n: int) -> dict:
    lb = [sys.executable, "-m", "lowbridge"]

    def run(*args: str) -> None:
        subprocess.run([*lb, *args], check=True, capture_output=True)

    t = time.perf_counter()
    for i in range(NETWORKS):
        run("network", "create", "--subnet", f"10.{120 + i}.0.0/16", f"net{i}")
    for i in range(n):
        run("container", "create", "--name", f"s{i}", "--network", f"net{i % NETWORKS}")
    up = time.perf_counter() - t
    t = time.perf_counter()
    run("rm", *[f"s{i}" for i in range(n)])  # one command for all, as `docker rm` allows
    run("network", "rm", *[f"net{i}" for i in range(NETWORKS)])
    return {"up_s": round(up, 2), "down_s": round(time.perf_counter() - t, 2)}


def inner(arg: int) -> dict:
    """``arg`` = N for the library run, -N for the CLI run (one simulated host each)."""
    return _library(arg) if arg > 0 else _cli(-arg)


def main() -> int:
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 500, "sandboxes")
    lib = run_inside(__file__, "-n", str(args.n))
    cli = run_inside(__file__, "-n", str(-args.n))
    rows = [
        f"| library (one process) | {lib['up_s']} | {lib['down_s']} |"
        f" {round(lib['up_s'] * 1000 / args.n, 1)} |",
        f"| CLI (a process per command) | {cli['up_s']} | {cli['down_s']} |"
        f" {round(cli['up_s'] * 1000 / args.n, 1)} |",
    ]
    write(
        "lab",
        f"A lab of {args.n} sandboxes on {NETWORKS} networks, seconds",
        "| how | up s | down s | ms per sandbox up |\n|---|---|---|---|",
        rows,
        {"n": args.n, "library": lib, "cli": cli},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
