"""The ``lowbridge`` command line: parse, call the controller, render.  Nothing else.

    startup   what the command does first, to start fast (the command's alone)
    parser    Docker's verbs and flags
    commands  each verb: a controller call and what it prints
    labs      the labs' verbs (apply, plan, destroy), graph and explain

Verbs and flags follow the ``docker`` CLI.  User errors print one line on stderr and exit with the
error's code (see :mod:`lowbridge.errors`); ``run`` and ``exec`` exit with the command's own status,
or 125 when lowbridge itself failed, 126 when the command cannot run, 127 when it is not found, as
``docker run`` does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from lowbridge.cli import startup

PROG = "lowbridge"


def main(argv: Sequence[str] | None = None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (lowbridge.cli.completion)
        from lowbridge.cli import completion, parser

        completion.complete(parser.build_parser())
    startup.trim_pyroute2()
    startup.defer_inspect()
    from lowbridge.cli.parser import parser_for
    from lowbridge.errors import LowbridgeError, one_line

    args = parser_for(sys.argv[1:] if argv is None else argv).parse_args(argv)
    if args.debug:
        os.environ["LOWBRIDGE_DEBUG"] = "1"  # lowbridge.txn prints each step
    try:
        if os.geteuid() != 0 and not getattr(args, "rootless", False):
            print(f"{PROG}: error: lowbridge needs root: it changes network namespaces, links and "
                  "the firewall (run it with sudo)", file=sys.stderr)  # fmt: skip
            return 1
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught
        _unreachable_store(args)
        return code
    except BrokenPipeError:  # lowbridge network ls | head -1: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # as a command killed by SIGPIPE (docker, a Go program, is)
    except LowbridgeError as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line, unless --debug
        if args.debug:
            raise
        print(
            f"{PROG}: internal error: {exc.__class__.__name__}: {one_line(str(exc))} "
            "(rerun with --debug)",
            file=sys.stderr,
        )
        return 70


def _unreachable_store(args) -> None:  # noqa: ANN001
    """Cluster mode with etcd unreachable: the command did this host's local work; say that
    global networks were left out (a command that needed them failed with its own line)."""
    ctl = getattr(args, "controller", None)
    store = ctl.__dict__.get("store") if ctl is not None else None
    unreachable = getattr(store, "unreachable", None)
    if unreachable:
        print(f"{PROG}: warning: {unreachable}: overlay networks were left out", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
