"""Cluster mode: what the cluster store says this host has and it does not -- an endpoint
announced under this host's name whose sandbox is not here (a transaction whose outcome was
unknown, before its journal entry is settled; a record written by hand)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lowbridge.controller.audit.drift import REMOVE, Drift

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.models import Endpoint, View


def survey(ctl: Controller, view: View) -> list[Drift]:
    cluster = ctl.cluster
    if cluster is None:
        return []
    out = []
    for ep in view.endpoints:
        if ep.host != cluster.host or ep.container_id in view.ctrs:
            continue
        net = view.nets.get(ep.network_id)
        where = f"{ep.ip} on {net.name if net else ep.network_id[:12]}"
        out.append(
            Drift(
                "cluster endpoint",
                where,
                f"a sandbox of this host ({ep.container_name or ep.container_id[:12]})",
                "none",
                "remove it from the cluster store",
                REMOVE,
                lambda ep=ep: _forget(ctl, ep),
            )
        )
    return out


def _forget(ctl: Controller, ep: Endpoint) -> None:
    with ctl.store.transaction():
        ctl.store.delete_endpoint(ep)
