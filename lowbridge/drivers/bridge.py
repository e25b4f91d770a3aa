"""The bridge driver: a Linux bridge per network, a veth pair per endpoint.

Kernel steps follow moby's bridge driver (``drivers/bridge/setup_*.go``, shared/reference
docker-mechanics.md 1.5 and 1.6): the bridge gets a random locally administered MAC (set in the
creating request, so udev's MACAddressPolicy cannot race it), ``accept_ra=0``, the MTU, the gateway
address, then goes up.  An endpoint is one veth whose host end joins the bridge and whose peer is
created directly inside the sandbox as ``ethN`` with the network's MTU; IPv4-only interfaces get
``disable_ipv6=1`` before they come up, so they never even get a link-local address.

Firewall rules (isolation, NAT, ICC) are not this driver's: they come from the rule renderer.
"""

from __future__ import annotations

import contextlib
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
from lowbridge.models import OPT_HOST_BINDING, OPT_MTU, Network, frozen

if TYPE_CHECKING:
    from lowbridge.kernel import Kernel
    from lowbridge.kernel.rtnl import Session
    from lowbridge.models import Endpoint

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
BOOL_OPTIONS = (
    "com.docker.network.bridge.enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade",
    "com.docker.network.bridge.default_bridge",
)
KNOWN = {*BOOL_OPTIONS, OPT_BRIDGE_NAME, OPT_HOST_BINDING, OPT_MTU}


def _validate_options(options: dict[str, str]) -> None:
    """Docker's bridge options; one of Docker's that lowbridge does not do is refused rather
    than kept and ignored (a key outside com.docker.network is the user's own: kept, shown by
    inspect, as Docker keeps it)."""
    for key in options:
        if key.startswith("com.docker.network.") and key not in KNOWN:
            raise InvalidInput(f"bridge option {key} is not supported by lowbridge")
    validate_mtu(options, OPT_MTU)
    for key in BOOL_OPTIONS:
        if key in options and options[key].lower() not in ("true", "false"):
            raise InvalidInput(f"invalid {key} {options[key]!r}: must be true or false")
    if OPT_HOST_BINDING in options:
        ipam.parse_address(options[OPT_HOST_BINDING], OPT_HOST_BINDING, None)


