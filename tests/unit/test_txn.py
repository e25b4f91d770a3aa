"""The undo stack and its test hooks (lowbridge.txn)."""

import pytest

from lowbridge.errors import InjectedFailure
from lowbridge.txn import FAIL_ENV, TRACE_ENV, Crashed, Transaction


def _change(tx: Transaction, fn) -> None:  # noqa: ANN001
    """Run ``fn`` in ``tx`` as a change does: roll back on a failure, forget on success."""
    try:
        fn()
    except Exception:
        tx.rollback()
        raise
    tx.forget()


def _two_steps(tx: Transaction, log: list, fail: bool = False) -> None:
    tx.run("create-device", lambda: log.append("do1"), lambda: log.append("undo1"))
    tx.run("mark-device", lambda: log.append("do2"), lambda: log.append("undo2"))
    if fail:
        raise RuntimeError("later failure")


def test_undo_runs_newest_first_on_failure():
    log = []
    tx = Transaction("network-create")
    with pytest.raises(RuntimeError):
        _change(tx, lambda: _two_steps(tx, log, fail=True))
    assert log == ["do1", "do2", "undo2", "undo1"]


def test_success_discards_undos():
    log = []
    tx = Transaction("network-create")
    _change(tx, lambda: _two_steps(tx, log))
    assert tx.rollback() == [] and log == ["do1", "do2"]


def test_undo_errors_do_not_stop_the_rollback(capsys):
    log = []
    tx = Transaction("network-create")

    def bad():
        raise OSError("gone")

    def change() -> None:
        tx.run("create-device", lambda: None, lambda: log.append("undo1"))
        tx.run("mark-device", lambda: None, bad)
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        _change(tx, change)
    assert log == ["undo1"]
    assert "undo mark-device: gone" in capsys.readouterr().err


def test_injection_fires_after_the_step_so_its_undo_runs(monkeypatch):
    monkeypatch.setenv(FAIL_ENV, "network-create:mark-device")
    log = []
    tx = Transaction("network-create")
    with pytest.raises(InjectedFailure):
        _change(tx, lambda: (_two_steps(tx, log), tx.run("never", lambda: log.append("never"))))
    assert log == ["do1", "do2", "undo2", "undo1"]


def test_a_crash_stops_where_it_is_and_undoes_nothing(monkeypatch):
    """The in-process stand-in for a kill: a BaseException the change does not catch, so no
    undo runs (the next command settles the change from its journal entry)."""
    monkeypatch.setenv(FAIL_ENV, "network-create:create-device:crash")
    log = []
    tx = Transaction("network-create")
    with pytest.raises(Crashed):
        _change(tx, lambda: _two_steps(tx, log))
    assert log == ["do1"]


def test_the_trace_lists_every_step_run(monkeypatch, tmp_path):
    trace = tmp_path / "steps"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    tx = Transaction("network-create")
    _two_steps(tx, [])
    tx.check("persist")
    assert trace.read_text().split() == [
        "network-create:create-device",
        "network-create:mark-device",
        "network-create:persist",
    ]
