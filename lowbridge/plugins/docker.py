"""``lowbridge plugin docker``: lowbridge as a Docker remote network driver.

dockerd finds the driver by its socket, ``/run/docker/plugins/lowbridge.sock`` (Docker's plugin
discovery), and speaks libnetwork's remote driver protocol to it: HTTP POSTs of JSON
(moby libnetwork/docs/remote.md; served here by the standard library's http.server on a unix
socket, one call at a time).  ``docker network create -d lowbridge`` then makes a lowbridge
network, and ``docker run --network`` a lowbridge sandbox of the container's namespace:

* CreateNetwork: a lowbridge bridge network named ``docker-<id>``, labelled with Docker's
  network id, on the subnet and gateway Docker's IPAM gave (``IPv4Data``), with the ``-o``
  options of ``docker network create`` (``com.docker.network.generic``: Docker's bridge
  options, lowbridge's names).  DeleteNetwork removes it.
* CreateEndpoint: Docker's IPAM has chosen the address; it is remembered with the published
  ports (``com.docker.network.portmap``) until Join, in a small file of the state directory.
  The MAC address is lowbridge's rule's (Docker's) unless given.
* Join: the container's namespace (``SandboxKey``) adopted as a sandbox ``docker-<sandbox>``
  -- ``container create`` with that address, MAC and ports -- or, on its second network,
  ``network connect``.  The sandbox is marked ``runtime: docker``: lowbridge makes its veth
  pair in the host's namespace (the host end on the bridge, the other ``lbd<endpoint>``) and
  its rules; Join names that interface, and dockerd moves it into the container's namespace
  once it exists (with ``--network``, only when runc has made it), names it eth0, eth1, ...,
  addresses it, sets the default route (Join answers the gateway) and serves DNS at
  127.0.0.11 (its resolver knows its containers' names), as with its own drivers.
* Leave: ``network disconnect``, or ``rm`` with the sandbox's last network.  DeleteEndpoint
  forgets the address.

Errors answer ``{"Err": "..."}`` (HTTP 200, as the protocol asks); an unknown call is 404.
"""

from __future__ import annotations

import contextlib
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

from lowbridge.errors import LowbridgeError, NotFound

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.models import Network

SOCKET = "/run/docker/plugins/lowbridge.sock"
CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
LABEL = "io.lowbridge.docker.network-id"
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}  # libnetwork types.Protocol


# ------------------------------------------------------------------ translation (pure)
def network_request(body: dict):  # noqa: ANN201 - a drivers.base.NetworkRequest
    """CreateNetwork's body as lowbridge's network request."""
    from lowbridge.drivers.base import NetworkRequest

    nid = body["NetworkID"]
    v4 = (body.get("IPv4Data") or [{}])[0]
    if not v4.get("Pool"):
        raise LowbridgeError("lowbridge needs an IPv4 subnet from Docker's IPAM")
    if any(d.get("Pool") for d in body.get("IPv6Data") or []):
        raise LowbridgeError("lowbridge's Docker driver is IPv4 only (no --ipv6)")
    options = body.get("Options") or {}
    generic = options.get("com.docker.network.generic") or {}
    return NetworkRequest(
        name=f"docker-{nid[:12]}",
        subnet=v4["Pool"],
        gateway=(v4.get("Gateway") or "").split("/")[0] or None,
        internal=bool(options.get("com.docker.network.internal")),
        options={str(k): str(v) for k, v in generic.items()},
        labels={LABEL: nid},
    )


def publish(portmap: list[dict] | None) -> list[str]:
    """``com.docker.network.portmap`` (libnetwork types.PortBinding) as ``-p`` specs."""
    out = []
    for b in portmap or []:
        proto = PROTOCOLS.get(int(b.get("Proto", 6)), "tcp")
        host = str(b.get("HostPort") or "")
        if host and b.get("HostPortEnd") and int(b["HostPortEnd"]) != int(host):
            host += f"-{b['HostPortEnd']}"
        ip = b.get("HostIP") or ""
        prefix = f"[{ip}]:" if ":" in ip else (f"{ip}:" if ip else "")
        out.append(f"{prefix}{host}:{b['Port']}/{proto}" if host or ip else f"{b['Port']}/{proto}")
    return out


def sandbox_name(key: str) -> str:
    """The lowbridge sandbox of Docker's sandbox at ``key`` (/var/run/docker/netns/<id>)."""
    return f"docker-{os.path.basename(key)[:12]}"


