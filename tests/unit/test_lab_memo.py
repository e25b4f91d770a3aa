"""The memo of a complete apply, read with the controller (memo.unchanged) and before it is
imported (memo.quick): the same bytes with nothing committed since say "nothing to change";
anything that needs the controller -- another file, a commit, a journal entry, a reboot, a
resolver that should run and does not -- sends the command the whole way."""

import os

import pytest

from lowbridge.config import Paths
from lowbridge.lab import memo
from lowbridge.models import Container, JournalEntry
from lowbridge.store.sqlite import SQLiteStore


@pytest.fixture
def world(tmp_path):
    paths = Paths(state=str(tmp_path / "lib"), run=str(tmp_path / "run"), etc_netns="/nowhere")
    os.makedirs(paths.run)
    open(paths.boot_marker, "w").close()
    store = SQLiteStore(paths.db)
    with store.transaction():
        store.put_container(Container(id="c1", name="a-one", netns="/run/netns/a-one"))
    lab = tmp_path / "lab.yaml"
    lab.write_text("lab: a\nsandboxes:\n  one: {networks: [none]}\n")
    memo.remember(store, paths, str(lab), "a", 1)
    yield paths, store, str(lab)
    store.close()


def test_the_same_bytes_with_nothing_committed_since(world):
    paths, store, lab = world
    assert memo.quick(paths, lab) == ("a", 1) == memo.unchanged(store, paths, lab)


def test_other_bytes_or_a_commit_since(world):
    paths, store, lab = world
    with open(lab, "a") as f:
        f.write("# edited\n")
    assert memo.quick(paths, lab) is None and memo.unchanged(store, paths, lab) is None
    memo.remember(store, paths, lab, "a", 1)  # remembered again: the edit applied
    with store.transaction():
        store.put_container(Container(id="c2", name="b", netns="/run/netns/b"))
    assert memo.quick(paths, lab) is None and memo.unchanged(store, paths, lab) is None


def test_the_same_file_applied_as_another_host(world, monkeypatch):
    """A host's apply makes the sandboxes placed on it: under another name it is another
    apply."""
    paths, store, lab = world
    monkeypatch.setenv("LOWBRIDGE_HOST_NAME", "elsewhere")
    assert memo.quick(paths, lab) is None and memo.unchanged(store, paths, lab) is None


def test_a_journal_entry_or_a_reboot_needs_the_controller(world):
    paths, store, lab = world
    with store.transaction():
        store.put_journal(JournalEntry("j1", "container-create", {}))
    assert memo.quick(paths, lab) is None
    with store.transaction():
        store.delete_journal("j1")
    assert memo.quick(paths, lab) == ("a", 1)
    os.unlink(paths.boot_marker)  # the runtime directory is gone after a reboot
    assert memo.quick(paths, lab) is None


def test_a_resolver_that_should_run_and_does_not(world):
    paths, store, lab = world
    with store.transaction():
        store.put_container(
            Container(id="c3", name="a-dns", netns="/run/netns/a-dns", dns_ports=(5301, 5302))
        )
    memo.remember(store, paths, lab, "a", 1)
    assert memo.unchanged(store, paths, lab) == ("a", 1)  # the controller settles it first
    assert memo.quick(paths, lab) is None  # no resolver socket here: the controller starts it


def test_a_store_path_with_uri_characters(tmp_path):
    paths = Paths(state=str(tmp_path / "a?b#c%d"), run=str(tmp_path / "run"))
    os.makedirs(paths.run)
    open(paths.boot_marker, "w").close()
    store = SQLiteStore(paths.db)
    lab = tmp_path / "lab.yaml"
    lab.write_text("lab: a\n")
    memo.remember(store, paths, str(lab), "a", 0)
    assert memo.quick(paths, str(lab)) == ("a", 0)
    store.close()
