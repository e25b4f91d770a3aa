"""``explain A B``: whether A reaches B, and why, step by step (pure: records, rules and a few
facts of the kernel in; lines out).

The packet is walked as the kernel would (Documentation/networking: a routed packet meets raw
PREROUTING, nat PREROUTING, the routing decision, filter FORWARD, nat POSTROUTING; a locally
sent one nat OUTPUT instead, and no FORWARD; a bridged one FORWARD when br_netfilter is on),
through lowbridge's own rules as data (:mod:`lowbridge.firewall.rules`): the first rule that
matches in each chain, jumps followed and returned from, the builtin chain's policy last.  The
rule that decides is shown in the active backend's syntax.  Only lowbridge's rules are walked:
someone else's rules in other chains are not seen (the answer says so when it matters).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from lowbridge.dns import records
from lowbridge.errors import InvalidInput, LowbridgeError
from lowbridge.firewall.rules import Model, Rule, settings
from lowbridge.models import Container, Endpoint, View


@dataclass(frozen=True)
class Facts:
    """What explain reads besides the records: the rules as lowbridge renders them, the forward
    default-deny, the host's own addresses, and two route lookups of the kernel."""

    view: View
    model: Model
    rules: list[Rule]
    forward_drop: bool
    host_addresses: frozenset[str]
    host_route: Callable[[str], str | None]  # address -> the host's device towards it
    host_source: Callable[[str], str | None]  # address -> the host's own address towards it
    sandbox_route: Callable[[Container, str], str | None]  # -> the sandbox's interface
    rule_text: Callable[[Rule], str]  # the rule in the active backend's syntax


@dataclass
class Packet:
    """One packet as the firewall sees it (a ping when ``proto`` is icmp)."""

    src: str
    dst: str
    proto: str
    dport: int
    iif: str = ""
    oif: str = ""
    local_src: bool = False


@dataclass
class Explanation:
    """The verdict, and the steps that lead to it, in order."""

    reach: bool = False
    steps: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.steps.append(text)

    def lines(self, a: str, b: str) -> list[str]:
        verdict = "reaches" if self.reach else "does not reach"
        return [*(f"{i}. {s}" for i, s in enumerate(self.steps, 1)), f"=> {a} {verdict} {b}"]


def explain(f: Facts, a: str, b: str, port: int = 0, proto: str = "tcp") -> Explanation:
    """Whether ``a`` (a sandbox, ``host`` or an outside address) reaches ``b`` (a sandbox, a name
    ``a`` resolves, an address, or ``host``) on ``port``/``proto`` (no port: with a ping)."""
    out = Explanation()
    if not port:  # no port: a ping (an ICMP echo matches no tcp/udp rule)
        proto = "icmp"
    src = _source(f, a)
    dst = _target(f, src, b, out)
    if dst is None:
        return out
    if isinstance(src, Container):
        _from_sandbox(f, src, dst, port, proto, out)
    elif src == "host":
        _from_host(f, dst, port, proto, out)
    else:
        _from_outside(f, src, dst, port, proto, out)
    return out


# ---------------------------------------------------------------------------- who is who
def _source(f: Facts, a: str) -> Container | str:
    if a == "host":
        return "host"
    try:
        return f.view.container(a)
    except LowbridgeError:  # not a sandbox: an address, then
        pass
    ip = _address(a, "A")
    owner = _owner(f, ip)
    return owner[0] if owner else ("host" if ip in f.host_addresses else ip)


def _address(text: str, what: str) -> str:
    _refuse_ipv6(text, what)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        message = f"explain: {what} {text!r} is no sandbox, IPv4 address or 'host'"
        raise InvalidInput(message) from None


