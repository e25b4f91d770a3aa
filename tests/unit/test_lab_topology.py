"""Topology files: the schema, and one-line errors that name the file, the line and the field."""

from __future__ import annotations

import textwrap

import pytest

from lowbridge.errors import InvalidInput
from lowbridge.lab import diff, marks, topology
from lowbridge.models import Container, Endpoint, Network, View

GOOD = """\
lab: tier
networks:
  front: {subnet: 10.40.0.0/24}
  back:
    internal: true
    options: {com.docker.network.bridge.enable_icc: false, com.docker.network.driver.mtu: 1400}
sandboxes:
  web:
    networks: {front: {ipv4_address: 10.40.0.10}, back: {aliases: [www]}}
    ports: ["8080:80"]
    command: socat TCP-LISTEN:80,fork "SYSTEM:echo hi"
  db:
    networks: [back]
    environment: {POSTGRES_DB: shop, EMPTY: null}
    links: [web]
"""


def test_a_good_file_is_typed_as_the_cli_would_take_it():
    topo = topology.parse(GOOD, "lab.yaml")
    assert topo.network_name("front") == "tier-front" and topo.sandbox_name("db") == "tier-db"
    assert topo.networks["back"].options == {
        "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.driver.mtu": "1400",
    }
    web = topo.sandboxes["web"]
    assert list(web.networks) == ["front", "back"]
    assert web.command == ["socat", "TCP-LISTEN:80,fork", "SYSTEM:echo hi"]
    assert topo.sandboxes["db"].environment == ["POSTGRES_DB=shop", "EMPTY"]
    assert topology.parse("lab: x\nsandboxes: {a: {}}\n").sandboxes["a"].networks == {
        "bridge": topology.Attach()
    }


