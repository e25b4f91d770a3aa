"""Network drivers behind one small protocol (see :mod:`lowbridge.drivers.base`)."""

from __future__ import annotations

import functools

from lowbridge.drivers.base import Driver
from lowbridge.errors import InvalidInput


@functools.cache
def _drivers() -> dict[str, Driver]:
    from lowbridge.drivers import bridge, host, macvlan, none, overlay

    return {
        "bridge": bridge.BridgeDriver(),
        "host": host.HostDriver(),
        "macvlan": macvlan.MacvlanDriver(),
        "overlay": overlay.OverlayDriver(),
        "none": none.NoneDriver(),
    }


def get(name: str) -> Driver:
    """The driver called ``name`` (Docker's ``-d/--driver`` values)."""
    drivers = _drivers()
    if name not in drivers:
        known = ", ".join(sorted(drivers))
        if name in ("ipvlan",):
            raise InvalidInput(f"driver {name} is not implemented yet (have: {known})")
        raise InvalidInput(f"unknown driver {name!r} (have: {known})")
    return drivers[name]
