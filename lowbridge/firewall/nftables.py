"""The nftables backend: lowbridge's own tables ``ip lowbridge`` (and ``ip6 lowbridge`` for the
networks with IPv6, as Docker's ``ip6 docker-bridges``), replaced in one transaction.

``nft -f`` runs a whole script as one transaction: ``table ip lowbridge`` (create if missing),
``delete table ip lowbridge``, then the full new table -- so every apply is atomic and idempotent,
and nothing outside lowbridge's table is read or changed.  Base chains sit at the standard
priorities of the tables they stand for (raw -300, dstnat -100, filter 0, srcnat 100), as Docker's
nftables backend does (table ``ip docker-bridges``, moby ``internal/nftables``).

Differences from the iptables backend, as in Docker: there is no USER chain (an nftables
``accept`` is not final across base chains, so users add their own table and a ``drop`` anywhere
wins); the FORWARD "policy DROP" that Docker sets when it enabled forwarding becomes the policy of
lowbridge's forward base chain.
"""

from __future__ import annotations

import os
import sys
import threading

from lowbridge.errors import KernelError
from lowbridge.firewall import tool
from lowbridge.firewall.rules import CHAINS, COMMENT, PREROUTING, USER, Rule, direct_parts

TABLE = "lowbridge"
# builtin (table, chain) -> base chain name and its hook declaration
BASE = {
    ("raw", "PREROUTING"): ("raw-PREROUTING", "type filter hook prerouting priority raw"),
    ("filter", "FORWARD"): ("filter-FORWARD", "type filter hook forward priority filter"),
    ("nat", "PREROUTING"): ("nat-PREROUTING", "type nat hook prerouting priority dstnat"),
    ("nat", "OUTPUT"): ("nat-OUTPUT", "type nat hook output priority -100"),
    ("nat", "POSTROUTING"): ("nat-POSTROUTING", "type nat hook postrouting priority srcnat"),
}


# Docker's per-container direct-access drops (rules.direct_parts) as two sets and one rule: a
# packet for a sandbox's address that did not come in on that sandbox's bridge is dropped.  An
# endpoint is then one set element, not one rule: adding a rule makes the kernel validate the
# whole table (libnftables here: 0.29 ms with 1 network's rules, 0.41 ms with 100 networks'),
# adding an element does not (0.22 ms either way); removing one needs no rewrite of the table.
DIRECT_ADDRS, DIRECT = "direct-addrs", "direct"
# Per IP family: the nft table family, its address match and its set's address type.
FAMILY = {4: ("ip", "ip", "ipv4_addr"), 6: ("ip6", "ip6", "ipv6_addr")}


def _direct_sets(family: int) -> tuple[str, str]:
    kind = FAMILY[family][2]
    return (
        f"\tset {DIRECT_ADDRS} {{ type {kind}; }}",
        f"\tset {DIRECT} {{ type {kind} . ifname; }}",
    )


def _direct_rule(family: int) -> str:
    ip = FAMILY[family][1]
    return (f"{ip} daddr @{DIRECT_ADDRS} {ip} daddr . iifname != @{DIRECT} drop "
            f'comment "{COMMENT}: direct access"')  # fmt: skip


def _elements(parts: list[tuple[str, str]], family: int = 4) -> list[str]:
    """``add element`` commands for direct-access (address, bridge) pairs."""
    if not parts:
        return []
    table = f"{FAMILY[family][0]} {TABLE}"
    addrs = ", ".join(dict.fromkeys(ip for ip, _ in parts))
    pairs = ", ".join(f'{ip} . "{dev}"' for ip, dev in parts)
    return [f"add element {table} {DIRECT_ADDRS} {{ {addrs} }}",
            f"add element {table} {DIRECT} {{ {pairs} }}"]  # fmt: skip


def _chain(table: str, chain: str) -> str:
    if (table, chain) in BASE:
        return BASE[(table, chain)][0]
    return f"{table}-{chain}"


