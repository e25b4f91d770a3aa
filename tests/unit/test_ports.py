import pytest

from lowbridge import ports
from lowbridge.errors import InvalidInput
from lowbridge.ports import PortMapping, PortRequest


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("8080:80", [PortRequest("0.0.0.0", (8080,), 80, "tcp")]),
        ("80", [PortRequest("0.0.0.0", None, 80, "tcp")]),
        ("53:53/udp", [PortRequest("0.0.0.0", (53,), 53, "udp")]),
        ("127.0.0.1:8081:80", [PortRequest("127.0.0.1", (8081,), 80, "tcp", True)]),
        ("127.0.0.1::80", [PortRequest("127.0.0.1", None, 80, "tcp", True)]),
        ("[::]:8080:80", [PortRequest("::", (8080,), 80, "tcp", True)]),
        ("[2001:db8::1]:8080:80/udp", [PortRequest("2001:db8::1", (8080,), 80, "udp", True)]),
        ("[::]::80", [PortRequest("::", None, 80, "tcp", True)]),
        ("9000-9001:7000-7001", [PortRequest("0.0.0.0", (9000,), 7000, "tcp"),
                                 PortRequest("0.0.0.0", (9001,), 7001, "tcp")]),
        ("8000-8002:80", [PortRequest("0.0.0.0", (8000, 8001, 8002), 80, "tcp")]),
        ("7000-7001", [PortRequest("0.0.0.0", None, 7000, "tcp"),
                       PortRequest("0.0.0.0", None, 7001, "tcp")]),
        ("80/TCP", [PortRequest("0.0.0.0", None, 80, "tcp")]),
    ],
)  # fmt: skip
def test_parse(spec, expected):
    assert ports.parse(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["", "0", "65536", "x:80", "80/sctp", "1:2:3:4", "9000-9002:80-81", "90-80",
     "fe80::1:80:80", "999.1.1.1:80:80", "1-2000", "80:", "[::]80:80", "[10.0.0.1]:80:80",
     "[::", "[nope]:80:80"],
)  # fmt: skip
def test_parse_rejects(spec):
    with pytest.raises(InvalidInput):
        ports.parse(spec)


def test_overlap_rules():
    a = PortMapping("0.0.0.0", 8080, 80, "tcp")
    assert a.overlaps(PortMapping("127.0.0.1", 8080, 81, "tcp"))
    assert not a.overlaps(PortMapping("0.0.0.0", 8080, 80, "udp"))
    assert not PortMapping("127.0.0.1", 1, 1, "tcp").overlaps(PortMapping("10.0.0.1", 1, 1, "tcp"))
    # Each family's "any" address covers that family only: 0.0.0.0 and [::] bind side by side.
    six = PortMapping("::", 8080, 80, "tcp")
    assert not a.overlaps(six) and not six.overlaps(a)
    assert six.overlaps(PortMapping("2001:db8::1", 8080, 80, "tcp"))


def test_parse_takes_ipv6_loopback():  # served by a relay (lowbridge.proxy), not DNAT
    assert ports.parse("[::1]:8081:80") == [PortRequest("::1", (8081,), 80, "tcp", True)]


def test_docker_views():
    m = [PortMapping("0.0.0.0", 8080, 80, "tcp"), PortMapping("127.0.0.1", 8081, 80, "tcp")]
    assert ports.docker_ports(m) == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                   {"HostIp": "127.0.0.1", "HostPort": "8081"}]
    }  # fmt: skip
    assert ports.docker_ps(m) == "0.0.0.0:8080->80/tcp, 127.0.0.1:8081->80/tcp"
    # docker ps and docker port write an IPv6 host address in brackets.
    dual = [PortMapping("0.0.0.0", 8080, 80, "tcp"), PortMapping("::", 8080, 80, "tcp")]
    assert ports.docker_ps(dual) == "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"
    assert ports.docker_port_lines(dual) == ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"]


def test_ephemeral_range_is_the_kernels():
    r = ports.ephemeral_range()
    assert 1024 <= r.start < r.stop <= 65536
