"""Ports published on ``[::1]``: a userland relay, as docker-proxy serves them.

The kernel never routes a packet whose source or destination is ``::1`` off the loopback
device -- IPv6 has no ``route_localnet`` (shared/reference/docker-mechanics.md 1.7: with the
proxy off, Docker cannot serve them either) -- so DNAT cannot take ``[::1]:8081`` to a sandbox.
lowbridge's helper process (the embedded resolver's, :mod:`lowbridge.dns.server`, started on
demand by every command that needs it) listens on each such port in the host's namespace and
relays to the sandbox's IPv6 address on its gateway endpoint: TCP per connection, UDP per
client address.  This module is pure (which relays the store asks for: every command asks
whether any is needed, without importing asyncio); :mod:`lowbridge.dns.relay` keeps the
helper process's listeners in line with it.
"""

from __future__ import annotations

from typing import NamedTuple

from lowbridge.models import View, gateway_endpoint

LOOPBACK = "::1"


class Target(NamedTuple):
    """Where a loopback port's traffic goes: the sandbox's IPv6 address and port."""

    address: str
    port: int


def wanted(view: View) -> dict[tuple[int, str], Target]:
    """(host port, protocol) -> target of every port published on ``[::1]`` by a sandbox on
    its networks (an exited one has left them): its gateway endpoint's IPv6 address, or its
    IPv4 one (a relay, unlike DNAT, can cross families, as docker-proxy does)."""
    out: dict[tuple[int, str], Target] = {}
    for ctr in view.containers:
        if not any(m.host_ip == LOOPBACK for m in ctr.ports):
            continue
        gw = gateway_endpoint(view.endpoints_of(ctr.id), view.nets)
        address = gw and (gw.ip6 or gw.ip)
        if not address:
            continue
        for m in ctr.ports:
            if m.host_ip == LOOPBACK:
                out[(m.host_port, m.proto)] = Target(address, m.container_port)
    return out


def needed(view: View) -> bool:
    """Whether any sandbox publishes on ``[::1]`` (the helper process must run)."""
    return any(m.host_ip == LOOPBACK for c in view.containers for m in c.ports)
