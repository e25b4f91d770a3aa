"""docker's ``--filter KEY=VALUE`` for ``network ls`` and ``ps`` (pure).

As docker's filters.Args: values of one key are alternatives (any may match), different keys
must all match.  ``name`` and ``id`` match a value equal to the source or a regular expression
found in it (docker's ``Match``; a sandbox's name is matched as ``/NAME``, as docker keeps it);
``label`` takes ``KEY`` or ``KEY=VALUE``; the rest compare exactly, except ``network``, which is
a network's name or a prefix of its id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from lowbridge.errors import InvalidInput

NETWORK_KEYS = ("dangling", "driver", "id", "label", "name", "scope", "type")
CONTAINER_KEYS = ("id", "label", "name", "network", "status")
STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")

Filters = dict[str, list[str]]


def parse(values: Iterable[str] | None, accepted: Iterable[str]) -> Filters:
    """``--filter`` values as key -> alternatives; an unknown key or a bad value is a
    one-line error in docker's words."""
    out: Filters = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(
                f'invalid argument "{item}" for "-f, --filter" flag: bad format of filter '
                "(expected name=value)"
            )
        key = key.strip().lower()
        if key not in accepted:
            raise InvalidInput(f"Invalid filter '{key}'")
        out.setdefault(key, []).append(value)
    # The daemon's words (Docker 20.10), each its own.
    for value in out.get("status", ()):
        if value not in STATES:
            raise InvalidInput(f"Invalid filter 'status={value}'")
    for value in out.get("type", ()):
        if value not in ("custom", "builtin"):
            raise InvalidInput(f"invalid filter: 'type'='{value}'")
    for value in out.get("dangling", ()):
        if value.lower() not in ("true", "false", "1", "0"):
            raise InvalidInput(
                'invalid value for filter \'dangling\', must be "true" (or "1"), or '
                '"false" (or "0")'
            )
    return out


def match(patterns: list[str] | None, source: str) -> bool:
    """docker's Args.Match: no pattern, an equal one, or a regular expression found in
    ``source``."""
    if not patterns:
        return True
    for pattern in patterns:
        if pattern == source:
            return True
        try:
            if re.search(pattern, source):
                return True
        except re.error:
            continue
    return False


def labels_match(patterns: list[str] | None, labels: Mapping[str, str]) -> bool:
    """docker's MatchKVList: every ``KEY`` is a label, every ``KEY=VALUE`` has that value."""
    for pattern in patterns or ():
        key, sep, value = pattern.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def exact(values: list[str] | None, source: str) -> bool:
    return not values or source in values


def network(f: Filters, *, id: str, name: str, driver: str, scope: str, labels: Mapping[str, str],
            predefined: bool, in_use: bool) -> bool:  # fmt: skip
    """Whether a network passes ``f`` (``network ls``)."""
    kind = "builtin" if predefined else "custom"
    dangling = not predefined and not in_use
    return (
        exact(f.get("driver"), driver)
        and match(f.get("name"), name)
        and match(f.get("id"), id)
        and labels_match(f.get("label"), labels)
        and exact(f.get("scope"), scope)
        and exact(f.get("type"), kind)
        and all((v.lower() in ("true", "1")) == dangling for v in f.get("dangling", ()))
    )


def container(f: Filters, *, id: str, name: str, state: str, labels: Mapping[str, str],
              networks: Mapping[str, str]) -> bool:  # fmt: skip
    """Whether a sandbox passes ``f`` (``ps``); ``networks``: its networks' ids by name."""
    nets = f.get("network")
    on = not nets or any(
        v in networks or any(nid.startswith(v) for nid in networks.values()) for v in nets
    )
    return (
        match(f.get("name"), "/" + name)
        and match(f.get("id"), id)
        and labels_match(f.get("label"), labels)
        and exact(f.get("status"), state)
        and on
    )
