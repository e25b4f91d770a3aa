"""The embedded state store: SQLite in WAL mode, one file under the state directory.

* Reads never block on a writer; each ``with store.transaction():`` commits atomically on normal
  exit (``BEGIN IMMEDIATE``: one writer at a time) and rolls everything back if the block raises.
* An endpoint's address is unique per network, names are unique per table: the store enforces
  both as a last line of defence behind the controller's lock.
* Every commit that writes records moves the ``generation`` meta row on (the journal's rows
  are not the view's).  :meth:`SQLiteStore.view` is kept per generation, and a commit of this
  process moves the kept view on by what it wrote, so a
  library user's next change reads nothing back; a commit by another process makes the next
  view read the tables again -- reusing the record of every row whose text did not change
  (records are immutable, so they may be shared).
* The journal table holds the intent of each change under way (:mod:`lowbridge.controller.
  journal`): written and committed before the change's first kernel step, deleted in the same
  transaction that writes the change's records.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator

from lowbridge.errors import Conflict, StoreError
from lowbridge.models import Container, Endpoint, JournalEntry, Network, View

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
CREATE TABLE IF NOT EXISTS journal (
    id TEXT PRIMARY KEY, op TEXT NOT NULL, doc TEXT NOT NULL, created TEXT NOT NULL);
"""
_TABLES = {"networks": Network, "containers": Container, "endpoints": Endpoint}
_KEY = {"networks": "id", "containers": "id", "endpoints": "network_id, container_id"}
BUSY_TIMEOUT = 10.0  # seconds a write waits for another process's (the host lock serialises)


