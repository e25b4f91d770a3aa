"""RTNL verbs on one namespace: the kernel layer's only user of pyroute2.

:func:`session` opens one netlink socket in a namespace (for another namespace the socket is made
by a thread that joined it, :mod:`.netns`, so pyroute2 never forks and never creates a namespace by
accident -- ``IPRoute(netns=...)`` defaults to ``O_CREAT``, pyroute2-notes pitfall 1), and every
call on :class:`Session` maps to one RTNL request.  Failures become
:class:`~lowbridge.errors.KernelError` carrying the errno and what was being done.

The verbs on an attach's path send requests encoded by :mod:`.wire` over the session's socket with
a plain blocking request/ack; the others go through pyroute2's ``IPRoute``, made on first use over
the same socket.  pyroute2 runs an asyncio loop around every request: ~0.7-1 ms a call here
against ~0.1 ms this way, and its set-up costs ~1-2 ms a session (bench/attach.py).
tests/integration/test_netlink_fast.py checks that both ways leave the kernel in the same state.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

from pyroute2.netlink.exceptions import NetlinkError

from lowbridge.errors import KernelError
from lowbridge.kernel import netns
from lowbridge.kernel.wire import (
    AF_INET,
    IFF_UP,
    IFLA_EXT_MASK,
    IFLA_GROUP,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    RTEXT_FILTER_SKIP_STATS,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_SETLINK,
    SEQ,
    address6_request,
    address_dump_request,
    address_fields_of,
    address_of,
    address_request,
    default_route6_request,
    default_route_of,
    default_route_request,
    errno_of,
    link_dump_request,
    link_fields_of,
    link_name_of,
    link_request,
    messages,
    onlink_route_of,
    route_dump_request,
    route_get_request,
    route_of,
    u32,
    veth_request,
)

if TYPE_CHECKING:
    from pyroute2.iproute.linux import IPRoute

ENODEV = 19
EEXIST = 17
EOPNOTSUPP = 95
# A device group no one else uses: lowbridge host ends about to be deleted together
# (Session.delete_links); "lbdn".
DOOMED_GROUP = 0x6C62646E


@dataclass(frozen=True)
class Link:
    """A network interface as the kernel reports it (the fields lowbridge reads)."""

    index: int
    name: str
    kind: str | None
    master: int | None
    alias: str | None
    mac: str | None
    mtu: int
    up: bool


class Session:
    """RTNL verbs on one namespace.  ``where`` names it in error messages."""

    def __init__(self, sock: socket.socket, where: str):
        self._sock = sock
        self._ipr_obj: IPRoute | None = None
        self.where = where

    @property
    def _ipr(self) -> IPRoute:
        if self._ipr_obj is None:
            # Imported here: IPRoute and its asyncio core are ~100 ms of a command's start-up,
            # and a command whose verbs all take the fast path never needs them.
            from pyroute2.iproute.linux import IPRoute

            try:
                self._ipr_obj = IPRoute(use_socket=self._sock, groups=0)
            except (NetlinkError, OSError) as exc:
                raise KernelError.from_os(f"open netlink socket in {self.where}", exc) from None
        return self._ipr_obj

    def close(self) -> None:
        if self._ipr_obj is not None:
            self._ipr_obj.close()
        self._sock.close()

    def _request(self, kind: int, body: bytes, flags: int = 0) -> list[bytes]:
        """Send ``body`` (a message after its nlmsghdr) as RTM type ``kind`` and wait for the
        kernel's acknowledgement (a dump's end); return the raw replies that came before it.  A
        kernel error raises NetlinkError (errno), as pyroute2's calls do."""
        seq = next(SEQ)
        flags |= NLM_F_REQUEST | NLM_F_ACK
        self._sock.send(NLMSGHDR.pack(16 + len(body), kind, flags, seq, 0) + body)
        replies = []
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:  # IPRoute, once made, leaves the socket non-blocking
                # poll, not select: a batch may hold descriptors above FD_SETSIZE (1024).
                poller = select.poll()
                poller.register(self._sock, select.POLLIN)
                poller.poll()
                continue
            for offset, length, mtype, rseq in messages(data):
                if rseq == seq:
                    # A dump (NLM_F_DUMP) ends with NLMSG_DONE, not an acknowledgement; both
                    # carry an errno (netlink_dump_done, netlink_ack in net/netlink/af_netlink.c).
                    if mtype in (NLMSG_ERROR, NLMSG_DONE):
                        code = errno_of(data, offset)
                        if code:
                            raise NetlinkError(code, os.strerror(code))
                        return replies
                    replies.append(data[offset : offset + length])

    @contextlib.contextmanager
    def _doing(self, what: str) -> Iterator[None]:
        try:
            yield
        except (NetlinkError, OSError) as exc:
            raise KernelError.from_os(what, exc) from None

    # -- links
    def links(self) -> list[Link]:
        with self._doing(f"list links in {self.where}"):
            replies = self._request(RTM_GETLINK, link_dump_request(), NLM_F_DUMP)
        return [Link(*link_fields_of(reply)) for reply in replies]

    def link(self, name: str) -> Link | None:
        body = link_request(name, attrs=u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))
        try:
            return Link(*link_fields_of(self._request(RTM_GETLINK, body)[0]))
        except NetlinkError as exc:
            if exc.code == ENODEV:
                return None
            raise KernelError.from_os(f"get link {name}", exc) from None

    def index(self, name: str) -> int | None:
        """The index of link ``name``, None if there is none.  Reads the index from the reply's
        header: decoding a whole link message (stats, AF_SPEC, ...) in Python costs more than
        the kernel's lookup (~0.4 ms against ~0.05 ms here)."""
        body = link_request(name, attrs=u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))
        try:
            reply = self._request(RTM_GETLINK, body)[0]
        except NetlinkError as exc:
            if exc.code == ENODEV:
                return None
            raise KernelError.from_os(f"get link {name}", exc) from None
        return struct.unpack_from("i", reply, 16 + 4)[0]  # nlmsghdr, then ifinfomsg.ifi_index

    def create_bridge(self, name: str, *, mac: str | None, mtu: int | None) -> None:
        """A bridge without STP and with no forward delay, so ports forward at once (as docker0).

        With ``mac`` None the kernel picks the MAC: such a bridge has carrier while it has no
        ports, while one created with a MAC has none until a port comes up (seen on 6.18).
        """
        args = {"ifname": name, "kind": "bridge", "br_stp_state": 0}
        if mac:
            args["address"] = mac
        args["br_forward_delay"] = 0
        if mtu:
            args["mtu"] = mtu
        with self._doing(f"create bridge {name}"):
            self._ipr.link("add", **args)

    def set_alias(self, name: str, alias: str) -> None:
        # IFLA_IFALIAS is ignored in RTM_NEWLINK, so it takes its own request.
        with self._doing(f"set alias of {name}"):
            self._ipr.link("set", ifname=name, ifalias=alias)

    def set_up(self, link: str | int, up: bool = True) -> None:
        """Bring a link up (or, with ``up`` False, down)."""
        # By name or index: RTM_SETLINK finds the device itself (no lookup first).
        by = {"index": link} if isinstance(link, int) else {"name": link}
        body = link_request(**by, flags=IFF_UP if up else 0, change=IFF_UP)
        with self._doing(f"bring {link} {'up' if up else 'down'}"):
            self._request(RTM_SETLINK, body)

    def ipv4_addresses(self, link: str | int) -> list[tuple[str, int]]:
        """(address, prefix length) of a link's IPv4 addresses (one dump of lowbridge's own,
        filtered here: adopting a namespace need not import IPRoute, ~50 ms)."""
        index = self._ix(link)
        return [(ip, plen) for ix, ip, plen in self.addresses() if ix == index]

    def ipv6_addresses(self, link: str | int) -> list[tuple[str, int]]:
        """(address, prefix length) of a link's global IPv6 addresses (not its fe80::)."""
        with self._doing(f"list addresses of {link} in {self.where}"):
            msgs = self._ipr.get_addr(index=self._ix(link), family=socket.AF_INET6)
        return [(m.get_attr("IFA_ADDRESS"), m["prefixlen"]) for m in msgs if m["scope"] == 0]

    def delete_link(self, name: str) -> bool:
        """Delete a link; return False if it was already gone."""
        try:
            self._request(RTM_DELLINK, link_request(name))
        except NetlinkError as exc:
            if exc.code == ENODEV:
                return False
            raise KernelError.from_os(f"delete link {name}", exc) from None
        return True

    def delete_links(self, names: list[str]) -> None:
        """Delete links in one unregister batch; those already gone are skipped.

        Each RTM_DELLINK unregisters its device with RCU grace periods of its own (~17 ms
        here); deleting a device *group* (``ip link del group N``, rtnl_group_dellink) puts
        every member in one unregister_netdevice_many call, which waits once (~0.5 ms a
        device, bench/lab.py).  The group is lowbridge's mark for "about to go", set on these
        devices just before, under the host lock; a single device is deleted directly.
        """
        if len(names) < 2:
            for name in names:
                self.delete_link(name)
            return
        marked = 0
        for name in names:
            try:
                self._request(RTM_SETLINK, link_request(name, attrs=u32(IFLA_GROUP, DOOMED_GROUP)))
                marked += 1
            except NetlinkError as exc:
                if exc.code != ENODEV:
                    raise KernelError.from_os(f"mark link {name} for deletion", exc) from None
        if not marked:
            return
        body = link_request(attrs=u32(IFLA_GROUP, DOOMED_GROUP))  # index 0, a group: all
        try:
            self._request(RTM_DELLINK, body)
        except NetlinkError as exc:
            raise KernelError.from_os(f"delete links {', '.join(names)}", exc) from None

    def create_veth(
        self,
        host: str,
        peer: str,
        *,
        peer_netns_fd: int,
        peer_mac: str,
        mtu: int | None,
        master: int,
    ) -> None:
        """One RTM_NEWLINK: the host end enslaved to ``master`` and up, the peer created directly
        in the sandbox with its final name, MAC and MTU (no move, no rename, no udev MAC race --
        pyroute2-notes pitfall 17; Docker >= 28 does the same, moby #49302)."""
        body = veth_request(host, peer, peer_netns_fd, peer_mac, mtu, master)
        with self._doing(f"create veth {host}"):
            self._request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)

    def create_macvlan(
        self,
        name: str,
        parent: str | int,
        *,
        mode: str,
        mac: str | None = None,
        netns_fd: int | None = None,
        mtu: int | None = None,
    ) -> None:
        """A macvlan child of ``parent`` (a host link), created directly in the namespace of
        ``netns_fd`` with its final name when given (IFLA_NET_NS_FD on RTM_NEWLINK: no move,
        no rename; pyroute2-notes 3)."""
        args: dict = {
            "ifname": name,
            "kind": "macvlan",
            "link": self._ix(parent),
            "macvlan_mode": mode,
        }
        if mac:
            args["address"] = mac
        if netns_fd is not None:
            args["net_ns_fd"] = netns_fd
        if mtu:
            args["mtu"] = mtu
        with self._doing(f"create macvlan {name} on {parent}"):
            self._ipr.link("add", **args)

    def create_vlan(self, name: str, base: str, vid: int) -> None:
        """An 802.1q sub-interface ``name`` of ``base`` (``ip link add … type vlan id VID``)."""
        try:
            self._ipr.link("add", ifname=name, kind="vlan", link=self._ix(base), vlan_id=vid)
        except NetlinkError as exc:
            if exc.code == EOPNOTSUPP:
                raise KernelError(
                    f"create vlan {name}: the kernel has no 802.1q support (module 8021q, "
                    "link kind vlan)",
                    errno=exc.code,
                ) from None
            raise KernelError.from_os(f"create vlan {name}", exc) from None

    def add_route(self, dst: str, prefixlen: int, link: str | int) -> None:
        with self._doing(f"add route {dst}/{prefixlen} dev {link}"):
            self._ipr.route("add", dst=f"{dst}/{prefixlen}", oif=self._ix(link), family=AF_INET)

    def delete_route(self, dst: str, prefixlen: int, link: str | int) -> None:
        with self._doing(f"delete route {dst}/{prefixlen} dev {link}"):
            self._ipr.route("del", dst=f"{dst}/{prefixlen}", oif=self._ix(link), family=AF_INET)

    def create_vxlan(
        self, name: str, *, vni: int, local: str, port: int, mtu: int, netns_fd: int | None
    ) -> None:
        """A VXLAN device created from this session's namespace -- which keeps its UDP socket
        (the kernel binds it in the creating namespace) -- and placed in the namespace of
        ``netns_fd``: Docker's "create in the host, move into the overlay sandbox".  No
        learning; ``proxy`` answers ARP from the static neighbour entries (pyroute2-notes 4,
        S2b), and cannot be changed after creation."""
        args: dict = {
            "ifname": name,
            "kind": "vxlan",
            "vxlan_id": vni,
            "vxlan_local": local,
            "vxlan_port": port,
            "vxlan_learning": 0,
            "vxlan_proxy": 1,
            "mtu": mtu,
        }
        if netns_fd is not None:
            args["net_ns_fd"] = netns_fd
        with self._doing(f"create vxlan {name} (VNI {vni})"):
            self._ipr.link("add", **args)

    def set_master(self, link: str | int, master: str | int) -> None:
        with self._doing(f"attach {link} to {master}"):
            self._ipr.link("set", index=self._ix(link), master=self._ix(master))

    # -- VXLAN forwarding and neighbour entries (permanent ones only are lowbridge's)
    def fdb_entries(self, link: str | int) -> dict[str, str]:
        """MAC -> remote VTEP of the device's own (``self``) forwarding entries."""
        out = {}
        with self._doing(f"list fdb of {link}"):
            for msg in self._ipr.fdb("dump", ifindex=self._ix(link)):
                dst, mac = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
                if dst and mac and mac != "00:00:00:00:00:00":
                    out[mac] = dst
        return out

    def fdb_replace(self, link: str | int, mac: str, dst: str) -> None:
        from pyroute2.netlink.rtnl import ndmsg

        state = ndmsg.states["permanent"] | ndmsg.states["noarp"]
        with self._doing(f"add fdb {mac} dst {dst} on {link}"):
            self._ipr.fdb(
                "replace",
                ifindex=self._ix(link),
                lladdr=mac,
                dst=dst,
                flags=ndmsg.flags["self"],
                state=state,
            )

    def fdb_pin(self, port: str | int, mac: str) -> None:
        """A static entry on ``port``'s bridge: ``mac`` is behind ``port`` (``bridge fdb
        replace MAC dev PORT master static``), replacing whatever the bridge had learned."""
        from pyroute2.netlink.rtnl import ndmsg

        with self._doing(f"pin fdb {mac} to {port}"):
            self._ipr.fdb(
                "replace",
                ifindex=self._ix(port),
                lladdr=mac,
                flags=ndmsg.flags["master"],
                state=ndmsg.states["noarp"],
            )

    def fdb_delete(self, link: str | int, mac: str, dst: str) -> None:
        from pyroute2.netlink.rtnl import ndmsg

        with self._doing(f"delete fdb {mac} on {link}"):
            self._ipr.fdb(
                "del", ifindex=self._ix(link), lladdr=mac, dst=dst, flags=ndmsg.flags["self"]
            )

    def neighbours(self, link: str | int, family: int = 4) -> dict[str, str]:
        """Address -> MAC of the device's permanent neighbour entries of IP ``family``."""
        from pyroute2.netlink.rtnl import ndmsg

        out = {}
        af = AF_INET if family == 4 else socket.AF_INET6
        with self._doing(f"list neighbours of {link}"):
            for msg in self._ipr.neigh("dump", ifindex=self._ix(link), family=af):
                if msg["state"] & ndmsg.states["permanent"]:
                    out[msg.get_attr("NDA_DST")] = msg.get_attr("NDA_LLADDR")
        return out

    def neigh_replace(self, link: str | int, ip: str, mac: str) -> None:
        from pyroute2.netlink.rtnl import ndmsg

        with self._doing(f"add neighbour {ip} on {link}"):
            self._ipr.neigh(
                "replace",
                ifindex=self._ix(link),
                dst=ip,
                lladdr=mac,
                state=ndmsg.states["permanent"],
                family=socket.AF_INET6 if ":" in ip else AF_INET,
            )

    def neigh_delete(self, link: str | int, ip: str) -> None:
        with self._doing(f"delete neighbour {ip} on {link}"):
            family = socket.AF_INET6 if ":" in ip else AF_INET
            self._ipr.neigh("del", ifindex=self._ix(link), dst=ip, family=family)

    def route_source(self, dst: str) -> str | None:
        """The source address the kernel would use towards ``dst`` (``ip route get``)."""
        found = self._route(dst)
        return found[1] if found else None

    def route_device(self, dst: str) -> str | None:
        """The link the kernel would send towards ``dst`` by (``ip route get``), or None."""
        found = self._route(dst)
        if not found or not found[0]:
            return None
        body = link_request(index=found[0], attrs=u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))
        try:
            return link_name_of(self._request(RTM_GETLINK, body)[0])
        except NetlinkError:
            return None

    def _route(self, dst: str) -> tuple[int | None, str | None] | None:
        try:
            replies = self._request(RTM_GETROUTE, route_get_request(dst))
        except NetlinkError:  # no route (ENETUNREACH), or not an address the kernel takes
            return None
        return route_of(replies[0]) if replies else None

    def set_hairpin(self, link: str | int) -> None:
        """Hairpin mode on a bridge port (IFLA_BRPORT_MODE, ``bridge link set hairpin on``)."""
        with self._doing(f"set hairpin mode on {link}"):
            self._ipr.brport("set", index=self._ix(link), mode=1)

    # -- addresses and routes (links by name, or by index to save a lookup)
    def _ix(self, link: str | int) -> int:
        if isinstance(link, int):
            return link
        index = self.index(link)
        if index is None:
            raise NetlinkError(ENODEV, os.strerror(ENODEV))
        return index

    def add_address(self, link: str | int, address: str, prefixlen: int) -> None:
        """``ip addr add ADDRESS/PLEN brd + dev LINK``: the broadcast address as iproute2 and
        pyroute2 compute it."""
        with self._doing(f"add address {address}/{prefixlen} to {link}"):
            body = address_request(self._ix(link), address, prefixlen)
            self._request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)

    def add_address6(self, link: str | int, address: str, prefixlen: int) -> None:
        """``ip -6 addr add ADDRESS/PLEN dev LINK nodad``: usable at once, without the ~1 s of
        duplicate address detection (Docker's IFA_F_NODAD, programIPv6Addresses).  Encoded
        by hand as the IPv4 request is: pyroute2's took ~1 ms of a dual-stack attach's ~1.3
        (bench/attach.py; tests/unit/test_netlink_wire.py holds it to pyroute2's bytes)."""
        with self._doing(f"add address {address}/{prefixlen} to {link}"):
            body = address6_request(self._ix(link), address, prefixlen)
            self._request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)

    def replace_default_route6(self, gateway: str, link: str | int) -> None:
        """``ip -6 route replace default via GATEWAY dev LINK`` (as the IPv4 one)."""
        with self._doing(f"set default route via {gateway} dev {link}"):
            body = default_route6_request(gateway, self._ix(link))
            self._request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_REPLACE)

    def delete_address(self, link: str | int, address: str, prefixlen: int) -> None:
        with self._doing(f"delete address {address}/{prefixlen} from {link}"):
            self._ipr.addr("del", index=self._ix(link), address=address, prefixlen=prefixlen)

    def replace_default_route(self, gateway: str, link: str | int) -> None:
        """``ip route replace default via GATEWAY dev LINK`` (main table, protocol static,
        universe scope, unicast: pyroute2's defaults)."""
        with self._doing(f"set default route via {gateway} dev {link}"):
            body = default_route_request(gateway, self._ix(link))
            self._request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_REPLACE)

    def default_route(self) -> tuple[str | None, int] | None:
        """The main table's IPv4 default route as (gateway or None, output link index); None
        when there is none."""
        with self._doing(f"list routes in {self.where}"):
            replies = self._request(RTM_GETROUTE, route_dump_request(), NLM_F_DUMP)
        return next(filter(None, map(default_route_of, replies)), None)

    def addresses(self) -> list[tuple[int, str, int]]:
        """(link index, address, prefix length) of every IPv4 address in this namespace."""
        with self._doing(f"list addresses in {self.where}"):
            replies = self._request(RTM_GETADDR, address_dump_request(), NLM_F_DUMP)
        return [address_of(reply) for reply in replies]

    def labelled_addresses(self) -> list[tuple[int, str, str, int]]:
        """(link index, label, address, prefix length) of every IPv4 address here: the label is
        the link's name, so one dump tells which link holds what (no link dump)."""
        with self._doing(f"list addresses in {self.where}"):
            replies = self._request(RTM_GETADDR, address_dump_request(), NLM_F_DUMP)
        return [address_fields_of(reply) for reply in replies]

    def onlink_routes(self) -> list[IPv4Network]:
        """IPv4 on-link (scope link), non-default routes of the main table.

        Docker reserves these when it picks a subnet by itself (moby InferReservedNetworks).
        """
        with self._doing(f"list routes in {self.where}"):
            replies = self._request(RTM_GETROUTE, route_dump_request(), NLM_F_DUMP)
        return [net for net in map(onlink_route_of, replies) if net is not None]


@contextlib.contextmanager
def session(netns_path: str | None = None, sock: socket.socket | None = None) -> Iterator[Session]:
    """A netlink session on the namespace at ``netns_path`` (None: the caller's own).

    ``sock`` reuses a socket already opened inside that namespace (e.g. by
    :func:`.netns.create`); the session closes it.
    """
    if sock is None:
        try:
            sock = netns.netlink_socket(netns_path) if netns_path is not None else _socket()
        except OSError as exc:
            raise KernelError.from_os(
                f"open netlink socket in {netns_path or 'host'}", exc
            ) from None
    s = Session(sock, netns_path or "host")
    try:
        yield s
    finally:
        s.close()


def _socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
