"""Connection tracking: forget flows that NAT decided before a rule changed (ctnetlink by hand).

NAT is decided on a flow's first packet: a flow that began before a DNAT rule existed (a UDP
"connection" to a port published later, an old flow to a reused container address) keeps
bypassing it until its entry expires.  Docker deletes such entries after programming ports
(moby clearConntrackEntries; #8795, #44688).

The messages are encoded here (linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h): importing
pyroute2's conntrack module took ~46 ms of every ``rm`` and ``disconnect`` on a host that tracks
anything (bench/cli.py); tests/integration/test_netlink_fast.py checks the result against
pyroute2's Conntrack.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Iterator

from lowbridge.errors import KernelError
from lowbridge.kernel import netfilter
from lowbridge.kernel.wire import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    SEQ,
    attributes,
    errno_of,
    messages,
)

ENOENT = 2
AF_INET = socket.AF_INET


def _conntrack_count() -> int | None:
    """Entries in this namespace's conntrack table (/proc/sys/net resolves per namespace)."""
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def flush(
    *,
    dst: str | None = None,
    proto: str | None = None,
    dport: int | None = None,
    dsts: Iterable[str] = (),
    ipv6: bool = False,
) -> int:
    """Delete the conntrack entries of this namespace whose original direction matches (``dst``,
    ``proto``, ``dport``; or any of the addresses ``dsts``, IPv4 or IPv6); return how many went.

    One dump per family (it walks the kernel's whole table) matched here, then the deletions in
    one send.  IPv6's table is read only for an IPv6 address, or with ``ipv6`` (a port's flows
    on both families).
    """
    if _conntrack_count() == 0:
        return 0  # nothing tracked in this namespace: skip the socket and the dump (~15 ms)
    addresses = [*dsts, *([dst] if dst else [])]
    wanted = {
        4: {socket.inet_aton(a) for a in addresses if ":" not in a},
        6: {socket.inet_pton(AF_INET6, a) for a in addresses if ":" in a},
    }
    families = [f for f in (4, 6) if wanted[f] or not addresses and (f == 4 or ipv6)]
    number = {"udp": socket.IPPROTO_UDP, "tcp": socket.IPPROTO_TCP}.get(proto or "")
    port = struct.pack(">H", dport) if dport else None
    count = 0
    try:
        with netfilter.kept("conntrack") as sock:  # (not closed: see kept)
            for family in families:
                doomed = [
                    keys
                    for keys, address, protonum, dest_port in _ct_entries(sock, family)
                    if (not wanted[family] or address in wanted[family])
                    and (number is None or protonum == number)
                    and (port is None or dest_port == port)
                ]
                count += _ct_delete(sock, doomed, family)
    except OSError as exc:
        raise KernelError.from_os("flush conntrack entries", exc) from None
    return count


# ctnetlink (linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h): a message is an nlmsghdr of
# type (NFNL_SUBSYS_CTNETLINK << 8) | command, an nfgenmsg (family, version, resource id, big
# endian), then attributes; an entry's CTA_TUPLE_ORIG nests CTA_TUPLE_IP (CTA_IP_V4_DST) and
# CTA_TUPLE_PROTO (CTA_PROTO_NUM, CTA_PROTO_DST_PORT, big endian).  A deletion names the entry by
# its original tuple and zone, sent back as the dump gave them.
_CT_GET, _CT_DELETE = (1 << 8) | 1, (1 << 8) | 2
CTA_TUPLE_ORIG, CTA_ZONE = 1, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO, CTA_IP_V4_DST, CTA_IP_V6_DST = 1, 2, 2, 4
CTA_PROTO_NUM, CTA_PROTO_DST_PORT = 1, 3
AF_INET6 = socket.AF_INET6
# Per IP family: the nfgenmsg, the destination address attribute and its length.
_FAMILY = {
    4: (struct.pack("BBH", AF_INET, 0, 0), CTA_IP_V4_DST, 4),
    6: (struct.pack("BBH", AF_INET6, 0, 0), CTA_IP_V6_DST, 16),
}


def _ct_entries(
    sock: socket.socket, family: int = 4
) -> Iterator[tuple[bytes, bytes, int | None, bytes | None]]:
    """Dump this namespace's conntrack entries of IP ``family``: (the attributes that name the
    entry, original destination address, protocol number, destination port)."""
    nfgen, dst_attr, size = _FAMILY[family]
    seq = next(SEQ)
    sock.send(NLMSGHDR.pack(20, _CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + nfgen)
    while True:
        data = sock.recv(1 << 20)
        for offset, length, mtype, rseq in messages(data):
            if rseq != seq:
                continue
            if mtype == NLMSG_DONE:
                return
            if mtype == NLMSG_ERROR:
                code = errno_of(data, offset)
                if code:
                    raise OSError(code, os.strerror(code))
                return
            attrs = attributes(data[offset + 20 : offset + length])
            orig = attrs.get(CTA_TUPLE_ORIG)
            if orig is not None:
                tup = attributes(orig[4:])
                ip = attributes(tup.get(CTA_TUPLE_IP, b"")[4:]).get(dst_attr, b"")[4 : 4 + size]
                l4 = attributes(tup.get(CTA_TUPLE_PROTO, b"")[4:])
                num, dport = l4.get(CTA_PROTO_NUM), l4.get(CTA_PROTO_DST_PORT)
                yield (
                    orig + attrs.get(CTA_ZONE, b""),
                    ip,
                    num[4] if num else None,
                    dport[4:6] if dport else None,
                )


def _ct_delete(sock: socket.socket, doomed: list[bytes], family: int = 4) -> int:
    """Delete the entries named by ``doomed`` (one send per 256); return how many went (one
    that expired meanwhile, ENOENT, is not counted)."""
    count = 0
    for start in range(0, len(doomed), 256):
        seqs, parts = set(), []
        for keys in doomed[start : start + 256]:
            seq = next(SEQ)
            seqs.add(seq)
            body = _FAMILY[family][0] + keys
            parts.append(
                NLMSGHDR.pack(16 + len(body), _CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body
            )
        sock.send(b"".join(parts))
        while seqs:
            data = sock.recv(1 << 16)
            for offset, _, mtype, rseq in messages(data):
                if mtype == NLMSG_ERROR and rseq in seqs:
                    seqs.discard(rseq)
                    code = errno_of(data, offset)
                    if code == 0:
                        count += 1
                    elif code != ENOENT:
                        raise OSError(code, os.strerror(code))
    return count
