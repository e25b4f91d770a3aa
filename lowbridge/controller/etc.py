"""A sandbox's /etc files (hosts, resolv.conf, hostname) from its records.

``ip netns exec`` bind-mounts every file of ``/etc/netns/<name>/`` over ``/etc`` (ip-netns(8)),
so these are what processes in the sandbox read.  Rendering is :mod:`lowbridge.sandbox`'s; this
module decides what goes in: the sandbox's addresses, ``--add-host`` lines, legacy links' lines
(default bridge only) and whether the embedded resolver answers (a user-defined network).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

from lowbridge import links, sandbox
from lowbridge.config import Paths
from lowbridge.models import Container, Endpoint, Network

# name -> that sandbox's address on the default bridge (legacy links live there), or None
BridgeAddress = Callable[[str], "tuple[Container, str] | None"]


def files(
    ctr: Container,
    eps: Iterable[Endpoint],
    nets: Mapping[str, Network],
    bridge_address: BridgeAddress,
) -> dict[str, str]:
    """The files of ``ctr`` with endpoints ``eps`` (in their interfaces' order, eth0 first:
    a view lists this host's endpoints before the cluster store's)."""
    eps = sorted((e for e in eps if e.network_id in nets), key=lambda e: (len(e.ifname), e.ifname))
    embedded = any(uses_resolver(nets[e.network_id]) for e in eps)
    extra = list(ctr.extra_hosts)
    if ctr.links and any(nets[e.network_id].is_default_bridge for e in eps):
        for name, alias in ctr.links:
            found = bridge_address(name)
            if found is not None:
                child, ip = found
                extra.append((links.hosts_names(alias, child.hostname, child.name), ip))
    out = {
        # With --domainname Docker names the sandbox's own addresses "host.domain host".
        "hosts": sandbox.render_hosts(
            f"{ctr.hostname}.{ctr.domainname} {ctr.hostname}" if ctr.domainname else ctr.hostname,
            [ip for e in eps for ip in (e.ip, e.ip6) if ip],
            extra,
        ),
        "resolv.conf": sandbox.render_resolv_conf(
            sandbox.read_host_resolv_conf(),
            ctr.dns,
            ctr.dns_search,
            ctr.dns_options,
            embedded=embedded,
        ),
    }
    if os.path.exists("/etc/hostname"):  # ip netns exec binds only over files that exist
        out["hostname"] = ctr.hostname + "\n"
    return out


def write(paths: Paths, ctr: Container, content: dict[str, str] | None) -> None:
    """Make the sandbox's directory hold exactly ``content`` (None: remove it)."""
    sandbox.write_files(paths.etc_dir(ctr.name), content)


def uses_resolver(net: Network) -> bool:
    """Docker starts the embedded resolver for user-defined networks of drivers that have it."""
    from lowbridge.dns.records import dns_enabled

    return dns_enabled(net)
