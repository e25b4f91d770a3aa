"""Settling the journal: every change a process left unfinished is finished or undone.

A change journals its plan before its first kernel step and deletes the entry in the transaction
that commits it (:mod:`.change`), so an entry found by a command holding the lock belongs to a
process that died mid-change (or whose undo failed).  Changes that build something are undone,
by their own steps' undos, newest first -- each idempotent, so steps the process never reached
cost nothing; teardowns are run again to their end.  An entry that cannot be settled stays, with
a warning, and its names and addresses stay taken (:class:`.plan.Draft`) until a later command
settles it.  In cluster mode an undone change's etcd transaction, if its outcome was unknown,
is undone too (lowbridge.store.cluster: pending files).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from lowbridge.errors import LowbridgeError

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.controller.change import Change
    from lowbridge.models import JournalEntry


def _handlers() -> dict[str, tuple[str, Callable[[Change, dict], object]]]:
    """op -> ("undo" or "finish", how)."""
    from lowbridge.controller import attach, networks, sandboxes, teardown

    return {
        "network-create": ("undo", networks.undo_create),
        "network-connect": ("undo", attach.undo_connect),
        "container-create": ("undo", sandboxes.undo),
        "container-start": ("undo", sandboxes.undo),
        "container-stop": ("finish", teardown.finish_remove),
        "network-rm": ("finish", networks.finish_remove),
        "network-disconnect": ("finish", teardown.finish_disconnect),
        "container-rm": ("finish", teardown.finish_remove),
    }


def kind_of(op: str) -> str:
    """What settling a change of ``op`` does to it: "undo" or "finish"."""
    return _handlers().get(op, ("undo", None))[0]


def settle(ctl: Controller) -> None:
    """Settle every journal entry (see the module docstring); ``ctl.unsettled`` gets those
    that could not be, ``ctl.settled`` whether any was."""
    entries = ctl.store.journal()
    ctl.unsettled = []
    if ctl.cluster is not None:
        ctl.cluster.drop_stale_pending(e.id for e in entries)
    if not entries:
        return
    handlers = _handlers()
    for entry in entries:
        try:
            _settle(ctl, entry, handlers)
            ctl.settled = True
        except LowbridgeError as exc:
            ctl.unsettled.append(entry)
            print(
                f"lowbridge: warning: {entry.op} left by a process that died at {entry.created}"
                f" is not settled yet: {exc}",
                file=sys.stderr,
            )


def _settle(ctl: Controller, entry: JournalEntry, handlers: dict) -> None:
    kind, how = handlers.get(entry.op, ("undo", None))
    if kind == "undo" and ctl.cluster is not None:
        # What its lost etcd transaction may have written goes first: the undo's view (the
        # sandbox's /etc files are written from it) must not hold it.
        ctl.cluster.undo_pending(entry.id)
    with ctl.change(f"recover-{entry.op}", forward=True) as c:
        c.entry = entry
        if how is None:  # an operation this version does not know: nothing it can undo
            raise LowbridgeError(f"unknown operation {entry.op!r} in the journal")
        if kind == "finish":
            how(c, entry.doc)  # runs the teardown to its end and commits it
            return
        errors = how(c, entry.doc)
        if errors:
            raise LowbridgeError(f"undo {entry.op}: {errors[0]}")
        c.commit()  # deletes the entry; the firewall follows the store again
