"""A lab's topology file: YAML, checked against a schema, every error on one line naming the
file, the line and the field.

The schema is pydantic's (v2): its models are the typed topology the rest of the lab code reads,
not a dictionary checked and then read again by hand, and each error carries the path of the
field it is about (``loc``), which :func:`load` turns into the line of the file that holds it.
(jsonschema would check the same shape, but hands back the untyped document.)  YAML is read by
PyYAML's composer, whose nodes know their lines; duplicate keys -- which YAML forbids and
PyYAML's loader silently lets the last one win -- are refused here.

The file::

    lab: tier            # prefixes what the lab owns: network tier-front, sandbox tier-web
    networks:
      front: {subnet: 10.40.0.0/24}
      back:  {internal: true, options: {com.docker.network.bridge.enable_icc: false}}
    sandboxes:
      web:
        networks: {front: {ipv4_address: 10.40.0.10}, back: {aliases: [www]}}
        ports: ["8080:80"]
        command: socat TCP-LISTEN:80,fork SYSTEM:hostname

A sandbox's networks are a list of names or a mapping to ``ipv4_address`` and ``aliases``; the
first one is the one it is created on.  Every sandbox is also known by its short name (``web``)
on its user-defined networks, as a Compose service is.  In cluster mode a sandbox's ``host:``
places it: each host's ``apply`` of the same file makes the networks and the sandboxes placed on
it (or on no host in particular), and leaves the others' to them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shlex
from functools import cached_property
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from lowbridge import names, ports
from lowbridge.errors import InvalidInput
from lowbridge.lab import yamlfile
from lowbridge.lab.yamlfile import Path

PREDEFINED = ("bridge", "host", "none")  # networks a sandbox may name without declaring them


def _text(value: object) -> object:
    """An option or label value as the CLI would take it: YAML's true/1400 as "true"/"1400"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


