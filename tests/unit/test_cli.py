"""CLI parsing and rendering, without root or kernel."""

import json

import pytest

from lowbridge import output
from lowbridge.cli import commands, parser, startup
from lowbridge.errors import InvalidInput
from tests.unit import samples


def parse(*argv):
    return parser.build_parser().parse_args(argv)


def test_network_create_flags_like_docker():
    a = parse(
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.254",
        "--ip-range",
        "10.1.0.128/25",
        "--aux-address",
        "r=10.1.0.9",
        "--internal",
        "--label",
        "env=lab",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "mynet",
    )
    assert a.func is commands.cmd_network_create
    assert (a.name, a.driver, a.subnet, a.internal) == ("mynet", "bridge", ["10.1.0.0/24"], True)
    assert commands._pairs(a.opt, "-o") == {"com.docker.network.driver.mtu": "1400"}
    assert commands._pairs(["flag"], "--label", need_value=False) == {"flag": ""}


def test_bad_pairs_are_user_errors():
    with pytest.raises(InvalidInput):
        commands._pairs(["novalue"], "--opt")


def test_run_takes_the_command_after_double_dash():
    a = parse(
        "run", "--name", "web", "--network", "n", "--ip", "10.1.0.5", "-d", "--", "sleep", "5"
    )
    assert (a.name, a.network, a.ip, a.detach) == ("web", "n", "10.1.0.5", True)
    assert commands._command(a) == ["sleep", "5"]
    b = parse("exec", "web", "--", "ip", "-br", "addr")
    assert commands._command(b) == ["ip", "-br", "addr"]


def test_docker_aliases():
    assert parse("ps").func is commands.cmd_container_ls
    assert parse("rm", "-f", "a", "b").containers == ["a", "b"]
    assert parse("inspect", "a").func is commands.cmd_container_inspect
    assert parse("network", "ls").func is commands.cmd_network_ls


def test_missing_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        parse("network", "create")
    assert e.value.code == 2


def test_table_layout_like_docker():
    text = output.table(["NETWORK ID", "NAME"], [["abc", "bridge"], ["defghijklmnop", "x"]])
    assert text.splitlines() == [
        "NETWORK ID      NAME",
        "abc             bridge",
        "defghijklmnop   x",
    ]


def test_inspect_documents_have_dockers_keys():
    net, ctr, ep = samples.records()
    ndoc = output.network_doc(net, [ep], {ctr.id: ctr})
    assert ndoc["IPAM"]["Config"] == [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}]
    assert ndoc["Containers"][ctr.id] == {
        "Name": "web",
        "EndpointID": ep.id,
        "MacAddress": "02:42:0a:01:00:02",
        "IPv4Address": "10.1.0.2/24",
        "IPv6Address": "",
    }
    cdoc = output.container_doc(ctr, [ep], {net.id: net}, [42])
    settings = cdoc["NetworkSettings"]["Networks"]["mynet"]
    assert (settings["IPAddress"], settings["Gateway"], settings["IPPrefixLen"]) == (
        "10.1.0.2",
        "10.1.0.1",
        24,
    )
    assert {k: cdoc["State"][k] for k in ("Status", "Running", "Pid")} == {
        "Status": "running", "Running": True, "Pid": 42}  # fmt: skip
    assert cdoc["Name"] == "/web"
    json.dumps([ndoc, cdoc])


def test_ago():
    import datetime as dt

    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert output.ago("2026-01-01T11:59:55+00:00", now) == "5 seconds ago"
    assert output.ago("2026-01-01T11:58:00+00:00", now) == "2 minutes ago"
    assert output.ago("2026-01-01T11:00:00+00:00", now) == "About an hour ago"


LINES = [
    ["network", "ls"],
    ["network", "list", "-q"],
    ["network", "create", "--subnet", "10.1.0.0/24", "-o", "a=b", "n"],
    ["network", "connect", "--ip", "10.1.0.5", "--alias", "db", "n", "c"],
    ["network", "disconnect", "n", "c"],
    ["network", "remove", "a", "b"],
    ["--root", "/tmp/x", "--debug", "network", "inspect", "n"],
    ["--firewall-backend", "nftables", "firewall", "reapply"],
    ["container", "create", "--name", "c", "--network", "n", "--", "sh"],
    ["container", "ls", "-a"],
    ["container", "rm", "-f", "c"],
    ["run", "-d", "--name", "web", "-p", "8080:80", "--", "sleep", "1"],
    ["exec", "-it", "web", "--", "sh"],
    ["ps", "-q"],
    ["rm", "x", "y"],
    ["inspect", "x"],
    ["demo"],
    ["--store=etcd://h:2379", "agent"],
]


@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_the_parser_built_for_a_command_line_parses_it_as_the_full_one(argv):
    assert parser._wanted(argv) is not None  # these take the short path
    full = parser.build_parser().parse_args(argv)
    assert vars(parser.parser_for(argv).parse_args(argv)) == vars(full)


@pytest.mark.parametrize(
    "argv",
    [[], ["network"], ["netwrk", "ls"], ["network", "conect", "a", "b"], ["-h"], ["network", "-h"],
     ["network", "connect", "-h"], ["run", "--bogus"], ["container"]],
    ids=lambda argv: " ".join(argv) or "(none)",
)  # fmt: skip
def test_help_and_errors_read_as_with_the_full_parser(argv, capsys):
    outputs = []
    for built in (parser.parser_for(argv), parser.build_parser()):
        with pytest.raises(SystemExit) as exc:
            built.parse_args(argv)
        captured = capsys.readouterr()
        outputs.append((exc.value.code, captured.out, captured.err))
    assert outputs[0] == outputs[1]


def test_a_deferred_module_loads_at_its_first_attribute(monkeypatch):
    """startup.Deferred, which stands in for inspect: importing it loads nothing; the first
    attribute loads the real module, which then takes the stand-in's place."""
    import sys

    monkeypatch.delitem(sys.modules, "tabnanny", raising=False)
    stand_in = startup.Deferred("tabnanny")
    monkeypatch.setitem(sys.modules, "tabnanny", stand_in)
    import tabnanny

    assert tabnanny is stand_in and "check" not in vars(stand_in)
    assert callable(tabnanny.check)
    real = sys.modules["tabnanny"]
    assert real is not stand_in and real.check is tabnanny.check
    assert tabnanny.__name__ == "tabnanny" and tabnanny.__spec__ is not None
