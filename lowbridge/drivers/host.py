"""The ``host`` driver: no isolation, the host's own namespace (Docker's ``--network host``).

Connecting a sandbox to ``host`` is refused, as Docker refuses it.  (Running a command on the host
network with ``run --network host`` is not implemented yet.)
"""

from __future__ import annotations

from lowbridge.drivers.base import NoKernelDriver, SandboxRef
from lowbridge.errors import InvalidInput
from lowbridge.models import Endpoint, Network


class HostDriver(NoKernelDriver):
    name = "host"

    def connect(self, net: Network, ep: Endpoint, sandbox: SandboxRef, tx, nl) -> None:  # noqa: ANN001
        raise InvalidInput(
            "container cannot be disconnected from host network or connected to host network"
        )
