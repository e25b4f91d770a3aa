"""A tiny authoritative DNS server for tests: ``python dns_upstream.py ADDR NAME=IP ...``.

Answers A queries for the given names (UDP and TCP, port 53), NXDOMAIN for anything else, and
prints "ready" once both sockets are bound.  It plays "the host's upstream resolver" in an outside
namespace, or a sandbox's own DNS server on port 53.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading

import dns.message
import dns.rcode
import dns.rrset


def answer(data: bytes, table: dict[str, str]) -> bytes:
    query = dns.message.from_wire(data)
    resp = dns.message.make_response(query)
    q = query.question[0]
    ip = table.get(q.name.to_text(omit_final_dot=True).lower())
    if ip and q.rdtype == 1:
        resp.answer.append(dns.rrset.from_text(q.name, 60, "IN", "A", ip))
    elif not ip:
        resp.set_rcode(dns.rcode.NXDOMAIN)
    return resp.to_wire()


def main() -> None:
    addr = sys.argv[1]
    table = dict(item.split("=", 1) for item in sys.argv[2:])
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((addr, 53))
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((addr, 53))
    tcp.listen(16)

    def serve_tcp() -> None:
        while True:
            conn, _ = tcp.accept()
            with conn:
                head = conn.recv(2)
                if len(head) < 2:
                    continue
                data = b""
                while len(data) < struct.unpack("!H", head)[0]:
                    data += conn.recv(65535)
                reply = answer(data, table)
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    threading.Thread(target=serve_tcp, daemon=True).start()
    print("ready", flush=True)
    while True:
        data, peer = udp.recvfrom(65535)
        udp.sendto(answer(data, table), peer)


if __name__ == "__main__":
    main()
