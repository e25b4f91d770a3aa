"""``lowbridge-dns``: the embedded resolver process (``python -m lowbridge.dns.server``), which
also relays the ports published on ``[::1]`` (:mod:`lowbridge.proxy`).

One per host (per state root), started on demand by lowbridge commands (:mod:`.control`), run in
the host's namespaces.  It answers on one UDP and one TCP socket per sandbox, each bound to
127.0.0.11:<port> *inside* that sandbox's network namespace (a socket belongs to the namespace
it was created in), so a query's socket tells which sandbox asked and every sandbox sees only its
own networks' names.  Rules in the sandbox (:mod:`.redirect`) send 127.0.0.11:53 there.

* Records come from the store: each ``sync`` message (sent by lowbridge after every committed
  change, while it still holds the host lock) re-reads it, so a connect or disconnect is
  answered accordingly before the command returns.
* Sockets arrive from lowbridge commands over ``/run/lowbridge/dns.sock`` (SCM_RIGHTS), bound
  by the command that made the endpoint; after a restart the resolver binds the persisted ports
  itself.  Its sockets pin their namespaces (dns-notes 5.1), so it drops a sandbox's sockets as
  soon as the store or the namespace says the sandbox is gone (checked every second too).
* Names it does not own go to the upstream servers: the host's resolv.conf servers queried from
  the host's namespace, ``--dns`` servers from the sandbox's (Docker 26+); SERVFAIL when none
  answers; sandboxes on internal networks only do not reach the host's servers.
* It exits once no sandbox needs it (for names or for a ``[::1]`` port).

It imports no pyroute2 and no DNS library unless a query needs the library path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import resource
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field

from lowbridge import proxy, sandbox
from lowbridge.config import Paths
from lowbridge.dns import control, records, relay, wire
from lowbridge.dns.records import REFUSED, SERVFAIL, View
from lowbridge.dns.redirect import bind_sockets
from lowbridge.errors import LowbridgeError
from lowbridge.kernel import netns

log = logging.getLogger("lowbridge-dns")
FORWARD_TIMEOUT = 4.0  # per upstream server (Docker's extIOTimeout)
MAX_INFLIGHT = 1024  # concurrent forwarded queries; beyond it REFUSED (Docker's maxConcurrent)
TCP_IDLE = 10.0
GC_INTERVAL = 1.0
# Answers kept for repeated questions (Resolver.answer); past this many the memo starts over.
ANSWERS_KEPT = 4096


@dataclass
class Bound:
    """A sandbox's sockets."""

    cid: str
    netns: str
    ino: tuple[int, int]
    udp: socket.socket
    tcp: socket.socket
    server: asyncio.AbstractServer | None = None
    tasks: set = field(default_factory=set)


