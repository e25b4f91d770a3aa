"""``lowbridge agent``: keeps this host's overlay forwarding in step with the cluster store.

It lists everything under ``/lowbridge/v1/`` and reconciles (every local overlay network's
permanent FDB and neighbour entries, via :func:`lowbridge.drivers.overlay.sync`; the embedded
resolver's records), then watches the prefix from the next revision.  Each change -- a sandbox
connected or removed on any host, a network deleted -- is applied within milliseconds (etcd-notes
5 measured 5 ms median from put to programmed entry).  A lost connection (etcd restarted) or a
compacted revision ends the watch: the agent waits, lists again and reconciles, so nothing
missed meanwhile stays missed.  Kernel work takes the host lock, as every lowbridge command
does, and runs in a worker thread (pyroute2's synchronous API refuses a running event loop).

It also keeps the host's etcd lease alive (lowbridge.store.cluster: host liveness), renewing it
every third of its TTL.  A host cut off from etcd for longer than that finds its lease gone when
it is back: it takes a new one and announces again each endpoint it still has (its veth is still
in the overlay namespace), unless another host took the address meanwhile.

A change cut off from etcd mid-transaction leaves a journal entry and a pending file (lowbridge.
store.cluster); the agent looks every second and, once etcd answers again, settles the journal
as the next command would.

Nobody has to start it: a command that leaves this host with an overlay namespace starts one
(:mod:`lowbridge.agentctl`, as the resolver is started), which exits -- revoking the lease --
once the host has none.  One agent per host: it holds ``<run>/agent.lock``; an agent started by
hand (or the unit in ``systemd/``) waits for that lock and then stays for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable

from lowbridge import config
from lowbridge.agentctl import hold_lock, overlay_namespaces
from lowbridge.config import Paths, host_lock, private_file
from lowbridge.models import Endpoint, Network
from lowbridge.store import etcd as kv

log = logging.getLogger("lowbridge-agent")
RETRY = 0.5  # seconds between attempts while etcd is unreachable


class Agent:
    def __init__(self, paths: Paths, url: str, host: str, on_demand: bool = False):
        self.paths = paths
        self.url = url
        self.target = kv.target(url)
        self.host = host
        self.on_demand = on_demand  # exit once the host has no overlay namespace
        self.stop = asyncio.Event()
        self.syncs = 0  # completed reconciliations (for tests and logs)
        self.lock_fd: int | None = None
        self.ttl = config.lease_ttl()
        # This host's key and endpoints as last seen, to announce again (kept in <run>/agent.json
        # across agents: the next one may start after the lease expired).
        self.memory = os.path.join(paths.run, "agent.json")
        self.host_doc: dict = {}
        self.own: dict[bytes, bytes] = {}
        with contextlib.suppress(OSError, ValueError):
            with open(self.memory) as f:
                doc = json.load(f)
            self.host_doc = doc["host"]
            self.own = {k.encode(): v.encode() for k, v in doc["own"].items()}

    def _remember(self) -> None:
        doc = {"host": self.host_doc, "own": {k.decode(): v.decode() for k, v in self.own.items()}}
        data = json.dumps(doc).encode()
        fd = private_file(self.memory + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(self.memory + ".new", self.memory)

    # ------------------------------------------------------------------ kernel side
    def reconcile(
        self,
        rows: list[tuple[bytes, bytes]],
        fresh: Callable[[], list[Network]] | None = None,
        leave: Callable[[], None] | None = None,
    ) -> None:
        """Bring every local overlay network in line with a listing of the whole prefix.

        ``fresh()`` reads the networks from etcd anew: a namespace of a network the listing
        lacks is removed only if that read, made under the host lock, lacks it too.  The
        listing may be older than the lock: a command holding it may have made a network's
        namespace and committed the network meanwhile, its watch event not here yet.
        ``leave()`` revokes the host's lease: an on-demand agent calls it when the host has no
        overlay namespace left, and exits."""
        from lowbridge.dns import control
        from lowbridge.drivers import overlay

        nets: dict[str, Network] = {}
        eps: dict[str, list[Endpoint]] = {}
        remember = False
        net_prefix, ep_prefix = kv.key("networks", ""), kv.key("endpoints", "")
        for k, v in rows:
            if k.startswith(net_prefix):
                net = Network.from_doc(json.loads(v))
                nets[net.id] = net
            elif k.startswith(ep_prefix):
                ep = Endpoint.from_doc(json.loads(v))
                eps.setdefault(ep.network_id, []).append(ep)
                if ep.host == self.host and self.own.get(k) != v:
                    self.own[k] = v
                    remember = True
        with host_lock(self.paths):
            added = removed = 0
            for net in nets.values():
                a, r = overlay.sync(net, eps.get(net.id, []), self.host)
                added, removed = added + a, removed + r
            self._gc(nets, fresh)
            with contextlib.suppress(Exception):  # the resolver may not run: fine
                control.sync(self.paths)
            if self.on_demand and not overlay_namespaces() and leave is not None:
                # Idle: leave under the host lock, so no command hands this host an overlay
                # endpoint under the lease being revoked (the next one starts a new agent).
                leave()
                self.stop_now()
        if remember:
            self._remember()
        self.syncs += 1
        if added or removed:
            log.info("synced %d networks: +%d -%d entries", len(nets), added, removed)

    def _gc(self, nets: dict[str, Network], fresh: Callable[[], list[Network]] | None) -> None:
        """Remove this host's overlay namespaces of networks deleted elsewhere."""
        from lowbridge.drivers import overlay
        from lowbridge.kernel import netns

        if not os.path.isdir(netns.NETNS_RUN_DIR):
            return
        live = {overlay.ns_name(n) for n in nets.values()}
        gone = [name for name in os.listdir(netns.NETNS_RUN_DIR)
                if name.startswith(overlay.NS_PREFIX) and name not in live]  # fmt: skip
        if gone and fresh is not None:
            try:
                live |= {overlay.ns_name(n) for n in fresh()}
            except Exception as exc:  # noqa: BLE001 - unsure: keep them, the next sync decides
                log.warning("cluster store: %s; kept %s", exc, ", ".join(gone))
                return
        for name in gone:
            if name not in live:
                log.info("network of %s is gone: removing it", name)
                with contextlib.suppress(Exception):
                    netns.remove(os.path.join(netns.NETNS_RUN_DIR, name))

    def stop_now(self) -> None:
        """Stop, letting go of the agent lock at once (a command may start the next agent)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        self._loop.call_soon_threadsafe(self.stop.set)

    # ------------------------------------------------------------------ etcd side
    async def run(self) -> None:
        aetcd = kv.client_library()

        self._loop = loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        member = 0
        while not self.stop.is_set():
            host, port = self.target.endpoints[member]
            client = kv.open_client(self.target, host, port)
            try:
                await client.connect()
                await self._session(client, loop)
            except (*kv.unreachable_errors(aetcd), aetcd.exceptions.ClientError) as exc:
                log.warning("cluster store %s:%d: %s; listing again in %.1f s", host, port,
                            exc or type(exc).__name__, RETRY)  # fmt: skip
                member = (member + 1) % len(self.target.endpoints)  # the next member
            except Exception:  # noqa: BLE001 - an agent that dies leaves its host's lease to lapse
                log.exception("unexpected error; listing again in %.1f s", RETRY)
            finally:
                with contextlib.suppress(Exception):
                    await client.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), RETRY)
        log.info("stopped cleanly")

    async def _session(self, client, loop) -> None:  # noqa: ANN001
        """List, reconcile, then follow the watch (and keep the lease alive) until it breaks or
        we are stopped."""
        import aetcd

        listing = await client.get_prefix(kv.PREFIX)
        rows = [(item.key, item.value) for item in listing]

        def blocking(coro):  # noqa: ANN001, ANN202 - from the worker thread, by this loop's client
            return asyncio.run_coroutine_threadsafe(coro, loop).result(kv.TIMEOUT * 2)

        def fresh() -> list[Network]:
            got = blocking(client.get_prefix(kv.key("networks", "")))
            return [Network.from_doc(json.loads(item.value)) for item in got]

        def leave() -> None:
            # The lease the store names now (the one remembered may have lapsed since).
            got = blocking(client.get(kv.key("hosts", self.host)))
            lease = json.loads(got.value).get("lease") if got is not None else None
            if lease:
                with contextlib.suppress(aetcd.exceptions.ClientError):  # lapsed meanwhile
                    blocking(client.revoke_lease(lease))
            log.info("no overlay network left on this host: leaving")

        def sync(state: dict) -> asyncio.Future:
            return loop.run_in_executor(None, self.reconcile, list(state.items()), fresh, leave)

        await sync(dict(rows))
        state = dict(rows)
        watch = await client.watch_prefix(kv.PREFIX, start_revision=listing.header.revision + 1)
        queue: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            async for event in watch:
                queue.put_nowait(event)

        reader = asyncio.ensure_future(read())
        keeper = asyncio.ensure_future(self._keep_lease(client, loop, state))
        settler = asyncio.ensure_future(self._settle_doubts(loop))
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, stopper, reader, keeper}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    for task in (reader, keeper):
                        if task in done:
                            task.result()  # re-raise what broke the watch or the lease
                            raise aetcd.exceptions.ConnectionFailedError("watch ended")
                    return  # stopped
                batch = [getter.result()]
                await asyncio.sleep(0.01)  # a transaction writes several keys: one reconcile
                while not queue.empty():
                    batch.append(queue.get_nowait())
                for event in batch:
                    if event.kind == aetcd.EventKind.PUT:
                        state[event.kv.key] = event.kv.value
                    else:
                        state.pop(event.kv.key, None)
                await sync(state)
        finally:
            for task in (stopper, reader, keeper, settler):
                task.cancel()
            with contextlib.suppress(Exception):
                await watch.cancel()

    async def _settle_doubts(self, loop) -> None:  # noqa: ANN001
        """Every second: a change cut off from etcd mid-transaction left a pending file (etcd
        answers this agent, so it may answer the change's settling too): settle the journal."""
        while True:
            if self._in_doubt():
                await loop.run_in_executor(None, self._settle)
            await asyncio.sleep(1.0)

    def _in_doubt(self) -> bool:
        from lowbridge.store.cluster import PENDING

        with contextlib.suppress(FileNotFoundError):
            return bool(os.listdir(os.path.join(os.path.dirname(self.paths.db), PENDING)))
        return False

    def _settle(self) -> None:
        """(worker thread) What the next command does first: settle the journal."""
        from lowbridge.controller import Controller
        from lowbridge.errors import LowbridgeError

        try:
            ctl = Controller(self.paths)
        except LowbridgeError as exc:
            log.warning("settle: %s", exc)
            return
        try:
            ctl.settle()
        except LowbridgeError as exc:
            log.warning("settle: %s", exc)
        finally:
            ctl.store.close()

    async def _keep_lease(self, client, loop, state: dict) -> None:  # noqa: ANN001
        """Renew this host's lease every third of its TTL; when it is gone (the host was cut
        off longer than that, or no agent ran), take a new one; announce again each endpoint of
        this host that the store lost (``state``: the store as the watch has it)."""
        me = kv.key("hosts", self.host)
        while True:
            got = await client.get(me)
            if got is not None:
                if json.loads(got.value) != self.host_doc:
                    self.host_doc = json.loads(got.value)
                    self._remember()
                expired = (await client.refresh_lease(self.host_doc["lease"])).TTL <= 0
            else:  # gone: expired while no agent ran, or while cut off from etcd
                expired = bool(self.host_doc) and bool(overlay_namespaces())
            lost = [k for k in self.own if k not in state]
            if expired or lost:
                await loop.run_in_executor(None, self._announce, client, loop, expired, lost)
            await asyncio.sleep(self.ttl / 3)

    def _announce(self, client, loop, renew: bool, lost: list[bytes]) -> None:  # noqa: ANN001
        """(worker thread, under the host lock) A new lease and this host's key (``renew``),
        then each ``lost`` endpoint whose veth is still here -- if its address is still free."""
        from lowbridge.drivers import overlay
        from lowbridge.kernel import rtnl

        def blocking(coro):  # noqa: ANN001, ANN202
            return asyncio.run_coroutine_threadsafe(coro, loop).result(kv.TIMEOUT * 2)

        with host_lock(self.paths):
            if renew:
                log.warning("this host's lease expired: announcing it again")
                lease = blocking(client.lease(self.ttl)).id
                doc = {**self.host_doc, "lease": lease}
                blocking(client.put(kv.key("hosts", self.host), json.dumps(doc).encode(),
                                    lease=lease))  # fmt: skip
                self.host_doc = doc
            lease = self.host_doc["lease"]
            for k in lost:
                ep = Endpoint.from_doc(json.loads(self.own[k]))
                path = overlay.ns_path(Network(id=ep.network_id, name="", driver="overlay"))
                try:
                    with rtnl.session(path) as ovl:
                        alive = ep.host_ifname is not None and ovl.link(ep.host_ifname) is not None
                except Exception:  # noqa: BLE001 - its namespace is gone
                    alive = False
                if not alive or ep.ip is None:  # removed here meanwhile
                    del self.own[k]
                    continue
                tx = client.transactions
                address = kv.key("ipam", ep.network_id, ep.ip)
                ok, _ = blocking(client.transaction(
                    compare=[tx.create(address) == 0, tx.create(k) == 0],
                    success=[tx.put(address, ep.container_id.encode(), lease),
                             tx.put(k, self.own[k], lease)],
                    failure=[]))  # fmt: skip
                if not ok:
                    del self.own[k]
                log.log(logging.INFO if ok else logging.WARNING, "%s %s on %s",
                        "announced again" if ok else "lost (address taken meanwhile):",
                        ep.ip, ep.network_id[:12])  # fmt: skip
            self._remember()


def main(paths: Paths, url: str, on_demand: bool = False) -> int:
    from lowbridge.store.cluster import read_host_id

    logging.basicConfig(level=logging.INFO, format="%(asctime)s lowbridge-agent: %(message)s")
    host = read_host_id(paths.host_id)
    if host is None:
        from lowbridge.errors import InvalidInput

        raise InvalidInput("this host has not joined the cluster yet: run a lowbridge command "
                           "with --store first")  # fmt: skip
    agent = Agent(paths, url, host, on_demand)
    agent.lock_fd = hold_lock(paths, wait=not on_demand)
    if agent.lock_fd is None:
        return 0  # another agent serves this host
    log.info("host %s watching %s%s", agent.host, agent.target.url,
             " (until the host has no overlay network)" if on_demand else "")  # fmt: skip
    asyncio.run(agent.run())
    return 0
