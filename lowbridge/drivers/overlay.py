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

from lowbridge import names
from lowbridge.drivers.base import (
    Attachment,
    HostView,
    NetworkRequest,
    Policy,
    SandboxRef,
    Step,
    configure_interface,
    plan_ipv4,
    plan_ipv6,
    validate_mtu,
)
from lowbridge.errors import Conflict, InvalidInput, KernelError
from lowbridge.kernel import netns
from lowbridge.models import OPT_MTU, OPT_VNI, Network, frozen

if TYPE_CHECKING:
    from lowbridge.kernel import Kernel
    from lowbridge.kernel.rtnl import Session
    from lowbridge.models import Endpoint

NS_PREFIX = "lbo-"
BRIDGE, VXLAN = "br0", "vxlan0"
VXLAN_PORT = 4789
MTU = 1450
VNI_FIRST, VNI_LAST = 4096, (1 << 24) - 1
# Docker's global-scope default pool: 10.0.0.0/8 in /24s.
POOLS = (("10.0.0.0/8", 24),)
OPT_ATTACHABLE = "lowbridge.attachable"


def ns_name(net: Network) -> str:
    return NS_PREFIX + net.id[:12]


def ns_path(net: Network) -> str:
    return netns.path_of(ns_name(net))


class OverlayDriver(Policy):
    name = "overlay"
    scope = "global"
    # An overlay's gateway is no way out (Docker leaves overlay sandboxes through
    # docker_gwbridge): no default route through it.
    routes_out = False

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network:
        options = dict(req.options)
        for k in options:
            if k not in (OPT_VNI, OPT_MTU, OPT_ATTACHABLE):
                raise InvalidInput(f"unknown overlay option {k!r}")
        validate_mtu(options, OPT_MTU)
        used = {int(n.vni) for n in host.networks if n.vni}
        if OPT_VNI in options:
            text = options[OPT_VNI]
            if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= VNI_LAST:
                raise InvalidInput(f"invalid {OPT_VNI} {text!r}: a VNI within 1-{VNI_LAST}")
            if int(text) in used:
                raise Conflict(f"VNI {text} is already used by another overlay network")
            vni = int(text)
        else:
            vni = next(v for v in range(VNI_FIRST, VNI_LAST + 1) if v not in used)
        options[OPT_VNI] = str(vni)
        options.setdefault(OPT_MTU, str(MTU))
        pool = plan_ipv4(req, host, pools=POOLS)
        return Network(
            id=network_id,
            name=req.name,
            driver=self.name,
            pool=pool,
            internal=req.internal,
            labels=frozen(req.labels),
            options=frozen(options),
            user_subnet=req.subnet is not None,
            user_gateway=req.gateway is not None,
            attachable=req.attachable,
            # IPv6 inside the VXLAN: one subnet for every host (the cluster store keeps it).
            pool6=plan_ipv6(req, host),
            user_subnet6=req.subnet6 is not None,
            user_gateway6=req.gateway6 is not None,
        )

    def endpoint_names(self, net: Network, container_id: str, ip: str | None) -> tuple:
        # The address is unique cluster-wide, so is the MAC made from it.
        return names.mac_from_ip(ip), names.veth_host_name(net.id, container_id)

    # ------------------------------------------------------------------ network
    def create_steps(
        self, net: Network, k: Kernel, nl: Session, device_missing: bool
    ) -> list[Step]:
        """Nothing in any kernel yet: each host builds its part when a sandbox there joins."""
        return []

    def ensure(self, net: Network, k: Kernel, nl: Session) -> bool:
        return False

    def network_missing(self, net: Network, k: Kernel, nl: Session) -> bool:
        return not k.is_netns(ns_path(net))  # this host's first sandbox on it

    def host_namespaces(self, net: Network, local: list[Endpoint]) -> list[str]:
        return [ns_path(net)] if local else []

    def egress(self, net: Network) -> bool:
        return not net.internal  # Docker's docker_gwbridge

    def sync_peers(self, net: Network, endpoints: list[Endpoint], host: str) -> None:
        sync(net, endpoints, host)

    def delete(self, net: Network, k: Kernel, nl: Session, others: list[Network]) -> None:
        remove_local(net)

    # ------------------------------------------------------------------ endpoints
    def connect_steps(
        self, att: Attachment, k: Kernel, nl: Session, sb: SandboxRef | None
    ) -> list[Step]:
        net, ep = att.network, att.endpoint
        if not att.vtep:
            raise InvalidInput("overlay networks need the cluster store (--store etcd://…)")
        steps = []
        if att.builds_network:
            steps.append(
                Step(
                    "ensure-network",
                    lambda: build_local(net, nl, att.vtep),
                    lambda: remove_local(net),
                )
            )

        def create() -> None:
            with k.session(ns_path(net)) as ovl:
                bridge = ovl.link(BRIDGE).index
                ovl.create_veth(
                    ep.host_ifname,
                    ep.ifname,
                    peer_netns_fd=sb.fd,
                    peer_mac=ep.mac,
                    mtu=net.mtu,
                    master=bridge,
                )
                # br0 may have learned this MAC on vxlan0 (an address, and with it the MAC, that
                # was another host's until just now): frames for it from vxlan0 would then go
                # nowhere until that entry ages out (300 s), as the sandbox sends nothing first.
                # A static entry on its own port replaces it (it goes with the port).
                ovl.fdb_pin(ep.host_ifname, ep.mac)

        def undo() -> None:
            if k.is_netns(ns_path(net)):
                with k.session(ns_path(net)) as ovl:
                    ovl.delete_link(ep.host_ifname)

        steps.append(Step("create-interface", create, undo))
        steps.append(Step("configure-interface", lambda: configure_interface(k, sb, att)))
        return steps

    def disconnect(self, net: Network, ep: Endpoint, k: Kernel, nl: Session, sandbox: str) -> None:
        """The veth's outer end, and the host's overlay namespace once no sandbox uses it."""
        if not k.is_netns(ns_path(net)):
            return
        with k.session(ns_path(net)) as ovl:
            if ep.host_ifname:
                ovl.delete_link(ep.host_ifname)
            ports = [link for link in ovl.links() if link.name not in ("lo", BRIDGE, VXLAN)]
        if not ports:
            remove_local(net)


