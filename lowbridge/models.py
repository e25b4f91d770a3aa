"""The records lowbridge keeps -- networks, containers (sandboxes), endpoints -- and a view of them.

Records are immutable (frozen dataclasses whose collections are tuples and read-only mappings):
a change makes new records with :func:`dataclasses.replace`, so a record once read can be shared,
kept and compared by anyone without being changed under them.  They round-trip through JSON
documents (``to_doc``/``from_doc``), so a store keeps them without knowing their fields.
Addresses held by endpoints *are* the IPAM leases: there is no second table to drift out of step.

:class:`View` is one consistent reading of the store (what a change plans against).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import NamedTuple

from lowbridge.errors import InvalidInput, NotFound
from lowbridge.ipam import Pool
from lowbridge.ports import Exposed, PortMapping

DEFAULT_NETWORK = "bridge"
PREDEFINED = ("bridge", "host", "none")
# Cluster mode: the local bridge overlay sandboxes leave by (Docker's docker_gwbridge).
GWBRIDGE = "lowbridge_gwbridge"
EMPTY: Mapping[str, str] = MappingProxyType({})
# Docker's option names that more than one module reads.
OPT_MTU = "com.docker.network.driver.mtu"
OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"  # an overlay's VXLAN id
OPT_ICC = "com.docker.network.bridge.enable_icc"
# A bridge's default host address for -p without one (Docker's; 0.0.0.0 without it).
OPT_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"
# libnetwork's generic option, for any driver: the sandbox's interface names (eth0 -> PREFIX0).
OPT_IFACE_PREFIX = "com.docker.network.container_iface_prefix"


def now() -> str:
    import datetime  # here: most commands make no record (bench/cli.py)

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    """A read-only copy of ``mapping``."""
    return MappingProxyType(dict(mapping)) if mapping else EMPTY


def _doc(record: object) -> dict:
    """A record's fields for json.dumps: tuples become arrays as they stand, mappings dicts."""
    out = {}
    for name in _field_names(type(record)):
        value = getattr(record, name)
        out[name] = dict(value) if isinstance(value, MappingProxyType) else value
    return out


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True, slots=True)
class Network:
    """A network: its driver, address pool, options and the kernel device made for it."""

    id: str
    name: str
    driver: str
    pool: Pool | None = None
    internal: bool = False
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    options: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    created: str = field(default_factory=now)
    # Kernel device lowbridge made for the network (bridge name); None for host/none.
    device: str | None = None
    # False when the device existed before (a user's bridge named with -o ...bridge.name):
    # lowbridge then never deletes it, as Docker records ifaceCreatedByUser.
    device_owned: bool = True
    predefined: bool = False
    # The subnet was given with --subnet: only then may endpoints ask for a static --ip (Docker).
    user_subnet: bool = False
    user_gateway: bool = False  # --gateway given (docker's IPAM entry shows it then)
    attachable: bool = False  # --attachable
    # --ipv6 (EnableIPv6): the IPv6 pool beside ``pool``, and its --subnet/--gateway given.
    pool6: Pool | None = None
    user_subnet6: bool = False
    user_gateway6: bool = False

    @property
    def ipv6(self) -> bool:
        return self.pool6 is not None

    @property
    def pools(self) -> tuple[Pool, ...]:
        """Its address pools, IPv4 first (Docker's IPAM.Config order)."""
        return tuple(p for p in (self.pool, self.pool6) if p is not None)

    @property
    def is_default_bridge(self) -> bool:
        return self.predefined and self.name == DEFAULT_NETWORK

    @property
    def mtu(self) -> int | None:
        value = self.options.get(OPT_MTU)
        return int(value) if value else None

    @property
    def vni(self) -> str | None:
        return self.options.get(OPT_VNI)

    def to_doc(self) -> dict:
        doc = _doc(self)
        doc["pool"] = self.pool.to_doc() if self.pool else None
        doc["pool6"] = self.pool6.to_doc() if self.pool6 else None
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> Network:
        doc = dict(doc)
        doc["pool"] = Pool.from_doc(doc["pool"]) if doc.get("pool") else None
        doc["pool6"] = Pool.from_doc(doc["pool6"]) if doc.get("pool6") else None
        doc["labels"] = frozen(doc.get("labels"))
        doc["options"] = frozen(doc.get("options"))
        return cls(**doc)


