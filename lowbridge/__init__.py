"""lowbridge: Docker's network drivers built directly with pyroute2, without a daemon.

Layers, top to bottom (each imports only those below it; the README's code map says more):

    cli          parse Docker's verbs and flags, call the controller, render (output); the
                 start-up tricks (a trimmed pyroute2, a deferred ``inspect``) live here only
    controller   the verbs; each mutation one change: plan against a draft of the store's view,
                 journal the plan, apply named steps with an undo stack, commit the records,
                 the firewall and the journal's deletion in one store transaction; the next
                 command undoes or finishes a change whose process died (controller.journal);
                 check and gc compare the records with the host and mend (controller.audit)
    drivers      bridge, macvlan, overlay, host, none behind one protocol (drivers.base), each
                 owning its policy: what it refuses, its steps, its DNS and egress
    firewall     rules rendered as pure data from the records; one atomic apply per change
                 (iptables-restore --noflush, or one nftables transaction)
    dns          the embedded resolver (one process per host) and the controller's handle on it;
                 the same process relays the ports published on [::1] (proxy)
    store        the records (SQLite; etcd too in cluster mode), the journal, the generation
    kernel       netlink sessions (rtnl), namespaces as files and the worker that enters them
                 (netns), conntrack, the packet filter's generation -- the only pyroute2 users
    models       frozen records and the View over them; ipam, names, ports, links, filters,
                 output, gotemplate (docker's --format): pure policy and rendering
    txn, errors  named steps with their undos and the test hooks; the error tree and exit codes

Caches belong to the objects that own them (the store's view per generation, the firewall's
modeler and renderer, the record of what was applied) and are keyed by value or generation; no
module keeps process-wide state that a second controller would see.
"""

from __future__ import annotations

# typing.TYPE_CHECKING, without importing typing (~6 ms): lowbridge-cni's client imports this
# package and should cost a runtime's call as little as Python's own start-up.
TYPE_CHECKING = False

__version__ = "0.1.0"

# The library's face: ``from lowbridge import Controller, ContainerRequest, NetworkRequest``.
# Loaded at first use (PEP 562): every command imports this package, few need the controller.
_EXPORTS = {
    "Controller": "lowbridge.controller",
    "ContainerRequest": "lowbridge.controller.requests",
    "NetworkRequest": "lowbridge.drivers.base",
    "Paths": "lowbridge.config",
    "LowbridgeError": "lowbridge.errors",
    "InvalidInput": "lowbridge.errors",
    "NotFound": "lowbridge.errors",
    "Conflict": "lowbridge.errors",
    "KernelError": "lowbridge.errors",
    "StoreError": "lowbridge.errors",
}
__all__ = [
    "Conflict",
    "ContainerRequest",
    "Controller",
    "InvalidInput",
    "KernelError",
    "LowbridgeError",
    "NetworkRequest",
    "NotFound",
    "Paths",
    "StoreError",
    "__version__",
]

if TYPE_CHECKING:
    from lowbridge.config import Paths
    from lowbridge.controller import Controller
    from lowbridge.controller.requests import ContainerRequest
    from lowbridge.drivers.base import NetworkRequest
    from lowbridge.errors import (
        Conflict,
        InvalidInput,
        KernelError,
        LowbridgeError,
        NotFound,
        StoreError,
    )


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lowbridge' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
