"""Networks: ``network create`` (plan, journal, the driver's steps, commit) and ``network rm``."""

from __future__ import annotations

import contextlib
import dataclasses
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

from lowbridge import drivers, names, sandbox
from lowbridge.drivers.base import HostLink, HostView, NetworkRequest, check_families
from lowbridge.errors import Conflict, InvalidInput
from lowbridge.models import OPT_IFACE_PREFIX, Network, frozen

if TYPE_CHECKING:
    from lowbridge.controller.change import Change
    from lowbridge.kernel.rtnl import Session
    from lowbridge.models import View


def plan(c: Change, req: NetworkRequest) -> Network:
    """Validate ``req`` against the change's view and decide the network (touching nothing)."""
    names.validate_name("network", req.name)
    if any(n.name == req.name for n in c.view.networks):
        raise Conflict(f"network with name {req.name} already exists")
    driver = drivers.get(req.driver)
    check_families(req)
    if not req.ipv4 and not driver.ipv6_only:
        raise InvalidInput(f"--ipv4=false on {req.driver} networks is not supported yet")
    if driver.scope == "global" and c.ctl.cluster is None:  # no host could ever join it
        raise InvalidInput(f"{req.driver} networks need the cluster store: lowbridge --store "
                           f"etcd://HOST:PORT network create -d {req.driver} ...")  # fmt: skip
    # libnetwork's generic options are not the driver's: checked here, kept on the network.
    generic = {k: v for k, v in req.options.items() if k == OPT_IFACE_PREFIX}
    prefix = generic.get(OPT_IFACE_PREFIX)
    if prefix is not None and not names.valid_ifname(prefix + "99"):
        raise InvalidInput(f"invalid {OPT_IFACE_PREFIX} {prefix!r}: an interface name's "
                           "beginning (no '/', ':' or spaces; at most 13 characters)")  # fmt: skip
    own = dataclasses.replace(
        req.by_family(), options={k: v for k, v in req.options.items() if k not in generic}
    )
    host = host_view(c.view, c.nl)
    if own.ipv6 and own.subnet6 is None:  # the host's ULA pool (its seed is made once)
        from lowbridge import config, ipam

        host = dataclasses.replace(host, ipv6_pools=ipam.ula_pool(config.engine_id(c.paths)))
    net = driver.validate(own, names.new_id(), host)
    return dataclasses.replace(net, options=frozen({**net.options, **generic}))


def create(c: Change, req: NetworkRequest) -> Network:
    net = plan(c, req)
    driver = drivers.get(net.driver)
    missing = bool(net.device) and c.nl.link(net.device) is None
    c.journal(
        {"network": net.to_doc(), "device_missing": missing, "claims": {"networks": [net.name]}}
    )
    c.run(driver.create_steps(net, c.kernel, c.nl, missing))
    c.commit(put=[net])
    return net


def undo_create(c: Change, doc: dict) -> list[str]:
    """Undo a create whose process died: its steps' undos, newest first."""
    from lowbridge.drivers.base import undo_all

    net = Network.from_doc(doc["network"])
    steps = drivers.get(net.driver).create_steps(net, c.kernel, c.nl, doc["device_missing"])
    return undo_all(steps)


def remove(c: Change, nets: list[Network]) -> None:
    """Rules first, then the devices (Docker's order), the records last, for all of ``nets`` in
    one change; a removal not finished is finished by the next command."""
    for net in nets:
        if net.predefined:
            raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
        if c.view.endpoints_on(net.id):
            raise Conflict(
                f"error while removing network: network {net.name} id {net.id} has active endpoints"
            )
    c.journal(
        {"networks": [n.to_doc() for n in nets], "claims": {"networks": [n.name for n in nets]}}
    )
    _remove(c, nets)


def finish_remove(c: Change, doc: dict) -> None:
    docs = doc["networks"] if "networks" in doc else [doc["network"]]  # (one, before 0.4)
    _remove(c, [Network.from_doc(d) for d in docs])


def _remove(c: Change, nets: list[Network]) -> None:
    ids = {n.id for n in nets}
    others = [n for n in c.view.networks if n.id not in ids]

    def delete() -> None:
        # The devices that go whole go in one unregister batch (rtnl.Session.delete_links):
        # each bridge deleted alone waits ~45 ms for its RCU grace periods here.
        devices = {n.id: drivers.get(n.driver).doomed_device(n) for n in nets}
        c.nl.delete_links([d for d in devices.values() if d])
        for net in nets:
            if not devices[net.id]:
                drivers.get(net.driver).delete(net, c.kernel, c.nl, others)

    c.commit(
        gone=[n for n in nets if n.id in c.view.nets],
        before_commit=lambda: c.step("delete-device", delete),
    )


def host_view(view: View, nl: Session) -> HostView:
    """What a network's validation may look at (see :class:`~lowbridge.drivers.base.HostView`).

    ``held``: subnets on links that carry lowbridge's mark for a network the store does not
    have (its store was lost or replaced) -- never handed out while those links hold them.  The
    default bridge's device is not among them: the default bridge's record takes its subnet
    back (:mod:`.reconcile`)."""
    links = {link.index: link for link in nl.links()}
    known = {names.ALIAS_PREFIX + n.id for n in view.networks}
    addresses = nl.addresses()
    held = []
    for index, address, plen in addresses:
        link = links.get(index)
        if link is None or link.name == names.DEFAULT_BRIDGE_DEVICE:
            continue
        alias = link.alias or ""
        if alias.startswith(names.ALIAS_PREFIX) and alias not in known:
            held.append((IPv4Network(f"{address}/{plen}", strict=False), link.name))
    return HostView(
        networks=view.networks,
        links={link.name: HostLink(link.kind, link.alias) for link in links.values()},
        reserved=tuple(reserved(nl)),
        addresses=frozenset(address for _, address, _ in addresses),
        held=tuple(held),
    )


def reserved(nl: Session) -> list[IPv4Network]:
    """Host prefixes Docker avoids when it picks a subnet: on-link routes and nameservers."""
    found = nl.onlink_routes()
    for server in sandbox.host_nameservers(sandbox.read_host_resolv_conf()):
        with contextlib.suppress(ValueError):
            found.append(IPv4Network(server))
    return found
