"""The CNI plugin's pure part: parsing a runtime's call, the requests it becomes, the result and
error documents (containernetworking/cni SPEC.md 1.0/1.1)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys

import pytest

from lowbridge.errors import Conflict, InvalidInput, KernelError, NotFound
from lowbridge.models import Endpoint
from lowbridge.plugins import cni

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"}  # fmt: skip
CONF = {"cniVersion": "1.0.0", "name": "net1", "type": "lowbridge", "subnet": "10.1.0.0/24"}


def call(conf: dict | None = None, **env: str) -> cni.Call:
    return cni.parse({**ENV, **env}, json.dumps(CONF if conf is None else conf))


def code(conf: object = None, **env: str) -> int:
    stdin = conf if isinstance(conf, str) else json.dumps(CONF if conf is None else conf)
    with pytest.raises(cni.CniError) as err:
        cni.parse({**ENV, **env}, stdin)
    return err.value.code


def test_parse_reads_the_environment_and_the_configuration():
    c = call()
    assert (c.command, c.container_id, c.netns, c.ifname) == (
        "ADD",
        "abc123",
        "/run/netns/x",
        "eth0",
    )
    assert c.args == {"K8S_POD_NAME": "web"} and c.network == "net1" and c.version == "1.0.0"
    assert call({**CONF, "network": "lbnet"}).network == "lbnet"  # an existing lowbridge network
    assert cni.parse({"CNI_COMMAND": "VERSION"}, "").command == "VERSION"


@pytest.mark.parametrize(
    "stdin, env, expected",
    [
        (None, {"CNI_COMMAND": "ATTACH"}, cni.BAD_ENV),
        ("{nope", {}, cni.BAD_JSON),
        ("[1]", {}, cni.BAD_JSON),
        ({**CONF, "cniVersion": "0.2.0"}, {}, cni.INCOMPATIBLE),
        ({k: v for k, v in CONF.items() if k != "cniVersion"}, {}, cni.INCOMPATIBLE),
        ({**CONF, "name": ""}, {}, cni.BAD_CONFIG),
        ({**CONF, "ipam": {"type": "host-local"}}, {}, cni.UNSUPPORTED_FIELD),
        (None, {"CNI_CONTAINERID": ""}, cni.BAD_ENV),
        (None, {"CNI_CONTAINERID": "-x"}, cni.BAD_ENV),
        (None, {"CNI_IFNAME": "a very long interface"}, cni.BAD_ENV),
        (None, {"CNI_NETNS": ""}, cni.BAD_ENV),
        (None, {"CNI_ARGS": "FOO=1"}, cni.UNSUPPORTED_FIELD),
        (None, {"CNI_ARGS": "FOO"}, cni.BAD_ENV),
    ],
)
def test_parse_errors_carry_the_spec_codes(stdin, env, expected):
    assert code(stdin, **env) == expected


def test_del_needs_no_namespace_and_unknown_args_may_be_ignored():
    assert call(CNI_COMMAND="DEL", CNI_NETNS="").netns == ""
    assert call(CNI_ARGS="IgnoreUnknown=true;FOO=1").args == {}


def test_the_sandbox_request_adopts_the_runtimes_namespace():
    rt = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                           {"hostPort": 53, "containerPort": 53, "protocol": "udp",
                            "hostIP": "127.0.0.1"},
                           {"hostPort": 9, "containerPort": 9, "hostIP": "::1"}],
          "aliases": {"net1": ["web", "www"], "other": ["x"]}}  # fmt: skip
    req = cni.container_request(call({**CONF, "runtimeConfig": rt}))
    assert (req.name, req.network, req.netns, req.ifname) == ("web", "net1", "/run/netns/x", "eth0")
    assert req.publish == ["8080:80/tcp", "127.0.0.1:53:53/udp", "[::1]:9:9/tcp"]
    assert req.aliases == ["www"] and req.labels == {cni.LABEL: "abc123"}
    assert cni.container_request(call(CNI_ARGS="K8S_POD_NAME=not valid;IgnoreUnknown=1")).name == (
        "cni-abc123")  # fmt: skip
    assert cni.container_request(call(CNI_ARGS="IP=10.1.0.9;MAC=02:00:00:00:00:09")).ip == (
        "10.1.0.9")  # fmt: skip
    assert cni.container_request(call({**CONF, "runtimeConfig": {"ips": ["10.1.0.7/24"]}})).ip == (
        "10.1.0.7")  # fmt: skip
    for bad in ({"ips": ["10.1.0.7/24", "10.1.0.8/24"]}, {"portMappings": [{"hostPort": 1}]}):
        with pytest.raises(cni.CniError):
            cni.container_request(call({**CONF, "runtimeConfig": bad}))


def test_the_network_request_is_docker_network_creates():
    req = cni.network_request(call({**CONF, "gateway": "10.1.0.254", "ipRange": "10.1.0.128/25",
                                    "options": {"com.docker.network.driver.mtu": 1400},
                                    "internal": True}))  # fmt: skip
    assert (req.name, req.driver, req.subnet, req.gateway, req.ip_range, req.internal) == (
        "net1", "bridge", "10.1.0.0/24", "10.1.0.254", "10.1.0.128/25", True)  # fmt: skip
    assert req.options == {"com.docker.network.driver.mtu": "1400"}
    with pytest.raises(cni.CniError):
        cni.network_request(call({**CONF, "subnet": 24}))


EP = Endpoint(id="e", network_id="n", container_id="c", ifname="eth0", ip="10.1.0.2",
              prefixlen=24, gateway="10.1.0.1", mac="02:42:0a:01:00:02",
              host_ifname="lbv1")  # fmt: skip
RESOLV = "search example.org\nnameserver 127.0.0.11\noptions ndots:0\n"


def test_the_result_as_spec_1_0_shapes_it():
    assert cni.result(call(), EP, "aa:bb:cc:dd:ee:ff", RESOLV) == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lbv1", "mac": "aa:bb:cc:dd:ee:ff"},
                       {"name": "eth0", "mac": "02:42:0a:01:00:02", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
        "dns": {"nameservers": ["127.0.0.11"], "search": ["example.org"], "options": ["ndots:0"]},
    }  # fmt: skip


def test_older_results_name_the_family_and_prev_results_come_first():
    prev = {"interfaces": [{"name": "x0"}],
            "ips": [{"address": "192.0.2.1/32", "interface": 0}],
            "routes": [{"dst": "192.0.2.0/24"}],
            "dns": {"nameservers": ["192.0.2.53"]}}  # fmt: skip
    dual = dataclasses.replace(EP, host_ifname=None, ip6="fd00::2", prefixlen6=64,
                               gateway6="fd00::1")  # fmt: skip
    out = cni.result(call({**CONF, "cniVersion": "0.4.0", "prevResult": prev}), dual, None, "")
    assert out["interfaces"][0] == {"name": "x0"} and out["interfaces"][1]["name"] == "eth0"
    assert out["ips"][1:] == [
        {"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 1, "version": "4"},
        {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 1, "version": "6"},
    ]
    assert out["routes"][1:] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
                                 {"dst": "::/0", "gw": "fd00::1"}]  # fmt: skip
    assert out["dns"] == {"nameservers": ["192.0.2.53"]}  # no resolv.conf: prevResult's


def test_check_reads_the_addresses_prev_result_gives_the_interface():
    res = cni.result(call(), EP, None, "")
    assert cni.prev_addresses(call({**CONF, "prevResult": res})) == {"10.1.0.2"}
    assert cni.prev_addresses(call({**CONF, "prevResult": res}, CNI_IFNAME="eth1")) == set()


def test_versions_and_error_documents():
    # As CNI's pkg/skel: the newest version, whatever the configuration asks (not even read).
    for stdin in ('{"cniVersion": "0.4.0"}', "", "{not json"):
        assert cni.run(cni.parse({"CNI_COMMAND": "VERSION"}, stdin), None) == {
            "cniVersion": "1.1.0", "supportedVersions": list(cni.SUPPORTED)}  # fmt: skip
    err = cni.CniError(7, "bad", "why")
    assert err.doc("1.0.0") == {"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "why"}
    assert "details" not in cni.CniError(7, "bad").doc("1.0.0")
    assert [cni.error_code(e("x")) for e in (InvalidInput, KernelError, NotFound, Conflict)] == [
        7, 5, 103, 104]  # fmt: skip


def test_the_service_wire_round_trips_and_knows_the_run_directory(monkeypatch):
    from lowbridge.config import Paths
    from lowbridge.plugins import cniservice as svc

    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=x=y", "EMPTY": ""}
    stdin = b'{"cniVersion": "1.0.0", "name": "n\\u00e9t"}\n\x00binary'
    assert svc.parse_request(svc.request(env, stdin)) == (env, stdin)
    assert svc.parse_answer(svc.answer(1, b'{"code": 7}\n', b"warning\n")) == (
        1, b'{"code": 7}\n', b"warning\n")  # fmt: skip
    assert svc.parse_answer(svc.answer(0, b"x" * 100, b"")[:50]) is None  # cut short: died
    assert svc.parse_answer(b"") is None
    for root in (None, "/tmp/lbroot", "relative/root"):
        if root is None:
            monkeypatch.delenv("LOWBRIDGE_ROOT", raising=False)
        else:
            monkeypatch.setenv("LOWBRIDGE_ROOT", root)
        assert svc.run_dir(os.environ) == Paths.resolve().run


def test_answer_is_the_executables_whole_contract():
    ok = cni.answer({"CNI_COMMAND": "VERSION"}, '{"cniVersion": "0.4.0"}', None)
    assert ok == (0, cni.version_answer())
    status, doc = cni.answer({**ENV, "CNI_NETNS": ""}, json.dumps(CONF), None)
    assert (status, doc["code"], doc["cniVersion"]) == (1, cni.BAD_ENV, "1.0.0")

    def refuses() -> None:
        raise InvalidInput("no such thing")

    status, doc = cni.answer(ENV, json.dumps(CONF), refuses)
    assert (status, doc) == (1, {"cniVersion": "1.0.0", "code": 7, "msg": "no such thing"})


def test_a_bug_in_a_call_fails_that_call_not_the_service(monkeypatch):
    from lowbridge.plugins import cniservice as svc

    def broken(env, stdin, controller):  # noqa: ANN001, ANN202
        raise KeyError("oops")

    monkeypatch.setattr(cni, "answer", broken)
    home = dict(os.environ)  # (what the service puts back after the call)
    status, out, err = svc.parse_answer(svc._call({"CNI_COMMAND": "ADD"}, b"{}", home))
    assert dict(os.environ) == home
    assert status == 1 and json.loads(out)["code"] == cni.IO_FAILURE
    assert b"internal error: KeyError" in out and b"Traceback" in err


def test_dns_at_the_gateway_is_asked_for_and_named_in_the_result():
    assert code({**CONF, "dns": "8.8.8.8"}) == cni.BAD_CONFIG
    assert cni.container_request(call({**CONF, "dns": "gateway"})).dns_at_gateway
    assert not cni.container_request(call({**CONF, "dns": "127.0.0.11"})).dns_at_gateway
    out = cni.result(call(), EP, None, RESOLV, dns_at="10.1.0.1")
    assert out["dns"]["nameservers"] == ["10.1.0.1"] and out["dns"]["search"] == ["example.org"]


def test_the_redirect_answers_at_the_gateway_too():
    from lowbridge.dns import redirect

    nft = redirect.render_nft(40001, 40002, "10.1.0.1")
    assert "type nat hook output priority -100" in nft
    assert "ip daddr 10.1.0.1 udp dport 53 dnat to 127.0.0.11:40001" in nft
    assert "ip daddr 10.1.0.1 tcp dport 53 dnat to 127.0.0.11:40002" in nft
    assert "ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:40001" in nft  # (both: nat)
    assert "notrack" not in nft
    assert "nat" not in redirect.render_nft(40001, 40002)  # (127.0.0.11 alone: stateless)
    ipt = redirect.render_iptables(40001, 40002, "10.1.0.1")
    assert ipt.count("-A OUTPUT -d ") == 2
    assert (
        "-A LOWBRIDGE-DNS -d 10.1.0.1/32 -p udp -m udp --dport 53 -m comment --comment "
        '"lowbridge: embedded DNS" -j DNAT --to-destination 127.0.0.11:40001'
    ) in ipt
    assert redirect.render_iptables(40001, 40002).count("-A OUTPUT -d ") == 1


def test_the_installed_plugin_answers_version_itself_and_runs_the_client(tmp_path):
    """``plugin cni`` writes sh: VERSION's answer is cni's, printed without Python; any other
    command execs the interpreter on the client file, with -S -I and the plugin's arguments
    (paths quoted: here with spaces and a quote, and a stand-in interpreter that prints argv)."""
    import subprocess

    from lowbridge.errors import InvalidInput, LowbridgeError
    from lowbridge.plugins import cniservice as svc

    odd = tmp_path / "a dir's"
    odd.mkdir()
    python = odd / "py thon"
    python.write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    python.chmod(0o755)
    plugin = tmp_path / "plugin"
    plugin.write_text(svc.shim(str(python), str(odd / "client.py")))
    plugin.chmod(0o755)

    def run(command: str) -> str:
        env = {"CNI_COMMAND": command, "PATH": os.environ["PATH"]}
        got = subprocess.run([str(plugin), "x y"], input='{"cniVersion": "0.4.0"}', env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        return got.stdout

    assert json.loads(run("VERSION")) == cni.version_answer()
    assert run("ADD") == f"-S|-I|{odd}/client.py|x y|"
    assert run("") == f"-S|-I|{odd}/client.py|x y|"  # (the client says what is wrong)

    path = svc.install(str(tmp_path / "bin"))
    assert path == str(tmp_path / "bin" / "lowbridge") and os.stat(path).st_mode & 0o777 == 0o755
    assert svc.shim(sys.executable, svc.__file__) == pathlib.Path(path).read_text()
    assert os.listdir(tmp_path / "bin") == ["lowbridge"]  # (written aside, then renamed)
    with pytest.raises(InvalidInput, match="not a file name"):
        svc.install(str(tmp_path / "bin"), "../x")
    with pytest.raises(LowbridgeError) as err:  # (a file where the directory should be)
        svc.install(str(plugin))
    assert str(err.value) == f"install the CNI plugin as {plugin}/lowbridge: File exists"
    assert sorted(os.listdir(tmp_path)) == ["a dir's", "bin", "plugin"]  # (nothing left)
