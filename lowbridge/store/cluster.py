"""Cluster mode's store: global-scope records (overlay networks, their address leases and
endpoints) in etcd, local-scope ones (bridge and macvlan networks, sandboxes, the journal) in the
embedded store.

:class:`ClusterStore` implements the :class:`~lowbridge.store.Store` protocol over both, so the
controller does not know which record lives where.  Writes inside ``transaction()`` are collected
and sent as *one* etcd transaction when the block ends -- guarded by compare-and-swap: an address
lease, a VNI and a network name are created only if absent, an endpoint only while its network
still has the same creation revision -- then the local transaction commits.  Two hosts racing for
the same address: one transaction fails, its command undoes its kernel changes and reports a
conflict (etcd-notes 4: 253/253 unique addresses in races).  etcd unreachable: the command fails
before anything is applied, or rolls back.

Key layout (one key per resource, so every allocation is an atomic create-if-absent)::

    /lowbridge/v1/networks/<id>              Network document
    /lowbridge/v1/netnames/<name>            <id>
    /lowbridge/v1/vni/<vni>                  <id>
    /lowbridge/v1/ipam/<id>/<ip>             <container id>
    /lowbridge/v1/endpoints/<id>/<ctr id>    Endpoint document (with host, VTEP, DNS names)
    /lowbridge/v1/hosts/<host id>            {"name", "vtep", "lease"}

Host liveness: each host holds an etcd lease (``lease_ttl`` seconds, kept alive by its agent,
:mod:`lowbridge.agent`); its host key, its endpoints and their address leases are put under it.
A host that dies stops renewing it: etcd deletes those keys when it expires, every other agent
sees the deletions and withdraws the forwarding entries and DNS names, and the addresses are free.

A transaction whose outcome is unknown (:class:`~lowbridge.store.etcd.StoreInDoubt`: sent, and
no member answered after) must not leave records the host does not have.  So before sending a
transaction that puts keys, the store writes them to a *pending* file named after the journal
entry of the change; the file goes once the local store has committed too.  A file whose entry
is still journaled belongs to a change being undone: :meth:`ClusterStore.undo_pending` deletes
each of its keys that still holds the value it wrote.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator

from lowbridge import config
from lowbridge.errors import NotFound, StoreError
from lowbridge.models import Container, Endpoint, JournalEntry, Network, View
from lowbridge.store import etcd
from lowbridge.store.sqlite import SQLiteStore

GLOBAL_DRIVERS = frozenset({"overlay"})
PENDING = "cluster-pending"  # beside the local store: transactions whose outcome was unknown
RETRY = 5.0  # seconds before a process that found etcd unreachable reads it again


def is_global(net: Network) -> bool:
    return net.driver in GLOBAL_DRIVERS


class ClusterStore:
    """The Store protocol over the local SQLite store and etcd (see the module docstring).

    ``host_id_file`` keeps this host's identity in the cluster; it is written once etcd has
    answered (a command that never reached the cluster leaves nothing behind)."""

    def __init__(self, local: SQLiteStore, client: etcd.KV, host_id_file: str):
        self.local = local
        self.kv = client
        self.path = local.path
        self._host_id_file = host_id_file
        self.host = read_host_id(host_id_file) or uuid.uuid4().hex[:16]
        self.vtep: str | None = None
        self.lease: int | None = None  # this host's etcd lease (register_host)
        self._ops: etcd.Ops | None = None
        self._journal_id: str | None = None  # the entry the open transaction deletes
        self._pending_dir = os.path.join(os.path.dirname(local.path) or ".", PENDING)
        self.unreachable: str | None = None  # etcd's error, when the last read found it down
        self._retry_at = 0.0  # (time.monotonic) no read of etcd before then

    def close(self) -> None:
        self.local.close()
        self.kv.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._ops is not None:
            raise StoreError("nested store transaction")
        pending = None
        with self.local.transaction():
            self._ops, self._journal_id = etcd.Ops(lease=self.lease), None
            try:
                yield
                if self._ops.puts and self._journal_id:
                    pending = self._write_pending(self._journal_id, self._ops.puts)
                self.kv.commit(self._ops)  # a failed compare rolls the local part back too
            except etcd.StoreInDoubt:
                pending = None  # kept: the journal entry stays, its settling reads the file
                raise
            except BaseException:
                if pending is not None:
                    os.unlink(pending)
                raise
            finally:
                self._ops = None
        if pending is not None:
            os.unlink(pending)

    # -- transactions whose outcome is unknown (see the module docstring)
    def _write_pending(self, entry_id: str, puts: dict[bytes, bytes]) -> str:
        os.makedirs(self._pending_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self._pending_dir, entry_id)
        doc = {k.decode(): v.decode() for k, v in puts.items()}
        config.write_durably(path, json.dumps(doc).encode())
        return path

    def undo_pending(self, entry_id: str) -> None:
        """Delete what the journal entry ``entry_id``'s change may have put in etcd (each key
        only while it holds the value written); StoreUnavailable leaves the file for later."""
        path = os.path.join(self._pending_dir, entry_id)
        try:
            with open(path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return
        for k, v in doc.items():
            self.kv.delete_if(k.encode(), v.encode())
        os.unlink(path)

    def drop_stale_pending(self, journaled: Iterable[str]) -> None:
        """Forget the pending files of changes committed since (their entry is gone)."""
        keep = set(journaled)
        for path in glob.glob(os.path.join(self._pending_dir, "*")):
            if os.path.basename(path) not in keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """The embedded part's (the cluster's records are read from etcd each time)."""
        return self.local.exclusive()

    def _writing(self) -> etcd.Ops:
        if self._ops is None:
            raise StoreError("store write outside a transaction")
        return self._ops

    # -- reads
    def view(self) -> View:
        """Both stores' records; with etcd unreachable, this host's local records alone (a
        :class:`LocalOnlyView`: local work goes on, a global network is refused by name) and
        ``unreachable`` set (the CLI says so in one line when the command succeeded)."""
        local = self.local.view()
        if time.monotonic() >= self._retry_at:
            try:
                nets = sorted(self._docs("networks", Network), key=lambda n: n.created)
                eps = self._docs("endpoints", Endpoint)
            except etcd.StoreUnavailable as exc:
                # Each try waits for etcd's timeout: a command asks once; the agent and the
                # resolver, which live on, again after RETRY seconds.
                self.unreachable, self._retry_at = str(exc), time.monotonic() + RETRY
            else:
                self.unreachable = None
                return View((*local.networks, *nets), local.containers, (*local.endpoints, *eps))
        return LocalOnlyView(local.networks, local.containers, local.endpoints, self.unreachable)

    def _docs(self, kind: str, model):  # noqa: ANN001, ANN202
        return [
            model.from_doc(json.loads(value)) for _, value in self.kv.get_prefix(etcd.key(kind, ""))
        ]

    def _local(self, network_id: str) -> bool:
        """A network of this host's own store (asking etcd nothing: local work goes on while
        it is unreachable)."""
        return network_id in self.local.view().nets

    def _global_network(self, network_id: str) -> Network | None:
        got = self.kv.get(etcd.key("networks", network_id))
        return Network.from_doc(json.loads(got[0])) if got else None

    # -- networks
    def put_network(self, network: Network) -> None:
        if not is_global(network):
            self.local.put_network(network)
            return
        ops = self._writing()
        k = etcd.key("networks", network.id)
        if self.kv.get(k) is None:
            ops.must_be_absent += [k, etcd.key("netnames", network.name)]
            ops.puts[etcd.key("netnames", network.name)] = network.id.encode()
            if network.vni:
                ops.must_be_absent.append(etcd.key("vni", network.vni))
                ops.puts[etcd.key("vni", network.vni)] = network.id.encode()
        ops.puts[k] = json.dumps(network.to_doc()).encode()

    def delete_network(self, network: Network) -> None:
        if not is_global(network):
            self.local.delete_network(network)
            return
        ops = self._writing()
        ops.deletes += [etcd.key("networks", network.id), etcd.key("netnames", network.name)]
        if network.vni:
            ops.deletes.append(etcd.key("vni", network.vni))
        ops.delete_prefixes += [
            etcd.key("ipam", network.id, ""),
            etcd.key("endpoints", network.id, ""),
        ]

    # -- containers and the journal (always local)
    def put_container(self, container: Container) -> None:
        self.local.put_container(container)

    def delete_container(self, container: Container) -> None:
        self.local.delete_container(container)

    def journal(self) -> list[JournalEntry]:
        return self.local.journal()

    def put_journal(self, entry: JournalEntry) -> None:
        self.local.put_journal(entry)

    def delete_journal(self, entry_id: str) -> None:
        self.local.delete_journal(entry_id)
        if self._ops is not None:
            self._journal_id = entry_id

    def get_meta(self, key: str) -> str | None:
        return self.local.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.local.set_meta(key, value)

    # -- endpoints
    def put_endpoint(self, endpoint: Endpoint) -> None:
        """An endpoint of a global network goes to etcd with its address lease (the endpoint
        must carry its host and VTEP: the planner sets them)."""
        if self._local(endpoint.network_id) or self._global_network(endpoint.network_id) is None:
            self.local.put_endpoint(endpoint)
            return
        ops = self._writing()
        ek = etcd.key("endpoints", endpoint.network_id, endpoint.container_id)
        if endpoint.ip and self.kv.get(ek) is None:
            address = etcd.key("ipam", endpoint.network_id, endpoint.ip)
            ops.must_be_absent.append(address)
            ops.puts[address] = endpoint.container_id.encode()
            ops.leased.add(address)
            got = self.kv.get(etcd.key("networks", endpoint.network_id))
            if got is not None:  # not created in this very transaction
                ops.must_have_created.append((etcd.key("networks", endpoint.network_id), got[1]))
        ops.puts[ek] = json.dumps(endpoint.to_doc()).encode()
        ops.leased.add(ek)  # the endpoint and its address go with this host (module docstring)

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        if self._local(endpoint.network_id) or self._global_network(endpoint.network_id) is None:
            self.local.delete_endpoint(endpoint)
            return
        ops = self._writing()
        ops.deletes.append(etcd.key("endpoints", endpoint.network_id, endpoint.container_id))
        if endpoint.ip:
            ops.deletes.append(etcd.key("ipam", endpoint.network_id, endpoint.ip))

    # -- hosts
    def register_host(self, vtep: str) -> None:
        """Announce this host and its VTEP (shown by ``network inspect``) under its lease --
        the one its agent keeps alive, else a new one; the host id is kept from then on."""
        k = etcd.key("hosts", self.host)
        got = self.kv.get(k)
        doc = json.loads(got[0]) if got else {}
        if doc.get("vtep") != vtep or not doc.get("lease"):
            lease = self.kv.grant(config.lease_ttl())
            doc = {"name": config.host_name(), "vtep": vtep, "lease": lease}
            self.kv.put(k, json.dumps(doc).encode(), lease=lease)
        self.vtep, self.lease = vtep, doc["lease"]
        if read_host_id(self._host_id_file) is None:
            os.makedirs(os.path.dirname(self._host_id_file), mode=0o700, exist_ok=True)
            fd = os.open(
                self._host_id_file,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            with os.fdopen(fd, "w") as f:
                f.write(self.host + "\n")

    def hosts(self) -> dict[str, dict]:
        prefix = etcd.key("hosts", "")
        return {k[len(prefix) :].decode(): json.loads(v) for k, v in self.kv.get_prefix(prefix)}


class LocalOnlyView(View):
    """This host's records alone, etcd being unreachable: a network not among them may be a
    global one, so looking it up says the store is unreachable rather than "not found"."""

    def __init__(self, networks, containers, endpoints, unreachable: str):  # noqa: ANN001
        super().__init__(networks, containers, endpoints)
        self.unreachable = unreachable

    def network(self, ref: str) -> Network:
        try:
            return super().network(ref)
        except NotFound:
            raise etcd.StoreUnavailable(
                f"network {ref} is not one of this host's, and {self.unreachable}"
            ) from None


def read_host_id(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None
