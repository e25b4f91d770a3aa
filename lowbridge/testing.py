"""pytest fixtures for your own lab tests: the harness lowbridge's own tests use.

Installed with lowbridge (entry point ``pytest11``), so pytest loads it by itself::

    def test_the_frontend_answers(lowbridge_lab):
        lab = lowbridge_lab("examples/three-tier.yaml")
        assert lab.ping("tier-web", "app")
        assert lab.sh("tier-web", "socat - TCP:app:80").stdout.strip() == "app"

Fixtures (each needs root; without it the test is skipped, saying so):

``lowbridge_host``
    a throwaway simulated host (:class:`lowbridge.simhost.SimHost`): network, mount and PID
    namespaces of its own, its own /run/netns, state directory and firewall; gone after the test.
``lowbridge_outside``
    a factory ``(host, address="192.168.90.1/24", host_address="192.168.90.2/24")``: a namespace
    playing the LAN or the internet, wired to ``host`` by a veth, the host's default route
    through it.
``lowbridge_lab``
    a factory ``(path)``: the topology file applied in a fresh host (one batch); the :class:`Lab`
    it returns runs commands in its sandboxes.  Destroyed after the test.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from lowbridge.simhost import SimHost, outside


@dataclass
class Lab:
    """A lab applied in its own simulated host."""

    host: SimHost
    path: str

    def run(self, sandbox: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """``argv`` in ``sandbox``'s network namespace (not checked: see ``returncode``)."""
        kw.setdefault("check", False)
        return self.host.run(["ip", "netns", "exec", sandbox, *argv], **kw)

    def sh(self, sandbox: str, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run(sandbox, ["sh", "-c", script], **kw)

    def ping(self, sandbox: str, address: str) -> bool:
        """One ICMP echo from ``sandbox`` to ``address`` (a name or an IP) answered."""
        return self.run(sandbox, ["ping", "-n", "-c", "1", "-w", "3", address]).returncode == 0

    def lb(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """``lowbridge ARGS`` in the lab's host."""
        return self.host.lb(*args, **kw)


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("lowbridge's simulated hosts need root (network namespaces, links, firewall)")


@pytest.fixture
def lowbridge_host() -> Iterator[SimHost]:
    _need_root()
    with SimHost("pytest") as host:
        yield host


@pytest.fixture
def lowbridge_outside() -> Iterator[Callable[..., SimHost]]:
    _need_root()
    with contextlib.ExitStack() as stack:
        numbers = itertools.count()  # a name of its own for each outside and its link

        def make(host: SimHost, address: str = "192.168.90.1/24",
                 host_address: str = "192.168.90.2/24") -> SimHost:  # fmt: skip
            n = next(numbers)
            lan = stack.enter_context(outside(f"out{n}"))
            host.wire(lan, f"uplink{n}", f"lan{n}", host_address, address)
            host.run(["ip", "route", "replace", "default", "via", address.split("/")[0]])
            return lan

        yield make


@pytest.fixture
def lowbridge_lab() -> Iterator[Callable[[str], Lab]]:
    _need_root()
    with contextlib.ExitStack() as stack:

        def make(path: str) -> Lab:
            host = stack.enter_context(SimHost("pytest-lab"))
            host.lb("apply", "-f", os.path.abspath(path))
            stack.callback(host.lb, "destroy", "-f", os.path.abspath(path), check=False)
            return Lab(host, path)

        yield make