CREATED, RUNNING, EXITED = "created", "running", "exited"


class Join(NamedTuple):
    """A network an exited sandbox joins again when it starts, with what was asked for there:
    addresses given with --ip/--ip6 (a dynamic one is drawn again) and the aliases."""

    network_id: str
    ip: str | None = None
    aliases: tuple[str, ...] = ()
    ip6: str | None = None


@dataclass(frozen=True, slots=True)
class Container:
    """A sandbox: a named network namespace, plus what lowbridge started in it."""

    id: str
    name: str
    netns: str  # path of the bind mount, /run/netns/<name>
    netns_owned: bool = True  # False when adopted with --netns: never delete what we did not make
    created: str = field(default_factory=now)
    command: tuple[str, ...] = ()
    pid: int | None = None  # the detached process (run -d), if any
    pid_start: int | None = None  # its start time in clock ticks, to survive pid reuse
    hostname: str = ""
    network_mode: str = DEFAULT_NETWORK  # the network named at create/run (Docker's HostConfig)
    ports: tuple[PortMapping, ...] = ()  # -p, resolved to host ports
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (name, ip) of --add-host
    dns: tuple[str, ...] = ()  # --dns
    dns_search: tuple[str, ...] = ()  # --dns-search
    dns_options: tuple[str, ...] = ()  # --dns-option
    expose: tuple[Exposed, ...] = ()  # --expose (Config.ExposedPorts; -p adds its own)
    links: tuple[tuple[str, str], ...] = ()  # (container name, alias) of --link
    env: tuple[str, ...] = ()  # -e KEY=VALUE
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)  # --label (Config.Labels)
    link_env: tuple[str, ...] = ()  # what --link adds (links.env)
    # The embedded resolver's ports on 127.0.0.11 inside the sandbox (udp, tcp); set once the
    # sandbox first joins a user-defined network (Docker starts its resolver then) and kept, so a
    # restarted resolver binds the same ports and the redirect stays valid (dns-notes 5.4).
    dns_ports: tuple[int, ...] = ()
    # An adopted namespace's own default route before lowbridge replaced it (gateway or "",
    # interface name), put back when lowbridge's last interface there goes.
    adopted_route: tuple[str, str] | None = None
    # Lifecycle, as Docker's State: "created" (its command not started yet), "running" (it
    # stands: its namespace up, its networks joined), "exited" (it left its networks and its
    # namespace went; the record stays, with what start needs to make it again).
    state: str = RUNNING
    exit_code: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    restart_count: int = 0
    restart: str = "no"  # --restart: no, on-failure[:N], always, unless-stopped
    auto_remove: bool = False  # --rm
    stopped: bool = False  # stopped or killed by hand (unless-stopped then stays down)
    mac_address: str | None = None  # --mac-address: its first network's interface's
    publish_all: bool = False  # -P: every exposed port published on a free host port
    sysctls: tuple[tuple[str, str], ...] = ()  # --sysctl: net.* settings of its namespace
    domainname: str = ""  # --domainname
    share: str | None = None  # --network container:ID: that sandbox's namespace, not its own
    joins: tuple[Join, ...] = ()  # exited: the networks start joins again, first one first
    # Its own namespace is made with IPv6 on (its first network has IPv6); else off from birth.
    ipv6: bool = False
    # A runtime that keeps its namespace's addresses, default route and DNS itself (``docker``:
    # dockerd, for the remote driver's sandboxes; ``netns`` is its sandbox key): lowbridge
    # makes their interfaces on the host and their rules only.
    runtime: str | None = None
    # Its resolver also answers at this address of its first network's gateway (a CNI
    # configuration's ``dns: gateway``, as aardvark-dns answers): queries to it are redirected
    # inside the sandbox like 127.0.0.11's.
    dns_at: str | None = None

    @property
    def handed_off(self) -> bool:
        """Its interfaces are made in the host's namespace for its runtime to move into its own,
        address and route, and its runtime answers its DNS (Docker's remote driver protocol):
        nothing of lowbridge's is inside that namespace."""
        return self.runtime == "docker"

    @property
    def host_network(self) -> bool:
        """``--network host``: no namespace of its own (``netns`` is empty)."""
        return not self.netns

    @property
    def borrows(self) -> bool:
        """Its namespace is not its own (the host's, or another sandbox's with ``--network
        container:NAME``): of the processes there, only the one lowbridge started is its."""
        return not self.netns or self.share is not None

    @property
    def environment(self) -> tuple[str, ...]:
        """KEY=VALUE for the processes run/exec start: links first, then -e (which wins)."""
        return (*self.link_env, *self.env)

    @property
    def exposed(self) -> list[Exposed]:
        """``--expose`` plus the container side of ``-p`` (Docker adds published ports to
        ExposedPorts), once each, in Docker's link order (TCP first, then by number)."""
        found = set(self.expose) | {Exposed(m.container_port, m.proto) for m in self.ports}
        return sorted(found, key=lambda p: (p.proto != "tcp", p.proto, p.port))

    def to_doc(self) -> dict:
        doc = _doc(self)
        doc["ports"] = [m.to_doc() for m in self.ports]
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> Container:
        doc = dict(doc)
        for key in ("command", "dns", "dns_search", "dns_options", "env", "link_env", "dns_ports"):
            doc[key] = tuple(doc.get(key, ()))
        doc["ports"] = tuple(PortMapping.from_doc(d) for d in doc.get("ports", ()))
        doc["expose"] = tuple(_exposed(e) for e in doc.get("expose", ()))
        doc["extra_hosts"] = tuple((n, ip) for n, ip in doc.get("extra_hosts", ()))
        doc["links"] = tuple((n, alias) for n, alias in doc.get("links", ()))
        doc["labels"] = frozen(doc.get("labels"))
        route = doc.get("adopted_route")
        doc["adopted_route"] = tuple(route) if route else None
        doc["joins"] = tuple(Join(j[0], j[1], tuple(j[2]), *j[3:]) for j in doc.get("joins", ()))
        doc["sysctls"] = tuple((k, v) for k, v in doc.get("sysctls", ()))
        return cls(**doc)


