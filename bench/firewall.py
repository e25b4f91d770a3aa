"""Cost of one firewall change with 1, 10 and 100 networks present, both backends, one run.

    sudo .venv/bin/python bench/firewall.py [-n 15]

A "change" is what a connect does: the full rule set is re-rendered with one more endpoint and
applied (iptables: one iptables-save + one iptables-restore for all tables; nftables: one
``nft -f`` transaction).  Runs inside a simulated host; the rules name bridges that need not
exist (the kernel matches interface names, it does not resolve them).  Results go to
bench/results/firewall.{json,md}; ratios against 1 network are what count.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = (1, 10, 100)
ROUNDS = 3


def _model(networks: int, extra: int):
    from lowbridge.firewall import rules as R

    nets, eps = [], []
    for i in range(networks):
        net = R.FwNetwork(f"n{i}", f"lb-{i:012d}", f"10.{i // 200}.{i % 200}.0/24")
        nets.append(net)
        eps += [R.FwEndpoint(f"10.{i // 200}.{i % 200}.{k}", net.name, net.device)
                for k in range(2, 4)]  # fmt: skip
    if networks:  # the new endpoints join the first network, made last (as the store orders)
        eps += [R.FwEndpoint(f"10.250.0.{k}", nets[0].name, nets[0].device)
                for k in range(10, 10 + extra)]  # fmt: skip
    return R.Model(nets, endpoints=tuple(eps))


def inner(n: int) -> dict:
    from lowbridge.firewall import Firewall

    out = {}
    for backend in ("iptables", "nftables"):
        fw = Firewall(backend, "/run/lowbridge")
        for k in range(1, 6):  # warm up: the backend's first uses (libraries, caches)
            fw.apply(_model(1, k))
        samples: dict[int, list[float]] = {size: [] for size in SIZES}
        # Rounds over the sizes, so that the VM's drift hits every size alike.
        for _ in range(ROUNDS):
            for size in SIZES:
                fw.apply(_model(size, 0))
                for k in range(1, n + 1):
                    model = _model(size, k)
                    t = time.perf_counter()
                    fw.apply(model)
                    samples[size].append(time.perf_counter() - t)
        for size in SIZES:
            out[f"{backend}, {size} networks"] = round(statistics.median(samples[size]) * 1000, 2)
        fw.apply(_model(0, 0))
    return out


def main() -> int:
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 10, "changes per case and round")

    results = run_inside(__file__, "-n", str(args.n))
    rows = []
    for key, value in results.items():
        base = results[key.split(",")[0] + ", 1 networks"]
        rows.append(f"| {key} | {value} | {round(value / base, 2)} |")
    write(
        "firewall",
        f"One firewall change (re-render + apply), median of {ROUNDS}x{args.n}, ms",
        "| backend, networks present | median ms | × same backend with 1 network |\n|---|---|---|",
        rows,
        {"n": args.n, "results_ms": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
