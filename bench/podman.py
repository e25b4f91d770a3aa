"""Podman ``run`` to first ping on lowbridge's CNI plugin against Podman's own network stack
(netavark 1.4 + aardvark-dns), in the same run (issue 23: goal <= 1.0x).

    sudo .venv/bin/python bench/podman.py [-n 15]

Three simulated hosts, each with Debian's podman 4.3 (lowbridge.simpodman): the CNI backend
with a ``lowbridge`` network (the plugin as ``lowbridge plugin cni`` installs it); the netavark
backend with a ``podman network create``'d network (DNS on, as podman makes it); and, for
reference, the CNI backend with podman's own CNI network (the reference plugins).  On each, one
container sleeps on the network; then, rotating between the hosts, N rounds of ``podman run
--network NET IMAGE ping -c1 PEER``, timed from the start of ``podman run`` to the ping's
answer on its output (the network's setup, the container's start and the first echo; its
teardown is not timed: the container is removed after).  The peer is pinged by address, so
DNS is not in it.  Results: bench/results/podman.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402,F401 - lowbridge on the path

from lowbridge.simhost import SimHost  # noqa: E402
from lowbridge.simpodman import IMAGE, Podman, missing  # noqa: E402

SUBNET = "10.89.40.0/24"  # (not in podman's default 10.88.0.0/16)


def first_ping(pm: Podman, name: str, peer: str) -> float:
    """ms from ``podman run`` to the first echo reply it prints."""
    argv = pm.host.argv(["podman", "run", "--name", name, "--network", "net", IMAGE,
                         "ping", "-c1", "-W5", peer])  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=pm.env, stdout=subprocess.PIPE, text=True)
    took = None
    for line in proc.stdout:
        if "bytes from" in line and took is None:
            took = (time.perf_counter() - start) * 1000
    proc.wait()
    pm.run("rm", "-f", name)
    if took is None:
        raise RuntimeError(f"{pm.backend}: no answer from {peer}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=15, help="rounds per backend")
    args = parser.parse_args()
    if missing():
        sys.exit(f"missing Debian packages {missing()}: apt-get install them")
    with contextlib.ExitStack() as stack:
        stacks = {}
        for key, backend in (("lowbridge", "cni"), ("netavark", "netavark"),
                             ("cni-bridge", "cni")):  # fmt: skip
            host = stack.enter_context(SimHost(f"bench-{key}", lowbridge=key == "lowbridge"))
            pm = stacks[key] = Podman(host, backend)
            stack.callback(pm.close)
            if key == "lowbridge":
                pm.conflist("net", subnet=SUBNET)
            else:  # podman's own: netavark, or the CNI reference plugins' bridge chain
                pm.run("network", "create", "--subnet", SUBNET, "net")
        peers = {}
        for key, pm in stacks.items():
            pm.run("run", "-d", "--name", "peer", "--network", "net", IMAGE, "sleep", "3600")
            doc = json.loads(pm.run("inspect", "peer").stdout)[0]
            peers[key] = doc["NetworkSettings"]["Networks"]["net"]["IPAddress"]
        times: dict[str, list[float]] = {key: [] for key in stacks}
        order = list(stacks)
        for i in range(args.n + 1):  # the first round warms every stack up and is not counted
            for key in order[i % 3 :] + order[: i % 3]:
                took = first_ping(stacks[key], f"r{i}", peers[key])
                if i:
                    times[key].append(round(took, 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {k: statistics.median(a / b for a, b in zip(times[k], times["netavark"], strict=True))
              for k in ("lowbridge", "cni-bridge")}  # fmt: skip
    rows = [
        f"| lowbridge's CNI plugin (as `plugin cni` installs it) | {med['lowbridge']:.0f} | "
        f"{ratios['lowbridge']:.2f}x |",
        f"| netavark 1.4 + aardvark-dns (podman's own) | {med['netavark']:.0f} | 1.00x |",
        f"| CNI reference plugins 1.1 (bridge, portmap, firewall, tuning) | "
        f"{med['cni-bridge']:.0f} | {ratios['cni-bridge']:.2f}x |",
    ]
    _common.write(
        "podman",
        f"Podman 4.3 run to first ping, lowbridge's CNI plugin vs netavark, median of {args.n}"
        " alternating rounds, ms",
        "| network stack | median ms | / netavark (median of the rounds' ratios) |\n|---|---|---|",
        rows,
        {"n": args.n, "ms": times, "ratio": ratios["lowbridge"], "ratios": ratios},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
