"""``lowbridge-cni``: lowbridge as a CNI plugin (CNI spec 1.0 and 1.1; 0.3/0.4 results too).

A runtime (Podman, containerd, CRI-O) runs the plugin with ``CNI_COMMAND`` and the other CNI_*
variables in the environment and the network's configuration on stdin (containernetworking/cni
SPEC.md, "Section 2: Execution Protocol").  Each command is one controller verb:

* ``ADD``: the network the configuration names (``network``, else its ``name``) -- an existing
  lowbridge network, or one created now from the configuration's ``subnet``, ``gateway``,
  ``ipRange``, ``driver``, ``options``, ``internal`` (``docker network create``'s fields) --
  and the runtime's namespace (``CNI_NETNS``) adopted as a sandbox, exactly as ``container
  create --netns`` does: named after the runtime's container (``K8S_POD_NAME``, which Podman
  sets to it) and labelled with ``CNI_CONTAINERID``, its interface named ``CNI_IFNAME``, its
  ports published from the ``portMappings`` capability argument, its DNS names from the
  ``aliases`` one.  A second ADD of the same container (another network) is a ``network
  connect``.  The result is rendered from the records: interfaces, ips, routes, and the DNS the
  sandbox's own resolv.conf has (127.0.0.11 on user-defined networks: the embedded resolver;
  with ``"dns": "gateway"`` the resolver answers at the network's gateway too, as aardvark-dns
  does for Podman, and the result names that address).
* ``DEL``: the endpoint goes (``network disconnect``), with the sandbox when it was its last
  (``rm``; the adopted namespace is left to the runtime, as it was).  Nothing to remove is
  success: DEL is idempotent.  An ADD killed half-way is undone by the next command's journal
  settling, before anything else (lowbridge.controller.journal).
* ``CHECK``: the endpoint is recorded with the addresses ``prevResult`` lists, and ``check``
  finds nothing wrong with the sandbox or the firewall.
* ``STATUS`` (1.1): lowbridge's store and state can be read.  ``GC`` (1.1): endpoints of this
  network whose (container id, interface) is not in ``cni.dev/valid-attachments`` are removed.
* ``VERSION``: the versions above.

Errors are the spec's JSON on stdout, exit status 1: its well-known codes where they apply
(1 version, 2 field, 3 container, 4 environment, 5 I/O, 6 decoding, 7 configuration, 11 try
again, 50 not available), else 100 + lowbridge's own exit code (a conflict is 104).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from lowbridge import names
from lowbridge.errors import InvalidInput, LowbridgeError, NotFound

SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
EMBEDDED = "127.0.0.11"  # the configuration's ``dns``: where the sandbox's resolver answers
LABEL = "io.lowbridge.cni.container-id"
# CNI_ARGS keys lowbridge reads, and those runtimes pass that it has no use for.
_ARGS = {"IP", "MAC", "K8S_POD_NAME"}
_IGNORED = {"IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"}
# SPEC.md "Error codes"
INCOMPATIBLE, UNSUPPORTED_FIELD, UNKNOWN_CONTAINER, BAD_ENV, IO_FAILURE, BAD_JSON, BAD_CONFIG = (
    1, 2, 3, 4, 5, 6, 7)  # fmt: skip
TRY_AGAIN, NOT_AVAILABLE = 11, 50
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class CniError(Exception):
    """An error as the spec prints it."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def doc(self, version: str) -> dict:
        out = {"cniVersion": version, "code": self.code, "msg": self.msg}
        return out | ({"details": self.details} if self.details else {})


