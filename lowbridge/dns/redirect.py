"""The rule inside a sandbox that sends 127.0.0.11:53 to the resolver's ports.

Docker installs DNAT (nat OUTPUT) plus SNAT (nat POSTROUTING) rules in each container
(moby ``setupIptablesNAT``, docker-mechanics 3.2).  The SNAT half never matches: conntrack
already rewrites the replies' source back to :53 (dns-notes 1.4 measured its counters at 0), so
lowbridge installs the DNAT half only.  The random ports leave port 53 free for a DNS server of
the sandbox's own, even one bound to 0.0.0.0:53 (dns-notes 1.4-1.5).

The rules are rendered here as text (pure) and loaded in one call from a thread that has joined
the sandbox's namespace (:func:`apply`), with the host firewall's backend.
"""

from __future__ import annotations

import contextlib
import socket

from lowbridge.dns import ADDRESS
from lowbridge.errors import KernelError
from lowbridge.firewall import tool

NFT_TABLE = "lowbridge_dns"
IPT_CHAIN = "LOWBRIDGE-DNS"
COMMENT = "lowbridge: embedded DNS"


def bind_sockets(udp_port: int = 0, tcp_port: int = 0) -> tuple[socket.socket, socket.socket]:
    """Non-blocking UDP and TCP sockets on 127.0.0.11 in the calling thread's network namespace
    (port 0: the kernel picks from ip_local_port_range, as Docker's resolver does)."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
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


def listen(backend: str) -> tuple[socket.socket, socket.socket]:
    """In a thread inside a sandbox: bind the resolver's sockets and install the redirect to
    them; nothing is left behind on failure."""
    u, t = bind_sockets()
    try:
        apply(backend, u.getsockname()[1], t.getsockname()[1])
    except BaseException:
        u.close()
        t.close()
        raise
    return u, t


def render_nft(udp: int, tcp: int) -> str:
    return (
        f"table ip {NFT_TABLE} {{\n"
        "\tchain output {\n"
        "\t\ttype nat hook output priority -100; policy accept;\n"
        f'\t\tip daddr {ADDRESS} udp dport 53 dnat to {ADDRESS}:{udp} comment "{COMMENT}"\n'
        f'\t\tip daddr {ADDRESS} tcp dport 53 dnat to {ADDRESS}:{tcp} comment "{COMMENT}"\n'
        "\t}\n"
        "}\n"
    )


def render_iptables(udp: int, tcp: int) -> str:
    dst = f"-d {ADDRESS}/32"
    comment = f'-m comment --comment "{COMMENT}"'
    return (
        "*nat\n"
        f":{IPT_CHAIN} - [0:0]\n"
        f"-A OUTPUT {dst} {comment} -j {IPT_CHAIN}\n"
        f"-A {IPT_CHAIN} {dst} -p udp -m udp --dport 53 {comment} "
        f"-j DNAT --to-destination {ADDRESS}:{udp}\n"
        f"-A {IPT_CHAIN} {dst} -p tcp -m tcp --dport 53 {comment} "
        f"-j DNAT --to-destination {ADDRESS}:{tcp}\n"
        "COMMIT\n"
    )


def apply(backend: str, udp: int, tcp: int) -> None:
    """Install the rules in the calling thread's namespace (a fresh sandbox: nothing to replace).

    Must run in a thread that joined the sandbox (``netns.run_in``): the nft library opens its
    netlink socket, and iptables-restore is forked, from that thread.
    """
    if backend == "nftables":
        _nft(render_nft(udp, tcp), "install DNS redirect")
    else:
        tool.run(["iptables-restore", "--noflush"], render_iptables(udp, tcp),
                 "install DNS redirect", "iptables")  # fmt: skip


def remove(backend: str) -> None:
    """Remove the rules from the calling thread's namespace (for undo and adopted namespaces)."""
    if backend == "nftables":
        with contextlib.suppress(KernelError):  # not there (nft 1.0.6 has no "destroy")
            _nft(f"delete table ip {NFT_TABLE}\n", "remove DNS redirect")
        return
    script = f"*nat\n:{IPT_CHAIN} - [0:0]\n-D OUTPUT -d {ADDRESS}/32 -m comment --comment " \
             f'"{COMMENT}" -j {IPT_CHAIN}\n-X {IPT_CHAIN}\nCOMMIT\n'  # fmt: skip
    with contextlib.suppress(KernelError):  # not there: nothing to remove
        tool.run(["iptables-restore", "--noflush"], script, "remove DNS redirect", "iptables")


def _nft(script: str, what: str) -> None:
    from lowbridge.firewall import nftables

    nftables.run_script(script, what)
