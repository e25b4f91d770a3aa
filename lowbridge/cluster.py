"""Cluster mode: global-scope records (overlay networks, their address leases and endpoints) in
etcd, local-scope ones (bridge and macvlan networks, sandboxes) in the embedded store.

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
    /lowbridge/v1/hosts/<host id>            {"name", "vtep"}
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator

from lowbridge import kv
from lowbridge.config import Paths
from lowbridge.drivers.overlay import VNI_OPTION
from lowbridge.errors import StoreError
from lowbridge.models import Container, Endpoint, Network
from lowbridge.store import SQLiteStore

GLOBAL_DRIVERS = frozenset({"overlay"})


def is_global(net: Network) -> bool:
    return net.driver in GLOBAL_DRIVERS


def host_id(paths: Paths) -> str:
    """This host's identity in the cluster: made once, kept in the state directory."""
    path = os.path.join(paths.state, "host-id")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    os.makedirs(paths.state, mode=0o700, exist_ok=True)
    value = uuid.uuid4().hex[:16]
    with open(path, "x") as f:
        f.write(value + "\n")
    return value


class ClusterStore:
    """The Store protocol over the local SQLite store and etcd (see the module docstring)."""

    def __init__(self, local: SQLiteStore, client: kv.KV, host: str, vtep: str | None = None):
        self.local = local
        self.kv = client
        self.host = host
        self.vtep = vtep
        self._ops: kv.Ops | None = None
        self._nets_put: dict[str, Network] = {}
        self._nets_del: set[str] = set()
        self._eps_put: dict[tuple[str, str], Endpoint] = {}
        self._eps_del: set[tuple[str, str]] = set()

    def close(self) -> None:
        self.local.close()
        self.kv.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._ops is not None:
            raise StoreError("nested store transaction")
        with self.local.transaction():
            self._ops = kv.Ops()
            try:
                yield
                self.kv.commit(self._ops)  # a failed compare rolls the local part back too
            finally:
                self._ops = None
                self._nets_put.clear()
                self._nets_del.clear()
                self._eps_put.clear()
                self._eps_del.clear()

    def _writing(self) -> kv.Ops:
        if self._ops is None:
            raise StoreError("store write outside a transaction")
        return self._ops

    # -- meta
    def get_meta(self, key: str) -> str | None:
        return self.local.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.local.set_meta(key, value)

    # -- networks
    def _global_networks(self) -> dict[str, Network]:
        out = {}
        for _, value in self.kv.get_prefix(kv.key("networks", "")):
            net = Network.from_doc(json.loads(value))
            out[net.id] = net
        for nid in self._nets_del:
            out.pop(nid, None)
        out.update(self._nets_put)
        return out

    def networks(self) -> list[Network]:
        return self.local.networks() + sorted(self._global_networks().values(),
                                              key=lambda n: n.created)  # fmt: skip

    def put_network(self, network: Network) -> None:
        if not is_global(network):
            self.local.put_network(network)
            return
        ops = self._writing()
        doc = json.dumps(network.to_doc()).encode()
        k = kv.key("networks", network.id)
        if self.kv.get(k) is None and network.id not in self._nets_put:
            vni = network.options.get(VNI_OPTION)
            ops.must_be_absent += [k, kv.key("netnames", network.name)]
            ops.puts[kv.key("netnames", network.name)] = network.id.encode()
            if vni:
                ops.must_be_absent.append(kv.key("vni", vni))
                ops.puts[kv.key("vni", vni)] = network.id.encode()
        ops.puts[k] = doc
        self._nets_put[network.id] = network
        self._nets_del.discard(network.id)

    def delete_network(self, network_id: str) -> None:
        net = self._global_networks().get(network_id)
        if net is None:
            self.local.delete_network(network_id)
            return
        ops = self._writing()
        ops.deletes += [kv.key("networks", net.id), kv.key("netnames", net.name)]
        if net.options.get(VNI_OPTION):
            ops.deletes.append(kv.key("vni", net.options[VNI_OPTION]))
        ops.delete_prefixes += [kv.key("ipam", net.id, ""), kv.key("endpoints", net.id, "")]
        self._nets_del.add(network_id)
        self._nets_put.pop(network_id, None)

    # -- containers (always local)
    def containers(self) -> list[Container]:
        return self.local.containers()

    def put_container(self, container: Container) -> None:
        self.local.put_container(container)

    def delete_container(self, container_id: str) -> None:
        self.local.delete_container(container_id)

    # -- endpoints
    def _global_endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        prefix = kv.key("endpoints", network_id, "") if network_id else kv.key("endpoints", "")
        found = {}
        for _, value in self.kv.get_prefix(prefix):
            ep = Endpoint.from_doc(json.loads(value))
            found[(ep.network_id, ep.container_id)] = ep
        for k in self._eps_del:
            found.pop(k, None)
        for k, ep in self._eps_put.items():
            if network_id is None or k[0] == network_id:
                found[k] = ep
        return list(found.values())

    def endpoints(
        self, network_id: str | None = None, container_id: str | None = None
    ) -> list[Endpoint]:
        """Local endpoints, and global ones: all hosts' for a network, this host's for a
        container (a sandbox is always local)."""
        if network_id is not None and network_id not in self._global_networks():
            return self.local.endpoints(network_id, container_id)
        out = [] if network_id is not None else self.local.endpoints(None, container_id)
        for ep in self._global_endpoints(network_id):
            if container_id is not None and (ep.container_id != container_id or
                                             ep.host != self.host):  # fmt: skip
                continue
            out.append(ep)
        return out

    def addresses(self, network_id: str) -> list[str]:
        if network_id not in self._global_networks():
            return self.local.addresses(network_id)
        prefix = kv.key("ipam", network_id, "")
        found = {k[len(prefix) :].decode() for k in self.kv.keys(prefix)}
        found |= {ep.ip for (nid, _), ep in self._eps_put.items() if nid == network_id and ep.ip}
        return sorted(found)

    def put_endpoint(self, endpoint: Endpoint) -> None:
        net = self._global_networks().get(endpoint.network_id)
        if net is None:
            self.local.put_endpoint(endpoint)
            return
        ops = self._writing()
        endpoint.host = self.host
        endpoint.vtep = self.vtep
        ek = kv.key("endpoints", net.id, endpoint.container_id)
        if endpoint.ip and self.kv.get(ek) is None:
            lease = kv.key("ipam", net.id, endpoint.ip)
            ops.must_be_absent.append(lease)
            ops.puts[lease] = endpoint.container_id.encode()
            got = self.kv.get(kv.key("networks", net.id))
            if got is not None:  # not created in this very transaction
                ops.must_have_created.append((kv.key("networks", net.id), got[1]))
        ops.puts[ek] = json.dumps(endpoint.to_doc()).encode()
        self._eps_put[(net.id, endpoint.container_id)] = endpoint
        self._eps_del.discard((net.id, endpoint.container_id))

    def delete_endpoint(self, network_id: str, container_id: str) -> None:
        if network_id not in self._global_networks():
            self.local.delete_endpoint(network_id, container_id)
            return
        ops = self._writing()
        ep = next((e for e in self._global_endpoints(network_id)
                   if e.container_id == container_id), None)  # fmt: skip
        ops.deletes.append(kv.key("endpoints", network_id, container_id))
        if ep is not None and ep.ip:
            ops.deletes.append(kv.key("ipam", network_id, ep.ip))
        self._eps_del.add((network_id, container_id))
        self._eps_put.pop((network_id, container_id), None)

    # -- hosts
    def register_host(self, vtep: str) -> None:
        """Announce this host and its VTEP (shown by ``network inspect``)."""
        doc = {"name": socket.gethostname(), "vtep": vtep}
        self.kv.put(kv.key("hosts", self.host), json.dumps(doc).encode())

    def hosts(self) -> dict[str, dict]:
        prefix = kv.key("hosts", "")
        return {k[len(prefix) :].decode(): json.loads(v) for k, v in self.kv.get_prefix(prefix)}
