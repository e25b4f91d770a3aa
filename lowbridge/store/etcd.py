"""The cluster store's client: etcd v3 through aetcd, behind a small synchronous interface.

Why aetcd (shared/reference/etcd-notes.md 2-3): the maintained client whose watch *reports*
failures (a restarted etcd raises ConnectionFailedError, a compacted revision
RevisionCompactedError), fastest of the maintained ones, cheapest to import.  Its API is asyncio
only; lowbridge commands are synchronous, so :class:`KV` drives a private event loop in a thread
of its own (pyroute2's synchronous IPRoute stays usable in the caller's -- etcd-notes pitfall 2).

A store is one or more members (``etcd://A:2379,B:2379,C:2379``): a call that finds its member
gone -- killed, partitioned, or without a leader during an election -- is tried on the next one
until :data:`FAILOVER` seconds have passed, as etcd's own clients do.  A transaction whose answer
was lost is not simply sent again: :meth:`KV.commit` first reads, through the new member, whether
it was applied (a linearizable read: the new leader answers only once every entry of the old
term is committed or gone for good -- etcd raft's ReadIndex), and sends it again only if not.
When no member answers, the outcome is unknown: :class:`StoreInDoubt`.

``etcds://`` speaks TLS (the CA, a client certificate and key from the settings), and
``etcd://user:password@…`` or the ``store_password`` setting logs in (etcd's auth).  aetcd 1.0
opens plaintext channels only: :class:`_TLSClient` is the same client over grpc's secure channel.

gRPC's fork handlers crash children forked while gRPC threads run (etcd-notes pitfall 1): the
environment switch is set here, before grpc is imported.  lowbridge itself never forks (it
enters namespaces from threads; subprocesses use vfork).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from lowbridge import config
from lowbridge.errors import CasConflict, InvalidInput, LowbridgeError  # noqa: F401 (re-exported)

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

PREFIX = b"/lowbridge/v1/"
TIMEOUT = 5.0  # one call to one member
FAILOVER = 6.0  # trying the members in turn (an election takes ~1 s with etcd's defaults)
# Reconnect fast after an etcd restart (gRPC's default backoff grows to 120 s: etcd-notes 2).
GRPC_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10000,
    "grpc.keepalive_timeout_ms": 5000,
}
CA_ENV, CERT_ENV, KEY_ENV = "LOWBRIDGE_STORE_CA", "LOWBRIDGE_STORE_CERT", "LOWBRIDGE_STORE_KEY"
PASSWORD_ENV = "LOWBRIDGE_STORE_PASSWORD"


class StoreUnavailable(LowbridgeError):
    """etcd cannot be reached (exit code 6, as other store errors)."""

    exit_code = 6


class StoreInDoubt(StoreUnavailable):
    """A transaction was sent and no member could say whether it was applied: the change stays
    journaled, and the next command removes what it may have written (lowbridge.store.cluster)."""

    in_doubt = True  # (Change.abort reads this; it imports no etcd client)


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


@dataclass(frozen=True)
class Target:
    """Where the store is and how to log in (:func:`target`)."""

    url: str  # as messages show it: without the password
    endpoints: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def parse_url(url: str) -> list[tuple[str, int]]:
    """``etcd[s]://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT…]`` -> its members."""
    return list(target(url, settings=False).endpoints)


def target(url: str, settings: bool = True) -> Target:
    """The store ``url`` names, with (``settings``) the TLS files and password of the
    configuration: ``store_ca``, ``store_cert``, ``store_key``, ``store_password`` (environment
    LOWBRIDGE_STORE_CA, _CERT, _KEY, _PASSWORD)."""
    parsed = urlparse(url)
    userinfo, _, hosts = parsed.netloc.rpartition("@")
    if parsed.scheme not in ("etcd", "etcds") or not hosts:
        raise InvalidInput(f"invalid store {url!r}: expected etcd://HOST:2379[,HOST:2379]")
    members = []
    for item in hosts.split(","):
        if ":" not in item or item.startswith("[") and item.endswith("]"):
            host, port = item, "2379"
        else:
            host, _, port = item.rpartition(":")
        if not port.isdigit() or not host:
            raise InvalidInput(f"invalid store {url!r}: bad port in {item!r}")
        members.append((host.strip("[]"), int(port)))
    user, _, password = userinfo.partition(":")
    shown = parsed._replace(netloc=f"{user}@{hosts}" if user else hosts).geturl()
    t = Target(shown, tuple(members), parsed.scheme == "etcds", unquote(user) or None,
               unquote(password) or None)  # fmt: skip
    if not settings:
        return t
    files = {name: config.setting(f"store_{name}", env, "") or None
             for name, env in (("ca", CA_ENV), ("cert", CERT_ENV), ("key", KEY_ENV))}  # fmt: skip
    if bool(files["cert"]) != bool(files["key"]):
        raise InvalidInput(
            "store_cert and store_key go together (a client certificate and its key)"
        )
    if any(files.values()) and not t.tls:
        raise InvalidInput(f"store_ca/store_cert/store_key are for TLS: use etcds:// in {shown}")
    password = t.password or config.setting("store_password", PASSWORD_ENV, "") or None
    if password and not t.username:
        raise InvalidInput(f"a store password needs a user: etcd://USER@… in {shown}")
    if t.username and not password:
        raise InvalidInput(f"store user {t.username} needs a password (store_password)")
    return Target(shown, t.endpoints, t.tls, t.username, password, **files)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None


