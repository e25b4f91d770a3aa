"""The overlay driver: one L2 subnet spanning hosts, over VXLAN, with static forwarding.

Per host and network, made when the host's first sandbox joins (moby ``drivers/overlay``,
docker-mechanics 5): a namespace ``lbo-<network id[:12]>`` holding a bridge ``br0`` with the
gateway address and a VXLAN device ``vxlan0`` (VNI from the network, UDP 4789, created from the
host's namespace so its socket lives in the host's stack), no learning.  Each sandbox gets a veth
whose outer end is a port of ``br0`` in that namespace, MTU 1450 (1500 minus VXLAN's 50 bytes).

Remote sandboxes are programmed statically, as Docker's peer database does: for every endpoint of
the network on another host, a permanent FDB entry (its MAC -> that host's VTEP) and a permanent
neighbour entry (its IP -> its MAC) on ``vxlan0``, whose ``proxy`` mode then answers ARP locally:
no flooding at all (pyroute2-notes 4, S2b).  :func:`sync` brings one network's entries in line
with the cluster store; the CLI calls it on every overlay operation and ``lowbridge agent`` on
every change it sees.

The overlay's own gateway is not a way out (Docker routes overlay sandboxes out through
docker_gwbridge): overlay endpoints carry no default route here.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from lowbridge import ipam, names, netns
from lowbridge.drivers.base import HostView, NetworkRequest, SandboxRef, configure_interface
from lowbridge.errors import Conflict, InvalidInput, KernelError
from lowbridge.models import Network

if TYPE_CHECKING:
    from lowbridge.models import Endpoint
    from lowbridge.netlink import Session
    from lowbridge.txn import Transaction

NS_PREFIX = "lbo-"
BRIDGE, VXLAN = "br0", "vxlan0"
VXLAN_PORT = 4789
MTU = 1450
VNI_FIRST, VNI_LAST = 4096, (1 << 24) - 1
# Docker's global-scope default pool: 10.0.0.0/8 in /24s.
POOLS = (("10.0.0.0/8", 24),)
OPT_MTU = "com.docker.network.driver.mtu"
VNI_OPTION = "com.docker.network.driver.overlay.vxlanid_list"  # the VXLAN id (cluster-wide)
OPT_ATTACHABLE = "lowbridge.attachable"


def ns_name(net: Network) -> str:
    return NS_PREFIX + net.id[:12]


def ns_path(net: Network) -> str:
    return netns.path_of(ns_name(net))


class OverlayDriver:
    name = "overlay"
    has_interfaces = True

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network:
        options = dict(req.options)
        for k in options:
            if k not in (VNI_OPTION, OPT_MTU, OPT_ATTACHABLE):
                raise InvalidInput(f"unknown overlay option {k!r}")
        used = {int(n.options[VNI_OPTION]) for n in host.networks if VNI_OPTION in n.options}
        if VNI_OPTION in options:
            text = options[VNI_OPTION]
            if not text.isdigit() or not 1 <= int(text) <= VNI_LAST:
                raise InvalidInput(f"invalid {VNI_OPTION} {text!r}: a VNI within 1-{VNI_LAST}")
            if int(text) in used:
                raise Conflict(f"VNI {text} is already used by another overlay network")
            vni = int(text)
        else:
            vni = next(v for v in range(VNI_FIRST, VNI_LAST + 1) if v not in used)
        options[VNI_OPTION] = str(vni)
        options.setdefault(OPT_MTU, str(MTU))
        pool = ipam.plan_pool(
            subnet=req.subnet,
            gateway=req.gateway,
            ip_range=req.ip_range,
            aux_addresses=req.aux_addresses,
            taken=[n.pool.subnet for n in host.networks if n.pool is not None],
            reserved=host.reserved,
            pools=POOLS,
        )
        return Network(
            id=network_id,
            name=req.name,
            driver=self.name,
            pool=pool,
            internal=req.internal,
            labels=dict(req.labels),
            options=options,
            user_subnet=req.subnet is not None,
        )

    # ------------------------------------------------------------------ network
    def create(self, net: Network, tx: Transaction, nl: Session) -> None:
        """Nothing in any kernel yet: each host builds its part when a sandbox there joins."""
        for step in ("create-device", "mark-device", "device-address", "device-up"):
            tx.step(step, lambda: None)

    def ensure(self, net: Network, nl: Session) -> bool:
        return False

    def delete(self, net: Network, nl: Session, others: list[Network]) -> None:
        remove_local(net)

    # ------------------------------------------------------------------ endpoints
    def connect(
        self, net: Network, ep: Endpoint, sandbox: SandboxRef, tx: Transaction, nl: Session
    ) -> int:
        from lowbridge import netlink

        vtep = sandbox.vtep
        if not vtep:
            raise InvalidInput("overlay networks need the cluster store (--store etcd://…)")
        ep.mac = names.mac_from_ip(ep.ip)  # the address is unique cluster-wide, so is the MAC
        ep.host_ifname = names.veth_host_name(net.id, ep.container_id)
        made: list[bool] = []

        def ensure() -> None:
            if not netns.is_netns(ns_path(net)):
                made.append(True)
                build_local(net, nl, vtep)

        tx.step("ensure-network", ensure, lambda: made and remove_local(net))

        def create() -> None:
            with netlink.session(ns_path(net)) as ovl:
                bridge = ovl.link(BRIDGE).index
                ovl.create_veth(ep.host_ifname, ep.ifname, peer_netns_fd=sandbox.fd,
                                peer_mac=ep.mac, mtu=net.mtu, master=bridge)  # fmt: skip

        def undo() -> None:
            with netlink.session(ns_path(net)) as ovl:
                ovl.delete_link(ep.host_ifname)

        tx.step("create-interface", create, undo)

        return tx.step("configure-interface", lambda: configure_interface(sandbox, ep))

    def disconnect(
        self, net: Network, ep: Endpoint, nl: Session, sandbox: str | None = None
    ) -> None:
        """The veth's outer end, and the host's overlay namespace once no sandbox uses it."""
        from lowbridge import netlink

        if not netns.is_netns(ns_path(net)):
            return
        with netlink.session(ns_path(net)) as ovl:
            if ep.host_ifname:
                ovl.delete_link(ep.host_ifname)
            ports = [link for link in ovl.links() if link.name not in ("lo", BRIDGE, VXLAN)]
        if not ports:
            remove_local(net)


def build_local(net: Network, nl: Session, vtep: str) -> None:
    """This host's part of an overlay network: namespace, br0 (gateway, MTU), vxlan0."""
    from lowbridge import netlink

    path, sock = netns.create(ns_name(net))
    try:
        with netlink.session(path, sock) as ovl:
            ovl.set_up("lo")
            ovl.create_bridge(BRIDGE, mac=names.random_mac(), mtu=net.mtu)
            if net.pool and net.pool.gateway:
                ovl.add_address(BRIDGE, str(net.pool.gateway), net.pool.subnet.prefixlen)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                nl.create_vxlan(VXLAN, vni=int(net.options[VNI_OPTION]), local=vtep,
                                port=VXLAN_PORT, mtu=net.mtu or MTU, netns_fd=fd)  # fmt: skip
            finally:
                os.close(fd)
            ovl.set_master(VXLAN, BRIDGE)
            ovl.set_up(VXLAN)
            ovl.set_up(BRIDGE)
    except BaseException:
        remove_local(net)
        raise


