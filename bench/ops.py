"""``check`` and ``gc`` at N sandboxes (issue 16's targets: each <= 1 s on a clean host at 1000),
and the read-only ``network ls``/``ps`` beside them in the same host as the run's noise gauge.

    sudo .venv/bin/python bench/ops.py [-n 1000]

N sandboxes on 4 bridge networks, made with one ``container_create_many`` (a third of them
publish a port, so the firewall has per-sandbox rules to read back), in one simulated host per
backend.  Each command is a whole ``lowbridge`` process, timed 5 times.
Results: bench/results/ops.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

NETWORKS = 4
RUNS = 5


def inner(n: int) -> dict:
    from lowbridge.controller import ContainerRequest, Controller
    from lowbridge.drivers.base import NetworkRequest

    ctl = Controller()
    for i in range(NETWORKS):
        ctl.network_create(NetworkRequest(name=f"net{i}", subnet=f"10.{130 + i}.0.0/16"))
    reqs = [
        ContainerRequest(name=f"s{i}", network=f"net{i % NETWORKS}",
                         publish=[f"{20000 + i}:80"] if i % 3 == 0 else [])
        for i in range(n)
    ]  # fmt: skip
    ctl.container_create_many(reqs)
    lb = [sys.executable, "-m", "lowbridge"]
    out: dict[str, list[float]] = {}
    for argv in (["check"], ["gc"], ["network", "ls"], ["ps"]):
        times = []
        for _ in range(RUNS):
            t = time.perf_counter()
            proc = subprocess.run([*lb, *argv], capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
        out[" ".join(argv)] = [round(x * 1000, 1) for x in times]
    return out


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 1000, "sandboxes")
    rows, doc = [], {}
    for backend in ("nftables", "iptables"):
        os.environ["LOWBRIDGE_FIREWALL_BACKEND"] = backend
        res = run_inside(__file__, "-n", str(args.n))
        doc[backend] = res
        for what, times in res.items():
            rows.append(f"| {backend} | lowbridge {what} | {statistics.median(times):.0f} |")
    write(
        "ops",
        f"check and gc on a clean host of {args.n} sandboxes, median of {RUNS} runs, ms",
        "| backend | command | median ms |\n|---|---|---|",
        rows,
        {"n": args.n, "ms": doc},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
