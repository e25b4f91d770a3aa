"""The rules inside a sandbox that send 127.0.0.11:53 to the resolver's ports.

Docker installs DNAT (nat OUTPUT) plus SNAT (nat POSTROUTING) rules in each container
(moby ``setupIptablesNAT``, docker-mechanics 3.2).  A nat rule turns connection tracking on for
the whole namespace (the kernel registers conntrack's hooks in a netns when a ruleset first
needs them), so every packet of the container then pays a conntrack lookup: measured here, DNAT
plus conntrack cost ~17 % of the resolver's queries/s (dns-notes 4) and ~5 % of an overlay
sandbox's TCP throughput (bench/datapath.py, rules toggled on the same sandboxes).

With nftables lowbridge therefore rewrites the ports statelessly instead: one filter chain at the
raw priority of the output hook (queries and answers are both sent from inside the sandbox) changes
127.0.0.11's port 53 into the resolver's port on the way in and back on the way out, and marks
those packets ``notrack`` (without it, a sandbox that turns conntrack on for itself would see the
answers as new flows: the rewrite runs before conntrack).  No nat rule, so no conntrack: the
sandbox's other packets cost one chain of four address compares.  What the client sees is the same
as with DNAT -- an answer from 127.0.0.11:53 -- with one difference: while no resolver holds the
port, the kernel's ICMP port-unreachable quotes the rewritten port, which a connected UDP socket
does not recognise, so a query times out instead of failing at once (TCP is refused at once: the
RST is rewritten like any answer).  The resolver is restarted on the same ports by the next
lowbridge command (:mod:`.control`).

The iptables backend installs the DNAT half of Docker's rules (xtables cannot rewrite a port
without NAT).  Docker's SNAT half never matches: conntrack already rewrites the replies' source
back to :53 (dns-notes 1.4 measured its counters at 0).  Either way the random ports leave port 53
free for a DNS server of the sandbox's own, even one bound to 0.0.0.0:53 (dns-notes 1.4-1.5).

A sandbox may ask for its resolver at one more address, its network's gateway (a CNI
configuration's ``dns: gateway``, where aardvark-dns answers for Podman).  Its queries must then
change address, not only port -- from a routed address to a local one, which only a nat (or
route) chain may do and have the packet routed again -- and the answers must be told apart by
flow: so such a sandbox gets Docker's DNAT for both addresses, with nftables too, and has
conntrack on.

The rules are rendered here as text (pure) and loaded in one call from a thread that has joined
the sandbox's namespace (:func:`apply`), with the host firewall's backend.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket

from lowbridge.dns import ADDRESS
from lowbridge.errors import KernelError
from lowbridge.firewall import tool
from lowbridge.firewall.nftables import FD_SETSIZE

NFT_TABLE = "lowbridge_dns"
IPT_CHAIN = "LOWBRIDGE-DNS"
COMMENT = "lowbridge: embedded DNS"


def bind_sockets(udp_port: int = 0, tcp_port: int = 0) -> tuple[socket.socket, socket.socket]:
    """Non-blocking UDP and TCP sockets on 127.0.0.11 in the calling thread's network namespace
    (port 0: the kernel picks from ip_local_port_range, as Docker's resolver does)."""
    u = _lifted(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    t = _lifted(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        u.bind((ADDRESS, udp_port))
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((ADDRESS, tcp_port))
        t.listen(128)
    except OSError:
        u.close()
        t.close()
        raise
    u.setblocking(False)
    t.setblocking(False)
    return u, t


def _lifted(sock: socket.socket) -> socket.socket:
    """``sock`` moved to a descriptor numbered FD_SETSIZE or more, when the limit allows.

    A batch holds these two sockets per sandbox until its commit; kept above FD_SETSIZE they
    leave the low numbers to libnftables, which cannot use a socket numbered 1024 or more
    (:data:`lowbridge.firewall.nftables.FD_SETSIZE`).  Under the usual soft limit of 1024 the
    socket stays where it is (F_DUPFD fails with EINVAL)."""
    try:
        fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, FD_SETSIZE)
    except OSError:
        return sock
    sock.close()
    return socket.socket(fileno=fd)


def listen(backend: str, also: str | None = None) -> tuple[socket.socket, socket.socket]:
    """In a thread inside a sandbox: bind the resolver's sockets and install the redirect to
    them (from ``also``:53 too); nothing is left behind on failure."""
    u, t = bind_sockets()
    try:
        apply(backend, u.getsockname()[1], t.getsockname()[1], also)
    except BaseException:
        u.close()
        t.close()
        raise
    return u, t


def render_nft(udp: int, tcp: int, also: str | None = None) -> str:
    """Stateless: 127.0.0.11's port 53 <-> the resolver's ports, per protocol; with ``also``,
    DNAT from both addresses instead (module docstring)."""

    def pair(proto: str, port: int) -> str:
        return (
            f"\t\tip daddr {ADDRESS} {proto} dport 53 {proto} dport set {port} notrack "
            f'comment "{COMMENT}"\n'
            f"\t\tip saddr {ADDRESS} {proto} sport {port} {proto} sport set 53 notrack "
            f'comment "{COMMENT}"\n'
        )

    def dnat(address: str) -> str:
        return "".join(
            f"\t\tip daddr {address} {proto} dport 53 dnat to {ADDRESS}:{port} "
            f'comment "{COMMENT}"\n'
            for proto, port in (("udp", udp), ("tcp", tcp))
        )

    if also is None:
        hook, rules = "type filter hook output priority raw", pair("udp", udp) + pair("tcp", tcp)
    else:  # (dstnat names prerouting's priority only)
        hook, rules = "type nat hook output priority -100", dnat(ADDRESS) + dnat(also)
    return (
        f"table ip {NFT_TABLE} {{\n\tchain output {{\n\t\t{hook}; policy accept;\n{rules}\t}}\n}}\n"
    )


def render_iptables(udp: int, tcp: int, also: str | None = None) -> str:
    comment = f'-m comment --comment "{COMMENT}"'
    lines = ["*nat", f":{IPT_CHAIN} - [0:0]"]
    for address in (ADDRESS, *([also] if also else [])):
        dst = f"-d {address}/32"
        lines += [
            f"-A OUTPUT {dst} {comment} -j {IPT_CHAIN}",
            f"-A {IPT_CHAIN} {dst} -p udp -m udp --dport 53 {comment} "
            f"-j DNAT --to-destination {ADDRESS}:{udp}",
            f"-A {IPT_CHAIN} {dst} -p tcp -m tcp --dport 53 {comment} "
            f"-j DNAT --to-destination {ADDRESS}:{tcp}",
        ]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def apply(backend: str, udp: int, tcp: int, also: str | None = None) -> None:
    """Install the rules in the calling thread's namespace (a fresh sandbox: nothing to replace).

    Must run in a thread that joined the sandbox (``netns.run_in``): the nft library opens its
    netlink socket, and iptables-restore is forked, from that thread.
    """
    if backend == "nftables":
        _nft(render_nft(udp, tcp, also), "install DNS redirect")
    else:
        tool.run(["iptables-restore", "--noflush"], render_iptables(udp, tcp, also),
                 "install DNS redirect", "iptables")  # fmt: skip


def remove(backend: str, also: str | None = None) -> None:
    """Remove the rules from the calling thread's namespace (for undo and adopted namespaces;
    ``also``: the other address they were installed for)."""
    if backend == "nftables":
        with contextlib.suppress(KernelError):  # not there (nft 1.0.6 has no "destroy")
            _nft(f"delete table ip {NFT_TABLE}\n", "remove DNS redirect")
        return
    jumps = "".join(f'-D OUTPUT -d {a}/32 -m comment --comment "{COMMENT}" -j {IPT_CHAIN}\n'
                    for a in (ADDRESS, *([also] if also else [])))  # fmt: skip
    script = f"*nat\n:{IPT_CHAIN} - [0:0]\n{jumps}-X {IPT_CHAIN}\nCOMMIT\n"
    with contextlib.suppress(KernelError):  # not there: nothing to remove
        tool.run(["iptables-restore", "--noflush"], script, "remove DNS redirect", "iptables")


def _nft(script: str, what: str) -> None:
    from lowbridge.firewall import nftables

    nftables.run_script(script, what)
