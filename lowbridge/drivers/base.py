"""The driver protocol: validate / create / delete / connect / disconnect.

Drivers are told *what* to build (plain records) and given the kernel sessions and the
transaction to build it with; they never touch the store, never lock, and never decide policy
that spans networks (which endpoint provides the default route is the controller's).

* ``validate`` turns a user's request into a :class:`~lowbridge.models.Network` without touching
  the kernel; everything that can be rejected is rejected here.
* ``create``/``connect`` make kernel changes only through ``tx.step`` so each is undone on a
  later failure.
* ``delete``/``disconnect`` are best effort and idempotent: "already gone" is success.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Protocol

from lowbridge.errors import KernelError

if TYPE_CHECKING:
    from lowbridge.models import Endpoint, Network
    from lowbridge.netlink import Session
    from lowbridge.txn import Transaction


@dataclass
class NetworkRequest:
    """A ``network create`` request as the user typed it (strings, unvalidated)."""

    name: str
    driver: str = "bridge"
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class HostView:
    """What validation may look at: other networks, host devices and host on-link routes."""

    networks: list[Network]
    link_kinds: dict[str, str | None]  # host link name -> kind
    reserved: list[IPv4Network]


@dataclass
class SandboxRef:
    """An open sandbox during a connect: its namespace path, an fd on it, its netlink session."""

    path: str
    fd: int
    nl: Session
    owned: bool  # lowbridge made the namespace (False: adopted with --netns)
    hairpin: bool = False  # publishes ports: its bridge ports need hairpin mode
    vtep: str | None = None  # cluster mode: this host's VXLAN endpoint address


def configure_interface(sandbox: SandboxRef, ep: Endpoint) -> int:
    """Address the endpoint's interface inside the sandbox and bring it up; return its index.

    Docker's setIPv6: an IPv4-only interface gets no IPv6 at all, set before it is up, in a
    namespace lowbridge adopted (the ones it made have IPv6 off namespace-wide from birth).
    """
    from lowbridge import netns

    index = sandbox.nl.index(ep.ifname)
    if index is None:
        raise KernelError(f"interface {ep.ifname} is missing in {sandbox.path}")
    if not sandbox.owned:
        netns.write_sysctls([(f"net/ipv6/conf/{ep.ifname}/disable_ipv6", "1")], sandbox.path)
    sandbox.nl.add_address(index, ep.ip, ep.prefixlen)
    sandbox.nl.set_up(index)
    return index


class Driver(Protocol):
    name: str
    # True when endpoints on this driver's networks get an interface and an address.
    has_interfaces: bool

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network: ...

    def create(self, net: Network, tx: Transaction, nl: Session) -> None: ...

    def ensure(self, net: Network, nl: Session) -> bool:
        """Re-create what the network needs in the kernel if it is missing; True if it did."""
        ...

    def delete(self, net: Network, nl: Session, others: list[Network]) -> None:
        """Remove the network's kernel objects; ``others`` are the remaining networks (a
        device several networks share stays while one uses it)."""
        ...

    def connect(
        self, net: Network, ep: Endpoint, sandbox: SandboxRef, tx: Transaction, nl: Session
    ) -> int | None:
        """Build the endpoint; return the sandbox-side interface index (None: no interface)."""
        ...

    def disconnect(
        self, net: Network, ep: Endpoint, nl: Session, sandbox: str | None = None
    ) -> None:
        """Remove the endpoint's kernel objects; ``sandbox`` is its namespace path (for links
        that live only there)."""
        ...


class NoKernelDriver:
    """Base of the predefined drivers with no kernel objects of their own (host, none)."""

    name = ""
    has_interfaces = False

    def validate(self, req: NetworkRequest, network_id: str, host: HostView) -> Network:
        from lowbridge.errors import InvalidInput

        raise InvalidInput(f'only one instance of "{self.name}" network is allowed')

    def create(self, net: Network, tx: Transaction, nl: Session) -> None:
        return None

    def ensure(self, net: Network, nl: Session) -> bool:
        return False

    def delete(self, net: Network, nl: Session, others: list[Network]) -> None:
        return None

    def connect(
        self, net: Network, ep: Endpoint, sandbox: SandboxRef, tx: Transaction, nl: Session
    ) -> int | None:
        return None

    def disconnect(
        self, net: Network, ep: Endpoint, nl: Session, sandbox: str | None = None
    ) -> None:
        return None
