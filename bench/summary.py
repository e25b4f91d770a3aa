"""One table from the latest results of every benchmark (bench/results/*.json).

    .venv/bin/python bench/summary.py        (scripts/bench runs it last)

Each ratio compares numbers measured in the same benchmark run (the same simulated host or the
same rounds): lowbridge against `ip -batch`, its peers against their own `ip -batch`, throughput
against the hand-built path, and so on.  Writes bench/results/README.md.
"""

from __future__ import annotations

import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def _load(name: str) -> dict | None:
    try:
        with open(os.path.join(RESULTS, f"{name}.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def rows() -> list[tuple[str, str, str, str]]:
    """(case, measured, compared with, ratio) rows for whatever results exist."""
    out = []
    if attach := _load("attach"):
        r = attach["results_ms"]
        attach_ms, detach_ms = r["ip -batch: attach (3 execs)"], r["ip -batch: detach"]
        for key, label, base, what in (
            ("lowbridge library: container create (netns + attach)", "attach: library create",
             attach_ms, "attach"),
            ("lowbridge library: network connect (attach + firewall change)",
             "attach: library connect", attach_ms, "attach"),
            ("lowbridge library: container rm", "detach: library rm", detach_ms, "detach"),
        ):  # fmt: skip
            out.append((label, f"{r[key]} ms", f"ip -batch {what} {base} ms",
                        f"{r[key] / base:.2f}×"))  # fmt: skip
    if peers := _load("peers"):
        res = peers["results"]
        base = res.get("ip -batch", {}).get("attach_ms")
        for label, doc in res.items():
            if "attach_ms" in doc and base:
                ms = doc["attach_ms"]
                out.append((f"attach: {label}", f"{ms} ms", f"ip -batch attach {base} ms",
                            f"{ms / base:.2f}×"))  # fmt: skip
    if cli := _load("cli"):
        w = cli["wall_ms"]
        pyroute2 = w["python -c 'import pyroute2'"]
        own = w["lowbridge's own share of a mutating command"]
        out.append(("CLI: network connect", f"{w['lowbridge network connect (CLI)']} ms",
                    f"import pyroute2 {pyroute2} ms", f"own share {own} ms"))  # fmt: skip
        if (strict := w.get("the same, against import lowbridge.kernel.rtnl")) is not None:
            base = w["python -c 'import lowbridge.kernel.rtnl'"]
            cli_ms = w["lowbridge network connect (CLI)"]
            vs = f"import lowbridge.kernel.rtnl {base} ms"
            out.append(("CLI: network connect", f"{cli_ms} ms", vs, f"own share {strict} ms"))
        out.append(("CLI: network ls", f"{w['lowbridge network ls']} ms",
                    f"python -c pass {w['python -c pass']} ms", ""))  # fmt: skip
    if growth := _load("growth"):
        ms = growth["ms"]
        last = max(ms, key=int)
        out.append((f"growth: attach at endpoint {last}", f"{ms[last]} ms",
                    f"endpoint 1: {ms['1']} ms", f"{ms[last] / ms['1']:.2f}×"))  # fmt: skip
        if ref := growth.get("ip_batch_ms"):
            out.append((f"growth: ip -batch at endpoint {last}", f"{ref[last]} ms",
                        f"endpoint 1: {ref['1']} ms", f"{ref[last] / ref['1']:.2f}×"))  # fmt: skip
        if rm := growth.get("rm_ms"):
            most = max(rm, key=int)
            out.append((f"growth: rm with {most} sandboxes", f"{rm[most]} ms",
                        f"with 10: {rm['10']} ms", f"{rm[most] / rm['10']:.2f}×"))  # fmt: skip
    if fw := _load("firewall"):
        r = fw["results_ms"]
        for backend in ("iptables", "nftables"):
            one, hundred = r.get(f"{backend}, 1 networks"), r.get(f"{backend}, 100 networks")
            if one and hundred:
                out.append((f"firewall change, 100 networks ({backend})", f"{hundred} ms",
                            f"1 network {one} ms", f"{hundred / one:.2f}×"))  # fmt: skip
    if lab := _load("lab"):
        for how in ("library", "cli"):
            doc = lab[how]
            out.append((f"lab of {lab['n']} sandboxes ({how})", f"up {doc['up_s']} s",
                        f"down {doc['down_s']} s", ""))  # fmt: skip
    if ops := _load("ops"):
        for backend, res in ops["ms"].items():
            ls = statistics.median(res["network ls"])
            for what in ("check", "gc"):
                ms = statistics.median(res[what])
                out.append((f"{what} at {ops['n']} sandboxes ({backend})", f"{ms:.0f} ms",
                            f"network ls {ls:.0f} ms", f"{ms / ls:.1f}×"))  # fmt: skip
            ss, made = res["stop + start"], res["container create"]
            life = statistics.median(a / b for a, b in zip(ss, made, strict=True))
            out.append((f"stop + start at {ops['n']} sandboxes ({backend})",
                        f"{statistics.median(ss):.0f} ms",
                        f"container create {statistics.median(made):.0f} ms (goal 2×)",
                        f"{life:.2f}×"))  # fmt: skip
    if dp := _load("datapath"):
        g = dp["gbps"]

        def ratio(a: str, b: str) -> float:
            return statistics.median(x / y for x, y in zip(g[a], g[b], strict=True))

        pairs = [("lowbridge bridge", "hand-built bridge"),
                 ("lowbridge overlay", "hand-built overlay"),
                 ("lowbridge overlay", "hand-built VXLAN")]  # fmt: skip
        for a, b in (p for p in pairs if p[1] in g):  # older results lack "hand-built overlay"
            mine, theirs = statistics.median(g[a]), statistics.median(g[b])
            out.append((f"data path: {a}", f"{mine:.2f} Gbit/s", f"{b} {theirs:.2f} Gbit/s",
                        f"{ratio(a, b):.3f}×"))  # fmt: skip
    if dns := _load("dns"):
        q = {k: statistics.median(v) for k, v in dns.items() if isinstance(v, list)}
        r = statistics.median(a / b for a, b in zip(dns["lowbridge"], dns["aardvark"], strict=True))
        out.append(("DNS queries/s", f"{q['lowbridge']:,.0f}", f"aardvark-dns {q['aardvark']:,.0f}",
                    f"{r:.2f}×"))  # fmt: skip
    if pod := _load("podman"):
        med = {k: statistics.median(v) for k, v in pod["ms"].items()}
        out.append(("podman run to first ping, lowbridge CNI plugin",
                    f"{med['lowbridge']:.0f} ms", f"netavark {med['netavark']:.0f} ms (goal 1×)",
                    f"{pod['ratio']:.2f}×"))  # fmt: skip
    if conv := _load("convergence"):
        p99 = conv["up_p99_s"]
        out.append((f"cluster of {conv['hosts']}: new sandbox pingable by name everywhere, p99",
                    f"{p99 * 1000:.0f} ms", "goal 1 s", f"{p99:.2f}×"))  # fmt: skip
        if conv["gone_s"]:
            worst = max(conv["gone_s"])
            out.append((f"cluster of {conv['hosts']}: dead host withdrawn everywhere, max",
                        f"{worst:.2f} s", f"goal lease TTL + 1 = {conv['ttl'] + 1} s",
                        f"{worst / (conv['ttl'] + 1):.2f}×"))  # fmt: skip
    return out


def main() -> int:
    table = ["| case | lowbridge | compared with (same run) | ratio |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows()]
    machines = sorted({doc["machine"] for name in os.listdir(RESULTS) if name.endswith(".json")
                       for doc in [_load(name[:-5])] if doc and "machine" in doc})  # fmt: skip
    text = "\n".join(
        [
            "# lowbridge benchmarks: latest results",
            "",
            "Each row's ratio compares numbers measured in the same run (details: *.md here).",
            "",
            *table,
            "",
            "Runs:",
            *[f"- {m}" for m in machines],
        ]  # fmt: skip
    )
    with open(os.path.join(RESULTS, "README.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
