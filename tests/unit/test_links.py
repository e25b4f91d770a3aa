"""Legacy link environment and hosts lines in Docker's format (moby daemon/links/links.go)."""

from __future__ import annotations

import pytest

from lowbridge import links, ports
from lowbridge.errors import InvalidInput


def test_env_for_a_postgres_child_matches_dockers_documentation():
    # docs.docker.com network/links: --link db:db to a container exposing 5432/tcp.
    env = links.env("web", "db", "172.17.0.5", [(5432, "tcp")], ["PG_VERSION=16", "PATH=/bin"])
    assert env == [
        "DB_PORT=tcp://172.17.0.5:5432",
        "DB_PORT_5432_TCP=tcp://172.17.0.5:5432",
        "DB_PORT_5432_TCP_ADDR=172.17.0.5",
        "DB_PORT_5432_TCP_PORT=5432",
        "DB_PORT_5432_TCP_PROTO=tcp",
        "DB_NAME=/web/db",
        "DB_ENV_PG_VERSION=16",
    ]


def test_env_ranges_tcp_first_and_aliases_with_dashes():
    from lowbridge.models import Container

    published = ports.PortMapping("0.0.0.0", 1, 9000, "tcp")
    expose = [p for spec in ("53/udp", "8000-8002") for p in ports.parse_expose(spec)]
    child = Container(id="c", name="svc", netns="", expose=tuple(expose), ports=(published,))
    exposed = child.exposed
    assert exposed == [(8000, "tcp"), (8001, "tcp"), (8002, "tcp"), (9000, "tcp"), (53, "udp")]
    env = links.env("app", "my-svc", "10.0.0.2", exposed)
    assert env[0] == "MY_SVC_PORT=tcp://10.0.0.2:8000"
    assert "MY_SVC_PORT_8000_TCP_START=tcp://10.0.0.2:8000" in env
    assert "MY_SVC_PORT_8000_TCP_PORT_START=8000" in env
    assert "MY_SVC_PORT_8000_TCP_END=tcp://10.0.0.2:8002" in env
    assert "MY_SVC_PORT_8000_TCP_PORT_END=8002" in env
    assert "MY_SVC_PORT_53_UDP_ADDR=10.0.0.2" in env
    assert not any("9000_TCP_START" in e for e in env)  # a lone port is no range
    assert env[-1] == "MY_SVC_NAME=/app/my-svc"


def test_parse_and_hosts_names():
    assert links.parse("db") == ("db", "db")
    assert links.parse("/db:store") == ("db", "store")
    assert links.hosts_names("store", "6e5cdeb2d300", "db") == "store 6e5cdeb2d300 db"
    assert links.hosts_names("db", "6e5cdeb2d300", "db") == "db 6e5cdeb2d300"
    for bad in (":x", "db:bad_alias!"):
        with pytest.raises(InvalidInput):
            links.parse(bad)
