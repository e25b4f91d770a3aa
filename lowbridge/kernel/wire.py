"""Netlink messages encoded by hand with ``struct`` (pure, no pyroute2).

The attach's requests are built here: pyroute2's message classes take 0.06-0.4 ms in Python to
encode one of them (a veth: ~0.4 ms), struct a few microseconds (bench/lab.py spent ~1 ms a
sandbox encoding).  tests/unit/test_netlink_wire.py checks each one byte for byte against
pyroute2's encoding of the same message.  Numbers come from linux/netlink.h, linux/rtnetlink.h,
linux/if_link.h, linux/veth.h and linux/if_addr.h.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Network

# Our own request sequence numbers, far from pyroute2's (they share a session's socket).
SEQ = itertools.count(1 << 24)

# linux/netlink.h
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_DUMP = 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
# linux/rtnetlink.h
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_GETROUTE = 20, 22, 24, 26
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1
RT_TABLE_MAIN = 254
RTEXT_FILTER_SKIP_STATS = 1 << 3  # no IFLA_STATS(64) in link replies
IFF_UP = 0x1
# linux/if_link.h, linux/veth.h, linux/if_addr.h, linux/rtnetlink.h attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 4, 10, 18
IFLA_IFALIAS, IFLA_GROUP, IFLA_NET_NS_FD, IFLA_EXT_MASK = 20, 27, 28, 29
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST = 1, 2, 3, 4
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 7, 15
AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
IFA_F_NODAD = 0x02  # linux/if_addr.h

NLMSGHDR = struct.Struct("IHHII")  # length, type, flags, sequence, port
_IFINFOMSG = struct.Struct("BxHiII")  # family, (pad), type, index, flags, change
_IFADDRMSG = struct.Struct("BBBBI")  # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type, flags
_NLA = struct.Struct("HH")


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr: length, type, payload, padded to 4 bytes."""
    size = 4 + len(payload)
    return struct.pack("HH", size, kind) + payload + bytes(-size % 4)


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("I", value))


def _name(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def _ipv4(kind: int, address: str) -> bytes:
    return attr(kind, socket.inet_aton(address))


def header(length: int, kind: int, flags: int, seq: int) -> bytes:
    """An nlmsghdr for a message of ``length`` bytes after it."""
    return NLMSGHDR.pack(16 + length, kind, flags, seq, 0)


def link_request(
    name: str | None = None, index: int = 0, flags: int = 0, change: int = 0, attrs: bytes = b""
) -> bytes:
    """An ifinfomsg naming its link by index, or by name (IFLA_IFNAME with index 0: the kernel
    looks the name up itself, rtnl_dev_get), then ``attrs``."""
    named = _name(IFLA_IFNAME, name) if name is not None else b""
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change) + named + attrs


def veth_request(
    host: str, peer: str, peer_netns_fd: int, peer_mac: str, mtu: int | None, master: int
) -> bytes:
    """RTM_NEWLINK of a veth: the host end enslaved to ``master`` and up, the peer created in
    the namespace of ``peer_netns_fd`` with its MAC and MTU."""
    mtu_attr = u32(IFLA_MTU, mtu) if mtu else b""
    peer_msg = link_request(
        peer,
        attrs=u32(IFLA_NET_NS_FD, peer_netns_fd)
        + attr(IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", "")))
        + mtu_attr,
    )
    info = _name(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg))
    attrs = u32(IFLA_MASTER, master) + mtu_attr + attr(IFLA_LINKINFO, info)
    return link_request(host, flags=IFF_UP, change=IFF_UP, attrs=attrs)


def address_request(index: int, address: str, prefixlen: int) -> bytes:
    """RTM_NEWADDR of ``address/prefixlen`` with the broadcast address iproute2 computes."""
    attrs = _ipv4(IFA_LOCAL, address) + _ipv4(IFA_ADDRESS, address)
    if prefixlen < 31:
        net = IPv4Network(f"{address}/{prefixlen}", strict=False)
        attrs += _ipv4(IFA_BROADCAST, str(net.broadcast_address))
    return _IFADDRMSG.pack(AF_INET, prefixlen, 0, 0, index) + attrs