def build_local(net: Network, nl: Session, vtep: str) -> None:
    """This host's part of an overlay network: namespace, br0 (gateway, MTU), vxlan0."""
    from lowbridge.kernel import rtnl

    sock = netns.create(ns_name(net), ipv6_off=net.pool6 is None).result()
    path = ns_path(net)
    try:
        with rtnl.session(path, sock) as ovl:
            ovl.set_up("lo")
            ovl.create_bridge(BRIDGE, mac=names.random_mac(), mtu=net.mtu)
            if net.pool and net.pool.gateway:
                ovl.add_address(BRIDGE, str(net.pool.gateway), net.pool.subnet.prefixlen)
            if net.pool6 and net.pool6.gateway:
                ovl.add_address6(BRIDGE, str(net.pool6.gateway), net.pool6.subnet.prefixlen)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                nl.create_vxlan(
                    VXLAN,
                    vni=int(net.vni),
                    local=vtep,
                    port=VXLAN_PORT,
                    mtu=net.mtu or MTU,
                    netns_fd=fd,
                )
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
    from lowbridge.kernel import rtnl

    if not netns.is_netns(ns_path(net)):
        return 0, 0
    want = {
        ep.mac: (ep.ip, ep.vtep)
        for ep in endpoints
        if ep.host != host and ep.mac and ep.ip and ep.vtep
    }
    six = {ep.ip6: ep.mac for ep in endpoints if ep.host != host and ep.mac and ep.ip6 and ep.vtep}
    added = removed = 0
    with rtnl.session(ns_path(net)) as ovl:
        if ovl.link(VXLAN) is None:
            return 0, 0
        fdb, neigh = ovl.fdb_entries(VXLAN), ovl.neighbours(VXLAN)
        for mac, dst in fdb.items():
            if want.get(mac, (None, None))[1] != dst:
                ovl.fdb_delete(VXLAN, mac, dst)
                removed += 1
        # The neighbour entries the VXLAN's proxy answers ARP and (IPv6) neighbour solicitations
        # from: each remote endpoint's addresses -> its MAC.
        wanted_ips = {ip: mac for mac, (ip, _) in want.items()}
        wanted_ips.update(six)
        if six:
            neigh.update(ovl.neighbours(VXLAN, family=6))
        for ip, mac in neigh.items():
            if wanted_ips.get(ip) != mac:
                ovl.neigh_delete(VXLAN, ip)
        for mac, (_, vtep) in want.items():
            if fdb.get(mac) != vtep:
                ovl.fdb_replace(VXLAN, mac, vtep)
                added += 1
        for ip, mac in wanted_ips.items():
            if neigh.get(ip) != mac:
                ovl.neigh_replace(VXLAN, ip, mac)
    return added, removed
