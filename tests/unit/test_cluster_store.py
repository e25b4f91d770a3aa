"""ClusterStore's routing and compare-and-swap rules, over an in-memory etcd stand-in."""

from __future__ import annotations

import json

import pytest

from lowbridge import ipam
from lowbridge.errors import InvalidInput
from lowbridge.models import OPT_VNI, Container, Endpoint, Network, frozen
from lowbridge.store import etcd as kv
from lowbridge.store.cluster import ClusterStore
from lowbridge.store.sqlite import SQLiteStore


class FakeKV:
    """etcd's semantics that ClusterStore relies on: create revisions and atomic compares."""

    def __init__(self) -> None:
        self.data: dict[bytes, tuple[bytes, int]] = {}
        self.rev = 1
        self.leased: dict[int, set[bytes]] = {}
        self.lost = False  # the next commit is applied but its answer lost (StoreInDoubt)

    def get(self, k):  # noqa: ANN001, ANN201
        return self.data.get(k)

    def get_prefix(self, prefix):  # noqa: ANN001, ANN201
        return sorted((k, v) for k, (v, _) in self.data.items() if k.startswith(prefix))

    def keys(self, prefix):  # noqa: ANN001, ANN201
        return [k for k, _ in self.get_prefix(prefix)]

    def put(self, k, v, lease=None):  # noqa: ANN001, ANN201
        self.rev += 1
        self.data[k] = (v, self.data.get(k, (None, self.rev))[1])
        if lease is not None:
            self.leased.setdefault(lease, set()).add(k)

    def grant(self, ttl):  # noqa: ANN001, ANN201
        self.rev += 1
        return self.rev

    def expire(self, lease):  # noqa: ANN001, ANN201
        """The lease ran out (its host died): its keys go."""
        for k in self.leased.pop(lease, ()):
            self.data.pop(k, None)

    def delete_if(self, k, v):  # noqa: ANN001, ANN201
        if self.data.get(k, (None,))[0] == v:
            del self.data[k]
            return True
        return False

    def commit(self, ops: kv.Ops) -> None:
        if any(k in self.data for k in ops.must_be_absent) or any(
            self.data.get(k, (None, 0))[1] != rev for k, rev in ops.must_have_created
        ):
            raise kv.CasConflict("lost")
        for k in ops.deletes:
            self.data.pop(k, None)
        for p in ops.delete_prefixes:
            for k in [k for k in self.data if k.startswith(p)]:
                del self.data[k]
        for k, v in ops.puts.items():
            self.put(k, v, ops.lease if k in ops.leased else None)
        if self.lost:
            self.lost = False
            raise kv.StoreInDoubt("cluster store unreachable; whether the change reached it...")

    def close(self) -> None:
        pass


def _overlay(
    name: str = "ov", vni: str = "4096", subnet: str = "10.0.0.0/24", nid: str = ""
) -> Network:
    pool = ipam.plan_pool(subnet=subnet, gateway=None, ip_range=None, aux_addresses=None, taken=[])
    return Network(id=nid or name * 8, name=name, driver="overlay", pool=pool,
                   options=frozen({OPT_VNI: vni}))  # fmt: skip


def _store(tmp_path, shared, host: str, vtep: str) -> ClusterStore:
    store = ClusterStore(SQLiteStore(str(tmp_path / f"{host}.db")), shared,
                         str(tmp_path / f"{host}-id"))  # fmt: skip
    store.host, store.vtep = host, vtep
    return store


def _ep(eid: str, net: Network, ctr: str, ip: str, store: ClusterStore) -> Endpoint:
    """An endpoint as the planner makes it for a global network: with its host and VTEP."""
    return Endpoint(id=eid, network_id=net.id, container_id=ctr, ifname="eth0", ip=ip,
                    host=store.host, vtep=store.vtep)  # fmt: skip


@pytest.fixture
def stores(tmp_path):
    shared = FakeKV()
    a = _store(tmp_path, shared, "host-a", "10.200.0.1")
    b = _store(tmp_path, shared, "host-b", "10.200.0.2")
    yield a, b, shared
    a.local.close()
    b.local.close()


def test_overlay_records_are_shared_and_local_ones_are_not(stores):
    a, b, _ = stores
    with a.transaction():
        a.put_network(_overlay())
        a.put_network(Network(id="l" * 64, name="mine", driver="bridge"))
    assert [n.name for n in b.view().networks] == ["ov"]
    assert {n.name for n in a.view().networks} == {"ov", "mine"}