def _statement(rule: Rule) -> str:
    out: list[str] = []
    for key, value in rule.match:
        neg = "!= " if key.startswith("!") else ""
        key = key.lstrip("!")
        if key in ("iif", "oif"):
            out.append(f'{key}name {neg}"{value}"')
        elif key in ("src", "dst"):
            out.append(f"{FAMILY[rule.family][1]} {key[0]}addr {neg}{value}")
        elif key == "proto":
            continue  # implied by "tcp dport" / "udp dport"
        elif key in ("dport", "sport"):
            out.append(f"{dict(rule.match)['proto']} {key} {value}")
        elif key == "ctstate":
            out.append(f"ct state {value.lower()}")
        elif key in ("src-type", "dst-type"):
            out.append(f"fib {key[0]}addr type {value.lower()}")
        else:
            raise ValueError(f"unknown match {key}")
    target = rule.target
    if target.startswith("JUMP:"):
        out.append(f"jump {_chain(rule.table, target[5:])}")
    elif target.startswith("DNAT:"):
        out.append(f"dnat to {target[5:]}")
    else:
        out.append(target.lower())
    out.append(f'comment "{rule.comment}"')
    return " ".join(out)


def render(rules: list[Rule], forward_drop: bool = False, forward_drop6: bool = False) -> str:
    """The tables as an nft script (what ``firewall show`` prints and what apply loads): ``ip
    lowbridge``, then ``ip6 lowbridge`` when there are IPv6 rules."""
    v4 = _table([r for r in rules if r.family == 4], forward_drop, 4)
    v6 = [r for r in rules if r.family == 6]
    return v4 + _table(v6, forward_drop6, 6) if v6 else v4


def _table(rules: list[Rule], forward_drop: bool, family: int) -> str:
    header = f"table {FAMILY[family][0]} {TABLE} {{"
    rules = [r for r in rules if USER not in (r.chain, r.target[5:])]
    if not rules:
        return ""
    chains: dict[str, list[str]] = {}
    for (table, _builtin), (name, _decl) in BASE.items():
        if any(r.table == table for r in rules):
            chains[name] = []
    for table, names in CHAINS.items():
        if any(r.table == table for r in rules):
            for name in names:
                if name != USER:
                    chains.setdefault(_chain(table, name), [])
    direct = []
    for r in rules:
        parts = direct_parts(r)
        if parts is not None:
            direct.append(parts)
        else:
            chains.setdefault(_chain(r.table, r.chain), []).append(_statement(r))
    raw = _chain("raw", PREROUTING)
    if raw in chains:  # the direct-access rule, after the raw drops (their order is free)
        chains[raw].append(_direct_rule(family))
    # Every chain is declared (base chains with their hook) before any rule, because a jump to
    # a chain not yet declared in the transaction fails with ENOENT; so is every set.
    lines = [header]
    if raw in chains:
        lines += _direct_sets(family)
    for name in chains:
        base = next((decl for n, decl in BASE.values() if n == name), None)
        if base:
            policy = "drop" if name == "filter-FORWARD" and forward_drop else "accept"
            lines.append(f"\tchain {name} {{ {base}; policy {policy}; }}")
        else:
            lines.append(f"\tchain {name} {{ }}")
    lines.append("}")
    lines.append(header)
    for name, statements in chains.items():
        if not statements:
            continue
        lines.append(f"\tchain {name} {{")
        lines += [f"\t\t{st}" for st in statements]
        lines.append("\t}")
    lines.append("}")
    lines += _elements(direct, family)
    return "\n".join(lines) + "\n"


_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def _library(kept: bool = False):  # noqa: ANN202
    """libnftables through its official binding (Debian's python3-nftables), or None;
    ``kept``: a context never freed (see NftablesBackend._run).

    The binding is a small ctypes wrapper the distribution ships outside any venv, so its
    directory is searched last and only for this import.  In-process it saves the ``nft`` exec
    (~3 ms here) and the per-process start-up of libnftables' parser (~5 ms).
    """
    try:
        import nftables
    except ImportError:
        if not os.path.isdir(os.path.join(_DIST_PACKAGES, "nftables")):
            return None
        sys.path.append(_DIST_PACKAGES)
        try:
            import nftables
        except ImportError:
            return None
        finally:
            sys.path.remove(_DIST_PACKAGES)
    cls = nftables.Nftables
    if kept:  # (the binding frees its context in __del__)
        cls = type("KeptNftables", (cls,), {"__del__": lambda self: None})
    try:
        return cls()
    except OSError:  # libnftables.so.1 missing
        return None