# ------------------------------------------------------------------ the driver
class Driver:
    """The protocol's calls on controller ``ctl``; ``memory``: the file that keeps endpoints
    between CreateEndpoint and DeleteEndpoint."""

    def __init__(self, ctl: Controller, memory: str):
        self.ctl, self.memory = ctl, memory

    def call(self, method: str, body: dict) -> dict | None:
        """The answer to ``method`` (None: unknown call)."""
        fn = {
            "Plugin.Activate": lambda b: {"Implements": ["NetworkDriver"]},
            "NetworkDriver.GetCapabilities": lambda b: {"Scope": "local",
                                                        "ConnectivityScope": "local"},
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.EndpointOperInfo": self.oper_info,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.DiscoverNew": lambda b: {},
            "NetworkDriver.DiscoverDelete": lambda b: {},
        }.get(method)  # fmt: skip
        if fn is None:
            return None
        from lowbridge.errors import one_line

        try:
            return fn(body)
        except KeyError as exc:
            return {"Err": f"{method}: the request has no {exc.args[0]}"}
        except (LowbridgeError, TypeError, ValueError) as exc:
            return {"Err": one_line(str(exc) or exc.__class__.__name__)}

    # -- networks
    def _network(self, nid: str) -> Network:
        found = [n for n in self.ctl.view().networks if n.labels.get(LABEL) == nid]
        if not found:
            raise NotFound(f"network {nid[:12]} is not lowbridge's")
        return found[0]

    def create_network(self, body: dict) -> dict:
        req = network_request(body)
        self.ctl.network_create(req)
        return {}

    def delete_network(self, body: dict) -> dict:
        with contextlib.suppress(NotFound):
            self.ctl.network_rm(self._network(body["NetworkID"]).id)
        return {}

    # -- endpoints
    def _load(self) -> dict:
        try:
            with open(self.memory) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _save(self, doc: dict) -> None:
        from lowbridge.config import write_durably

        write_durably(self.memory + ".new", json.dumps(doc).encode())
        os.replace(self.memory + ".new", self.memory)  # whole, or not at all

    def create_endpoint(self, body: dict) -> dict:
        from lowbridge import names

        net = self._network(body["NetworkID"])
        iface = body.get("Interface") or {}
        address = iface.get("Address") or ""
        if not address:
            raise LowbridgeError("lowbridge needs the endpoint's address from Docker's IPAM")
        options = body.get("Options") or {}
        mac = iface.get("MacAddress") or names.mac_from_ip(address.split("/")[0])
        doc = self._load()
        doc[body["EndpointID"]] = {
            "network": net.id,
            "address": address.split("/")[0],
            "mac": mac,
            "publish": publish(options.get("com.docker.network.portmap")),
        }
        self._save(doc)
        return {} if iface.get("MacAddress") else {"Interface": {"MacAddress": mac}}

    def delete_endpoint(self, body: dict) -> dict:
        self.leave(body)  # (no-op after a Leave; takes it down if dockerd skipped the Leave)
        doc = self._load()
        if doc.pop(body["EndpointID"], None) is not None:
            self._save(doc)
        return {}

    def oper_info(self, body: dict) -> dict:
        ep = self._load().get(body["EndpointID"], {})
        return {"Value": {k: ep[k] for k in ("address", "mac", "sandbox") if k in ep}}

    # -- sandboxes
    def join(self, body: dict) -> dict:
        from lowbridge.controller.requests import ContainerRequest

        doc = self._load()
        ep = doc.get(body["EndpointID"])
        if ep is None:
            raise NotFound(f"endpoint {body['EndpointID'][:12]} is not lowbridge's")
        name = sandbox_name(body["SandboxKey"])
        net = self.ctl.view().nets[ep["network"]]
        src = f"lbd{body['EndpointID'][:12]}"  # the interface dockerd moves into the sandbox
        ep["sandbox"] = name  # remembered first: a Leave finds what a killed Join left
        self._save(doc)
        try:
            self.ctl.view().container(name)
        except NotFound:
            self.ctl.container_create(ContainerRequest(
                name=name, network=net.id, netns=body["SandboxKey"], ip=ep["address"],
                mac_address=ep["mac"], publish=ep["publish"], runtime="docker",
                ifname=src))  # fmt: skip
        else:
            self.ctl.network_connect(net.id, name, ip=ep["address"], ifname=src)
        answer: dict = {"InterfaceName": {"SrcName": src, "DstPrefix": "eth"}}
        if net.pool is not None and net.pool.gateway is not None and not net.internal:
            answer["Gateway"] = str(net.pool.gateway)
        return answer

    def leave(self, body: dict) -> dict:
        ep = self._load().get(body["EndpointID"], {})
        name = ep.get("sandbox")
        if not name:
            return {}
        view = self.ctl.view()
        ctr = next((c for c in view.containers if c.name == name), None)
        if ctr is None:
            return {}
        eps = view.endpoints_of(ctr.id)
        if not any(e.network_id == ep["network"] for e in eps):
            return {}  # (a Join that failed, or this Leave again)
        with contextlib.suppress(NotFound):
            if len(eps) > 1:
                self.ctl.network_disconnect(ep["network"], ctr.id)
            else:
                self.ctl.container_rm(ctr.id, force=True)
        return {}


# ------------------------------------------------------------------ the server
class _Server(socketserver.UnixStreamServer):
    driver: Driver


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            self._answer(400, {"Err": "cannot decode the request"})
            return
        answer = self.server.driver.call(self.path.lstrip("/"), body or {})
        if answer is None:
            self._answer(404, {"Err": f"unknown call {self.path}"})
        else:
            self._answer(200, answer)

    def _answer(self, status: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:  # a unix socket's peer has no address
        return "dockerd"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if os.environ.get("LOWBRIDGE_DEBUG"):
            print(f"lowbridge: plugin docker: {format % args}", file=sys.stderr, flush=True)


def serve(ctl: Controller, path: str = SOCKET) -> None:
    """Answer dockerd on the unix socket ``path`` until interrupted or terminated (``lowbridge
    plugin docker``); the socket is removed at the end."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # (systemd's stop: the same end)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = _Server(path, _Handler)
    server.driver = Driver(ctl, os.path.join(ctl.paths.state, "docker-endpoints.json"))
    try:
        server.serve_forever()
    finally:
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
