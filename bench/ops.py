"""``check`` and ``gc`` at N sandboxes (issue 16's targets: each <= 1 s on a clean host at 1000),
the read-only ``network ls``/``ps``/``ps -a`` beside them (issue 19: ``ps -a`` <= 150 ms at
1000), and one more sandbox's ``container create`` against its ``stop`` + ``start`` (issue 19:
<= 2x), in the same host.

    sudo .venv/bin/python bench/ops.py [-n 1000]

N sandboxes on 4 bridge networks, made with one ``container_create_many`` (a third of them
publish a port, so the firewall has per-sandbox rules to read back), in one simulated host per
backend.  Each command is a whole ``lowbridge`` process, timed 5 times; a sandbox's life 15
times (create, then stop + start: each round's ratio, their median).
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
LIVES = 15  # a sandbox's life: ~2 % of noise on ~125 ms per command here needs more rounds


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

    def timed(argv: list[str]) -> float:
        t = time.perf_counter()
        proc = subprocess.run([*lb, *argv], capture_output=True, text=True)
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
        return round((time.perf_counter() - t) * 1000, 1)

    for argv in (["check"], ["gc"], ["network", "ls"], ["ps"], ["ps", "-a"]):
        out[" ".join(argv)] = [timed(argv) for _ in range(RUNS)]
    for key in ("container create", "stop + start"):
        out[key] = []
    for i in range(LIVES):
        name = f"life{i}"
        out["container create"].append(timed(["container", "create", "--name", name,
                                              "--network", "net0"]))  # fmt: skip
        out["stop + start"].append(timed(["stop", name]) + timed(["start", name]))
        timed(["rm", "-f", name])
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
        # Each round's own ratio (its create and its stop + start ran back to back), their median.
        ratio = statistics.median(
            a / b for a, b in zip(res["stop + start"], res["container create"], strict=True)
        )
        rows.append(f"| {backend} | stop + start / create (median of the rounds' ratios) | "
                    f"{ratio:.2f}x |")  # fmt: skip
    write(
        "ops",
        f"check, gc, the lists and a sandbox's life on a clean host of {args.n} sandboxes, "
        f"median of {RUNS} runs ({LIVES} for a sandbox's life), ms",
        "| backend | command | median ms |\n|---|---|---|",
        rows,
        {"n": args.n, "ms": doc},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
