"""Per-endpoint attach/detach cost: lowbridge as a library call beside `ip -batch` and an `ip`
script, measured in the same run inside one simulated host (ratios are what count: the VM is
noisy).

    sudo .venv/bin/python bench/attach.py [-n 40]

"attach" = what a container waits for: a namespace, a veth whose peer is eth0 inside it, the host
end on the bridge and up, lo up, the address, eth0 up, the default route.  For lowbridge it is one
``Controller.container_create`` (which also validates, allocates the address, writes the sandbox's
/etc files and persists the store under the lock); "connect" is ``network_connect`` of an existing
sandbox to a second network.  Results go to bench/results/attach.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def inner(n: int) -> dict:
    """Runs inside the simulated host."""
    from lowbridge.controller import ContainerRequest, Controller
    from lowbridge.drivers.base import NetworkRequest

    ctl = Controller()
    ctl.network_create(NetworkRequest(name="bench", subnet="10.100.0.0/16"))
    ctl.network_create(NetworkRequest(name="bench2", subnet="10.101.0.0/16"))
    # An internal network has no per-endpoint rules: connecting to it is the kernel work of an
    # attach without a firewall change.
    ctl.network_create(NetworkRequest(name="bench3", subnet="10.103.0.0/16", internal=True))
    # Warm up (first use of the store, the default pools, imports).
    ctl.container_rm(ctl.container_create(ContainerRequest(name="warm", network="bench")).id)

    # The same topology by hand on a bridge lowbridge does not manage.
    subprocess.run(
        "ip link add hbr0 type bridge && ip addr add 10.102.0.1/16 dev hbr0 && ip link set hbr0 up",
        shell=True,
        check=True,
    )

    def ip_batch(i: int) -> None:
        ns, veth, ip = f"hb{i}", f"vhb{i}", f"10.102.{1 + i // 250}.{1 + i % 250}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        host_cmds = (
            f"link add {veth} type veth peer name eth0 netns {ns}\n"
            f"link set {veth} master hbr0\nlink set {veth} up\n"
        )
        subprocess.run(["ip", "-batch", "-"], input=host_cmds, text=True, check=True)
        ns_cmds = (
            f"link set lo up\naddr add {ip}/16 dev eth0\nlink set eth0 up\n"
            "route add default via 10.102.0.1\n"
        )
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=ns_cmds, text=True, check=True)

    def ip_batch_del(i: int) -> None:
        subprocess.run(["ip", "link", "del", f"vhb{i}"], check=True)
        subprocess.run(["ip", "netns", "del", f"hb{i}"], check=True)

    def ip_script(i: int) -> None:
        ns, veth, ip = f"hs{i}", f"vhs{i}", f"10.102.{100 + i // 250}.{1 + i % 250}"
        sh = (
            f"ip netns add {ns} && ip link add {veth} type veth peer name eth0 netns {ns} && "
            f"ip link set {veth} master hbr0 && ip link set {veth} up && "
            f"ip -n {ns} link set lo up && ip -n {ns} addr add {ip}/16 dev eth0 && "
            f"ip -n {ns} link set eth0 up && ip -n {ns} route add default via 10.102.0.1"
        )
        subprocess.run(["sh", "-c", sh], check=True)

    def ip_script_del(i: int) -> None:
        subprocess.run(["sh", "-c", f"ip link del vhs{i} && ip netns del hs{i}"], check=True)

    def timed(samples: list[float], fn, *args) -> None:  # noqa: ANN001
        t = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - t)

    journal = _journal_timer()
    # The variants take turns, sample by sample, so that the VM's drift hits them alike.
    create, connect, internal, remove = [], [], [], []
    batch, batch_del, script, script_del = [], [], [], []
    for i in range(n):
        timed(create, ctl.container_create, ContainerRequest(name=f"lb{i}", network="bench"))
        timed(batch, ip_batch, i)
        timed(script, ip_script, i)
    in_create, journal[:] = sum(journal), []
    for i in range(n):
        timed(connect, ctl.network_connect, "bench2", f"lb{i}")
        timed(internal, ctl.network_connect, "bench3", f"lb{i}")
    in_connect = sum(journal)
    for i in range(n):
        timed(remove, ctl.container_rm, f"lb{i}")
        timed(batch_del, ip_batch_del, i)
        timed(script_del, ip_script_del, i)
    dual = _dual_stack(ctl, n, timed)

    return {
        "lowbridge library: container create (netns + attach)": _ms(create),
        "lowbridge library: network connect (attach + firewall change)": _ms(connect),
        "lowbridge library: network connect, no firewall change (internal)": _ms(internal),
        "lowbridge library: container rm": _ms(remove),
        "ip -batch: attach (3 execs)": _ms(batch),
        "ip -batch: detach": _ms(batch_del),
        "ip script: attach (8 commands)": _ms(script),
        "ip script: detach": _ms(script_del),
        # The crash journal's own cost (its row written and committed before the first kernel
        # step; deleted in the commit's transaction), as a share of the attaches it served.
        "journal share of container create (%)": round(100 * in_create / sum(create), 2),
        "journal share of network connect (%)": round(
            100 * in_connect / sum(connect + internal), 2
        ),
        **dual,
    }


def _dual_stack(ctl, n: int, timed) -> dict:  # noqa: ANN001
    """Issue 20's row: a sandbox's create on a dual-stack network against the IPv4-only one, in
    turns, once the IPv4 rows are measured (so an IPv6 network's rules never weigh on them)."""
    try:
        from lowbridge.drivers.base import NetworkRequest

        req = NetworkRequest(name="bench6", subnet="10.104.0.0/16", subnet6="fd00:104::/64",
                             ipv6=True)  # fmt: skip
    except TypeError:  # a checkout from before IPv6 (bench/versus.py)
        return {}
    from lowbridge.controller import ContainerRequest

    ctl.network_create(req)
    four, six = [], []
    for i in range(n):
        timed(four, ctl.container_create, ContainerRequest(name=f"v4-{i}", network="bench"))
        timed(six, ctl.container_create, ContainerRequest(name=f"v6-{i}", network="bench6"))
    return {
        "lowbridge library: container create, IPv4 beside a dual-stack network": _ms(four),
        "lowbridge library: container create, dual stack": _ms(six),
        "dual-stack create / IPv4 create (x)": round(_ms(six) / _ms(four), 2),
    }


def _journal_timer() -> list[float]:
    """Time every journal write of the changes that follow (where the controller has one):
    the returned list receives each one's seconds."""
    spent: list[float] = []
    try:
        from lowbridge.controller.change import Change
    except ImportError:  # a checkout from before the journal (bench/versus.py)
        return spent
    write = Change.journal

    def timed(self, doc: dict) -> None:  # noqa: ANN001
        t = time.perf_counter()
        try:
            write(self, doc)
        finally:
            spent.append(time.perf_counter() - t)

    Change.journal = timed
    return spent


def main() -> int:
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 40, "endpoints per variant")

    results = run_inside(__file__, "-n", str(args.n))
    base = results["ip -batch: attach (3 execs)"]
    write(
        "attach",
        f"Per-endpoint attach/detach, median of {args.n}, ms (one run, same simulated host)",
        "| variant | median ms | × ip -batch attach |\n|---|---|---|",
        [
            f"| {k} | {v} | {'' if '%' in k or '(x)' in k else round(v / base, 2)} |"
            for k, v in results.items()
        ],  # fmt: skip
        {"n": args.n, "results_ms": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