# (file text, line, the error's field and words): each must be refused with exactly that.
BAD = [
    # replicas
    ("lab: x\nsandboxes:\n  s:\n    replicas: 0\n", 4, "sandboxes.s.replicas: input should be"),
    ("lab: x\nsandboxes:\n  s:\n    replicas: '3'\n", 4, "sandboxes.s.replicas: input should"),
    (
        "lab: x\nsandboxes:\n  s: {replicas: 2}\n  s-2: {}\n",
        3,
        "sandboxes.s.replicas: replica s-2 has the name of another sandbox",
    ),
    (
        "lab: x\nnetworks: {a: {subnet: 10.3.0.0/24}}\nsandboxes:\n  s:\n    replicas: 2\n"
        "    networks: {a: {ipv4_address: 10.3.0.9}}\n",
        5,
        "replicas cannot share",
    ),
    (
        "lab: x\nsandboxes:\n  s: {replicas: 2}\n  t: {links: [s]}\n",
        4,
        "sandboxes.t.links.0: link to 's': it has replicas",
    ),
    # YAML itself
    ("lab: [\n", 2, "YAML syntax error"),
    ("lab: x\n  networks: {}\n", 2, "YAML syntax error"),
    ("lab: x\nnetworks:\n  a: {subnet: 10.0.0.0/8\n", 4, "YAML syntax error"),
    ("lab: x\nsandboxes:\n\t- a\n", 3, "YAML syntax error"),
    ("lab: 'x\n", 2, "YAML syntax error"),
    ("", 1, "the file is empty"),
    ("# only a comment\n", 1, "the file is empty"),
    ("- lab\n- x\n", 1, "the top level must be a mapping"),
    ("just text\n", 1, "the top level must be a mapping"),
    # duplicate keys (YAML forbids them; PyYAML would keep the last)
    ("lab: x\nlab: y\n", 2, "lab: duplicate key"),
    ("lab: x\nnetworks:\n  a: {}\n  a: {}\n", 4, "networks.a: duplicate key"),
    ("lab: x\nsandboxes:\n  s: {}\n  s: {}\n", 4, "sandboxes.s: duplicate key"),
    ("lab: x\nsandboxes:\n  s:\n    ports: []\n    ports: []\n", 5, "sandboxes.s.ports: duplicate"),
    # the top level
    ("networks: {}\n", 1, "lab: missing field"),
    ("lab: x\nextra: 1\n", 2, "extra: unknown field"),
    ("lab: [a]\n", 1, "lab: input should be a valid string"),
    ("lab: 'bad name'\n", 1, "lab: invalid lab name"),
    ("lab: ''\n", 1, "lab: invalid lab name"),
    ("lab: " + "x" * 70 + "\n", 1, "lab: invalid lab name"),
    ("lab: x\nnetworks: [a, b]\n", 2, "networks: input should be a valid dictionary"),
    ("lab: x\nsandboxes: 3\n", 2, "sandboxes: input should be a valid dictionary"),
    # networks: wrong types, unknown keys, bad values
    ("lab: x\nnetworks:\n  a: 1\n", 3, "networks.a: input should be a valid dictionary"),
    ("lab: x\nnetworks:\n  a: {driver: [x]}\n", 3, "networks.a.driver: input should be"),
    ("lab: x\nnetworks:\n  a:\n    internal: maybe\n", 4, "networks.a.internal: input should be"),
    ("lab: x\nnetworks:\n  a:\n    subnets: 10.0.0.0/8\n", 4, "networks.a.subnets: unknown field"),
    ("lab: x\nnetworks:\n  a:\n    subnet: 10.0.0.0/33\n", 4, "networks.a.subnet: invalid subnet"),
    ("lab: x\nnetworks:\n  a:\n    subnet: banana\n", 4, "networks.a.subnet: invalid subnet"),
    ("lab: x\nnetworks:\n  a:\n    ip_range: 1.2.3\n", 4, "networks.a.ip_range: invalid"),
    ("lab: x\nnetworks:\n  a:\n    options: [x]\n", 4, "networks.a.options: input should be"),
    ("lab: x\nnetworks:\n  a:\n    labels: {k: [1]}\n", 4, "networks.a.labels.k: input should be"),
    ("lab: x\nnetworks:\n  a:\n    aux_addresses: [1]\n", 4, "networks.a.aux_addresses: input"),
    ("lab: x\nnetworks:\n  'b c': {}\n", 3, "networks.b c: invalid network name"),
    ("lab: x\nnetworks:\n  " + "n" * 62 + ": {}\n", 3, "invalid network name"),
    # overlapping subnets
    (
        "lab: x\nnetworks:\n  a: {subnet: 10.0.0.0/8}\n  b: {subnet: 10.1.0.0/16}\n",
        4,
        "networks.b.subnet: 10.1.0.0/16 overlaps network a's 10.0.0.0/8",
    ),
    (
        "lab: x\nnetworks:\n  a: {subnet: 10.9.0.0/24}\n  b: {subnet: 10.9.0.0/24}\n",
        4,
        "networks.b.subnet: 10.9.0.0/24 overlaps",
    ),
    # sandboxes: wrong types, unknown keys
    ("lab: x\nsandboxes:\n  s: []\n", 3, "sandboxes.s: input should be a valid dictionary"),
    ("lab: x\nsandboxes:\n  s:\n    image: busybox\n", 4, "sandboxes.s.image: unknown field"),
    ("lab: x\nsandboxes:\n  s:\n    ports: 80\n", 4, "sandboxes.s.ports: input should be"),
    ("lab: x\nsandboxes:\n  s:\n    ports: [{a: 1}]\n", 4, "sandboxes.s.ports.0: input should"),
    ("lab: x\nsandboxes:\n  s:\n    dns: 1.1.1.1\n", 4, "sandboxes.s.dns: input should be"),
    ("lab: x\nsandboxes:\n  s:\n    command: 3\n", 4, "sandboxes.s.command: input should be"),
    ('lab: x\nsandboxes:\n  s:\n    command: "sh -c \'x"\n', 4, "sandboxes.s.command: value"),
    ("lab: x\nsandboxes:\n  s:\n    environment: 3\n", 4, "sandboxes.s.environment: input"),
    ("lab: x\nsandboxes:\n  s:\n    networks: 3\n", 4, "sandboxes.s.networks: input should be"),
    (
        "lab: x\nsandboxes:\n  s:\n    networks: {bridge: {ip: 1.2.3.4}}\n",
        4,
        "sandboxes.s.networks.bridge.ip: unknown field",
    ),
    (
        "lab: x\nsandboxes:\n  s:\n    networks: {bridge: {aliases: a}}\n",
        4,
        "sandboxes.s.networks.bridge.aliases: input should be",
    ),
    ("lab: x\nsandboxes:\n  's t': {}\n", 3, "sandboxes.s t: invalid container name"),
    # references, addresses and values the schema cannot check
    (
        "lab: x\nsandboxes:\n  s:\n    networks: [nope]\n",
        4,
        "sandboxes.s.networks.nope: network 'nope' is not declared under networks",
    ),
    ("lab: x\nsandboxes:\n  s:\n    networks: {}\n", 4, "sandboxes.s.networks: a sandbox needs"),
    (
        "lab: x\nsandboxes:\n  s:\n    networks: [host, bridge]\n",
        4,
        "sandboxes.s.networks.host: network host cannot be combined",
    ),
    (
        "lab: x\nsandboxes:\n  s:\n    links: [ghost]\n",
        4,
        "sandboxes.s.links.0: link to 'ghost': no such sandbox",
    ),
    (
        "lab: x\nnetworks: {a: {subnet: 10.3.0.0/24}}\nsandboxes:\n  s:\n"
        "    networks: {a: {ipv4_address: 10.4.0.1}}\n",
        5,
        "sandboxes.s.networks.a.ipv4_address: 10.4.0.1 is not in 10.3.0.0/24",
    ),
    (
        "lab: x\nnetworks: {a: {}}\nsandboxes:\n  s:\n"
        "    networks: {a: {ipv4_address: 10.4.0.1}}\n",
        5,
        "sandboxes.s.networks.a.ipv4_address: a static address needs a network with a subnet",
    ),
    (
        "lab: x\nsandboxes:\n  s:\n    networks: {bridge: {ipv4_address: 1.2.3}}\n",
        4,
        "sandboxes.s.networks.bridge.ipv4_address: invalid address '1.2.3'",
    ),
    (
        "lab: x\nsandboxes:\n  s:\n    ports: ['8080:80/sctp']\n",
        4,
        "sandboxes.s.ports.0: invalid protocol",
    ),
    ("lab: x\nsandboxes:\n  s:\n    ports: ['99999:80']\n", 4, "sandboxes.s.ports.0:"),
    ("lab: x\nsandboxes:\n  s:\n    expose: [abc]\n", 4, "sandboxes.s.expose.0:"),
    (
        "lab: x\nsandboxes:\n  s:\n    extra_hosts: [nocolon]\n",
        4,
        "sandboxes.s.extra_hosts.0: invalid extra host 'nocolon'",
    ),
    (
        "lab: x\nsandboxes:\n  s:\n    hostname: -bad-\n",
        4,
        "sandboxes.s.hostname: invalid hostname",
    ),
    ("lab: x\nsandboxes:\n  s:\n    command: ['']\n", 4, "sandboxes.s.command: empty command"),
    ("lab: x\nsandboxes:\n  s:\n    host: no_such!\n", 4, "sandboxes.s.host: invalid hostname"),
    (
        "lab: x\nsandboxes:\n  s: {host: h1}\n  t:\n    host: h2\n    links: [s]\n",
        6,
        "sandboxes.t.links.0: link to 's': it is not placed on the same host",
    ),
]