def test_names_vnis_and_addresses_are_taken_once(stores):
    a, b, _ = stores
    with a.transaction():
        a.put_network(_overlay())
    for other in (_overlay("ov", "4097", "10.0.1.0/24", nid="x" * 16), _overlay("ov2", "4096")):
        with pytest.raises(kv.CasConflict), b.transaction():
            b.put_network(other)
    net = _overlay()
    for store, ctr in ((a, "c1"), (b, "c2")):
        with store.transaction():
            store.put_container(Container(id=ctr * 32, name=ctr, netns=f"/run/netns/{ctr}"))
    with a.transaction():
        a.put_endpoint(_ep("e1", net, "c1" * 32, "10.0.0.2", a))
    # b took its snapshot before a's lease: its transaction loses and changes nothing.
    with pytest.raises(kv.CasConflict), b.transaction():
        b.put_container(Container(id="c3" * 32, name="c3", netns="/run/netns/c3"))
        b.put_endpoint(_ep("e2", net, "c2" * 32, "10.0.0.2", b))
    view = b.view()
    assert "c3" not in [c.name for c in view.containers]
    seen = view.endpoints_on(net.id)
    assert [(e.ip, e.host, e.vtep) for e in seen] == [("10.0.0.2", "host-a", "10.200.0.1")]
    assert view.endpoints_of("c2" * 32) == []


def test_deleting_a_network_deletes_its_leases_and_endpoints(stores):
    a, b, shared = stores
    net = _overlay()
    with a.transaction():
        a.put_network(net)
    with a.transaction():
        a.put_endpoint(_ep("e1", net, "c" * 64, "10.0.0.2", a))
    assert kv.key("ipam", net.id, "10.0.0.2") in shared.data
    with a.transaction():
        a.delete_network(net)
    assert all(n.id != net.id for n in b.view().networks)
    assert shared.data == {}


def test_the_host_id_is_kept_once_the_host_joined(tmp_path):
    store = ClusterStore(SQLiteStore(str(tmp_path / "s.db")), FakeKV(), str(tmp_path / "id"))
    assert not (tmp_path / "id").exists()  # a command that never reached etcd leaves nothing
    store.register_host("10.200.0.9")
    assert (tmp_path / "id").read_text().strip() == store.host
    again = ClusterStore(SQLiteStore(str(tmp_path / "t.db")), FakeKV(), str(tmp_path / "id"))
    assert again.host == store.host


def test_store_urls():
    assert kv.parse_url("etcd://10.0.0.1:2379,etcd2:2380") == [("10.0.0.1", 2379), ("etcd2", 2380)]
    assert kv.parse_url("etcd://etcd") == [("etcd", 2379)]
    assert kv.parse_url("etcds://[fd00::1]:2379,[fd00::2]") == [
        ("fd00::1", 2379),
        ("fd00::2", 2379),
    ]
    for bad in ("http://x:2379", "etcd://", "etcd://x:y", "etcd://u:p@"):
        with pytest.raises(InvalidInput):
            kv.parse_url(bad)


@pytest.fixture
def no_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("LOWBRIDGE_CONFIG", str(tmp_path / "none.conf"))
    for env in (kv.CA_ENV, kv.CERT_ENV, kv.KEY_ENV, kv.PASSWORD_ENV):
        monkeypatch.delenv(env, raising=False)
    return monkeypatch


def test_store_tls_and_login_settings(no_settings, tmp_path):
    t = kv.target("etcds://root:s%40cret@a:2379,b")
    assert (t.tls, t.username, t.password) == (True, "root", "s@cret")
    assert t.url == "etcds://root@a:2379,b" and "s@cret" not in repr(t)  # never shown
    no_settings.setenv(kv.PASSWORD_ENV, "pw")
    no_settings.setenv(kv.CA_ENV, str(tmp_path / "ca.pem"))
    t = kv.target("etcds://root@a")
    assert (t.password, t.ca, t.cert) == ("pw", str(tmp_path / "ca.pem"), None)
    with pytest.raises(InvalidInput, match="for TLS: use etcds://"):
        kv.target("etcd://root@a")
    no_settings.setenv(kv.CERT_ENV, "/c.pem")
    with pytest.raises(InvalidInput, match="go together"):
        kv.target("etcds://root@a")
    no_settings.delenv(kv.CERT_ENV)
    with pytest.raises(InvalidInput, match="needs a user"):
        kv.target("etcds://a")
    no_settings.delenv(kv.PASSWORD_ENV)
    with pytest.raises(InvalidInput, match="needs a password"):
        kv.target("etcds://root@a")
    with pytest.raises(InvalidInput, match="cannot read"):  # a missing CA file: one line
        kv.open_client(kv.target("etcds://a"), "a", 2379)


def test_endpoints_and_addresses_go_with_their_hosts_lease(stores):
    """Host liveness: a host's endpoints and address leases are put under its etcd lease; when
    it expires (the host died), they go, and the address is free for another host."""
    a, b, shared = stores
    net = _overlay()
    with a.transaction():
        a.put_network(net)
    for store in (a, b):
        store.register_host(store.vtep)
    assert a.lease != b.lease
    for store, ctr, ip in ((a, "c1", "10.0.0.2"), (b, "c2", "10.0.0.3")):
        with store.transaction():
            store.put_container(Container(id=ctr * 32, name=ctr, netns=f"/run/netns/{ctr}"))
            store.put_endpoint(_ep(ctr, net, ctr * 32, ip, store))
    shared.expire(a.lease)
    assert [e.ip for e in b.view().endpoints_on(net.id)] == ["10.0.0.3"]
    assert set(b.hosts()) == {"host-b"} and net.id in b.view().nets  # the network stays
    with b.transaction():
        b.put_endpoint(_ep("c3", net, "c2" * 32, "10.0.0.2", b))  # the dead host's address
    # register_host keeps a live lease, takes a new one once it is gone
    lease = b.lease
    b.register_host(b.vtep)
    assert b.lease == lease
    shared.expire(lease)
    b.register_host(b.vtep)
    assert b.lease != lease and "host-b" in b.hosts()