def open_client(t: Target, host: str, port: int):  # noqa: ANN201
    """An aetcd client of one member (not connected yet)."""
    aetcd = client_library()
    kwargs: dict[str, Any] = {"host": host, "port": port, "username": t.username,
                              "password": t.password, "timeout": TIMEOUT,
                              "options": GRPC_OPTIONS}  # fmt: skip
    if not t.tls:
        return aetcd.Client(**kwargs)
    import grpc

    creds = grpc.ssl_channel_credentials(_read(t.ca), _read(t.key), _read(t.cert))
    return _tls_class(aetcd)(creds, **kwargs)


def _tls_class(aetcd):  # noqa: ANN001, ANN202
    class _TLSClient(aetcd.Client):
        """aetcd's client over a TLS channel: its ``connect`` with ``secure_channel`` in place
        of ``insecure_channel`` (aetcd 1.0.0 client.py, Client.connect)."""

        def __init__(self, credentials, **kwargs):  # noqa: ANN001, ANN003
            super().__init__(**kwargs)
            self._credentials = credentials

        async def connect(self) -> None:
            from aetcd import rpc, watcher

            if self._connected.is_set():
                return
            target = f"{self._host}:{self._port}"
            self.channel = rpc.secure_channel(target, self._credentials,
                                              options=self._options.items())  # fmt: skip
            try:
                if self._username is not None:
                    self.auth_stub = rpc.AuthStub(self.channel)
                    request = rpc.AuthenticateRequest(name=self._username, password=self._password)
                    resp = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                    self.metadata = (("token", resp.token),)
            except Exception as exc:  # noqa: BLE001 - as aetcd's _handle_errors maps them
                await self.channel.close()
                raise aetcd.exceptions.ConnectionFailedError(str(exc)) from None
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                            metadata=self.metadata)  # fmt: skip
            self._connected.set()

    return _TLSClient


def unreachable_errors(aetcd) -> tuple[type[BaseException], ...]:  # noqa: ANN001
    """What a member that is gone, partitioned or without a leader raises."""
    e = aetcd.exceptions
    return (e.ConnectionFailedError, e.ConnectionTimeoutError, e.InternalError,
            asyncio.TimeoutError, OSError)  # fmt: skip


@dataclass
class Ops:
    """One etcd transaction being built: compares, then puts and deletes (all or nothing).
    Keys in ``leased`` are put under ``lease`` (the host's: they go when the host does)."""

    must_be_absent: list[bytes] = field(default_factory=list)
    must_have_created: list[tuple[bytes, int]] = field(default_factory=list)
    puts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: list[bytes] = field(default_factory=list)
    delete_prefixes: list[bytes] = field(default_factory=list)
    leased: set[bytes] = field(default_factory=set)
    lease: int | None = None

    @property
    def empty(self) -> bool:
        return not (self.puts or self.deletes or self.delete_prefixes)


