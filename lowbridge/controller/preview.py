"""What a set of changes would leave, planned as those changes plan and applied to nothing
(``plan -f``: the firewall rules a lab's additions bring, with the addresses they would get).

The removals come first, as ``apply`` takes them down first: the additions are planned against
the view without them, so a changed sandbox may keep its name, namespace and static address.
Each network is validated by its driver (a subnet chosen from the free pools as ``network
create`` would), each sandbox and further network by the sandbox and attach plans, in a
:class:`~lowbridge.controller.change.Change` that journals nothing, runs no step and never
commits.  Addresses are what ``apply`` would draw while nothing else changes; ids are drawn
anew, so the devices named after them (a bridge's ``lb-…``) are not the ones ``apply`` makes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from lowbridge import names
from lowbridge.controller import attach, networks, sandboxes
from lowbridge.controller.plan import Draft
from lowbridge.models import Container, Network, View

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.controller.requests import ContainerRequest
    from lowbridge.drivers.base import NetworkRequest


class Join(NamedTuple):
    """A planned sandbox on one more network (what ``network connect`` takes)."""

    network: str
    sandbox: str
    ip: str | None
    aliases: tuple[str, ...]


class Preview(NamedTuple):
    """The view after the removals and the additions, and the networks the additions make."""

    after: View
    made: list[Network]


def preview(
    ctl: Controller,
    gone_networks: Iterable[Network],
    gone_sandboxes: Iterable[Container],
    net_reqs: Iterable[NetworkRequest],
    box_reqs: Iterable[ContainerRequest],
    joins: Iterable[Join] = (),
) -> Preview:
    """Plan the removals and then the additions (see the module docstring); InvalidInput or
    Conflict as the changes themselves would refuse."""
    gone_networks, gone_sandboxes = list(gone_networks), list(gone_sandboxes)
    with ctl.change("preview") as c:
        c.view = _without(c.view, gone_networks, gone_sandboxes)
        made = []
        for req in net_reqs:
            net = networks.plan(c, req)
            made.append(net)
            c.view = c.view.changed([net])
        freed = {ctr.netns for ctr in gone_sandboxes if ctr.netns}
        c.draft = Draft(c.view, ctl.unsettled, freed)
        for req in box_reqs:
            sandboxes.plan(c, req, names.new_id())
        by_name = {ctr.name: ctr for ctr in c.draft.containers.values()}
        for join in joins:
            net = c.view.network(join.network)
            attach.plan(c, net, by_name[join.sandbox], join.ip, join.aliases)
        planned = [*c.draft.containers.values()]
        planned += [ep for eps in c.draft.endpoints.values() for ep in eps]
        return Preview(c.view.changed(planned), made)


def _without(view: View, nets: list[Network], boxes: list[Container]) -> View:
    net_ids, box_ids = {n.id for n in nets}, {c.id for c in boxes}
    eps = [e for e in view.endpoints if e.network_id in net_ids or e.container_id in box_ids]
    return view.changed(gone=[*eps, *boxes, *nets])
