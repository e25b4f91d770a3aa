"""--format and --filter: Go templates, docker's functions and tables, filters (no root).

The cases with a docker documentation page beside them are that page's examples, with the
output the page shows (docs.docker.com: "Format command and log output", ``docker inspect``,
``docker ps``, ``docker network ls``)."""

import json

import pytest

from lowbridge import filters, gotemplate, output
from lowbridge.cli import formats
from lowbridge.errors import InvalidInput
from lowbridge.models import Container, Network
from lowbridge.ports import PortMapping
from tests.unit import samples

# A container as `docker inspect` documents it (the parts the examples read).
INSPECT = {
    "Id": "a87ecb4f327c",
    "Name": "/Web",
    "Path": "sh",
    "Args": ["-c", "sleep 10", "x"],
    "LogPath": "/var/lib/docker/containers/a87ecb4f327c/a87ecb4f327c-json.log",
    "Config": {"Image": "ubuntu:22.04", "Labels": {"com.example.env": "lab"}, "Cmd": None},
    "HostConfig": {"Links": None},
    "NetworkSettings": {
        "IPAddress": "172.17.0.2",
        "MacAddress": "02:42:ac:11:00:02",
        "Ports": {"8787/tcp": [{"HostIp": "0.0.0.0", "HostPort": "16387"}],
                  "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
        "Networks": {"bridge": {"IPAddress": "172.17.0.2", "MacAddress": "02:42:ac:11:00:02"},
                     "mynet": {"IPAddress": "10.10.0.3", "MacAddress": "02:42:0a:0a:00:03"}},
    },
}  # fmt: skip


def inspect(fmt: str, doc: dict = INSPECT) -> str:
    return formats.documents([doc], fmt)


@pytest.mark.parametrize(
    ("fmt", "want"),
    [
        # docker inspect reference
        ("{{.NetworkSettings.IPAddress}}", "172.17.0.2"),
        ("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "172.17.0.210.10.0.3"),
        ("{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}",
         "02:42:ac:11:00:0202:42:0a:0a:00:03"),
        ("{{.LogPath}}", "/var/lib/docker/containers/a87ecb4f327c/a87ecb4f327c-json.log"),
        ("{{.Config.Image}}", "ubuntu:22.04"),
        ("{{range $p, $conf := .NetworkSettings.Ports}} {{$p}} -> {{(index $conf 0).HostPort}} "
         "{{end}}", " 80/tcp -> 8080  8787/tcp -> 16387 "),
        ('{{(index (index .NetworkSettings.Ports "8787/tcp") 0).HostPort}}', "16387"),
        ("{{json .Config}}",
         '{"Image":"ubuntu:22.04","Labels":{"com.example.env":"lab"},"Cmd":null}'),
        # "Format command and log output"
        ('{{join .Args " , "}}', "-c , sleep 10 , x"),
        ("{{json .Args}}", '["-c","sleep 10","x"]'),
        ("{{lower .Name}}", "/web"),
        ('{{split .Config.Image ":"}}', "[ubuntu 22.04]"),
        ("{{title .Name}}", "/Web"),
        ("{{upper .Name}}", "/WEB"),
        ("{{range .NetworkSettings.Networks}}{{println .IPAddress}}{{end}}",
         "172.17.0.2\n10.10.0.3\n"),
        ('{{index .Config.Labels "com.example.env"}}', "lab"),
        # Go's text/template itself
        ("{{.Config.Labels}}", "map[com.example.env:lab]"),
        ("{{.Config.Cmd}}", "[]"),  # a typed nil slice, as docker prints it
        ("{{if .Config.Cmd}}cmd{{else}}no cmd{{end}}", "no cmd"),
        ("{{if .HostConfig.Links}}links{{else if .Config.Cmd}}cmd{{else}}none{{end}}", "none"),
        ("{{with .Config}}{{.Image}}{{end}}", "ubuntu:22.04"),
        ("{{- range $i, $a := .Args}}{{if $i}},{{end}}{{$a}}{{end -}}", "-c,sleep 10,x"),
        ('{{$n := .Name}}{{$n = printf "%s!" $n}}{{$n}}', "/Web!"),
        ('{{printf "%-6s|%3d|%q|%v|%t" "ab" 7 "q" .Args true}}',
         'ab    |  7|"q"|[-c sleep 10 x]|true'),
        ("{{len .Args}} {{index .Args 1}} {{slice .Args 1 2}}", "3 sleep 10 [sleep 10]"),
        ('{{if and .Name (eq .Path "sh")}}yes{{end}}{{or "" "b"}}{{not 0}}', "yesbtrue"),
        ('{{if eq .Path "bash" "sh"}}one of{{end}} {{lt 1 2}} {{ge "b" "a"}}', "one of true true"),
        ('{{if .Config.Cmd}}a{{else if eq .Path "sh"}}b{{else}}c{{end}}', "b"),
        ("{{range .Args}}{{if eq . \"x\"}}{{break}}{{end}}{{.}};{{end}}", "-c;sleep 10;"),
        ("{{range .Args}}{{if eq . \"-c\"}}{{continue}}{{end}}{{.}};{{end}}", "sleep 10;x;"),
        ("{{range .HostConfig.Links}}x{{else}}none{{end}}", "none"),
        ("a {{/* a comment */}} b {{- /* trimmed */ -}} c", "a  bc"),
        ("{{print 1 2 \"a\" 3}} {{html \"<a&b>\"}} {{urlquery \"a b&c\"}}",
         "1 2a3 &lt;a&amp;b&gt; a+b%26c"),
        ("{{`raw \\n`}} {{'a'}} {{0x10}} {{1.5}} {{nil | printf \"%v\"}}",
         "raw \\n 97 16 1.5 <nil>"),
    ],
)  # fmt: skip
def test_inspect_formats_as_docker_documents_them(fmt, want):
    assert inspect(fmt) == want + "\n"


@pytest.mark.parametrize(
    ("fmt", "error"),
    [
        ("{{.Foo}}", 'template: :1:2: executing "" at <.Foo>: map has no entry for key "Foo"'),
        # Go places a chain at its second field (docker: <.Config.Nope> is :1:9)
        ("{{.NetworkSettings.Nope}}", 'template: :1:18: executing "" at <.NetworkSettings.Nope>: '
         'map has no entry for key "Nope"'),
        ("{{.Config.Nope}}", 'template: :1:9: executing "" at <.Config.Nope>: '
         'map has no entry for key "Nope"'),
        ("x\n{{index .Args 5}}", 'template: :2:2: executing "" at <index .Args 5>: error calling '
         "index: index out of range: 5"),
        ("{{.Name.Foo}}", 'template: :1:7: executing "" at <.Name.Foo>: can\'t evaluate field '
         "Foo in type string"),
        ("{{nosuch .Name}}", 'template: :1: function "nosuch" not defined'),
        ("{{.Name", "template: :1: unclosed action"),
        ("{{if .Name}}x", "template: :1: unexpected EOF"),
        ("{{end}}", "template: :1: unexpected {{end}}"),
        ("{{$x}}", 'template: :1: undefined variable "$x"'),
        ("{{break}}", "template: :1: {{break}} outside {{range}}"),
        ("{{upper .Args}}", 'template: :1:2: executing "" at <upper .Args>: error calling upper: '
         "wrong type for value; expected string; got []interface {}"),
        ('{{eq .Name 1}}', 'template: :1:2: executing "" at <eq .Name 1>: error calling eq: '
         "incompatible types for comparison"),
    ],
)  # fmt: skip
def test_template_errors_read_as_dockers(fmt, error):
    with pytest.raises(InvalidInput) as exc:
        inspect(fmt)
    assert str(exc.value) == f"template parsing error: {error}"
    assert exc.value.exit_code == 2


def test_inspect_without_format_and_json():
    assert json.loads(inspect("")) == [INSPECT]
    assert inspect("json") == json.dumps([INSPECT], separators=(",", ":")) + "\n"
    assert formats.documents([], "{{.Id}}") == "\n"  # docker prints an empty line


def _rows():
    net, ctr, _ = samples.records()
    web = Container(
        id="a87ecb4f327c" + "0" * 52, name="web", netns="/run/netns/web",
        command=("/bin/sh", "-c", "#(nop) MAINTAINER Ubuntu"),
        labels={"com.docker.swarm.node": "ubuntu", "com.docker.swarm.storage": "ssd"},
        ports=(PortMapping("0.0.0.0", 8080, 80, "tcp"),),
    )  # fmt: skip
    return [
        output.ContainerRow(web, ["mynet", "bridge"], "running"),
        output.ContainerRow(ctr, ["mynet"], "running"),
    ]


def test_ps_formats_as_docker_documents_them():
    rows = _rows()
    # The page shows the old cut at 20 characters; docker since 17.06 quotes the command and
    # cuts it at 19 and an ellipsis (formatter.Ellipsis).
    assert formats.rows(rows[:1], "{{.ID}}: {{.Command}}", output.ContainerRow.HEADERS) == (
        'a87ecb4f327c: "/bin/sh -c #(nop) M…"\n'
    )
    table = formats.rows(rows[:1], "table {{.ID}}\\t{{.Labels}}", output.ContainerRow.HEADERS)
    assert table.splitlines() == [
        "CONTAINER ID   LABELS",
        "a87ecb4f327c   com.docker.swarm.node=ubuntu,com.docker.swarm.storage=ssd",
    ]
    one = formats.rows(rows[:1], '{{.Names}} {{.Label "com.docker.swarm.node"}} {{.Networks}} '
                       "{{.Ports}}", output.ContainerRow.HEADERS)  # fmt: skip
    assert one == "web ubuntu bridge,mynet 0.0.0.0:8080->80/tcp\n"
    doc = json.loads(formats.rows(rows[:1], "json", output.ContainerRow.HEADERS))
    assert list(doc) == sorted(doc) and doc["Names"] == "web" and doc["State"] == "running"
    assert doc["Labels"] == "com.docker.swarm.node=ubuntu,com.docker.swarm.storage=ssd"


def test_a_table_header_names_each_column_and_columns_line_up():
    text = formats.rows(_rows(), "table {{.Names}}\t{{.State}}\t{{upper .Names}}",
                        output.ContainerRow.HEADERS)  # fmt: skip
    assert text.splitlines() == [
        "NAMES     STATE     NAMES",
        "web       running   WEB",
        "web       running   WEB",
    ]


def test_an_unknown_field_of_a_list_is_dockers_error():
    with pytest.raises(InvalidInput) as exc:
        formats.rows(_rows(), "{{.Bogus}}", output.ContainerRow.HEADERS)
    # docker 20.10's words for ps (network ls says "template parsing error" for both)
    assert str(exc.value) == (
        'failed to execute template: template: :1:2: executing "" at <.Bogus>: can\'t evaluate '
        "field Bogus in type *formatter.ContainerContext"
    )
    with pytest.raises(InvalidInput) as exc:
        formats.rows(_rows(), "{{.ID", output.ContainerRow.HEADERS)
    assert str(exc.value) == "failed to parse template: template: :1: unclosed action"
    net = output.NetworkRow(samples.records()[0])
    with pytest.raises(InvalidInput) as exc:
        formats.rows([net], "{{.Foo}}", output.NetworkRow.HEADERS)
    assert str(exc.value) == (
        'template parsing error: template: :1:2: executing "" at <.Foo>: can\'t evaluate field '
        "Foo in type *network.networkContext"
    )


def test_network_ls_formats_as_docker_documents_them():
    when = "2016-11-28T17:11:52+00:00"
    nets = [Network(id=i + "0" * 52, name=name, driver=driver, created=when)
            for i, name, driver in (("afaaab448eb2", "bridge", "bridge"),
                                    ("d1584f8dc718", "host", "host"))]  # fmt: skip
    rows = [output.NetworkRow(n) for n in nets]
    assert formats.rows(rows, "{{.ID}}: {{.Driver}}", output.NetworkRow.HEADERS) == (
        "afaaab448eb2: bridge\nd1584f8dc718: host\n"
    )
    assert rows[0].CreatedAt == "2016-11-28 17:11:52 +0000 UTC"
    doc = json.loads(formats.rows(rows[:1], "json", output.NetworkRow.HEADERS))
    assert doc == {"CreatedAt": "2016-11-28 17:11:52 +0000 UTC", "Driver": "bridge",
                   "ID": "afaaab448eb2", "IPv6": "false", "Internal": "false", "Labels": "",
                   "Name": "bridge", "Scope": "local"}  # fmt: skip


def test_tabwriter_lays_out_as_gos():
    # minimum width 10, padding 3, the text after a line's last tab not padded, and a line
    # without a cell in a column ends that column's block
    assert output.tabwrite(["a\tb\tc", "aaaa\tbbbbbbbbbbbb\tc", "x", "q\tw"]).splitlines() == [
        "a         b              c",
        "aaaa      bbbbbbbbbbbb   c",
        "x",
        "q         w",
    ]


def test_durations_as_docker_prints_them():
    cases = {0.4: "Less than a second", 1: "1 second", 59: "59 seconds", 60: "About a minute",
             150: "2 minutes", 3600: "About an hour", 5400: "2 hours", 3 * 86400: "3 days",
             20 * 86400: "2 weeks", 70 * 86400: "2 months", 800 * 86400: "2 years"}  # fmt: skip
    assert {s: output.human_duration(s) for s in cases} == cases


def test_go_prints_floats_as_fmt_does():
    cases = {3.0: "3", 0.1: "0.1", 1e6: "1e+06", 123456.0: "123456", 1234567.0: "1.234567e+06",
             1e-5: "1e-05", -2.5: "-2.5", 0.0: "0"}  # fmt: skip
    assert {f: gotemplate.go_str(f) for f in cases} == cases


# ------------------------------------------------------------------ filters
NETS = [
    dict(id="aa11" + "0" * 60, name="bridge", driver="bridge", scope="local", labels={},
         predefined=True, in_use=True),
    dict(id="bb22" + "0" * 60, name="front", driver="bridge", scope="local",
         labels={"usage": "prod"}, predefined=False, in_use=True),
    dict(id="cc33" + "0" * 60, name="lan", driver="macvlan", scope="local",
         labels={"usage": "dev"}, predefined=False, in_use=False),
    dict(id="dd44" + "0" * 60, name="ovl", driver="overlay", scope="global", labels={},
         predefined=False, in_use=False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["driver=bridge"], ["bridge", "front"]),
        (["driver=bridge", "driver=macvlan"], ["bridge", "front", "lan"]),
        (["name=fro"], ["front"]),
        (["name=^l.n$"], ["lan"]),
        (["id=bb22"], ["front"]),
        (["label=usage"], ["front", "lan"]),
        (["label=usage=prod"], ["front"]),
        (["scope=global"], ["ovl"]),
        (["type=builtin"], ["bridge"]),
        (["type=custom", "driver=bridge"], ["front"]),
        (["dangling=true"], ["lan", "ovl"]),
        (["dangling=false"], ["bridge", "front"]),
    ],
)
def test_network_filters_as_dockers(flags, names):
    f = filters.parse(flags, filters.NETWORK_KEYS)
    assert [n["name"] for n in NETS if filters.network(f, **n)] == names


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["name=web"], ["web", "web2"]),
        (["name=^/web$"], ["web"]),
        (["id=b0"], ["web2"]),
        (["status=exited"], ["db"]),
        (["label=tier=front"], ["web"]),
        (["network=back"], ["db"]),
        (["network=f00"], ["web", "web2"]),
        (["network=front", "network=back"], ["web", "web2", "db"]),
    ],
)
def test_container_filters_as_dockers(flags, names):
    boxes = [
        dict(id="a0" * 32, name="web", state="running", labels={"tier": "front"},
             networks={"front": "f00" + "0" * 61}),
        dict(id="b0" * 32, name="web2", state="running", labels={},
             networks={"front": "f00" + "0" * 61}),
        dict(id="c0" * 32, name="db", state="exited", labels={"tier": "back"},
             networks={"back": "ba0" + "0" * 61}),
    ]  # fmt: skip
    f = filters.parse(flags, filters.CONTAINER_KEYS)
    assert [b["name"] for b in boxes if filters.container(f, **b)] == names


@pytest.mark.parametrize(
    ("flags", "keys", "error"),
    [
        # docker 20.10's words, each asked of it
        (["bogus=1"], filters.NETWORK_KEYS, "Invalid filter 'bogus'"),
        (
            ["driver"],
            filters.NETWORK_KEYS,
            'invalid argument "driver" for "-f, --filter" flag: '
            "bad format of filter (expected name=value)",
        ),
        (["type=weird"], filters.NETWORK_KEYS, "invalid filter: 'type'='weird'"),
        (
            ["dangling=maybe"],
            filters.NETWORK_KEYS,
            'invalid value for filter \'dangling\', must be "true" (or "1"), or "false" (or "0")',
        ),
        (["status=sleeping"], filters.CONTAINER_KEYS, "Invalid filter 'status=sleeping'"),
        (["driver=bridge"], filters.CONTAINER_KEYS, "Invalid filter 'driver'"),
    ],
)
def test_bad_filters_are_one_line_errors(flags, keys, error):
    with pytest.raises(InvalidInput) as exc:
        filters.parse(flags, keys)
    assert str(exc.value) == error and exc.value.exit_code == 2
