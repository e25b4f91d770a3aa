"""The operations verbs: ``check`` (what differs between the records and the host) and ``gc``
(mend it), as lowbridge.controller.audit finds and mends it."""

from __future__ import annotations

import argparse
import contextlib
import json

from lowbridge.cli.commands import _controller


def cmd_check(args: argparse.Namespace) -> int:
    found = _controller(args).check()
    if args.json:
        print(json.dumps([d.doc() for d in found], indent=4))
    else:
        for d in found:
            print(d.line())
    return 1 if found else 0


def cmd_gc(args: argparse.Namespace) -> int:
    ctl = _controller(args)
    if args.dry_run:
        for d in ctl.check():
            print(f"would {d.fix}: {d.line()}")
        return 0
    done, left = ctl.gc()
    for line in done:
        print(line)
    for line in left:
        print(f"left: {line}")
    return 1 if left else 0


def cmd_plugin_docker(args: argparse.Namespace) -> int:
    from lowbridge.plugins import docker

    with contextlib.suppress(KeyboardInterrupt):  # (^C: the end, as SIGTERM's)
        docker.serve(_controller(args), args.socket or docker.SOCKET)
    return 0


def cmd_plugin_cni(args: argparse.Namespace) -> int:
    from lowbridge.plugins import cniservice

    print(cniservice.install(args.dir, args.name))
    return 0
