"""The macvlan driver: sandboxes as their own stations on a parent link's LAN.

From moby ``drivers/macvlan`` (shared/reference/docker-mechanics.md 4):

* ``-o parent=IF`` (not ``lo``); ``-o macvlan_mode=bridge|private|vepa|passthru`` (default
  bridge; a passthru parent serves one network).  ``-o parent=IF.VID`` makes the 802.1q
  sub-interface when it is missing and removes it with the last network using it, only if
  lowbridge made it.
* With no parent the network is internal, on a parent lowbridge makes.  Docker makes a ``dummy``
  link; the dummy module is not on every kernel (these VMs lack it), so lowbridge makes a bridge
  with no ports instead, which every kernel that runs lowbridge has: a port-less bridge is
  administratively up with carrier (state UNKNOWN), which is all a macvlan lower device needs.
* Each endpoint is a macvlan child of the parent, created directly inside the sandbox as
  ``ethN`` with a random locally administered MAC (Docker >= 28: MACs derived from the IP
  collide between hosts sharing a LAN), an address from IPAM, and a default route via
  ``--gateway`` when one was given (Docker 29 allocates no gateway otherwise).  No veth, no
  bridge, no firewall rules; ``-p`` is refused.

The host cannot talk to its own macvlan children (the kernel does not pass frames between a
macvlan lower device's stack and its children, by design).  ``-o lowbridge.host_shim=true`` lifts
that the standard way (Docker's docs, docker/docs#5252): a host-side macvlan in bridge mode on the
same parent holding one address of the network, and a /32 route per endpoint through it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING

from lowbridge import ipam, names, netns
from lowbridge.drivers.base import HostView, NetworkRequest, SandboxRef, configure_interface
from lowbridge.errors import Conflict, InvalidInput, KernelError
from lowbridge.models import Network

if TYPE_CHECKING:
    from lowbridge.models import Endpoint
    from lowbridge.netlink import Session
    from lowbridge.txn import Transaction

OPT_PARENT = "parent"
OPT_MODE = "macvlan_mode"
OPT_SHIM = "lowbridge.host_shim"
OPT_SHIM_IP = "lowbridge.host_shim_ip"  # recorded: the shim's address
OPT_MTU = "com.docker.network.driver.mtu"
MODES = ("bridge", "private", "vepa", "passthru")
SHIM_PREFIX = "lbs"
SHIM_AUX = "lowbridge-host-shim"


def shim_name(network_id: str) -> str:
    return SHIM_PREFIX + network_id[:12]


def split_vlan(parent: str) -> tuple[str, int] | None:
    """``eth0.50`` -> ("eth0", 50); None when ``parent`` names no 802.1q sub-interface."""
    base, dot, vid = parent.rpartition(".")
    if not dot or not base or not vid.isdigit():
        return None
    if not 1 <= int(vid) <= 4094:
        raise InvalidInput(f"invalid parent {parent}: VLAN id {vid} must be within 1-4094")
    return base, int(vid)


class MacvlanDriver:
    name = "macvlan"
    has_interfaces = True

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network:
        options = dict(req.options)
        for key in options:
            if key not in (OPT_PARENT, OPT_MODE, OPT_SHIM, OPT_MTU):
                raise InvalidInput(f"unknown macvlan option {key!r}")
        mode = options.setdefault(OPT_MODE, "bridge")
        if mode not in MODES:
            raise InvalidInput(f"invalid macvlan_mode {mode!r}: one of {', '.join(MODES)}")
        shim = options.get(OPT_SHIM, "false").lower()
        if shim not in ("true", "false"):
            ipam.parse_address(shim, f"{OPT_SHIM} (true, false or an address)")
        parent = options.get(OPT_PARENT, "")
        internal = req.internal
        owned = False
        if not parent:
            # Docker: no parent means an internal network on a link the driver makes.
            parent, internal, owned = names.bridge_device(network_id), True, True
            options[OPT_PARENT] = parent
        else:
            names.validate_ifname(parent)
            if parent == "lo":
                raise InvalidInput("loopback interface is not a valid macvlan parent link")
            if parent not in host.link_kinds:
                vlan = split_vlan(parent)
                if vlan is None:
                    raise InvalidInput(f"-o parent interface {parent} was not found on the host")
                if vlan[0] not in host.link_kinds:
                    raise InvalidInput(f"-o parent base interface {vlan[0]} was not found")
                owned = True
        for other in host.networks:
            if other.driver != self.name or other.options.get(OPT_PARENT) != parent:
                continue
            if "passthru" in (mode, other.options.get(OPT_MODE)):
                raise Conflict(f"macvlan network {other.name} already uses parent {parent} "
                               "(passthru mode takes the parent alone)")  # fmt: skip
        pool = ipam.plan_pool(
            subnet=req.subnet,
            gateway=req.gateway,
            ip_range=req.ip_range,
            aux_addresses=req.aux_addresses,
            taken=[n.pool.subnet for n in host.networks if n.pool is not None],
            reserved=host.reserved,
            with_gateway=req.gateway is not None,  # Docker 29: only a given gateway
        )
        net = Network(
            id=network_id,
            name=req.name,
            driver=self.name,
            pool=pool,
            internal=internal,
            labels=dict(req.labels),
            options=options,
            device=parent,
            device_owned=owned,
            user_subnet=req.subnet is not None,
        )
        if shim != "false":
            # The shim's address: the one given, else the network's first free one (in
            # --ip-range if given); kept as an aux address so IPAM never hands it to an
            # endpoint (and inspect shows it).
            addr = ipam.allocate(pool, (), None if shim == "true" else shim)
            net.pool = dataclasses.replace(
                pool, aux_addresses={**pool.aux_addresses, SHIM_AUX: addr}
            )
            options[OPT_SHIM_IP] = str(addr)
        return net

    # ------------------------------------------------------------------ network
    def create(self, net: Network, tx: Transaction, nl: Session) -> None:
        parent = net.device
        assert parent
        if net.device_owned and nl.link(parent) is None:
            tx.step("create-device", lambda: self._make_parent(net, nl),
                    lambda: nl.delete_link(parent))  # fmt: skip
        else:  # the user's link, or a sub-interface another network made (shared)
            tx.step("create-device", lambda: None)
        tx.step("mark-device", lambda: None)  # marked as it is made (alias lowbridge:<id>)
        if net.options.get(OPT_SHIM_IP):
            shim = shim_name(net.id)
            tx.step("device-address", lambda: self._make_shim(net, nl),
                    lambda: nl.delete_link(shim))  # fmt: skip
        else:
            tx.step("device-address", lambda: None)
        tx.step("device-up", lambda: None)  # each link is made up

    def _make_parent(self, net: Network, nl: Session) -> None:
        parent = net.device
        vlan = None if parent.startswith(names.BRIDGE_PREFIX) else split_vlan(parent)
        if vlan:
            nl.create_vlan(parent, *vlan)
        else:
            # No MAC given: a port-less bridge then keeps carrier, which macvlan children need
            # to pass frames between each other.
            nl.create_bridge(parent, mac=None, mtu=net.mtu)
        nl.set_alias(parent, names.ALIAS_PREFIX + net.id)
        nl.set_up(parent)

    def _make_shim(self, net: Network, nl: Session) -> None:
        shim = shim_name(net.id)
        nl.create_macvlan(shim, net.device, mode="bridge", mac=names.random_mac())
        nl.set_alias(shim, names.ALIAS_PREFIX + net.id)
        nl.add_address(shim, net.options[OPT_SHIM_IP], 32)
        nl.set_up(shim)

    def ensure(self, net: Network, nl: Session) -> bool:
        """After a reboot: the parent lowbridge made and the shim come back (a user's parent
        that is gone is not lowbridge's to re-create)."""
        made = False
        if nl.link(net.device) is None:
            if not net.device_owned:
                return False
            self._make_parent(net, nl)
            made = True
        if net.options.get(OPT_SHIM_IP) and nl.link(shim_name(net.id)) is None:
            self._make_shim(net, nl)
            made = True
        return made

    def delete(self, net: Network, nl: Session, others: list[Network]) -> None:
        """The shim, then the parent if lowbridge made it (its alias says so) and no other
        network uses it (Docker's delVlanLink rule)."""
        if net.options.get(OPT_SHIM_IP):
            nl.delete_link(shim_name(net.id))
        shared = any(o.id != net.id and o.driver == self.name and o.device == net.device
                     for o in others)  # fmt: skip
        link = nl.link(net.device) if net.device else None
        ours = link is not None and (link.alias or "").startswith(names.ALIAS_PREFIX)
        if link is not None and ours and not shared:
            nl.delete_link(net.device)

    # ------------------------------------------------------------------ endpoints
    def connect(
        self, net: Network, ep: Endpoint, sandbox: SandboxRef, tx: Transaction, nl: Session
    ) -> int:
        parent = net.device
        ep.mac = names.random_mac()
        tx.step("ensure-network", lambda: self.ensure(net, nl))
        tx.step(
            "create-interface",
            lambda: nl.create_macvlan(
                ep.ifname,
                parent,
                mode=net.options[OPT_MODE],
                mac=ep.mac,
                netns_fd=sandbox.fd,
                mtu=net.mtu,
            ),  # fmt: skip
            lambda: _delete_in(sandbox.path, ep.ifname),
        )
        shim_ip = net.options.get(OPT_SHIM_IP)
        routed: list[bool] = []

        def configure() -> int:
            index = configure_interface(sandbox, ep)
            if shim_ip:
                nl.add_route(ep.ip, 32, shim_name(net.id))
                routed.append(True)
            return index

        def unconfigure() -> None:
            if routed:
                nl.delete_route(ep.ip, 32, shim_name(net.id))

        return tx.step("configure-interface", configure, unconfigure)

    def disconnect(
        self, net: Network, ep: Endpoint, nl: Session, sandbox: str | None = None
    ) -> None:
        """The child lives in the sandbox: delete it there (a namespace that is going away takes
        it along anyway); and its route through the shim."""
        from lowbridge import netlink

        if net.options.get(OPT_SHIM_IP) and ep.ip:
            with contextlib.suppress(KernelError):  # gone with the shim, or never made
                nl.delete_route(ep.ip, 32, shim_name(net.id))
        if sandbox and netns.is_netns(sandbox):
            with netlink.session(sandbox) as snl:
                snl.delete_link(ep.ifname)


def _delete_in(path: str, ifname: str) -> None:
    """Undo of a child made in a sandbox: delete it there, in a session of its own (the
    connect's sandbox session may be closed by the time a later step fails)."""
    from lowbridge import netlink

    with netlink.session(path) as snl:
        snl.delete_link(ifname)
