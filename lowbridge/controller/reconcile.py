"""What every change does first, under the lock: bring the host and the store in line.

* the journal: every change a process left unfinished is finished or undone (:mod:`.journal`);
* the predefined networks (bridge, host, none) exist, as dockerd makes them at its first start,
  and follow the daemon settings (``icc``);
* cluster mode: this host's VXLAN address is known and announced, the gateway bridge exists;
* after a reboot (the runtime marker is gone) every user-defined network's device is made
  again; the default bridge's comes back when a sandbox next joins it;
* sandboxes whose namespace is gone (a reboot, ``ip netns del`` by hand) are reaped: their
  endpoints and addresses released.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from typing import TYPE_CHECKING

from lowbridge import config, drivers, ipam, names
from lowbridge.config import private_file
from lowbridge.controller import journal
from lowbridge.drivers.base import NetworkRequest
from lowbridge.errors import InvalidInput
from lowbridge.models import DEFAULT_NETWORK, EXITED, GWBRIDGE, OPT_ICC, PREDEFINED, Network, frozen

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.kernel.rtnl import Session

DEFAULT_BRIDGE_OPTIONS = {
    "com.docker.network.bridge.default_bridge": "true",
    "com.docker.network.bridge.enable_icc": "true",
    "com.docker.network.bridge.enable_ip_masquerade": "true",
    "com.docker.network.bridge.name": names.DEFAULT_BRIDGE_DEVICE,
    "com.docker.network.driver.mtu": "1500",
}
# Cluster mode's way out for overlay sandboxes (Docker's docker_gwbridge).
GWBRIDGE_DEVICE = "lb_gwbridge"


def prepare(ctl: Controller, nl: Session) -> None:
    """Everything of the module docstring, in that order."""
    join_cluster(ctl, nl)
    journal.settle(ctl)
    predefined(ctl, nl)
    daemon_settings(ctl)
    gateway_bridge(ctl, nl)
    _boot_and_reap(ctl, nl)


def join_cluster(ctl: Controller, nl: Session) -> None:
    """Cluster mode: find this host's VTEP address and announce it."""
    cluster = ctl.cluster
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
    from lowbridge.store.etcd import StoreUnavailable

    try:
        cluster.register_host(vtep)
    except StoreUnavailable:  # local work goes on; a global network's change says so itself
        return


def predefined(ctl: Controller, nl: Session | None) -> None:
    """The records of bridge, host and none, once (like dockerd's first start).  The default
    bridge takes the subnet its device holds, if lowbridge's device is there already (a store
    lost), else the first free default pool (172.17.0.0/16 on a clean host); its device is made
    when the first sandbox joins it."""
    view = ctl.store.view()
    present = {n.name for n in view.networks if n.predefined}
    if present >= set(PREDEFINED):
        return
    new = []
    for name in PREDEFINED:
        if name in present:
            continue
        net = Network(id=names.new_id(), name=name, driver=name, predefined=True)
        if name == DEFAULT_NETWORK:
            net = dataclasses.replace(
                net,
                pool=_default_pool(ctl, view, nl),
                options=frozen(default_bridge_options()),
                device=names.DEFAULT_BRIDGE_DEVICE,
                pool6=_default_pool6(ctl, view, config.default_bridge_ipv6()),
            )
        new.append(net)
    with ctl.store.transaction():
        for net in new:
            ctl.store.put_network(net)


def _default_pool(ctl: Controller, view, nl: Session | None):  # noqa: ANN001, ANN202
    from lowbridge.controller import networks

    kept = _device_subnet(nl, names.DEFAULT_BRIDGE_DEVICE) if nl is not None else None
    host = networks.host_view(view, nl) if nl is not None else None
    return ipam.plan_pool(
        subnet=kept,
        gateway=None,
        ip_range=None,
        aux_addresses=None,
        taken=[n.pool.subnet for n in view.networks if n.pool],
        reserved=host.reserved if host else (),
        held=host.held if host else (),
    )


def _default_pool6(ctl: Controller, view, setting: str | None):  # noqa: ANN001, ANN202
    """The default bridge's IPv6 pool for the ``ipv6``/``fixed-cidr-v6`` setting (None: off)."""
    if setting is None:
        return None
    others = [n.pool6.subnet for n in view.networks if n.pool6 and not n.is_default_bridge]
    return ipam.plan_pool(
        subnet=setting or None,
        gateway=None,
        ip_range=None,
        aux_addresses=None,
        taken=others,
        pools=() if setting else ipam.ula_pool(config.engine_id(ctl.paths)),
        version=6,
    )


