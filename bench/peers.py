"""Per-endpoint attach/detach of the peers, in the same kind of simulated host as lowbridge's.

Runs the ready-made peer scripts of shared/bench/peers/ (netavark 1.4 with and without
aardvark-dns, the CNI bridge plugin 1.1.1, an `ip` script, `ip -batch`) inside a throwaway
simulated host -- their `lab-host` namespace, /etc/netns files and firewall rules are the
simulated host's, gone with it -- and collects their RESULT lines.

    sudo .venv/bin/python bench/peers.py [-n 10]      (-n: endpoints per peer)

Needs Debian's netavark, aardvark-dns and containernetworking-plugins (scripts/bench installs
them).  Results: bench/results/peers.{json,md}.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "bench", "peers"))
RUNS = [
    ("netavark (DNS off)", "bench_netavark.sh", {"DNS": "0", "CAPTURE": "0"}),
    ("netavark + aardvark-dns", "bench_netavark.sh", {"DNS": "1", "CAPTURE": "0"}),
    ("CNI bridge plugin", "bench_cni.sh", {"MODE": "bridge", "CAPTURE": "0"}),
    ("ip script", "bench_ip.sh", {"MODE": "naive"}),
    ("ip -batch", "bench_ip.sh", {"MODE": "batch"}),
]
RESULT = re.compile(r"endpoints=(\d+) setup_median_ms=([\d.]+) teardown_median_ms=([\d.]+)")


def inner(n: int) -> dict:
    """Inside the simulated host: each peer in turn (they share lab-host, never in parallel)."""
    out = {}
    work = "/run/lowbridge-bench-peers"  # the simulated host's private /run
    os.makedirs(work, exist_ok=True)
    for label, script, env in RUNS:
        proc = subprocess.run(
            ["bash", os.path.join(PEERS, script), str(n)],
            env={**os.environ, **env, "OUT_DIR": work, "BENCH_DIR": PEERS},
            capture_output=True,
            text=True,
            timeout=1800,
        )
        found = [m for m in RESULT.finditer(proc.stdout) if int(m.group(1)) == n]
        if not found:
            out[label] = {"error": (proc.stdout + proc.stderr).strip().splitlines()[-3:]}
            continue
        m = found[-1]
        out[label] = {"attach_ms": float(m.group(2)), "detach_ms": float(m.group(3))}
        subprocess.run(["bash", os.path.join(PEERS, "cleanup.sh")], capture_output=True,
                       env={**os.environ, "OUT_DIR": work, "BENCH_DIR": PEERS})  # fmt: skip
    return out


def main() -> int:
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 10, "endpoints per peer")
    missing = [t for t in ("/usr/lib/podman/netavark", "/usr/lib/cni/bridge") if not
               os.path.exists(t)] + [t for t in ("iptables",) if not shutil.which(t)]  # fmt: skip
    if missing:
        sys.exit(f"missing {missing}: run scripts/bench (it installs the peers)")
    res = run_inside(__file__, "-n", str(args.n))
    rows = []
    for label, doc in res.items():
        if "error" in doc:
            rows.append(f"| {label} | failed: {' / '.join(doc['error'])} | |")
        else:
            rows.append(f"| {label} | {doc['attach_ms']} | {doc['detach_ms']} |")
    write(
        "peers",
        f"Peers: per-endpoint attach/detach, medians over {args.n} endpoints, ms",
        "| peer | attach ms | detach ms |\n|---|---|---|",
        rows,
        {"n": args.n, "results": res},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