@pytest.mark.parametrize(("text", "line", "words"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_a_bad_file_is_refused_on_one_line_with_its_file_line_and_field(text, line, words):
    with pytest.raises(InvalidInput) as caught:
        topology.parse(text, "lab.yaml")
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    assert message.startswith(f"lab.yaml:{line}: "), message
    assert words in message, message


def test_replicas_are_sandboxes_alike():
    topo = topology.parse("lab: x\nsandboxes:\n  s: {replicas: 3, command: sleep 1}\n  t: {}\n")
    assert list(topo.sandboxes) == ["s-1", "s-2", "s-3", "t"]
    assert topo.sandboxes["s-2"] == topo.sandboxes["t"].model_copy(
        update={"command": ["sleep", "1"]}
    )


def test_each_host_makes_the_networks_and_the_sandboxes_placed_on_it():
    topo = topology.parse(
        "lab: x\nnetworks: {ov: {driver: overlay}}\nsandboxes:\n"
        "  a: {host: h1, networks: [ov]}\n  b: {host: h2, networks: [ov], replicas: 2}\n"
        "  c: {networks: [ov]}\n"
    )
    assert topo.elsewhere("h1") == ["b-1", "b-2"]
    assert list(topo.here("h1").sandboxes) == ["a", "c"]
    assert list(topo.here("h2").sandboxes) == ["b-1", "b-2", "c"]
    assert list(topo.here("h3").sandboxes) == ["c"] and topo.here("h3").networks == topo.networks
    one = topology.parse("lab: x\nsandboxes: {a: {}}\n")
    assert one.here("anywhere") is one


def test_there_are_at_least_fifty_bad_files():
    assert len(BAD) >= 50


def test_an_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(InvalidInput, match=r"^.*missing.yaml: cannot read the topology"):
        topology.load(str(tmp_path / "missing.yaml"))


# ---------------------------------------------------------------------------- the difference
def _made(topo: topology.Topology) -> View:
    """The store as a complete apply of ``topo`` leaves it (records only)."""
    d = diff.diff(topo, View())
    nets = [Network(id=f"n{i}", name=r.name, driver=r.driver, labels=r.labels)
            for i, r in enumerate(d.network_requests())]  # fmt: skip
    by_name = {n.name: n for n in nets}
    ctrs, eps = [], []
    for i, (short, req) in enumerate(zip(d.add_sandboxes, d.sandbox_requests(), strict=True)):
        ctrs.append(Container(id=f"c{i}", name=req.name, netns=f"/run/netns/{req.name}",
                              labels=req.labels, pid=1 if req.command else None))  # fmt: skip
        for net, attach in topo.sandboxes[short].networks.items():
            nid = by_name[topo.network_name(net)].id
            ip = attach.ipv4_address or "10.40.0.99"
            eps.append(Endpoint(id=f"e{len(eps)}", network_id=nid, container_id=f"c{i}",
                                ifname=f"eth{len(eps)}", ip=ip))  # fmt: skip
    return View(nets, ctrs, eps)


def test_the_same_file_again_is_no_change_and_an_edit_changes_only_its_difference():
    topo = topology.parse(GOOD)
    view = _made(topo)
    assert diff.diff(topo, view).empty
    edited = topology.parse(GOOD.replace("POSTGRES_DB: shop", "POSTGRES_DB: shop2"))
    d = diff.diff(edited, view)
    assert (d.add_networks, d.add_sandboxes) == ([], ["db"])
    assert [c.name for c in d.remove_sandboxes] == ["tier-db"] and d.changed == {"sandbox db"}
    # A changed network takes its sandboxes with it; a removed entry is only removed.
    edited = topology.parse(GOOD.replace("internal: true", "internal: false"))
    d = diff.diff(edited, view)
    assert d.add_networks == ["back"] and sorted(d.add_sandboxes) == ["db", "web"]
    assert d.why == {"web": "network back is made again", "db": "network back is made again"}
    fewer = topology.parse(GOOD.split("  db:")[0])
    d = diff.diff(fewer, view)
    assert not d.add_sandboxes and [c.name for c in d.remove_sandboxes] == ["tier-db"]


def test_a_sandbox_a_killed_apply_left_unfinished_is_made_again():
    topo = topology.parse(GOOD)
    view = _made(topo)
    back = next(n.id for n in view.networks if n.name == "tier-back")
    no_second_network = View(view.networks, view.containers,
                             [e for e in view.endpoints
                              if (e.container_id, e.network_id) != ("c0", back)])  # fmt: skip
    d = diff.diff(topo, no_second_network)
    assert d.why["web"] == "it is not on network back"
    not_started = View(view.networks, [c if c.name != "tier-web" else
                                       Container(**{**c.to_doc(), "pid": None})
                                       for c in view.containers], view.endpoints)  # fmt: skip
    assert diff.diff(topo, not_started).why == {"web": "its command was never started"}


def test_what_another_lab_or_the_user_made_is_not_the_labs():
    topo = topology.parse(GOOD)
    view = _made(topo)
    mine = marks.owned(view, "tier")
    theirs = View([*view.networks, Network(id="x", name="tier-front2", driver="bridge")],
                  [*view.containers, Container(id="y", name="tier-web2", netns="")],
                  view.endpoints)  # fmt: skip
    assert marks.owned(theirs, "tier") == mine
    assert diff.diff(topo, theirs).empty


def test_requests_carry_the_labs_names_and_marks():
    topo = topology.parse(textwrap.dedent(GOOD))
    d = diff.diff(topo, View())
    web, db = d.sandbox_requests()
    assert (web.name, web.network, web.ip) == ("tier-web", "tier-front", "10.40.0.10")
    assert web.aliases == ["web"] and web.publish == ["8080:80"]
    assert db.links == ["tier-web:web"] and db.labels[marks.LAB] == "tier"
    assert d.connects() == [diff.Join("tier-back", "tier-web", None, ("www", "web"))]
    assert d.commands() == ["tier-web"]
