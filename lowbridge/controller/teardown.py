"""Taking things down: ``rm`` of sandboxes and ``network disconnect``.

A teardown cannot be undone, so it is finished instead: its intent goes to the journal first,
every step runs whatever the others did ("already gone" is success, other errors are gathered),
and only when all of them succeeded are the records deleted -- with the firewall brought in line
in the same commit.  A teardown that did not complete keeps its records and its journal entry,
and the next command runs it again (each step is idempotent): the store never forgets a kernel
object before it is gone, and an address is not handed out again while anything still holds it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

from lowbridge import drivers, sandbox
from lowbridge.controller import etc
from lowbridge.controller.plan import address_claims
from lowbridge.errors import KernelError, LowbridgeError, NotFound
from lowbridge.models import GWBRIDGE, Container, Endpoint, Network, gateway_endpoint

if TYPE_CHECKING:
    from lowbridge.controller.change import Change


# ------------------------------------------------------------------ rm
def remove(
    c: Change, ctrs: list[Container], kill: bool, keep: dict[str, Container] | None = None
) -> None:
    """Remove sandboxes' kernel objects and endpoints (their processes too, with ``kill``), and
    their records -- except those ``keep`` replaces (a sandbox that exited keeps its record:
    lowbridge.controller.lifecycle)."""
    eps = [e for ctr in ctrs for e in c.view.endpoints_of(ctr.id)]
    c.journal(
        {
            "containers": [x.to_doc() for x in ctrs],
            "endpoints": [e.to_doc() for e in eps],
            "kill": kill,
            "keep": [x.to_doc() for x in (keep or {}).values()],
            "claims": _claims(ctrs, eps),
        }
    )
    _remove(c, ctrs, eps, kill, keep or {})


def finish_remove(c: Change, doc: dict) -> None:
    """Run a removal again that a process did not finish (from its journal entry)."""
    ctrs = [Container.from_doc(d) for d in doc["containers"]]
    eps = [Endpoint.from_doc(d) for d in doc["endpoints"]]
    keep = {x.id: x for x in map(Container.from_doc, doc.get("keep", ()))}
    _remove(c, ctrs, eps, doc["kill"], keep)


def _remove(
    c: Change, ctrs: list[Container], eps: list[Endpoint], kill: bool, keep: dict[str, Container]
) -> None:
    errors: list[str] = []
    nets = c.view.nets
    batched: list[str] = []  # host ends deleted together, in a thread of their own
    for ctr in ctrs:
        if kill:
            _gather(c, errors, ctr, "kill-processes", lambda ctr=ctr: _kill(c, ctr))
        for ep in (e for e in eps if e.container_id == ctr.id):
            net = nets.get(ep.network_id)
            if net is None:
                continue
            driver = drivers.get(net.driver)
            end = driver.host_end(ep)
            # Delete host ends explicitly: a namespace that something else still holds (an
            # adopted one, a shell left in `ip netns exec`) would keep them, and even a dying
            # one frees them only asynchronously (~35 ms, pyroute2-notes 7.3).  An adopted
            # namespace's go at once: its own default route comes back after them.
            if end is not None and ctr.netns_owned:
                batched.append(end)
            else:
                _gather(
                    c,
                    errors,
                    ctr,
                    "delete-interface",
                    lambda d=driver, n=net, e=ep, x=ctr: d.disconnect(
                        n, e, c.kernel, c.nl, x.netns
                    ),
                )
    # Three kernel waits overlap here.  A link deletion waits for RCU grace periods and its
    # devices' last references: it runs in a thread of its own, and the store commits once the
    # kernel announced the links gone (kernel.deletion).  The firewall change runs meanwhile,
    # and so does the walk of the kernel's whole conntrack table (~10 ms once anything is
    # tracked) that forgets the flows to the released addresses, as Docker does: flows *to*
    # them, which the firewall change does not decide (a published port's flows have the
    # host's address as their original destination), so it needs only the sandboxes'
    # processes gone, and must end before the store releases the addresses.  It starts after
    # the namespaces' release: their unmounts wait for an expedited RCU grace period, which
    # the walk held up (~9 ms here).  A later failure only means it runs again.
    addresses = [ip for e in eps for ip in (e.ip, e.ip6) if ip]
    forget = lambda: c.kernel.flush_conntrack(dsts=addresses)  # noqa: E731
    forgetter = threading.Thread(target=c.best_effort, args=(forget,))
    began = time.perf_counter()
    with c.kernel.delete_links(batched) as deletion:

        def wait() -> None:  # before the store commits: nothing is forgotten before it is gone
            if addresses:
                forgetter.join()
            try:
                deletion.wait()
            except LowbridgeError as exc:
                errors.append(str(exc))
            c.tx.check("delete-interfaces", began)
            if errors:
                raise KernelError(f"{errors[0]} (the next lowbridge command tries again)")

        for ctr in ctrs:
            _gather(c, errors, ctr, "release-namespace", lambda ctr=ctr: _release(c, ctr))
            if c.ctl.progress is not None:
                c.ctl.progress(ctr.name)
        present = {e.key for e in c.view.endpoints} | {x.id for x in c.view.containers}
        gone = [e for e in eps if e.key in present]
        gone += [x for x in ctrs if x.id in present and x.id not in keep]
        kept = [x for x in keep.values() if x.id in present]
        if addresses:
            forgetter.start()
        try:
            c.commit(put=kept, gone=gone, before_commit=wait)
        finally:
            if addresses:
                forgetter.join()


def _kill(c: Change, ctr: Container) -> None:
    """End every process the sandbox has: those in its namespace, and the one lowbridge started
    (its whole process group: ``run -d`` starts it in a session of its own)."""
    if ctr.pid and sandbox.start_time(ctr.pid) == ctr.pid_start:
        sandbox.kill_group(ctr.pid)
    if ctr.netns_owned and c.kernel.is_netns(ctr.netns):
        sandbox.kill_all(ctr.netns)


def _release(c: Change, ctr: Container) -> None:
    """What the sandbox holds besides its interfaces: the redirect and the route lowbridge put
    into an adopted namespace, its namespaces, its /etc files."""
    k = c.kernel
    if ctr.share or ctr.handed_off:  # another's namespace (and files): nothing of its own
        return
    if not ctr.host_network:
        if not ctr.netns_owned and k.is_netns(ctr.netns):
            if ctr.dns_ports:
                c.ctl.resolver.unlisten(ctr.netns, c.ctl.firewall.backend.name, ctr.dns_at)
            _restore_adopted_route(c, ctr)
        k.remove_ns(ctr.netns)
        k.remove_ns(c.paths.uts(ctr.name))
    sandbox.remove_files(c.paths.etc_dir(ctr.name))


def _gather(c: Change, errors: list[str], ctr: Container, step: str, fn) -> None:  # noqa: ANN001
    """A best-effort teardown step: a failure is noted under the sandbox's name."""
    start = time.perf_counter()
    try:
        fn()
    except (LowbridgeError, OSError) as exc:
        errors.append(f"remove {ctr.name}: {step}: {exc}")
    c.tx.check(step, start)


