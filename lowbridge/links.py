"""Legacy container links (``run --link NAME[:ALIAS]``) on the default bridge (pure).

What the recipient gets (docker-mechanics 3.6; moby ``daemon/links/links.go`` ``ToEnv`` and
``addLegacyLinks``): a hosts line ``<child ip> <alias> <child hostname> [<child name>]`` and
environment variables describing the child's exposed ports.  (Docker 29 stopped injecting the
variables by default; lowbridge keeps Docker's long-standing behaviour, which the issue and the
tutorials describe.)
"""

from __future__ import annotations

from lowbridge.errors import InvalidInput
from lowbridge.names import validate_name


def parse(spec: str) -> tuple[str, str]:
    """``NAME[:ALIAS]`` -> (name, alias); the alias defaults to the name."""
    name, _, alias = spec.partition(":")
    name = name.lstrip("/")
    alias = alias or name
    if not name:
        raise InvalidInput(f"invalid --link {spec!r}: expected NAME[:ALIAS]")
    validate_name("link alias", alias)  # docker's rule for names: _ and . too
    return name, alias


def hosts_names(alias: str, child_hostname: str, child_name: str) -> str:
    """The names of the recipient's hosts line for a child (its name only if not the alias)."""
    out = [alias, child_hostname]
    if child_name != alias:
        out.append(child_name)
    return " ".join(out)


def env(
    recipient: str,
    alias: str,
    child_ip: str,
    ports: list[tuple[int, str]],
    child_env: list[str] = (),  # type: ignore[assignment]
) -> list[str]:
    """The variables Docker sets for a link, in Docker's order; ``ports`` in link order
    (:attr:`lowbridge.models.Container.exposed`)."""
    prefix_alias = alias.upper().replace("-", "_")
    out: list[str] = []
    start = end = None
    for i, (port, proto) in enumerate(ports):
        if i == 0:
            start = end = (port, proto)
            out.append(f"{prefix_alias}_PORT={proto}://{child_ip}:{port}")
        prefix = f"{prefix_alias}_PORT_{port}_{proto.upper()}"
        out += [
            f"{prefix}={proto}://{child_ip}:{port}",
            f"{prefix}_ADDR={child_ip}",
            f"{prefix}_PORT={port}",
            f"{prefix}_PROTO={proto}",
        ]
        if end is not None and port == end[0] + 1 and proto == end[1]:
            end = (port, proto)
            if i < len(ports) - 1:
                continue
        if start is not None and end != start:
            prefix = f"{prefix_alias}_PORT_{start[0]}_{start[1].upper()}"
            out += [
                f"{prefix}_START={start[1]}://{child_ip}:{start[0]}",
                f"{prefix}_PORT_START={start[0]}",
                f"{prefix}_END={end[1]}://{child_ip}:{end[0]}",
                f"{prefix}_PORT_END={end[0]}",
            ]
        start = end = (port, proto)
    out.append(f"{prefix_alias}_NAME=/{recipient}/{alias}")
    for item in child_env:
        key, sep, value = item.partition("=")
        if sep and key not in ("HOME", "PATH"):
            out.append(f"{prefix_alias}_ENV_{key}={value}")
    return out
