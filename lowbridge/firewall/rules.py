"""lowbridge's complete rule set, rendered from plain data (no I/O).

The structure follows current Docker (28.2+/29.x iptables layout, moby
``daemon/libnetwork/drivers/bridge/internal/iptabler``; shared/reference/docker-mechanics.md
2.1-2.8)
with lowbridge's own names, so it can run beside a real Docker or firewalld:

    filter FORWARD  -> LOWBRIDGE-USER      (first; made once, never touched again: yours)
                    -> LOWBRIDGE-FORWARD   -> LOWBRIDGE-CT        established replies per bridge
                                           -> LOWBRIDGE-INTERNAL  drops for --internal networks
                                           -> LOWBRIDGE-BRIDGE    -o <br> -> LOWBRIDGE
                                           then per bridge: ICC and outbound accepts
                       LOWBRIDGE              published-port accepts, then per-bridge DROP
    nat PREROUTING/OUTPUT (dst-type LOCAL) -> LOWBRIDGE   DNAT of published ports
    nat POSTROUTING -> LOWBRIDGE-POSTROUTING   MASQUERADE (outbound, host->container, hairpin)
    raw PREROUTING  -> LOWBRIDGE-PREROUTING    direct-access drops per endpoint, 127.0.0.1 ports

Like Docker 29, isolation between networks needs no isolation chain: a packet for a container's
address that did not arrive on that container's bridge is dropped in raw PREROUTING (before
conntrack), in both directions.

lowbridge has no userland proxy, so it always uses Docker's proxy-off ("hairpin") variant: the
DNAT rules apply to packets from the bridges too, the OUTPUT jump covers 127.0.0.0/8, host-sourced
traffic into a bridge is masqueraded, a container reaching its own published port is
masqueraded, and the kernel settings of :func:`settings` go with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

from lowbridge.ports import PortMapping

COMMENT = "lowbridge"

# Logical chain names; each backend maps them to its own (see iptables.py / nftables.py).
USER = "LOWBRIDGE-USER"
FORWARD = "LOWBRIDGE-FORWARD"
CT = "LOWBRIDGE-CT"
INTERNAL = "LOWBRIDGE-INTERNAL"
BRIDGE = "LOWBRIDGE-BRIDGE"
MAIN = "LOWBRIDGE"
POSTROUTING = "LOWBRIDGE-POSTROUTING"
PREROUTING = "LOWBRIDGE-PREROUTING"

# Chains per table, in the order they are declared.
CHAINS: dict[str, tuple[str, ...]] = {
    "raw": (PREROUTING,),
    "filter": (USER, FORWARD, CT, INTERNAL, BRIDGE, MAIN),
    "nat": (MAIN, POSTROUTING),
}


class Rule(NamedTuple):
    """One rule: ``match`` is an ordered tuple of (key, value) pairs; keys are

    ``iif``/``!iif``/``oif``/``!oif`` (interface), ``src``/``!src``/``dst``/``!dst`` (address or
    CIDR), ``proto`` (tcp/udp), ``dport``, ``sport``, ``ctstate`` (comma list),
    ``src-type``/``dst-type`` (LOCAL).  ``target`` is ACCEPT, DROP, MASQUERADE,
    ``DNAT:<ip>:<port>`` or ``JUMP:<chain>``.
    A builtin ``chain`` (FORWARD, PREROUTING, OUTPUT, POSTROUTING) holds lowbridge's hooks.
    """

    table: str
    chain: str
    match: tuple[tuple[str, str], ...]
    target: str
    comment: str = COMMENT
    family: int = 4  # 6: an IPv6 rule (ip6tables, nft's ip6 table), of an IPv6 network


class FwNetwork(NamedTuple):
    """What the rules need to know about one bridge network.  (The model's records are named
    tuples: rendering is kept per distinct model, which takes hashing and comparing them.)"""

    name: str
    device: str
    subnet: str
    internal: bool = False
    icc: bool = True
    masquerade: bool = True


class FwEndpoint(NamedTuple):
    """A container address on a bridge network (named ``network``, device ``device``), of IP
    ``family``."""

    ip: str
    network: str
    device: str
    family: int = 4


class FwPort(NamedTuple):
    """A published port, already resolved to its container's gateway endpoint."""

    mapping: PortMapping
    container_ip: str
    device: str  # the bridge of the gateway endpoint
    container: str = ""


class FwLink(NamedTuple):
    """A legacy link's exposed port between two sandboxes of one bridge (``--link``)."""

    parent_ip: str
    child_ip: str
    device: str
    port: int
    proto: str
    name: str = ""  # "<parent> -> <alias>"


