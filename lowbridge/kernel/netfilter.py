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
NFNLGRP_NFTABLES = 7  # linux/netfilter/nfnetlink.h
IPT_SO_GET_INFO = 64
_IPT_GETINFO = 84  # struct ipt_getinfo: name[32], valid_hooks, hook_entry[5], underflow[5],
#                    num_entries, size

_libc = ctypes.CDLL(None, use_errno=True)


class Generation:
    """Reads the nftables ruleset generation of the network namespace it was first called in.

    It keeps its netlink socket for its own life: closing a NETLINK_NETFILTER socket runs
    nf_tables' release notifier (``nft_rcv_nl_event``, nf_tables_api.c), which flushes the
    destruction work a commit that deleted objects left (an RCU grace period, ~5 ms here), so a
    socket per reading right after lowbridge's own commit made every network rm wait for it."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None

    def __call__(self) -> int | None:
        """The generation now (None: no nftables here)."""
        if self._sock is None:
            try:
                self._sock = socket.socket(
                    socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
                )
            except OSError:
                return None
        seq = next(SEQ)
        body = struct.pack("BBH", socket.AF_UNSPEC, 0, 0)  # nfgenmsg
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
        self._sock.send(NLMSGHDR.pack(16 + len(body), kind, NLM_F_REQUEST, seq, 0) + body)
        while True:  # skip a late answer to a reading an exception cut short
            data = self._sock.recv(4096)
            found = [m for m in messages(data) if m[3] == seq]
            if found:
                break
        for offset, length, mtype, _ in found:
            if mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
                gen = attributes(data[offset + 20 : offset + length]).get(NFTA_GEN_ID)
                if gen is not None:
                    return struct.unpack_from(">I", gen, 4)[0]
        return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Commits:
    """The nf_tables commits of this network namespace as they happen, told apart by who made
    them (for :func:`lowbridge.firewall.tool.start`).

    Every commit sends one NEWGEN notification to the group NFNLGRP_NFTABLES (nf_tables_api.c,
    ``nf_tables_gen_notify``), from the port id of the socket that committed.  Netlink's autobind
    gives a process's first socket its pid as port id (af_netlink.c, ``netlink_autobind``:
    ``task_tgid_vnr``, in the pid namespace of that process -- a child's pid as its parent sees
    it), and the libmnl tools (iptables-nft, nft) commit on theirs.  (NFTA_GEN_PROC_PID names
    the process too, but in the initial pid namespace only.)  When that id was taken, the
    kernel picks another: the commits are then never seen, and the caller waits for the exit.

    Close it only after the tool exited: closing a NETLINK_NETFILTER socket waits for the
    destruction work the commit left (see :class:`Generation`)."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
        )
        try:
            self._sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def made_by(self, portid: int) -> int | None:
        """How many of the commits queued now came from ``portid`` (those read are gone); None
        when notifications were lost (the socket's buffer overflowed: a big change)."""
        count = 0
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return count
            except OSError:  # ENOBUFS
                return None
            for offset, _, mtype, _ in messages(data):
                mine = struct.unpack_from("=I", data, offset + 12)[0] == portid
                if mine and mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
                    count += 1

    def close(self) -> None:
        self._sock.close()


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
