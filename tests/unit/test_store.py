"""The SQLite store: atomic transactions, uniqueness, documents round-trip, the view kept per
generation, the journal, and damaged state reported in one line."""

import json
import os
import sqlite3

import pytest

from lowbridge import ipam
from lowbridge.errors import Conflict, StoreError
from lowbridge.models import Container, Endpoint, JournalEntry, Network, frozen
from lowbridge.store.sqlite import SQLiteStore
from tests.unit import samples


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "state" / "lowbridge.db"))
    yield s
    s.close()


def _net(name="n1", subnet="10.1.0.0/24"):
    pool = ipam.plan_pool(subnet=subnet, gateway=None, ip_range=None, aux_addresses=None, taken=[])
    return Network(id=name + "-id", name=name, driver="bridge", pool=pool,
                   labels=frozen({"a": "b"}))  # fmt: skip


def test_round_trip(store):
    net, ctr, ep = samples.records()
    with store.transaction():
        store.put_network(net)
        store.put_container(ctr)
        store.put_endpoint(ep)
    view = store.view()
    assert view.networks == (net,) and view.containers == (ctr,)
    assert view.endpoints_on(net.id) == [ep] and view.endpoints_of("other") == []
    fresh = SQLiteStore(store.path).view()  # parsed from the file, not kept
    assert fresh.networks == (net,) and fresh.containers == (ctr,) and fresh.endpoints == (ep,)
    assert fresh.containers[0].ports == ctr.ports and fresh.containers[0].expose == ctr.expose


def test_records_are_immutable():
    net, ctr, ep = samples.records()
    with pytest.raises(AttributeError):
        ctr.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        net.options["x"] = "y"  # type: ignore[index]


