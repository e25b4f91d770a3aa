from lowbridge import sandbox

H = sandbox.RESOLV_HEADER


def test_hosts_file_like_docker():
    text = sandbox.render_hosts("93150eabb70d", ["172.18.0.3"])
    assert text.startswith("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    assert text.endswith("ff02::2\tip6-allrouters\n172.18.0.3\t93150eabb70d\n")


HOST = "# managed\nsearch lab\nnameserver 127.0.0.53\nnameserver 10.200.53.53\noptions edns0\n"


def test_resolv_conf_drops_loopback_servers_and_keeps_the_rest():
    assert sandbox.render_resolv_conf(HOST) == H + (
        "nameserver 10.200.53.53\nsearch lab\noptions edns0\n"
    )


def test_resolv_conf_flags_override_the_hosts_values():
    text = sandbox.render_resolv_conf(HOST, ["10.9.9.9", "10.9.9.8"], ["a.example"], ["ndots:2"])
    assert text == H + (
        "nameserver 10.9.9.9\nnameserver 10.9.9.8\nsearch a.example\noptions ndots:2\n"
    )
    assert "search" not in sandbox.render_resolv_conf(HOST, search=["."])


def test_hosts_extra_entries_come_before_the_sandboxs_own():
    text = sandbox.render_hosts("web", ["172.18.0.2"], [("db", "10.1.2.3")])
    assert text.endswith("ff02::2\tip6-allrouters\n10.1.2.3\tdb\n172.18.0.2\tweb\n")


def test_resolv_conf_falls_back_to_dockers_servers():
    assert sandbox.render_resolv_conf("nameserver 127.0.0.1\n") == H + (
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    )


def test_write_files_in_place_keeps_the_inode(tmp_path):
    d = str(tmp_path / "ns")
    sandbox.write_files(d, {"hosts": "a long first version\n"})
    inode = (tmp_path / "ns" / "hosts").stat().st_ino
    sandbox.write_files(d, {"hosts": "short\n"})
    assert (tmp_path / "ns" / "hosts").read_text() == "short\n"
    assert (tmp_path / "ns" / "hosts").stat().st_ino == inode
    assert sandbox.read_files(d) == {"hosts": "short\n"}
    sandbox.write_files(d, None)
    assert sandbox.read_files(d) is None


def test_resolv_conf_on_user_networks_points_at_the_embedded_resolver():
    # moby TransformForIntNS: 127.0.0.11 only, the host's search and options, ndots:0 added.
    assert sandbox.render_resolv_conf(HOST, embedded=True) == H + (
        "nameserver 127.0.0.11\nsearch lab\noptions edns0 ndots:0\n"
    )
    # --dns servers become the resolver's upstreams, not resolv.conf lines; a chosen ndots stays.
    text = sandbox.render_resolv_conf(HOST, ["10.9.9.9"], [], ["ndots:3"], embedded=True)
    assert text == H + "nameserver 127.0.0.11\nsearch lab\noptions ndots:3\n"