# libnftables (1.0.6 here, Debian 12) waits on its netlink socket with select(), and glibc's
# fortified FD_SET aborts the whole process ("bit out of range 0 - FD_SETSIZE on fd_set") when
# that socket's number is 1024 or more -- which a batch of a few hundred sandboxes, each
# holding its netlink and resolver sockets until the commit, reaches.  The context opens its
# socket when made (nft_ctx_new), on the lowest free number: one is made only while that number
# is below FD_SETSIZE, with a margin for the threads opening descriptors meanwhile; otherwise
# the nft binary (a process of its own, with few descriptors) runs the script.
FD_SETSIZE = 1024
_FD_MARGIN = 64


def _low_descriptor_free() -> bool:
    """Whether the next descriptor this process opens is numbered well below FD_SETSIZE."""
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return fd < FD_SETSIZE - _FD_MARGIN


def run_script(script: str, what: str, context=None) -> None:  # noqa: ANN001
    """Run an nft script as one transaction in the calling thread's namespace: with
    ``context`` (a libnftables context made in that namespace), else a fresh one, else (no
    library, or only high descriptor numbers free: see FD_SETSIZE) ``nft -f -``."""
    lib = context or (_library() if _low_descriptor_free() else None)
    if lib is None:
        tool.run(["nft", "-f", "-"], script, what, "nftables")
        return
    rc, _, error = lib.cmd(script)
    if rc != 0:
        first = next((ln for ln in error.splitlines() if ln.strip()), str(rc))
        raise KernelError(f"{what}: libnftables failed: {first}")


# The process's own namespace's libnftables context, once made (NftablesBackend._run); one
# user at a time (a context is not thread-safe).
_HOME_CONTEXT: list = []
_HOME_LOCK = threading.Lock()


def _after_fork() -> None:
    """A forked child makes its own context (the parent's socket would answer both)."""
    global _HOME_LOCK
    _HOME_LOCK = threading.Lock()
    _HOME_CONTEXT.clear()


os.register_at_fork(after_in_child=_after_fork)


