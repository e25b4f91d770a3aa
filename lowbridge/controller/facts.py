"""What ``explain`` reads besides the records: the firewall's rules and the kernel's routes
(lowbridge.explain is pure; this gathers its Facts)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.explain import Facts
    from lowbridge.models import Container


@contextlib.contextmanager
def gathered(ctl: Controller) -> Iterator[Facts]:
    """The facts, with the host's netlink session open for their route lookups."""
    from lowbridge.explain import Facts

    view = ctl.view()
    fw = ctl.firewall
    model = fw.model(view)
    with ctl.kernel.session() as nl:

        def in_sandbox(ctr: Container, dst: str) -> str | None:
            with ctl.kernel.session(ctr.netns) as s:
                return s.route_device(dst)

        yield Facts(
            view, model, fw.renderer.render(model), fw.forward_drop,
            frozenset(address for _, address, _ in nl.addresses()),
            nl.route_device, nl.route_source, in_sandbox, fw.rule_text,
        )  # fmt: skip
