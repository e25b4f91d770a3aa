"""The firewall: a pure rule model and renderer, and a thin executor that applies them atomically.

    model      records -> the rules' plain data (rules.Model)
    rules      plain data -> every lowbridge rule (pure), with a memoising Renderer
    iptables   a backend: ``iptables-restore --noflush`` of lowbridge's own chains
    nftables   a backend: lowbridge's own table, one transaction
    record     what was applied this boot (files in the runtime directory)

:class:`Firewall` owns one backend and brings the kernel from the record of what it applied to a
new model's rules in one executor call per change, with the kernel settings the rules need, and
returns how to undo that.  Kernel settings, as Docker sets them (moby
``drivers/bridge/setup_ip_forwarding.go``, ``setup_bridgenetfiltering.go``,
``setup_ipv4_linux.go``):

* ``net.ipv4.ip_forward=1`` once a non-internal bridge network exists.  If lowbridge is the one
  that turned it on, it also makes forwarding default-deny -- iptables: ``FORWARD`` policy DROP;
  nftables: policy drop on lowbridge's forward chain -- because otherwise every host that routes
  to a bridge subnet could reach every container.  Like Docker, lowbridge never turns forwarding
  back off nor resets the policy: other software may rely on them by then.
* ``net.bridge.bridge-nf-call-iptables=1`` (loading ``br_netfilter`` if needed) only when a
  network has ``enable_icc=false`` or a port is published: both need bridged frames to pass
  through netfilter (the ICC drop; conntrack for hairpin DNAT between two containers of one
  bridge).
* ``net.ipv4.conf.<bridge>.route_localnet=1`` on bridges with published ports, so DNAT of
  ``127.0.0.1:port`` to a container can be routed (Docker's proxy-off mode).

The record is trusted only while the kernel's ruleset fingerprint (:mod:`lowbridge.kernel.
netfilter`) is the one lowbridge's last change left: anyone else's change -- ``iptables -F``, a
deleted hook, ``nft flush ruleset`` -- makes the next change rewrite every rule of lowbridge's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Protocol

from lowbridge.errors import InvalidInput, KernelError
from lowbridge.firewall import rules as R
from lowbridge.firewall.model import Modeler
from lowbridge.firewall.record import Record
from lowbridge.kernel import netns

BACKENDS = ("iptables", "nftables", "auto")


class Backend(Protocol):
    """One way of putting lowbridge's rules into the kernel."""

    name: str

    def show(self, rules: list[R.Rule], forward_drop: bool) -> str:
        """The rules in the backend's own syntax (what ``firewall show`` prints)."""

    def apply(
        self,
        rules: list[R.Rule],
        forward_drop: bool | None,
        ipv6: bool = False,
        forward_drop6: bool | None = None,
    ) -> None:
        """Make lowbridge's rules exactly ``rules``, whatever is there now; ``forward_drop``
        sets (True), clears (False) or leaves (None) the forward default-deny; ``ipv6``: IPv6
        rules of lowbridge's may be there although ``rules`` has none (else the IPv6 side is
        not read); ``forward_drop6`` as ``forward_drop``, for IPv6."""

    def insert(self, inserts: list[tuple[int, R.Rule]], at_end: list[bool]) -> None:
        """Insert (index in its chain, rule) pairs, ascending per chain; ``at_end`` marks plain
        appends, whose index is not read."""

    def remove(self, gone: list[R.Rule], rules: list[R.Rule]) -> bool:
        """Delete the rules ``gone``, leaving ``rules``; False, having done nothing, when this
        backend cannot make that change by deletions.  It may return once the kernel has the
        change, its tool still exiting (firewall.tool.start)."""

    def clear(self) -> None:
        """Remove every rule, chain and table of lowbridge's."""

    def accept_forwarding(self, family: int = 4) -> None:
        """Undo the forward default-deny set with forwarding (where it lives outside
        lowbridge's own rules), of IP ``family``."""

    def fingerprint(self) -> object:
        """The kernel ruleset's state, as cheaply as the backend can read it."""

    def listing(self, forward_drop: bool, forward_drop6: bool = False) -> list[str]:
        """lowbridge's part of the kernel's rule set, as the backend's tool lists it."""

    def readback(
        self, rules: list[R.Rule], forward_drop: bool, forward_drop6: bool = False
    ) -> list[str]:
        """``rules`` as :meth:`listing` would list them once applied."""


def backend(name: str) -> Backend:
    """The backend called ``name``; ``auto`` is nftables when nft works here, else iptables."""
    from lowbridge.firewall import iptables, nftables

    if name not in BACKENDS:
        raise InvalidInput(f"unknown firewall backend {name!r} (iptables, nftables or auto)")
    if name == "auto":
        name = "nftables" if nftables.usable() else "iptables"
    return nftables.NftablesBackend() if name == "nftables" else iptables.IptablesBackend()