def _refuse_ipv6(text: str, what: str) -> None:
    """explain walks IPv4 paths only: an IPv6 address gets a line saying so, not a verdict."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return
    if address.version == 6:
        raise InvalidInput(f"explain: {what} {text} is an IPv6 address: explain follows IPv4 "
                           "paths only (name the sandbox, or give its IPv4 address)")  # fmt: skip


def _owner(f: Facts, ip: str) -> tuple[Container, Endpoint] | None:
    for ep in f.view.endpoints:
        if ep.ip == ip:
            return f.view.ctrs[ep.container_id], ep
    return None


def _target(f: Facts, src: Container | str, b: str, out: Explanation) -> str | None:
    """B as an address (a name resolved as A's resolver would, and said so)."""
    if b == "host":  # the host's address that A sees: its gateway, its LAN address, localhost
        if src == "host":
            return "127.0.0.1"
        eps = f.view.endpoints_of(src.id) if isinstance(src, Container) else []
        toward = eps[0].ip if eps and eps[0].ip else (src if isinstance(src, str) else "")
        return (f.host_source(toward) if toward else None) or "127.0.0.1"
    _refuse_ipv6(b, "B")
    try:
        return str(ipaddress.IPv4Address(b))
    except ValueError:
        pass
    if isinstance(src, Container) and src.dns_ports:
        views = records.build(f.view.networks, f.view.containers, f.view.endpoints, [])
        found = records.resolve(views[src.id], b) if src.id in views else None
        found = [ip for ip in found or () if ":" not in ip]  # its A records: IPv4 paths
        if found:
            out.say(f"DNS: {src.name}'s resolver (127.0.0.11) answers {b} with {found[0]}")
            return found[0]
        out.say(f"DNS: {src.name}'s resolver does not know {b} (not on a network they share)")
    elif isinstance(src, Container):
        for name, ip in src.extra_hosts:
            if name == b:
                out.say(f"/etc/hosts of {src.name}: {b} is {ip}")
                return ip
        out.say(f"DNS: {src.name} is only on the default bridge: no embedded resolver, and "
                f"/etc/hosts has no {b}")  # fmt: skip
    try:
        ctr = f.view.container(b)
    except LowbridgeError:
        if not out.steps:
            raise InvalidInput(f"explain: B {b!r} is no sandbox, name, address or 'host'") from None
        return None
    eps = f.view.endpoints_of(ctr.id)
    if not eps or not eps[0].ip:
        out.say(f"{ctr.name} has no address")
        return None
    out.say(f"by address instead: {ctr.name} is {eps[0].ip}")
    return eps[0].ip


# ---------------------------------------------------------------------------- paths
def _from_sandbox(f: Facts, ctr: Container, dst: str, port: int, proto: str, out: Explanation):  # noqa: ANN202
    eps = {e.ifname: e for e in f.view.endpoints_of(ctr.id)}
    if dst in {e.ip for e in eps.values()} or dst.startswith("127."):
        out.say(f"route: {dst} is {ctr.name}'s own address: over its lo, no firewall between")
        out.reach = True
        return
    dev = f.sandbox_route(ctr, dst)
    ep = eps.get(dev or "")
    if ep is None:
        why = f" (via {dev}, not lowbridge's)" if dev else " (an internal network gives none)"
        out.say(f"route: {ctr.name} has no route to {dst}{why}")
        return
    net = f.view.nets[ep.network_id]
    pkt = Packet(ep.ip or "", dst, proto, port)
    subnet = ipaddress.ip_network(str(net.pool.subnet)) if net.pool else None
    if subnet is not None and ipaddress.ip_address(dst) in subnet:
        out.say(f"route: {dst} is on {ctr.name}'s {dev} ({net.name}, {subnet}): on-link")
        _on_link(f, net, pkt, out)
        return
    out.say(f"route: default via {ctr.name}'s {dev} to {net.name}'s gateway"
            + (f" ({net.pool.gateway})" if net.pool and net.pool.gateway else ""))  # fmt: skip
    if net.device is None or net.driver != "bridge":
        out.say(f"{net.driver}: the packet leaves by the parent's LAN, past this host's firewall")
        out.reach = True
        return
    pkt.iif = net.device
    _routed(f, pkt, out)


def _on_link(f: Facts, net, pkt: Packet, out: Explanation) -> None:  # noqa: ANN001
    owner = _owner(f, pkt.dst)
    if net.pool and net.pool.gateway and pkt.dst == str(net.pool.gateway):
        out.say(f"{pkt.dst} is {net.name}'s gateway, the host")
        if pkt.dport:
            _dnat(f, "PREROUTING", pkt, out)
            if pkt.dst != str(net.pool.gateway):  # a published port, reached by the gateway
                pkt.iif = net.device or ""
                _routed_after_dnat(f, pkt, out)
                return
        _local(pkt, out)
        return
    if owner is None or owner[1].network_id != net.id:
        out.say(f"no sandbox has {pkt.dst} on {net.name}: ARP goes unanswered")
        return
    if net.driver != "bridge":
        out.say(f"{net.driver}: frames go between the two directly, past this host's firewall")
        out.reach = True
        return
    pkt.iif = pkt.oif = net.device or ""
    if not settings(f.model).br_netfilter:
        out.say(f"bridged on {net.device}; br_netfilter is off, so no rule sees it")
        out.reach = True
        return
    out.say(f"bridged on {net.device}; br_netfilter passes it through FORWARD")
    out.reach = _chain(f, "filter", "FORWARD", pkt, out)
    if out.reach:
        out.say(f"delivered to {owner[0].name}")


def _routed(f: Facts, pkt: Packet, out: Explanation) -> None:
    """A packet arriving on ``pkt.iif`` for another address: raw, DNAT, route, FORWARD, SNAT."""
    if not _chain(f, "raw", "PREROUTING", pkt, out, quiet_accept=True):
        return
    if pkt.dst in f.host_addresses:
        _dnat(f, "PREROUTING", pkt, out)
        if pkt.dst in f.host_addresses:
            _local(pkt, out)
            return
    _routed_after_dnat(f, pkt, out)


def _routed_after_dnat(f: Facts, pkt: Packet, out: Explanation) -> None:
    """The routing decision, filter FORWARD and nat POSTROUTING."""
    owner = _owner(f, pkt.dst)
    if owner is not None:
        net = f.view.nets[owner[1].network_id]
        pkt.oif = net.device or ""
        where = f"{owner[0].name} on {net.name}"
    else:
        pkt.oif = f.host_route(pkt.dst) or ""
        where = f"the host's {pkt.oif} (off-host)" if pkt.oif else "nowhere (no route)"
        if not pkt.oif:
            out.say(f"route: the host has no route to {pkt.dst}")
            return
    out.say(f"route: {pkt.dst} is {where}: forwarded from {pkt.iif} to {pkt.oif}")
    if not _chain(f, "filter", "FORWARD", pkt, out):
        return
    _snat(f, pkt, out)
    out.reach = True


def _from_host(f: Facts, dst: str, port: int, proto: str, out: Explanation) -> None:
    pkt = Packet("", dst, proto, port, local_src=True)
    if dst in f.host_addresses or dst.startswith("127."):
        _dnat(f, "OUTPUT", pkt, out)
        if pkt.dst in f.host_addresses or pkt.dst.startswith("127."):
            _local(pkt, out)
            return
    owner = _owner(f, pkt.dst)
    out.say(f"sent by the host itself: nat OUTPUT, then straight out (a local packet is not "
            f"forwarded) to {owner[0].name if owner else pkt.dst}")  # fmt: skip
    if owner is not None:
        pkt.oif = f.view.nets[owner[1].network_id].device or ""
    _snat(f, pkt, out)
    out.reach = True


def _local(pkt: Packet, out: Explanation) -> None:
    """The packet is the host's own (no DNAT took it elsewhere)."""
    if pkt.dport:
        out.say(f"{pkt.dst} is the host's own and no lowbridge port is published on "
                f"{pkt.dport}/{pkt.proto}: only a service of the host's could answer")  # fmt: skip
        return
    out.say(f"{pkt.dst} is the host's own: delivered locally (lowbridge leaves INPUT be)")
    out.reach = True


def _from_outside(f: Facts, src: str, dst: str, port: int, proto: str, out: Explanation):  # noqa: ANN202
    iif = f.host_route(src)
    if not iif:
        out.say(f"the host has no route back to {src}: it is not a neighbour of this host")
        return
    out.say(f"{src} is off-host: its packets arrive on the host's {iif}")
    _routed(f, Packet(src, dst, proto, port, iif=iif), out)


# ---------------------------------------------------------------------------- the rules
def _dnat(f: Facts, hook: str, pkt: Packet, out: Explanation) -> None:
    got = _walk(f.rules, "nat", hook, pkt)
    if got and got[0].startswith("DNAT:"):
        _, ip, to = got[0].split(":")
        out.say(f"nat {hook}: {pkt.dst}:{pkt.dport}/{pkt.proto} is DNATed to {ip}:{to} by "
                f"{f.rule_text(got[1])}")  # fmt: skip
        pkt.dst, pkt.dport = ip, int(to)
    elif pkt.dport:
        out.say(f"nat {hook}: no port published on {pkt.dst}:{pkt.dport}/{pkt.proto}")


def _snat(f: Facts, pkt: Packet, out: Explanation) -> None:
    got = _walk(f.rules, "nat", "POSTROUTING", pkt)
    if got and got[0] == "MASQUERADE":
        out.say(f"nat POSTROUTING: the source becomes {pkt.oif}'s address, by "
                f"{f.rule_text(got[1])}")  # fmt: skip


def _chain(
    f: Facts, table: str, hook: str, pkt: Packet, out: Explanation, quiet_accept: bool = False
) -> bool:
    """Walk ``table``'s builtin chain ``hook``; say the verdict and the rule; True: accepted."""
    got = _walk(f.rules, table, hook, pkt)
    if got is None:
        policy = "DROP" if (table, hook) == ("filter", "FORWARD") and f.forward_drop else "ACCEPT"
        if policy == "DROP" or not quiet_accept:
            out.say(f"{table} {hook}: no lowbridge rule decides; the chain's policy: {policy}")
        return policy == "ACCEPT"
    verdict, rule = got
    if verdict == "ACCEPT" and quiet_accept:
        return True
    out.say(f"{table} {hook}: {verdict} by {f.rule_text(rule)}")
    return verdict == "ACCEPT"


def _walk(rules: list[Rule], table: str, chain: str, pkt: Packet) -> tuple[str, Rule] | None:
    """The first terminal verdict for ``pkt`` in ``chain`` (jumps followed), or None."""
    for rule in rules:
        if rule.table != table or rule.chain != chain or not _matches(rule, pkt):
            continue
        if rule.target.startswith("JUMP:"):
            got = _walk(rules, table, rule.target[5:], pkt)
            if got is not None:
                return got
            continue
        return rule.target, rule
    return None


def _matches(rule: Rule, pkt: Packet) -> bool:
    for key, value in rule.match:
        negate = key.startswith("!")
        key = key.lstrip("!")
        if key in ("iif", "oif"):
            hit = (pkt.iif if key == "iif" else pkt.oif) == value
        elif key in ("src", "dst"):
            addr = pkt.src if key == "src" else pkt.dst
            hit = bool(addr) and ipaddress.ip_address(addr) in ipaddress.ip_network(value)
        elif key == "proto":
            hit = pkt.proto == value
        elif key == "dport":
            hit = pkt.dport == int(value)
        elif key == "sport":
            hit = False  # a new connection's source port is not a service's
        elif key == "ctstate":
            hit = "NEW" in value.split(",")
        elif key == "src-type":
            hit = pkt.local_src
        elif key == "dst-type":
            hit = True  # nat PREROUTING/OUTPUT are walked only for the host's own addresses
        else:
            hit = False
        if hit == negate:
            return False
    return True