@dataclass(frozen=True)
class Call:
    """One invocation: the CNI_* variables and the configuration (validated)."""

    command: str
    conf: dict = field(default_factory=dict)
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Mapping[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.conf.get("cniVersion", SUPPORTED[-1])

    @property
    def network(self) -> str:
        """The lowbridge network: the configuration's ``network``, else the CNI network name."""
        return self.conf.get("network") or self.conf["name"]

    def runtime(self, key: str, default: object = None) -> object:
        return (self.conf.get("runtimeConfig") or {}).get(key, default)


# ------------------------------------------------------------------ parsing (pure)
def parse(env: Mapping[str, str], stdin: str) -> Call:
    """The call ``env`` and ``stdin`` make, or a :class:`CniError` saying what is wrong."""
    command = env.get("CNI_COMMAND", "")
    if command not in ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"):
        raise CniError(BAD_ENV, f"unknown CNI_COMMAND {command!r}")
    if command == "VERSION":  # its configuration is not read (as CNI's pkg/skel)
        return Call(command, {})
    try:
        conf = json.loads(stdin) if stdin.strip() else {}
    except ValueError as exc:
        raise CniError(BAD_JSON, "cannot decode the network configuration", str(exc)) from None
    if not isinstance(conf, dict):
        raise CniError(BAD_JSON, "the network configuration is not a JSON object")
    version = conf.get("cniVersion")
    if version not in SUPPORTED:
        raise CniError(INCOMPATIBLE, f"CNI version {version!r} not supported",
                       f"supported: {', '.join(SUPPORTED)}")  # fmt: skip
    if not isinstance(conf.get("name"), str) or not conf["name"]:
        raise CniError(BAD_CONFIG, "the network configuration has no name")
    if conf.get("ipam"):
        raise CniError(UNSUPPORTED_FIELD, "ipam is not supported: lowbridge assigns addresses "
                       "itself (give subnet, gateway, ipRange instead)")  # fmt: skip
    if conf.get("dns", EMBEDDED) not in (EMBEDDED, "gateway"):
        raise CniError(BAD_CONFIG, f"dns must be {EMBEDDED!r} (the default) or 'gateway', "
                       f"not {conf['dns']!r}")  # fmt: skip
    if command in ("STATUS", "GC"):
        return Call(command, conf)
    cid, ifname, netns = (env.get(k, "") for k in ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"))
    if not _CONTAINER_ID.match(cid):
        raise CniError(BAD_ENV, f"invalid CNI_CONTAINERID {cid!r}")
    if not names.valid_ifname(ifname):
        raise CniError(BAD_ENV, f"invalid CNI_IFNAME {ifname!r}")
    if command in ("ADD", "CHECK") and not netns:
        raise CniError(BAD_ENV, "CNI_NETNS is required")
    return Call(command, conf, cid, netns, ifname, _args(env.get("CNI_ARGS", "")))


def _args(text: str) -> dict[str, str]:
    """CNI_ARGS: ``K=V;K=V``; a key lowbridge does not know is an error unless
    ``IgnoreUnknown`` is true (CNI CONVENTIONS.md, "CNI_ARGS")."""
    pairs = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            raise CniError(BAD_ENV, f"invalid CNI_ARGS item {item!r}: expected KEY=VALUE")
        pairs[key] = value
    ignore = pairs.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = set(pairs) - _ARGS - _IGNORED
    if unknown and not ignore:
        raise CniError(UNSUPPORTED_FIELD, f"unknown CNI_ARGS {', '.join(sorted(unknown))}")
    return {k: v for k, v in pairs.items() if k in _ARGS}


def network_request(call: Call):  # noqa: ANN201 - a drivers.base.NetworkRequest
    """The network to create when the configuration's is not there yet."""
    from lowbridge.drivers.base import NetworkRequest

    conf = call.conf
    text = {k: conf.get(k) for k in ("driver", "subnet", "gateway", "ipRange")}
    for key, value in text.items():
        if value is not None and not isinstance(value, str):
            raise CniError(BAD_CONFIG, f"{key} must be a string")
    for key in ("options", "labels"):
        if not isinstance(conf.get(key, {}), dict):
            raise CniError(BAD_CONFIG, f"{key} must be an object of strings")
    return NetworkRequest(
        name=call.network,
        driver=text["driver"] or "bridge",
        subnet=text["subnet"],
        gateway=text["gateway"],
        ip_range=text["ipRange"],
        internal=bool(conf.get("internal")),
        options={str(k): str(v) for k, v in conf.get("options", {}).items()},
        labels={str(k): str(v) for k, v in conf.get("labels", {}).items()},
    )


def container_request(call: Call):  # noqa: ANN201 - a controller.requests.ContainerRequest
    """The sandbox an ADD makes: the runtime's namespace adopted (see the module docstring)."""
    from lowbridge.controller.requests import ContainerRequest

    name = call.args.get("K8S_POD_NAME", "")
    try:
        names.validate_name("container", name)
    except InvalidInput:
        name = f"cni-{call.container_id[:12]}"
    return ContainerRequest(
        name=name,
        network=call.network,
        netns=call.netns,
        ip=_static_ip(call),
        mac_address=call.args.get("MAC") or None,
        publish=[_publish(m) for m in call.runtime("portMappings", [])],
        aliases=_aliases(call),
        labels={LABEL: call.container_id},
        ifname=call.ifname,
        dns_at_gateway=call.conf.get("dns") == "gateway",
    )


def _static_ip(call: Call) -> str | None:
    ips = call.runtime("ips", []) or ([call.args["IP"]] if call.args.get("IP") else [])
    if len(ips) > 1:
        raise CniError(UNSUPPORTED_FIELD, "one static address per network is supported")
    return ips[0].split("/")[0] if ips else None


def _aliases(call: Call) -> list[str]:
    names_ = (call.runtime("aliases", {}) or {}).get(call.conf["name"], [])
    return [a for a in names_ if a != call.args.get("K8S_POD_NAME")]


def _publish(mapping: dict) -> str:
    """One ``portMappings`` entry (CNI CONVENTIONS.md) as a ``-p`` spec."""
    try:
        host, ctr = int(mapping["hostPort"]), int(mapping["containerPort"])
    except (KeyError, TypeError, ValueError):
        raise CniError(BAD_CONFIG, f"invalid portMappings entry {mapping!r}") from None
    proto = str(mapping.get("protocol") or "tcp").lower()
    ip = mapping.get("hostIP") or ""
    ip = f"[{ip}]" if ":" in ip else ip
    return f"{ip + ':' if ip else ''}{host}:{ctr}/{proto}"


# ------------------------------------------------------------------ results (pure)
def result(call: Call, ep, host_mac: str | None, resolv: str, dns_at: str | None = None) -> dict:  # noqa: ANN001
    """ADD's result for endpoint ``ep`` (a models.Endpoint), after ``prevResult``'s entries;
    ``dns_at``: the address the sandbox's resolver answers at besides 127.0.0.11 (then named
    instead of it)."""
    prev = call.conf.get("prevResult") or {}
    interfaces = list(prev.get("interfaces", []))
    if ep.host_ifname:
        interfaces.append({"name": ep.host_ifname} | ({"mac": host_mac} if host_mac else {}))
    interfaces.append({"name": ep.ifname, "mac": ep.mac, "sandbox": call.netns})
    index = len(interfaces) - 1
    old = call.version.startswith("0.")  # 0.3/0.4 results name each address's family
    ips, routes = list(prev.get("ips", [])), list(prev.get("routes", []))
    for version, ip, plen, gw, default in (
        ("4", ep.ip, ep.prefixlen, ep.gateway, "0.0.0.0/0"),
        ("6", ep.ip6, ep.prefixlen6, ep.gateway6, "::/0"),
    ):
        if ip:
            entry = {"address": f"{ip}/{plen}", "interface": index}
            ips.append(entry | ({"gateway": gw} if gw else {}) | ({"version": version} if old
                                                                    else {}))  # fmt: skip
            if gw:
                routes.append({"dst": default, "gw": gw})
    return {
        "cniVersion": call.version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": dns(
            resolv.replace(f"nameserver {EMBEDDED}", f"nameserver {dns_at}") if dns_at else resolv
        )
        or prev.get("dns", {}),
    }


def dns(resolv: str) -> dict:
    """A resolv.conf as the result's ``dns``."""
    out: dict[str, list[str]] = {}
    for line in resolv.splitlines():
        word, *rest = line.split() or [""]
        key = {"nameserver": "nameservers", "search": "search", "options": "options"}.get(word)
        if key:
            out.setdefault(key, []).extend(rest)
    return out


def prev_addresses(call: Call) -> set[str]:
    """The addresses ``prevResult`` gives interface ``CNI_IFNAME`` (CHECK compares them)."""
    prev = call.conf.get("prevResult") or {}
    interfaces = prev.get("interfaces", [])
    mine = {
        i for i, x in enumerate(interfaces) if x.get("name") == call.ifname and x.get("sandbox")
    }
    return {
        ip["address"].split("/")[0] for ip in prev.get("ips", []) if ip.get("interface") in mine
    }


# ------------------------------------------------------------------ the commands
def version_answer() -> dict:
    """VERSION's answer, whatever the configuration asks: the newest version and the list, as
    CNI's own pkg/skel answers it (libcni reads ``supportedVersions`` only).  The installed
    plugin (cniservice.shim) prints this document without starting Python."""
    return {"cniVersion": SUPPORTED[-1], "supportedVersions": list(SUPPORTED)}


def run(call: Call, ctl) -> dict | None:  # noqa: ANN001 - a controller.Controller
    """Do ``call`` with controller ``ctl`` (None for VERSION); its result document, or None (no
    output).  The executable around it is lowbridge.plugins.cniservice."""
    if call.command == "VERSION":
        return version_answer()
    return {"ADD": _add, "DEL": _del, "CHECK": _check, "STATUS": _status, "GC": _gc}[call.command](
        call, ctl
    )


def _sandbox(view, container_id: str):  # noqa: ANN001, ANN202
    return next((c for c in view.containers if c.labels.get(LABEL) == container_id), None)


def _network(ctl, call: Call):  # noqa: ANN001, ANN202
    """The configuration's network, and whether this call made it: lowbridge's, or created now
    from the configuration."""
    try:
        return ctl.view().network(call.network), False
    except NotFound:
        pass
    req = network_request(call)
    try:
        return ctl.network_create(req), True
    except LowbridgeError:
        try:  # another ADD made it meanwhile
            return ctl.view().network(call.network), False
        except NotFound:
            pass
        raise


def _add(call: Call, ctl) -> dict:  # noqa: ANN001
    ctr = _sandbox(ctl.view(), call.container_id)
    req = container_request(call) if ctr is None else None
    if ctr is not None and call.runtime("portMappings"):
        raise CniError(UNSUPPORTED_FIELD, "ports are published with the container's first "
                       "network only")  # fmt: skip
    if req is not None:  # (before a network is made for it: a bad CNI_NETNS changes nothing)
        from lowbridge.controller.sandboxes import check_adoptable

        check_adoptable(ctl.kernel, ctl.view(), call.netns)
    net, made = _network(ctl, call)
    try:
        if req is not None:
            ctr = ctl.container_create(req)
        else:
            ctl.network_connect(net.id, ctr.id, ip=_static_ip(call),
                                aliases=tuple(_aliases(call)), ifname=call.ifname)  # fmt: skip
    except LowbridgeError:
        if made:  # a failed ADD leaves nothing, not even the network it made for itself
            with contextlib.suppress(LowbridgeError):
                ctl.network_rm(net.id)
        raise
    view = ctl.view()
    ep = next(e for e in view.endpoints_of(ctr.id) if e.network_id == net.id)
    host_mac = None
    if ep.host_ifname:
        with ctl.kernel.session() as nl:
            link = nl.link(ep.host_ifname)
            host_mac = link.mac if link else None
    try:
        with open(os.path.join(ctl.paths.etc_dir(ctr.name), "resolv.conf")) as f:
            resolv = f.read()
    except OSError:
        resolv = ""
    return result(call, ep, host_mac, resolv, view.ctrs[ctr.id].dns_at)


def _mine(view, call: Call):  # noqa: ANN001, ANN202
    """The sandbox of CNI_CONTAINERID and its endpoint on this network with CNI_IFNAME."""
    ctr = _sandbox(view, call.container_id)
    if ctr is None:
        return None, None
    net = next((n for n in view.networks if n.name == call.network), None)
    eps = [e for e in view.endpoints_of(ctr.id) if net and e.network_id == net.id]
    return ctr, next((e for e in eps if e.ifname == call.ifname), None)


def _del(call: Call, ctl) -> None:  # noqa: ANN001
    view = ctl.view()
    ctr, ep = _mine(view, call)
    if ctr is None:
        return None  # already gone: DEL is idempotent
    _detach(ctl, view, ctr, ep)
    return None


def _detach(ctl, view, ctr, ep) -> None:  # noqa: ANN001
    """Take ``ctr`` off ``ep``'s network; the sandbox goes with its last network."""
    from lowbridge.models import GWBRIDGE

    others = [e for e in view.endpoints_of(ctr.id)
              if e.network_id in view.nets and view.nets[e.network_id].name != GWBRIDGE
              and (ep is None or e.key != ep.key)]  # fmt: skip
    try:
        if not others:
            ctl.container_rm(ctr.id, force=True)
        elif ep is not None:
            ctl.network_disconnect(ep.network_id, ctr.id)
    except NotFound:
        pass  # another DEL (or GC) took it meanwhile


def _check(call: Call, ctl) -> None:  # noqa: ANN001
    if "prevResult" not in call.conf:
        raise CniError(BAD_CONFIG, "CHECK needs prevResult")
    ctr, ep = _mine(ctl.view(), call)
    if ep is None:
        raise CniError(UNKNOWN_CONTAINER, f"container {call.container_id} has no interface "
                       f"{call.ifname} on network {call.network}")  # fmt: skip
    want, have = prev_addresses(call), {ip for ip in (ep.ip, ep.ip6) if ip}
    if want != have:
        raise CniError(BAD_CONFIG, f"prevResult lists {sorted(want)}, lowbridge has "
                       f"{sorted(have)} on {call.ifname}")  # fmt: skip
    mark = re.compile(rf"\bsandbox {re.escape(ctr.name)}(\s|$)")
    wrong = [d for d in ctl.check() if mark.search(d.where) or d.what.startswith("rule")]
    if wrong:
        raise CniError(IO_FAILURE, f"sandbox {ctr.name}: {wrong[0].line()}",
                       "; ".join(d.line() for d in wrong[1:]))  # fmt: skip
    return None


def _status(call: Call, ctl) -> None:  # noqa: ANN001
    try:
        ctl.view()
    except LowbridgeError as exc:
        raise CniError(NOT_AVAILABLE, f"lowbridge cannot work: {exc}") from None
    return None


def _gc(call: Call, ctl) -> None:  # noqa: ANN001
    valid = {(a.get("containerID"), a.get("ifname"))
             for a in call.conf.get("cni.dev/valid-attachments", [])}  # fmt: skip
    view = ctl.view()
    net = next((n for n in view.networks if n.name == call.network), None)
    if net is None:
        return None
    for ctr in [c for c in view.containers if LABEL in c.labels]:
        for ep in view.endpoints_of(ctr.id):
            if ep.network_id == net.id and (ctr.labels[LABEL], ep.ifname) not in valid:
                _detach(ctl, ctl.view(), ctr, ep)
    return None


# ------------------------------------------------------------------ errors
def error_code(exc: LowbridgeError) -> int:
    """A lowbridge error's CNI code (see the module docstring)."""
    from lowbridge.errors import KernelError, StoreError

    if isinstance(exc, InvalidInput):
        return BAD_CONFIG
    if isinstance(exc, (KernelError, StoreError)):
        return TRY_AGAIN if "unreachable" in str(exc) else IO_FAILURE
    return 100 + exc.exit_code


def answer(env: Mapping[str, str], stdin: str, controller) -> tuple[int, dict | None]:  # noqa: ANN001
    """The executable's whole contract: ``env`` and ``stdin`` in; the exit status and the
    document for stdout (None: nothing) out.  ``controller()`` makes the controller (not for
    VERSION).  Used by the service that does lowbridge-cni's calls (plugins.cniservice)."""
    from lowbridge.errors import one_line

    try:  # errors in the configuration's version, when it names one lowbridge has
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        version = None
    version = version if version in SUPPORTED else SUPPORTED[-1]
    try:
        call = parse(env, stdin)
        return 0, run(call, controller() if call.command != "VERSION" else None)
    except CniError as exc:
        return 1, exc.doc(version)
    except LowbridgeError as exc:
        return 1, CniError(error_code(exc), one_line(str(exc))).doc(version)
