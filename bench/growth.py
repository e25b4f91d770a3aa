"""Attach cost as one bridge fills up: endpoints 1, 10, 100 and 1000 (the kernel stops at 1023).

    sudo .venv/bin/python bench/growth.py [-n 1000]

Each sample is the median ``container create`` time of the 5 endpoints around that position
(library call, one simulated host).  Results: bench/results/growth.{json,md}.
"""

from __future__ import annotations

import statistics
import sys
import time

POINTS = (1, 10, 100, 1000)


def inner(n: int) -> dict:
    from lowbridge.controller import ContainerRequest, Controller
    from lowbridge.drivers.base import NetworkRequest

    ctl = Controller()
    ctl.network_create(NetworkRequest(name="grow", subnet="10.150.0.0/16"))
    times = []
    for i in range(n):
        t = time.perf_counter()
        ctl.container_create(ContainerRequest(name=f"g{i}", network="grow"))
        times.append(time.perf_counter() - t)
    out = {}
    for p in POINTS:
        if p <= n:
            window = times[max(0, p - 3) : p + 2]
            out[str(p)] = round(statistics.median(window) * 1000, 2)
    return out


def main() -> int:
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 1000, "endpoints")
    res = run_inside(__file__, "-n", str(args.n))
    first = res["1"]
    write(
        "growth",
        "Attach cost by endpoint position on one bridge (library), ms",
        "| endpoint | median ms | × endpoint 1 |\n|---|---|---|",
        [f"| {k} | {v} | {round(v / first, 2)} |" for k, v in res.items()],
        {"n": args.n, "ms": res},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
