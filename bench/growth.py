"""Attach cost as one bridge fills up: endpoints 1, 10, 100 and 1000 (the kernel stops at 1023).

    sudo .venv/bin/python bench/growth.py [-n 1000]

Each sample is the median ``container create`` time of the 5 endpoints around that position
(library call, one simulated host); beside it the median ``container rm`` of one sandbox with
10 and with all of them present.  Beside it, in a simulated host of its own, the same
topology built with ``ip -batch`` (as bench/attach.py does): how much of the growth is the
kernel's, which every tool pays.  Results: bench/results/growth.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

POINTS = (1, 10, 100, 1000)


def _windows(times: list[float]) -> dict:
    out = {}
    for p in POINTS:
        if p <= len(times):
            window = times[max(0, p - 3) : p + 2]
            out[str(p)] = round(statistics.median(window) * 1000, 2)
    return out


def inner(n: int) -> dict:
    if os.environ.get("GROWTH_MODE") == "ip":
        return _windows(_ip_batch(n))
    from lowbridge.controller import ContainerRequest, Controller
    from lowbridge.drivers.base import NetworkRequest

    ctl = Controller()
    ctl.network_create(NetworkRequest(name="grow", subnet="10.150.0.0/16"))

    def rm_ms(names: list[str]) -> float:
        took = []
        for name in names:
            t = time.perf_counter()
            ctl.container_rm(name)
            took.append(time.perf_counter() - t)
        return round(statistics.median(took) * 1000, 2)

    times, rm = [], {}
    for i in range(n):
        if i == 10:  # rm with 10 sandboxes present (5 made for it, so the count stays)
            for k in range(5):
                ctl.container_create(ContainerRequest(name=f"x{k}", network="grow"))
            rm["10"] = rm_ms([f"x{k}" for k in range(5)])
        t = time.perf_counter()
        ctl.container_create(ContainerRequest(name=f"g{i}", network="grow"))
        times.append(time.perf_counter() - t)
    rm[str(n)] = rm_ms([f"g{i}" for i in range(n - 1, n - 6, -1)])
    return {**_windows(times), "rm": rm}


def _ip_batch(n: int) -> list[float]:
    subprocess.run(
        "ip link add hbr0 type bridge && ip addr add 10.150.0.1/16 dev hbr0 && ip link set hbr0 up",
        shell=True,
        check=True,
    )
    times = []
    for i in range(n):
        ns, veth, ip = f"hb{i}", f"vhb{i}", f"10.150.{1 + i // 250}.{1 + i % 250}"
        t = time.perf_counter()
        subprocess.run(["ip", "netns", "add", ns], check=True)
        host = f"link add {veth} type veth peer name eth0 netns {ns}\nlink set {veth} master hbr0\n"
        subprocess.run(["ip", "-batch", "-"], input=host + f"link set {veth} up\n", text=True,
                       check=True)  # fmt: skip
        inside = (f"link set lo up\naddr add {ip}/16 dev eth0\nlink set eth0 up\n"
                  "route add default via 10.150.0.1\n")  # fmt: skip
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=inside, text=True, check=True)
        times.append(time.perf_counter() - t)
    return times


def main() -> int:
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 1000, "endpoints")
    res = run_inside(__file__, "-n", str(args.n))
    os.environ["GROWTH_MODE"] = "ip"
    ref = run_inside(__file__, "-n", str(args.n))
    del os.environ["GROWTH_MODE"]
    rm = res.pop("rm")
    first, ref_first = res["1"], ref["1"]
    write(
        "growth",
        "Attach cost by endpoint position on one bridge (library; ip -batch in its own host), ms",
        "| endpoint | lowbridge ms | × endpoint 1 | ip -batch ms | × endpoint 1 |\n"
        "|---|---|---|---|---|",
        [
            f"| {k} | {v} | {round(v / first, 2)} | {ref[k]} | {round(ref[k] / ref_first, 2)} |"
            for k, v in res.items()
        ]
        + ["", "| sandboxes present | lowbridge rm ms (library, one sandbox) |", "|---|---|"]
        + [f"| {k} | {v} |" for k, v in rm.items()],  # fmt: skip
        {"n": args.n, "ms": res, "ip_batch_ms": ref, "rm_ms": rm},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
