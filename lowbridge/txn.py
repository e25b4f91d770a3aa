"""Named steps with an undo stack: every mutation is all-or-nothing.

A mutation runs its kernel changes as named steps; the undo of each is registered right after it
succeeds.  If any later step (or the final persist) fails, the undos run in reverse order, best
effort, and the original error propagates -- so the kernel, and (because the store is written last,
in one transaction) the store, are exactly as before.

Fault injection, for tests only: with ``LOWBRIDGE_FAIL_AT=<op>:<step>`` in the environment, the
named step raises :class:`InjectedFailure` *after* it has made its change, which proves that its
undo (and every earlier one) really restores the previous state.  ``STEPS`` lists every step of
every operation; :meth:`Transaction.step` refuses names not listed there, so the list that tests
iterate over cannot fall behind the code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from lowbridge.errors import InjectedFailure, LowbridgeError

_T = TypeVar("_T")
FAIL_ENV = "LOWBRIDGE_FAIL_AT"

# Every operation's steps, in the order they run.  "persist" is always last.
STEPS: dict[str, tuple[str, ...]] = {
    "network-create": (
        "create-device",
        "mark-device",
        "device-address",
        "device-up",
        "firewall",
        "persist",
    ),
    "network-connect": (
        "dns-redirect",  # started first, waited for after etc-files (Controller._connect)
        "ensure-network",
        "create-interface",
        "configure-interface",
        "default-route",
        "etc-files",
        "firewall",
        "persist",
    ),
    "container-create": ("create-netns", "create-uts", "loopback-up", "persist"),
}


class Transaction:
    """The undo stack of one mutation (see the module docstring)."""

    def __init__(self, op: str):
        if op not in STEPS:
            raise ValueError(f"unknown operation {op}")
        self.op = op
        self._undo: list[tuple[str, Callable[[], object]]] = []
        self._fail_at = os.environ.get(FAIL_ENV)

    def step(self, name: str, do: Callable[[], _T], undo: Callable[[], object] | None = None) -> _T:
        """Run ``do``; remember ``undo`` for rollback; then honour the fault-injection switch."""
        if name not in STEPS[self.op]:
            raise ValueError(f"step {name} is not declared for {self.op}")
        result = do()
        if undo is not None:
            self._undo.append((name, undo))
        self.check(name)
        return result

    def check(self, name: str) -> None:
        """Raise InjectedFailure if the test switch names this step."""
        if self._fail_at == f"{self.op}:{name}":
            raise InjectedFailure(f"{self.op}: injected failure after step {name}")

    def rollback(self) -> list[str]:
        """Run the undos newest first; keep going on errors and return them as text."""
        errors = []
        while self._undo:
            name, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # best effort: report, continue
                errors.append(f"undo {name}: {exc}")
        for text in errors:
            print(f"lowbridge: warning: rollback of {self.op}: {text}", file=sys.stderr)
        return errors

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.rollback()
        else:
            self._undo.clear()


def wrap(context: str, exc: BaseException) -> BaseException:
    """Prefix a LowbridgeError with ``context``; leave other exceptions alone."""
    if isinstance(exc, LowbridgeError):
        return exc.within(context)
    return exc
