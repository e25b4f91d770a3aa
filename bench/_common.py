"""What every benchmark shares: run its measuring half inside a throwaway simulated host, and
write a results table (markdown + JSON) under bench/results/."""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def measure(doc: str, inner, default_n: int, n_help: str):  # noqa: ANN001, ANN201
    """Parse ``-n``; inside the simulated host (``--inner``) run ``inner(n)``, print its JSON
    and exit; outside, return the parsed arguments."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=default_n, help=n_help)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.n)))
        sys.exit(0)
    return args


def run_inside(script: str, *args: str) -> dict:
    """Run ``script --inner ARGS`` inside a fresh simulated host; return its JSON output."""
    from lowbridge.simhost import SimHost

    with SimHost("bench") as host:
        argv = [sys.executable, os.path.abspath(script), "--inner", *args]
        out = host.run(argv, timeout=1800)
    return json.loads(out.stdout)


def write(name: str, title: str, header: str, rows: list[str], doc: dict) -> None:
    """Print and save ``bench/results/<name>.md`` (with the machine) and ``<name>.json``."""
    import platform

    machine = (
        f"{platform.node()} {platform.release()}, {os.cpu_count()} cpu, "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    text = "\n".join([f"# {title}", "", f"Machine: {machine}", "", header, *rows])
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"{name}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(HERE, "results", f"{name}.json"), "w") as f:
        json.dump({**doc, "machine": machine}, f, indent=2)
