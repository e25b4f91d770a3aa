"""The checks of ``run``'s flags that need no kernel: --env-file and -e, --mac-address,
--sysctl, --domainname, link aliases, and what --network host and container:NAME refuse."""

from __future__ import annotations

import pytest

from lowbridge import links
from lowbridge.controller import requests
from lowbridge.controller.requests import ContainerRequest
from lowbridge.errors import InvalidInput
from lowbridge.models import Container


def test_env_file_then_flags_the_later_of_a_name_wins(tmp_path, monkeypatch):
    env = tmp_path / "app.env"
    env.write_text("# comment\n  A=1\nB=two words\n\nFROM_CALLER\nB=again\n")
    monkeypatch.setenv("FROM_CALLER", "yes")
    req = ContainerRequest(env_files=[str(env)], env=["A=flag"])
    assert requests.environment(req) == ("A=1", "B=two words", "FROM_CALLER=yes", "B=again",
                                         "A=flag")  # fmt: skip
    env.write_text("BAD KEY=1\n")
    with pytest.raises(InvalidInput, match="contains whitespaces"):
        requests.environment(req)
    with pytest.raises(InvalidInput, match="open /no/such.env"):
        requests.environment(ContainerRequest(env_files=["/no/such.env"]))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("mac_address", "02:42:ac:11:00", "not a valid mac address"),
        ("mac_address", "02-42-ac-11-00-02", "not a valid mac address"),
        ("sysctls", {"kernel.shmmax": "1"}, "is not allowed"),
        ("domainname", "bad domain", "domainname|hostname|invalid"),
    ],
)
def test_bad_flag_values_are_refused(field, value, error):
    with pytest.raises(InvalidInput, match=error):
        requests._extras(ContainerRequest(**{field: value}))


def test_good_flag_values_are_kept_as_docker_keeps_them():
    got = requests._extras(ContainerRequest(
        mac_address="02:42:AC:11:00:02", sysctls={"net.ipv4.ip_forward": "1"},
        domainname="example.org", publish_all=True))  # fmt: skip
    assert got == {
        "mac_address": "02:42:ac:11:00:02",
        "publish_all": True,
        "sysctls": (("net.ipv4.ip_forward", "1"),),
        "domainname": "example.org",
    }


def test_link_aliases_take_docker_names():
    assert links.parse("web:my_web") == ("web", "my_web")
    assert links.parse("web") == ("web", "web")
    with pytest.raises(InvalidInput):
        links.parse("web:bad alias")


@pytest.mark.parametrize(
    "flags",
    [
        {"publish": ["80"]},
        {"publish_all": True},
        {"hostname": "x"},
        {"mac_address": "02:00:00:00:00:01"},
        {"sysctls": {"net.ipv4.ip_forward": "1"}},
        {"dns_search": ["a"]},
        {"expose": ["80"]},
    ],
)
def test_a_shared_namespace_refuses_what_only_an_own_one_can_have(flags):
    other = Container(id="a" * 64, name="web", netns="/run/netns/web")
    with pytest.raises(
        InvalidInput, match="conflicting options: .* and the network mode container"
    ):
        requests.in_container(ContainerRequest(**flags), "b" * 64, "side", other)


def test_a_runtime_is_dockers_and_brings_its_sandbox_key():
    """(Only the Docker driver hands sandboxes off: lowbridge.plugins.docker.)"""
    with pytest.raises(InvalidInput, match="unknown runtime 'podman'"):
        requests.container(ContainerRequest(runtime="podman", netns="/x"), "id", "n", "/x",
                           None, None)  # fmt: skip
    with pytest.raises(InvalidInput, match="runtime docker needs its sandbox key"):
        requests.container(ContainerRequest(runtime="docker"), "id", "n", None, None, None)
