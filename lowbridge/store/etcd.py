"""The cluster store's client: etcd v3 through aetcd, behind a small synchronous interface.

Why aetcd (shared/reference/etcd-notes.md 2-3): the maintained client whose watch *reports*
failures (a restarted etcd raises ConnectionFailedError, a compacted revision
RevisionCompactedError), fastest of the maintained ones, cheapest to import.  Its API is asyncio
only; lowbridge commands are synchronous, so :class:`KV` drives a private event loop in the
calling thread (never running between calls, so pyroute2's synchronous IPRoute stays usable in
that thread -- etcd-notes pitfall 2).

gRPC's fork handlers crash children forked while gRPC threads run (etcd-notes pitfall 1): the
environment switch is set here, before grpc is imported.  lowbridge itself never forks (it
enters namespaces from threads; subprocesses use vfork).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from lowbridge.errors import CasConflict, InvalidInput, LowbridgeError  # noqa: F401 (re-exported)

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

PREFIX = b"/lowbridge/v1/"
TIMEOUT = 5.0
# Reconnect fast after an etcd restart (gRPC's default backoff grows to 120 s: etcd-notes 2).
GRPC_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10000,
    "grpc.keepalive_timeout_ms": 5000,
}


class StoreUnavailable(LowbridgeError):
    """etcd cannot be reached (exit code 6, as other store errors)."""

    exit_code = 6


def client_library():  # noqa: ANN201
    """aetcd, which only cluster mode needs (the ``cluster`` extra): without it, one line that
    says how to get it."""
    try:
        import aetcd
    except ImportError:
        raise InvalidInput(
            "cluster mode needs the etcd client: pip install 'lowbridge[cluster]'"
        ) from None
    return aetcd


def key(*parts: object) -> bytes:
    return PREFIX + "/".join(str(p) for p in parts).encode()


def parse_url(url: str) -> list[tuple[str, int]]:
    """``etcd://HOST:PORT[,HOST:PORT…]`` -> endpoints."""
    parsed = urlparse(url)
    if parsed.scheme != "etcd" or not parsed.netloc:
        raise InvalidInput(f"invalid store {url!r}: expected etcd://HOST:2379[,HOST:2379]")
    out = []
    for item in parsed.netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "2379"
        if not port.isdigit():
            raise InvalidInput(f"invalid store {url!r}: bad port in {item!r}")
        out.append((host.strip("[]"), int(port)))
    return out


@dataclass
class Ops:
    """One etcd transaction being built: compares, then puts and deletes (all or nothing)."""

    must_be_absent: list[bytes] = field(default_factory=list)
    must_have_created: list[tuple[bytes, int]] = field(default_factory=list)
    puts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: list[bytes] = field(default_factory=list)
    delete_prefixes: list[bytes] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.puts or self.deletes or self.delete_prefixes)


class KV:
    """A connection to etcd: get/put/delete/transactions, synchronously."""

    def __init__(self, url: str):
        self.url = url
        self.endpoints = parse_url(url)
        # The client's loop runs in a thread of its own, so callers may have a loop running
        # (the DNS resolver) or use pyroute2's synchronous API (commands) undisturbed.
        self._loop = asyncio.new_event_loop()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lowbridge-kv")
        self._client = None

    def _run(self, coro):  # noqa: ANN001, ANN202
        aetcd = client_library()

        try:
            return self._thread.submit(
                self._loop.run_until_complete, asyncio.wait_for(coro, TIMEOUT * 2)
            ).result()
        except (
            aetcd.exceptions.ConnectionFailedError,
            aetcd.exceptions.ConnectionTimeoutError,
            asyncio.TimeoutError,
        ) as exc:
            raise StoreUnavailable(
                f"cluster store {self.url} unreachable: {exc or 'timeout'}"
            ) from None

    def _c(self):  # noqa: ANN202
        """The client, connected to the first endpoint that answers."""
        aetcd = client_library()

        if self._client is not None:
            return self._client
        last: Exception | None = None
        for host, port in self.endpoints:
            client = aetcd.Client(host=host, port=port, timeout=TIMEOUT, options=GRPC_OPTIONS)
            try:
                self._run(client.connect())
                self._run(client.status())
            except (StoreUnavailable, aetcd.exceptions.ClientError) as exc:
                last = exc
                self._run(client.close())
                continue
            self._client = client
            return client
        raise StoreUnavailable(f"cluster store {self.url} unreachable: {last}")

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._run(self._client.close())
            self._client = None
        self._thread.submit(self._loop.close).result()
        self._thread.shutdown()

    # -- reads
    def get(self, k: bytes) -> tuple[bytes, int] | None:
        """(value, create_revision) or None."""
        got = self._run(self._c().get(k))
        return None if got is None else (got.value, got.create_revision)

    def get_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        rows = self._run(self._c().get_prefix(prefix))
        return [(kv.key, kv.value) for kv in rows]

    def keys(self, prefix: bytes) -> list[bytes]:
        rows = self._run(self._c().get_prefix(prefix, keys_only=True))
        return [kv.key for kv in rows]

    # -- writes
    def put(self, k: bytes, value: bytes) -> None:
        self._run(self._c().put(k, value))

    def commit(self, ops: Ops) -> None:
        """Apply ``ops`` in one etcd transaction; Conflict if a compare failed (someone else
        took an address, a VNI or a name first, or the network changed meanwhile)."""
        if ops.empty:
            return
        c = self._c()
        tx = c.transactions
        compare = [tx.create(k) == 0 for k in ops.must_be_absent]
        compare += [tx.create(k) == rev for k, rev in ops.must_have_created]
        success = [tx.put(k, v) for k, v in ops.puts.items()]
        success += [tx.delete(k) for k in ops.deletes]
        success += [tx.delete(k, range_end=_prefix_end(k)) for k in ops.delete_prefixes]
        ok, _ = self._run(c.transaction(compare=compare, success=success, failure=[]))
        if not ok:
            raise CasConflict(
                "the cluster store changed meanwhile (another host took the same address, VNI "
                "or name first); nothing was changed, try again"
            )


def _prefix_end(prefix: bytes) -> bytes:
    """The end of etcd's range for ``prefix`` (the prefix with its last byte incremented)."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def values(rows: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    return [v for _, v in rows]
