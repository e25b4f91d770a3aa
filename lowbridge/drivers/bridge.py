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

from lowbridge import ipam, names, netns
from lowbridge.drivers.base import HostView, NetworkRequest, SandboxRef, configure_interface
from lowbridge.errors import Conflict, InvalidInput, KernelError
from lowbridge.models import Network

if TYPE_CHECKING:
    from lowbridge.models import Endpoint
    from lowbridge.netlink import Session
    from lowbridge.txn import Transaction

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
BOOL_OPTIONS = (
    "com.docker.network.bridge.enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade",
    "com.docker.network.bridge.default_bridge",
)
# A bridge holds at most 1023 ports (BR_MAX_PORTS 1024, port 0 reserved): the 1024th enslave fails
# with EXFULL (pyroute2-notes 7.5).
MAX_PORTS = 1023


def _validate_options(options: dict[str, str]) -> None:
    if OPT_MTU in options:
        try:
            mtu = int(options[OPT_MTU])
        except ValueError:
            raise InvalidInput(f"invalid {OPT_MTU} {options[OPT_MTU]!r}: not a number") from None
        if not 68 <= mtu <= 65535:
            raise InvalidInput(f"invalid {OPT_MTU} {mtu}: must be within 68-65535")
    for key in BOOL_OPTIONS:
        if key in options and options[key].lower() not in ("true", "false"):
            raise InvalidInput(f"invalid {key} {options[key]!r}: must be true or false")


class BridgeDriver:
    name = "bridge"
    has_interfaces = True

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network:
        _validate_options(req.options)
        others = [n for n in host.networks if n.pool is not None]
        pool = ipam.plan_pool(
            subnet=req.subnet,
            gateway=req.gateway,
            ip_range=req.ip_range,
            aux_addresses=req.aux_addresses,
            taken=[n.pool.subnet for n in others],
            reserved=host.reserved,
        )
        device = req.options.get(OPT_BRIDGE_NAME) or names.bridge_device(network_id)
        names.validate_ifname(device)
        for other in host.networks:
            if other.device == device:
                raise Conflict(f"bridge name {device} is already used by network {other.name}")
        owned = True
        if device in host.link_kinds:
            # Docker uses a pre-existing bridge of that name and never deletes it.
            if host.link_kinds[device] != "bridge" or OPT_BRIDGE_NAME not in req.options:
                raise Conflict(f"a link named {device} already exists and is not ours")
            owned = False
        return Network(
            id=network_id,
            name=req.name,
            driver=self.name,
            pool=pool,
            internal=req.internal,
            labels=dict(req.labels),
            options=dict(req.options),
            device=device,
            device_owned=owned,
            user_subnet=req.subnet is not None,
        )

    def create(self, net: Network, tx: Transaction, nl: Session) -> None:
        device = net.device
        assert device and net.pool and net.pool.gateway
        if net.device_owned:
            tx.step(
                "create-device",
                lambda: nl.create_bridge(device, mac=names.random_mac(), mtu=net.mtu),
                lambda: nl.delete_link(device),
            )
            tx.step("mark-device", lambda: self._mark(net, nl))
        else:
            tx.step("create-device", lambda: None)
            tx.step("mark-device", lambda: None)
        plen = net.pool.subnet.prefixlen
        gw = str(net.pool.gateway)
        tx.step(
            "device-address",
            lambda: nl.add_address(device, gw, plen),
            None if net.device_owned else lambda: _del_addr(nl, device, gw, plen),
        )
        tx.step("device-up", lambda: nl.set_up(device))

    @staticmethod
    def _mark(net: Network, nl: Session) -> None:
        nl.set_alias(net.device, names.ALIAS_PREFIX + net.id)
        # Docker's setupDefaultSysctl: a bridge must not autoconfigure from RAs it receives.
        try:
            netns.write_sysctls([(f"net/ipv6/conf/{net.device}/accept_ra", "0")])
        except Exception as exc:  # IPv6 disabled on the host: nothing to turn off
            if getattr(exc, "errno", None) != 2:
                raise

    def ensure(self, net: Network, nl: Session) -> bool:
        if nl.link(net.device) is not None:
            return False
        steps = _LocalSteps()
        try:
            self.create(net, steps, nl)  # type: ignore[arg-type]
        except BaseException:
            steps.rollback()
            raise
        return True

    def delete(self, net: Network, nl: Session, others: list[Network] = ()) -> None:  # type: ignore[assignment]
        if not net.device:
            return
        if net.device_owned:
            nl.delete_link(net.device)
        elif net.pool and net.pool.gateway and nl.link(net.device) is not None:
            # A bridge that was the user's stays; only the gateway address lowbridge put on it
            # goes.  Already gone is fine.
            with contextlib.suppress(KernelError):
                _del_addr(nl, net.device, str(net.pool.gateway), net.pool.subnet.prefixlen)

    def connect(
        self, net: Network, ep: Endpoint, sandbox: SandboxRef, tx: Transaction, nl: Session
    ) -> int:
        device = net.device
        ep.mac = names.mac_from_ip(ep.ip)  # Docker < 28's rule: stable, and unique per bridge
        ep.host_ifname = names.veth_host_name(net.id, ep.container_id)
        made: list[bool] = []

        def ensure() -> int:
            # The default bridge's device is made when its first sandbox joins (and any bridge
            # whose device vanished is re-created): Docker makes docker0 at daemon start.
            index = nl.index(device)
            if index is None:
                made.append(self.ensure(net, nl))
                index = nl.index(device)
            if index is None:
                raise KernelError(f"bridge {device} vanished")
            return index

        bridge_index = tx.step("ensure-network", ensure, lambda: made and self.delete(net, nl))
        host_if = ep.host_ifname
        tx.step(
            "create-interface",
            lambda: nl.create_veth(
                host_if,
                ep.ifname,
                peer_netns_fd=sandbox.fd,
                peer_mac=ep.mac,
                mtu=net.mtu,
                master=bridge_index,
            ),
            lambda: nl.delete_link(host_if),
        )
        if sandbox.hairpin:
            # Docker's proxy-off mode: a container reaching its own published port through the
            # host is sent back out of the port it came in by (bridge hairpin mode).
            tx.step("create-interface", lambda: nl.set_hairpin(host_if))

        # The undo of create-interface removes the peer (and its address) with it.
        return tx.step("configure-interface", lambda: configure_interface(sandbox, ep))

    def disconnect(
        self, net: Network, ep: Endpoint, nl: Session, sandbox: str | None = None
    ) -> None:
        if ep.host_ifname:
            nl.delete_link(ep.host_ifname)


def _del_addr(nl: Session, device: str, address: str, plen: int) -> None:
    nl.delete_address(device, address, plen)


class _LocalSteps:
    """A bare undo stack for re-creating a missing device outside any user operation."""

    def __init__(self) -> None:
        self._undo: list = []

    def step(self, name, do, undo=None):  # noqa: ANN001
        result = do()
        if undo is not None:
            self._undo.append(undo)
        return result

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            with contextlib.suppress(Exception):
                undo()