class BridgeDriver(Policy):
    name = "bridge"
    publishes = True
    # A bridge holds at most 1023 ports (BR_MAX_PORTS 1024, port 0 reserved): the 1024th
    # enslave fails with EXFULL (pyroute2-notes 7.5).
    max_endpoints = 1023
    ipv6_only = True

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network:
        _validate_options(req.options)
        pool = None
        if req.ipv4:
            pool = plan_ipv4(req, host)
        pool6 = plan_ipv6(req, host)
        device = req.options.get(OPT_BRIDGE_NAME) or names.bridge_device(network_id)
        names.validate_ifname(device)
        for other in host.networks:
            if other.device == device:
                raise Conflict(f"bridge name {device} is already used by network {other.name}")
        owned = True
        if device in host.links:
            # Docker uses a pre-existing bridge of that name and never deletes it.
            link = host.links[device]
            if link.kind != "bridge" or OPT_BRIDGE_NAME not in req.options or _marked(link):
                raise Conflict(f"a link named {device} already exists and is not ours")
            owned = False
        return Network(
            id=network_id,
            name=req.name,
            driver=self.name,
            pool=pool,
            internal=req.internal,
            labels=frozen(req.labels),
            options=frozen(req.options),
            device=device,
            device_owned=owned,
            user_subnet=req.subnet is not None,
            user_gateway=req.gateway is not None,
            attachable=req.attachable,
            pool6=pool6,
            user_subnet6=req.subnet6 is not None,
            user_gateway6=req.gateway6 is not None,
        )

    def endpoint_names(self, net: Network, container_id: str, ip: str | None) -> tuple:
        # Docker < 28's MAC rule: stable, and unique per bridge.
        return names.mac_from_ip(ip), names.veth_host_name(net.id, container_id)

    # ------------------------------------------------------------------ network
    def create_steps(
        self, net: Network, k: Kernel, nl: Session, device_missing: bool
    ) -> list[Step]:
        device, pool = net.device, net.pool
        assert device
        steps = []
        if net.device_owned:
            steps += [
                Step(
                    "create-device",
                    lambda: nl.create_bridge(device, mac=names.random_mac(), mtu=net.mtu),
                    lambda: _delete_ours(nl, device),
                ),
                Step("mark-device", lambda: _mark(net, k, nl)),
            ]
        # A user's bridge keeps its other addresses: only the gateway lowbridge added goes.
        if pool is not None and pool.gateway is not None:
            gw, plen = str(pool.gateway), pool.subnet.prefixlen
            steps.append(
                Step(
                    "device-address",
                    lambda: nl.add_address(device, gw, plen),
                    None if net.device_owned else lambda: _del_addr(nl, device, gw, plen),
                )
            )
        if net.pool6 is not None and net.pool6.gateway is not None:
            gw6, plen6 = str(net.pool6.gateway), net.pool6.subnet.prefixlen
            steps.append(
                Step(
                    "device-address6",
                    lambda: _add_ipv6(k, nl, device, gw6, plen6),
                    None if net.device_owned else lambda: _del_addr(nl, device, gw6, plen6),
                )
            )
        steps.append(Step("device-up", lambda: nl.set_up(device)))
        return steps

    def network_missing(self, net: Network, k: Kernel, nl: Session) -> bool:
        # A user-defined bridge is made by network create (and again by the first command after
        # a reboot); only the predefined ones -- the default bridge, the cluster's gateway
        # bridge -- wait for their first sandbox, as Docker's default bridge does.  One
        # deleted by hand is check's and gc's to find and mend.
        return net.predefined and super().network_missing(net, k, nl)

    def ensure(self, net: Network, k: Kernel, nl: Session) -> bool:
        if nl.link(net.device) is not None:
            return False
        _run_all(self.create_steps(net, k, nl, True))
        return True

    def doomed_device(self, net: Network) -> str | None:
        return net.device if net.device and net.device_owned else None

    def host_links(self, net: Network, local: list[Endpoint]) -> list[LinkWant]:
        # The default bridge's device comes with its first sandbox (Docker's at start-up).
        if not net.device or (net.is_default_bridge and not local):
            return []
        pool = net.pool
        gateway = (str(pool.gateway), pool.subnet.prefixlen) if pool and pool.gateway else None
        mark = names.ALIAS_PREFIX + net.id if net.device_owned else None
        bridge = LinkWant(net.device, "bridge", alias=mark, address=gateway, ours=net.device_owned)
        ports = [LinkWant(e.host_ifname, "veth", net.device) for e in local if e.host_ifname]
        return [bridge, *ports]

    def delete(self, net: Network, k: Kernel, nl: Session, others: list[Network]) -> None:
        if not net.device:
            return
        if net.device_owned:
            nl.delete_link(net.device)
        elif net.pool and net.pool.gateway and nl.link(net.device) is not None:
            with contextlib.suppress(KernelError):  # already gone is fine
                _del_addr(nl, net.device, str(net.pool.gateway), net.pool.subnet.prefixlen)

    # ------------------------------------------------------------------ endpoints
    def connect_steps(
        self, att: Attachment, k: Kernel, nl: Session, sb: SandboxRef | None
    ) -> list[Step]:
        net, ep = att.network, att.endpoint
        device, host_if = net.device, ep.host_ifname
        steps = []
        if att.builds_network:
            # The default bridge's device is made when its first sandbox joins (Docker makes
            # docker0 at daemon start), and a bridge whose device vanished is made again.
            steps.append(
                Step(
                    "ensure-network",
                    lambda: self.ensure(net, k, nl),
                    lambda: _delete_ours(nl, device),
                )
            )

        def create() -> None:
            master = nl.index(device)
            if master is None:
                raise KernelError(f"bridge {device} of network {net.name} is missing")
            nl.create_veth(
                host_if, ep.ifname, peer_netns_fd=sb.fd, peer_mac=ep.mac, mtu=net.mtu, master=master
            )
            if att.hairpin:
                # Docker's proxy-off mode: a container reaching its own published port through
                # the host is sent back out of the port it came in by (bridge hairpin mode).
                nl.set_hairpin(host_if)

        # The undo of create-interface removes the peer (and its address) with it.
        steps.append(Step("create-interface", create, lambda: nl.delete_link(host_if)))
        if not att.container.handed_off:  # (else the runtime moves and addresses it itself)
            steps.append(Step("configure-interface", lambda: configure_interface(k, sb, att)))
        return steps

    def host_end(self, ep: Endpoint) -> str | None:
        return ep.host_ifname

    def disconnect(self, net: Network, ep: Endpoint, k: Kernel, nl: Session, sandbox: str) -> None:
        if ep.host_ifname:
            nl.delete_link(ep.host_ifname)


def _marked(link) -> bool:  # noqa: ANN001 - a HostLink
    return (link.alias or "").startswith(names.ALIAS_PREFIX)


def _mark(net: Network, k: Kernel, nl: Session) -> None:
    nl.set_alias(net.device, names.ALIAS_PREFIX + net.id)
    # Docker's setupDefaultSysctl: a bridge must not autoconfigure from RAs it receives.
    try:
        k.write_sysctls([(f"net/ipv6/conf/{net.device}/accept_ra", "0")])
    except KernelError as exc:  # IPv6 disabled on the host: nothing to turn off
        if exc.errno != 2:
            raise


def _add_ipv6(k: Kernel, nl: Session, device: str, gateway: str, plen: int) -> None:
    """Docker's setupBridgeIPv6: IPv6 on for the bridge, the gateway address without DAD."""
    k.write_sysctls([(f"net/ipv6/conf/{device}/disable_ipv6", "0")])
    nl.add_address6(device, gateway, plen)


def _delete_ours(nl: Session, device: str) -> None:
    """Delete ``device`` if it is there and lowbridge's (its alias says so, or it was just made:
    a device made and not yet marked is deleted too, as only lowbridge makes lb- names)."""
    link = nl.link(device)
    if link is not None and (_marked(link) or not link.alias):
        nl.delete_link(device)


def _del_addr(nl: Session, device: str, address: str, plen: int) -> None:
    nl.delete_address(device, address, plen)


def _run_all(steps: list[Step]) -> None:
    """Run steps outside any change (a device re-created after a reboot), undoing them all if
    one fails."""
    done: list[Step] = []
    try:
        for step in steps:
            step.do()
            done.append(step)
    except BaseException:
        for step in reversed(done):
            if step.undo is not None:
                with contextlib.suppress(Exception):
                    step.undo()
        raise