def address6_request(index: int, address: str, prefixlen: int) -> bytes:
    """RTM_NEWADDR of an IPv6 ``address/prefixlen`` without duplicate address detection
    (IFA_F_NODAD in the header's flags), local and address alike as iproute2 sends them."""
    packed = socket.inet_pton(AF_INET6, address)
    attrs = attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    return _IFADDRMSG.pack(AF_INET6, prefixlen, IFA_F_NODAD, 0, index) + attrs


def default_route6_request(gateway: str, oif: int) -> bytes:
    """RTM_NEWROUTE of an IPv6 ``default via GATEWAY dev OIF`` (as default_route_request)."""
    head = _RTMSG.pack(
        AF_INET6, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
    )
    gw = attr(RTA_GATEWAY, socket.inet_pton(AF_INET6, gateway))
    return head + u32(RTA_TABLE, RT_TABLE_MAIN) + gw + u32(RTA_OIF, oif)


def default_route_request(gateway: str, oif: int) -> bytes:
    """RTM_NEWROUTE of ``default via GATEWAY dev OIF`` (main table, protocol static, universe
    scope, unicast: pyroute2's defaults)."""
    head = _RTMSG.pack(
        AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
    )
    return head + u32(RTA_TABLE, RT_TABLE_MAIN) + _ipv4(RTA_GATEWAY, gateway) + u32(RTA_OIF, oif)


def messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(offset, length, type, sequence number) of each netlink message in a datagram."""
    offset = 0
    while offset + 16 <= len(data):
        length, mtype, _, rseq, _ = NLMSGHDR.unpack_from(data, offset)
        if length < 16:
            return
        yield offset, length, mtype, rseq
        offset += (length + 3) & ~3


def errno_of(data: bytes, offset: int) -> int:
    """The errno an NLMSG_ERROR message at ``offset`` carries (0: an acknowledgement)."""
    return -struct.unpack_from("i", data, offset + 16)[0]


def attributes(data: bytes) -> dict[int, bytes]:
    """The attributes in ``data`` by type (flags masked off): type -> the whole attribute."""
    out, offset = {}, 0
    while offset + 4 <= len(data):
        size, kind = _NLA.unpack_from(data, offset)
        if size < 4:
            break
        out[kind & 0x3FFF] = data[offset : offset + size]
        offset += (size + 3) & ~3
    return out


# -- what explain asks the kernel (read-only): requests and the replies' few fields
def address_dump_request() -> bytes:
    """RTM_GETADDR (with NLM_F_DUMP) of every IPv4 address."""
    return _IFADDRMSG.pack(AF_INET, 0, 0, 0, 0)


def route_get_request(dst: str) -> bytes:
    """RTM_GETROUTE of ``dst``/32 (``ip route get DST``)."""
    return _RTMSG.pack(AF_INET, 32, 0, 0, 0, 0, 0, 0, 0) + _ipv4(RTA_DST, dst)


def address_of(reply: bytes) -> tuple[int, str, int]:
    """(link index, address, prefix length) of an RTM_NEWADDR reply (nlmsghdr included): the
    local address, else the peer's (as ``ip addr`` shows it)."""
    index, _, address, prefixlen = address_fields_of(reply)
    return index, address, prefixlen


def address_fields_of(reply: bytes) -> tuple[int, str, str, int]:
    """(link index, label, address, prefix length) of an RTM_NEWADDR reply; an IPv4 address's
    label is its link's name unless someone gave it another (``ip addr add … label eth0:1``)."""
    _, prefixlen, _, _, index = _IFADDRMSG.unpack_from(reply, 16)
    found = attributes(reply[16 + _IFADDRMSG.size :])
    raw = found.get(IFA_LOCAL) or found[IFA_ADDRESS]
    label = found.get(IFA_LABEL)
    name = label[4:].split(b"\0", 1)[0].decode() if label else ""
    return index, name, socket.inet_ntoa(raw[4:8]), prefixlen


