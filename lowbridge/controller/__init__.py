"""The controller: every lowbridge operation on one host.

    (this module)  Controller: the public verbs -- each one change, or one read (those of the
                   lifecycle and of check/gc come from lifecycle and audit)
    change         a change: plan, journal, apply (named steps, an undo stack), commit
    journal        what a process that died mid-change left: finished or undone
    reconcile      what every change does first (predefined networks, reboot, reaping, cluster)
    plan           the draft a change plans against (names, addresses, ports taken)
    requests       a run/create request, validated into a sandbox's record
    attach         an endpoint's plan and steps; network connect
    sandboxes      sandboxes' plans and steps; container create, one or a batch
    teardown       rm and network disconnect
    networks       network create and rm
    processes      the process of run, started once its record names it
    lifecycle      stop, start, kill, wait: a sandbox's life after its creation
    supervisor     the process that runs a detached command and answers for its end
    logs           what a detached command wrote
    audit          check and gc: the records against the host, and mending them
    etc            a sandbox's /etc files

Mutations take the host-wide lock, so two lowbridge processes never interleave; reads take none
and import no pyroute2 -- unless the journal holds a change to settle, the predefined networks
are missing, or the resolver or (cluster mode) the agent should run and does not, in which case
the read settles that first.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from lowbridge import config, drivers, sandbox
from lowbridge.config import Paths

# The verbs' modules are imported by the verbs that use them: a read-only command (network ls,
# inspect) loads none of them (bench/cli.py).
from lowbridge.controller import lifecycle
from lowbridge.controller.audit import AuditVerbs
from lowbridge.controller.change import Change, crashed
from lowbridge.errors import CasConflict, Conflict, InvalidInput, LowbridgeError, context
from lowbridge.models import PREDEFINED, RUNNING, Container, Endpoint, Network, View
from lowbridge.store import Store, open_store

if TYPE_CHECKING:
    import subprocess

    from lowbridge.controller.requests import ContainerRequest
    from lowbridge.dns.control import Resolver
    from lowbridge.drivers.base import NetworkRequest
    from lowbridge.firewall import Firewall
    from lowbridge.kernel import Kernel
    from lowbridge.kernel.rtnl import Session
    from lowbridge.models import JournalEntry

__all__ = ["ContainerRequest", "Controller", "NetworkRequest"]


def __getattr__(name: str) -> object:
    """The request types, re-exported here and loaded at first use (PEP 562)."""
    if name == "ContainerRequest":
        from lowbridge.controller.requests import ContainerRequest

        return ContainerRequest
    if name == "NetworkRequest":
        from lowbridge.drivers.base import NetworkRequest

        return NetworkRequest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _retry_races(fn: Callable) -> Callable:
    """Cluster mode: run the operation again (up to 5 times) when its etcd transaction lost a
    race to another host (an address, VNI or name taken meanwhile).  Each failed attempt was
    rolled back entirely -- kernel, firewall and stores -- so the retry starts clean."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN202
        for attempt in range(5):
            try:
                return fn(self, *args, **kwargs)
            except CasConflict:
                if attempt == 4:
                    raise
                import random  # cluster mode only

                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise AssertionError("not reached")

    return wrapper


