"""The records lowbridge keeps: networks, containers (sandboxes) and endpoints, as plain data.

They round-trip through JSON documents (``to_doc``/``from_doc``) so any store -- SQLite here, etcd
later -- keeps them without knowing their fields.  Addresses held by endpoints *are* the IPAM
leases: there is no second table to drift out of step with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from lowbridge.ipam import Pool


def _doc(record: object) -> dict:
    """A record's fields for json.dumps: a shallow copy, sharing the nested lists and dicts
    with the record (dataclasses.asdict deep-copies them, ~0.1 ms a sandbox record), so
    serialize it, do not change it."""
    return dict(vars(record))


DEFAULT_NETWORK = "bridge"
PREDEFINED = ("bridge", "host", "none")


def now() -> str:
    import datetime  # here: most commands make no record (bench/cli.py)

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Network:
    """A network: its driver, address pool, options and the kernel device made for it."""

    id: str
    name: str
    driver: str
    pool: Pool | None = None
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    created: str = field(default_factory=now)
    # Kernel device lowbridge made for the network (bridge name); None for host/none.
    device: str | None = None
    # False when the device existed before (a user's bridge named with -o ...bridge.name):
    # lowbridge then never deletes it, as Docker records ifaceCreatedByUser.
    device_owned: bool = True
    predefined: bool = False
    # The subnet was given with --subnet: only then may endpoints ask for a static --ip (Docker).
    user_subnet: bool = False

    @property
    def is_default_bridge(self) -> bool:
        return self.predefined and self.name == DEFAULT_NETWORK

    @property
    def mtu(self) -> int | None:
        value = self.options.get("com.docker.network.driver.mtu")
        return int(value) if value else None

    def to_doc(self) -> dict:
        """For JSON (see :func:`_doc`)."""
        doc = _doc(self)
        doc["pool"] = self.pool.to_doc() if self.pool else None
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> Network:
        doc = dict(doc)
        doc["pool"] = Pool.from_doc(doc["pool"]) if doc.get("pool") else None
        return cls(**doc)


@dataclass
class Container:
    """A sandbox: a named network namespace, plus what lowbridge started in it."""

    id: str
    name: str
    netns: str  # path of the bind mount, /run/netns/<name>
    netns_owned: bool = True  # False when adopted with --netns: never delete what we did not make
    created: str = field(default_factory=now)
    command: list[str] = field(default_factory=list)
    pid: int | None = None  # the detached process (run -d), if any
    pid_start: int | None = None  # its start time in clock ticks, to survive pid reuse
    hostname: str = ""
    network_mode: str = "bridge"  # the network named at create/run time (Docker's HostConfig)
    ports: list[dict] = field(default_factory=list)  # PortMapping documents (-p)
    extra_hosts: list[list[str]] = field(default_factory=list)  # [name, ip] (--add-host)
    dns: list[str] = field(default_factory=list)  # --dns
    dns_search: list[str] = field(default_factory=list)  # --dns-search
    dns_options: list[str] = field(default_factory=list)  # --dns-option
    expose: list[str] = field(default_factory=list)  # --expose PORT/PROTO (Config.ExposedPorts)
    links: list[list[str]] = field(default_factory=list)  # [container name, alias] (--link)
    env: list[str] = field(default_factory=list)  # -e KEY=VALUE
    link_env: list[str] = field(default_factory=list)  # what --link adds (links.env)
    # The embedded resolver's ports on 127.0.0.11 inside the sandbox ([udp, tcp]); set once the
    # sandbox first joins a user-defined network (Docker starts its resolver then) and kept, so a
    # restarted resolver binds the same ports and the DNAT rules stay valid (dns-notes 5.4).
    dns_ports: list[int] = field(default_factory=list)

    @property
    def host_network(self) -> bool:
        """``--network host``: no namespace of its own (``netns`` is empty)."""
        return self.network_mode == "host"

    @property
    def environment(self) -> list[str]:
        """KEY=VALUE for the processes run/exec start: links first, then -e (which wins)."""
        return [*self.link_env, *self.env]

    def to_doc(self) -> dict:
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict) -> Container:
        return cls(**doc)


@dataclass
class Endpoint:
    """One container's attachment to one network."""

    id: str
    network_id: str
    container_id: str
    ifname: str  # inside the sandbox: eth0, eth1, ...
    ip: str | None = None
    prefixlen: int | None = None
    gateway: str | None = None
    mac: str | None = None
    host_ifname: str | None = None  # host end of the veth
    aliases: list[str] = field(default_factory=list)  # --network-alias / connect --alias
    # Global-scope (overlay) endpoints are seen by every host: who has it, and its DNS names.
    host: str | None = None  # cluster host id
    vtep: str | None = None  # that host's VXLAN endpoint address
    container_name: str | None = None
    dns_names: list[str] = field(default_factory=list)

    @property
    def address(self) -> IPv4Address | None:
        return IPv4Address(self.ip) if self.ip else None

    def to_doc(self) -> dict:
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict) -> Endpoint:
        return cls(**doc)


def gateway_endpoint(eps: list[Endpoint], nets: dict[str, Network]) -> Endpoint | None:
    """The endpoint that provides the sandbox's default route, by Docker's rule.

    moby ``Endpoint.Less`` (sandbox.go): non-internal before internal, then by network name;
    the first endpoint with a gateway wins.  Internal networks carry no gateway here at all.
    """
    candidates = [e for e in eps if e.gateway and e.network_id in nets]
    return min(candidates, key=lambda e: nets[e.network_id].name, default=None)
