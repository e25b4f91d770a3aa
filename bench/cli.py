"""CLI start-up: what each command costs before and beside its real work.

Inside one simulated host, medians of wall time for: the bare interpreter, ``import pyroute2``,
read-only commands (``network ls``, ``inspect``), and mutating ones (``network connect`` /
``disconnect`` of an existing sandbox), beside the same operation as a library call measured
in-process.  lowbridge's own share of a mutating command is

    CLI wall time - (interpreter + import pyroute2) - the library call's time

(``import pyroute2`` is the whole package; lowbridge imports only IPRoute and its netlink core,
row "import lowbridge.kernel.rtnl", so what it avoids counts in its favour, as the issue asks; the
last row takes the stricter base, what lowbridge does import.)  The commands take turns, run by
run.

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
TRIMMED_IMPORT = (
    "from lowbridge.cli.startup import trim_pyroute2; trim_pyroute2(); import lowbridge.kernel.rtnl"
)


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

    # The console script pip installs (what users run: no runpy, unlike python -m).
    script = os.path.join(os.path.dirname(sys.executable), "lowbridge")
    lb = [sys.executable, script] if os.path.exists(script) else [sys.executable, "-m", "lowbridge"]
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

    # Rounds over the commands, so that the VM's drift hits them alike.
    cases = {
        "python -c pass": ([sys.executable, "-c", "pass"], None),
        "python -c 'import pyroute2'": ([sys.executable, "-c", "import pyroute2"], None),
        # What the command imports of it: IPRoute without the package's __init__ (the CLI's
        # start-up trims it; a library import gets the whole package).
        "python -c 'import lowbridge.kernel.rtnl'": (
            [sys.executable, "-c", TRIMMED_IMPORT],
            None,
        ),
        "lowbridge network ls": ([*lb, "network", "ls"], None),
        "lowbridge inspect c": ([*lb, "inspect", "c"], None),
        "lowbridge network connect (CLI)": (
            [*lb, "network", "connect", "two", "c"],
            [*lb, "network", "disconnect", "two", "c"],
        ),
    }
    samples: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(n):
        for label, (argv, after) in cases.items():
            t = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            samples[label].append(time.perf_counter() - t)
            if after:
                subprocess.run(after, check=True, capture_output=True)
    out = {k: round(statistics.median(v) * 1000, 1) for k, v in samples.items()}
    out["network connect (library call)"] = lib_ms
    cli = out["lowbridge network connect (CLI)"]
    own = cli - out["python -c 'import pyroute2'"] - lib_ms
    out["lowbridge's own share of a mutating command"] = round(own, 1)
    own_netlink = cli - out["python -c 'import lowbridge.kernel.rtnl'"] - lib_ms
    out["the same, against import lowbridge.kernel.rtnl"] = round(own_netlink, 1)
    profiles = {
        "network ls": _profile([*lb[1:], "network", "ls"]),
        "network connect": _profile([*lb[1:], "network", "connect", "two", "c"]),
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
