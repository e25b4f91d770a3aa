"""The state store: what lowbridge knows it made.

    sqlite    the embedded store (one file under the state directory): every record, the journal
    cluster   cluster mode: global-scope records (overlay networks, their leases and endpoints) in
              etcd, the rest in the embedded store, behind the same interface
    etcd      the etcd client cluster mode uses

Contract (what the controller relies on):

* :meth:`Store.view` is one consistent reading of the committed records;
* writes happen only inside ``with store.transaction():``, which commits atomically on normal
  exit and rolls everything back if the block raises;
* an endpoint's address is unique per network, and names per table;
* the journal keeps the intent of each change under way until the transaction that writes its
  records deletes it;
* inside ``with store.exclusive():`` (entered under the host lock) no other process writes, so
  :meth:`Store.view` may answer without reading the database again.

Cross-process serialisation of whole changes (kernel steps included) is the host lock's
(:func:`lowbridge.config.host_lock`), not the store's.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lowbridge.config import Paths
    from lowbridge.models import Container, Endpoint, JournalEntry, Network, View


class Store(Protocol):
    """What lowbridge needs from a state store (see the module docstring)."""

    path: str

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def view(self) -> View: ...
    def exclusive(self) -> contextlib.AbstractContextManager[None]: ...
    def put_network(self, network: Network) -> None: ...
    def delete_network(self, network: Network) -> None: ...
    def put_container(self, container: Container) -> None: ...
    def delete_container(self, container: Container) -> None: ...
    def put_endpoint(self, endpoint: Endpoint) -> None: ...
    def delete_endpoint(self, endpoint: Endpoint) -> None: ...
    def journal(self) -> list[JournalEntry]: ...
    def put_journal(self, entry: JournalEntry) -> None: ...
    def delete_journal(self, entry_id: str) -> None: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def close(self) -> None: ...


def open_store(paths: Paths, url: str | None = None) -> Store:
    """The store for ``paths``: the embedded one, or -- with a cluster store URL (argument, else
    the configuration) -- the cluster store over it."""
    from lowbridge import config
    from lowbridge.store.sqlite import SQLiteStore

    local = SQLiteStore(paths.db)
    url = url or config.store_url()
    if not url:
        return local
    from lowbridge.store import cluster, etcd

    return cluster.ClusterStore(local, etcd.KV(url), paths.host_id)
