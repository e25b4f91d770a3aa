"""The state store: a small interface, and its embedded SQLite implementation.

Contract (what the controller relies on, and what an etcd store must provide later):

* reads always see committed data and never block on a writer;
* writes happen only inside ``with store.transaction():``, which commits atomically on normal
  exit and rolls everything back if the block raises;
* an endpoint's address is unique per network (enforced by the store itself, as a last line of
  defence behind the controller's lock).

Cross-process serialisation of whole mutations (kernel changes included) is the controller's
lock, not the store's; the store only guarantees that each transaction is atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from operator import attrgetter
from typing import Protocol

from lowbridge.errors import Conflict, StoreError
from lowbridge.models import Container, Endpoint, Network

# A cached table's key per record: its primary key (what an upsert conflicts on).
_KEYS = {
    "networks": attrgetter("id"),
    "containers": attrgetter("id"),
    "endpoints": attrgetter("network_id", "container_id"),
}

_BY_CONTAINER = "endpoints by container"  # the cached endpoints, by sandbox, then by key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    network_id TEXT NOT NULL REFERENCES networks(id),
    container_id TEXT NOT NULL REFERENCES containers(id),
    ip TEXT,
    doc TEXT NOT NULL,
    PRIMARY KEY (network_id, container_id),
    UNIQUE (network_id, ip));
"""


class Store(Protocol):
    """What lowbridge needs from a state store."""

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def networks(self) -> list[Network]: ...
    def put_network(self, network: Network) -> None: ...
    def delete_network(self, network_id: str) -> None: ...
    def containers(self) -> list[Container]: ...
    def put_container(self, container: Container) -> None: ...
    def delete_container(self, container_id: str) -> None: ...
    def endpoints(
        self, network_id: str | None = None, container_id: str | None = None
    ) -> list[Endpoint]: ...
    def addresses(self, network_id: str) -> list[str]: ...
    def put_endpoint(self, endpoint: Endpoint) -> None: ...
    def delete_endpoint(self, network_id: str, container_id: str) -> None: ...


def open_store(paths, url: str | None = None, memo: bool = False):  # noqa: ANN001, ANN201
    """The store for ``paths``: the embedded one, or -- with a cluster store URL (argument,
    else the configuration) -- the cluster store over it (:mod:`lowbridge.cluster`).  ``memo``:
    see :class:`SQLiteStore` (read-only users)."""
    from lowbridge import config

    local = SQLiteStore(paths.db, memo=memo)
    url = url or config.store_url()
    if not url:
        return local
    from lowbridge import cluster, kv

    return cluster.ClusterStore(local, kv.KV(url), cluster.host_id(paths))