@dataclass
class Model:
    """What the rules are rendered from: bridge networks, published ports, legacy links and
    the endpoints on those networks."""

    networks: list[FwNetwork] = field(default_factory=list)
    ports: list[FwPort] = field(default_factory=list)
    links: list[FwLink] = field(default_factory=list)
    # Endpoints on the networks above in the order they were made (the store's), which the
    # per-endpoint rules follow: a new endpoint's rules then go last, a plain append (see
    # appended()).  A dual-stack endpoint is two: its IPv4 address, then its IPv6 one.
    endpoints: tuple[FwEndpoint, ...] = ()
    # The IPv6 part of the networks and ports: the networks with IPv6 (their IPv6 subnets) and
    # the ports published on IPv6 addresses (the rules of both families follow one structure,
    # as Docker's iptables and ip6tables rules do).  Its endpoints are in ``endpoints``.
    v6: Model | None = None

    @property
    def empty(self) -> bool:
        return not self.networks and (self.v6 is None or not self.v6.networks)


HOOKS: tuple[Rule, ...] = (
    Rule("filter", "FORWARD", (), f"JUMP:{USER}"),
    Rule("filter", "FORWARD", (), f"JUMP:{FORWARD}"),
    Rule("nat", "PREROUTING", (("dst-type", "LOCAL"),), f"JUMP:{MAIN}"),
    # Proxy off: 127.0.0.0/8 destinations are DNATed too (no userland proxy serves them).
    Rule("nat", "OUTPUT", (("dst-type", "LOCAL"),), f"JUMP:{MAIN}"),
    Rule("nat", "POSTROUTING", (), f"JUMP:{POSTROUTING}"),
    Rule("raw", "PREROUTING", (), f"JUMP:{PREROUTING}"),
)


def _c(text: str) -> str:
    return f"{COMMENT}: {text}"


def render(model: Model) -> list[Rule]:
    """Every lowbridge rule for ``model``, hooks included, in apply order (empty if no network):
    IPv4's static rules, IPv6's, then the per-endpoint rules.

    The per-endpoint rules come last, in endpoint order, so that a new endpoint's rules extend
    the previous rendering (:func:`appends` then compares a prefix)."""
    return Renderer().render(model)


class Renderer:
    """:func:`render`, keeping what it rendered: a change renders the firewall twice (before
    and after), on every command, with every network and endpoint (bench/growth.py,
    bench/firewall.py).

    The rules of networks, ports and links are kept per distinct set of them, an endpoint's rule
    per endpoint, and the last rendering whole: a model that extends the last one's endpoints (a
    connect) costs a comparison of their prefix, in C, plus its new endpoints; any other change
    a pass over the endpoints.  Keys are the model's records themselves (named tuples: by
    value)."""

    STATIC_KEPT, DIRECT_KEPT = 4, 8192

    def __init__(self) -> None:
        self._static: dict[tuple, tuple[Rule, ...]] = {}
        self._direct: dict[FwEndpoint, Rule] = {}
        self._last: tuple = (None, (), [], set())  # static key, endpoints, rendering, internal

    def render(self, model: Model) -> list[Rule]:
        if model.empty:
            return []
        v6 = model.v6 if model.v6 is not None and not model.v6.empty else None
        six = (tuple(v6.networks), tuple(v6.ports)) if v6 is not None else None
        key = (tuple(model.networks), tuple(model.ports), tuple(model.links), six)
        last_key, last_eps, last_rules, internal = self._last
        same = key == last_key
        static = self._static.get(key)
        if static is None:
            if len(self._static) >= self.STATIC_KEPT:
                self._static.clear()
            static = static_rules(*key[:3]) if model.networks else ()
            if six is not None:
                static += static_rules(*six, (), 6)
            self._static[key] = static
        if not same:
            nets = (*model.networks, *(v6.networks if v6 is not None else ()))
            internal = {n.name for n in nets if n.internal}
        eps = model.endpoints
        kept = same and eps[: len(last_eps)] == last_eps
        start = len(last_eps) if kept else 0
        if len(self._direct) >= self.DIRECT_KEPT:
            self._direct.clear()
        rules = (last_rules if kept else list(static)) + [
            self._direct.get(e) or self._direct.setdefault(e, direct(e))
            for e in eps[start:]
            if e.network not in internal
        ]
        self._last = (key, eps, rules, internal)
        return list(rules)


