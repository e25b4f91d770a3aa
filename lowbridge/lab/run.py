"""``apply`` and ``destroy``: a lab's difference made in one process, under one hold of the lock.

``apply`` takes the entries to change or remove down first (a changed entry keeps its name),
then makes the additions -- the networks, all the sandboxes in one batch
(``container_create_many``), their further networks, their commands.  If any of them fails it
undoes those additions and makes what it took down again from the records
(:mod:`lowbridge.lab.restore`), so a failed ``apply`` leaves what it found.  Every step is a
controller change of its own, journaled: a killed ``apply`` leaves whole steps, and the next
``apply`` of the same file finds what is missing or not whole (:mod:`lowbridge.lab.diff`) and
completes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from lowbridge.errors import LowbridgeError
from lowbridge.lab import memo, restore
from lowbridge.lab.marks import owned
from lowbridge.lab.progress import Progress

if TYPE_CHECKING:  # the schema (pydantic) is apply's alone: destroy does without it
    from lowbridge.controller import Controller
    from lowbridge.lab.diff import Diff
    from lowbridge.lab.topology import Topology
    from lowbridge.models import Container, Network


def apply(ctl: Controller, topo: Topology, progress: Progress, file: str | None = None) -> Diff:
    """Bring lowbridge to ``topo`` (read from ``file``, whose complete apply is remembered:
    lowbridge.lab.memo); return the difference that was made."""
    from lowbridge.lab.diff import diff

    with ctl.batch():
        d = diff(topo, ctl.store.view())
        if not d.empty:
            before = ctl.store.view()
            undo: list[Callable[[], object]] = []
            try:
                undo.append(lambda: restore.put_back(ctl, before, *_gone(ctl, d)))
                _take_down(ctl, d.remove_sandboxes, d.remove_networks, progress)
                _make(ctl, d, progress, undo)
            except BaseException:
                for step in reversed(undo):
                    with contextlib.suppress(LowbridgeError):
                        step()
                raise
        if file is not None and ctl.cluster is None:
            entries = len(topo.networks) + len(topo.sandboxes)
            memo.remember(ctl.store, ctl.paths, file, topo.lab, entries)
    return d


def _gone(ctl: Controller, d: Diff) -> tuple[list[Network], list[Container]]:
    """What ``d`` took down and is not there (by name) now that the additions are undone."""
    view = ctl.store.view()
    nets = [n for n in d.remove_networks if view.network_named(n.name) is None]
    names = {c.name for c in view.containers}
    return nets, [c for c in d.remove_sandboxes if c.name not in names]


def destroy(ctl: Controller, lab: str, progress: Progress) -> tuple[int, int, list[str]]:
    """Remove what the lab owns (and nothing else): its sandboxes here, and its networks no
    other sandbox is on (another host's, in cluster mode; the last host's destroy removes
    them).  Return (networks removed, sandboxes removed, the names of networks kept)."""
    with ctl.batch():
        view = ctl.store.view()
        nets, boxes = owned(view, lab)
        mine = {c.id for c in boxes}
        kept = [n for n in nets
                if any(e.container_id not in mine for e in view.endpoints_on(n.id))]  # fmt: skip
        nets = [n for n in nets if n not in kept]
        _take_down(ctl, boxes, nets, progress)
    return len(nets), len(boxes), [n.name for n in kept]


def _take_down(
    ctl: Controller, boxes: list[Container], nets: list[Network], progress: Progress
) -> None:
    if boxes:
        progress.phase("remove sandboxes", len(boxes))
        with _telling(ctl, progress):
            results = ctl.container_rm_many([c.id for c in boxes], force=True)
        for _, result in results:
            if isinstance(result, LowbridgeError):
                raise result
    if nets:  # one change: their devices go in one batch
        ctl.network_rm_many([n.id for n in nets])


def _make(ctl: Controller, d: Diff, progress: Progress, undo: list) -> None:
    for req in d.network_requests():
        net = ctl.network_create(req)
        undo.append(lambda net=net: ctl.network_rm(net.id))
    reqs = d.sandbox_requests()
    if reqs:
        progress.phase("create sandboxes", len(reqs))
        made: list[Container] = []  # what the undo removes: whatever was made, when it runs
        undo.append(lambda: made and ctl.container_rm_many([c.id for c in made], force=True))
        with _telling(ctl, progress):
            if ctl.cluster is None:
                made += ctl.container_create_many(reqs)
            else:  # a cluster's leases are taken one sandbox at a time
                for req in reqs:
                    made.append(ctl.container_create(req))
    for c in d.connects():
        ctl.network_connect(c.network, c.sandbox, c.ip, c.aliases)
    for name in d.commands():
        ctl.start_detached(name)


@contextlib.contextmanager
def _telling(ctl: Controller, progress: Progress):  # noqa: ANN202
    """The controller tells ``progress`` of each sandbox a batch makes or removes."""
    ctl.progress = progress.step
    try:
        yield
    finally:
        ctl.progress = None
