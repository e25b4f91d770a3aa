"""The macvlan driver: sandboxes as their own stations on a parent link's LAN.

From moby ``drivers/macvlan`` (shared/reference/docker-mechanics.md 4):

* ``-o parent=IF`` (not ``lo``, not a link of lowbridge's); ``-o macvlan_mode=bridge|private|
  vepa|passthru`` (default bridge; a passthru parent serves one network).  ``-o parent=IF.VID``
  makes the 802.1q sub-interface when it is missing and removes it with the last network using
  it, only if lowbridge made it.
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

from lowbridge import ipam, names
from lowbridge.drivers.base import (
    Attachment,
    HostView,
    LinkWant,
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
from lowbridge.models import OPT_MTU, Network, frozen

if TYPE_CHECKING:
    from lowbridge.kernel import Kernel
    from lowbridge.kernel.rtnl import Session
    from lowbridge.models import Endpoint

OPT_PARENT = "parent"
OPT_MODE = "macvlan_mode"
OPT_SHIM = "lowbridge.host_shim"
OPT_SHIM_IP = "lowbridge.host_shim_ip"  # recorded: the shim's address
MODES = ("bridge", "private", "vepa", "passthru")
SHIM_PREFIX = "lbs"
SHIM_AUX = "lowbridge-host-shim"


def shim_name(network_id: str) -> str:
    return SHIM_PREFIX + network_id[:12]


def split_vlan(parent: str) -> tuple[str, int] | None:
    """``eth0.50`` -> ("eth0", 50); None when ``parent`` names no 802.1q sub-interface."""
    base, dot, vid = parent.rpartition(".")
    if not dot or not base or not (vid.isascii() and vid.isdigit()):
        return None
    if not 1 <= int(vid) <= 4094:
        raise InvalidInput(f"invalid parent {parent}: VLAN id {vid} must be within 1-4094")
    return base, int(vid)


class MacvlanDriver(Policy):
    name = "macvlan"

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network:
        options = dict(req.options)
        for key in options:
            if key not in (OPT_PARENT, OPT_MODE, OPT_SHIM, OPT_MTU):
                raise InvalidInput(f"unknown macvlan option {key!r}")
        validate_mtu(options, OPT_MTU)
        mode = options.setdefault(OPT_MODE, "bridge")
        if mode not in MODES:
            raise InvalidInput(f"invalid macvlan_mode {mode!r}: one of {', '.join(MODES)}")
        shim = options.get(OPT_SHIM, "false").lower()
        if shim not in ("true", "false"):
            ipam.parse_address(shim, f"{OPT_SHIM} (true, false or an address)")
        parent, internal, owned = self._parent(options, network_id, req.internal, host)
        for other in host.networks:
            if other.driver != self.name or other.options.get(OPT_PARENT) != parent:
                continue
            if "passthru" in (mode, other.options.get(OPT_MODE)):
                raise Conflict(
                    f"macvlan network {other.name} already uses parent {parent} "
                    "(passthru mode takes the parent alone)"
                )
        pool = plan_ipv4(req, host, with_gateway=req.gateway is not None)  # Docker 29: only given
        if shim != "false":
            # The shim's address: the one given, else the network's first free one (in
            # --ip-range if given); kept as an aux address so IPAM never hands it to an
            # endpoint (and inspect shows it).
            addr = ipam.allocate(pool, (), None if shim == "true" else shim)
            pool = dataclasses.replace(pool, aux_addresses={**pool.aux_addresses, SHIM_AUX: addr})
            options[OPT_SHIM_IP] = str(addr)
        # IPv6 on the parent's LAN: the sandboxes' addresses from the network's IPv6 subnet
        # (one of the LAN's), a default route only via a given --gateway, as for IPv4.
        pool6 = plan_ipv6(req, host, with_gateway=req.gateway6 is not None)
        return Network(
            id=network_id,
            name=req.name,
            driver=self.name,
            pool=pool,
            internal=internal,
            labels=frozen(req.labels),
            options=frozen(options),
            device=parent,
            device_owned=owned,
            user_subnet=req.subnet is not None,
            user_gateway=req.gateway is not None,
            attachable=req.attachable,
            pool6=pool6,
            user_subnet6=req.subnet6 is not None,
            user_gateway6=req.gateway6 is not None,
        )

    @staticmethod
    def _parent(
        options: dict[str, str], network_id: str, internal: bool, host: HostView
    ) -> tuple[str, bool, bool]:
        """(parent, internal, lowbridge makes it) for the options given; fills in the parent."""
        parent = options.get(OPT_PARENT, "")
        if not parent:
            # Docker: no parent means an internal network on a link the driver makes.
            parent = options[OPT_PARENT] = names.bridge_device(network_id)
            return parent, True, True
        names.validate_ifname(parent)
        if parent == "lo":
            raise InvalidInput("loopback interface is not a valid macvlan parent link")
        link = host.links.get(parent)
        if link is not None:
            if (link.alias or "").startswith(names.ALIAS_PREFIX):
                raise InvalidInput(
                    f"-o parent {parent} is a link of lowbridge's own (a network's "
                    "device or shim), not a LAN interface"
                )
            return parent, internal, False
        vlan = split_vlan(parent)
        if vlan is None:
            raise InvalidInput(f"-o parent interface {parent} was not found on the host")
        if vlan[0] not in host.links:
            raise InvalidInput(f"-o parent base interface {vlan[0]} was not found")
        return parent, internal, True

    def endpoint_names(self, net: Network, container_id: str, ip: str | None) -> tuple:
        return names.random_mac(), None

    # ------------------------------------------------------------------ network
    def create_steps(
        self, net: Network, k: Kernel, nl: Session, device_missing: bool
    ) -> list[Step]:
        steps = []
        if net.device_owned and device_missing:
            # (a sub-interface another network made is shared: not this network's to make)
            steps.append(
                Step(
                    "create-parent",
                    lambda: _make_parent(net, nl),
                    lambda: _delete_ours(nl, net.device),
                )
            )
        if net.options.get(OPT_SHIM_IP):
            shim = shim_name(net.id)
            steps.append(
                Step("create-shim", lambda: _make_shim(net, nl), lambda: nl.delete_link(shim))
            )
        return steps

    def ensure(self, net: Network, k: Kernel, nl: Session) -> bool:
        """After a reboot: the parent lowbridge made and the shim come back (a user's parent
        that is gone is not lowbridge's to re-create)."""
        made = False
        if nl.link(net.device) is None:
            if not net.device_owned:
                return False
            _make_parent(net, nl)
            made = True
        if net.options.get(OPT_SHIM_IP) and nl.link(shim_name(net.id)) is None:
            _make_shim(net, nl)
            made = True
        return made

    def host_links(self, net: Network, local: list[Endpoint]) -> list[LinkWant]:
        # A parent lowbridge made may carry another network's mark (networks share it).
        out = [LinkWant(net.device, None, ours=net.device_owned)] if net.device else []
        shim_ip = net.options.get(OPT_SHIM_IP)
        if shim_ip:  # a /32 and a route per endpoint (_make_shim)
            mark = names.ALIAS_PREFIX + net.id
            out.append(LinkWant(shim_name(net.id), "macvlan", alias=mark, address=(shim_ip, 32)))
        return out

    def network_missing(self, net: Network, k: Kernel, nl: Session) -> bool:
        shim = net.options.get(OPT_SHIM_IP) and nl.link(shim_name(net.id)) is None
        return nl.link(net.device) is None or bool(shim)

    def delete(self, net: Network, k: Kernel, nl: Session, others: list[Network]) -> None:
        """The shim, then the parent if lowbridge made it (its alias says so) and no other
        network uses it (Docker's delVlanLink rule)."""
        if net.options.get(OPT_SHIM_IP):
            nl.delete_link(shim_name(net.id))
        shared = any(
            o.id != net.id and o.driver == self.name and o.device == net.device for o in others
        )
        if net.device and not shared:
            _delete_ours(nl, net.device, marked_only=True)

    # ------------------------------------------------------------------ endpoints
    def connect_steps(
        self, att: Attachment, k: Kernel, nl: Session, sb: SandboxRef | None
    ) -> list[Step]:
        net, ep, ctr = att.network, att.endpoint, att.container
        shim_ip = net.options.get(OPT_SHIM_IP)
        steps = []
        if att.builds_network:
            steps.append(
                Step(
                    "ensure-network",
                    lambda: self.ensure(net, k, nl),
                    lambda: self.delete(net, k, nl, []),
                )
            )
        steps.append(
            Step(
                "create-interface",
                lambda: nl.create_macvlan(
                    ep.ifname,
                    net.device,
                    mode=net.options[OPT_MODE],
                    mac=ep.mac,
                    netns_fd=sb.fd,
                    mtu=net.mtu,
                ),
                # In a session of its own: the sandbox's may be closed when a later step fails.
                lambda: _delete_in(k, ctr.netns, ep.ifname),
            )
        )

        def configure() -> int:
            index = configure_interface(k, sb, att)
            if shim_ip:
                nl.add_route(ep.ip, 32, shim_name(net.id))
            return index

        def unconfigure() -> None:
            if shim_ip:
                with contextlib.suppress(KernelError):  # never made, or gone with the shim
                    nl.delete_route(ep.ip, 32, shim_name(net.id))

        steps.append(Step("configure-interface", configure, unconfigure))
        return steps

    def disconnect(self, net: Network, ep: Endpoint, k: Kernel, nl: Session, sandbox: str) -> None:
        """The child lives in the sandbox: delete it there (a namespace that is going away takes
        it along anyway); and its route through the shim."""
        if net.options.get(OPT_SHIM_IP) and ep.ip:
            with contextlib.suppress(KernelError):  # gone with the shim, or never made
                nl.delete_route(ep.ip, 32, shim_name(net.id))
        _delete_in(k, sandbox, ep.ifname)


def _make_parent(net: Network, nl: Session) -> None:
    parent = net.device
    vlan = None if parent.startswith(names.BRIDGE_PREFIX) else split_vlan(parent)
    if vlan:
        nl.create_vlan(parent, *vlan)
    else:
        # No MAC given: a port-less bridge then keeps carrier, which macvlan children need to
        # pass frames between each other.
        nl.create_bridge(parent, mac=None, mtu=net.mtu)
    nl.set_alias(parent, names.ALIAS_PREFIX + net.id)
    nl.set_up(parent)


def _make_shim(net: Network, nl: Session) -> None:
    shim = shim_name(net.id)
    nl.create_macvlan(shim, net.device, mode="bridge", mac=names.random_mac())
    nl.set_alias(shim, names.ALIAS_PREFIX + net.id)
    nl.add_address(shim, net.options[OPT_SHIM_IP], 32)
    nl.set_up(shim)


def _delete_ours(nl: Session, device: str, marked_only: bool = False) -> None:
    """Delete ``device`` if lowbridge's alias marks it (or, unless ``marked_only``, it carries
    none yet: made by the step being undone, before its alias was set)."""
    link = nl.link(device)
    if link is None:
        return
    if (link.alias or "").startswith(names.ALIAS_PREFIX) or (not marked_only and not link.alias):
        nl.delete_link(device)


def _delete_in(k: Kernel, path: str, ifname: str) -> None:
    """Delete a child made in a sandbox, in a session of its own; a namespace already gone
    took it along."""
    if not path or not k.is_netns(path):
        return
    with k.session(path) as snl:
        snl.delete_link(ifname)
