"""``check`` and ``gc``: what differs between the records and the host, and how it is mended.

:func:`survey` reads the store, the journal, the kernel (links, namespaces, each sandbox's
addresses and default route, /etc files, UTS namespaces), the firewall (lowbridge's rules as
the kernel lists them) and the resolver, and returns each difference as a :class:`Drift`:
what, where, what the records expect, what was found, and how ``gc`` mends it.  Two kinds:

* what the records say should exist and does not (or not as recorded): mended by making it
  again -- a network's device, an endpoint's interface (same names and address), a route, the
  files, the rules, the resolver;
* what carries lowbridge's mark and has no owner: a link with lowbridge's alias of a network
  the store does not know, an ``lbv`` veth no endpoint names, a namespace with lowbridge's UTS
  namespace beside it, an overlay's ``lbo-`` namespace, a UTS namespace or /etc/netns directory
  of no sandbox, a journal entry a dead process left (settled as the next command would).
  Nothing without the mark is touched.

A survey settles nothing (``check`` reports a killed command's leftovers as they are); ``gc``
first settles through the usual change machinery, then surveys again and mends the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lowbridge import config
from lowbridge.controller.audit.drift import FIREWALL, RESOLVER, SETTLE, Drift
from lowbridge.errors import LowbridgeError

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.kernel.rtnl import Session
    from lowbridge.models import Endpoint, View


def survey(ctl: Controller, nl: Session) -> list[Drift]:
    """Every difference on this host, read under the host lock (see the module docstring)."""
    from lowbridge.controller.audit import cluster, devices, leftovers, sandboxes

    view = ctl.store.view()
    links = {link.name: link for link in nl.links()}
    out = _journal(ctl)
    out += devices.survey(ctl, nl, view, links)
    out += leftovers.survey(ctl, nl, view, links)
    out += sandboxes.survey(ctl, view)
    out += cluster.survey(ctl, view)
    out += _firewall(ctl, view)
    out += _resolver(ctl, view)
    return out


def _journal(ctl: Controller) -> list[Drift]:
    from lowbridge.controller.journal import kind_of

    return [
        Drift(
            "change",
            f"{e.op} {e.id[:12]}",
            "none under way",
            f"one left unfinished by a process that died (begun {e.created})",
            f"{kind_of(e.op)} it",
            SETTLE,
        )
        for e in ctl.store.journal()
    ]


def _firewall(ctl: Controller, view: View) -> list[Drift]:
    fw = ctl.firewall
    missing, extra = fw.drift(fw.model(view))

    def rule(expected: str, found: str) -> Drift:
        rewrite = lambda: fw.reapply(fw.model(ctl.store.view()))  # noqa: E731
        fix = "rewrite lowbridge's rules"
        return Drift("rule", f"({fw.backend.name})", expected, found, fix, FIREWALL, rewrite, 0)

    return [rule(line, "none") for line in missing] + [rule("none", line) for line in extra]


def _resolver(ctl: Controller, view: View) -> list[Drift]:
    want = {c.id for c in view.containers if c.dns_ports}
    serving = ctl.resolver.serving()

    def drift(where: str, expected: str, found: str, fix: str) -> Drift:
        sync = lambda: ctl.resolver.sync(bool(want))  # noqa: E731
        return Drift("resolver", where, expected, found, fix, RESOLVER, sync, 1)

    if serving is None:
        return (
            [drift("(embedded DNS)", f"running, for {len(want)} sandboxes", "none", "start it")]
            if want
            else []
        )
    return [
        drift(f"for sandbox {view.ctrs[cid].name}", "serving it", "not", "tell it")
        for cid in sorted(want - set(serving))
    ] + [
        drift(f"for container {cid[:12]}", "nothing (no such sandbox)", "serving it", "tell it")
        for cid in sorted(set(serving) - want)
    ]


def mend(drift: list[Drift]) -> tuple[list[str], list[str]]:
    """Mend each difference, in rank order (one mend per target); return the lines mended and
    those that were not (with why)."""
    done, failed, seen = [], [], set()
    for d in sorted(drift, key=lambda d: d.rank):
        if d.mend is None:
            failed.append(f"{d.line()}: left: {d.fix}")
            continue
        target = d.target if d.target is not None else d.line()
        try:
            if target not in seen:
                seen.add(target)
                d.mend()
            done.append(f"{d.line()}: {d.fix}")
        except (LowbridgeError, OSError) as exc:
            failed.append(f"{d.line()}: {d.fix}: {exc}")
    return done, failed


class AuditVerbs:
    """The controller's operations verbs (a part of lowbridge.controller.Controller)."""

    def check(self) -> list[Drift]:
        """What differs between the records and this host (lowbridge.controller.audit), read
        under the host lock and settling nothing: a killed command's leftovers show as they
        are."""
        with config.host_lock(self.paths), self.store.exclusive(), self.kernel.session() as nl:
            return survey(self, nl)

    def gc(self) -> tuple[list[str], list[str]]:
        """Settle what dead processes left, remove lowbridge's objects that no record owns and
        make again what the records say should exist (lowbridge.controller.audit); return the
        lines of what was mended and of what is left (with why)."""
        found = self.check()
        if not found:
            return [], []
        with self._mutation() as nl:  # settles the journal, reaps, remakes after a reboot
            _, failed = mend(survey(self, nl))
        left = {d.line() for d in self.check()}
        done = [f"{d.line()}: {d.fix}" for d in found if d.line() not in left]
        return done, failed or sorted(left)

    def repair_endpoint(self, ep: Endpoint) -> None:
        """Make an endpoint's interface again as recorded (lowbridge.controller.attach.repair)."""
        from lowbridge.controller import attach

        with self.change("network-connect") as c:
            attach.repair(c, ep)