class NftablesBackend:
    name = "nftables"

    def _run(self, script: str, what: str) -> None:
        """A script in the process's own namespace, with the process's one context for it,
        made on first use and never freed: making one costs ~0.4 ms here and freeing one ~1.6
        ms (bench/firewall.py), and freeing it closes its socket, which after a deletion waits
        for nf_tables' destruction work -- the kernel closes it at the exit instead, as the
        process's other netfilter sockets (kernel.netfilter.kept).  (Contexts for sandboxes
        are not kept: a kept context's socket would hold the sandbox's namespace alive.)"""
        from lowbridge.kernel import netfilter

        if not netfilter.at_home():
            run_script(script, what)
            return
        with _HOME_LOCK:
            if not _HOME_CONTEXT and _low_descriptor_free():
                _HOME_CONTEXT.append(_library(kept=True))
            run_script(script, what, _HOME_CONTEXT[0] if _HOME_CONTEXT else None)

    def show(self, rules: list[Rule], forward_drop: bool = False) -> str:
        return render(rules, forward_drop, forward_drop)

    def apply(
        self, rules: list[Rule], forward_drop: bool | None, ipv6: bool = False,
        forward_drop6: bool | None = None,
    ) -> None:  # fmt: skip
        """See :class:`~lowbridge.firewall.Backend`; ``ipv6``: the IPv6 table is wanted or
        may be there (else it is not touched)."""
        # Create-then-delete makes the delete valid whether or not the table existed.
        families = ("ip", "ip6") if ipv6 or any(r.family == 6 for r in rules) else ("ip",)
        text = "".join(f"table {f} {TABLE}\ndelete table {f} {TABLE}\n" for f in families)
        text += render(rules, bool(forward_drop), bool(forward_drop6))
        self._run(text, "apply nftables rules")

    def insert(self, inserts: list[tuple[int, Rule]], at_end: list[bool]) -> None:
        """Insert rules at their final indices (ascending per chain), one transaction;
        ``at_end`` marks those that land at the end of their chain (plain appends)."""
        # "add ... index i-1" places a rule after the one at i-1, i.e. at i (also at the end);
        # "insert" without index places it first; "add" without index appends.
        lines: list[str] = []
        direct: dict[int, list[tuple[str, str]]] = {4: [], 6: []}
        for (index, r), end in zip(inserts, at_end, strict=True):
            parts = direct_parts(r)
            if parts is not None:  # an element, wherever its rule would land in the rule list
                direct[r.family].append(parts)
                continue
            chain = f"{FAMILY[r.family][0]} {TABLE} {_chain(r.table, r.chain)}"
            if end:
                lines.append(f"add rule {chain} {_statement(r)}")
            elif index > 0:
                lines.append(f"add rule {chain} index {index - 1} {_statement(r)}")
            else:
                lines.append(f"insert rule {chain} {_statement(r)}")
        lines += _elements(direct[4]) + _elements(direct[6], 6)
        if lines:
            self._run("\n".join(lines) + "\n", "apply nftables rules")

    def remove(self, gone: list[Rule], rules: list[Rule]) -> bool:
        """Delete the direct-access set elements of ``gone``; False (nothing done) when other
        rules go too: nft deletes a rule by its handle, which lowbridge does not keep, so those
        changes rewrite the table.  An address stays in the address set while another bridge's
        endpoint (still in ``rules``) has it."""
        if not gone or any(direct_parts(r) is None for r in gone):
            return False
        kept = {p[0] for p in map(direct_parts, rules) if p is not None}
        lines = []
        for family in (4, 6):
            parts = [direct_parts(r) for r in gone if r.family == family]
            if not parts:
                continue
            table = f"{FAMILY[family][0]} {TABLE}"
            addrs = ", ".join(dict.fromkeys(ip for ip, _ in parts if ip not in kept))
            pairs = ", ".join(f'{ip} . "{dev}"' for ip, dev in parts)
            lines.append(f"delete element {table} {DIRECT} {{ {pairs} }}")
            if addrs:
                lines.append(f"delete element {table} {DIRECT_ADDRS} {{ {addrs} }}")
        self._run("\n".join(lines) + "\n", "apply nftables rules")
        return True

    def listing(self, forward_drop: bool, forward_drop6: bool = False) -> list[str]:
        """lowbridge's tables as ``nft -s list`` prints them (nothing when it has none)."""
        out: list[str] = []
        for family in ("ip", "ip6"):
            try:
                text = tool.run(["nft", "-s", "list", "table", family, TABLE], None,
                                "read the nftables rule set", "nftables").stdout  # fmt: skip
            except KernelError as exc:
                if "No such file or directory" in str(exc):
                    continue
                raise
            out += _lines(text)
        return out

    def readback(
        self, rules: list[Rule], forward_drop: bool, forward_drop6: bool = False
    ) -> list[str]:
        """``rules`` as :meth:`listing` would print them once applied (in a scratch namespace,
        so that nft writes both alike)."""
        text = render(rules, forward_drop, forward_drop6)
        if not text:
            return []
        tables = "table ip6" in text and f"; nft -s list table ip6 {TABLE}" or ""
        out = tool.in_scratch(f"nft -f -; nft -s list table ip {TABLE}{tables}", text,
                              "read back nftables rules", "nftables")  # fmt: skip
        return _lines(out)

    def clear(self) -> None:
        self.apply([], None, ipv6=True)

    def accept_forwarding(self, family: int = 4) -> None:
        """Nothing: the default-deny is the policy of lowbridge's own chain, which goes with it."""

    def fingerprint(self) -> int | None:
        from lowbridge.kernel import netfilter

        return netfilter.generation()


def _lines(listing: str) -> list[str]:
    """An ``nft list`` as lines to compare: a set's elements in one sorted line (the kernel
    lists a hash set in its own order, over several lines)."""
    import re

    def one(m: re.Match) -> str:
        items = sorted(i.strip() for i in m.group(1).replace("\n", " ").split(",") if i.strip())
        return "elements = { " + ", ".join(items) + " }"

    text = re.sub(r"elements = \{([^}]*)\}", one, listing)
    return [line.strip() for line in text.splitlines() if line.strip()]


def usable() -> bool:
    """nft is installed and can talk to the kernel here."""
    import subprocess

    try:
        proc = subprocess.run(["nft", "list", "tables"], capture_output=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0
