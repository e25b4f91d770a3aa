"""Before/after: this checkout's benchmarks against an earlier commit's, side by side in one run.

    sudo .venv/bin/python bench/versus.py [--base 47b33cf] [--after HEAD] [--rounds 2]
                                          [--only attach,cli]

The base commit is checked out once into a worktree (/tmp/lowbridge-versus-<sha>), and so is
``--after`` when given (else the after side is this checkout, as it is on disk: edits made
while the run goes are measured too); each
benchmark then runs from each checkout in turn, round by round, the order swapped every round
(so the VM's drift hits both alike), each side with its own scripts and its own library.  The
result compares the medians over rounds: for times, ``after / before`` (over 1 is slower); for
rates (DNS queries per second), ``before / after`` -- so over 1 is worse in every row, and a row
over 1.10 is flagged.  Results: bench/results/versus.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# benchmark -> its arguments (sizes as the issue asks: a 500-sandbox lab, 100 networks, ...)
BENCHES = {
    "attach": ["-n", "40"],
    "growth": [],
    "lab": [],
    "firewall": ["-n", "10"],
    "cli": [],
    "dns": [],
}
# Rows renamed since the base (old name -> new name).
RENAMED = {
    "python -c 'import lowbridge.netlink'": "python -c 'import lowbridge.kernel.rtnl'",
    "the same, against import lowbridge.netlink": "the same, against import lowbridge.kernel.rtnl",
}
RATES = ("dns:",)  # higher is better
WORSE = 1.10


def _worktree(ref: str) -> str:
    sha = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short=12", ref], capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    path = f"/tmp/lowbridge-versus-{sha}"
    if not os.path.isdir(path):
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, sha], check=True,
                       capture_output=True)  # fmt: skip
    return path


def _numbers(prefix: str, doc: object) -> dict[str, float]:
    """Every number of a results document, by its path ("attach: results_ms: <row>")."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("n", "machine", "imports_ms"):
                continue
            out.update(_numbers(f"{prefix}: {RENAMED.get(key, key)}", value))
    elif isinstance(doc, list) and doc and all(isinstance(v, int | float) for v in doc):
        out[prefix] = statistics.median(doc)
    elif isinstance(doc, int | float) and not isinstance(doc, bool):
        out[prefix] = float(doc)
    return out


def _run(root: str, name: str) -> dict[str, float]:
    script = os.path.join(root, "bench", f"{name}.py")
    # PYTHONPATH wins over the venv's editable install (which points at this checkout): every
    # process a side starts, its CLI commands too, imports that side's lowbridge.
    env = {**os.environ, "PYTHONPATH": root}
    subprocess.run([sys.executable, script, *BENCHES[name]], cwd=root, check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    with open(os.path.join(root, "bench", "results", f"{name}.json")) as f:
        return _numbers(name, json.load(f))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="47b33cf", help="the commit to compare against")
    parser.add_argument("--after", help="a commit for the after side (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="comma-separated benchmarks (default: all)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    sides = {"before": _worktree(args.base), "after": _worktree(args.after) if args.after else ROOT}
    for root in sides.values():
        # Byte-compiled as scripts/setup compiles the checkout: with PYTHONDONTWRITEBYTECODE set
        # (as on these machines) a side without .pyc files would recompile every module in
        # every process it starts, and the larger side would pay more for it.
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(root, "lowbridge")],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    samples: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for name in names:
        for r in range(args.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for side in order:
                print(f"versus: {name} round {r + 1}: {side}", file=sys.stderr)
                for key, value in _run(sides[side], name).items():
                    samples[side].setdefault(key, []).append(value)

    sys.path.insert(0, HERE)
    from _common import write

    rows, doc = [], {}
    for key in samples["after"]:
        if key not in samples["before"]:
            continue
        before = statistics.median(samples["before"][key])
        after = statistics.median(samples["after"][key])
        if before <= 0 or after <= 0:  # a difference of two times, not a time
            continue
        worse = before / after if key.startswith(RATES) else after / before
        flag = " **worse**" if worse > WORSE else ""
        rows.append(f"| {key} | {before:g} | {after:g} | {worse:.2f}×{flag} |")
        doc[key] = {"before": before, "after": after, "worse": round(worse, 3)}
    new = [k for k in samples["after"] if k not in samples["before"]]
    rows += [f"| {k} (new) | | {statistics.median(samples['after'][k]):g} | |" for k in new]
    write(
        "versus",
        f"Before ({args.base}) and after ({args.after or 'this checkout'}), medians of "
        f"{args.rounds} rounds each, turn about",
        "| row | before | after | worse (over 1: slower) |\n|---|---|---|---|",
        rows,
        {"base": args.base, "after": args.after, "rounds": args.rounds, "rows": doc},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