def remove_local(net: Network) -> None:
    """Delete this host's overlay namespace of ``net`` (its devices go with it)."""
    with contextlib.suppress(KernelError):
        netns.remove(ns_path(net))


def sync(net: Network, endpoints: list[Endpoint], host: str) -> tuple[int, int]:
    """Make ``vxlan0``'s permanent FDB and neighbour entries exactly the remote endpoints of
    ``net`` (those whose host is not ``host``); returns (added, removed).  No-op when this host
    has no part of the network."""
    from lowbridge import netlink

    if not netns.is_netns(ns_path(net)):
        return 0, 0
    want = {ep.mac: (ep.ip, ep.vtep) for ep in endpoints
            if ep.host != host and ep.mac and ep.ip and ep.vtep}  # fmt: skip
    added = removed = 0
    with netlink.session(ns_path(net)) as ovl:
        if ovl.link(VXLAN) is None:
            return 0, 0
        fdb, neigh = ovl.fdb_entries(VXLAN), ovl.neighbours(VXLAN)
        for mac, dst in fdb.items():
            if want.get(mac, (None, None))[1] != dst:
                ovl.fdb_delete(VXLAN, mac, dst)
                removed += 1
        wanted_ips = {ip: mac for mac, (ip, _) in want.items()}
        for ip, mac in neigh.items():
            if wanted_ips.get(ip) != mac:
                ovl.neigh_delete(VXLAN, ip)
        for mac, (ip, vtep) in want.items():
            if fdb.get(mac) != vtep:
                ovl.fdb_replace(VXLAN, mac, vtep)
                added += 1
            if neigh.get(ip) != mac:
                ovl.neigh_replace(VXLAN, ip, mac)
    return added, removed