def direct(ep: FwEndpoint) -> Rule:
    """Docker 28.2+ filterDirectAccess: nobody reaches a container's address directly from
    outside its bridge (raw PREROUTING, before conntrack)."""
    return Rule("raw", PREROUTING, (("dst", ep.ip), ("!iif", ep.device)), "DROP",
                _c(f"{ep.network} direct"), ep.family)  # fmt: skip


def direct_parts(rule: Rule) -> tuple[str, str] | None:
    """The (address, bridge) of a rule :func:`direct` made, else None (the nftables backend
    keeps these as set elements)."""
    match = rule.match
    if rule.chain == PREROUTING and len(match) == 2 and match[0][0] == "dst" \
            and match[1][0] == "!iif" and rule.target == "DROP":  # fmt: skip
        return match[0][1], match[1][1]
    return None


# A published port's host address that means "every address of the host", per family.
ANY_HOST = ("0.0.0.0", "::")


def static_rules(
    nets: tuple[FwNetwork, ...],
    ports: tuple[FwPort, ...],
    links: tuple[FwLink, ...],
    family: int = 4,
) -> tuple[Rule, ...]:
    """Every rule but the per-endpoint ones, in apply order (of IP ``family``: its networks'
    subnets, ports and links are of that family)."""
    rules: list[Rule] = [h._replace(family=family) for h in HOOKS] if family == 6 else list(HOOKS)

    def add(table: str, chain: str, match: tuple, target: str, comment: str) -> None:
        rules.append(Rule(table, chain, tuple(match), target, _c(comment), family))

    # filter LOWBRIDGE-FORWARD: the three stage jumps, then per-bridge accepts (creation order).
    for chain in (CT, INTERNAL, BRIDGE):
        rules.append(Rule("filter", FORWARD, (), f"JUMP:{chain}", COMMENT, family))
    for n in nets:
        br = n.device
        if n.internal:
            verdict = "ACCEPT" if n.icc else "DROP"
            add("filter", FORWARD, (("iif", br), ("oif", br)), verdict, f"{n.name} icc")
        elif n.icc:
            add("filter", FORWARD, (("iif", br),), "ACCEPT", f"{n.name} out and icc")
        else:
            add("filter", FORWARD, (("iif", br), ("oif", br)), "DROP", f"{n.name} icc off")
            add("filter", FORWARD, (("iif", br), ("!oif", br)), "ACCEPT", f"{n.name} out")

    for n in nets:
        br = n.device
        if n.internal:
            # IPv6 names the other side too (moby's ip6tables variant): bridged frames pass
            # through here with br_netfilter, and neighbour discovery between two sandboxes goes
            # to multicast and link-local addresses outside the subnet.
            six = family == 6
            outside_src = (("!src", n.subnet), *((("!iif", br),) if six else ()), ("oif", br))
            outside_dst = (("!dst", n.subnet), ("iif", br), *((("!oif", br),) if six else ()))
            add("filter", INTERNAL, outside_src, "DROP", f"{n.name} internal")
            add("filter", INTERNAL, outside_dst, "DROP", f"{n.name} internal")
            continue
        add(
            "filter",
            CT,
            (("oif", br), ("ctstate", "RELATED,ESTABLISHED")),
            "ACCEPT",
            f"{n.name} replies",
        )
        add("filter", BRIDGE, (("oif", br),), f"JUMP:{MAIN}", n.name)

    # Container-side ports: several host ports may lead to one (8080->80 and 127.0.0.1:8081->80).
    inner = list(
        {(p.container_ip, p.device, p.mapping.container_port, p.mapping.proto): p
         for p in sorted(ports, key=_port_key)}.values()
    )  # fmt: skip

    # filter LOWBRIDGE: published ports first (Docker inserts them), then per-bridge drops.
    for p in inner:
        m = p.mapping
        add(
            "filter",
            MAIN,
            (("dst", p.container_ip), ("!iif", p.device), ("oif", p.device), ("proto", m.proto),
             ("dport", str(m.container_port))),
            "ACCEPT",
            f"{p.container} {m.container_port}/{m.proto}",
        )  # fmt: skip
    # Legacy links with icc=false: the child's exposed ports, both ways (moby ChainInfo.Link),
    # reached through LOWBRIDGE-BRIDGE before the ICC drop in LOWBRIDGE-FORWARD.
    icc_off = {n.device for n in nets if not n.icc}
    for link in links:
        if link.device not in icc_off:
            continue
        br, port = link.device, str(link.port)
        add(
            "filter",
            MAIN,
            (
                ("src", link.parent_ip),
                ("dst", link.child_ip),
                ("iif", br),
                ("oif", br),
                ("proto", link.proto),
                ("dport", port),
            ),
            "ACCEPT",
            f"link {link.name}",
        )
        add(
            "filter",
            MAIN,
            (
                ("src", link.child_ip),
                ("dst", link.parent_ip),
                ("iif", br),
                ("oif", br),
                ("proto", link.proto),
                ("sport", port),
            ),
            "ACCEPT",
            f"link {link.name}",
        )
    for n in nets:
        if not n.internal:
            add("filter", MAIN, (("!iif", n.device), ("oif", n.device)), "DROP", n.name)

    # nat LOWBRIDGE: DNAT of published ports.
    for p in sorted(ports, key=_port_key):
        m = p.mapping
        match: list = [] if m.host_ip in ANY_HOST else [("dst", m.host_ip)]
        if family == 6:  # moby setPerPortNAT: not from link-local sources
            match.append(("!src", "fe80::/10"))
        match += [("proto", m.proto), ("dport", str(m.host_port))]
        to = f"[{p.container_ip}]" if family == 6 else p.container_ip
        add("nat", MAIN, match, f"DNAT:{to}:{m.container_port}", p.container)

    # nat LOWBRIDGE-POSTROUTING: host -> container, outbound, and a container to its own port.
    for n in nets:
        if n.internal or not n.masquerade:
            continue
        add("nat", POSTROUTING, (("oif", n.device), ("src-type", "LOCAL")), "MASQUERADE",
            f"{n.name} from host")  # fmt: skip
        add("nat", POSTROUTING, (("src", n.subnet), ("!oif", n.device)), "MASQUERADE",
            f"{n.name} outbound")  # fmt: skip
    for p in inner:
        m = p.mapping
        add(
            "nat",
            POSTROUTING,
            (("src", p.container_ip), ("dst", p.container_ip), ("proto", m.proto),
             ("dport", str(m.container_port))),
            "MASQUERADE",
            f"{p.container} hairpin",
        )  # fmt: skip

    # raw LOWBRIDGE-PREROUTING: no port published on 127.0.0.1 is reached from off-host; then
    # (render) the direct-access drops.  All are disjoint (one address each): their order is
    # free, and follows the endpoints', so the newest comes last.
    for p in sorted(ports, key=_port_key):
        m = p.mapping
        if m.host_ip.startswith("127."):
            add(
                "raw",
                PREROUTING,
                (("dst", m.host_ip), ("!iif", "lo"), ("proto", m.proto),
                 ("dport", str(m.host_port))),
                "DROP",
                f"{p.container} loopback only",
            )  # fmt: skip
    return tuple(rules)