class SQLiteStore:
    """SQLite in WAL mode: readers never wait for the writer; each transaction is atomic."""

    def __init__(self, path: str, memo: bool = False):
        self.path = path
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a crash of the process (and the database never
            # corrupts); only a power loss can drop the newest commits, and after one the
            # kernel state is gone too and the next command reconciles.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"open state store {path}: {exc}") from None
        self._in_tx = False
        self._cache: dict | None = None
        # The tables a cached() block loaded, kept for the next one while no other writer
        # committed in between (the "generation" meta row says so; see cached()).
        self._kept: dict | None = None
        self._kept_gen: str | None = None
        # memo: a long-lived reader (the DNS resolver) re-reads the tables on every change;
        # records whose stored text did not change are not parsed again.  They are shared
        # between reads, so only a reader that never changes records may ask for it.
        self._memo: dict[str, dict[str, object]] | None = {} if memo else None

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_tx:
            raise StoreError("nested store transaction")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"begin store transaction: {exc}") from None
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            if self._cache is not None:
                self._cache.clear()  # it had the rolled-back writes
            raise
        else:
            try:
                # Every commit moves the generation on, so a kept cache knows it is stale.
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES ('generation', '1') ON CONFLICT(key) "
                    "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
                gen = self.get_meta("generation")
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                if self._cache is not None:
                    self._cache.clear()
                raise StoreError(f"commit store transaction: {exc}") from None
            # Writes inside cached() went through the cache: it still matches the tables.
            if self._cache is not None and self._cache is self._kept:
                self._kept_gen = gen
        finally:
            self._in_tx = False

    @contextlib.contextmanager
    def cached(self) -> Iterator[None]:
        """Keep each table in memory while the block runs, written through by every put and
        delete (and dropped by a rollback).

        For the span of one mutation, which holds the host lock so no other process writes:
        an attach reads the networks, sandboxes and endpoints a dozen times (validation, IPAM,
        firewall model, files), and re-parsing every document each time grew with the number
        of sandboxes (bench/growth.py).  Reads return the cached record objects (in new lists):
        a caller that changes one must write it (as the controller does) or change it back.

        The tables stay loaded for the next block of this store object (a library user's
        next mutation) unless another writer committed meanwhile -- the generation row, moved
        on by every commit, tells -- or the block raised (a record may have been changed and
        not written)."""
        gen = self.get_meta("generation")
        if self._kept is None or gen is None or gen != self._kept_gen:
            self._kept, self._kept_gen = {}, gen
        self._cache = self._kept
        try:
            yield
        except BaseException:
            self._kept = None
            raise
        finally:
            self._cache = None

    def _write(self, sql: str, args: tuple) -> None:
        if not self._in_tx:
            raise StoreError("store write outside a transaction")
        try:
            self._db.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"store refused the change: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"write state store: {exc}") from None

    def _docs(self, sql: str, args: tuple = ()) -> list[dict]:
        try:
            return [json.loads(row[0]) for row in self._db.execute(sql, args)]
        except sqlite3.Error as exc:
            raise StoreError(f"read state store: {exc}") from None

    def _parsed(self, table: str, model) -> list:  # noqa: ANN001
        """Every record of ``table`` (with the memo: reusing those whose text is unchanged)."""
        sql = f"SELECT doc FROM {table} ORDER BY rowid"  # noqa: S608 - fixed names
        if self._memo is None:
            return [model.from_doc(d) for d in self._docs(sql)]
        old, new = self._memo.get(table, {}), {}
        try:
            rows = [row[0] for row in self._db.execute(sql)]
        except sqlite3.Error as exc:
            raise StoreError(f"read state store: {exc}") from None
        for text in rows:
            new[text] = old.get(text) or model.from_doc(json.loads(text))
        self._memo[table] = new
        return [new[text] for text in rows]

    def _table(self, table: str, model) -> dict | None:  # noqa: ANN001
        """The cached records of ``table`` by key, in row order (loaded on first use); None when
        not caching."""
        if self._cache is None:
            return None
        if table not in self._cache:
            key = _KEYS[table]
            rows = self._cache[table] = {key(r): r for r in self._parsed(table, model)}
            if table == "endpoints":  # and by sandbox, for endpoints(container_id=...)
                by_ctr: dict[str, dict] = {}
                for k, ep in rows.items():
                    by_ctr.setdefault(ep.container_id, {})[k] = ep
                self._cache[_BY_CONTAINER] = by_ctr
        return self._cache[table]

    def _cached_put(self, table: str, record) -> None:  # noqa: ANN001
        """Write-through: an upsert keeps its key's place (as its row keeps its rowid), a new
        record comes last (as a new row does)."""
        rows = self._cache.get(table) if self._cache is not None else None
        if rows is not None:
            key = _KEYS[table](record)
            rows[key] = record
            if table == "endpoints":
                self._cache[_BY_CONTAINER].setdefault(record.container_id, {})[key] = record

    def _cached_delete(self, table: str, key) -> None:  # noqa: ANN001
        rows = self._cache.get(table) if self._cache is not None else None
        if rows is not None:
            rows.pop(key, None)
            if table == "endpoints":
                self._cache[_BY_CONTAINER].get(key[1], {}).pop(key, None)

    # -- meta
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- networks
    def networks(self) -> list[Network]:
        cached = self._table("networks", Network)
        return list(cached.values()) if cached is not None else self._parsed("networks", Network)

    def put_network(self, network: Network) -> None:
        self._write(
            "INSERT INTO networks(id, name, doc) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name=excluded.name, doc=excluded.doc",
            (network.id, network.name, json.dumps(network.to_doc())),
        )
        self._cached_put("networks", network)

    def delete_network(self, network_id: str) -> None:
        self._write("DELETE FROM networks WHERE id=?", (network_id,))
        self._cached_delete("networks", network_id)

    # -- containers
    def containers(self) -> list[Container]:
        cached = self._table("containers", Container)
        return (
            list(cached.values()) if cached is not None else self._parsed("containers", Container)
        )

    def put_container(self, container: Container) -> None:
        self._write(
            "INSERT INTO containers(id, name, doc) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name=excluded.name, doc=excluded.doc",
            (container.id, container.name, json.dumps(container.to_doc())),
        )
        self._cached_put("containers", container)

    def delete_container(self, container_id: str) -> None:
        self._write("DELETE FROM containers WHERE id=?", (container_id,))
        self._cached_delete("containers", container_id)

    # -- endpoints
    def endpoints(
        self, network_id: str | None = None, container_id: str | None = None
    ) -> list[Endpoint]:
        cached = self._table("endpoints", Endpoint)
        if cached is None and network_id is None and container_id is None:
            return self._parsed("endpoints", Endpoint)
        if cached is not None:
            if container_id is not None and self._cache is not None:
                cached = self._cache[_BY_CONTAINER].get(container_id, {})
            if network_id is None:
                return list(cached.values())
            return [e for e in cached.values()
                    if (network_id is None or e.network_id == network_id)
                    and (container_id is None or e.container_id == container_id)]  # fmt: skip
        sql, args = "SELECT doc FROM endpoints WHERE 1=1", []
        if network_id is not None:
            sql += " AND network_id=?"
            args.append(network_id)
        if container_id is not None:
            sql += " AND container_id=?"
            args.append(container_id)
        docs = self._docs(sql + " ORDER BY rowid", tuple(args))
        return [Endpoint.from_doc(d) for d in docs]

    def addresses(self, network_id: str) -> list[str]:
        """The addresses endpoints hold on a network (the IPAM leases), without the documents."""
        cached = self._table("endpoints", Endpoint)
        if cached is not None:
            return [e.ip for e in cached.values() if e.network_id == network_id and e.ip]
        rows = self._db.execute(
            "SELECT ip FROM endpoints WHERE network_id=? AND ip IS NOT NULL", (network_id,)
        )
        return [row[0] for row in rows]

    def put_endpoint(self, endpoint: Endpoint) -> None:
        self._write(
            "INSERT INTO endpoints(network_id, container_id, ip, doc) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(network_id, container_id) DO UPDATE SET ip=excluded.ip, doc=excluded.doc",
            (
                endpoint.network_id,
                endpoint.container_id,
                endpoint.ip,
                json.dumps(endpoint.to_doc()),
            ),
        )
        self._cached_put("endpoints", endpoint)

    def delete_endpoint(self, network_id: str, container_id: str) -> None:
        self._write(
            "DELETE FROM endpoints WHERE network_id=? AND container_id=?",
            (network_id, container_id),
        )
        self._cached_delete("endpoints", (network_id, container_id))