def test_a_transaction_in_doubt_is_undone_from_its_pending_file(stores, tmp_path):
    """The answer to a transaction is lost: its keys are kept in a pending file named after the
    journal entry; settling that entry deletes the keys that still hold what it wrote; a file
    whose entry is gone (the change committed) is dropped."""
    a, b, shared = stores
    net = _overlay()
    with a.transaction():
        a.put_network(net)
    a.register_host(a.vtep)
    shared.lost = True
    with pytest.raises(kv.StoreInDoubt), a.transaction():
        a.put_endpoint(_ep("e1", net, "c1" * 32, "10.0.0.2", a))
        a.delete_journal("entry-1")  # (Change.commit deletes its entry in the same transaction)
    assert kv.key("ipam", net.id, "10.0.0.2") in shared.data  # applied after all
    pending = tmp_path / "cluster-pending" / "entry-1"
    assert pending.exists()
    a.drop_stale_pending(["entry-1"])  # still journaled: kept
    a.undo_pending("entry-1")
    assert not pending.exists() and b.view().endpoints_on(net.id) == []
    a.undo_pending("entry-1")  # idempotent
    # A key someone else wrote since is not ours to delete.
    with a.transaction():
        a.put_endpoint(_ep("e2", net, "c2" * 32, "10.0.0.3", a))
        a.delete_journal("entry-2")
    assert not (tmp_path / "cluster-pending" / "entry-2").exists()  # committed: gone
    (tmp_path / "cluster-pending" / "entry-3").write_text(
        json.dumps({kv.key("ipam", net.id, "10.0.0.3").decode(): "someone-else"})
    )
    a.undo_pending("entry-3")
    assert kv.key("ipam", net.id, "10.0.0.3") in shared.data
    (tmp_path / "cluster-pending" / "entry-4").write_text("{}")
    a.drop_stale_pending([])
    assert list((tmp_path / "cluster-pending").iterdir()) == []


class FlakyMembers(kv.KV):
    """KV.commit's recovery over scripted members: ``script`` says, call by call, whether it
    reaches the store (a dict: "ok"), fails before reaching it ("down"), or reaches it and loses
    its answer ("lost")."""

    def __init__(self, script: list[str]):
        self.url, self.endpoints, self.script, self.data, self.sent = (
            "etcd://x",
            [("x", 1)],
            script,
            {},
            0,
        )

    def _call(self, fn, deadline=None):  # noqa: ANN001, ANN202
        import asyncio

        step = self.script.pop(0) if self.script else "ok"
        if step == "down":  # nothing reached the store
            raise kv.StoreUnavailable("cluster store etcd://x unreachable: down")
        result = asyncio.run(fn(self))
        if step == "lost":  # reached it, the answer did not come back
            raise kv.StoreUnavailable("cluster store etcd://x unreachable: timeout")
        return result

    async def _txn(self, c, ops):  # noqa: ANN001, ANN202
        self.sent += 1
        if any(k in self.data for k in ops.must_be_absent):
            return False
        self.data.update(ops.puts)
        for k in ops.deletes:
            self.data.pop(k, None)
        return True

    async def get(self, k):  # noqa: ANN001, ANN201 - (the client's, as _applied calls it)
        from types import SimpleNamespace

        return SimpleNamespace(value=self.data[k]) if k in self.data else None


def _ops() -> kv.Ops:
    return kv.Ops(must_be_absent=[b"a"], puts={b"a": b"1", b"e": b"doc"})


def test_a_lost_answer_is_read_back_not_sent_twice():
    applied = FlakyMembers(["lost"])  # applied, answer lost: the read-back says so
    applied.commit(_ops())
    assert applied.sent == 1 and applied.data == {b"a": b"1", b"e": b"doc"}
    missed = FlakyMembers(["down"])  # never reached it: read back, then sent again
    missed.commit(_ops())
    assert missed.sent == 1 and missed.data[b"a"] == b"1"
    taken = FlakyMembers(["down"])
    taken.data[b"a"] = b"other host's"  # meanwhile someone took it: a conflict, not a resend
    with pytest.raises(kv.CasConflict):
        taken.commit(_ops())
    gone = FlakyMembers(["lost", "down"])  # and then no member answers the read-back
    with pytest.raises(kv.StoreInDoubt, match="whether the change reached it is unknown"):
        gone.commit(_ops())
