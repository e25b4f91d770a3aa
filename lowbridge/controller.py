"""The controller: every lowbridge operation, orchestrated.

Each mutation (1) takes the host-wide lock, so two lowbridge processes never interleave; (2)
reconciles what a reboot or a hand-deleted namespace left behind; (3) validates everything against
the store and the kernel before changing anything; (4) runs its kernel changes as named steps of a
:class:`~lowbridge.txn.Transaction`, each undone if a later one fails; (5) persists the new state
last, in one store transaction.  Read-only operations take no lock and import no pyroute2.

The kernel layer (:mod:`lowbridge.netlink`) is imported inside the mutating methods only, so
``ls``/``inspect`` start fast.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

from lowbridge import config, drivers, ipam, links, names, netns, ports, sandbox
from lowbridge.config import Paths
from lowbridge.dns import records as dns_records
from lowbridge.drivers.base import HostView, NetworkRequest, SandboxRef
from lowbridge.errors import (
    CasConflict,
    Conflict,
    InvalidInput,
    KernelError,
    LowbridgeError,
    NotFound,
)
from lowbridge.models import (
    DEFAULT_NETWORK,
    PREDEFINED,
    Container,
    Endpoint,
    Network,
    gateway_endpoint,
)
from lowbridge.ports import PortMapping
from lowbridge.store import Store, open_store
from lowbridge.txn import Transaction

if TYPE_CHECKING:
    from lowbridge.netlink import Session

DEFAULT_BRIDGE_OPTIONS = {
    "com.docker.network.bridge.default_bridge": "true",
    "com.docker.network.bridge.enable_icc": "true",
    "com.docker.network.bridge.enable_ip_masquerade": "true",
    "com.docker.network.bridge.name": names.DEFAULT_BRIDGE_DEVICE,
    "com.docker.network.driver.mtu": "1500",
}
OPT_ICC = "com.docker.network.bridge.enable_icc"
# Cluster mode's way out for overlay sandboxes (Docker's docker_gwbridge).
GWBRIDGE, GWBRIDGE_DEVICE = "lowbridge_gwbridge", "lb_gwbridge"
IFACE_PREFIX = "eth"
# A bridge holds at most 1023 ports (BR_MAX_PORTS 1024, port 0 reserved): the 1024th enslave
# fails with EXFULL (pyroute2-notes 7.5).
MAX_BRIDGE_PORTS = 1023


@dataclass
class ContainerRequest:
    """What ``container create`` / ``run`` asks for, as docker's flags say it."""

    name: str | None = None
    network: str = DEFAULT_NETWORK
    ip: str | None = None
    netns: str | None = None  # adopt this namespace instead of creating one
    command: list[str] | None = None
    publish: list[str] = field(default_factory=list)  # -p specs
    hostname: str | None = None
    add_hosts: list[str] = field(default_factory=list)  # NAME:IP or NAME:host-gateway
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)  # --network-alias
    links: list[str] = field(default_factory=list)  # --link NAME[:ALIAS]
    expose: list[str] = field(default_factory=list)  # --expose PORT[/PROTO]
    env: list[str] = field(default_factory=list)  # -e KEY=VALUE (or KEY: from our environment)