def _port_key(p: FwPort) -> tuple:
    m = p.mapping
    return (m.host_port, m.proto, m.host_ip, p.container_ip, m.container_port)


BUILTIN_CHAINS = frozenset({"FORWARD", "PREROUTING", "OUTPUT", "POSTROUTING", "INPUT"})
_CHAIN = itemgetter(5, 0, 1)  # a rule's (family, table, chain)


def appends(old: list[Rule], new: list[Rule]) -> list[Rule] | None:
    """The rules ``new`` adds at the end of ``old`` when that is all it does and none of them
    goes into a builtin chain (a new hook), else None: the usual change, a connect, whose new
    rules each land at the end of their chain (:func:`insertions` without the indices)."""
    n = len(old)
    if not old or len(new) < n or new[:n] != old:
        return None
    tail = new[n:]
    if any(r.chain in BUILTIN_CHAINS for r in tail):
        return None
    return tail


def removed_at(old: list[Rule], new: list[Rule]) -> list[int] | None:
    """The positions in ``old`` of the rules it loses when that is all it takes to become
    ``new`` (the rest in the same order) and none of them is a hook, else None: an ``rm`` or a
    disconnect, whose endpoint's rules go and nothing else changes."""
    if not new or len(new) >= len(old):
        return None
    gone: list[int] = []
    i, n = 0, len(new)
    for at, rule in enumerate(old):
        if i < n and new[i] == rule:
            i += 1
        else:
            gone.append(at)
    if i != n or any(old[at].chain in BUILTIN_CHAINS for at in gone):
        return None
    return gone