def _device_subnet(nl: Session, device: str) -> str | None:
    """The subnet of the gateway address lowbridge's ``device`` holds, if it exists."""
    link = nl.link(device)
    if link is None or not (link.alias or "").startswith(names.ALIAS_PREFIX):
        return None
    for address, plen in nl.ipv4_addresses(device):
        return str(ipam.IPv4Network(f"{address}/{plen}", strict=False))
    return None


def default_bridge_options() -> dict[str, str]:
    return {**DEFAULT_BRIDGE_OPTIONS, OPT_ICC: str(config.default_bridge_icc()).lower()}


def daemon_settings(ctl: Controller) -> None:
    """Follow a changed ``icc`` setting (dockerd --icc) on the default bridge, as dockerd does
    when it restarts with a new flag: a new record, and the rules the commit derives from it.
    Likewise ``ipv6``/``fixed-cidr-v6``, once no sandbox is on the default bridge: its device
    goes (the next sandbox makes it again, with the new addresses)."""
    view = ctl.store.view()
    bridge = next(n for n in view.networks if n.is_default_bridge)
    want = str(config.default_bridge_icc()).lower()
    if bridge.options.get(OPT_ICC) != want:
        with ctl.change("daemon-settings") as c:
            bridge = dataclasses.replace(bridge, options=frozen({**bridge.options, OPT_ICC: want}))
            c.commit(put=[bridge])
    six = config.default_bridge_ipv6()
    have = bridge.pool6
    if (six is None) == (have is None) and (not six or str(have.subnet) == six):
        return
    if view.endpoints_on(bridge.id):
        print("lowbridge: warning: the default bridge's IPv6 setting takes effect once no "
              "sandbox is on it", file=sys.stderr)  # fmt: skip
        return
    with ctl.change("daemon-settings") as c:
        new = dataclasses.replace(bridge, pool6=_default_pool6(ctl, view, six))
        c.step("delete-device", lambda: c.nl.delete_link(bridge.device))
        c.commit(put=[new])


def gateway_bridge(ctl: Controller, nl: Session) -> None:
    """Cluster mode: the local bridge overlay sandboxes leave by (Docker's docker_gwbridge: ICC
    off, masquerade), as a predefined network; its device comes with its first endpoint."""
    from lowbridge.controller import networks

    view = ctl.store.view()
    if ctl.cluster is None or view.network_named(GWBRIDGE) is not None:
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
    net = drivers.get("bridge").validate(req, names.new_id(), networks.host_view(view, nl))
    with ctl.store.transaction():
        ctl.store.put_network(dataclasses.replace(net, predefined=True))


def _boot_and_reap(ctl: Controller, nl: Session) -> None:
    """After a reboot, the networks' devices; sandboxes whose namespace is gone, reaped; the
    firewall rewritten when either happened (the rules died with the old kernel)."""
    booted = not os.path.exists(ctl.paths.boot_marker)
    view = ctl.store.view()
    if booted:
        for net in view.networks:
            if not net.predefined:
                drivers.get(net.driver).ensure(net, ctl.kernel, nl)
    # One listing of the namespaces' directory instead of a stat per sandbox (every change
    # runs this): a namespace deleted by hand (ip netns del) is unlinked from it; those not
    # listed (gone, or kept elsewhere) are checked one by one.
    known = ctl.kernel.listed_netns()
    dead = [
        c
        for c in view.containers
        if c.state != EXITED
        and not c.host_network
        and not c.handed_off  # (its runtime makes its namespace, and says when it is gone)
        and c.netns not in known
        and not ctl.kernel.is_netns(c.netns)
    ]
    # Their namespace died (a reboot, an ip netns del): they exited, as Docker's containers do
    # when the daemon finds them dead (255); those made with --rm go.
    gone = [c for c in dead if c.auto_remove]
    if gone:
        from lowbridge.controller import teardown

        with ctl.change("container-rm", forward=True) as c:
            teardown.remove(c, gone, kill=False)
    if len(gone) < len(dead):
        from lowbridge.controller import lifecycle

        with ctl.change("container-stop", forward=True) as c:
            lifecycle.leave(c, [(x, 255) for x in dead if not x.auto_remove])
    if booted or dead or ctl.settled:
        ctl.firewall.apply(ctl.firewall.model(ctl.store.view()))
    if booted:
        ctl.paths.run_dir()
        os.close(private_file(ctl.paths.boot_marker, os.O_WRONLY | os.O_CREAT))
