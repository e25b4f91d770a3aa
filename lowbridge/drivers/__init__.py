"""Network drivers behind one small protocol (see :mod:`lowbridge.drivers.base`)."""

from __future__ import annotations

import functools

from lowbridge.drivers.base import Driver
from lowbridge.errors import InvalidInput

# Each driver's module is imported when a command first needs that driver.
_CLASSES = {
    "bridge": ("bridge", "BridgeDriver"),
    "host": ("host", "HostDriver"),
    "macvlan": ("macvlan", "MacvlanDriver"),
    "overlay": ("overlay", "OverlayDriver"),
    "none": ("none", "NoneDriver"),
}


def get(name: str) -> Driver:
    """The driver called ``name`` (Docker's ``-d/--driver`` values)."""
    if name not in _CLASSES:
        known = ", ".join(sorted(_CLASSES))
        if name in ("ipvlan",):
            raise InvalidInput(f"driver {name} is not implemented yet (have: {known})")
        raise InvalidInput(f"unknown driver {name!r} (have: {known})")
    return _driver(name)


@functools.cache
def _driver(name: str) -> Driver:
    import importlib

    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(f"lowbridge.drivers.{module}"), cls)()
