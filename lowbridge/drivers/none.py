"""The ``none`` driver: the sandbox keeps only its loopback (Docker's ``--network none``).

Its endpoint has no interface and no address; a sandbox on ``none`` may be on no other network
(``exclusive``), as Docker refuses it.
"""

from __future__ import annotations

from lowbridge.drivers.base import NoKernelDriver


class NoneDriver(NoKernelDriver):
    name = "none"