def insertions(old: list[Rule], new: list[Rule]) -> list[tuple[int, Rule]] | None:
    """The rules to insert (with their final index in their chain) to turn ``old`` into ``new``.

    None when that takes more than insertions (a rule removed or reordered, a chain of ours
    created, a hook needed), i.e. when the whole set must be rewritten.  Insertions matter
    because they are cheap for the kernel, while removing a rule or re-declaring a chain costs an
    RCU grace period (~16 ms here, both backends) per commit.  (A change that only appends, the
    usual connect, needs no indices: :func:`appends`.)
    """
    if not old:
        return None
    chains_old: dict[tuple[int, str, str], list[Rule]] = {}
    chains_new: dict[tuple[int, str, str], list[Rule]] = {}
    for r in old:
        chains_old.setdefault(_CHAIN(r), []).append(r)
    for r in new:
        chains_new.setdefault(_CHAIN(r), []).append(r)
    if set(chains_old) - set(chains_new):
        return None
    out: list[tuple[int, Rule]] = []
    for key, rules_new in chains_new.items():
        rules_old = chains_old.get(key, [])
        if not rules_old and key[2] in BUILTIN_CHAINS:
            return None  # a new hook: other software's rules share that chain
        n = len(rules_old)
        if rules_new[:n] == rules_old:  # the usual case, compared in C: appends at most
            if rules_new[n:] and key[2] in BUILTIN_CHAINS:
                return None
            out += [(index, rule) for index, rule in enumerate(rules_new[n:], n)]
            continue
        i = 0
        for index, rule in enumerate(rules_new):
            if i < len(rules_old) and rules_old[i] == rule:
                i += 1
            else:
                if key[2] in BUILTIN_CHAINS:
                    return None
                out.append((index, rule))
        if i != len(rules_old):
            return None  # something was removed
    return out


def appended(inserts: list[tuple[int, Rule]], rules: list[Rule]) -> list[bool]:
    """For each of ``inserts`` (as :func:`insertions` returns them for ``rules``): does it land
    at the end of its chain when they are applied in order?

    Those can be plain appends, which neither backend has to resolve against the chain's
    current rules: nft fetches a chain's rules to turn an ``index`` into a handle (~15 us a rule
    here, so a raw chain with 1000 sandboxes' rules costs ~15 ms per change), and
    iptables-restore re-reads it for ``-I n``."""
    length = Counter(map(_CHAIN, rules))
    tail: dict[tuple[int, str, str], int] = {}  # chain -> lowest index of its inserted suffix
    for index, r in reversed(inserts):
        key = _CHAIN(r)
        if tail.get(key, length[key]) == index + 1:
            tail[key] = index
    return [index >= tail.get(_CHAIN(r), length[_CHAIN(r)]) for index, r in inserts]


def to_doc(rules: list[Rule]) -> list:
    """JSON-ready: a Rule is a tuple (of tuples), which json writes as arrays as it stands."""
    return rules


def from_doc(doc: list[list]) -> list[Rule]:
    """Rules as :func:`to_doc` wrote them (records of before IPv6 have no family: 4)."""
    return [Rule(t, c, tuple(tuple(m) for m in match), target, comment, *family)
            for t, c, match, target, comment, *family in doc]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Kernel settings the rule set needs (Docker's setupIPv4Forwarding, setupBridgeNetFiltering,
    setupLoopbackAddressesRouting)."""

    ip_forward: bool  # a non-internal bridge network exists
    br_netfilter: bool  # icc=false somewhere, or published ports (hairpin through the bridge)
    route_localnet: tuple[str, ...]  # bridges that may receive DNATed 127.0.0.1 traffic
    ip6_forward: bool = False  # a non-internal bridge network with IPv6 exists
    ipv6: bool = False  # a bridge network with IPv6 exists (bridged IPv6 frames to netfilter)


_INTERNAL = itemgetter(FwNetwork._fields.index("internal"))
_ICC = itemgetter(FwNetwork._fields.index("icc"))


def settings(model: Model) -> Settings:
    # all(map(...)) runs in C: this is on every change, with every network (bench/firewall.py).
    v6 = model.v6 if model.v6 is not None and model.v6.networks else None
    br_netfilter = not all(map(_ICC, model.networks)) or bool(model.ports)
    if v6 is not None:
        br_netfilter = br_netfilter or not all(map(_ICC, v6.networks)) or bool(v6.ports)
    return Settings(
        ip_forward=not all(map(_INTERNAL, model.networks)),
        br_netfilter=br_netfilter,
        route_localnet=tuple(sorted({p.device for p in model.ports})),
        ip6_forward=v6 is not None and not all(map(_INTERNAL, v6.networks)),
        ipv6=v6 is not None,
    )
