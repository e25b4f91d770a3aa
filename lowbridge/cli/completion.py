"""Shell completion (bash and zsh) through argcomplete: verbs and flags from the parser, network
and sandbox names from the store.

``lowbridge completion bash|zsh`` prints the script that registers it (``source <(lowbridge
completion bash)``, as ``docker completion bash``); the shell then runs ``lowbridge`` with
argcomplete's environment on each TAB, and :func:`complete` answers before anything else is
imported.  Names are read from the store without settling anything; a user who may not read
it (completion runs as the user typing, lowbridge as root) gets verbs and flags only.
"""

from __future__ import annotations

import argparse
import os
import sys

NETWORK_METAVARS = {"NETWORK"}
CONTAINER_METAVARS = {"CONTAINER"}


def script(shell: str) -> str:
    """The registration script for ``shell`` (bash or zsh)."""
    import argcomplete

    return argcomplete.shellcode(["lowbridge"], shell=shell)


def _names(kind: str):  # noqa: ANN202 - an argcomplete completer
    def complete(prefix: str, parsed_args: argparse.Namespace, **_: object) -> dict[str, str]:
        from lowbridge.config import Paths

        paths = Paths.resolve(getattr(parsed_args, "root", None))
        if not os.access(os.path.join(paths.state, "lowbridge.db"), os.R_OK):
            return {}
        try:
            from lowbridge.store import open_store

            view = open_store(paths).view()
        except Exception:  # completion never fails the shell: no names then
            return {}
        if kind == "network":  # name -> what zsh shows beside it
            return {n.name: f"{n.driver} network" for n in view.networks
                    if n.name.startswith(prefix)}  # fmt: skip
        return {c.name: "sandbox" for c in view.containers if c.name.startswith(prefix)}

    return complete


def _attach(parser: argparse.ArgumentParser) -> None:
    """Name completers on every NETWORK / CONTAINER argument and ``--network`` option."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _attach(sub)
            continue
        if action.metavar in NETWORK_METAVARS or "--network" in action.option_strings:
            action.completer = _names("network")  # type: ignore[attr-defined]
        elif action.metavar in CONTAINER_METAVARS:
            action.completer = _names("container")  # type: ignore[attr-defined]


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (argcomplete's environment is set) for the
    command line's whole ``parser``, and exit."""
    import argcomplete

    _attach(parser)
    argcomplete.autocomplete(parser, always_complete_options=False)
    sys.exit(0)  # argcomplete exits itself once it has answered; not reached
