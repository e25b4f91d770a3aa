"""Named steps with an undo stack: every change is all-or-nothing.

A change runs its kernel steps through :meth:`Transaction.run`; the undo of each is registered
right after it succeeds.  If any later step (or the final commit) fails, the undos run in reverse
order, best effort, and the original error propagates -- so the kernel, and (because the store is
written last, in one transaction) the store, are exactly as before.  A change whose process dies
instead is undone by the next command from its journal entry (lowbridge.controller.journal).

Fault injection, for tests only, with ``LOWBRIDGE_FAIL_AT=<op>:<step>[:kill]`` in the environment:
right *after* the named step has made its change, the step raises :class:`InjectedFailure` --
which proves that its undo (and every earlier one) restores the previous state -- or, with
``:kill``, the process SIGKILLs itself, which proves that the next command finishes or undoes what
it left (``:crash`` raises :class:`Crashed` instead: the in-process stand-in for a kill that the
unit tests use; ``:pause:<file>`` creates the file and waits while it exists: a test does
something to the world meanwhile -- kills etcd's leader, cuts the host off -- then deletes it).
``LOWBRIDGE_TRACE_STEPS=<file>`` appends each step run as ``<op>:<step>`` to
the file, which is how the tests learn every step of an operation: there is no list to fall
behind.  ``LOWBRIDGE_DEBUG=1`` (``lowbridge --debug``) prints each step, and each undo, on
stderr as it runs, with its time: what lowbridge did to the kernel, in order.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from lowbridge.errors import InjectedFailure

_T = TypeVar("_T")
FAIL_ENV = "LOWBRIDGE_FAIL_AT"
TRACE_ENV = "LOWBRIDGE_TRACE_STEPS"
DEBUG_ENV = "LOWBRIDGE_DEBUG"


class Crashed(BaseException):
    """The in-process stand-in for a kill (tests): the change stops where it is, with no
    rollback and its journal entry left, as if its process had died."""


class Transaction:
    """The undo stack of one change (see the module docstring)."""

    def __init__(self, op: str):
        self.op = op
        self._undo: list[tuple[str, Callable[[], object]]] = []
        self._fail_at = os.environ.get(FAIL_ENV)
        self._trace = os.environ.get(TRACE_ENV)
        self._debug = bool(os.environ.get(DEBUG_ENV))

    def run(self, name: str, do: Callable[[], _T], undo: Callable[[], object] | None = None) -> _T:
        """Run ``do``; remember ``undo`` for rollback; then honour the fault-injection switch."""
        start = time.perf_counter()
        result = do()
        if undo is not None:
            self._undo.append((name, undo))
        self.check(name, start)
        return result

    def check(self, name: str, since: float | None = None) -> None:
        """The test hooks after step ``name`` (see the module docstring); ``since``: when it
        began (``time.perf_counter()``), for --debug's line."""
        if self._debug:
            took = f" ({(time.perf_counter() - since) * 1000:.1f} ms)" if since is not None else ""
            _say(f"{self.op}: {name}{took}")
        if self._trace:
            with open(self._trace, "a") as f:
                f.write(f"{self.op}:{name}\n")
        if self._fail_at is None or not self._fail_at.startswith(f"{self.op}:{name}"):
            return
        if self._fail_at == f"{self.op}:{name}:kill":
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if self._fail_at.startswith(f"{self.op}:{name}:pause:"):
            marker = self._fail_at.split(":", 3)[3]
            open(marker, "w").close()  # noqa: SIM115
            while os.path.exists(marker):
                time.sleep(0.01)
            return
        if self._fail_at == f"{self.op}:{name}:crash":
            raise Crashed(f"{self.op}: crashed after step {name}")
        if self._fail_at == f"{self.op}:{name}":
            raise InjectedFailure(f"{self.op}: injected failure after step {name}")

    def rollback(self) -> list[str]:
        """Run the undos newest first; keep going on errors and return them as text."""
        errors = []
        while self._undo:
            name, undo = self._undo.pop()
            if self._debug:
                _say(f"{self.op}: undo {name}")
            try:
                undo()
            except Exception as exc:  # best effort: report, continue
                errors.append(f"undo {name}: {exc}")
        for text in errors:
            print(f"lowbridge: warning: rollback of {self.op}: {text}", file=sys.stderr)
        return errors

    def forget(self) -> None:
        """The change committed: nothing to undo any more."""
        self._undo.clear()


def _say(text: str) -> None:
    print(f"lowbridge: debug: {text}", file=sys.stderr, flush=True)
