"""CLI start-up: what each command costs before and beside its real work.

Inside one simulated host, medians of wall time for: the bare interpreter, ``import pyroute2``,
read-only commands (``network ls``, ``inspect``), and mutating ones (``network connect`` /
``disconnect`` of an existing sandbox), beside the same operation as a library call measured
in-process.  lowbridge's own share of a mutating command is

    CLI wall time - (interpreter + import pyroute2) - the library call's time

(``import pyroute2`` is the whole package; lowbridge imports only IPRoute and its netlink core,
row "import lowbridge.netlink", so what it avoids counts in its favour, as the issue asks.)

and the import-time profile (``python -X importtime``) of each command lists the modules that
cost the most.

    sudo .venv/bin/python bench/cli.py [-n 15]

Results: bench/results/cli.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _wall(argv: list[str], n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append(time.perf_counter() - t)
    return round(statistics.median(samples) * 1000, 1)


def _profile(argv: list[str], top: int = 6) -> list[tuple[str, float]]:
    """The costliest top-level imports of a command (cumulative ms, from -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True,
                          text=True, check=True)  # fmt: skip
    costs: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        if not name.startswith(" ") and "." not in name.strip():  # top-level packages only
            costs[name.strip()] = costs.get(name.strip(), 0) + int(cumulative) / 1000
    return sorted(((k, round(v, 1)) for k, v in costs.items()), key=lambda kv: -kv[1])[:top]


def inner(n: int) -> dict:
    from lowbridge.controller import ContainerRequest, Controller
    from lowbridge.drivers.base import NetworkRequest

    lb = [sys.executable, "-m", "lowbridge"]
    ctl = Controller()
    ctl.network_create(NetworkRequest(name="one", subnet="10.110.0.0/24"))
    ctl.network_create(NetworkRequest(name="two", subnet="10.111.0.0/24"))
    ctl.container_create(ContainerRequest(name="c", network="one"))
    lib = []
    for _ in range(n):
        t = time.perf_counter()
        ctl.network_connect("two", "c")
        lib.append(time.perf_counter() - t)
        ctl.network_disconnect("two", "c")
    lib_ms = round(statistics.median(lib) * 1000, 1)

    def connect_cycle() -> float:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run([*lb, "network", "connect", "two", "c"], check=True, capture_output=True)
            samples.append(time.perf_counter() - t)
            subprocess.run([*lb, "network", "disconnect", "two", "c"], check=True,
                           capture_output=True)  # fmt: skip
        return round(statistics.median(samples) * 1000, 1)

    out = {
        "python -c pass": _wall([sys.executable, "-c", "pass"], n),
        "python -c 'import pyroute2'": _wall([sys.executable, "-c", "import pyroute2"], n),
        # What lowbridge imports of it: IPRoute without the package's __init__ (netlink.py).
        "python -c 'import lowbridge.netlink'": _wall(
            [sys.executable, "-c", "import lowbridge.netlink"], n
        ),
        "lowbridge network ls": _wall([*lb, "network", "ls"], n),
        "lowbridge inspect c": _wall([*lb, "inspect", "c"], n),
        "lowbridge network connect (CLI)": connect_cycle(),
        "network connect (library call)": lib_ms,
    }
    own = out["lowbridge network connect (CLI)"] - out["python -c 'import pyroute2'"] - lib_ms
    out["lowbridge's own share of a mutating command"] = round(own, 1)
    profiles = {
        "network ls": _profile(["-m", "lowbridge", "network", "ls"]),
        "network connect": _profile(["-m", "lowbridge", "network", "connect", "two", "c"]),
    }
    return {"wall_ms": out, "imports_ms": profiles}


def main() -> int:
    from _common import measure, run_inside, write

    args = measure(__doc__, inner, 15, "runs per command")
    res = run_inside(__file__, "-n", str(args.n))
    rows = [f"| {k} | {v} |" for k, v in res["wall_ms"].items()]
    rows.append("")
    rows.append("| command | costliest imports (cumulative ms) |")
    rows.append("|---|---|")
    for cmd, imports in res["imports_ms"].items():
        rows.append(f"| {cmd} | " + ", ".join(f"{m} {ms}" for m, ms in imports) + " |")
    write(
        "cli",
        f"CLI start-up, medians of {args.n} runs, ms",
        "| what | median ms |\n|---|---|",
        rows,
        res,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