class SQLiteStore:
    """The store (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path
        _refuse_damaged(path)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a crash of the process (and the database never
            # corrupts); only a power loss can drop the newest commits, and after one the
            # kernel state is gone too and the next command reconciles.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            os.chmod(path, 0o600)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"open state store {path}: {exc}") from None
        self._writes: list | None = None  # (put?, record) of the open transaction
        self._view: View | None = None
        self._view_gen: str | None = None
        # Inside exclusive() once checked: the kept view is the database's (no other writer).
        self._exclusive = False
        self._checked = False
        self._parsed: dict[str, dict[str, object]] = {}  # table -> row text -> record

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """While the caller holds the host lock, which every writer takes: after one check of
        the generation, :meth:`view` answers from the view this store keeps current with its
        own commits, without reading the database (a change reads its view ~6 times)."""
        self._exclusive, self._checked = True, False
        try:
            yield
        finally:
            self._exclusive = False

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._writes is not None:
            raise StoreError("nested store transaction")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            start = self.get_meta("generation")
        except sqlite3.Error as exc:
            raise StoreError(f"begin store transaction on {self.path}: {exc}") from None
        self._writes = []
        try:
            yield
            gen = start
            if self._writes:  # records changed (the journal and meta rows are not the view's)
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES ('generation', '1') ON CONFLICT(key) "
                    "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
                gen = self.get_meta("generation")
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise StoreError(f"commit store transaction on {self.path}: {exc}") from None
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            # What this process wrote is all that changed since the kept view, if the view was
            # the one the transaction started from.
            if self._writes and self._view is not None and self._view_gen == start:
                last = {}  # each record's last write decides
                for is_put, record in self._writes:
                    last[(type(record), _key(record))] = (is_put, record)
                put = [r for is_put, r in last.values() if is_put]
                gone = [r for is_put, r in last.values() if not is_put]
                self._view, self._view_gen = self._view.changed(put, gone), gen
            elif self._writes:
                self._checked = False  # the kept view is not the one committed
        finally:
            self._writes = None

    def _write(self, sql: str, args: tuple, record: object = None, put: bool = True) -> None:
        if self._writes is None:
            raise StoreError("store write outside a transaction")
        try:
            self._db.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"store refused the change: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"write state store {self.path}: {exc}") from None
        if record is not None:
            self._writes.append((put, record))

    # ------------------------------------------------------------------ reads
    def view(self) -> View:
        """The committed records (see the module docstring); tables are read on first use, so
        a damaged row only fails the readers of its table."""
        if self._exclusive and self._checked and self._view is not None:
            return self._view
        gen = self.get_meta("generation")
        if self._view is None or gen is None or gen != self._view_gen:
            self._view, self._view_gen = View(loader=self._load), gen
        self._checked = self._exclusive and gen is not None
        return self._view

    def _load(self, table: str) -> tuple:
        model = _TABLES[table]
        sql = f"SELECT {_KEY[table]}, doc FROM {table} ORDER BY rowid"  # noqa: S608 - fixed
        try:
            rows = self._db.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"read state store {self.path}: {exc}") from None
        old, new = self._parsed.get(table, {}), {}
        out = []
        for *key, text in rows:
            record = old.get(text)
            if record is None:
                try:
                    record = model.from_doc(json.loads(text))
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    what = table[:-1] + " " + "/".join(k[:12] for k in key)
                    raise StoreError(
                        f"state store {self.path}: {what} is damaged ({exc.__class__.__name__}:"
                        f" {exc}); remove or repair that row"
                    ) from None
            new[text] = record
            out.append(record)
        self._parsed[table] = new
        return tuple(out)

    def networks(self) -> list[Network]:
        return list(self.view().networks)

    def containers(self) -> list[Container]:
        return list(self.view().containers)

    def endpoints(
        self, network_id: str | None = None, container_id: str | None = None
    ) -> list[Endpoint]:
        view = self.view()
        eps = view.endpoints_of(container_id) if container_id else list(view.endpoints)
        return [e for e in eps if network_id is None or e.network_id == network_id]

    # ------------------------------------------------------------------ writes
    def put_network(self, network: Network) -> None:
        self._write(
            "INSERT INTO networks(id, name, doc) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name=excluded.name, doc=excluded.doc",
            (network.id, network.name, json.dumps(network.to_doc())),
            network,
        )

    def delete_network(self, network: Network) -> None:
        self._write("DELETE FROM networks WHERE id=?", (network.id,), network, put=False)

    def put_container(self, container: Container) -> None:
        self._write(
            "INSERT INTO containers(id, name, doc) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name=excluded.name, doc=excluded.doc",
            (container.id, container.name, json.dumps(container.to_doc())),
            container,
        )

    def delete_container(self, container: Container) -> None:
        self._write("DELETE FROM containers WHERE id=?", (container.id,), container, put=False)

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
            endpoint,
        )

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        self._write(
            "DELETE FROM endpoints WHERE network_id=? AND container_id=?",
            endpoint.key,
            endpoint,
            put=False,
        )

    # ------------------------------------------------------------------ journal and meta
    def journal(self) -> list[JournalEntry]:
        """The changes under way (or left by a process that died), oldest first."""
        try:
            rows = self._db.execute(
                "SELECT id, op, doc, created FROM journal ORDER BY rowid"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"read state store {self.path}: {exc}") from None
        out = []
        for cid, op, text, created in rows:
            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise StoreError(
                    f"state store {self.path}: journal entry {cid[:12]} ({op}) is "
                    f"damaged ({exc}); remove or repair that row"
                ) from None
            out.append(JournalEntry(cid, op, doc, created))
        return out

    def put_journal(self, entry: JournalEntry) -> None:
        self._write(
            "INSERT INTO journal(id, op, doc, created) VALUES (?, ?, ?, ?) ON CONFLICT(id) "
            "DO UPDATE SET doc=excluded.doc",
            (entry.id, entry.op, json.dumps(entry.doc), entry.created),
        )

    def delete_journal(self, entry_id: str) -> None:
        self._write("DELETE FROM journal WHERE id=?", (entry_id,))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


def _key(record) -> object:  # noqa: ANN001
    return record.key if isinstance(record, Endpoint) else record.id


def _refuse_damaged(path: str) -> None:
    """A database file cut to nothing beside a write-ahead log that is not: SQLite would wait
    for a lock that never comes ("database is locked" after the busy timeout).  The store lost
    its content; say so instead of starting afresh beside live kernel objects."""
    try:
        size = os.stat(path).st_size
        wal = os.stat(path + "-wal").st_size
    except FileNotFoundError:
        return
    if size == 0 and wal > 0:
        raise StoreError(
            f"state store {path} is empty but its write-ahead log {path}-wal is not: the store "
            "was damaged; move both files away to start with an empty store"
        )