class KV:
    """A connection to a store's members: get/put/delete/transactions/leases, synchronously."""

    def __init__(self, url: str):
        self.target = target(url)
        self.url = self.target.url
        self.endpoints = list(self.target.endpoints)
        # The client's loop runs in a thread of its own, so callers may have a loop running
        # (the DNS resolver) or use pyroute2's synchronous API (commands) undisturbed.
        self._loop = asyncio.new_event_loop()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lowbridge-kv")
        self._client = None
        self._member = 0  # the endpoint tried first

    def _run(self, coro: Awaitable):  # noqa: ANN202
        return self._thread.submit(
            self._loop.run_until_complete, asyncio.wait_for(coro, TIMEOUT * 2)
        ).result()

    def _call(self, fn: Callable[[Any], Awaitable], deadline: float | None = None):  # noqa: ANN202
        """``fn(client)`` on the member in use, else on the next ones in turn until
        ``deadline`` (default: FAILOVER from now); StoreUnavailable when none answered."""
        aetcd = client_library()
        errors = unreachable_errors(aetcd)
        deadline = deadline or time.monotonic() + FAILOVER
        last: BaseException | None = None
        while True:
            try:
                return self._run(fn(self._connected()))
            except errors as exc:
                last = exc
            except aetcd.exceptions.ClientError as exc:  # refused: bad password, lost lease...
                raise StoreUnavailable(f"cluster store {self.url}: {exc}") from None
            self._drop()
            self._member = (self._member + 1) % len(self.endpoints)
            if time.monotonic() >= deadline:
                raise StoreUnavailable(
                    f"cluster store {self.url} unreachable: {last or 'timeout'}"
                ) from None
            if self._member == 0:
                time.sleep(0.1)  # every member tried: an election may be under way

    def _connected(self):  # noqa: ANN202
        if self._client is None:
            host, port = self.endpoints[self._member]
            client = open_client(self.target, host, port)
            try:
                self._run(client.connect())
            except BaseException:
                self._run(client.close())
                raise
            self._client = client
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._run(self._client.close())
            self._client = None

    def close(self) -> None:
        self._drop()
        self._thread.submit(self._loop.close).result()
        self._thread.shutdown()

    # -- reads (linearizable: what the leader has committed)
    def get(self, k: bytes) -> tuple[bytes, int] | None:
        """(value, create_revision) or None."""
        got = self._call(lambda c: c.get(k))
        return None if got is None else (got.value, got.create_revision)

    def get_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        rows = self._call(lambda c: c.get_prefix(prefix))
        return [(kv.key, kv.value) for kv in rows]

    def keys(self, prefix: bytes) -> list[bytes]:
        rows = self._call(lambda c: c.get_prefix(prefix, keys_only=True))
        return [kv.key for kv in rows]

    # -- writes
    def put(self, k: bytes, value: bytes, lease: int | None = None) -> None:
        self._call(lambda c: c.put(k, value, lease=lease))

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        return self._call(lambda c: c.lease(ttl)).id

    def delete_if(self, k: bytes, value: bytes) -> bool:
        """Delete ``k`` if it still holds ``value``; whether it was deleted."""

        def txn(c):  # noqa: ANN001, ANN202
            tx = c.transactions
            return c.transaction(compare=[tx.value(k) == value], success=[tx.delete(k)],
                                 failure=[])  # fmt: skip

        return self._call(txn)[0]

    def commit(self, ops: Ops) -> None:
        """Apply ``ops`` in one etcd transaction; CasConflict if a compare failed (someone else
        took an address, a VNI or a name first, or the network changed meanwhile);
        StoreInDoubt if it was sent and no member could tell whether it was applied."""
        if ops.empty:
            return
        deadline = time.monotonic() + FAILOVER
        try:
            ok = self._call(lambda c: self._txn(c, ops), deadline=time.monotonic())
        except StoreUnavailable as exc:
            ok = self._recover(ops, deadline, exc)
        if not ok:
            raise CasConflict(
                "the cluster store changed meanwhile (another host took the same address, VNI "
                "or name first); nothing was changed, try again"
            )

    def _recover(self, ops: Ops, deadline: float, first: StoreUnavailable) -> bool:
        """The answer to ``ops`` was lost: ask another member whether it was applied; send it
        again if not (its compares still guard it)."""
        try:
            while True:
                if self._applied(ops, deadline):
                    return True
                try:
                    return self._call(lambda c: self._txn(c, ops), deadline=time.monotonic())
                except StoreUnavailable:
                    if time.monotonic() >= deadline:
                        raise
        except StoreUnavailable:
            raise StoreInDoubt(f"{first}; whether the change reached it is unknown") from None

    def _applied(self, ops: Ops, deadline: float) -> bool:
        """Whether the store holds what ``ops`` writes (its puts present with their values,
        its deletes absent)."""
        for k, v in ops.puts.items():
            got = self._call(lambda c, k=k: c.get(k), deadline)
            if got is None or got.value != v:
                return False
        for k in ops.deletes:
            if self._call(lambda c, k=k: c.get(k), deadline) is not None:
                return False
        return all(not self._call(lambda c, p=p: c.get_prefix(p, keys_only=True), deadline)
                   for p in ops.delete_prefixes)  # fmt: skip

    @staticmethod
    async def _txn(c, ops: Ops) -> bool:  # noqa: ANN001
        tx = c.transactions
        compare = [tx.create(k) == 0 for k in ops.must_be_absent]
        compare += [tx.create(k) == rev for k, rev in ops.must_have_created]
        success = [tx.put(k, v, ops.lease if k in ops.leased else None)
                   for k, v in ops.puts.items()]  # fmt: skip
        success += [tx.delete(k) for k in ops.deletes]
        success += [tx.delete(k, range_end=_prefix_end(k)) for k in ops.delete_prefixes]
        ok, _ = await c.transaction(compare=compare, success=success, failure=[])
        return ok


def _prefix_end(prefix: bytes) -> bytes:
    """The end of etcd's range for ``prefix`` (the prefix with its last byte incremented)."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"