def _exposed(item: str | list) -> Exposed:
    """An exposed port as stored: [port, proto] (or "80/tcp", as stores before 0.2 kept it)."""
    if isinstance(item, str):
        port, _, proto = item.partition("/")
        return Exposed(int(port), proto or "tcp")
    return Exposed(int(item[0]), item[1])


@dataclass(frozen=True, slots=True)
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
    aliases: tuple[str, ...] = ()  # --network-alias / connect --alias
    # Global-scope (overlay) endpoints are seen by every host: who has it, and its DNS names.
    host: str | None = None  # cluster host id
    vtep: str | None = None  # that host's VXLAN endpoint address
    container_name: str | None = None
    dns_names: tuple[str, ...] = ()
    requested_ip: str | None = None  # the address asked for with --ip (Docker's IPAMConfig)
    # On a network with IPv6 (--ipv6): the IPv6 address, its prefix length and gateway, --ip6.
    ip6: str | None = None
    prefixlen6: int | None = None
    gateway6: str | None = None
    requested_ip6: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What the store knows it by: (network id, container id)."""
        return self.network_id, self.container_id

    def to_doc(self) -> dict:
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict) -> Endpoint:
        doc = dict(doc)
        doc["aliases"] = tuple(doc.get("aliases", ()))
        doc["dns_names"] = tuple(doc.get("dns_names", ()))
        return cls(**doc)


@dataclass(frozen=True)
class JournalEntry:
    """A change under way, as the store's journal keeps it: its operation and its plan (a JSON
    document the operation reads back to finish or undo the change)."""

    id: str
    op: str
    doc: dict
    created: str = field(default_factory=now)


def gateway_endpoint(eps: Iterable[Endpoint], nets: Mapping[str, Network]) -> Endpoint | None:
    """The endpoint that provides the sandbox's default route, by Docker's rule.

    moby ``Endpoint.Less`` (sandbox.go): non-internal before internal, then by network name;
    the first endpoint with a gateway wins.  Internal networks carry no gateway here at all.
    """
    candidates = [e for e in eps if (e.gateway or e.gateway6) and e.network_id in nets]
    return min(candidates, key=lambda e: nets[e.network_id].name, default=None)


class View:
    """One consistent reading of the store: its records, and lookups over them.

    Immutable like the records; :meth:`changed` gives the view after a commit.  A store may
    hand a ``loader`` (table name -> records) instead of the records: each table is then read on
    first use.  The lookups' indexes are built on first use too."""

    def __init__(
        self,
        networks: Iterable[Network] = (),
        containers: Iterable[Container] = (),
        endpoints: Iterable[Endpoint] = (),
        *,
        loader: Callable[[str], tuple] | None = None,
    ):
        self._loader = loader
        # Per table, key -> position of the records: handed on by changed(), else built there.
        self._index: list[dict | None] = [None, None, None]
        if loader is None:
            self.__dict__.update(
                networks=tuple(networks), containers=tuple(containers), endpoints=tuple(endpoints)
            )

    @cached_property
    def networks(self) -> tuple[Network, ...]:
        return self._loader("networks")  # type: ignore[misc]

    @cached_property
    def containers(self) -> tuple[Container, ...]:
        return self._loader("containers")  # type: ignore[misc]

    @cached_property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._loader("endpoints")  # type: ignore[misc]

    @cached_property
    def nets(self) -> dict[str, Network]:
        """Networks by id."""
        return {n.id: n for n in self.networks}

    @cached_property
    def ctrs(self) -> dict[str, Container]:
        """Containers by id."""
        return {c.id: c for c in self.containers}

    @cached_property
    def _by_container(self) -> dict[str, list[Endpoint]]:
        out: dict[str, list[Endpoint]] = {}
        for ep in self.endpoints:
            out.setdefault(ep.container_id, []).append(ep)
        return out

    def endpoints_of(self, container_id: str) -> list[Endpoint]:
        return list(self._by_container.get(container_id, ()))

    def endpoints_on(self, network_id: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.network_id == network_id]

    def network(self, ref: str) -> Network:
        return resolve("network", ref, self.networks)

    def container(self, ref: str) -> Container:
        return resolve("container", ref, self.containers)

    def network_named(self, name: str) -> Network | None:
        return next((n for n in self.networks if n.name == name), None)

    def changed(
        self,
        put: Iterable[Network | Container | Endpoint] = (),
        gone: Iterable[Network | Container | Endpoint] = (),
    ) -> View:
        """The view with records ``put`` (new ones last, replaced ones in place) and without
        those ``gone`` -- what the store holds after committing that change.

        A table that loses no record hands its key -> position index on (copied before it
        grows), so a chain of changes -- one per create -- does not key every record again."""
        tables = [list(self.networks), list(self.containers), list(self.endpoints)]
        doomed: list[set] = [set(), set(), set()]
        for record in gone:
            i, key = _slot(record)
            doomed[i].add(key)
        index: list[dict | None] = [
            None if keys else self._index[i] for i, keys in enumerate(doomed)
        ]
        for i, keys in enumerate(doomed):
            if keys:
                key_of = _KEYS[i]
                tables[i] = [r for r in tables[i] if key_of(r) not in keys]
        copied = [False, False, False]
        for record in put:
            i, key = _slot(record)
            if not copied[i]:
                index[i] = dict(index[i]) if index[i] is not None else _positions(tables[i], i)
                copied[i] = True
            n = index[i].get(key)
            if n is None:
                index[i][key] = len(tables[i])
                tables[i].append(record)
            else:
                tables[i][n] = record
        after = View(*tables)
        after._index = index
        return after


def _positions(table: list, i: int) -> dict:
    return {k: n for n, k in enumerate(map(_KEYS[i], table))}


_KEYS = (operator.attrgetter("id"), operator.attrgetter("id"), operator.attrgetter("key"))


def _slot(record: Network | Container | Endpoint) -> tuple[int, object]:
    if isinstance(record, Network):
        return 0, record.id
    if isinstance(record, Container):
        return 1, record.id
    return 2, record.key


def resolve(kind: str, ref: str, items: Iterable):  # noqa: ANN201
    """Docker's lookup order: full id, then name, then unique id prefix."""
    items = list(items)
    for item in items:
        if item.id == ref:
            return item
    for item in items:
        if item.name == ref:
            return item
    matches = [item for item in items if item.id.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InvalidInput(f"{kind} {ref} is ambiguous ({len(matches)} matches by id prefix)")
    raise NotFound(f"No such {kind}: {ref}")  # docker's words