def _claims(ctrs: list[Container], eps: list[Endpoint]) -> dict:
    return {
        "containers": [x.name for x in ctrs],
        "addresses": address_claims(eps),
    }


# ------------------------------------------------------------------ disconnect
def disconnect(c: Change, net: Network, ctr: Container) -> None:
    """Take ``ctr`` off ``net`` (and off the cluster's gateway bridge, when that was its last
    reason to be there)."""
    eps = c.view.endpoints_of(ctr.id)
    ep = next((e for e in eps if e.network_id == net.id), None)
    if ep is None:
        raise NotFound(f"container {ctr.name} is not connected to network {net.name}")
    drivers.get(net.driver).check_disconnect(net)
    drop = [ep, *_egress_leftover(c, ep, eps)]
    c.journal({"container": ctr.to_doc(), "drop": [e.to_doc() for e in drop], "claims": {}})
    _disconnect(c, ctr, drop)


def finish_disconnect(c: Change, doc: dict) -> None:
    """Run a disconnect again that a process did not finish (from its journal entry)."""
    ctr = Container.from_doc(doc["container"])
    _disconnect(c, c.view.ctrs.get(ctr.id, ctr), [Endpoint.from_doc(d) for d in doc["drop"]])


def _disconnect(c: Change, ctr: Container, drop: list[Endpoint]) -> None:
    nets = c.view.nets
    keys = {e.key for e in drop}
    eps = c.view.endpoints_of(ctr.id)
    remaining = [e for e in eps if e.key not in keys]
    for ep in drop:
        net = nets.get(ep.network_id)
        if net is not None and ctr.netns:
            driver = drivers.get(net.driver)
            c.step(
                "delete-interface",
                lambda d=driver, n=net, e=ep: d.disconnect(n, e, c.kernel, c.nl, ctr.netns),
            )
    # Deleting the interface took its routes; if it carried the default route, the next
    # endpoint in Docker's order takes over (in an adopted namespace: its own route, at last).
    before, after = gateway_endpoint(eps, nets), gateway_endpoint(remaining, nets)
    if ctr.netns and not ctr.handed_off and c.kernel.is_netns(ctr.netns):
        if after is not None and after is not before:
            c.step("default-route", lambda: _route(c, ctr, after))
        elif after is None and before is not None and before.key in keys:
            c.step("default-route", lambda: _restore_adopted_route(c, ctr))
    content = etc.files(ctr, remaining, nets, lambda name: _bridge_address(c, name))
    if ctr.netns and not ctr.handed_off:
        c.step("etc-files", lambda: etc.write(c.paths, ctr, content))
    c.commit(gone=[e for e in drop if e.key in {x.key for x in c.view.endpoints}])
    addresses = [ip for e in drop for ip in (e.ip, e.ip6) if ip]
    if addresses:
        c.after.append(lambda: c.kernel.flush_conntrack(dsts=addresses))


def _egress_leftover(c: Change, ep: Endpoint, eps: list[Endpoint]) -> list[Endpoint]:
    """The gateway-bridge endpoint to remove with ``ep``, if ``ep`` was the sandbox's last
    reason to have it."""
    nets = c.view.nets

    def egresses(e: Endpoint) -> bool:
        net = nets.get(e.network_id)
        return net is not None and drivers.get(net.driver).egress(net)

    if not egresses(ep) or any(egresses(e) for e in eps if e.key != ep.key):
        return []
    return [e for e in eps if e.network_id in nets and nets[e.network_id].name == GWBRIDGE]


def _route(c: Change, ctr: Container, ep: Endpoint) -> None:
    with c.kernel.session(ctr.netns) as snl:
        if ep.gateway:
            snl.replace_default_route(ep.gateway, ep.ifname)
        if ep.gateway6:
            snl.replace_default_route6(ep.gateway6, ep.ifname)


def _restore_adopted_route(c: Change, ctr: Container) -> None:
    """Put back the default route an adopted namespace had before lowbridge replaced it."""
    if ctr.adopted_route is None:
        return
    gateway, ifname = ctr.adopted_route
    with c.kernel.session(ctr.netns) as snl, contextlib.suppress(KernelError):
        if snl.index(ifname) is not None and gateway:
            snl.replace_default_route(gateway, ifname)


def _bridge_address(c: Change, name: str) -> tuple[Container, str] | None:
    from lowbridge.controller.attach import bridge_address

    return bridge_address(c.draft, name)
