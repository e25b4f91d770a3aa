"""The firewall: a pure rule model (:mod:`.rules`) plus a thin, atomic executor per backend.

:func:`model` turns the store's records into the rules' plain data; :class:`Firewall` applies a
model with the chosen backend (one executor call per change, whatever the number of networks)
together with the kernel settings it needs, and returns how to undo that.

Kernel settings, as Docker sets them (moby ``drivers/bridge/setup_ip_forwarding.go``,
``setup_bridgenetfiltering.go``, ``setup_ipv4_linux.go``):

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

Runtime state (which backend holds the rules, the rules last applied, whether lowbridge enabled
forwarding) lives in ``/run/lowbridge``: it describes this boot's kernel and goes with it.

Cost: when a change only adds rules to those last applied (a connect, a new network), only the
insertions are sent; anything else rewrites lowbridge's chains or table whole.  Removing rules is
what the kernel makes expensive (an RCU grace period per commit, ~16 ms here), not their number.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import NamedTuple, Protocol

from lowbridge import netns
from lowbridge.errors import InvalidInput, KernelError
from lowbridge.firewall import rules as R
from lowbridge.models import Container, Endpoint, Network, gateway_endpoint
from lowbridge.ports import PortMapping, exposed

BACKENDS = ("iptables", "nftables", "auto")
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"


class Backend(Protocol):
    name: str

    def show(self, rules: list[R.Rule]) -> str: ...
    def apply(self, rules: list[R.Rule], forward_drop: bool | None) -> None: ...
    def insert(self, inserts: list[tuple[int, R.Rule]], at_end: list[bool]) -> None:
        """Insert (index in its chain, rule) pairs, ascending per chain; ``at_end`` marks plain
        appends, whose index is not read."""

    def remove(self, gone: list[R.Rule], rules: list[R.Rule]) -> bool:
        """Delete the rules ``gone``, leaving ``rules``; False, having done nothing, when this
        backend cannot make that change by deletions."""

    def clear(self) -> None: ...


def backend(name: str) -> Backend:
    """The backend called ``name``; ``auto`` is nftables when nft works here, else iptables."""
    from lowbridge.firewall import iptables, nftables

    if name not in BACKENDS:
        raise InvalidInput(f"unknown firewall backend {name!r} (iptables, nftables or auto)")
    if name == "auto":
        name = "nftables" if nftables.usable() else "iptables"
    return nftables.NftablesBackend() if name == "nftables" else iptables.IptablesBackend()


def _flag(options: dict[str, str], key: str) -> bool:
    return options.get(key, "true").lower() != "false"


def _bridge_ep(eps: list[Endpoint], nets: dict) -> Endpoint | None:
    """A sandbox's endpoint on the default bridge (where legacy links live)."""
    for ep in eps:
        if nets[ep.network_id].is_default_bridge and ep.ip:
            return ep
    return None


def model(
    networks: list[Network], containers: list[Container], endpoints: list[Endpoint]
) -> R.Model:
    """The rules' view of the store: bridge networks that have a device, and published ports.

    The default bridge gets rules while it has endpoints (its device appears with the first one),
    so that with no network in use no lowbridge rule, chain or table remains.

    Runs on every change, so it keeps its last result (bench/growth.py, bench/firewall.py):
    records are known by identity (the store hands back the same object for an unchanged one),
    and when the networks are the same records and the endpoints and containers extend the last
    ones (a create or a connect: the store lists records in the order they were made) only the
    new ones are looked at, and the result shares the last one's records -- which lets the
    rendering compare them by identity.  Any other change is a pass over everything.
    """
    nets_t, ctrs_t, eps_t = tuple(networks), tuple(containers), tuple(endpoints)
    last_nets, last_ctrs, last_eps, last = _kept
    extends = (
        last is not None
        and nets_t == last_nets
        and eps_t[: len(last_eps)] == last_eps
        and ctrs_t[: len(last_ctrs)] == last_ctrs
    )
    new_eps = eps_t[len(last_eps) :] if extends else eps_t
    new_ctrs = ctrs_t[len(last_ctrs) :] if extends else ctrs_t
    out = R.Model()
    if extends and not any(e.network_id in last.idle for e in new_eps):
        out.networks, bridges, idle = last.model.networks, last.bridges, last.idle
    else:  # (a predefined network coming into use gets its rules)
        bridges, idle = _networks(out, nets_t, {e.network_id for e in eps_t})
    # tuple.__new__ makes the same FwEndpoint as its constructor, without a Python-level call
    # per endpoint (a third of the cost at 1000 endpoints).
    new = tuple.__new__
    out.endpoints = (last.model.endpoints if extends else ()) + tuple([
        new(R.FwEndpoint, (e.ip, *bridges[e.network_id]))
        for e in new_eps
        if e.ip and e.network_id in bridges
    ])  # fmt: skip
    special = (last.special if extends else []) + [c for c in new_ctrs if c.links or c.ports]
    _kept[:] = [nets_t, ctrs_t, eps_t, _Kept(out, bridges, idle, special)]
    if special:
        _links_and_ports(out, special, nets_t, ctrs_t, eps_t)
    return out