def _context(describe: Callable[..., str]) -> Callable:
    """Prefix any LowbridgeError of the wrapped operation with what it was asked to do
    ("connect web to mynet: create veth lbv...: File exists")."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN202
            try:
                return fn(self, *args, **kwargs)
            except LowbridgeError as exc:
                raise exc.within(describe(*args, **kwargs)) from None

        return wrapper

    return decorate


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


class Controller:
    """lowbridge's operations on one host (see the module docstring for the rules they follow)."""

    def __init__(
        self,
        paths: Paths | None = None,
        store: Store | None = None,
        firewall_backend: str | None = None,
    ):
        self.paths = paths or Paths.resolve()
        self.store: Store = store or open_store(self.paths)
        self._locked = False
        # Resolver sockets bound by this command, handed to the resolver after the commit.
        self._dns_adopt: dict[str, tuple] = {}
        self.firewall_backend = firewall_backend or config.firewall_backend()

    # ------------------------------------------------------------------ locking and reconcile
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """:func:`lowbridge.config.host_lock`, re-entrant within this controller."""
        if self._locked:
            yield
            return
        with config.host_lock(self.paths):
            self._locked = True
            try:
                yield
            finally:
                self._locked = False

    @contextlib.contextmanager
    def _mutation(self) -> Iterator[Session]:
        """Lock, open the host netlink session, initialise and reconcile; yield the session."""
        from lowbridge import netlink

        cached = getattr(self.store, "cached", contextlib.nullcontext)
        with self._lock(), cached(), netlink.session() as nl:
            self._join_cluster(nl)
            self._init_predefined(nl)
            self._ensure_gwbridge(nl)
            self._reconcile(nl)
            try:
                yield nl
            finally:
                self._overlay_sync()
                self._dns_sync()

    # ------------------------------------------------------------------ cluster mode
    @property
    def cluster(self):  # noqa: ANN201
        """The cluster store, or None on a single host."""
        # Only a cluster store can have come from lowbridge.cluster: on a single host that
        # module (and its etcd client, asyncio and grpc) is never imported.
        mod = sys.modules.get("lowbridge.cluster")
        return self.store if mod is not None and isinstance(self.store, mod.ClusterStore) else None

    def _join_cluster(self, nl: Session) -> None:
        """Cluster mode: find this host's VTEP address and announce it."""
        cluster = self.cluster
        if cluster is None or cluster.vtep:
            return
        vtep = config.vtep_address()
        if vtep is None:
            host, _ = cluster.kv.endpoints[0]
            try:
                vtep = nl.route_source(socket.gethostbyname(host))
            except OSError:
                vtep = None
        if vtep is None:
            raise InvalidInput(
                "cannot tell this host's VXLAN address: set vtep in the config or LOWBRIDGE_VTEP"
            )
        cluster.vtep = vtep
        cluster.register_host(vtep)

    def _ensure_gwbridge(self, nl: Session) -> None:
        """Cluster mode: the local bridge overlay sandboxes leave by (Docker's docker_gwbridge:
        ICC off, masquerade), as a predefined network; its device comes with its first
        endpoint."""
        if self.cluster is None or any(n.name == GWBRIDGE for n in self.store.networks()):
            return
        from lowbridge.drivers import bridge

        req = NetworkRequest(
            name=GWBRIDGE,
            options={
                bridge.OPT_BRIDGE_NAME: GWBRIDGE_DEVICE,
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
            },
        )
        view = HostView(networks=self.store.networks(), link_kinds={}, reserved=self._reserved(nl))
        net = drivers.get("bridge").validate(req, names.new_id(), view)
        net.predefined = True
        with self.store.transaction():
            self.store.put_network(net)

    def _egress(
        self, net: Network, ctr: Container, pending: list[Endpoint], tx: Transaction,
        nl: Session, snl: Session,
    ) -> list[Endpoint]:  # fmt: skip
        """A sandbox joining a non-internal overlay also joins the gwbridge (its way out and
        its default route), once."""
        if net.driver != "overlay" or net.internal or self.cluster is None:
            return []
        gw = next(n for n in self.store.networks() if n.name == GWBRIDGE)
        if any(e.network_id == gw.id for e in self.store.endpoints(container_id=ctr.id)):
            return []
        return [self._connect(gw, ctr, None, tx, nl, snl, pending=pending)]

    def _egress_leftover(
        self, ep: Endpoint, eps: list[Endpoint], nets: dict[str, Network]
    ) -> list[Endpoint]:
        """The gwbridge endpoint to remove with ``ep`` (the sandbox's last way to need it)."""
        net = nets[ep.network_id]
        if net.driver != "overlay" or net.internal:
            return []
        others = [e for e in eps if e is not ep and nets[e.network_id].driver == "overlay"
                  and not nets[e.network_id].internal]  # fmt: skip
        gw = [e for e in eps if nets[e.network_id].name == GWBRIDGE]
        return [] if others else gw

    def _overlay_sync(self) -> None:
        """After a change (best effort): bring this host's VXLAN entries in line with the
        cluster store, as ``lowbridge agent`` does on every change it sees."""
        cluster = self.cluster
        if cluster is None:
            return
        from lowbridge.drivers import overlay

        try:
            for net in self.store.networks():
                if net.driver == "overlay":
                    overlay.sync(net, self.store.endpoints(network_id=net.id), cluster.host)
        except LowbridgeError as exc:
            print(f"lowbridge: warning: sync overlay entries: {exc}", file=sys.stderr)

    def _init_predefined(self, nl: Session | None) -> None:
        """Create the records of bridge, host and none once (like dockerd's first start).

        The default bridge takes the first free default pool (172.17.0.0/16 on a clean host) before
        any user network can; its device is made when the first sandbox joins it.
        """
        present = {n.name for n in self.store.networks() if n.predefined}
        if present >= set(PREDEFINED):
            if nl is not None:
                self._apply_daemon_config()
            return
        if nl is None:
            with self._mutation():
                return
        reserved = self._reserved(nl)
        others = [n.pool.subnet for n in self.store.networks() if n.pool]
        with self.store.transaction():
            for name in PREDEFINED:
                if name in present:
                    continue
                net = Network(id=names.new_id(), name=name, driver=name, predefined=True)
                if name == DEFAULT_NETWORK:
                    net.pool = ipam.plan_pool(
                        subnet=None,
                        gateway=None,
                        ip_range=None,
                        aux_addresses=None,
                        taken=others,
                        reserved=reserved,
                    )
                    net.options = dict(DEFAULT_BRIDGE_OPTIONS)
                    net.options[OPT_ICC] = str(config.default_bridge_icc()).lower()
                    net.device = names.DEFAULT_BRIDGE_DEVICE
                self.store.put_network(net)

    def _apply_daemon_config(self) -> None:
        """Follow a changed ``icc`` setting (dockerd --icc) on the default bridge, as dockerd
        does when it restarts with a new flag: the record, then the rules."""
        bridge = next(n for n in self.store.networks() if n.is_default_bridge)
        want = str(config.default_bridge_icc()).lower()
        if bridge.options.get(OPT_ICC) == want:
            return
        before = self._fw_model()
        with self.store.transaction():
            bridge.options[OPT_ICC] = want
            self.store.put_network(bridge)
            self._fw_change(before, self._fw_model())

    def _reconcile(self, nl: Session) -> None:
        """Repair what happened while lowbridge was not looking.

        * After a reboot (the runtime marker is gone) re-create every user-defined network's
          device; the default bridge comes back when a sandbox next joins it.
        * Reap sandboxes whose namespace is gone (a reboot, or ``ip netns del`` by hand): their
          endpoints and addresses are released.
        """
        booted = not os.path.exists(self.paths.boot_marker)
        if booted:
            for net in self.store.networks():
                if not net.predefined:
                    drivers.get(net.driver).ensure(net, nl)
        # One listing of the namespaces' directory instead of a stat per sandbox (every change
        # runs this): a namespace deleted by hand (ip netns del) is unlinked from it; those
        # not listed (gone, or kept elsewhere) are checked one by one.
        folder = netns.NETNS_RUN_DIR
        try:
            known = {f"{folder}/{name}" for name in os.listdir(folder)}
        except OSError:
            known = set()
        dead = [
            c for c in self.store.containers()
            if c.netns not in known and not c.host_network and not netns.is_netns(c.netns)
        ]  # fmt: skip
        if dead:
            self._teardown(dead, nl, kill=False, sync_firewall=False)
        if booted or dead:
            self._firewall().apply(self._fw_model())  # the rules died with the old kernel
            os.makedirs(self.paths.run, exist_ok=True)
            with open(self.paths.boot_marker, "w") as f:
                f.write("")

    def _reserved(self, nl: Session) -> list[IPv4Network]:
        """Host prefixes Docker avoids when it picks a subnet: on-link routes and nameservers."""
        reserved = nl.onlink_routes()
        for server in sandbox.host_nameservers(sandbox.read_host_resolv_conf()):
            with contextlib.suppress(ValueError):
                net = IPv4Network(server)
                reserved.append(net)
        return reserved

    # ------------------------------------------------------------------ lookups (read-only)
    def networks(self) -> list[Network]:
        self._ensure_initialised()
        return self.store.networks()

    def containers(self) -> list[Container]:
        return self.store.containers()

    def _ensure_initialised(self) -> None:
        if {n.name for n in self.store.networks() if n.predefined} < set(PREDEFINED):
            self._init_predefined(None)

    def network(self, ref: str) -> Network:
        return _resolve("network", ref, self.networks())

    def container(self, ref: str) -> Container:
        return _resolve("container", ref, self.store.containers())

    def endpoints(self, network: Network | None = None, container: Container | None = None):
        return self.store.endpoints(
            network.id if network else None, container.id if container else None
        )

    def running(self, containers: list[Container]) -> dict[str, list[int]]:
        """Container id -> pids running in its sandbox (for status columns)."""
        by_path = sandbox.running_pids(c.netns for c in containers if not c.host_network)
        out = {c.id: by_path.get(c.netns, []) for c in containers}
        for c in containers:
            if c.host_network:  # it shares the host's namespace: only its own process counts
                alive = c.pid and sandbox.start_time(c.pid) == c.pid_start
                out[c.id] = [c.pid] if alive else []
        return out

    # ------------------------------------------------------------------ networks
    @_context(lambda req: f"create network {req.name}")
    @_retry_races
    def network_create(self, req: NetworkRequest) -> Network:
        names.validate_name("network", req.name)
        driver = drivers.get(req.driver)
        with self._mutation() as nl:
            existing = self.store.networks()
            if any(n.name == req.name for n in existing):
                raise Conflict(f"network with name {req.name} already exists")
            view = HostView(
                networks=existing,
                link_kinds={link.name: link.kind for link in nl.links()},
                reserved=self._reserved(nl),
            )
            net = driver.validate(req, names.new_id(), view)
            with Transaction("network-create") as tx:
                driver.create(net, tx, nl)
                self._persist([tx], lambda: self.store.put_network(net))
            return net

    @_context(lambda ref: f"remove network {ref}")
    def network_rm(self, ref: str) -> Network:
        with self._mutation() as nl:
            net = self.network(ref)
            if net.predefined:
                raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
            if self.store.endpoints(network_id=net.id):
                raise Conflict(
                    f"error while removing network: network {net.name} id {net.id} "
                    "has active endpoints"
                )
            self._remove_network(net, nl)
            return net

    def network_prune(self) -> list[Network]:
        removed = []
        with self._mutation() as nl:
            for net in self.store.networks():
                if not net.predefined and not self.store.endpoints(network_id=net.id):
                    self._remove_network(net, nl)
                    removed.append(net)
        return removed

    def _remove_network(self, net: Network, nl: Session) -> None:
        """Rules first, then the device (Docker's order), the record last; all or nothing."""
        before = self._fw_model()
        with self.store.transaction():
            self.store.delete_network(net.id)
            # The model read inside the transaction no longer has the network.
            undo = self._fw_change(before, self._fw_model())
            try:
                others = [n for n in self.store.networks() if n.id != net.id]
                drivers.get(net.driver).delete(net, nl, others)
            except BaseException:
                undo()
                raise

    @_context(lambda net_ref, ctr_ref, *a, **k: f"connect {ctr_ref} to {net_ref}")
    @_retry_races
    def network_connect(
        self, net_ref: str, ctr_ref: str, ip: str | None = None, aliases: list[str] = ()
    ) -> Endpoint:
        from lowbridge import netlink

        with self._mutation() as nl:
            net, ctr = self.network(net_ref), self.container(ctr_ref)
            if ctr.host_network:
                raise Conflict(
                    "container sharing network namespace with another container or host cannot "
                    "be connected to any other network"
                )
            # The sandbox session outlives the transaction: undos may need it.
            with netlink.session(ctr.netns) as snl, Transaction("network-connect") as tx:
                ep = self._connect(net, ctr, ip, tx, nl, snl, list(aliases))
                extra = self._egress(net, ctr, [ep], tx, nl, snl)

                def write() -> None:
                    for new in (ep, *extra):
                        self.store.put_endpoint(new)
                    self.store.put_container(ctr)  # the resolver's ports, if new

                self._persist([tx], write)
            self._flush_conntrack(ctr, ep)
            return ep

    @_context(lambda net_ref, ctr_ref: f"disconnect {ctr_ref} from {net_ref}")
    def network_disconnect(self, net_ref: str, ctr_ref: str) -> None:
        from lowbridge import netlink

        with self._mutation() as nl:
            net, ctr = self.network(net_ref), self.container(ctr_ref)
            eps = self.store.endpoints(container_id=ctr.id)
            ep = next((e for e in eps if e.network_id == net.id), None)
            if ep is None:
                raise NotFound(f"container {ctr.name} is not connected to network {net.name}")
            if net.driver == "host":
                raise InvalidInput(
                    "container cannot be disconnected from host network or connected to host "
                    "network"
                )
            nets = {n.id: n for n in self.store.networks()}
            drop = [ep, *self._egress_leftover(ep, eps, nets)]
            remaining = [e for e in eps if e not in drop]
            with self.store.transaction():
                for gone in drop:
                    gone_net = nets[gone.network_id]
                    self.store.delete_endpoint(gone_net.id, ctr.id)
                    drivers.get(gone_net.driver).disconnect(gone_net, gone, nl, ctr.netns)
                # Deleting the interface took its routes; if it carried the default route, the
                # next endpoint in Docker's order takes over.
                before, after = gateway_endpoint(eps, nets), gateway_endpoint(remaining, nets)
                if after is not None and after is not before:
                    with netlink.session(ctr.netns) as snl:
                        snl.replace_default_route(after.gateway, after.ifname)
                self._write_etc(ctr, remaining)
                self._sync_firewall(f"disconnect {ctr.name} from {net.name}")
            self._forget_flows(drop)

    # ------------------------------------------------------------------ connect internals
    def _connect(
        self,
        net: Network,
        ctr: Container,
        ip: str | None,
        tx: Transaction,
        nl: Session,
        snl: Session,
        aliases: list[str] | None = None,
        pending: list[Endpoint] = (),  # type: ignore[assignment]
    ) -> Endpoint:
        """Validate and build one endpoint (kernel only); the caller persists it (and ``ctr``,
        which gains its resolver ports when it first joins a user-defined network).

        ``nl``/``snl`` are open sessions on the host and in the sandbox that stay open until
        ``tx`` has finished (its undos use them).
        """
        eps = self.store.endpoints(container_id=ctr.id) + list(pending)
        nets = {n.id: n for n in self.store.networks()}
        if any(e.network_id == net.id for e in eps):
            raise Conflict(f"endpoint with name {ctr.name} already exists in network {net.name}")
        if (net.driver == "none" and eps) or any(nets[e.network_id].driver == "none" for e in eps):
            raise Conflict(
                "container cannot be connected to multiple networks with one of the networks in "
                "private (none) mode"
            )
        driver = drivers.get(net.driver)
        if driver.name == "host":
            driver.connect(net, None, None, tx, nl)  # type: ignore[arg-type] - raises
        if ip is not None and (net.predefined or not net.user_subnet):
            raise InvalidInput(
                "user specified IP address is supported only when connecting to networks with "
                "user configured subnets"
            )
        if aliases and not dns_records.dns_enabled(net):
            raise InvalidInput(
                "network-scoped alias is supported only for containers in user defined networks"
            )
        for alias in aliases or ():
            names.validate_hostname(alias)
        ep = Endpoint(
            id=names.new_id(),
            network_id=net.id,
            container_id=ctr.id,
            ifname="",
            aliases=list(dict.fromkeys(aliases or ())),
            container_name=ctr.name,
        )
        ep.dns_names = dns_records.endpoint_names(ctr, ep)
        listening: list[Callable] = []
        if dns_records.dns_enabled(net) and not ctr.dns_ports:
            # Docker starts a sandbox's resolver when it first joins a user-defined network.
            # Started first, waited for last: the namespace worker binds the sockets and loads
            # the redirect (~2 ms) while this thread builds the interface.
            tx.step(
                "dns-redirect",
                lambda: listening.append(self._dns_listen(ctr)),
                lambda: _after(listening, lambda: self._dns_unlisten(ctr)),
            )
        else:
            tx.step("dns-redirect", lambda: None)
        if driver.has_interfaces:
            self._build_interface(net, ctr, ep, ip, eps, nets, tx, nl, snl)
        before_files = sandbox.read_files(self.paths.etc_dir(ctr.name))
        tx.step(
            "etc-files",
            lambda: self._write_etc(ctr, [*eps, ep]),
            lambda: sandbox.write_files(self.paths.etc_dir(ctr.name), before_files),
        )
        if listening:
            u, t = listening[0]()
            ctr.dns_ports = [u.getsockname()[1], t.getsockname()[1]]
        return ep

    def _dns_listen(self, ctr: Container) -> Callable[[], tuple[socket.socket, socket.socket]]:
        """Start binding the resolver's sockets in the sandbox and redirecting 127.0.0.11:53 to
        them, in the namespace worker; return the wait for it, which files the sockets to go
        to the resolver after the commit (:meth:`_dns_sync`) or to be closed by an undo."""
        from lowbridge.dns import redirect

        backend = self._firewall().backend.name
        wait = netns.start_in(ctr.netns, lambda: redirect.listen(backend))

        def listened() -> tuple[socket.socket, socket.socket]:
            try:
                self._dns_adopt[ctr.id] = wait()
            except OSError as exc:
                raise KernelError.from_os("bind the DNS resolver's sockets", exc) from None
            return self._dns_adopt[ctr.id]

        return listened

    def _dns_unlisten(self, ctr: Container) -> None:
        from lowbridge.dns import redirect

        for sock in self._dns_adopt.pop(ctr.id, ()):
            sock.close()
        backend = self._firewall().backend.name
        netns.run_in(ctr.netns, lambda: redirect.remove(backend))
        ctr.dns_ports = []

    def _dns_sync(self) -> None:
        """At the end of every mutation, under the lock: bring the resolver in line with the
        store (start it if a sandbox needs it, hand it new sockets; it exits when none needs
        it).  Best effort: a failure is a warning, and the next command retries.

        Only a change after which no sandbox needs the resolver waits for its answer (it may
        be exiting); the others go on while it re-reads the store (O(sandboxes), ~20 ms at
        500): it applies pending messages before it answers any query."""
        from lowbridge.dns import control

        adopt, self._dns_adopt = self._dns_adopt, {}
        try:
            need = bool(adopt) or any(c.dns_ports for c in self.store.containers())
            control.sync(self.paths, adopt, start=need, wait=not need)
        except LowbridgeError as exc:
            print(f"lowbridge: warning: embedded DNS: {exc}", file=sys.stderr)
        finally:
            for pair in adopt.values():
                for sock in pair:
                    sock.close()

    def _build_interface(
        self,
        net: Network,
        ctr: Container,
        ep: Endpoint,
        ip: str | None,
        eps: list[Endpoint],
        nets: dict[str, Network],
        tx: Transaction,
        nl: Session,
        snl: Session,
    ) -> None:
        """Address, interface and default route of an endpoint with an interface."""
        driver = drivers.get(net.driver)
        used = self.store.addresses(net.id)
        if net.driver == "bridge" and len(used) >= MAX_BRIDGE_PORTS:
            raise Conflict(f"network {net.name} is full: a bridge holds at most 1023 ports")
        addr = ipam.allocate(net.pool, used, ip)
        ep.ip, ep.prefixlen = str(addr), net.pool.subnet.prefixlen
        gateway = net.pool.gateway
        # An overlay's gateway is no way out (Docker leaves overlay sandboxes through
        # docker_gwbridge): no default route through it.
        no_route = net.internal or gateway is None or net.driver == "overlay"
        ep.gateway = None if no_route else str(gateway)
        with contextlib.ExitStack() as stack:
            if ctr.netns_owned:  # only lowbridge adds interfaces to the sandboxes it made
                taken = {e.ifname for e in eps}
            else:
                taken = {link.name for link in snl.links()}
            ep.ifname = names.lowest_free_ifname(IFACE_PREFIX, taken)
            fd = os.open(ctr.netns, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            ref = SandboxRef(
                ctr.netns,
                fd,
                snl,
                ctr.netns_owned,
                hairpin=bool(ctr.ports),
                vtep=self.cluster.vtep if self.cluster else None,
            )
            index = driver.connect(net, ep, ref, tx, nl)
            before, after = gateway_endpoint(eps, nets), gateway_endpoint([*eps, ep], nets)
            if after is ep:
                tx.step(
                    "default-route",
                    lambda: snl.replace_default_route(ep.gateway, index),
                    # Undone with the veth, unless another endpoint had the route before.
                    before and (lambda: snl.replace_default_route(before.gateway, before.ifname)),
                )
            else:
                tx.step("default-route", lambda: None)

    def _write_etc(self, ctr: Container, eps: list[Endpoint]) -> None:
        nets = {n.id: n for n in self.store.networks()}
        embedded = any(dns_records.dns_enabled(nets[e.network_id]) for e in eps
                       if e.network_id in nets)  # fmt: skip
        extra = [tuple(h) for h in ctr.extra_hosts] + self._link_hosts(ctr, eps, nets)
        files = {
            "hosts": sandbox.render_hosts(ctr.hostname, [e.ip for e in eps if e.ip], extra),
            "resolv.conf": sandbox.render_resolv_conf(
                sandbox.read_host_resolv_conf(),
                ctr.dns,
                ctr.dns_search,
                ctr.dns_options,
                embedded=embedded,
            ),
        }
        if os.path.exists("/etc/hostname"):  # ip netns exec binds only over files that exist
            files["hostname"] = ctr.hostname + "\n"
        sandbox.write_files(self.paths.etc_dir(ctr.name), files)

    def _link_hosts(
        self, ctr: Container, eps: list[Endpoint], nets: dict[str, Network]
    ) -> list[tuple[str, str]]:
        """hosts lines for legacy links: only between sandboxes on the default bridge."""
        if not ctr.links or not any(nets[e.network_id].is_default_bridge for e in eps
                                    if e.network_id in nets):  # fmt: skip
            return []
        out = []
        for name, alias in ctr.links:
            child = next((c for c in self.store.containers() if c.name == name), None)
            ip = child and self._default_bridge_ip(child, nets)
            if ip:
                out.append((links.hosts_names(alias, child.hostname, child.name), ip))
        return out

    def _default_bridge_ip(self, ctr: Container, nets: dict[str, Network]) -> str | None:
        for ep in self.store.endpoints(container_id=ctr.id):
            if ep.network_id in nets and nets[ep.network_id].is_default_bridge:
                return ep.ip
        return None

    def _links(self, req: ContainerRequest, net: Network, name: str) -> tuple[list, list[str]]:
        """Validate ``--link``s; return [[name, alias]] and the environment they add (default
        bridge only; on user-defined networks a link is a sandbox-local DNS alias)."""
        out, env = [], []
        nets = {n.id: n for n in self.store.networks()}
        for spec in req.links:
            target, alias = links.parse(spec)
            try:
                child = self.container(target)
            except NotFound:
                raise InvalidInput(f"could not get container for {target}: no such container")\
                    from None  # fmt: skip
            if child.name == name:
                raise InvalidInput(f"cannot link {name} to itself")
            out.append([child.name, alias])
            if net.is_default_bridge:
                ip = self._default_bridge_ip(child, nets)
                if ip is None:
                    raise InvalidInput(
                        f"Cannot link to /{child.name}, as it does not belong to the default "
                        "network"
                    )
                exposed = ports.exposed(child.expose, child.ports)
                env += links.env(name, alias, ip, exposed, child.env)
        return out, env

    def _extra_host(self, spec: str) -> tuple[str, str]:
        """``--add-host NAME:IP`` (or ``NAME=IP``); ``host-gateway`` is the default bridge's
        gateway address, as Docker resolves it."""
        sep = "=" if "=" in spec else ":"
        name, _, ip = spec.partition(sep)
        if not name or not ip:
            raise InvalidInput(f"invalid --add-host {spec!r}: expected NAME:IP")
        names.validate_hostname(name)
        if ip == "host-gateway":
            bridge = self.network(DEFAULT_NETWORK)
            return name, str(bridge.pool.gateway)
        try:
            return name, str(ipaddress.ip_address(ip.strip("[]")))
        except ValueError:
            raise InvalidInput(f"invalid --add-host {spec!r}: {ip!r} is not an address") from None

    def _persist(self, txs: list[Transaction], write) -> None:  # noqa: ANN001
        """Write the store last, in one transaction, with the firewall brought in line just
        before the commit (its rules are rendered from the store's view inside the transaction);
        honour the test switch before commit."""
        before = self._fw_model()
        with self.store.transaction():
            write()
            self._commit_steps(txs, before)

    def _commit_steps(self, txs: list[Transaction], before) -> None:  # noqa: ANN001
        """Inside the store transaction, after the writes: the firewall from model ``before``
        to the store's view (a step of the first transaction), then the test switch."""
        undo: list = []
        txs[0].step(
            "firewall",
            lambda: undo.append(self._fw_change(before, self._fw_model())),
            lambda: undo and undo[0](),
        )
        for tx in txs:
            tx.check("persist")

    # ------------------------------------------------------------------ firewall
    def _firewall(self):  # noqa: ANN202
        from lowbridge import firewall

        return firewall.Firewall(self.firewall_backend, self.paths.run)

    def _fw_model(self):  # noqa: ANN202
        """The firewall's model of the store as it stands (firewall.model keeps its last
        result: a library user's next change extends it rather than redoing it)."""
        from lowbridge import firewall

        return firewall.model(
            self.store.networks(), self.store.containers(), self.store.endpoints()
        )

    def _fw_change(self, before, after) -> Callable[[], None]:  # noqa: ANN001
        """Bring the firewall from model ``before`` to ``after``; return the undo (which puts
        back ``before``'s rules and the kernel settings as they were)."""
        from lowbridge.firewall import rules as R

        rules_before, rules_after = R.render(before), R.render(after)
        if rules_before == rules_after and R.settings(before) == R.settings(after):
            return lambda: None
        fw = self._firewall()
        restore = fw.apply(after, rules_after)

        def undo() -> None:
            restore()
            fw.apply(before, rules_before)

        return undo

    def _flush_conntrack(self, ctr: Container, ep: Endpoint) -> None:
        """After a change is committed: forget UDP flows to the sandbox's published host ports,
        which began before the DNAT existed (best effort; Docker #8795).

        Flows towards a *reused* address are forgotten when the address is released instead
        (:meth:`_forget_flows`): Docker does both here, but a conntrack dump walks the kernel's
        whole hash table (~15 ms here even when it is empty), which a sandbox should not wait
        for.
        """
        from lowbridge import netlink

        try:
            for doc in ctr.ports:
                mapping = PortMapping.from_doc(doc)
                if mapping.proto == "udp":
                    netlink.flush_conntrack(proto="udp", dport=mapping.host_port)
        except LowbridgeError as exc:
            print(f"lowbridge: warning: {ctr.name}: {exc}", file=sys.stderr)

    def _forget_flows(self, eps: list[Endpoint]) -> None:
        """After endpoints went (best effort): delete conntrack entries towards their addresses,
        so a sandbox that gets one of them next does not inherit the old flows' NAT."""
        from lowbridge import netlink

        addresses = [ep.ip for ep in eps if ep.ip]
        if not addresses:
            return
        try:
            netlink.flush_conntrack(dsts=addresses)
        except LowbridgeError as exc:
            print(f"lowbridge: warning: forget flows to {addresses}: {exc}", file=sys.stderr)

    def _sync_firewall(self, what: str) -> None:
        """Best effort after a teardown: rules of removed objects go; failures are warnings."""
        try:
            self._firewall().apply(self._fw_model())
        except LowbridgeError as exc:
            print(f"lowbridge: warning: {what}: update firewall: {exc}", file=sys.stderr)

    def firewall_show(self) -> str:
        return self._firewall().show(self._fw_model())

    def firewall_reapply(self) -> None:
        """Re-apply every lowbridge rule, e.g. after ``iptables -F`` or ``nft flush ruleset``."""
        with self._mutation():
            self._firewall().reapply(self._fw_model())

    # ------------------------------------------------------------------ containers
    @_context(lambda req: f"create container {req.name or ''}".rstrip())
    @_retry_races
    def container_create(self, req: ContainerRequest) -> Container:
        return self._create_many([req])[0]

    @_context(lambda reqs: f"create {len(reqs)} containers")
    @_retry_races
    def container_create_many(self, reqs: list[ContainerRequest]) -> list[Container]:
        """Create several sandboxes in one change, all or none (a lab's set-up): one lock, one
        store transaction, one firewall change and one resolver sync for all of them.

        Each sandbox holds a few descriptors until the change commits (its netlink socket and
        resolver sockets): the soft descriptor limit is raised to the hard one when needed.
        Overlay networks take one sandbox at a time (their leases are the cluster's)."""
        if len(reqs) > 1 and self.cluster is not None:
            raise InvalidInput("in cluster mode containers are created one at a time")
        _descriptors(4 * len(reqs) + 256)
        return self._create_many(reqs)

    def _create_many(self, reqs: list[ContainerRequest]) -> list[Container]:
        made: list[tuple[Container, Endpoint | None]] = []
        with self._mutation() as nl:
            before = self._fw_model()
            # Kernel undo stacks outside, the store transaction inside: a failed commit still
            # unwinds the kernel; a failure before it rolls the store back first.
            with contextlib.ExitStack() as kernel:
                txs: list[Transaction] = []
                # Namespaces made ahead (name -> wait, see _make_ahead); those a failure left
                # unused go with the change.
                ahead: dict[str, Callable] = {}
                kernel.callback(_drop_ahead, ahead)
                with self.store.transaction():
                    taken = {c.name for c in self.store.containers()}
                    cids = [names.new_id() for _ in reqs]
                    # Each sandbox starts the next one's namespace once it has its own.
                    nexts = [functools.partial(self._make_ahead, r, c, taken, ahead)
                             for r, c in zip(reqs[1:], cids[1:], strict=True)] + [None]  # fmt: skip
                    for req, cid, following in zip(reqs, cids, nexts, strict=True):
                        try:
                            made.append(self._create_one(req, cid, nl, kernel, txs, taken, ahead,
                                                         following))  # fmt: skip
                        except LowbridgeError as exc:
                            if len(reqs) == 1:
                                raise
                            raise exc.within(f"create container {req.name or ''}") from None
                    if txs:
                        self._commit_steps(txs, before)
        for ctr, ep in made:
            if ep is not None:
                self._flush_conntrack(ctr, ep)
        return [ctr for ctr, _ in made]

    def _create_one(
        self,
        req: ContainerRequest,
        cid: str,
        nl: Session,
        kernel: contextlib.ExitStack,
        txs: list[Transaction],
        taken: set[str],
        ahead: dict[str, Callable],
        following: Callable[[], None] | None = None,
    ) -> tuple[Container, Endpoint | None]:
        """Validate ``req`` and build its sandbox (id ``cid``) inside the caller's change:
        kernel steps register their undo in transactions entered on ``kernel`` (appended to
        ``txs``), and the records go to the store's open transaction (so the next sandbox's
        checks and address see them).  ``taken``: the container names in use, which gains this
        one.  ``ahead``: namespaces made ahead, of which this sandbox takes its own;
        ``following`` is called once this sandbox's namespace is there (to start the next's).

        The namespace worker makes the namespaces while this thread wires them: the next
        sandbox's network namespace, this one's UTS namespace and its resolver sockets are
        its jobs, waited for only where their results are needed."""
        name = _sandbox_name(req, cid)
        if name in taken:
            raise Conflict(f'the container name "{name}" is already in use')
        taken.add(name)  # (a failed sandbox fails the batch)
        net = self.network(req.network)
        if net.driver == "host":
            ctr, host_ep = self._create_on_host(cid, name, req, net)
            self.store.put_container(ctr)
            self.store.put_endpoint(host_ep)
            return ctr, None
        if req.ip is not None and net.predefined:
            raise InvalidInput(
                "user specified IP address is supported on user defined networks only"
            )
        path = netns.path_of(name)
        if name not in ahead and os.path.lexists(path):
            raise Conflict(f"network namespace {name} already exists (not lowbridge's)")
        if req.publish and net.driver != "bridge":
            raise InvalidInput(f"cannot publish ports of a container on network {net.name}")
        mappings = self._publish(req.publish)
        hostname = names.validate_hostname(req.hostname) if req.hostname else None
        extra_hosts = [list(self._extra_host(spec)) for spec in req.add_hosts]
        for server in req.dns:
            ipam.parse_address(server, "--dns server")
        for spec in req.expose:
            ports.parse_expose(spec)
        if req.links and net.driver in ("host", "none"):
            raise InvalidInput(f"conflicting options: {net.driver} networking can't be used "
                               "with links")  # fmt: skip
        linked, link_env = self._links(req, net, name)
        ctr = Container(
            id=cid,
            name=name,
            netns=path,
            netns_owned=req.netns is None,
            command=list(req.command or []),
            hostname=hostname or names.short_id(cid),
            network_mode=net.name,
            ports=[m.to_doc() for m in mappings],
            extra_hosts=extra_hosts,
            dns=list(req.dns),
            dns_search=list(req.dns_search),
            dns_options=list(req.dns_options),
            expose=list(req.expose),
            links=linked,
            env=[_env_item(item) for item in req.env],
            link_env=link_env,
        )
        from lowbridge import netlink

        tx = kernel.enter_context(Transaction("container-create"))
        if req.netns is None:
            made = ahead.pop(name, None) or netns.create_start(name)
            _, sock = tx.step("create-netns", made, lambda: netns.remove(path))
        else:
            tx.step(
                "create-netns",
                lambda: netns.adopt(req.netns, name),
                lambda: netns.remove(path),
            )
            sock = netns.netlink_socket(path)
        if following is not None:
            following()
        uts = self.paths.uts(name)
        uts_made: list[Callable] = []
        tx.step(
            "create-uts",
            lambda: uts_made.append(netns.create_uts_start(uts, ctr.hostname)),
            lambda: _after(uts_made, lambda: netns.remove(uts)),
        )
        # The sandbox session closes before the change commits: no undo of a new sandbox's
        # steps uses it (the default route's undo only restores an earlier endpoint's route,
        # and a new sandbox has none), and a batch of hundreds must stay below FD_SETSIZE --
        # libnftables select()s on its socket and aborts above 1024.
        with netlink.session(path, sock) as snl:
            tx.step("loopback-up", lambda: snl.set_up("lo"), self._loopback_undo(req, snl, path))
            ctx = kernel.enter_context(Transaction("network-connect"))
            txs += [ctx, tx]
            ep = self._connect(net, ctr, req.ip, ctx, nl, snl, req.aliases)
            extra = self._egress(net, ctr, [ep], ctx, nl, snl)
        uts_made[0]()
        self.store.put_container(ctr)
        for new in (ep, *extra):
            self.store.put_endpoint(new)
        return ctr, ep

    def _make_ahead(
        self, req: ContainerRequest, cid: str, taken: set[str], ahead: dict[str, Callable]
    ) -> None:
        """Start making the network namespace of a batch's next sandbox, when it will surely
        want one by that name; anything doubtful is left to its own checks (_create_one)."""
        if req.netns is not None:
            return
        try:
            name = _sandbox_name(req, cid)
            if name in taken or self.network(req.network).driver == "host":
                return
            if not os.path.lexists(netns.path_of(name)):
                ahead[name] = netns.create_start(name)
        except (LowbridgeError, OSError):  # its own checks will say why
            return

    @staticmethod
    def _loopback_undo(req: ContainerRequest, snl: Session, path: str) -> Callable | None:
        """How to put an adopted namespace's ``lo`` back if the create fails: down again,
        without the 127.0.0.1/8 the kernel gives it on the way up (a namespace lowbridge made
        goes whole).  In a session of its own: the sandbox's closes before the commit."""
        if req.netns is None or snl.link("lo").up:
            return None
        had = snl.ipv4_addresses("lo")

        def undo() -> None:
            from lowbridge import netlink

            with netlink.session(path) as s:
                s.set_up("lo", up=False)
                for address, plen in s.ipv4_addresses("lo"):
                    if (address, plen) not in had:
                        s.delete_address("lo", address, plen)

        return undo

    def _create_on_host(
        self, cid: str, name: str, req: ContainerRequest, net: Network
    ) -> tuple[Container, Endpoint]:
        """``--network host``: no namespace of its own; processes run in the host's network
        and UTS namespaces and see the host's /etc files (Docker shares all three).  What only
        a namespace of its own can have is refused, as Docker refuses it.  Returns the records
        to write."""
        conflicts = {
            "-p/--publish (Docker discards published ports in host mode; the sandbox's ports are "
            "the host's)": req.publish,
            "--ip": req.ip,
            "--network-alias": req.aliases,
            "--link": req.links,
            "--hostname": req.hostname,
            "--add-host": req.add_hosts,
            "--dns/--dns-search/--dns-option": req.dns or req.dns_search or req.dns_options,
            "--netns": req.netns,
        }
        for flag, value in conflicts.items():
            if value:
                raise InvalidInput(f"conflicting options: {flag} and the network mode host")
        for spec in req.expose:
            ports.parse_expose(spec)
        ctr = Container(
            id=cid,
            name=name,
            netns="",
            netns_owned=False,
            command=list(req.command or []),
            hostname=socket.gethostname(),
            network_mode=net.name,
            expose=list(req.expose),
            env=[_env_item(item) for item in req.env],
        )
        return ctr, Endpoint(id=names.new_id(), network_id=net.id, container_id=cid, ifname="")

    def exec_argv(self, ctr: Container, command: list[str]) -> list[str]:
        """argv that runs ``command`` in the sandbox (for ``run``/``exec``)."""
        if ctr.host_network:
            return list(command)
        return sandbox.exec_argv(ctr.name, command, self.paths.uts(ctr.name))

    def _publish(self, specs: list[str]) -> list[PortMapping]:
        """Resolve ``-p`` specs to free host ports (Docker: "port is already allocated")."""
        if not specs:
            return []
        taken = [PortMapping.from_doc(d) for c in self.store.containers() for d in c.ports]
        out: list[PortMapping] = []
        for spec in specs:
            for req in ports.parse(spec):
                out.append(self._pick_port(req, taken + out, spec))
        return out

    @staticmethod
    def _pick_port(req: ports.PortRequest, taken: list[PortMapping], spec: str) -> PortMapping:
        candidates = req.host_ports or ports.ephemeral_range()
        last_error: LowbridgeError | None = None
        for port in candidates:
            mapping = PortMapping(req.host_ip, port, req.container_port, req.proto)
            if any(mapping.overlaps(t) for t in taken):
                last_error = Conflict(
                    f"Bind for {req.host_ip}:{port} failed: port is already allocated"
                )
                continue
            try:
                ports.check_free(mapping)
            except Conflict as exc:
                last_error = exc
                continue
            return mapping
        raise (last_error or Conflict(f"no free host port for {spec}")).within(f"publish {spec}")

    @_context(lambda ref, force=False: f"remove container {ref}")
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
        reference given twice is answered once.

        One lock, one firewall change, one conntrack walk and one batch of link deletions for
        all of them: each deletion costs the kernel RCU grace periods (~17 ms here), a batch
        pays them once (bench/lab.py tears a lab down this way)."""
        with self._mutation() as nl:
            found: dict[str, Container | LowbridgeError] = {}
            chosen: dict[str, Container] = {}
            for ref in refs:
                try:
                    ctr = self.container(ref)
                except LowbridgeError as exc:
                    found[ref] = exc
                    continue
                found[ref] = chosen.setdefault(ctr.id, ctr)
            # An adopted namespace's processes are not lowbridge's: rm only detaches it.
            owned = sandbox.running_pids([c.netns for c in chosen.values() if c.netns_owned])
            host = self.running([c for c in chosen.values() if c.host_network])
            busy: dict[str, LowbridgeError] = {}
            for ctr in chosen.values():
                if (owned.get(ctr.netns) or host.get(ctr.id)) and not force:
                    busy[ctr.id] = Conflict(f"cannot remove container {ctr.name}: it is running "
                                            "(stop it first, or use rm -f)")  # fmt: skip
            doomed = [c for c in chosen.values() if c.id not in busy]
            if doomed:
                self._teardown(doomed, nl, kill=force)
        return [(ref, busy.get(got.id, got) if isinstance(got, Container) else got)
                for ref, got in found.items()]  # fmt: skip

    def _teardown(
        self, ctrs: list[Container], nl: Session, kill: bool, sync_firewall: bool = True
    ) -> None:
        """Remove sandboxes entirely, best effort; the store is updated last."""
        errors: list[tuple[str, str]] = []
        nets = {n.id: n for n in self.store.networks()}
        every: list[Endpoint] = []
        host_ends: list[str] = []
        for ctr in ctrs:
            if kill and ctr.netns_owned:
                _collect(errors, ctr, lambda c=ctr: sandbox.kill_all(c.netns))
            if kill and ctr.host_network and self.running([ctr])[ctr.id]:
                # Its process was started in a session of its own (run -d): end that group.
                _collect(errors, ctr, lambda c=ctr: sandbox.kill_group(c.pid))
            eps = self.store.endpoints(container_id=ctr.id)
            every += eps
            for ep in eps:
                net = nets.get(ep.network_id)
                if net is None:
                    continue
                # Delete host ends explicitly: a namespace that something else still holds (an
                # adopted one, a shell left in `ip netns exec`) would keep them, and even a
                # dying one frees them only asynchronously (~35 ms, pyroute2-notes 7.3).
                if net.driver == "bridge" and ep.host_ifname:
                    host_ends.append(ep.host_ifname)  # all at once, below
                else:
                    _collect(errors, ctr, lambda n=net, e=ep, c=ctr: drivers.get(n.driver)
                             .disconnect(n, e, nl, c.netns))  # fmt: skip
        # The deletions wait for RCU grace periods under the rtnl lock; the firewall change and
        # the conntrack walk below need neither, so they run meanwhile (a thread of our own,
        # with a netlink socket of its own: sessions are not shared between threads).
        deleter = threading.Thread(target=_delete_links, args=(host_ends, errors))
        deleter.start()
        names = ", ".join(c.name for c in ctrs)
        try:
            for ctr in ctrs:
                if ctr.dns_ports and not ctr.netns_owned and netns.is_netns(ctr.netns):
                    _collect(errors, ctr, lambda c=ctr: self._dns_unlisten(c))
                if not ctr.host_network:
                    _collect(errors, ctr, lambda c=ctr: netns.remove(c.netns))
                    _collect(errors, ctr, lambda c=ctr: netns.remove(self.paths.uts(c.name)))
                etc = self.paths.etc_dir(ctr.name)
                _collect(errors, ctr, lambda d=etc: sandbox.remove_files(d))
            with self.store.transaction():
                for ep in every:
                    self.store.delete_endpoint(ep.network_id, ep.container_id)
                for ctr in ctrs:
                    self.store.delete_container(ctr.id)
                if sync_firewall:
                    self._sync_firewall(f"remove {names}")
            self._forget_flows(every)
        finally:
            deleter.join()  # whatever happened above, the links are gone when we return
        for name, text in errors:
            print(f"lowbridge: warning: remove {name or names}: {text}", file=sys.stderr)

    def record_process(self, ctr: Container, pid: int, start: int | None) -> None:
        with self._lock(), self.store.transaction():
            ctr.pid, ctr.pid_start = pid, start
            self.store.put_container(ctr)


def _sandbox_name(req: ContainerRequest, cid: str) -> str:
    """The name a create gives its sandbox (the short id unless named): one function, because a
    namespace made ahead is found by it."""
    return names.validate_name("container", req.name or names.short_id(cid))


def _after(started: list[Callable], undo: Callable[[], object]) -> None:
    """Undo a step whose job may still run: let it finish first (a job that failed has undone
    itself), then ``undo``."""
    for wait in started:
        with contextlib.suppress(Exception):
            wait()
    undo()


def _drop_ahead(ahead: dict[str, Callable]) -> None:
    """Remove the namespaces made ahead that no sandbox took (the batch failed first)."""
    for wait in ahead.values():
        with contextlib.suppress(Exception):
            path, sock = wait()
            sock.close()
            netns.remove(path)
    ahead.clear()


def _env_item(item: str) -> str:
    """``-e KEY=VALUE`` as given; ``-e KEY`` takes KEY's value from our environment (Docker)."""
    key, sep, _ = item.partition("=")
    if not key or " " in key:
        raise InvalidInput(f"invalid environment variable {item!r}")
    if sep:
        return item
    return f"{key}={os.environ.get(key, '')}"


def _delete_links(names: list[str], errors: list[tuple[str, str]]) -> None:
    """Delete host links in a session of this thread's own (best effort: errors noted)."""
    from lowbridge import netlink

    try:
        with netlink.session() as nl:
            nl.delete_links(names)
    except LowbridgeError as exc:
        errors.append(("", str(exc)))


def _descriptors(need: int) -> None:
    """Raise the soft limit on open descriptors towards ``need`` (at most the hard limit), as
    Go programs and dockerd do at start."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))


def _collect(errors: list[tuple[str, str]], ctr: Container, fn) -> None:  # noqa: ANN001
    """Run a best-effort teardown step; note a failure under the sandbox's name."""
    try:
        fn()
    except (LowbridgeError, OSError) as exc:
        errors.append((ctr.name, str(exc)))


def _resolve(kind: str, ref: str, items: list):  # noqa: ANN202
    """Docker's lookup order: full id, then name, then unique id prefix."""
    for item in items:
        if item.id == ref:
            return item
    for item in items:
        if item.name == ref:
            return item
    matches = [item for item in items if item.id.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InvalidInput(f"{kind} {ref} is ambiguous ({len(matches)} matches by id prefix)")
    raise NotFound(f"{kind} {ref} not found")
