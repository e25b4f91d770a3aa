"""The controller's policy against a fake kernel, firewall and resolver (tests/unit/fakes.py):
what each verb builds and persists, undo on failure, and the journal -- a change that "crashed"
after any of its steps (the in-process stand-in for kill -9) is undone or finished by the next
controller.  No root: the packet-level proofs are tests/integration/test_crashes.py."""

from __future__ import annotations

import os

import pytest

from lowbridge.config import Paths
from lowbridge.controller import ContainerRequest, Controller, NetworkRequest
from lowbridge.errors import Conflict, KernelError
from lowbridge.models import OPT_ICC
from lowbridge.txn import FAIL_ENV, TRACE_ENV, Crashed
from tests.unit.fakes import HOST, FakeFirewall, FakeKernel, FakeResolver


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Everything a controller sees, kept across controllers (the next command's)."""
    for env in ("LOWBRIDGE_STORE", "LOWBRIDGE_ICC", FAIL_ENV, TRACE_ENV):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("LOWBRIDGE_CONFIG", str(tmp_path / "none.conf"))
    paths = Paths(state=str(tmp_path / "lib"), run=str(tmp_path / "run"),
                  etc_netns=str(tmp_path / "etc"))  # fmt: skip
    kernel, firewall, resolver = FakeKernel(str(tmp_path)), FakeFirewall(), FakeResolver()

    def controller() -> Controller:
        return Controller(paths, kernel=kernel, firewall=firewall, resolver=resolver)

    controller.kernel, controller.firewall, controller.paths = kernel, firewall, paths
    controller.tmp = tmp_path
    return controller


def _everything(new) -> dict:  # noqa: ANN001
    """The kernel, the rules applied, the store's rows and journal, the sandboxes' files."""
    ctl = new()
    view = ctl.store.view()
    etc = ctl.paths.etc_netns
    return {
        "kernel": new.kernel.snapshot(),
        "rules": new.firewall.applied == ctl.firewall.model(view),
        "records": sorted(repr(r) for r in (*view.networks, *view.containers, *view.endpoints)),
        "journal": ctl.store.journal(),
        "etc": sorted(os.listdir(etc)) if os.path.isdir(etc) else [],
    }


def _steps(new, monkeypatch, op: str, fn) -> list[str]:  # noqa: ANN001
    trace = new.tmp / "trace"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    fn(new())
    monkeypatch.delenv(TRACE_ENV)
    steps = [ln.split(":", 1)[1] for ln in trace.read_text().split() if ln.startswith(f"{op}:")]
    trace.unlink()
    return steps


def _setup(new) -> None:  # noqa: ANN001
    ctl = new()
    ctl.network_create(NetworkRequest(name="n1", subnet="10.1.0.0/24"))
    ctl.network_create(NetworkRequest(name="n2", subnet="10.2.0.0/24"))
    ctl.container_create(ContainerRequest(name="a", network="n1"))


def test_network_create_builds_a_marked_bridge_and_persists_last(world):
    net = world().network_create(NetworkRequest(name="n1", subnet="10.1.0.0/24"))
    link = world.kernel.namespaces[HOST].links[net.device]
    assert link.kind == "bridge" and link.up and link.alias == f"lowbridge:{net.id}"
    assert link.addresses == {("10.1.0.1", 24)}
    state = _everything(world)
    assert state["rules"] and state["journal"] == []
    assert world().network("n1") == net


def test_sandboxes_get_the_lowest_free_address_and_rm_gives_it_back(world):
    _setup(world)
    ctl = world()
    b = ctl.container_create(ContainerRequest(name="b", network="n1"))
    assert [e.ip for e in ctl.endpoints(container=b)] == ["10.1.0.3"]
    eth0 = world.kernel.namespaces["b"].links["eth0"]
    assert eth0.addresses == {("10.1.0.3", 24)} and world.kernel.namespaces["b"].default == (
        "10.1.0.1", "eth0")  # fmt: skip
    ctl.container_rm("b")
    assert "b" not in world.kernel.namespaces
    c = world().container_create(ContainerRequest(name="c", network="n1"))
    assert [e.ip for e in world().endpoints(container=c)] == ["10.1.0.3"]


def test_a_failed_step_is_undone_with_context_and_changes_nothing(world):
    _setup(world)
    before = _everything(world)
    world.kernel.fail = lambda verb, name: verb == "create" and name.startswith("lbv")
    denied = r"^connect a to n2: create lbv\w+: Operation not permitted"
    with pytest.raises(KernelError, match=denied):
        world().network_connect("n2", "a")
    assert _everything(world) == before


def test_a_failed_firewall_change_is_undone_too(world):
    _setup(world)
    before = _everything(world)
    world.firewall.fail = True
    with pytest.raises(KernelError, match="create container b: apply the firewall"):
        world().container_create(ContainerRequest(name="b", network="n1"))
    world.firewall.fail = False
    assert _everything(world) == before


N3 = NetworkRequest(name="n3", subnet="10.3.0.0/24")
N4 = NetworkRequest(name="n4", subnet="10.4.0.0/24")
VERBS = {
    "container-create": lambda ctl: ctl.container_create(ContainerRequest(name="k", network="n1")),
    "network-connect": lambda ctl: ctl.network_connect("n2", "a"),
    "network-create": lambda ctl: ctl.network_create(N3),
}
INVERSES = {
    "container-create": lambda ctl: ctl.container_rm("k"),
    "network-connect": lambda ctl: ctl.network_disconnect("n2", "a"),
    "network-create": lambda ctl: ctl.network_rm("n3"),
}


@pytest.mark.parametrize("op", list(VERBS))
def test_a_create_that_crashed_after_any_step_is_undone_by_the_next_command(world, monkeypatch, op):
    _setup(world)
    before = _everything(world)
    steps = _steps(world, monkeypatch, op, VERBS[op])
    INVERSES[op](world())
    assert _everything(world) == before
    assert steps[0] == "journal" and steps[-1] == "persist"
    for step in steps:
        monkeypatch.setenv(FAIL_ENV, f"{op}:{step}:crash")
        with pytest.raises(Crashed):
            VERBS[op](world())
        monkeypatch.delenv(FAIL_ENV)
        if step != "journal":
            assert world.kernel.snapshot() != before["kernel"] or step in ("firewall", "persist")
        assert world().store.journal(), step  # the intent is durable
        world().view()  # a read settles it: undone
        assert _everything(world) == before, step
    VERBS[op](world())  # and nothing is left in its way


@pytest.mark.parametrize(
    "op, setup, verb",
    [
        ("container-rm", lambda ctl: ctl.container_create(ContainerRequest(name="v", network="n1")),
         lambda ctl: ctl.container_rm("v")),
        ("network-disconnect", lambda ctl: ctl.network_connect("n2", "a"),
         lambda ctl: ctl.network_disconnect("n2", "a")),
        ("network-rm", lambda ctl: ctl.network_create(N3),
         lambda ctl: ctl.network_rm("n3")),
        ("network-rm", lambda ctl: [ctl.network_create(N3), ctl.network_create(N4)],
         lambda ctl: ctl.network_rm_many(["n3", "n4"])),
    ],
)  # fmt: skip
def test_a_teardown_that_crashed_after_any_step_is_finished_by_the_next_command(
    world, monkeypatch, op, setup, verb
):
    _setup(world)
    before = _everything(world)
    setup(world())
    steps = _steps(world, monkeypatch, op, verb)
    assert _everything(world) == before
    for step in steps:
        setup(world())
        monkeypatch.setenv(FAIL_ENV, f"{op}:{step}:crash")
        with pytest.raises(Crashed):
            verb(world())
        monkeypatch.delenv(FAIL_ENV)
        world().view()  # finished
        assert _everything(world) == before, step


def test_networks_removed_together_go_in_one_batch_or_not_at_all(world):
    """network_rm_many: a network with an endpoint refuses the whole change; without it, every
    bridge goes in one deletion and every record with it."""
    _setup(world)
    before = _everything(world)
    world().network_create(N3)
    world().network_create(N4)
    with_n3 = _everything(world)
    with pytest.raises(Conflict, match="n1 id .* has active endpoints"):
        world().network_rm_many(["n3", "n1", "n4"])
    assert _everything(world) == with_n3
    removed = world().network_rm_many(["n3", "n4", "n3"])
    assert [n.name for n in removed] == ["n3", "n4"]
    assert _everything(world) == before


def test_a_changed_daemon_setting_reaches_the_rules_in_one_command(world, monkeypatch):
    ctl = world()
    ctl.container_create(ContainerRequest(name="a"))
    monkeypatch.setenv("LOWBRIDGE_ICC", "false")
    world().container_create(ContainerRequest(name="b"))
    fresh = world()
    assert fresh.network("bridge").options[OPT_ICC] == "false"
    # The rules applied are what a fresh controller renders from the store: no stale record.
    assert world.firewall.applied == FakeFirewall().model(fresh.store.view())


def test_drivers_refuse_what_their_network_cannot_do_before_any_kernel_call(world):
    _setup(world)
    world().container_create(ContainerRequest(name="h", network="host"))
    before, calls = _everything(world), len(world.kernel.calls)
    with pytest.raises(Conflict):
        world().network_connect("n1", "h")
    with pytest.raises(Conflict):
        world().network_connect("none", "a")
    assert _everything(world) == before and len(world.kernel.calls) == calls


def test_reads_touch_nothing_when_there_is_nothing_to_settle(world):
    _setup(world)
    calls, changes = len(world.kernel.calls), world.firewall.changes
    ctl = world()
    assert [n.name for n in ctl.networks()] == ["bridge", "host", "none", "n1", "n2"]
    assert [c.name for c in ctl.containers()] == ["a"]
    assert (len(world.kernel.calls), world.firewall.changes) == (calls, changes)


def test_a_namespace_deleted_by_hand_exits_its_sandbox_and_frees_its_address(world):
    _setup(world)
    world.kernel.remove_ns(world.kernel.netns_path("a"))
    b = world().container_create(ContainerRequest(name="b", network="n1"))
    a = world().container("a")
    assert (a.state, a.exit_code) == ("exited", 255)  # as Docker's, found dead
    assert [j.network_id for j in a.joins] == [world().network("n1").id]
    assert world().endpoints(container=a) == []
    assert [e.ip for e in world().endpoints(container=b)] == ["10.1.0.2"]


def test_preview_plans_what_the_changes_would_make_and_makes_nothing(world):
    """A lab's plan: removals first (a changed sandbox keeps its name, namespace and static
    address), then the additions, with the subnets and addresses apply would draw."""
    from lowbridge.controller.preview import Join

    ctl = world()
    ctl.network_create(NetworkRequest(name="old", subnet="10.9.0.0/24"))
    ctl.container_create(ContainerRequest(name="keep", network="old", ip="10.9.0.7"))
    before = _everything(world)
    view = ctl.store.view()
    pv = ctl.preview(
        [], [view.container("keep")],
        [NetworkRequest(name="new")],  # no subnet: the first free one of the default pools
        [ContainerRequest(name="keep", network="old", ip="10.9.0.7"),
         ContainerRequest(name="web", network="new", publish=["8080:80"])],
        [Join("old", "web", None, ("www",))],
    )  # fmt: skip
    assert _everything(world) == before  # nothing made, nothing written
    after = pv.after
    assert [n.name for n in pv.made] == ["new"]
    subnet = pv.made[0].pool.subnet  # the default bridge has 172.17/16
    on = {(c.name, after.nets[e.network_id].name): e.ip
          for c in after.containers for e in after.endpoints_of(c.id)}  # fmt: skip
    assert on == {("keep", "old"): "10.9.0.7", ("web", "new"): str(subnet[2]),
                  ("web", "old"): "10.9.0.2"}  # fmt: skip
    # What the changes then draw is what the preview said.
    assert ctl.network_create(NetworkRequest(name="new")).pool.subnet == subnet
    made = ctl.container_create(ContainerRequest(name="web", network="new"))
    assert ctl.store.view().endpoints_of(made.id)[0].ip == str(subnet[2])
