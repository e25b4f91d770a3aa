"""Embedded DNS throughput: lowbridge's resolver beside aardvark-dns, in one simulated host.

Both serve the same names to a client sandbox on their own bridge network; dnsperf (Debian
``dnsperf``) runs inside the client and reports queries per second at saturation.  Three servers:

* lowbridge, fast wire path (the default);
* lowbridge, dnspython for every answer (``LOWBRIDGE_DNS_CODEC=library``): the library alone,
  which is why the fast path exists (shared/reference/dns-notes.md 3-4);
* aardvark-dns 1.4 (podman's resolver), set up by netavark exactly as podman does.

Each round runs the three back to back; the table gives medians and lowbridge/aardvark ratios of
the same rounds (these machines are noisy).
Usage: ``sudo .venv/bin/python bench/dns.py [-n ROUNDS]``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys

from _common import measure, run_inside, write

NAMES = 50  # names in each server's table
SECONDS = "6"  # dnsperf run length
NETAVARK, AARDVARK = "/usr/lib/podman/netavark", "/usr/lib/podman/aardvark-dns"


def sh(*argv: str, **kw) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode:
        sys.exit(f"{argv}: {proc.stderr.strip()}")
    return proc.stdout


WORK = "/run/lowbridge-bench-dns"  # the simulated host's private /run: gone with it


def dnsperf(ns: str, server: str, names: list[str]) -> float:
    path = f"{WORK}/dnsperf-{ns}.txt"
    with open(path, "w") as f:
        f.write("".join(f"{n} A\n" for n in names))
    out = sh("ip", "netns", "exec", ns, "dnsperf", "-s", server, "-d", path, "-l", SECONDS,
             "-c", "4", "-q", "50")  # fmt: skip
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if lost and int(lost.group(1)):
        print(f"warning: {ns}: {lost.group(1)} queries lost", file=sys.stderr)
    return float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))


def lowbridge(*args: str, env: dict | None = None) -> str:
    return sh(sys.executable, "-m", "lowbridge", *args, env={**os.environ, **(env or {})})


def setup_lowbridge(network: str, subnet: str, client: str, env: dict) -> list[str]:
    lowbridge("network", "create", "--subnet", subnet, network, env=env)
    names = []
    for i in range(NAMES // 2):
        lowbridge("container", "create", "--name", f"{network}-e{i}", "--network", network,
                  "--network-alias", f"{network}-alias{i}", env=env)  # fmt: skip
        names += [f"{network}-e{i}", f"{network}-alias{i}"]
    lowbridge("container", "create", "--name", client, "--network", network, env=env)
    return names


def setup_aardvark() -> tuple[str, list[str]]:
    """netavark's bridge + aardvark for a client netns, as podman does (dns_enabled)."""
    cfg = f"{WORK}/netavark"
    os.makedirs(cfg, exist_ok=True)
    sh("ip", "netns", "add", "aard-client")
    net = {
        "name": "aardnet", "id": "a" * 64, "driver": "bridge", "network_interface": "aardbr0",
        "subnets": [{"subnet": "10.89.3.0/24", "gateway": "10.89.3.1"}],
        "ipv6_enabled": False, "internal": False, "dns_enabled": True,
        "ipam_options": {"driver": "host-local"},
    }  # fmt: skip
    opts = {
        "container_id": "c" * 64, "container_name": "aard-client",
        "networks": {"aardnet": {"static_ips": ["10.89.3.2"], "interface_name": "eth0"}},
        "network_info": {"aardnet": net},
    }  # fmt: skip
    sh(NETAVARK, "--config", cfg, "-a", AARDVARK, "setup", "/run/netns/aard-client",
       input=json.dumps(opts))  # fmt: skip
    # The other names: records in aardvark's network file (id ipv4 ipv6 names), then SIGHUP.
    names, lines = [], []
    for i in range(NAMES // 2):
        names += [f"aard-e{i}", f"aard-alias{i}"]
        lines.append(f"{i:064x} 10.89.3.{10 + i}  aard-e{i},aard-alias{i}\n")
    with open(f"{cfg}/aardvark-dns/aardnet", "a") as f:
        f.writelines(lines)
    with open(f"{cfg}/aardvark-dns/aardvark.pid") as f:
        os.kill(int(f.read()), 1)
    return "10.89.3.1", names


def inner(rounds: int) -> dict:
    os.makedirs(WORK, exist_ok=True)
    setup_lowbridge("fastnet", "10.70.0.0/24", "fast-client", {})
    fast_names = [f"fastnet-e{i}" for i in range(NAMES // 2)]
    fast_names += [f"fastnet-alias{i}" for i in range(NAMES // 2)]
    # The library variant needs its own resolver process: a second state root.
    lib_env = {"LOWBRIDGE_ROOT": f"{WORK}/lib-root", "LOWBRIDGE_DNS_CODEC": "library"}
    lib_names = setup_lowbridge("libnet", "10.71.0.0/24", "lib-client", lib_env)
    aard_server, aard_names = setup_aardvark()
    out: dict[str, list[float]] = {"lowbridge": [], "lowbridge-library": [], "aardvark": []}
    for _ in range(rounds):
        out["lowbridge"].append(dnsperf("fast-client", "127.0.0.11", fast_names))
        out["lowbridge-library"].append(dnsperf("lib-client", "127.0.0.11", lib_names))
        out["aardvark"].append(dnsperf("aard-client", aard_server, aard_names))
    return out


def main() -> None:
    args = measure(__doc__, inner, 3, f"rounds (each: every server for {SECONDS} s)")
    missing = [t for t in ("dnsperf",) if not shutil.which(t)]
    missing += [p for p in (NETAVARK, AARDVARK) if not os.path.exists(p)]
    if missing:
        sys.exit(f"missing {missing}: apt-get install dnsperf netavark aardvark-dns")
    res = run_inside(__file__, "-n", str(args.n))
    aard = res["aardvark"]
    rows = []
    for name in ("lowbridge", "lowbridge-library", "aardvark"):
        q = res[name]
        ratio = statistics.median(a / b for a, b in zip(q, aard, strict=True))
        rows.append(f"| {name} | {statistics.median(q):,.0f} | {ratio:.2f} |")
    header = (
        f"dnsperf -c4 -q50 for {SECONDS} s inside a client sandbox, {NAMES} names, A queries; "
        f"{args.n} rounds.\n\n| server | median queries/s | ratio to aardvark-dns (same round) |\n"
        "|---|---|---|"
    )
    write("dns", "Embedded DNS: queries per second", header, rows, res)


if __name__ == "__main__":
    main()