class _Kept(NamedTuple):
    """What model() keeps of its last result to extend it."""

    model: R.Model
    bridges: dict[str, tuple[str, str]]  # network id -> (name, device) of the bridge networks
    idle: set[str]  # predefined bridge networks without endpoints (so without rules)
    special: list[Container]  # those with links or published ports


_kept: list = [(), (), (), None]  # model()'s last (networks, containers, endpoints, _Kept)


def _networks(
    out: R.Model, nets_t: tuple[Network, ...], used: set[str]
) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Add the bridge networks' records, a predefined one only while it has endpoints (``used``:
    the ids of those that have); return their (name, device) by network id and the predefined
    ones left out."""
    bridges: dict[str, tuple[str, str]] = {}
    idle: set[str] = set()
    for n in nets_t:
        if n.driver != "bridge" or n.pool is None:
            continue
        if n.predefined and n.id not in used:
            idle.add(n.id)
            continue
        out.networks.append(
            R.FwNetwork(
                name=n.name,
                device=n.device or "",
                subnet=str(n.pool.subnet),
                internal=n.internal,
                icc=_flag(n.options, OPT_ICC),
                masquerade=_flag(n.options, OPT_MASQ),
            )
        )
        bridges[n.id] = (n.name, n.device or "")
    return bridges, idle


def _links_and_ports(
    out: R.Model,
    special: list[Container],
    networks: tuple[Network, ...],
    containers: tuple[Container, ...],
    endpoints: tuple[Endpoint, ...],
) -> None:
    """Add the legacy links' and published ports' records of the containers that have them."""
    nets = {n.id: n for n in networks}
    by_ctr: dict[str, list[Endpoint]] = {}
    for ep in endpoints:
        by_ctr.setdefault(ep.container_id, []).append(ep)
    by_name = {c.name: c for c in containers}
    for ctr in special:
        for name, alias in ctr.links:
            child = by_name.get(name)
            if child is None:
                continue
            parent_ep = _bridge_ep(by_ctr.get(ctr.id, []), nets)
            child_ep = _bridge_ep(by_ctr.get(child.id, []), nets)
            if parent_ep is None or child_ep is None:
                continue
            for port, proto in exposed(child.expose, child.ports):
                out.links.append(
                    R.FwLink(
                        parent_ip=parent_ep.ip,
                        child_ip=child_ep.ip,
                        device=nets[child_ep.network_id].device,
                        port=port,
                        proto=proto,
                        name=f"{ctr.name} -> {alias}",
                    )
                )
    for ctr in special:
        if not ctr.ports:
            continue
        # Ports are published on the container's gateway endpoint only (moby
        # ProgramExternalConnectivity); a sandbox on internal networks only publishes nothing.
        gw = gateway_endpoint(by_ctr.get(ctr.id, []), nets)
        if gw is None:
            continue
        for doc in ctr.ports:
            out.ports.append(
                R.FwPort(
                    mapping=PortMapping.from_doc(doc),
                    container_ip=gw.ip,
                    device=nets[gw.network_id].device,
                    container=ctr.name,
                )
            )


# The record file's identity -- device, inode, size, ctime -- and its parse, as this process last
# wrote or read it: a library user changing the firewall again need not read and parse every rule
# back (bench/growth.py, bench/firewall.py).  The identity stands for the content because the
# record is only ever replaced whole by a rename (a new inode) or grown by appends (a new size).
_recorded: list = [None, None]


class Firewall:
    """Applies models with one backend; remembers per boot what it did (see module docstring).

    The record of the rules applied (``firewall-rules``) is one JSON line with the backend, the
    forward policy and the rules, followed by a JSON line per later change that only appended
    rules (a connect): a change writes what it added, not the whole set again.  While a change
    is under way a marker file (``firewall-dirty``) says the record may not match the kernel.
    """

    def __init__(self, backend_name: str, run_dir: str):
        self.requested = backend_name
        self.run_dir = run_dir
        self._backend: Backend | None = None
        self._key: tuple | None = None  # the record's identity as _applied last saw it

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            name = self.requested
            if name == "auto":  # the backend that holds the rules already, if any (no probe)
                name = self._state("backend") or "auto"
            self._backend = backend(name)
        return self._backend

    def _path(self, key: str) -> str:
        return os.path.join(self.run_dir, f"firewall-{key}")

    def _applied(self, policy: bool) -> list[R.Rule] | None:
        """The rule set lowbridge last applied with this backend and forward policy (None: not
        known, so the next apply rewrites everything)."""
        self._key = None
        if os.path.exists(self._path("dirty")):
            return None
        try:
            key = _identity(os.stat(self._path("rules")))
            if _recorded[0] == key:  # what this process last wrote or read: parsed already
                doc = _recorded[1]
            else:
                with open(self._path("rules"), "rb") as f:
                    key, text = _identity(os.fstat(f.fileno())), f.read()
                first, *appended = text.splitlines()
                doc = json.loads(first)
                doc["rules"] = R.from_doc(doc["rules"])
                for line in appended:
                    doc["rules"] += R.from_doc(json.loads(line))
                _recorded[:] = [key, doc]
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            return None  # a record cut short: not known
        if doc.get("backend") != self.backend.name or doc.get("policy") != policy:
            return None
        self._key = key
        return doc["rules"]

    def _record(self, rules: list[R.Rule] | None, policy: bool = False) -> None:
        if rules is None:
            self._set_state("rules", None)
            return
        doc = {"backend": self.backend.name, "policy": policy, "rules": R.to_doc(rules)}
        os.makedirs(self.run_dir, exist_ok=True)
        path = self._path("rules")
        with open(path + ".new", "w") as f:  # whole records are renamed into place: a new inode
            f.write(json.dumps(doc) + "\n")
        os.replace(path + ".new", path)
        # Identified after the rename, which sets the file's ctime (ext4 and tmpfs alike): the
        # identity read before it never matched, so every next change parsed the record again.
        _recorded[:] = [_identity(os.stat(path)), {**doc, "rules": list(rules)}]

    def _record_appended(self, rules: list[R.Rule], added: list[R.Rule], policy: bool) -> None:
        """Record ``rules``, which are the rules last read (``self._key``) plus ``added``."""
        if self._key is None or _recorded[0] != self._key:  # not what _applied read: whole
            self._record(rules, policy)
            return
        with open(self._path("rules"), "a") as f:
            f.write(json.dumps(R.to_doc(added)) + "\n")
            f.flush()
            key = _identity(os.fstat(f.fileno()))
        _recorded[:] = [key, {**_recorded[1], "rules": list(rules)}]

    def _state(self, key: str) -> str | None:
        try:
            with open(self._path(key)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def _set_state(self, key: str, value: str | None) -> None:
        path = self._path(key)
        if value is None:
            if os.path.exists(path):
                os.unlink(path)
            return
        os.makedirs(self.run_dir, exist_ok=True)
        with open(path, "w") as f:
            f.write(value)

    def show(self, m: R.Model) -> str:
        rules = R.render(m)
        if self.backend.name == "nftables":
            return self.backend.show(rules, self._state("forward") == "enabled")  # type: ignore[call-arg]
        return self.backend.show(rules)

    def apply(self, m: R.Model, rules: list[R.Rule] | None = None) -> Callable[[], None]:
        """Make the kernel match ``m`` (whose rendering ``rules`` the caller may already have);
        return a function that restores the kernel settings that were there before."""
        undo: list[Callable[[], None]] = []
        try:
            self._apply(m, R.render(m) if rules is None else rules, undo)
        except BaseException:
            _unwind(undo)
            raise
        return lambda: _unwind(undo)

    def _apply(self, m: R.Model, rules: list[R.Rule], undo: list[Callable[[], None]]) -> None:
        need = R.settings(m)
        forward_drop: bool | None = None
        previous = self._state("backend")
        if previous and previous != self.backend.name:
            # Switching backends: the other one's rules go first (Docker does the same), and
            # the default-deny lowbridge set with forwarding moves along: an iptables FORWARD
            # policy of DROP left behind would drop what the nftables rules accept.
            previous_backend = backend(previous)
            previous_backend.clear()
            self._set_state("backend", None)
            undo.append(lambda: self._set_state("backend", previous))
            if self._state("forward") == "enabled":
                if previous == "iptables":
                    previous_backend.accept_forwarding()  # type: ignore[attr-defined]
                forward_drop = True

        if need.ip_forward and netns.read_sysctl("net/ipv4/ip_forward") == "0":
            _write_sysctl("net/ipv4/ip_forward", "1", undo)
            forward_drop = True
            self._set_state("forward", "enabled")
            undo.append(lambda: self._set_state("forward", None))
            if self.backend.name == "iptables":
                undo.append(self.backend.accept_forwarding)  # type: ignore[attr-defined]
        if self.backend.name == "nftables" and self._state("forward") == "enabled":
            forward_drop = True
        if need.br_netfilter:
            _ensure_br_netfilter(undo)
        for device in need.route_localnet:
            _write_sysctl(f"net/ipv4/conf/{device}/route_localnet", "1", undo)

        # nftables carries the policy in lowbridge's own chain, on every apply; iptables sets the
        # builtin FORWARD policy once, when forwarding is enabled (a full apply).
        policy = bool(forward_drop) and self.backend.name == "nftables"
        changing = forward_drop is not None and self.backend.name == "iptables"
        old = None if changing else self._applied(policy)
        # The cheapest way from the rules in the kernel (as recorded) to ``rules``: appends (a
        # connect: no index to work out), deletions (an rm: a rewrite of every rule costs ~10-60
        # ms with a thousand sandboxes), insertions, else a rewrite of them all.
        tail = gone = inserts = None
        if old is not None:
            tail = R.appends(old, rules)
            gone = None if tail is not None else R.removals(old, rules)
            if tail is not None:
                inserts = [(-1, r) for r in tail]
            elif gone is None:
                inserts = R.insertions(old, rules)
        self._set_state("dirty", "")  # until the kernel is known to match the record again
        done = False  # the kernel brought in line without a rewrite
        with contextlib.suppress(KernelError):  # the kernel no longer matched: rewrite it all
            if gone:
                done = self.backend.remove(gone, rules)
            elif inserts is not None:
                if inserts:
                    at_end = (
                        [True] * len(inserts) if tail is not None else R.appended(inserts, rules)
                    )
                    self.backend.insert(inserts, at_end)
                done = True
        if not done:
            self.backend.apply(rules, forward_drop)
            self._record(rules if rules else None, policy)
        elif tail is not None:  # only appended to: the record grows by what was added
            if tail:
                self._record_appended(rules, tail, policy)
        elif inserts or gone:
            self._record(rules, policy)
        if previous != (now := self.backend.name if not m.empty else None):
            self._set_state("backend", now)
        self._set_state("dirty", None)

    def reapply(self, m: R.Model) -> Callable[[], None]:
        """Rewrite every rule whatever lowbridge believes is in the kernel (after a flush)."""
        self._record(None)
        return self.apply(m)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one record from another (see ``_recorded``); the change time as well, for
    file systems that hand a freed inode number out again."""
    return st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns


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


def _ensure_br_netfilter(undo: list[Callable[[], None]]) -> None:
    if not os.path.exists("/proc/sys/net/bridge"):
        # A module on most distributions (built in on these VMs); loaded on demand, as Docker 28.
        import subprocess

        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    if not os.path.exists("/proc/sys/net/bridge"):
        raise KernelError(
            "enable_icc=false and published ports need br_netfilter: modprobe br_netfilter failed"
        )
    _write_sysctl("net/bridge/bridge-nf-call-iptables", "1", undo)