class Resolver:
    def __init__(self, paths: Paths, listener: socket.socket):
        self.paths = paths
        self.listener = listener
        self.bound: dict[str, Bound] = {}
        self.views: dict[str, View] = {}
        # (container id, tcp, query without its ID) -> answer without its ID; emptied whenever
        # the views are rebuilt.
        self.answers: dict[tuple[str, bool, bytes], bytes] = {}
        self.inflight = 0
        self.store = None
        self.builder = records.Builder()
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        # LOWBRIDGE_DNS_CODEC=library: dnspython for every answer (bench/dns.py compares).
        self.library_only = os.environ.get("LOWBRIDGE_DNS_CODEC") == "library"
        self.idle_exit = False
        # The generation commands move on after each message they do not wait for
        # (control.bump): a query looks at it before answering (a memory read).
        self.generation = control.generation_map(paths)
        self.generation_seen = self.generation[:]
        # Ports published on [::1]: relayed from here (lowbridge.proxy).
        self.relays = relay.Relays(self.loop)

    # ------------------------------------------------------------------ state
    def sync(self, adopted: dict[str, tuple[socket.socket, socket.socket]]) -> None:
        """Re-read the store; take adopted sockets; bind what is missing; drop what is gone."""
        from lowbridge.store import open_store

        if self.store is None:  # kept open: a sync is on every command's path
            self.store = open_store(self.paths)
        view = self.store.view()
        host = [s for s in sandbox.host_nameservers(sandbox.read_host_resolv_conf()) if _valid(s)]
        seen = self.builder.containers  # the records the last sync saw, by id
        self.views = self.builder.build(view.networks, view.containers, view.endpoints, host)
        self.answers.clear()
        self.relays.sync(proxy.wanted(view))
        by_id = self.builder.containers
        for cid, (u, t) in adopted.items():
            ctr = by_id.get(cid)
            if ctr is None or cid not in self.views:
                u.close()
                t.close()
                continue
            self.drop(cid)
            self.serve(Bound(cid, ctr.netns, _ino(ctr.netns), u, t))
        # A namespace replaced under an unchanged record is found by gc() within GC_INTERVAL
        # (a stat per sandbox: ~2.5 ms at 1000, too much for every command).
        for cid in list(self.bound):
            b = self.bound[cid]
            if cid not in self.views or (
                seen.get(cid) is not by_id[cid] and _ino(b.netns) != b.ino
            ):
                self.drop(cid)
        for cid in self.views:
            if cid in self.bound:
                continue
            ctr = by_id[cid]
            try:  # a restart: bind the ports the sandbox's DNAT rule points at
                u, t = netns.run(lambda c=ctr: bind_sockets(*c.dns_ports), ctr.netns)
                self.serve(Bound(cid, ctr.netns, _ino(ctr.netns), u, t))
            except OSError as exc:
                log.warning("%s: cannot bind %s in %s: %s", ctr.name, ctr.dns_ports, ctr.netns, exc)

    def serve(self, b: Bound) -> None:
        self.bound[b.cid] = b
        self.loop.add_reader(b.udp.fileno(), self.on_udp, b)
        task = self.loop.create_task(self._serve_tcp(b))
        b.tasks.add(task)
        task.add_done_callback(b.tasks.discard)

    async def _serve_tcp(self, b: Bound) -> None:
        b.server = await asyncio.start_server(
            lambda r, w: self.on_tcp(b, r, w), sock=b.tcp, backlog=128
        )

    def drop(self, cid: str) -> None:
        """Close a sandbox's sockets (which lets a deleted namespace go, with its veths)."""
        b = self.bound.pop(cid, None)
        if b is None:
            return
        self.loop.remove_reader(b.udp.fileno())
        b.udp.close()
        if b.server is not None:
            b.server.close()
        else:
            b.tcp.close()
        for task in list(b.tasks):
            task.cancel()

    def gc(self) -> None:
        for cid, b in list(self.bound.items()):
            if _ino(b.netns) != b.ino:
                log.info("sandbox %s: namespace %s gone", cid[:12], b.netns)
                self.drop(cid)

    # ------------------------------------------------------------------ control socket
    def on_control(self) -> None:
        """Take every pending control message, sync once for all of them, answer those that
        want a reply."""
        self.generation_seen = self.generation[:]  # before accepting: a later bump re-checks
        pending: list[tuple[socket.socket, dict]] = []
        adopted: dict[str, tuple[socket.socket, socket.socket]] = {}
        while self.listener.fileno() != -1:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("control: accept: %s", exc)
                break
            conn.settimeout(5)
            try:
                msg, socks = self._receive(conn)
            except EOFError:  # connected and closed: control.running() asking if we are up
                conn.close()
                continue
            except (OSError, ValueError) as exc:
                log.warning("control: %s", exc)
                conn.close()
                continue
            for cid, pair in socks.items():
                old = adopted.pop(cid, None)  # a later message's sockets win
                for sock in old or ():
                    sock.close()
                adopted[cid] = pair
            pending.append((conn, msg))
        if not pending:
            return
        if not adopted and all(msg.get("op") == "status" for _, msg in pending):
            # Only asked what it serves (``lowbridge check``): no re-read, no binding.
            reply = {"ok": True, "pid": os.getpid(), "sandboxes": sorted(self.bound)}
            for conn, _ in pending:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                conn.close()
            return
        try:
            try:
                self.sync(adopted)
            except (OSError, ValueError, LowbridgeError) as exc:  # e.g. the cluster store down
                log.warning("control: %s", exc)
                return
            reply = {"ok": True, "pid": os.getpid(), "sandboxes": sorted(self.bound)}
            if not self.views and not self.bound and not self.relays.active:
                # Nothing left to serve.  The sender holds the host lock, so no other command
                # is about to hand us a sandbox: leave now (path first, then the reply).
                self.idle_exit = True
                self.shutdown()
                self.stop.set()
                reply["exiting"] = True
            for conn, msg in pending:
                if msg.get("reply", True):
                    with contextlib.suppress(OSError):
                        conn.sendall(json.dumps(reply).encode() + b"\n")
        finally:
            for conn, _ in pending:
                conn.close()

    def _receive(self, conn: socket.socket) -> tuple[dict, dict]:
        """One control message and the sockets it hands over (container id -> (udp, tcp))."""
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 256)
        socks = [socket.socket(fileno=fd) for fd in fds]
        if not data and not socks:
            raise EOFError
        try:
            msg = json.loads(data)
        except ValueError:
            for s in socks:
                s.close()
            raise
        adopted = {}
        for cid, (i, j) in msg.get("adopt", {}).items():
            adopted[cid] = (socks[i], socks[j])
            for s in adopted[cid]:
                s.setblocking(False)
        return msg, adopted

    # ------------------------------------------------------------------ queries
    def answer(self, b: Bound, data: bytes, tcp: bool) -> bytes | None:
        """The local answer, None to forward, b"" to drop.

        Pending control messages come first: a command does not wait for its sync to be
        applied (control.sync), so a query it caused -- or any query sent after it returned --
        may be ready at the same time as its message, and must see its change.  The command
        moves the shared generation on after sending; a query that sees it moved takes the
        pending messages first.  (An accept() per query instead halved the queries/s.)

        A question asked again of the same view gets the answer it got before with the new ID
        (the answer depends on nothing else the query carries): ~0.5 us instead of ~12 us to
        parse, decide and build here, which a resolver serving ~30k queries/s spends per query.
        Only the fast path's answers with at most one record are kept (shuffled addresses are
        not), and :meth:`sync` empties the memo with the views it rebuilds."""
        if self.generation[:] != self.generation_seen:
            self.on_control()
        view = self.views.get(b.cid)
        if view is None:
            return b""
        key = (b.cid, tcp, data[2:])
        kept = self.answers.get(key)
        if kept is not None:
            return data[:2] + kept
        q = None if self.library_only else wire.parse(data)
        if q is not None:
            result = records.decide(view, q.qname, q.qtype)
            if result is None:
                return None
            reply = wire.build(q, result, tcp)
            if len(result.records) < 2:  # several addresses are shuffled per answer: not kept
                if len(self.answers) >= ANSWERS_KEPT:
                    self.answers.clear()
                self.answers[key] = reply[2:]
            return reply
        return wire.library_respond(data, lambda n, t: records.decide(view, n, t), tcp)

    def on_udp(self, b: Bound) -> None:
        for _ in range(64):  # bounded, so one busy sandbox cannot starve the others
            try:
                data, addr = b.udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            reply = self.answer(b, data, tcp=False)
            if reply is None:
                self._spawn(b, self._forward_udp(b, data, addr))
            elif reply:
                with contextlib.suppress(OSError):
                    b.udp.sendto(reply, addr)

    def _spawn(self, b: Bound, coro) -> None:  # noqa: ANN001
        task = self.loop.create_task(coro)
        b.tasks.add(task)
        task.add_done_callback(b.tasks.discard)

    async def _forward_udp(self, b: Bound, data: bytes, addr) -> None:  # noqa: ANN001
        reply = await self.forward(b, data, tcp=False)
        if reply and b.cid in self.bound:
            with contextlib.suppress(OSError):
                b.udp.sendto(reply, addr)

    async def on_tcp(self, b: Bound, reader, writer) -> None:  # noqa: ANN001
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                data = await asyncio.wait_for(
                    reader.readexactly(struct.unpack("!H", head)[0]), TCP_IDLE
                )
                reply = self.answer(b, data, tcp=True)
                if reply is None:
                    reply = await self.forward(b, data, tcp=True)
                if not reply:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def forward(self, b: Bound, data: bytes, tcp: bool) -> bytes:
        """Ask the sandbox's upstream servers in turn (Docker's forwardExtDNS); the first good
        reply is relayed verbatim, else SERVFAIL."""
        view = self.views.get(b.cid)
        qid = wire.query_id(data)
        if view is None or qid is None:
            return b""
        if self.inflight >= MAX_INFLIGHT:
            return _error(data, REFUSED)
        self.inflight += 1
        try:
            for server in view.upstreams if view.forward else []:
                in_sandbox = view.upstreams_in_sandbox
                try:
                    reply = await asyncio.wait_for(
                        self._exchange(server, data, tcp, b.netns if in_sandbox else None),
                        FORWARD_TIMEOUT,
                    )
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                    log.debug("upstream %s: %s", server, exc)
                    continue
                if wire.response_ok(reply, qid):
                    return reply
        finally:
            self.inflight -= 1
        return _error(data, SERVFAIL)

    async def _exchange(self, server: str, data: bytes, tcp: bool, ns: str | None) -> bytes:
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM

        def make() -> socket.socket:
            s = socket.socket(family, kind)
            s.setblocking(False)
            return s

        # --dns servers are queried from the sandbox's namespace (a thread joins it to create
        # the socket; the socket stays there).
        sock = netns.run(make, ns)
        try:
            await self.loop.sock_connect(sock, (server, 53))
            if tcp:
                await self.loop.sock_sendall(sock, struct.pack("!H", len(data)) + data)
                head = await _recv_exactly(self.loop, sock, 2)
                return await _recv_exactly(self.loop, sock, struct.unpack("!H", head)[0])
            await self.loop.sock_sendall(sock, data)
            qid = wire.query_id(data)
            while True:  # ignore stray datagrams (a late answer to someone else)
                reply = await self.loop.sock_recv(sock, 65535)
                if wire.query_id(reply) == qid:
                    return reply
        finally:
            sock.close()

    # ------------------------------------------------------------------ life
    async def run(self) -> None:
        self.listener.setblocking(False)
        self.loop.add_reader(self.listener.fileno(), self.on_control)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop.set)
        # No sync yet: whoever started us has a sync (with the sandbox's sockets) queued.
        while not self.stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), GC_INTERVAL)
            self.gc()
            if not self.bound and not self.views and not self.relays.active and self._may_exit():
                break
        if not self.idle_exit:
            self.shutdown()

    def _may_exit(self) -> bool:
        """Idle: exit, but only while no lowbridge command is mid-change (it may be about to
        hand us a sandbox): take the host lock without waiting, and check the store again.
        The lock stays held until the process has gone."""
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.sync({})
        if self.views or self.relays.active:
            os.close(fd)
            return False
        return True

    def shutdown(self) -> None:
        """Stop answering: the control socket's path first (so the next command starts a new
        resolver), then every sandbox socket."""
        from lowbridge.dns import control

        with contextlib.suppress(FileNotFoundError):
            os.unlink(control.socket_path(self.paths))
        self.loop.remove_reader(self.listener.fileno())
        self.listener.close()
        self.relays.close()
        for cid in list(self.bound):
            self.drop(cid)


async def _recv_exactly(loop, sock: socket.socket, n: int) -> bytes:  # noqa: ANN001
    buf = b""
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise asyncio.IncompleteReadError(buf, n)
        buf += chunk
    return buf


def _error(data: bytes, rcode: int) -> bytes:
    q = wire.parse(data)
    if q is not None:
        return wire.error(q, rcode)
    return wire.library_error(data, rcode)


def _valid(server: str) -> bool:
    try:
        ipaddress.ip_address(server)
    except ValueError:
        return False
    return True


def _ino(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_dev, st.st_ino)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lowbridge-dns")
    parser.add_argument("--state", default=Paths.state, help="lowbridge's state directory")
    parser.add_argument("--run", default=Paths.run, help="lowbridge's runtime directory")
    parser.add_argument("--listen-fd", type=int, required=True, help="inherited control socket")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s lowbridge-dns: %(message)s"
    )
    # Two descriptors per sandbox, plus clients and forwarded queries (dns-notes 5.7).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listener = socket.socket(fileno=args.listen_fd)

    async def go() -> None:
        await Resolver(Paths(state=args.state, run=args.run), listener).run()

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
