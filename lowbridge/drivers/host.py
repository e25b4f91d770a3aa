"""The ``host`` driver: no isolation, the host's own namespaces (Docker's ``--network host``).

A sandbox on ``host`` has no namespace of its own: its processes run in the host's network and
UTS namespaces and see the host's /etc files (Docker shares all three).  Connecting a sandbox to
``host``, or disconnecting one from it, is refused, as Docker refuses it.
"""

from __future__ import annotations

from lowbridge.drivers.base import NoKernelDriver
from lowbridge.errors import InvalidInput
from lowbridge.models import Network

REFUSAL = "container cannot be disconnected from host network or connected to host network"


class HostDriver(NoKernelDriver):
    name = "host"
    shares_host = True

    def check_connect(self, net: Network) -> None:
        raise InvalidInput(REFUSAL)

    def check_disconnect(self, net: Network) -> None:
        raise InvalidInput(REFUSAL)