def test_failed_transaction_changes_nothing(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.put_network(_net())
        raise RuntimeError("boom")
    assert store.view().networks == ()


def test_writes_need_a_transaction(store):
    with pytest.raises(StoreError):
        store.put_network(_net())


def test_names_and_addresses_are_unique(store):
    with store.transaction():
        store.put_network(_net("n1"))
        store.put_container(Container(id="c1", name="c1", netns="/x"))
        store.put_container(Container(id="c2", name="c2", netns="/y"))
        store.put_endpoint(
            Endpoint(id="e1", network_id="n1-id", container_id="c1", ifname="eth0", ip="10.1.0.2")
        )
    dup = Network(id="other", name="n1", driver="bridge")
    with pytest.raises(Conflict), store.transaction():
        store.put_network(dup)
    with pytest.raises(Conflict), store.transaction():
        store.put_endpoint(
            Endpoint(id="e2", network_id="n1-id", container_id="c2", ifname="eth0", ip="10.1.0.2")
        )
    assert len(store.view().endpoints) == 1


def test_state_survives_reopen(tmp_path):
    path = str(tmp_path / "db")
    s = SQLiteStore(path)
    with s.transaction():
        s.put_network(_net())
        s.set_meta("k", "v")
    s.close()
    s2 = SQLiteStore(path)
    assert [n.name for n in s2.view().networks] == ["n1"]
    assert s2.get_meta("k") == "v"
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_the_kept_view_answers_as_the_database_does(store):
    """The view this process keeps moves on with its own commits (upserts keep their place,
    deletions go, a rolled-back transaction changes nothing) and equals a fresh read."""
    nets = [_net("n1"), _net("n2", "10.2.0.0/24")]
    ctrs = [Container(id=f"c{i}", name=f"c{i}", netns=f"/run/netns/c{i}") for i in range(4)]

    def ep(net, ctr, ip):  # noqa: ANN001, ANN202
        return Endpoint(f"{net.id}{ctr.id}", net.id, ctr.id, "eth0", ip=ip)

    with store.transaction():
        for n in nets:
            store.put_network(n)
        for c in ctrs:
            store.put_container(c)
        store.put_endpoint(ep(nets[0], ctrs[0], "10.1.0.2"))
    store.view().endpoints  # noqa: B018 - loaded: later commits move this view on
    with store.transaction():
        store.put_endpoint(ep(nets[1], ctrs[0], "10.2.0.3"))
        store.put_endpoint(ep(nets[0], ctrs[1], "10.1.0.4"))
        store.put_endpoint(ep(nets[0], ctrs[2], "10.1.0.5"))
        store.put_endpoint(ep(nets[0], ctrs[0], "10.1.0.9"))  # upsert: keeps its place
        store.delete_endpoint(ep(nets[0], ctrs[1], "10.1.0.4"))
        store.put_container(ctrs[1])
    with pytest.raises(RuntimeError), store.transaction():
        store.put_endpoint(ep(nets[1], ctrs[3], "10.2.0.7"))
        raise RuntimeError
    kept, fresh = store.view(), SQLiteStore(store.path).view()
    for table in ("networks", "containers", "endpoints"):
        assert getattr(kept, table) == getattr(fresh, table), table
    assert [e.ip for e in kept.endpoints_of("c0")] == ["10.1.0.9", "10.2.0.3"]


def test_another_writer_makes_the_next_view_read_again_keeping_unchanged_records(store):
    with store.transaction():
        store.put_network(_net("n1"))
        store.put_network(_net("n2", "10.2.0.0/24"))
    first = store.view().networks
    other = SQLiteStore(store.path)
    with other.transaction():
        pool = _net("n2", "10.2.0.0/24").pool.to_doc()
        other.put_network(Network.from_doc({**_net("n2").to_doc(), "internal": True, "pool": pool}))
    second = store.view().networks
    assert second[0] is first[0]  # the same row text: the same record
    assert second[1].internal and not first[1].internal


def test_an_exclusive_hold_checks_once_then_follows_its_own_commits(store):
    """Under the host lock (store.exclusive) the first view reads the generation another
    writer left; later views ask the database nothing, yet show this process's commits."""
    with store.transaction():
        store.put_network(_net("n1"))
    store.view()
    other = SQLiteStore(store.path)
    with other.transaction():  # before the hold: the first view inside must see it
        other.put_network(_net("n2", "10.2.0.0/24"))
    statements = []
    store._db.set_trace_callback(statements.append)
    with store.exclusive():
        assert [n.name for n in store.view().networks] == ["n1", "n2"]
        with store.transaction():
            store.put_network(_net("n3", "10.3.0.0/24"))
        statements.clear()
        for _ in range(3):
            assert [n.name for n in store.view().networks] == ["n1", "n2", "n3"]
        assert statements == []
    store._db.set_trace_callback(None)
    with other.transaction():  # after the hold: read again
        other.delete_network(_net("n1"))
    assert [n.name for n in store.view().networks] == ["n2", "n3"]


def test_a_chain_of_changes_equals_the_records_built_at_once():
    """View.changed hands its key index on from view to view: many creates, an upsert, a
    removal and creates after it give exactly the tables a fresh view of the same records has."""
    from lowbridge.models import View

    net = _net("n1")
    ctrs = [Container(id=f"c{i}", name=f"c{i}", netns=f"/run/netns/c{i}") for i in range(6)]
    eps = [Endpoint(f"e{i}", net.id, c.id, "eth0", ip=f"10.1.0.{i + 2}") for i, c in
           enumerate(ctrs)]  # fmt: skip
    view = View([net])
    for c, e in zip(ctrs[:4], eps[:4], strict=True):
        view = view.changed([c, e])
    moved = Endpoint("e1", net.id, "c1", "eth0", ip="10.1.0.99")
    view = view.changed([moved])  # in place
    view = view.changed(gone=[eps[2], ctrs[2]])
    for c, e in zip(ctrs[4:], eps[4:], strict=True):
        view = view.changed([c, e])
    view = view.changed([ctrs[0]])  # an upsert after the removal: still in place
    want = View([net], [ctrs[i] for i in (0, 1, 3, 4, 5)], [eps[0], moved, eps[3], eps[4], eps[5]])
    assert (view.networks, view.containers, view.endpoints) == (
        want.networks, want.containers, want.endpoints)  # fmt: skip


def test_the_journal_keeps_intents_until_deleted(store):
    entry = JournalEntry("j1", "container-create", {"claims": {"containers": ["web"]}})
    with store.transaction():
        store.put_journal(entry)
    assert store.journal() == [entry]
    with store.transaction():
        store.delete_journal("j1")
    assert store.journal() == []


def test_a_damaged_row_fails_only_its_readers_in_one_line(store):
    net, ctr, _ = samples.records()
    with store.transaction():
        store.put_network(net)
        store.put_container(ctr)
    db = sqlite3.connect(store.path)
    db.execute("UPDATE containers SET doc='{bad' WHERE id=?", (ctr.id,))
    db.commit()
    fresh = SQLiteStore(store.path)
    assert fresh.view().networks == (net,)  # another table: still read
    with pytest.raises(StoreError) as err:
        fresh.view().containers  # noqa: B018
    text = str(err.value)
    assert store.path in text and "container cccccccccccc" in text and "\n" not in text
    assert err.value.exit_code == 6


def test_an_emptied_store_beside_its_log_is_refused_at_once(store):
    with store.transaction():
        store.put_network(_net())
    assert os.path.getsize(store.path + "-wal") > 0
    with open(store.path, "w"):
        pass  # cut to nothing, as a full disk or a careless `>` would
    with pytest.raises(StoreError, match="empty but its write-ahead log"):
        SQLiteStore(store.path)


def test_documents_of_older_stores_still_read():
    """Stores written before records were typed kept exposed ports as "80/tcp"."""
    doc = Container(id="c", name="c", netns="/n").to_doc()
    doc["expose"] = ["80/tcp", "53/udp"]
    doc["links"] = [["db", "database"]]
    ctr = Container.from_doc(json.loads(json.dumps(doc)))
    assert [str(p) for p in ctr.expose] == ["80/tcp", "53/udp"]
    assert ctr.links == (("db", "database"),)
