"""One change of the host's state: plan, journal, apply, commit.

Every mutating verb is one :class:`Change`, made by :meth:`Controller.change`:

1. under the host lock, with the host's netlink session open, and after the journal left by any
   process that died mid-change was settled (:mod:`.journal`) and the host reconciled
   (:mod:`.reconcile`), the verb reads one :class:`~lowbridge.models.View` and *plans*: it
   validates everything and decides every record, name and address, touching nothing;
2. :meth:`Change.journal` makes the plan durable -- a journal row, committed -- before the first
   kernel step: a process killed from here on leaves its intent behind for the next command;
3. the verb applies its steps through :meth:`Change.run`, each undone if a later one fails;
4. :meth:`Change.commit`, in one store transaction: the firewall brought from the view before to
   the view after (a step, undone if the commit fails), the records written, the journal row
   deleted.  Then, best effort, the conntrack flushes the verb asked for, the resolver and the
   overlay entries brought in line.

A change that fails rolls its steps back and deletes its journal row -- unless an undo failed,
or the change only removes things (``forward``: teardown cannot be undone, it is finished): then
the row stays and the next command finishes or undoes the change from it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from lowbridge import names
from lowbridge.controller.plan import Draft
from lowbridge.errors import LowbridgeError
from lowbridge.models import Container, Endpoint, JournalEntry, Network, View
from lowbridge.txn import Crashed, Transaction

if TYPE_CHECKING:
    import socket

    from lowbridge.controller import Controller
    from lowbridge.drivers.base import Step
    from lowbridge.kernel.rtnl import Session

Record = Network | Container | Endpoint
_ORDER = {Network: 0, Container: 1, Endpoint: 2}


class Change:
    """A change under way (see the module docstring)."""

    def __init__(self, ctl: Controller, op: str, nl: Session, forward: bool = False):
        self.ctl = ctl
        self.op = op
        self.nl = nl
        self.kernel = ctl.kernel
        self.paths = ctl.paths
        self.view: View = ctl.store.view()
        self.draft = Draft(self.view, ctl.unsettled)
        self.forward = forward
        self.tx = Transaction(op)
        self.entry: JournalEntry | None = None
        # Resolver sockets bound by this change, handed to the resolver after the commit.
        self.adopt: dict[str, tuple[socket.socket, socket.socket]] = {}
        self.after: list[Callable[[], None]] = []  # best effort, once committed
        self.committed = False

    # -- 2. journal
    def journal(self, doc: dict) -> None:
        """Make the plan ``doc`` durable before the first kernel step (its records -- under
        "networks", "containers", "endpoints" -- hold their names and addresses meanwhile)."""
        self.entry = JournalEntry(names.new_id(), self.op, doc)
        with self.ctl.store.transaction():
            self.ctl.store.put_journal(self.entry)
        self.tx.check("journal")

    # -- 3. apply
    def run(self, steps: Iterable[Step]) -> object:
        """Run ``steps`` in order, registering each undo; return the last one's result."""
        result = None
        for step in steps:
            result = self.tx.run(step.name, step.do, step.undo)
        return result

    def step(self, name: str, do: Callable[[], object], undo: Callable[[], object] | None = None):  # noqa: ANN201
        return self.tx.run(name, do, undo)

    # -- 4. commit
    def commit(
        self,
        put: Iterable[Record] = (),
        gone: Iterable[Record] = (),
        before_commit: Callable[[], None] | None = None,
    ) -> View:
        """Write ``put``, delete ``gone`` and the journal row, with the firewall brought in line
        just before the store commits; return the view after (see the module docstring).
        ``before_commit`` runs after the firewall, before the store commits (a teardown waits
        there for the kernel to finish deleting links)."""
        # Endpoints go before what they refer to, and come after it (the store's foreign keys).
        put = sorted(put, key=lambda r: _ORDER[type(r)])
        gone = sorted(gone, key=lambda r: -_ORDER[type(r)])
        after = self.view.changed(put, gone)
        fw = self.ctl.firewall
        before_model = fw.model(self.view)
        store = self.ctl.store
        with store.transaction():
            for record in gone:
                _delete(store, record)
            for record in put:
                _put(store, record)
            if self.entry is not None:
                store.delete_journal(self.entry.id)
            undo: list[Callable[[], None]] = []
            self.step(
                "firewall",
                lambda: undo.append(fw.change(before_model, fw.model(after))),
                lambda: undo and undo[0](),
            )
            if before_commit is not None:
                before_commit()
            self.tx.check("persist")
        self.tx.forget()
        self.committed, self.view, self.entry = True, after, None
        return after

    # -- the end
    def abort(self, exc: BaseException | None = None) -> str | None:
        """The change failed before its commit: undo what it did (see the module docstring).
        Returns a note for the error when the change is left for the next command to finish
        -- also when ``exc`` says the cluster store may hold its records (``in_doubt``: the
        entry's settling removes them, lowbridge.store.cluster)."""
        clean = not self.tx.rollback()
        for pair in self.adopt.values():
            for sock in pair:
                sock.close()
        self.adopt.clear()
        if self.entry is None:
            return None
        if self.forward or not clean or getattr(exc, "in_doubt", False):
            return "left unfinished: the next lowbridge command finishes it"
        try:
            with self.ctl.store.transaction():
                self.ctl.store.delete_journal(self.entry.id)
        except LowbridgeError as exc:  # the undo is done: only the row stays behind
            print(f"lowbridge: warning: {self.op}: {exc}", file=sys.stderr)
        return None

    def finish(self) -> None:
        """After the commit: the best-effort work (conntrack flushes)."""
        for fn in self.after:
            self.best_effort(fn)

    def best_effort(self, fn: Callable[[], object]) -> None:
        """Run ``fn``; a failure is a warning, not the change's."""
        try:
            fn()
        except LowbridgeError as exc:
            print(f"lowbridge: warning: {self.op}: {exc}", file=sys.stderr)


_KIND = {Network: "network", Container: "container", Endpoint: "endpoint"}


def _put(store, record: Record) -> None:  # noqa: ANN001
    getattr(store, f"put_{_KIND[type(record)]}")(record)


def _delete(store, record: Record) -> None:  # noqa: ANN001
    getattr(store, f"delete_{_KIND[type(record)]}")(record)


def crashed(exc: BaseException) -> bool:
    """Whether ``exc`` stands for the change's process dying (tests): no rollback then."""
    return isinstance(exc, Crashed)