class Controller(lifecycle.LifecycleVerbs, AuditVerbs):
    """lowbridge's operations on one host (see the module docstring).

    ``kernel``, ``firewall`` and ``resolver`` default to the real ones; the unit tests hand in
    fakes (tests/unit/fakes.py)."""

    def __init__(
        self,
        paths: Paths | None = None,
        store: Store | None = None,
        firewall_backend: str | None = None,
        kernel: Kernel | None = None,
        firewall: Firewall | None = None,
        resolver: Resolver | None = None,
    ):
        self.paths = paths or Paths.resolve()
        self.store: Store = store or open_store(self.paths)
        if kernel is not None:
            self.kernel = kernel
        self._backend = firewall_backend
        if firewall is not None:  # else made when first used (a read needs no firewall)
            self.firewall = firewall
        if resolver is not None:
            self.resolver = resolver
        self.unsettled: list[JournalEntry] = []  # journal entries a settle could not settle
        self.settled = False  # this command settled one (the firewall is then rewritten)
        self._nl: Session | None = None  # the host session while a mutation holds the lock
        self._dirty = False  # committed since the resolver and the overlays were last told
        # Told the name of each sandbox a batch has made or removed (a lab's progress bar).
        self.progress: Callable[[str], None] | None = None

    @functools.cached_property
    def kernel(self) -> Kernel:
        """The kernel's interface (made at first use: a read imports no namespace code)."""
        from lowbridge.kernel import Kernel

        return Kernel()

    @functools.cached_property
    def firewall(self) -> Firewall:
        """The firewall's executor for the backend asked for (made at first use)."""
        from lowbridge.firewall import Firewall

        return Firewall(self._backend or config.firewall_backend(), self.paths.run)

    @functools.cached_property
    def resolver(self) -> Resolver:
        """The controller's handle on the embedded resolver (made at first use)."""
        from lowbridge.dns.control import Resolver

        return Resolver(self.paths)

    @property
    def cluster(self):  # noqa: ANN201
        """The cluster store, or None on a single host."""
        # Only a cluster store can have come from lowbridge.store.cluster: on a single host
        # that module (and its etcd client, asyncio and grpc) is never imported.
        mod = sys.modules.get("lowbridge.store.cluster")
        return self.store if mod is not None and isinstance(self.store, mod.ClusterStore) else None

    # ------------------------------------------------------------------ changes
    @contextlib.contextmanager
    def change(self, op: str, forward: bool = False) -> Iterator[Change]:
        """One change (lowbridge.controller.change), inside a mutation."""
        with self._mutation() as nl:
            c = Change(self, op, nl, forward)
            try:
                yield c
            except BaseException as exc:
                if crashed(exc):
                    raise
                note = c.abort(exc)
                if note and isinstance(exc, LowbridgeError):
                    raise exc.noting(note) from None
                raise
            if c.committed:
                self._dirty = True
                self.resolver.pending.update(c.adopt)
                c.adopt = {}
            c.finish()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the host lock across several verbs (a lab's apply): no other lowbridge command
        changes anything in between, and the resolver and the overlays are told once, at the
        end.  Each verb is still a change of its own (journaled, undone whole on failure)."""
        with self._mutation():
            yield

    @contextlib.contextmanager
    def _mutation(self) -> Iterator[Session]:
        """The host lock, the host's netlink session, everything reconcile does first; the
        resolver and the overlay entries told at the end.  Re-entrant."""
        from lowbridge.controller import reconcile

        if self._nl is not None:
            yield self._nl
            return
        with config.host_lock(self.paths), self.store.exclusive(), self.kernel.session() as nl:
            self._nl = nl
            try:
                reconcile.prepare(self, nl)
                yield nl
            finally:
                try:
                    self._tell()
                finally:
                    self._nl = None

    def _tell(self) -> None:
        """Best effort, under the lock: the overlays' forwarding entries and the resolver in
        line with the store (start it if a sandbox needs it; it exits when none does)."""
        dirty, self._dirty = self._dirty, False
        view = self.store.view()
        if self.cluster is not None:
            from lowbridge import agentctl

            try:
                if dirty:
                    for net in view.networks:
                        driver = drivers.get(net.driver)
                        if driver.scope == "global":
                            driver.sync_peers(net, view.endpoints_on(net.id), self.cluster.host)
                if agentctl.missing(self.paths):  # it follows the other hosts' changes
                    agentctl.ensure_running(self.paths)
            except LowbridgeError as exc:
                print(f"lowbridge: warning: sync overlay entries: {exc}", file=sys.stderr)
        from lowbridge import proxy

        relays = proxy.needed(view)
        need = relays or any(c.dns_ports for c in view.containers)
        if dirty or (need and not self.resolver.running()):
            self.resolver.sync(need, relays)

    # ------------------------------------------------------------------ reads
    def view(self) -> View:
        """The committed records, after settling what needs it (see the module docstring)."""
        view = self.store.view()
        predefined = {n.name for n in view.networks if n.predefined} >= set(PREDEFINED)
        if (
            not predefined
            or self.store.journal()
            or self._resolver_down(view)
            or self._agent_down()
        ):
            try:
                self.settle()
            except LowbridgeError as exc:  # a read still answers from the records
                if not predefined:
                    raise
                print(f"lowbridge: warning: {exc}", file=sys.stderr)
            view = self.store.view()
        return view

    def settle(self) -> None:
        """Take the lock and do what every change does first (lowbridge.controller.reconcile):
        join the cluster, settle the journal, make the predefined networks, reap the dead."""
        with self._mutation():
            pass

    def _agent_down(self) -> bool:
        if self.cluster is None:
            return False
        from lowbridge import agentctl

        return agentctl.missing(self.paths)

    def _resolver_down(self, view: View) -> bool:
        # The resolver first: a damaged sandbox row must not stop a read of networks.
        if self.resolver.running():
            return False
        from lowbridge import proxy

        return any(c.dns_ports for c in view.containers) or proxy.needed(view)

    def networks(self) -> list[Network]:
        return list(self.view().networks)

    def containers(self) -> list[Container]:
        return list(self.view().containers)

    def network(self, ref: str) -> Network:
        return self.view().network(ref)

    def container(self, ref: str) -> Container:
        return self.view().container(ref)

    def endpoints(
        self, network: Network | None = None, container: Container | None = None
    ) -> list[Endpoint]:
        view = self.view()
        eps = view.endpoints_of(container.id) if container is not None else list(view.endpoints)
        return [e for e in eps if network is None or e.network_id == network.id]

    def running(self, containers: list[Container]) -> dict[str, list[int]]:
        """Container id -> pids running in its sandbox (for status columns)."""
        by_path = sandbox.running_pids(c.netns for c in containers if not c.borrows)
        out = {c.id: by_path.get(c.netns, []) for c in containers}
        for c in containers:
            if c.borrows:  # the host's or another's namespace: only its own process counts
                alive = c.pid and sandbox.start_time(c.pid) == c.pid_start
                out[c.id] = [c.pid] if alive else []
        return out

    # ------------------------------------------------------------------ networks
    @context(lambda req: f"create network {req.name}")
    @_retry_races
    def network_create(self, req: NetworkRequest) -> Network:
        from lowbridge.controller import networks

        with self.change("network-create") as c:
            return networks.create(c, req)

    @context(lambda ref: f"remove network {ref}")
    def network_rm(self, ref: str) -> Network:
        return self._network_rm([ref])[0]

    @context(lambda refs: f"remove networks {', '.join(refs)}")
    def network_rm_many(self, refs: list[str]) -> list[Network]:
        """Remove the networks ``refs`` name in one change (their devices in one batch)."""
        return self._network_rm(refs)

    def _network_rm(self, refs: list[str]) -> list[Network]:
        from lowbridge.controller import networks

        with self.change("network-rm", forward=True) as c:
            nets = list({n.id: n for n in (c.view.network(ref) for ref in refs)}.values())
            networks.remove(c, nets)
            return nets

    def network_prune(self) -> list[Network]:
        with self._mutation():
            view = self.store.view()
            unused = [n.id for n in view.networks
                      if not n.predefined and not view.endpoints_on(n.id)]  # fmt: skip
            return self._network_rm(unused) if unused else []

    @context(lambda net_ref, ctr_ref, *a, **k: f"connect {ctr_ref} to {net_ref}")
    @_retry_races
    def network_connect(
        self,
        net_ref: str,
        ctr_ref: str,
        ip: str | None = None,
        aliases: tuple[str, ...] = (),
        ip6: str | None = None,
        ifname: str | None = None,
    ) -> Endpoint:
        """``network connect``; ``ifname``: the interface's name in the sandbox (else Docker's
        eth0, eth1, ... rule)."""
        from lowbridge.controller import attach

        with self.change("network-connect") as c:
            net, ctr = c.view.network(net_ref), c.view.container(ctr_ref)
            return attach.connect(c, net, ctr, ip, tuple(aliases), ip6, ifname)

    @context(lambda net_ref, ctr_ref: f"disconnect {ctr_ref} from {net_ref}")
    def network_disconnect(self, net_ref: str, ctr_ref: str) -> None:
        from lowbridge.controller import teardown

        with self.change("network-disconnect", forward=True) as c:
            teardown.disconnect(c, c.view.network(net_ref), c.view.container(ctr_ref))

    # ------------------------------------------------------------------ sandboxes
    @context(lambda req: f"create container {req.name or ''}".rstrip())
    @_retry_races
    def container_create(self, req: ContainerRequest) -> Container:
        return self._create([req])[0]

    @context(lambda reqs: f"create {len(reqs)} containers")
    @_retry_races
    def container_create_many(self, reqs: list[ContainerRequest]) -> list[Container]:
        """Create several sandboxes in one change, all or none (a lab's set-up): one lock, one
        journal entry, one store transaction, one firewall change and one resolver sync for all
        of them.  Each holds a few descriptors until the change commits (its netlink socket and
        resolver sockets): the soft descriptor limit is raised towards the hard one when
        needed.  Overlay networks take one sandbox at a time (their leases are the cluster's)."""
        if len(reqs) > 1 and self.cluster is not None:
            raise InvalidInput("in cluster mode containers are created one at a time")
        _descriptors(4 * len(reqs) + 256)
        return self._create(reqs)

    def _create(self, reqs: list[ContainerRequest]) -> list[Container]:
        from lowbridge import names
        from lowbridge.controller import sandboxes

        with self.change("container-create") as c:
            plans = []
            for req in reqs:
                try:
                    plans.append(sandboxes.plan(c, req, names.new_id()))
                except LowbridgeError as exc:
                    if len(reqs) == 1:
                        raise
                    raise exc.within(f"create container {req.name or ''}") from None
            return sandboxes.create(c, plans)

    def run(
        self,
        req: ContainerRequest,
        command: list[str],
        detach: bool,
        stdio: tuple[int | None, int | None, int | None] | None = None,
        tty: bool = False,
    ) -> tuple[Container, subprocess.Popen]:
        """``run``: create the sandbox and start ``command`` in it -- detached (under its
        supervisor, output to its log) or attached (``stdio``, ``tty``: see
        lowbridge.controller.processes.start) -- in one hold of the lock."""
        from lowbridge.controller import processes

        with self._mutation():
            ctr = self.container_create(req)
            self._tell()  # the resolver serves the sandbox before its command starts
            argv = self.exec_argv(ctr, command)
            proc = processes.start(self, ctr, argv, detach, stdio=stdio, tty=tty)
        return ctr, proc

    def start_detached(self, ref: str) -> subprocess.Popen:
        """Start the sandbox's own command (its record's) in the background, output to its log
        (a lab's sandbox: created in one batch, its command started after)."""
        from lowbridge.controller import processes

        with self._mutation():
            ctr = self.store.view().container(ref)
            if not ctr.command:
                raise InvalidInput(f"container {ctr.name} has no command to start")
            return processes.start(self, ctr, self.exec_argv(ctr, list(ctr.command)), True)

    def exec_argv(self, ctr: Container, command: list[str]) -> list[str]:
        """argv that runs ``command`` in the sandbox (for ``run``/``exec``)."""
        if ctr.host_network:
            return list(command)
        name = self.view().container(ctr.share).name if ctr.share else ctr.name
        return sandbox.exec_argv(name, command, self.paths.uts(name))

    @context(lambda ref, force=False: f"remove container {ref}")
    def container_rm(self, ref: str, force: bool = False) -> Container:
        ((_, result),) = self.container_rm_many([ref], force)
        if isinstance(result, LowbridgeError):
            raise result
        return result

    def container_rm_many(
        self, refs: list[str], force: bool = False
    ) -> list[tuple[str, Container | LowbridgeError]]:
        """Remove several sandboxes in one change (``docker rm a b c``): each reference gets
        its container or the error that kept it (the others go on, as Docker's do); a
        reference given twice is answered once.  One lock, one firewall change, one conntrack
        walk and one batch of link deletions for all of them: each deletion costs the kernel
        RCU grace periods (~17 ms here), a batch pays them once (bench/lab.py)."""
        from lowbridge.controller import teardown

        with self.change("container-rm", forward=True) as c:
            found: dict[str, Container | LowbridgeError] = {}
            chosen: dict[str, Container] = {}
            for ref in refs:
                try:
                    ctr = c.view.container(ref)
                except LowbridgeError as exc:
                    found[ref] = exc
                    continue
                found[ref] = chosen.setdefault(ctr.id, ctr)
            busy = {} if force else self._busy(list(chosen.values()))
            doomed = [x for x in chosen.values() if x.id not in busy]
            if doomed:
                teardown.remove(c, doomed, kill=force)
        return [
            (ref, busy.get(got.id, got) if isinstance(got, Container) else got)
            for ref, got in found.items()
        ]

    def _busy(self, ctrs: list[Container]) -> dict[str, LowbridgeError]:
        """The sandboxes that run something (``rm`` without ``-f`` keeps them).  An adopted
        namespace's processes are not lowbridge's: ``rm`` only detaches it."""
        owned = sandbox.running_pids([x.netns for x in ctrs if x.netns_owned])
        host = self.running([x for x in ctrs if x.borrows])
        return {
            x.id: Conflict(
                f"cannot remove container {x.name}: it is running (stop it first, or use rm -f)"
            )
            for x in ctrs
            # Its supervisor counts too: its command may not have entered the namespace yet.
            if owned.get(x.netns) or host.get(x.id) or (x.state == RUNNING and lifecycle.alive(x))
        }

    def preview(self, gone_networks, gone_sandboxes, net_reqs, box_reqs, joins=()):  # noqa: ANN001, ANN201
        """What removing and then making these would leave, touching nothing
        (lowbridge.controller.preview): a Preview."""
        from lowbridge.controller import preview

        return preview.preview(self, gone_networks, gone_sandboxes, net_reqs, box_reqs, joins)

    # ------------------------------------------------------------------ firewall
    def explain(self, a: str, b: str, port: int = 0, proto: str = "tcp"):  # noqa: ANN201
        """Whether ``a`` reaches ``b`` and why (lowbridge.explain): an Explanation."""
        from lowbridge import explain
        from lowbridge.controller import facts

        with facts.gathered(self) as f:
            return explain.explain(f, a, b, port, proto)

    def firewall_show(self) -> str:
        return self.firewall.show(self.firewall.model(self.view()))

    def firewall_reapply(self) -> None:
        """Re-apply every lowbridge rule, e.g. after ``iptables -F`` or ``nft flush ruleset``."""
        with self._mutation():
            self.firewall.reapply(self.firewall.model(self.store.view()))


def _descriptors(need: int) -> None:
    """Raise the soft limit on open descriptors towards ``need`` (at most the hard limit), as
    Go programs and dockerd do at start."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