class Firewall:
    """Applies models with one backend; remembers per boot what it did (see module docstring).
    One per controller: it keeps the last model, rendering and record it saw."""

    def __init__(self, backend_name: str, run_dir: str):
        self.requested = backend_name
        self.record = Record(run_dir)
        self.modeler = Modeler()
        self.renderer = R.Renderer()
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            name = self.requested
            if name == "auto":  # the backend that holds the rules already, if any (no probe)
                name = self.record.get("backend") or "auto"
            self._backend = backend(name)
        return self._backend

    def model(self, view) -> R.Model:  # noqa: ANN001 - a models.View
        return self.modeler.model(view)

    def show(self, m: R.Model) -> str:
        return self.backend.show(self.renderer.render(m), self.forward_drop)

    @property
    def forward_drop(self) -> bool:
        """The forward default-deny is set (lowbridge set it, and keeps it while it is needed)."""
        return self.record.get("forward") == "enabled"

    @property
    def forward_drop6(self) -> bool:
        """The same for IPv6 (set when lowbridge turned IPv6 forwarding on)."""
        return self.record.get("forward6") == "enabled"

    def drift(self, m: R.Model) -> tuple[list[str], list[str]]:
        """(lines the kernel lacks, lines it has that ``m`` does not make) of lowbridge's part
        of the rule set, as the backend's own listing prints it: ``m``'s rules are applied in
        a scratch namespace and listed the same way, so both sides are written alike."""
        from collections import Counter

        drops = (self.forward_drop, self.forward_drop6)
        want = Counter(self.backend.readback(self.renderer.render(m), *drops))
        have = Counter(self.backend.listing(*drops))
        return list((want - have).elements()), list((have - want).elements())

    def rule_text(self, rule: R.Rule) -> str:
        """One rule as the backend writes it (``-A …`` / an nft statement)."""
        text = self.backend.show([rule], False)
        keep = ("-A ", "\t\t", "add element")
        return "; ".join(line.strip() for line in text.splitlines() if line.startswith(keep))

    def change(self, before: R.Model, after: R.Model) -> Callable[[], None]:
        """Bring the firewall from model ``before`` to ``after``; return the undo (which puts
        back ``before``'s rules and the kernel settings as they were).  Nothing to do costs two
        renderings compared."""
        rules_before, rules_after = self.renderer.render(before), self.renderer.render(after)
        if rules_before == rules_after and R.settings(before) == R.settings(after):
            return lambda: None
        restore = self.apply(after, rules_after)

        def undo() -> None:
            restore()
            self.apply(before, rules_before)

        return undo

    def apply(self, m: R.Model, rules: list[R.Rule] | None = None) -> Callable[[], None]:
        """Make the kernel match ``m`` (whose rendering ``rules`` the caller may already have);
        return a function that restores the kernel settings that were there before."""
        undo: list[Callable[[], None]] = []
        try:
            self._apply(m, self.renderer.render(m) if rules is None else rules, undo)
        except BaseException:
            _unwind(undo)
            raise
        return lambda: _unwind(undo)

    def reapply(self, m: R.Model) -> Callable[[], None]:
        """Rewrite every rule whatever lowbridge believes is in the kernel (after a flush)."""
        self.record.write(None, self.backend.name)
        return self.apply(m)

    def _apply(self, m: R.Model, rules: list[R.Rule], undo: list[Callable[[], None]]) -> None:
        forward_drop, forward_drop6 = self._settings(R.settings(m), undo)
        # nftables carries the policy in lowbridge's own chain, on every apply; iptables sets the
        # builtin FORWARD policy once, when forwarding is enabled (a full apply).
        nft = self.backend.name == "nftables"
        changing = (forward_drop is not None and not nft) or forward_drop6 is not None
        if nft and self.forward_drop:
            forward_drop = True
        if nft and self.forward_drop6:
            forward_drop6 = True
        policy = bool(forward_drop) and nft
        trusted = self.record.matches(repr(self.backend.fingerprint()))
        old = self.record.rules(self.backend.name, policy) if trusted and not changing else None
        # No fingerprint until the kernel is known to match the record again: a change that
        # dies in between leaves the next one a full rewrite.
        self.record.set("fingerprint", None)
        if not self._patch(old, rules, policy):
            # The IPv6 side is read only when IPv6 rules are wanted or may be there (the
            # record had some, or it is not known).
            ipv6 = old is None or any(r.family == 6 for r in (*old, *rules))
            self.backend.apply(rules, forward_drop, ipv6=ipv6, forward_drop6=forward_drop6)
            self.record.write(rules if rules else None, self.backend.name, policy)
        previous = self.record.get("backend")
        if previous != (now := self.backend.name if not m.empty else None):
            self.record.set("backend", now)
        self.record.set("fingerprint", repr(self.backend.fingerprint()))

    def _patch(self, old: list[R.Rule] | None, rules: list[R.Rule], policy: bool) -> bool:
        """The cheapest way from the rules in the kernel (``old``, as recorded) to ``rules``:
        appends (a connect: no index to work out), deletions (an rm: a rewrite of every rule
        costs ~10-60 ms with a thousand sandboxes), insertions; False when only a rewrite of
        them all will do (or the kernel no longer matched and the patch failed)."""
        if old is None:
            return False
        tail = R.appends(old, rules)
        gone = None if tail is not None else R.removed_at(old, rules)
        if tail is None and gone is None:
            inserts = R.insertions(old, rules)
            if inserts is None:
                return False
        try:
            if gone:
                if not self.backend.remove([old[i] for i in gone], rules):
                    return False
                self.record.remove(rules, gone, self.backend.name, policy)
            elif tail is not None:
                if tail:
                    self.backend.insert([(-1, r) for r in tail], [True] * len(tail))
                    self.record.append(rules, tail, self.backend.name, policy)
            elif inserts:
                self.backend.insert(inserts, R.appended(inserts, rules))
                self.record.write(rules, self.backend.name, policy)
        except KernelError:  # the kernel no longer matched the record: rewrite it all
            return False
        return True

    def _settings(
        self, need: R.Settings, undo: list[Callable[[], None]]
    ) -> tuple[bool | None, bool | None]:
        """The kernel settings ``need`` asks for, and a backend switch; return the forward
        default-deny to set (True) or None to leave it, for IPv4 and for IPv6."""
        forward_drop: bool | None = None
        forward_drop6: bool | None = None
        previous = self.record.get("backend")
        if previous and previous != self.backend.name:
            # Switching backends: the other one's rules go first (Docker does the same), and
            # the default-deny lowbridge set with forwarding moves along: an iptables FORWARD
            # policy of DROP left behind would drop what the nftables rules accept.
            other = backend(previous)
            other.clear()
            self.record.set("backend", None)
            undo.append(lambda: self.record.set("backend", previous))
            if self.forward_drop:
                other.accept_forwarding()
                forward_drop = True
        if need.ip_forward and netns.read_sysctl("net/ipv4/ip_forward") == "0":
            _write_sysctl("net/ipv4/ip_forward", "1", undo)
            forward_drop = True
            self.record.set("forward", "enabled")
            undo.append(lambda: self.record.set("forward", None))
            undo.append(self.backend.accept_forwarding)
        if need.ip6_forward and netns.read_sysctl("net/ipv6/conf/all/forwarding") == "0":
            # Docker's setupIPv6Forwarding: all (and default) forwarding on, and the IPv6
            # FORWARD default-deny when it was Docker that turned it on (28.0, #48594).
            _write_sysctl("net/ipv6/conf/default/forwarding", "1", undo)
            _write_sysctl("net/ipv6/conf/all/forwarding", "1", undo)
            forward_drop6 = True
            self.record.set("forward6", "enabled")
            undo.append(lambda: self.record.set("forward6", None))
            undo.append(lambda: self.backend.accept_forwarding(6))
        if need.br_netfilter:
            _ensure_br_netfilter(undo, need.ipv6)
        for device in need.route_localnet:
            _write_sysctl(f"net/ipv4/conf/{device}/route_localnet", "1", undo)
        return forward_drop, forward_drop6


def _unwind(undo: list[Callable[[], None]]) -> None:
    for fn in reversed(undo):
        with contextlib.suppress(Exception):  # best effort, as every undo
            fn()
    undo.clear()


def _write_sysctl(key: str, value: str, undo: list[Callable[[], None]]) -> None:
    old = netns.read_sysctl(key)
    if old == value:
        return
    netns.write_sysctls([(key, value)])
    undo.append(lambda: netns.write_sysctls([(key, old)]))


def _ensure_br_netfilter(undo: list[Callable[[], None]], ipv6: bool = False) -> None:
    if not os.path.exists("/proc/sys/net/bridge"):
        # A module on most distributions (built in on these VMs); loaded on demand, as Docker 28.
        import subprocess

        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    if not os.path.exists("/proc/sys/net/bridge"):
        raise KernelError(
            "enable_icc=false and published ports need br_netfilter: modprobe br_netfilter failed"
        )
    _write_sysctl("net/bridge/bridge-nf-call-iptables", "1", undo)
    if ipv6:
        _write_sysctl("net/bridge/bridge-nf-call-ip6tables", "1", undo)
