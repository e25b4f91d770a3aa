"""``lowbridge demo``: Docker's "Networking with standalone containers" tutorial, user-defined
bridge part, rebuilt by lowbridge inside a throwaway simulated host.

alpine1, alpine2 and alpine4 join ``alpine-net``; alpine3 and alpine4 join the default ``bridge``;
then every sandbox pings every address and the result is printed as a table.  Docker's tutorial
finds: the members of alpine-net reach each other, alpine3 reaches only alpine4 (over the default
bridge), and alpine4, on both networks, reaches everyone.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor

from lowbridge.output import table

SANDBOXES = (
    ("alpine1", ["alpine-net"]),
    ("alpine2", ["alpine-net"]),
    ("alpine3", ["bridge"]),
    ("alpine4", ["alpine-net", "bridge"]),
)


def main(keep: bool = False) -> int:
    if os.geteuid() != 0:
        print("lowbridge demo: needs root (it builds network namespaces)", file=sys.stderr)
        return 1
    from lowbridge.simhost import SimHost

    with SimHost("demo") as host:

        def lb(*args: str) -> str:
            print("$ lowbridge " + shlex.join(args))
            return host.lb(*args).stdout

        print("A throwaway simulated host (its own network, mount and PID namespaces) is up.\n")
        lb("network", "create", "--driver", "bridge", "alpine-net")
        for name, nets in SANDBOXES:
            lb("run", "-d", "--name", name, "--network", nets[0], "--", "sleep", "infinity")
            for extra in nets[1:]:
                lb("network", "connect", extra, name)
        print()
        print(lb("network", "ls"))
        print(lb("ps"))

        targets = []  # (label, address)
        for name, _ in SANDBOXES:
            doc = json.loads(host.lb("inspect", name).stdout)[0]
            for net, settings in doc["NetworkSettings"]["Networks"].items():
                targets.append((f"{name}@{net}", settings["IPAddress"]))
        print("Who can ping whom (one ICMP echo, 1 s timeout):")
        print(
            table(
                ["FROM \\ TO"] + [f"{label} {ip}" for label, ip in targets], _matrix(host, targets)
            )
        )
        print("\nAs in Docker's tutorial: alpine-net members reach each other; the default bridge")
        print("and alpine-net do not reach each other; alpine4, on both, reaches everyone.")
        if keep:
            print(f"\nkept: nsenter -t {host.pid} -n -m -p sh  (Enter to clean up) ", end="")
            sys.stdin.readline()  # end of input cleans up too
    print("\nThe simulated host and everything in it are gone.")
    return 0


def _matrix(host, targets: list[tuple[str, str]]) -> list[list[str]]:  # noqa: ANN001
    def probe(src: str, ip: str) -> str:
        argv = ["ip", "netns", "exec", src, "ping", "-n", "-c1", "-W1", ip]
        return "yes" if host.run(argv, check=False).returncode == 0 else "no"

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = []
        for src, _ in SANDBOXES:
            cells = [pool.submit(probe, src, ip) for _, ip in targets]
            rows.append([src] + [c.result() for c in cells])
    return rows
