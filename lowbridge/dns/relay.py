"""The helper process's relays of the ports published on ``[::1]`` (what they are and why:
:mod:`lowbridge.proxy`): TCP per connection, UDP per client address."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

from lowbridge.proxy import LOOPBACK, Target

log = logging.getLogger("lowbridge-dns")
UDP_IDLE = 30.0  # seconds a UDP client's relay socket lives without traffic
CONNECT_TIMEOUT = 5.0


class Relays:
    """The loopback listeners of the helper process, kept in line with :func:`wanted`."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.targets: dict[tuple[int, str], Target] = {}
        self.servers: dict[tuple[int, str], object] = {}  # an asyncio Server or transport

    @property
    def active(self) -> bool:
        return bool(self.servers)

    def sync(self, want: dict[tuple[int, str], Target]) -> None:
        """Close the listeners no longer wanted (or whose target moved), open the new ones.
        A new port is bound and listening when this returns (a client may connect at once:
        the kernel queues it); the relay starts serving it from the event loop."""
        for key in [k for k in self.servers if self.targets.get(k) != want.get(k)]:
            self._close(key)
        for key, target in want.items():
            if key in self.servers:
                continue
            try:
                sock = _listen(*key)
            except OSError as exc:
                log.warning("[::1]:%s/%s: cannot listen: %s", *key, exc)
                continue
            self.targets[key], self.servers[key] = target, sock
            self.loop.create_task(self._serve(key, sock, target))

    async def _serve(self, key: tuple[int, str], sock: socket.socket, target: Target) -> None:
        if key[1] == "tcp":
            server = await asyncio.start_server(
                lambda r, w: self._relay_tcp(r, w, target), sock=sock
            )
        else:
            server, _ = await self.loop.create_datagram_endpoint(
                lambda: _UdpRelay(self.loop, target), sock=sock
            )
        if self.servers.get(key) is sock:
            self.servers[key] = server
        else:  # closed meanwhile
            server.close()

    def close(self) -> None:
        for key in list(self.servers):
            self._close(key)

    def _close(self, key: tuple[int, str]) -> None:
        server = self.servers.pop(key, None)  # a socket not served yet, or its server
        self.targets.pop(key, None)
        if server is not None:
            server.close()

    async def _relay_tcp(self, reader, writer, target: Target) -> None:  # noqa: ANN001
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(target.address, target.port), CONNECT_TIMEOUT
            )
        except (OSError, asyncio.TimeoutError):
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()


def _listen(port: int, proto: str) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET6, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        if proto == "tcp":
            sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _pipe(reader, writer) -> None:  # noqa: ANN001
    """Copy until end of file, then half-close the other side (its replies still flow)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError):
        writer.close()


class _UdpRelay(asyncio.DatagramProtocol):
    """A loopback UDP port: each client address gets a socket of its own towards the target,
    whose replies go back to that client; idle ones are closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Target):
        self.loop, self.target = loop, target
        self.transport: asyncio.DatagramTransport | None = None
        self.clients: dict[tuple, tuple[socket.socket, float]] = {}

    def connection_made(self, transport) -> None:  # noqa: ANN001
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        entry = self.clients.get(addr)
        if entry is None:
            family = socket.AF_INET6 if ":" in self.target.address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((self.target.address, self.target.port))
            self.loop.add_reader(sock.fileno(), self._reply, addr, sock)
        else:
            sock = entry[0]
        self.clients[addr] = (sock, time.monotonic())
        with contextlib.suppress(OSError):
            sock.send(data)
        self._expire()

    def _reply(self, addr: tuple, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            data = sock.recv(65536)
            if self.transport is not None:
                self.transport.sendto(data, addr)

    def _expire(self) -> None:
        now = time.monotonic()
        for addr, (sock, seen) in list(self.clients.items()):
            if now - seen > UDP_IDLE:
                self._drop(addr, sock)

    def _drop(self, addr: tuple, sock: socket.socket) -> None:
        self.loop.remove_reader(sock.fileno())
        sock.close()
        self.clients.pop(addr, None)

    def connection_lost(self, exc: Exception | None) -> None:
        for addr, (sock, _) in list(self.clients.items()):
            self._drop(addr, sock)
