"""Data path: iperf3 throughput through lowbridge's networks beside the same topology by hand.

    sudo .venv/bin/python bench/datapath.py [-n 7]      (-n: rounds; each test runs 2 s)

* bridge: two sandboxes on a lowbridge bridge network (its firewall rules and settings in
  place) vs two namespaces on a bridge built with `ip`, no firewall, in another simulated host;
* overlay: two sandboxes on a lowbridge overlay across two simulated hosts (etcd, VXLAN, MTU
  1450) vs the same topology built by hand (Docker's: per host a namespace with a bridge and the
  VXLAN device, the sandbox on a veth into it; no firewall), a bare VXLAN device in a namespace
  on each host (no bridge, no veth: what the topology itself costs), and the raw underlay.

Rounds alternate the variants; the table gives medians and ratios of the same rounds.
Needs iperf3 (scripts/bench installs it).  Results: bench/results/datapath.{json,md}.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time

SECONDS = "2"


def _iperf(host, server_ns: str | None, client_ns: str | None, address: str) -> float:  # noqa: ANN001
    """Gbit/s from client to server (iperf3 server started and stopped here)."""

    def wrap(ns: str | None, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv] if ns else argv

    server = host[0].popen(wrap(server_ns, ["iperf3", "-s", "-1"]), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.3)
    try:
        out = host[1].run(wrap(client_ns, ["iperf3", "-c", address, "-t", SECONDS, "-J"]))
    finally:
        server.kill()
        server.wait()
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def bridge_pair(rounds: int) -> dict:
    from lowbridge.simhost import SimHost

    with SimHost("dp-lb") as lb, SimHost("dp-ip") as raw:
        lb.lb("network", "create", "--subnet", "10.130.0.0/24", "dp")
        for name in ("a", "b"):
            lb.lb("container", "create", "--name", name, "--network", "dp")
        raw.run(
            "ip link add br0 type bridge && ip link set br0 up && "
            "for n in a b; do ip netns add $n; ip link add v$n type veth peer name eth0 netns $n;"
            " ip link set v$n master br0 up; ip -n $n link set lo up; ip -n $n link set eth0 up;"
            " done && ip -n a addr add 10.131.0.2/24 dev eth0 && "
            "ip -n b addr add 10.131.0.3/24 dev eth0"
        )
        out: dict = {"lowbridge bridge": [], "hand-built bridge": []}
        for _ in range(rounds):
            out["lowbridge bridge"].append(_iperf((lb, lb), "b", "a", "10.130.0.3"))
            out["hand-built bridge"].append(_iperf((raw, raw), "b", "a", "10.131.0.3"))
    return out


def overlay_pair(rounds: int) -> dict:
    from lowbridge.simcluster import Cluster

    with Cluster(2) as c:
        h1, h2 = c.hosts
        h1.lb("network", "create", "-d", "overlay", "--subnet", "10.140.0.0/24", "ov")
        h1.lb("container", "create", "--name", "a", "--network", "ov")
        h2.lb("container", "create", "--name", "b", "--network", "ov")
        h1.lb("network", "create", "poke")  # a mutation on h1 syncs its entries for b
        # Hand-built VXLAN between the same two hosts: one namespace each, VNI 42, MTU 1450.
        for i, h in ((1, h1), (2, h2)):
            peer = 3 - i
            h.run(
                f"ip netns add x && ip link add vx42 type vxlan id 42 dstport 4790 "
                f"local 10.200.0.{i} remote 10.200.0.{peer} && ip link set vx42 netns x && "
                f"ip -n x link set vx42 mtu 1450 up && ip -n x addr add 10.141.0.{i}/24 dev vx42"
            )
            # Docker's topology by hand: VNI 43 in a namespace with a bridge, a veth to "s".
            h.run(
                f"ip netns add o && ip netns add s && ip link add vx43 type vxlan id 43 "
                f"dstport 4791 local 10.200.0.{i} remote 10.200.0.{peer} && "
                f"ip link set vx43 netns o && ip -n o link add br0 mtu 1450 type bridge && "
                f"ip -n o link set vx43 mtu 1450 master br0 up && ip -n o link set br0 up && "
                f"ip -n o link add v0 mtu 1450 type veth peer name eth0 mtu 1450 netns s && "
                f"ip -n o link set v0 master br0 up && ip -n s link set eth0 up && "
                f"ip -n s addr add 10.142.0.{i}/24 dev eth0"
            )
        out: dict = {"lowbridge overlay": [], "hand-built overlay": [], "hand-built VXLAN": [],
                     "raw underlay": []}  # fmt: skip
        for _ in range(rounds):
            out["lowbridge overlay"].append(_iperf((h2, h1), "b", "a", "10.140.0.3"))
            out["hand-built overlay"].append(_iperf((h2, h1), "s", "s", "10.142.0.2"))
            out["hand-built VXLAN"].append(_iperf((h2, h1), "x", "x", "10.141.0.2"))
            out["raw underlay"].append(_iperf((h2, h1), None, None, "10.200.0.2"))
    return out


def main() -> int:
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
    from _common import measure, write

    args = measure(__doc__, lambda n: {}, 7, "rounds")
    if not shutil.which("iperf3"):
        sys.exit("missing iperf3: run scripts/bench (it installs it)")
    res = {**bridge_pair(args.n), **overlay_pair(args.n)}
    med = {k: round(statistics.median(v), 2) for k, v in res.items()}

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(res[a], res[b], strict=True)), 3)

    rows = [
        f"| lowbridge bridge | {med['lowbridge bridge']} | "
        f"{ratio('lowbridge bridge', 'hand-built bridge')} × hand-built bridge |",
        f"| hand-built bridge (ip, no firewall) | {med['hand-built bridge']} | 1 |",
        f"| lowbridge overlay | {med['lowbridge overlay']} | "
        f"{ratio('lowbridge overlay', 'hand-built overlay')} × hand-built overlay, "
        f"{ratio('lowbridge overlay', 'hand-built VXLAN')} × hand-built VXLAN |",
        f"| hand-built overlay (Docker's topology, no firewall) | {med['hand-built overlay']} | "
        f"{ratio('hand-built overlay', 'hand-built VXLAN')} × hand-built VXLAN |",
        f"| hand-built VXLAN (bare device) | {med['hand-built VXLAN']} | "
        f"{ratio('hand-built VXLAN', 'raw underlay')} × raw underlay |",
        f"| raw underlay (veth) | {med['raw underlay']} | 1 |",
    ]
    write(
        "datapath",
        f"Data path: iperf3 TCP, {SECONDS} s per test, median of {args.n} rounds, Gbit/s",
        "| path | Gbit/s | ratio (same rounds) |\n|---|---|---|",
        rows,
        {"rounds": args.n, "gbps": res},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
