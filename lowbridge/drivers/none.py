"""The ``none`` driver: the sandbox keeps only its loopback (Docker's ``--network none``).

Its endpoint has no interface and no address; the controller refuses to add any other network to
a sandbox on ``none`` (and ``none`` to a sandbox with other networks), as Docker does.
"""

from __future__ import annotations

from lowbridge.drivers.base import NoKernelDriver


class NoneDriver(NoKernelDriver):
    name = "none"
