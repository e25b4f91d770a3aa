"""Cost of one firewall change with 1, 10 and 100 networks present, both backends, one run.

    sudo .venv/bin/python bench/firewall.py [-n 15]

A "change" is what a create or connect does to the firewall: the store's records (networks with
two sandboxes each, plus one more sandbox per change) turned into the rules' model, the rules
rendered and applied (iptables: one iptables-restore for all tables; nftables: one libnftables
transaction).  Runs inside a simulated host; the rules name bridges that need not
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


def _records(networks: int, dual: bool = False) -> tuple[list, list, list]:
    """Store records: ``networks`` bridge networks with two sandboxes each (``dual``: with IPv6
    too, issue 20)."""
    from lowbridge import ipam
    from lowbridge.models import Container, Endpoint, Network

    nets, ctrs, eps = [], [], []
    for i in range(networks):
        subnet = f"10.{i // 200}.{i % 200}.0/24"
        pool = ipam.plan_pool(subnet=subnet, gateway=None, ip_range=None, aux_addresses=None,
                              taken=[])  # fmt: skip
        pool6 = None
        if dual:
            pool6 = ipam.plan_pool(subnet=f"fd00:{i:x}::/64", gateway=None, ip_range=None,
                                   aux_addresses=None, taken=[], version=6)  # fmt: skip
        extra = {"pool6": pool6} if dual else {}
        net = Network(id=f"{i:064d}", name=f"n{i}", driver="bridge", pool=pool,
                      device=f"lb-{i:012d}", **extra)  # fmt: skip
        nets.append(net)
        for k in range(2, 4):
            ctr = Container(id=f"{i:032d}{k:032d}", name=f"c{i}-{k}", netns=f"/run/netns/c{i}-{k}")
            ctrs.append(ctr)
            six = {"ip6": f"fd00:{i:x}::{k}"} if dual else {}
            eps.append(Endpoint(id=ctr.id, network_id=net.id, container_id=ctr.id, ifname="eth0",
                                ip=f"10.{i // 200}.{i % 200}.{k}", **six))  # fmt: skip
    return nets, ctrs, eps


def _grow(records: tuple[list, list, list], k: int) -> None:
    """One more sandbox on the first network (the store lists it last)."""
    from lowbridge.models import Container, Endpoint

    nets, ctrs, eps = records
    ctr = Container(id=f"new{k:061d}", name=f"new{k}", netns=f"/run/netns/new{k}")
    ctrs.append(ctr)
    six = {"ip6": f"fd00::{k + 16:x}"} if getattr(nets[0], "pool6", None) else {}
    eps.append(Endpoint(id=ctr.id, network_id=nets[0].id, container_id=ctr.id, ifname="eth0",
                        ip=f"10.250.{k // 250}.{k % 250 + 2}", **six))  # fmt: skip


def inner(n: int) -> dict:
    from lowbridge.firewall import Firewall
    from lowbridge.models import View

    def model(nets: list, ctrs: list, eps: list):  # noqa: ANN202
        return fw.model(View(nets, ctrs, eps))

    try:  # a checkout from before IPv6 (bench/versus.py) has IPv4 rows only
        _records(1, dual=True)
        kinds = ((False, "networks"), (True, "dual-stack networks"))
    except TypeError:
        kinds = ((False, "networks"),)
    out = {}
    for dual, label in kinds:
        for backend in ("iptables", "nftables"):
            fw = Firewall(backend, "/run/lowbridge")
            warm = _records(1, dual)
            for k in range(5):  # warm up: the backend's first uses (libraries, caches)
                _grow(warm, k)
                fw.apply(model(*warm))
            samples: dict[int, list[float]] = {size: [] for size in SIZES}
            # Rounds over the sizes, so that the VM's drift hits every size alike.
            for _ in range(ROUNDS):
                for size in SIZES:
                    records = _records(size, dual)
                    fw.apply(model(*records))
                    for k in range(n):
                        _grow(records, k)
                        t = time.perf_counter()
                        fw.apply(model(*records))
                        samples[size].append(time.perf_counter() - t)
            for size in SIZES:
                median = statistics.median(samples[size]) * 1000
                out[f"{backend}, {size} {label}"] = round(median, 2)
            fw.apply(model([], [], []))
    return out


def main() -> int:
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 10, "changes per case and round")

    results = run_inside(__file__, "-n", str(args.n))
    rows = []
    for key, value in results.items():
        backend, _, rest = key.partition(", ")
        base = results[f"{backend}, 1 {rest.split(' ', 1)[1]}"]
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
