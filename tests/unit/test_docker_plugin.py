"""The Docker remote driver's pure part: libnetwork's requests as lowbridge's, and the calls
the protocol answers without touching anything (moby libnetwork/docs/remote.md)."""

from __future__ import annotations

import pytest

from lowbridge.errors import LowbridgeError
from lowbridge.plugins import docker

NID = "7a2693ac9bce6443b88f9377c90fc4da8666e274f5d60e27ba38b65e97a4b6d1"


def test_create_network_becomes_a_lowbridge_bridge_on_dockers_subnet():
    req = docker.network_request({
        "NetworkID": NID,
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.99.0.0/24",
                      "Gateway": "10.99.0.1/24"}],
        "Options": {"com.docker.network.generic": {"com.docker.network.bridge.enable_icc": "false",
                                                   "com.docker.network.driver.mtu": 1400},
                    "com.docker.network.internal": True},
    })  # fmt: skip
    assert (req.name, req.driver, req.subnet, req.gateway, req.internal) == (
        "docker-7a2693ac9bce", "bridge", "10.99.0.0/24", "10.99.0.1", True)  # fmt: skip
    assert req.options == {"com.docker.network.bridge.enable_icc": "false",
                           "com.docker.network.driver.mtu": "1400"}  # fmt: skip
    assert req.labels == {docker.LABEL: NID}
    with pytest.raises(LowbridgeError, match="IPv4 subnet"):
        docker.network_request({"NetworkID": NID, "IPv4Data": []})
    with pytest.raises(LowbridgeError, match="IPv4 only"):
        docker.network_request({"NetworkID": NID, "IPv4Data": [{"Pool": "10.99.0.0/24"}],
                                "IPv6Data": [{"Pool": "fd00:99::/64"}]})  # fmt: skip


def test_port_bindings_become_publish_specs():
    assert docker.publish([
        {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
        {"Proto": 17, "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353},
        {"Proto": 6, "Port": 7000, "HostIP": "::1", "HostPort": 9000, "HostPortEnd": 9002},
        {"Proto": 132, "Port": 9},
    ]) == ["8080:80/tcp", "127.0.0.1:5353:53/udp", "[::1]:9000-9002:7000/tcp",
           "9/sctp"]  # fmt: skip
    assert docker.publish(None) == []


def test_the_sandbox_is_named_after_dockers_sandbox_key():
    assert docker.sandbox_name("/var/run/docker/netns/2b455763be84") == "docker-2b455763be84"


def test_handshake_capabilities_notifications_and_unknown_calls():
    d = docker.Driver(None, "/nonexistent")  # type: ignore[arg-type]
    assert d.call("Plugin.Activate", {}) == {"Implements": ["NetworkDriver"]}
    assert d.call("NetworkDriver.GetCapabilities", {}) == {
        "Scope": "local",
        "ConnectivityScope": "local",
    }
    assert d.call("NetworkDriver.DiscoverNew", {"DiscoveryType": 1}) == {}
    assert d.call("NetworkDriver.AllocateNetwork", {}) is None  # the server answers 404
    assert d.call("NetworkDriver.CreateNetwork", {}) == {
        "Err": "NetworkDriver.CreateNetwork: the request has no NetworkID"
    }
