"""The hand-encoded requests of lowbridge.kernel.wire, byte for byte against pyroute2's encoding.

lowbridge builds its attach's netlink requests with struct (pyroute2's classes are ~100x slower
at it); pyroute2's message classes are the reference for every byte here.  What the kernel does
with them is checked in tests/integration/test_netlink_fast.py.
"""

from __future__ import annotations

import socket

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from lowbridge.kernel import wire as L
from lowbridge.kernel.rtnl import DOOMED_GROUP


def _encoded(msg) -> bytes:  # noqa: ANN001
    """pyroute2's bytes of ``msg`` without its nlmsghdr."""
    msg.encode()
    return bytes(msg.data)[16:]


def _link(name=None, index=0, flags=0, change=0, attrs=()):  # noqa: ANN001, ANN202
    msg = ifinfmsg()
    msg["family"], msg["index"], msg["flags"], msg["change"] = (
        socket.AF_UNSPEC,
        index,
        flags,
        change,
    )
    msg["attrs"] = ([("IFLA_IFNAME", name)] if name is not None else []) + list(attrs)
    return msg


@pytest.mark.parametrize("name", ["lo", "eth0", "lbv0123456789a", "l" * 15])
def test_link_by_name_and_by_index(name):
    assert L.link_request(name) == _encoded(_link(name))
    assert L.link_request(index=7, flags=1, change=1) == _encoded(_link(index=7, flags=1, change=1))
    up = L.link_request(name, flags=0, change=L.IFF_UP)
    assert up == _encoded(_link(name, change=1))


def test_link_attributes():
    mask = L.link_request("eth0", attrs=L.u32(L.IFLA_EXT_MASK, L.RTEXT_FILTER_SKIP_STATS))
    assert mask == _encoded(_link("eth0", attrs=[("IFLA_EXT_MASK", 8)]))
    group = L.link_request(attrs=L.u32(L.IFLA_GROUP, DOOMED_GROUP))
    assert group == _encoded(_link(attrs=[("IFLA_GROUP", DOOMED_GROUP)]))


@pytest.mark.parametrize("mtu", [None, 1400, 9000])
@pytest.mark.parametrize("host,peer", [("lbv1", "eth0"), ("lbv0123456789a", "eth12")])
def test_veth(host, peer, mtu):
    mac = "02:42:0a:96:00:02"
    mtu_attr = [("IFLA_MTU", mtu)] if mtu else []
    peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", 9), ("IFLA_ADDRESS", mac), *mtu_attr]
    linkinfo = {"attrs": [
        ("IFLA_INFO_KIND", "veth"),
        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]}),
    ]}  # fmt: skip
    ref = _link(host, flags=1, change=1, attrs=[("IFLA_MASTER", 42), *mtu_attr,
                                                  ("IFLA_LINKINFO", linkinfo)])  # fmt: skip
    assert L.veth_request(host, peer, 9, mac, mtu, 42) == _encoded(ref)


@pytest.mark.parametrize(
    "address,plen", [("10.150.0.2", 16), ("172.18.3.250", 24), ("10.0.0.1", 31), ("10.1.2.3", 32)]
)
def test_address(address, plen):
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, plen, 5
    msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    if plen < 31:
        import ipaddress

        net = ipaddress.IPv4Network(f"{address}/{plen}", strict=False)
        msg["attrs"].append(("IFA_BROADCAST", str(net.broadcast_address)))
    assert L.address_request(5, address, plen) == _encoded(msg)


def test_default_route():
    msg = rtmsg()
    msg["family"], msg["table"], msg["proto"] = socket.AF_INET, 254, 4
    msg["scope"], msg["type"] = 0, 1
    msg["attrs"] = [("RTA_TABLE", 254), ("RTA_GATEWAY", "10.150.0.1"), ("RTA_OIF", 3)]
    assert L.default_route_request("10.150.0.1", 3) == _encoded(msg)


def test_the_constants_are_pyroute2s():
    """The numbers wire.py writes down from the kernel's headers are pyroute2's too."""
    from pyroute2 import netlink as N
    from pyroute2.netlink import rtnl as R

    for name in ("NLM_F_REQUEST", "NLM_F_ACK", "NLM_F_REPLACE", "NLM_F_EXCL", "NLM_F_CREATE",
                 "NLM_F_DUMP", "NLMSG_ERROR", "NLMSG_DONE"):  # fmt: skip
        assert getattr(L, name) == getattr(N, name), name
    for name in ("RTM_NEWLINK", "RTM_DELLINK", "RTM_GETLINK", "RTM_SETLINK", "RTM_NEWADDR",
                 "RTM_NEWROUTE"):  # fmt: skip
        assert getattr(L, name) == getattr(R, name), name
    from pyroute2.netlink.rtnl import ifaddrmsg as A

    assert L.IFA_F_NODAD == A.IFA_F_NODAD


def test_explains_read_only_requests():
    """The address dump and ``ip route get`` as pyroute2 encodes them."""
    dump = ifaddrmsg()
    dump["family"] = socket.AF_INET
    assert L.address_dump_request() == _encoded(dump)
    get = rtmsg()
    get["family"], get["dst_len"], get["attrs"] = socket.AF_INET, 32, [("RTA_DST", "10.1.2.3")]
    assert L.route_get_request("10.1.2.3") == _encoded(get)


def _reply(msg) -> bytes:  # noqa: ANN001 - a pyroute2 message, as the kernel would send it
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize("local", [True, False])
def test_an_address_reply_read_as_pyroute2_reads_it(local):
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, 24, 7
    peer = [("IFA_ADDRESS", "10.9.0.1")]
    msg["attrs"] = [("IFA_LOCAL", "10.9.0.5"), *peer] if local else peer
    assert L.address_of(_reply(msg)) == (7, "10.9.0.5" if local else "10.9.0.1", 24)


def test_a_route_and_a_link_reply_read_as_pyroute2_reads_them():
    msg = rtmsg()
    msg["family"], msg["dst_len"] = socket.AF_INET, 32
    msg["attrs"] = [("RTA_TABLE", 254), ("RTA_DST", "10.1.2.3"), ("RTA_OIF", 12),
                    ("RTA_PREFSRC", "10.1.2.1")]  # fmt: skip
    assert L.route_of(_reply(msg)) == (12, "10.1.2.1")
    bare = rtmsg()
    bare["family"], bare["attrs"] = socket.AF_INET, [("RTA_DST", "10.1.2.3")]
    assert L.route_of(_reply(bare)) == (None, None)
    link = _link("lbv0123456789a", index=12, attrs=[("IFLA_MTU", 1500)])
    assert L.link_name_of(_reply(link)) == "lbv0123456789a"


@pytest.mark.parametrize("address,plen", [("fd00:81::2", 64), ("2001:db8::1:0:7", 126)])
def test_ipv6_address_without_dad(address, plen):
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET6, plen, 5
    msg["flags"] = L.IFA_F_NODAD
    msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    assert L.address6_request(5, address, plen) == _encoded(msg)


def test_ipv6_default_route():
    msg = rtmsg()
    msg["family"], msg["table"], msg["proto"] = socket.AF_INET6, 254, 4
    msg["scope"], msg["type"] = 0, 1
    msg["attrs"] = [("RTA_TABLE", 254), ("RTA_GATEWAY", "fd00:81::1"), ("RTA_OIF", 3)]
    assert L.default_route6_request("fd00:81::1", 3) == _encoded(msg)
