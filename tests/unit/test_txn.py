import pytest

from lowbridge.errors import InjectedFailure
from lowbridge.txn import FAIL_ENV, STEPS, Transaction


def test_undo_runs_newest_first_on_failure():
    log = []
    with pytest.raises(RuntimeError), Transaction("network-create") as tx:
        tx.step("create-device", lambda: log.append("do1"), lambda: log.append("undo1"))
        tx.step("mark-device", lambda: log.append("do2"), lambda: log.append("undo2"))
        raise RuntimeError("later failure")
    assert log == ["do1", "do2", "undo2", "undo1"]


def test_success_discards_undos():
    log = []
    with Transaction("network-create") as tx:
        tx.step("create-device", lambda: 1, lambda: log.append("undo"))
    assert log == []


def test_undo_errors_do_not_stop_the_rollback(capsys):
    log = []

    def bad():
        raise OSError("gone")

    with pytest.raises(RuntimeError), Transaction("network-create") as tx:
        tx.step("create-device", lambda: None, lambda: log.append("undo1"))
        tx.step("mark-device", lambda: None, bad)
        raise RuntimeError("x")
    assert log == ["undo1"]
    assert "undo mark-device: gone" in capsys.readouterr().err


def test_injection_fires_after_the_step_so_its_undo_runs(monkeypatch):
    monkeypatch.setenv(FAIL_ENV, "network-create:mark-device")
    log = []
    with pytest.raises(InjectedFailure), Transaction("network-create") as tx:
        tx.step("create-device", lambda: log.append("do1"), lambda: log.append("undo1"))
        tx.step("mark-device", lambda: log.append("do2"), lambda: log.append("undo2"))
        tx.step("device-address", lambda: log.append("never"))
    assert log == ["do1", "do2", "undo2", "undo1"]


def test_undeclared_steps_are_refused():
    with pytest.raises(ValueError), Transaction("network-create") as tx:
        tx.step("not-a-step", lambda: None)


def test_every_operation_ends_with_persist():
    assert all(steps[-1] == "persist" for steps in STEPS.values())
