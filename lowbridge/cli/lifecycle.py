"""The lifecycle verbs: start, stop, restart, kill, wait, port, logs, container prune, version,
and the internal ones (the supervisor, the boot unit's): a controller call each, and what they
print (lowbridge.controller.lifecycle)."""

from __future__ import annotations

import argparse

from lowbridge.cli.commands import _command, _confirm, _controller, _each
from lowbridge.errors import NotFound


def cmd_start(args: argparse.Namespace) -> int:
    ctl = _controller(args)
    return _each(args.containers, lambda ref: ctl.container_start(ref) and ref)


def cmd_stop(args: argparse.Namespace) -> int:
    ctl = _controller(args)
    return _each(args.containers, lambda ref: ctl.container_stop(ref, args.time) and ref)


def cmd_restart(args: argparse.Namespace) -> int:
    ctl = _controller(args)

    def restart(ref: str) -> str:
        ctl.container_stop(ref, args.time)
        ctl.container_start(ref)
        return ref

    return _each(args.containers, restart)


def cmd_kill(args: argparse.Namespace) -> int:
    from lowbridge.restarts import parse_signal

    sig = parse_signal(args.signal)
    ctl = _controller(args)
    return _each(args.containers, lambda ref: ctl.container_kill(ref, sig) and ref)


def cmd_wait(args: argparse.Namespace) -> int:
    ctl = _controller(args)
    return _each(args.containers, lambda ref: str(ctl.container_wait(ref)))


def cmd_port(args: argparse.Namespace) -> int:
    from lowbridge import ports

    ctr = _controller(args).container(args.container)
    lines = ports.docker_port_lines(list(ctr.ports), args.port)
    if args.port and not lines:
        port = args.port if "/" in args.port else f"{args.port}/tcp"
        raise NotFound(f"No public port '{port}' published for {args.container}")
    for line in lines:
        print(line)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from lowbridge.controller import logs

    ctl = _controller(args)
    ctr = ctl.container(args.container)
    return logs.show(ctl, ctr, follow=args.follow, tail=args.tail, timestamps=args.timestamps)


def cmd_container_prune(args: argparse.Namespace) -> int:
    if not args.force and not _confirm(
        "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?"
    ):
        return 0
    removed = _controller(args).container_prune()
    if removed:
        print("Deleted Containers:")
        for ctr in removed:
            print(ctr.id)
        print()
    print("Total reclaimed space: 0B")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    import platform

    from lowbridge import __version__

    print(f"lowbridge version {__version__}\n Python: {platform.python_version()}\n Kernel: "
          f"{platform.release()}")  # fmt: skip
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    """(internal) After a reboot: the networks back, the sandboxes whose restart policy says so
    started again (systemd/lowbridge-restore.service)."""
    for ctr in _controller(args).boot():
        print(ctr.name)
    return 0


def cmd_supervise(args: argparse.Namespace) -> int:
    """(internal) Run a sandbox's command under its supervisor (lowbridge.controller.supervisor)."""
    from lowbridge.controller import supervisor

    return supervisor.run(_controller(args), args.container, _command(args))