Text = Annotated[str, BeforeValidator(_text)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @cached_property
    def digest(self) -> str:
        """A short digest of the content: the fields that differ from their defaults, in a
        fixed order (a field added to the schema later leaves the digests of what was made
        before as they were)."""
        text = json.dumps(self.model_dump(exclude_defaults=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class NetworkSpec(_Model):
    """One network: what ``network create`` takes."""

    driver: str = "bridge"
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = Field(default_factory=dict)
    internal: bool = False
    labels: dict[str, Text] = Field(default_factory=dict)
    options: dict[str, Text] = Field(default_factory=dict)


class Attach(_Model):
    """A sandbox on one network: its static address and its other names there."""

    ipv4_address: str | None = None
    aliases: list[str] = Field(default_factory=list)


class SandboxSpec(_Model):
    """One sandbox: what ``run -d`` / ``container create`` take."""

    networks: dict[str, Attach] = Field(default_factory=lambda: {"bridge": Attach()})
    ports: list[Text] = Field(default_factory=list)
    expose: list[Text] = Field(default_factory=list)
    hostname: str | None = None
    dns: list[str] = Field(default_factory=list)
    dns_search: list[str] = Field(default_factory=list)
    dns_options: list[str] = Field(default_factory=list)
    extra_hosts: list[str] = Field(default_factory=list)
    links: list[str] = Field(default_factory=list)
    environment: list[str] = Field(default_factory=list)
    labels: dict[str, Text] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list)
    replicas: int = Field(default=1, ge=1, le=10000, strict=True)  # NAME-1 ... NAME-N
    host: str | None = None  # made only by an apply on this host (config.host_name); None: any

    @field_validator("networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, list):  # [front, back]
            return {name: {} for name in value} if all(isinstance(n, str) for n in value) else value
        if isinstance(value, dict):  # {front: null} is {front: {}}
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("environment", mode="before")
    @classmethod
    def _environment(cls, value: Any) -> Any:
        if isinstance(value, dict):  # {KEY: value} is [KEY=value]
            return [f"{k}={_text(v)}" if v is not None else str(k) for k, v in value.items()]
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if isinstance(value, str):  # split as a shell would (Compose does the same)
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot split the command: {exc}") from None
        return value


class Topology(_Model):
    """A whole lab."""

    lab: str
    networks: dict[str, NetworkSpec] = Field(default_factory=dict)
    sandboxes: dict[str, SandboxSpec] = Field(default_factory=dict)

    def network_name(self, name: str) -> str:
        """The name the lab's network ``name`` has in lowbridge (predefined ones keep theirs)."""
        return name if name in PREDEFINED and name not in self.networks else f"{self.lab}-{name}"

    def sandbox_name(self, name: str) -> str:
        return f"{self.lab}-{name}"

    def elsewhere(self, host: str) -> list[str]:
        """The sandboxes placed on other hosts than ``host`` (``host:`` in the file)."""
        return [n for n, box in self.sandboxes.items() if box.host not in (None, host)]

    def here(self, host: str) -> Topology:
        """The lab as an apply on ``host`` makes it: its networks, and the sandboxes placed on
        ``host`` or on no host in particular (those of other hosts are theirs to make)."""
        away = self.elsewhere(host)
        if not away:
            return self
        boxes = {n: box for n, box in self.sandboxes.items() if n not in away}
        return self.model_copy(update={"sandboxes": boxes})


# ---------------------------------------------------------------------------- loading
def load(path: str) -> Topology:
    """The topology in ``path``, or InvalidInput: ``FILE:LINE: FIELD: what is wrong``."""
    return parse(yamlfile.read(path), path)


def parse(text: str, path: str = "<topology>") -> Topology:
    """:func:`load` of a file's text (``path`` names it in errors)."""
    data, lines = yamlfile.parse(text, path)
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise _error(path, lines, tuple(err["loc"]), _message(err)) from None
    _check(topo, path, lines)
    return _expand(topo, path, lines)


def _expand(topo: Topology, path: str, lines: dict[Path, int]) -> Topology:
    """Each sandbox with ``replicas: N`` becomes N alike, NAME-1 ... NAME-N."""
    if all(box.replicas == 1 for box in topo.sandboxes.values()):
        return topo
    boxes: dict[str, SandboxSpec] = {}
    for name, box in topo.sandboxes.items():
        copies = (
            [name] if box.replicas == 1 else [f"{name}-{i}" for i in range(1, box.replicas + 1)]
        )
        one = box.model_copy(update={"replicas": 1})  # shared: its digest is computed once
        for copy in copies:
            if copy in boxes or (copy != name and copy in topo.sandboxes):
                raise _error(path, lines, ("sandboxes", name, "replicas"),
                             f"replica {copy} has the name of another sandbox")  # fmt: skip
            boxes[copy] = one
    for copy in boxes:
        names.validate_name("container", topo.sandbox_name(copy))
    return topo.model_copy(update={"sandboxes": boxes})


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "missing field"
    return err["msg"][0].lower() + err["msg"][1:] if err["msg"] else err["type"]


def _error(path: str, lines: dict[Path, int], loc: Path, message: str) -> InvalidInput:
    """An error about the field at ``loc`` (pydantic's loc: its union members' names, such as
    'str' or 'list[str]', are not fields and are left out)."""
    field: list[str | int] = []
    for part in loc:
        if (*field, part) in lines or isinstance(part, int) or not _type_name(part):
            field.append(part)
    at = tuple(field)
    while at and at not in lines:
        at = at[:-1]
    line = lines.get(at, 1)
    return InvalidInput(f"{path}:{line}: {'.'.join(map(str, field)) or 'lab'}: {message}")


def _type_name(part: object) -> bool:
    return isinstance(part, str) and (part in ("str", "int", "bool") or "[" in part)


def _check(topo: Topology, path: str, lines: dict[Path, int]) -> None:
    """What the schema cannot say: names, references between entries, overlapping subnets."""

    def fail(loc: Path, message: str) -> None:
        raise _error(path, lines, loc, message)

    for loc, check in _names(topo):
        try:
            check()
        except InvalidInput as exc:
            fail(loc, str(exc))
    subnets: list[tuple[ipaddress.IPv4Network, str]] = []
    for name, net in topo.networks.items():
        for key in ("subnet", "ip_range"):
            if getattr(net, key) is not None:
                try:
                    ipaddress.ip_network(getattr(net, key), strict=False)
                except ValueError:
                    fail(("networks", name, key), f"invalid {key} {getattr(net, key)!r}")
        if net.subnet is None:
            continue
        subnet = ipaddress.ip_network(net.subnet, strict=False)
        for other, who in subnets:
            if subnet.overlaps(other):
                fail(("networks", name, "subnet"), f"{subnet} overlaps network {who}'s {other}")
        subnets.append((subnet, name))
    for name, box in topo.sandboxes.items():
        _check_sandbox(topo, name, box, fail)


def _names(topo: Topology):  # noqa: ANN202
    """(where, check) of each name the lab gives (its own, and those it makes)."""
    yield ("lab",), lambda: names.validate_name("lab", topo.lab)
    for n in topo.networks:
        yield ("networks", n), lambda n=n: names.validate_name("network", topo.network_name(n))
    for n in topo.sandboxes:
        yield ("sandboxes", n), lambda n=n: names.validate_name("container", topo.sandbox_name(n))


def _check_sandbox(topo: Topology, name: str, box: SandboxSpec, fail) -> None:  # noqa: ANN001
    at = ("sandboxes", name)
    if not box.networks:
        fail((*at, "networks"), "a sandbox needs at least one network")
    for net, attach in box.networks.items():
        if net not in topo.networks and net not in PREDEFINED:
            fail((*at, "networks", net), f"network {net!r} is not declared under networks")
        if net in ("host", "none") and net not in topo.networks and len(box.networks) > 1:
            fail((*at, "networks", net), f"network {net} cannot be combined with others")
        if attach.ipv4_address is None:
            continue
        try:
            address = ipaddress.ip_address(attach.ipv4_address)
        except ValueError:
            fail((*at, "networks", net, "ipv4_address"), f"invalid address {attach.ipv4_address!r}")
        spec = topo.networks.get(net)
        if spec is None or spec.subnet is None:
            fail((*at, "networks", net, "ipv4_address"),
                 "a static address needs a network with a subnet")  # fmt: skip
        elif address not in ipaddress.ip_network(spec.subnet, strict=False):
            fail((*at, "networks", net, "ipv4_address"), f"{address} is not in {spec.subnet}")
    for i, link in enumerate(box.links):
        target = link.partition(":")[0]
        if target not in topo.sandboxes:
            fail((*at, "links", i), f"link to {target!r}: no such sandbox in the lab")
        if topo.sandboxes[target].replicas > 1:
            fail((*at, "links", i), f"link to {target!r}: it has replicas (link to one of them)")
        if topo.sandboxes[target].host != box.host:  # a link is an /etc/hosts line of one host
            fail((*at, "links", i), f"link to {target!r}: it is not placed on the same host")
    if box.replicas > 1 and any(a.ipv4_address for a in box.networks.values()):
        fail((*at, "replicas"), "replicas cannot share a static ipv4_address")
    if box.command and box.command[0] == "":
        fail((*at, "command"), "empty command")
    pure = {"ports": ports.parse, "expose": ports.parse_expose}
    for key, parse_one in pure.items():
        for i, spec in enumerate(getattr(box, key)):
            try:
                parse_one(spec)
            except InvalidInput as exc:
                fail((*at, key, i), str(exc))
    for i, line in enumerate(box.extra_hosts):
        host, sep, address = line.partition(":")
        if not host or not sep or not address:
            fail((*at, "extra_hosts", i), f"invalid extra host {line!r}: expected NAME:IP")
    if box.host is not None:
        try:
            names.validate_hostname(box.host)
        except InvalidInput as exc:
            fail((*at, "host"), str(exc))
    if box.hostname is not None:
        try:
            names.validate_hostname(box.hostname)
        except InvalidInput as exc:
            fail((*at, "hostname"), str(exc))
