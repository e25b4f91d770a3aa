"""The ``lowbridge-cni`` executable: a CNI runtime's call in, the result or the spec's error out
(lowbridge.plugins.cni does the call).

Its output is the spec's JSON on stdout and nothing else; exit status 0, or 1 with the error
document.  It starts as fast as the ``lowbridge`` command does (lowbridge.cli.startup): a runtime
waits for every ADD.
"""

from __future__ import annotations

import json
import os
import sys

from lowbridge.cli import startup


def main() -> int:
    startup.trim_pyroute2()
    startup.defer_inspect()
    from lowbridge.errors import LowbridgeError, one_line
    from lowbridge.plugins import cni

    stdin = sys.stdin.read() if not sys.stdin.isatty() else ""
    version = cni.SUPPORTED[-1]
    try:
        call = cni.parse(os.environ, stdin)
        if call.conf.get("cniVersion") in cni.SUPPORTED:
            version = call.conf["cniVersion"]
        ctl = None
        if call.command != "VERSION":
            from lowbridge.config import Paths
            from lowbridge.controller import Controller

            ctl = Controller(Paths.resolve())
        out = cni.run(call, ctl)
    except cni.CniError as exc:
        return _fail(exc, version)
    except LowbridgeError as exc:
        return _fail(cni.CniError(cni.error_code(exc), one_line(str(exc))), version)
    if out is not None:
        print(json.dumps(out))
    return 0


def _fail(exc, version: str) -> int:  # noqa: ANN001 - a plugins.cni.CniError
    print(json.dumps(exc.doc(version)))
    return 1


if __name__ == "__main__":
    sys.exit(main())
