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

It also keeps the process's own NETLINK_NETFILTER sockets to its end (:func:`kept`: closing
one after a deletion waits for nf_tables' destruction work) and watches the commits an
iptables-nft tool makes (:func:`commits`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator

from lowbridge.errors import LowbridgeError
from lowbridge.kernel.wire import NLM_F_REQUEST, NLMSGHDR, SEQ, attributes, messages

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN, NFT_MSG_NEWGEN = 16, 15
NFTA_GEN_ID = 1
NFNLGRP_NFTABLES = 7  # linux/netfilter/nfnetlink.h
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NETLINK_DROP_MEMBERSHIP = 270, 1, 2  # linux/netlink.h
IPT_SO_GET_INFO = 64
_IPT_GETINFO = 84  # struct ipt_getinfo: name[32], valid_hooks, hook_entry[5], underflow[5],
#                    num_entries, size

_libc = ctypes.CDLL(None, use_errno=True)


# A process's own NETLINK_NETFILTER sockets, one per purpose, left open to its end.
_KEPT: dict[str, tuple[socket.socket, threading.Lock]] = {}
_KEPT_LOCK = threading.Lock()
_HOME = os.readlink("/proc/self/ns/net")  # the namespace lowbridge was loaded in ("net:[…]")


@contextlib.contextmanager
def kept(purpose: str) -> Iterator[socket.socket]:
    """A NETLINK_NETFILTER socket for ``purpose`` in the calling thread's namespace, one user at
    a time.

    In the process's own namespace it is made once and left open to the process's end, when
    the kernel closes it: closing a NETLINK_NETFILTER socket runs nf_tables' release notifier
    (``nft_rcv_nl_event``, nf_tables_api.c), which flushes the destruction work that any commit
    deleting objects left -- an RCU grace period, ~15 ms here -- so a command that deleted rules
    would wait for it wherever it closed one (the conntrack walk after a teardown's deletions
    did).  Closed by the kernel at the exit, it waits only for what is left of the grace period
    then, while the interpreter has shut down meanwhile; a process that deleted nothing waits
    for nothing.  In another namespace (a sandbox's: a kept socket would keep it alive) the
    socket is made for the call and closed after.  OSError: none can be made (no netfilter).
    """
    if not at_home():
        with _nfnl_socket() as sock:
            yield sock
        return
    with _KEPT_LOCK:
        if not _KEPT:
            atexit.register(_leave_to_the_kernel)
        if purpose not in _KEPT:
            _KEPT[purpose] = (_nfnl_socket(), threading.Lock())
        sock, lock = _KEPT[purpose]
    with lock:
        try:
            yield sock
        except LowbridgeError:  # (its users raise these after a whole exchange)
            raise
        except BaseException:  # (a dump left half read, say: the next user gets a new one)
            with _KEPT_LOCK:
                del _KEPT[purpose]
            sock.close()
            raise


def at_home() -> bool:
    """Whether the calling thread is in the network namespace lowbridge was loaded in.  The
    main thread always is: lowbridge enters other namespaces only in worker threads
    (kernel.netns.submit); another thread's namespace is read (~3 us)."""
    if threading.current_thread() is threading.main_thread():
        return True
    return os.readlink("/proc/thread-self/ns/net") == _HOME


def _nfnl_socket() -> socket.socket:
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    )
    sock.bind((0, 0))  # a port id now: a socket without one gets no multicast (af_netlink.c)
    return sock


def _after_fork() -> None:
    """A forked child talks on sockets of its own: its copies of the parent's go (closing a
    copy releases nothing the parent holds)."""
    global _KEPT_LOCK
    _KEPT_LOCK = threading.Lock()
    for sock, _ in _KEPT.values():
        sock.close()
    _KEPT.clear()


os.register_at_fork(after_in_child=_after_fork)


def _leave_to_the_kernel() -> None:
    """At exit: the interpreter's shutdown must not close the kept sockets (see :func:`kept`)."""
    with _KEPT_LOCK:
        for sock, _ in _KEPT.values():
            sock.detach()
        _KEPT.clear()


def generation() -> int | None:
    """The nftables ruleset generation of the calling thread's namespace now (None: no
    nftables here)."""
    try:
        with kept("generation") as sock:
            seq = next(SEQ)
            body = struct.pack("BBH", socket.AF_UNSPEC, 0, 0)  # nfgenmsg
            kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
            sock.send(NLMSGHDR.pack(16 + len(body), kind, NLM_F_REQUEST, seq, 0) + body)
            while True:  # skip a late answer to a reading an exception cut short
                data = sock.recv(4096)
                found = [m for m in messages(data) if m[3] == seq]
                if found:
                    break
    except OSError:
        return None
    for offset, length, mtype, _ in found:
        if mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
            gen = attributes(data[offset + 20 : offset + length]).get(NFTA_GEN_ID)
            if gen is not None:
                return struct.unpack_from(">I", gen, 4)[0]
    return None


class Commits:
    """The nf_tables commits of this network namespace as they happen, told apart by who made
    them (for :func:`lowbridge.firewall.tool.start`; made by :func:`commits`).

    Every commit sends one NEWGEN notification to the group NFNLGRP_NFTABLES (nf_tables_api.c,
    ``nf_tables_gen_notify``), from the port id of the socket that committed.  Netlink's autobind
    gives a process's first socket its pid as port id (af_netlink.c, ``netlink_autobind``:
    ``task_tgid_vnr``, in the pid namespace of that process -- a child's pid as its parent sees
    it), and the libmnl tools (iptables-nft, nft) commit on theirs.  (NFTA_GEN_PROC_PID names
    the process too, but in the initial pid namespace only.)  When that id was taken, the
    kernel picks another: the commits are then never seen, and the caller waits for the exit."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def made_by(self, portid: int) -> int | None:
        """How many of the commits queued now came from ``portid`` (those read are gone); None
        when notifications were lost (the socket's buffer overflowed: a big change)."""
        count = 0
        while True:
            try:
                data = self._sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return count
            except OSError:  # ENOBUFS
                return None
            for offset, _, mtype, _ in messages(data):
                mine = struct.unpack_from("=I", data, offset + 12)[0] == portid
                if mine and mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
                    count += 1


@contextlib.contextmanager
def commits() -> Iterator[Commits]:
    """The namespace's commits from now on, within (the kept socket joins the group for them
    only: between watches nothing queues on it).  OSError: nf_tables sends none here."""
    with kept("commits") as sock:
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        try:
            while True:  # what the last watch left unread, or its overflow
                try:
                    sock.recv(1 << 16, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError as exc:  # (the overflow is said once, then reading goes on)
                    if exc.errno != errno.ENOBUFS:
                        raise
            yield Commits(sock)
        finally:
            sock.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, NFNLGRP_NFTABLES)


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