def route_of(reply: bytes) -> tuple[int | None, str | None]:
    """(output link index, preferred source address) of an RTM_NEWROUTE reply."""
    found = attributes(reply[16 + _RTMSG.size :])
    oif, src = found.get(RTA_OIF), found.get(RTA_PREFSRC)
    return (struct.unpack_from("I", oif, 4)[0] if oif else None,
            socket.inet_ntoa(src[4:8]) if src else None)  # fmt: skip


def route_dump_request() -> bytes:
    """RTM_GETROUTE (with NLM_F_DUMP) of every IPv4 route."""
    return _RTMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)


def onlink_route_of(reply: bytes) -> IPv4Network | None:
    """The destination of an RTM_NEWROUTE reply if it is an on-link (scope link), non-default
    route of the main table, else None."""
    _, dst_len, _, _, table, _, scope, _, _ = _RTMSG.unpack_from(reply, 16)
    found = attributes(reply[16 + _RTMSG.size :])
    if RTA_TABLE in found:
        table = struct.unpack_from("I", found[RTA_TABLE], 4)[0]
    dst = found.get(RTA_DST)
    if scope != RT_SCOPE_LINK or not dst_len or table != RT_TABLE_MAIN or dst is None:
        return None
    return IPv4Network(f"{socket.inet_ntoa(dst[4:8])}/{dst_len}", strict=False)


def default_route_of(reply: bytes) -> tuple[str | None, int] | None:
    """(gateway or None, output link index) of an RTM_NEWROUTE reply if it is the main table's
    default route through a link, else None."""
    _, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(reply, 16)
    found = attributes(reply[16 + _RTMSG.size :])
    if RTA_TABLE in found:
        table = struct.unpack_from("I", found[RTA_TABLE], 4)[0]
    oif, gateway = found.get(RTA_OIF), found.get(RTA_GATEWAY)
    if dst_len or table != RT_TABLE_MAIN or not oif:
        return None
    return (socket.inet_ntoa(gateway[4:8]) if gateway else None,
            struct.unpack_from("I", oif, 4)[0])  # fmt: skip


def link_dump_request() -> bytes:
    """RTM_GETLINK (with NLM_F_DUMP) of every link, without statistics."""
    return link_request(attrs=u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))


def link_fields_of(reply: bytes) -> tuple[int, str, str | None, int | None, str | None,
                                           str | None, int, bool]:  # fmt: skip
    """(index, name, kind, master index, alias, MAC, MTU, up) of an RTM_NEWLINK reply."""
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(reply, 16)
    found = attributes(reply[16 + _IFINFOMSG.size :])

    def text(kind: int, where: dict[int, bytes] = found) -> str | None:
        raw = where.get(kind)
        return raw[4:].split(b"\0", 1)[0].decode() if raw else None

    def number(kind: int) -> int | None:
        raw = found.get(kind)
        return struct.unpack_from("I", raw, 4)[0] if raw else None

    info = found.get(IFLA_LINKINFO)
    kind = text(IFLA_INFO_KIND, attributes(info[4:])) if info else None
    mac = found.get(IFLA_ADDRESS)
    return (index, text(IFLA_IFNAME) or "", kind, number(IFLA_MASTER), text(IFLA_IFALIAS),
            ":".join(f"{b:02x}" for b in mac[4:]) if mac else None, number(IFLA_MTU) or 0,
            bool(flags & IFF_UP))  # fmt: skip


def link_name_of(reply: bytes) -> str:
    """IFLA_IFNAME of an RTM_NEWLINK reply."""
    return attributes(reply[16 + _IFINFOMSG.size :])[IFLA_IFNAME][4:].split(b"\0", 1)[0].decode()
