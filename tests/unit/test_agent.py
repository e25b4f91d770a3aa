"""The agent's removal of overlay namespaces whose network is gone (no root: the namespace
directory and the removal are stand-ins)."""

from __future__ import annotations

import pytest

from lowbridge import agent
from lowbridge.config import Paths
from lowbridge.drivers import overlay
from lowbridge.kernel import netns
from lowbridge.models import Network

KEPT, MADE, GONE = (Network(id=c * 64, name=f"ov{c}", driver="overlay") for c in "abc")


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A namespace directory with the three networks' namespaces and a foreign one."""
    for net in (KEPT, MADE, GONE):
        (tmp_path / overlay.ns_name(net)).touch()
    (tmp_path / "lbx-foreign").touch()
    monkeypatch.setattr(netns, "NETNS_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(netns, "remove", lambda path: __import__("os").unlink(path))
    return tmp_path


def left(run_dir) -> set[str]:  # noqa: ANN001
    return {p.name for p in run_dir.iterdir()}


def test_a_stale_listing_does_not_remove_a_network_just_made(run_dir, tmp_path):
    """The listing (from the watch) lacks MADE -- committed by a command that held the host
    lock while the agent waited for it -- and GONE; a fresh read has MADE: only GONE goes."""
    a = agent.Agent(Paths.resolve(str(tmp_path / "state")), "etcd://x:2379", "host")
    a._gc({KEPT.id: KEPT}, fresh=lambda: [KEPT, MADE])
    assert left(run_dir) == {overlay.ns_name(KEPT), overlay.ns_name(MADE), "lbx-foreign"}


def test_nothing_is_removed_when_the_fresh_read_fails(run_dir, tmp_path):
    def unreachable() -> list[Network]:
        raise OSError("etcd unreachable")

    a = agent.Agent(Paths.resolve(str(tmp_path / "state")), "etcd://x:2379", "host")
    a._gc({KEPT.id: KEPT}, fresh=unreachable)
    assert len(left(run_dir)) == 4
