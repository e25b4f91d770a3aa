"""Has anyone changed the packet filter since lowbridge last did?  Answered in microseconds.

lowbridge keeps a record of the rules it applied and brings the kernel from that record to the
new rules with the fewest changes (:mod:`lowbridge.firewall`).  The record is only worth trusting
while nothing else touched the ruleset (``iptables -F``, ``nft flush ruleset``, a deleted hook):
these two readings tell, without listing a single rule.

* nftables -- and iptables-nft, which is nftables underneath -- count every committed change
  of a namespace's ruleset in its *generation id* (``NFT_MSG_GETGEN``, linux/netfilter/
  nf_tables.h; nf_tables_api.c bumps ``net->nft.base_seq`` on every commit, reads do not).
* legacy xtables has no such counter; ``IPT_SO_GET_INFO`` (linux/netfilter_ipv4/ip_tables.h)
  gives each table's entry count and blob size, which a flush or a deleted rule changes.  Asking
  instantiates the table in the namespace, so only the legacy backend asks.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from lowbridge.kernel.wire import NLM_F_REQUEST, NLMSGHDR, SEQ, attributes, messages

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN, NFT_MSG_NEWGEN = 16, 15
NFTA_GEN_ID = 1
IPT_SO_GET_INFO = 64
_IPT_GETINFO = 84  # struct ipt_getinfo: name[32], valid_hooks, hook_entry[5], underflow[5],
#                    num_entries, size

_libc = ctypes.CDLL(None, use_errno=True)


def generation() -> int | None:
    """The nftables ruleset generation of the caller's network namespace (None: no nftables)."""
    try:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
        )
    except OSError:
        return None
    with sock:
        seq = next(SEQ)
        body = struct.pack("BBH", socket.AF_UNSPEC, 0, 0)  # nfgenmsg
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
        sock.send(NLMSGHDR.pack(16 + len(body), kind, NLM_F_REQUEST, seq, 0) + body)
        data = sock.recv(4096)
    for offset, length, mtype, rseq in messages(data):
        if rseq == seq and mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
            found = attributes(data[offset + 20 : offset + length]).get(NFTA_GEN_ID)
            if found is not None:
                return struct.unpack_from(">I", found, 4)[0]
    return None


def legacy_tables(tables: tuple[str, ...]) -> tuple[tuple[int, int] | None, ...]:
    """(entries, size) of each legacy xtables table, None for one the kernel does not have."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        for table in tables:
            buf = ctypes.create_string_buffer(table.encode(), _IPT_GETINFO)
            size = ctypes.c_uint(_IPT_GETINFO)
            if (
                _libc.getsockopt(
                    sock.fileno(), socket.IPPROTO_IP, IPT_SO_GET_INFO, buf, ctypes.byref(size)
                )
                != 0
            ):
                out.append(None)
                continue
            out.append(struct.unpack_from("II", buf.raw, _IPT_GETINFO - 8))
    return tuple(out)
