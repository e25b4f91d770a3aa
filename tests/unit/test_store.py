"""The SQLite store: atomic transactions, uniqueness, documents round-trip."""

import pytest

from lowbridge import ipam
from lowbridge.errors import Conflict, StoreError
from lowbridge.models import Container, Endpoint, Network
from lowbridge.store import SQLiteStore
from tests.unit import samples


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "state" / "lowbridge.db"))
    yield s
    s.close()


def _net(name="n1"):
    pool = ipam.plan_pool(
        subnet="10.1.0.0/24", gateway=None, ip_range=None, aux_addresses=None, taken=[]
    )
    return Network(id=name + "-id", name=name, driver="bridge", pool=pool, labels={"a": "b"})


def test_round_trip(store):
    net, ctr, ep = samples.records()
    with store.transaction():
        store.put_network(net)
        store.put_container(ctr)
        store.put_endpoint(ep)
    assert store.networks() == [net]
    assert store.containers() == [ctr]
    assert store.endpoints(network_id=net.id) == [ep]
    assert store.endpoints(container_id="other") == []


def test_failed_transaction_changes_nothing(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.put_network(_net())
        raise RuntimeError("boom")
    assert store.networks() == []


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
    assert len(store.endpoints()) == 1


def test_state_survives_reopen(tmp_path):
    path = str(tmp_path / "db")
    s = SQLiteStore(path)
    with s.transaction():
        s.put_network(_net())
        s.set_meta("k", "v")
    s.close()
    s2 = SQLiteStore(path)
    assert [n.name for n in s2.networks()] == ["n1"]
    assert s2.get_meta("k") == "v"


def test_the_kept_tables_answer_as_the_database_does(store):
    """Reads inside cached() (dicts by key, endpoints also by sandbox) match the tables' own
    answers after upserts, deletions and a rolled-back transaction, order included."""
    nets = [_net("n1"), _net("n2")]
    ctrs = [Container(id=f"c{i}", name=f"c{i}", netns=f"/run/netns/c{i}") for i in range(4)]

    def ep(net, ctr, ip):  # noqa: ANN001, ANN202
        return Endpoint(f"{net.id}{ctr.id}", net.id, ctr.id, "eth0", ip=ip)

    def answers() -> list:
        out = [store.networks(), store.containers(), store.endpoints()]
        for c in ctrs:
            out.append(store.endpoints(container_id=c.id))
            out += [store.endpoints(network_id=n.id, container_id=c.id) for n in nets]
        out += [store.endpoints(network_id=n.id) for n in nets]
        return out + [sorted(store.addresses(n.id)) for n in nets]  # leases: a set

    with store.transaction():
        for n in nets:
            store.put_network(n)
        for c in ctrs:
            store.put_container(c)
        store.put_endpoint(ep(nets[0], ctrs[0], "10.1.0.2"))
    with store.cached():
        store.endpoints()  # loaded here, then written through
        with store.transaction():
            store.put_endpoint(ep(nets[1], ctrs[0], "10.1.0.3"))
            store.put_endpoint(ep(nets[0], ctrs[1], "10.1.0.4"))
            store.put_endpoint(ep(nets[0], ctrs[2], "10.1.0.5"))
            store.put_endpoint(ep(nets[0], ctrs[0], "10.1.0.9"))  # upsert: keeps its place
            store.delete_endpoint(nets[0].id, ctrs[1].id)
            store.put_container(ctrs[1])
        written_through = answers()
        with pytest.raises(RuntimeError), store.transaction():
            store.put_endpoint(ep(nets[1], ctrs[3], "10.1.0.7"))
            raise RuntimeError
        after_rollback = answers()
    assert written_through == answers()  # outside cached(): straight from the database
    assert after_rollback == answers()
    assert [e.ip for e in store.endpoints(container_id="c0")] == ["10.1.0.9", "10.1.0.3"]
