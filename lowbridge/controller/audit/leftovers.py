"""What carries lowbridge's mark and has no owner in the store: links (lowbridge's alias naming
a network the store does not know, an ``lbv`` veth no endpoint names), namespaces (a UTS
namespace of lowbridge's beside them, or an overlay's ``lbo-``), UTS namespaces and /etc/netns
directories (lowbridge's first line in their resolv.conf) of no sandbox.  Nothing else."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lowbridge import drivers, names
from lowbridge.controller.audit.drift import REMOVE, Drift

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.kernel.rtnl import Link, Session
    from lowbridge.models import View


def survey(ctl: Controller, nl: Session, view: View, links: dict[str, Link]) -> list[Drift]:
    return _links(nl, view, links) + _namespaces(ctl, view)


def _links(nl: Session, view: View, links: dict[str, Link]) -> list[Drift]:
    """Links with lowbridge's mark that no record owns: a bridge or shim whose alias names a
    network the store does not know, an ``lbv`` veth no endpoint names."""
    known = {n.id for n in view.networks}
    ends = {e.host_ifname for e in view.endpoints if e.host_ifname}
    out = []
    for link in links.values():
        alias = link.alias or ""
        orphan = (
            alias.startswith(names.ALIAS_PREFIX) and alias[len(names.ALIAS_PREFIX) :] not in known
        )
        orphan = orphan or (
            link.kind == "veth" and names.is_veth_host_name(link.name) and link.name not in ends
        )
        if orphan:
            what = f"{link.kind or 'link'} {link.name}"
            out.append(
                Drift(
                    what,
                    "(lowbridge's mark)",
                    "an owner in the store",
                    "none",
                    "remove it",
                    REMOVE,
                    lambda n=link.name: nl.delete_link(n),
                )
            )
    return out


def _namespaces(ctl: Controller, view: View) -> list[Drift]:
    """Namespaces, UTS namespaces and /etc/netns directories of lowbridge's with no sandbox."""
    from lowbridge.drivers.overlay import NS_PREFIX, ns_path

    k, paths = ctl.kernel, ctl.paths
    sandboxes = {c.name for c in view.containers}
    overlays = {ns_path(n) for n in view.networks if drivers.get(n.driver).scope == "global"}
    uts_dir = os.path.dirname(paths.uts("x"))
    uts = set(_listdir(uts_dir))
    out = []
    for path in sorted(k.listed_netns()):
        name = os.path.basename(path)
        mine = name in uts or (name.startswith(NS_PREFIX) and path not in overlays)
        if mine and name not in sandboxes and path not in overlays:
            out.append(
                Drift(
                    "namespace",
                    path,
                    "a sandbox or network of it",
                    "none",
                    "remove it",
                    REMOVE,
                    lambda p=path: _remove_netns(ctl, p),
                )
            )
    for name in sorted(uts - sandboxes):
        path = paths.uts(name)
        out.append(
            Drift(
                "uts namespace",
                path,
                "a sandbox of it",
                "none",
                "remove it",
                REMOVE,
                lambda p=path: k.remove_ns(p),
            )
        )
    for name in sorted(set(_listdir(paths.etc_netns)) - sandboxes):
        directory = paths.etc_dir(name)
        if _ours(directory) and not k.is_netns(k.netns_path(name)):
            from lowbridge import sandbox

            out.append(
                Drift(
                    "files",
                    directory,
                    "a sandbox of them",
                    "none",
                    "remove them",
                    REMOVE,
                    lambda d=directory: sandbox.remove_files(d),
                )
            )
    return out


def _remove_netns(ctl: Controller, path: str) -> None:
    from lowbridge import sandbox

    sandbox.kill_all(path)
    ctl.kernel.remove_ns(path)
    name = os.path.basename(path)
    ctl.kernel.remove_ns(ctl.paths.uts(name))
    sandbox.remove_files(ctl.paths.etc_dir(name))


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _ours(directory: str) -> bool:
    """An /etc/netns directory lowbridge wrote: its resolv.conf begins with lowbridge's line."""
    from lowbridge.sandbox import RESOLV_HEADER

    try:
        with open(os.path.join(directory, "resolv.conf")) as f:
            return f.readline() == RESOLV_HEADER
    except OSError:
        return False
