"""The iptables backend: ``iptables-restore --noflush`` of lowbridge's own chains.

One ``iptables-save`` tells which of lowbridge's chains and hooks already exist, then one
``iptables-restore --noflush`` rewrites them, each table committed atomically.  In ``--noflush``
mode a ``:CHAIN - [0:0]`` line creates *or flushes* that chain inside the same commit, and other
chains are left alone (shared/reference/pyroute2-notes.md 6.2) -- so lowbridge's chains are
replaced whole while FORWARD, PREROUTING, ... keep everything that is not lowbridge's.  Hooks in the
builtin chains are added only when missing (a bare ``-A FORWARD`` would be appended again on
every apply).  ``LOWBRIDGE-USER`` is declared only when it does not exist yet: after that it is
the user's and lowbridge never flushes it.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from lowbridge.firewall import tool
from lowbridge.firewall.rules import CHAINS, HOOKS, USER, Rule

if TYPE_CHECKING:
    import subprocess

TABLES = ("raw", "filter", "nat")
BUILTIN = {"FORWARD", "PREROUTING", "OUTPUT", "POSTROUTING", "INPUT"}
# IPv6 rules go through the ip6tables tools, with the same text (Docker's ip6tables rules follow
# its iptables ones): the program names by IP family.
SAVE = {4: "iptables-save", 6: "ip6tables-save"}
RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}


_FLAGS = {"iif": "-i", "oif": "-o", "src": "-s", "dst": "-d"}


def _spec(rule: Rule) -> str:
    """The iptables arguments of a rule (without ``-A CHAIN``)."""
    out: list[str] = []
    proto = dict(rule.match).get("proto")
    for key, value in rule.match:
        neg = "! " if key.startswith("!") else ""
        key = key.lstrip("!")
        if key in _FLAGS:
            out.append(f"{neg}{_FLAGS[key]} {value}")
        elif key == "proto":
            out.append(f"-p {value}")
        elif key in ("dport", "sport"):
            out.append(f"-m {proto} --{key} {value}")
        elif key == "ctstate":
            out.append(f"-m conntrack --ctstate {value}")
        elif key in ("src-type", "dst-type"):
            out.append(f"-m addrtype --{key} {value}")
        else:
            raise ValueError(f"unknown match {key}")
    out.append(f'-m comment --comment "{rule.comment}"')
    target = rule.target
    if target.startswith("JUMP:"):
        out.append(f"-j {target[5:]}")
    elif target.startswith("DNAT:"):
        out.append(f"-j DNAT --to-destination {target[5:]}")
    else:
        out.append(f"-j {target}")
    return " ".join(out)


def render(rules: list[Rule]) -> str:
    """The rule set as iptables-restore text, hooks included (what ``firewall show`` prints);
    the IPv6 rules after a comment line, as ip6tables-restore text."""
    v6 = [r for r in rules if r.family == 6]
    if v6:
        v4 = [r for r in rules if r.family == 4]
        return _render(v4) + "# ip6tables-restore\n" + _render(v6)
    return _render(rules)


def _render(rules: list[Rule]) -> str:
    lines: list[str] = []
    for table in TABLES:
        table_rules = [r for r in rules if r.table == table]
        if not table_rules:
            continue
        lines.append(f"*{table}")
        lines += [f":{chain} - [0:0]" for chain in CHAINS[table]]
        lines += [f"-A {r.chain} {_spec(r)}" for r in table_rules]
        lines.append("COMMIT")
    return "\n".join(lines) + ("\n" if lines else "")


def _saved(family: int = 4) -> dict[str, list[str]]:
    """iptables-save (ip6tables-save) output, split per table."""
    return _split(_run([SAVE[family]], None, f"read the {SAVE[family][:-5]} rule set").stdout)


def _by_family(rules: list[Rule]) -> dict[int, list[Rule]]:
    out: dict[int, list[Rule]] = {4: [], 6: []}
    for r in rules:
        out[r.family].append(r)
    return out


def _ours(saved: dict[str, list[str]], forward_drop: bool) -> list[str]:
    """lowbridge's lines of an iptables-save, in order: its chains, their rules and the hooks
    that jump to them (``LOWBRIDGE-USER``'s rules are the user's), and the FORWARD policy when
    lowbridge set it."""
    out = []
    for table in TABLES:
        for line in saved.get(table, []):
            parts = line.split()
            if line.startswith(":"):
                chain = parts[0][1:]
                if chain in CHAINS[table] or (forward_drop and table == "filter" and
                                              chain == "FORWARD"):  # fmt: skip
                    out.append(f"{table} {' '.join(parts[:2])}")
            elif (
                parts[:1] == ["-A"]
                and parts[1] != USER
                and (
                    parts[1] in CHAINS[table]
                    or parts[-2:-1] == ["-j"]
                    and parts[-1] in CHAINS[table]
                )
            ):
                out.append(f"{table} {line}")
    return out


def _split(text: str) -> dict[str, list[str]]:
    """iptables-save output, per table."""
    tables: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = line[1:]
            tables[current] = []
        elif current and line and not line.startswith("#"):
            tables[current].append(line)
    return tables


def _run(argv: list[str], stdin: str | None, what: str) -> subprocess.CompletedProcess:
    return tool.run(argv, stdin, what, "iptables")


def _restore(family: int, text: str, what: str) -> None:
    _run([RESTORE[family], "--noflush", "--wait"], text, what)


def script(rules: list[Rule], saved: dict[str, list[str]], forward_drop: bool | None) -> str:
    """The ``iptables-restore --noflush`` input that turns ``saved`` into ``rules``.

    ``forward_drop`` True sets the FORWARD policy to DROP (Docker does that when it enabled
    forwarding itself), False sets ACCEPT, None leaves the policy alone.
    """
    lines: list[str] = []
    for table in TABLES:
        have = saved.get(table, [])
        existing = {ln.split()[0][1:] for ln in have if ln.startswith(":")}
        ours = [c for c in CHAINS[table] if c in existing]
        hooks_present = {
            (ln.split()[1], ln.split()[-1]) for ln in have if ln.startswith("-A ") and
            ln.split()[1] in BUILTIN and ln.split()[-2] == "-j" and ln.split()[-1] in CHAINS[table]
        }  # fmt: skip
        table_rules = [r for r in rules if r.table == table]
        body: list[str] = []
        if table == "filter" and forward_drop is not None:
            body.append(f":FORWARD {'DROP' if forward_drop else 'ACCEPT'} [0:0]")
        if table_rules:
            for chain in CHAINS[table]:
                if chain == USER and USER in existing:
                    continue  # the user's chain: never flushed once made
                body.append(f":{chain} - [0:0]")
            for r in table_rules:
                if r.chain in BUILTIN:
                    if (r.chain, r.target[5:]) in hooks_present:
                        continue
                    # Hooks go first in the builtin chain, USER before FORWARD (Docker keeps
                    # DOCKER-USER at position 1): insert in reverse order at position 1.
                    continue
                body.append(f"-A {r.chain} {_spec(r)}")
            missing = [
                r for r in table_rules
                if r.chain in BUILTIN and (r.chain, r.target[5:]) not in hooks_present
            ]  # fmt: skip
            body += [f"-I {r.chain} 1 {_spec(r)}" for r in reversed(missing)]
        elif ours:
            # Nothing left to do for lowbridge here: unhook and delete its chains -- except a
            # LOWBRIDGE-USER that holds the user's rules, which stays, hooked.
            user_rules = [ln for ln in have if ln.startswith(f"-A {USER} ")]
            for chain, target in sorted(hooks_present):
                if target == USER and user_rules:
                    continue
                hook = next(h for h in HOOKS if h.chain == chain and h.target[5:] == target)
                body.append(f"-D {chain} {_spec(hook)}")
            for chain in ours:
                if chain == USER and user_rules:
                    continue  # keep the user's rules (and so its chain and jump)
                body.append(f":{chain} - [0:0]")
            for chain in ours:
                if chain == USER and user_rules:
                    continue
                body.append(f"-X {chain}")
        if body:
            lines += [f"*{table}", *body, "COMMIT"]
    return "\n".join(lines) + ("\n" if lines else "")


class IptablesBackend:
    name = "iptables"

    def show(self, rules: list[Rule], forward_drop: bool = False) -> str:
        return render(rules)

    def apply(
        self, rules: list[Rule], forward_drop: bool | None, ipv6: bool = False,
        forward_drop6: bool | None = None,
    ) -> None:  # fmt: skip
        """See :class:`~lowbridge.firewall.Backend`; ``ipv6``: IPv6 rules are wanted or may be
        there (else ip6tables is not even read), ``forward_drop6`` as ``forward_drop``."""
        by = _by_family(rules)
        for family, drop in ((4, forward_drop), (6, forward_drop6)):
            if family == 6 and not (ipv6 or by[6]):
                continue
            text = script(by[family], _saved(family), drop)
            if text:
                _restore(family, text, "apply iptables rules")

    def insert(self, inserts: list[tuple[int, Rule]], at_end: list[bool]) -> None:
        """Insert rules at their final positions (ascending per chain), appending those
        ``at_end`` marks; nothing is removed."""
        for family in (4, 6):
            lines: list[str] = []
            for table in TABLES:
                body = [
                    f"-A {r.chain} {_spec(r)}" if end else f"-I {r.chain} {index + 1} {_spec(r)}"
                    for (index, r), end in zip(inserts, at_end, strict=True)
                    if r.table == table and r.family == family
                ]
                if body:
                    lines += [f"*{table}", *body, "COMMIT"]
            if lines:
                _restore(family, "\n".join(lines) + "\n", "apply iptables rules")

    def remove(self, gone: list[Rule], rules: list[Rule]) -> bool:
        """Delete the rules ``gone`` (``-D`` by their spec, one transaction per table).  With
        iptables-nft it returns once the kernel committed them (firewall.tool.start)."""
        for family, doomed in _by_family(gone).items():
            lines: list[str] = []
            for table in TABLES:
                body = [f"-D {r.chain} {_spec(r)}" for r in doomed if r.table == table]
                if body:
                    lines += [f"*{table}", *body, "COMMIT"]
            if not lines:
                continue
            text = "\n".join(lines) + "\n"
            if self._legacy:  # (no commit to watch for: it is done when it exits)
                _restore(family, text, "apply iptables rules")
            else:
                argv = [RESTORE[family], "--noflush", "--wait"]
                tool.start(argv, text, "apply iptables rules", "iptables", lines.count("COMMIT"))
        return True

    def listing(self, forward_drop: bool, forward_drop6: bool = False) -> list[str]:
        """lowbridge's part of the kernel's rule set, as iptables-save prints it (and
        ip6tables-save, its lines marked ``ip6``)."""
        return _ours(_saved(), forward_drop) + [
            "ip6 " + line for line in _ours(_saved(6), forward_drop6)
        ]

    def readback(
        self, rules: list[Rule], forward_drop: bool, forward_drop6: bool = False
    ) -> list[str]:
        """``rules`` as :meth:`listing` would print them once applied (in a scratch namespace,
        so that iptables-save writes both alike)."""
        out: list[str] = []
        for family, ours in _by_family(rules).items():
            drop = forward_drop if family == 4 else forward_drop6
            if family == 6 and not ours and not drop:
                continue
            text = script(ours, {}, drop or None)
            restore, save = RESTORE[family], SAVE[family]
            found = tool.in_scratch(f"{restore} --noflush; {save}", text,
                                    "read back iptables rules", "iptables")  # fmt: skip
            lines = _ours(_split(found), drop)
            out += lines if family == 4 else ["ip6 " + line for line in lines]
        return out

    def clear(self) -> None:
        self.apply([], None, ipv6=True)

    def accept_forwarding(self, family: int = 4) -> None:
        """Put the FORWARD policy back to ACCEPT (undo of the DROP set with forwarding)."""
        text = "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"
        _restore(family, text, "reset the FORWARD policy")

    def fingerprint(self) -> object:
        """iptables-nft is nftables underneath: the ruleset generation; legacy xtables: each
        table's entry count and size (kernel.netfilter)."""
        from lowbridge.kernel import netfilter

        if self._legacy:
            return netfilter.legacy_tables(TABLES)
        return netfilter.generation()

    @functools.cached_property
    def _legacy(self) -> bool:
        return legacy()  # a walk of PATH: once per backend, not twice per change


def legacy() -> bool:
    """Whether ``iptables-restore`` here is the legacy xtables one (Debian's alternatives link
    it to xtables-legacy-multi or xtables-nft-multi)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        found = os.path.join(folder, "iptables-restore")
        if os.access(found, os.X_OK):
            return "legacy" in os.path.basename(os.path.realpath(found))
    return False
