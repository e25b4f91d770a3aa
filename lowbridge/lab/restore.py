"""What puts back the entries a failed ``apply`` took down: each made again from its record.

A changed entry is taken down before its new version is made (it keeps its name).  If the apply
then fails, the records read before the take-down say how each entry was made -- every field a
``network create`` / ``container create`` flag gave is in them, typed -- so the same requests
make it again: the same subnet, options and labels; the same networks, addresses (where the
network lets a sandbox ask for one, else the lowest free: the one just released), aliases,
published host ports, names and command.  Only the sandbox's processes are new ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lowbridge.controller.requests import ContainerRequest
from lowbridge.drivers.base import NetworkRequest

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.models import Container, Network, View


def network_request(net: Network) -> NetworkRequest:
    """The ``network create`` that makes ``net`` again."""
    pool = net.pool if net.user_subnet else None  # else the lowest free pool: the one it had
    return NetworkRequest(
        name=net.name,
        driver=net.driver,
        subnet=str(pool.subnet) if pool else None,
        gateway=str(pool.gateway) if pool and pool.gateway else None,
        ip_range=str(pool.ip_range) if pool and pool.ip_range else None,
        aux_addresses={k: str(v) for k, v in pool.aux_addresses.items()} if pool else {},
        internal=net.internal,
        labels=dict(net.labels),
        options=dict(net.options),
    )


def sandbox_requests(
    view: View, ctr: Container
) -> tuple[ContainerRequest, list[tuple[str, str | None, tuple[str, ...]]]]:
    """The ``container create`` that makes ``ctr`` again on its first network, and the
    (network, ip, aliases) of each further ``network connect``."""
    eps = view.endpoints_of(ctr.id)
    on = [(view.nets[e.network_id], e) for e in eps if e.network_id in view.nets]
    first = next((pair for pair in on if pair[0].name == ctr.network_mode), None)
    rest = [pair for pair in on if pair is not first]

    def ip(net: Network, ep) -> str | None:  # noqa: ANN001 - an Endpoint
        return ep.ip if net.user_subnet else None  # Docker: --ip needs a --subnet network

    req = ContainerRequest(
        name=ctr.name,
        network=ctr.network_mode,
        ip=ip(*first) if first else None,
        command=list(ctr.command) or None,
        publish=[_publish_spec(m) for m in ctr.ports],
        hostname=ctr.hostname,
        add_hosts=[f"{name}:{address}" for name, address in ctr.extra_hosts],
        dns=list(ctr.dns),
        dns_search=list(ctr.dns_search),
        dns_options=list(ctr.dns_options),
        aliases=list(first[1].aliases) if first else [],
        links=[f"{name}:{alias}" for name, alias in ctr.links],
        expose=[f"{e.port}/{e.proto}" for e in ctr.expose],
        env=list(ctr.env),
        labels=dict(ctr.labels),
    )
    return req, [(net.name, ip(net, ep), ep.aliases) for net, ep in rest]


def put_back(ctl: Controller, view: View, nets: list[Network], boxes: list[Container]) -> None:
    """Make ``nets`` and then ``boxes`` again as ``view`` (read before they went) has them,
    and start the commands that had been started."""
    for net in nets:
        ctl.network_create(network_request(net))
    connects, started = [], []
    requests = []
    for ctr in boxes:
        req, more = sandbox_requests(view, ctr)
        requests.append(req)
        connects += [(ctr.name, *c) for c in more]
        if ctr.command and ctr.pid is not None:
            started.append(ctr.name)
    if requests:
        ctl.container_create_many(requests)
    for name, network, ip, aliases in connects:
        ctl.network_connect(network, name, ip, aliases)
    for name in started:
        ctl.start_detached(name)


def _publish_spec(m) -> str:  # noqa: ANN001 - a ports.PortMapping
    host = "" if m.host_ip == "0.0.0.0" else f"{m.host_ip}:"  # noqa: S104 - Docker's default
    return f"{host}{m.host_port}:{m.container_port}/{m.proto}"
