"""A simulated cluster (tests, benchmarks): hosts on an underlay switch, etcd in namespaces.

The underlay is a switch namespace (bridge ``under``, 10.200.0.0/24).  etcd (Debian's
etcd-server, data in a temporary directory) runs as one member on 10.200.0.100, or as several
(``members=3``: 10.200.0.101-103, each in a namespace of its own, talking raft over the
underlay, so a member can be killed or cut off).  ``tls=True`` makes a CA (openssl) and serves
``etcds://`` with client certificates required; ``auth=True`` turns etcd's authentication on
(user root).  Host ``i`` has 10.200.0.``i`` on its uplink and the environment that points
lowbridge at the store (``LOWBRIDGE_STORE``, the TLS files, the password), ``LOWBRIDGE_HOST_NAME``
``h<i>`` (a lab's ``host:``) and a short host lease (``LOWBRIDGE_LEASE_TTL``, ``lease_ttl``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time

from lowbridge.simhost import SimHost, outside

ETCD_IP = "10.200.0.100"
STORE = f"etcd://{ETCD_IP}:2379"
PASSWORD = "lowbridge-test"
_HTTP = """
import json, ssl, sys, urllib.request
url, body, ca, cert, key, token = sys.argv[1:7]
ctx = None
if url.startswith("https"):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
req = urllib.request.Request(url, data=body.encode() if body else None)
if token:
    req.add_header("Authorization", token)
print(urllib.request.urlopen(req, timeout=2, context=ctx).read().decode())
"""


class Member:
    """One etcd member: its namespace, address and process."""

    def __init__(self, name: str, ip: str, ns: SimHost):
        self.name, self.ip, self.ns = name, ip, ns
        self.proc: subprocess.Popen | None = None


class Cluster:
    def __init__(
        self,
        size: int,
        members: int = 1,
        tls: bool = False,
        auth: bool = False,
        lease_ttl: int = 3,
        env: dict[str, str] | None = None,
    ):
        self._stack = contextlib.ExitStack()
        self.data = tempfile.mkdtemp(prefix="lowbridge-etcd-")
        self._stack.callback(shutil.rmtree, self.data, True)
        self.tls, self.auth = tls, auth
        self.switch = self._stack.enter_context(outside("underlay"))
        self.switch.run("ip link add under type bridge && ip link set under up")
        ips = [ETCD_IP] if members == 1 else [f"10.200.0.{101 + i}" for i in range(members)]
        self.members = []
        for i, ip in enumerate(ips):
            ns = self._stack.enter_context(outside(f"etcd{i}"))
            self._plug(ns, "eth0", f"{ip}/24", f"p-etcd{i}")
            self.members.append(Member(f"e{i}", ip, ns))
        self.etcd_ns = self.members[0].ns  # (one member: the store's namespace)
        if tls:
            self._make_certificates()
        self.start_etcd()
        scheme = "etcds" if tls else "etcd"
        user = "root@" if auth else ""
        self.store = f"{scheme}://{user}" + ",".join(f"{m.ip}:2379" for m in self.members)
        host_env = {"LOWBRIDGE_STORE": self.store, "LOWBRIDGE_LEASE_TTL": str(lease_ttl)}
        if tls:
            host_env.update(LOWBRIDGE_STORE_CA=self.ca, LOWBRIDGE_STORE_CERT=self.cert,
                            LOWBRIDGE_STORE_KEY=self.key)  # fmt: skip
        if auth:
            self._enable_auth()
            host_env["LOWBRIDGE_STORE_PASSWORD"] = PASSWORD
        self.hosts: list[SimHost] = []
        for i in range(1, size + 1):
            h = self._stack.enter_context(
                SimHost(f"h{i}", env={**host_env, "LOWBRIDGE_HOST_NAME": f"h{i}", **(env or {})})
            )
            self._plug(h, "uplink", f"10.200.0.{i}/24", f"p-h{i}")
            self.hosts.append(h)

    def _plug(self, h: SimHost, ifname: str, address: str, port: str) -> None:
        h.wire(self.switch, ifname, port, address)
        self.switch.run(["ip", "link", "set", port, "master", "under"])

    # ------------------------------------------------------------------ TLS and auth
    def _make_certificates(self) -> None:
        """A CA, one server certificate for every member's address, one client certificate."""
        d = self.data
        self.ca, self.cert, self.key = f"{d}/ca.pem", f"{d}/client.pem", f"{d}/client-key.pem"
        sans = ",".join(f"IP:{m.ip}" for m in self.members)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        script = [
            ["openssl", "req", "-x509", *ec, "-keyout", f"{d}/ca-key.pem", "-out", self.ca,
             "-days", "2", "-subj", "/CN=lowbridge-test-ca"],
            ["openssl", "req", *ec, "-keyout", f"{d}/server-key.pem", "-out", f"{d}/server.csr",
             "-subj", "/CN=etcd", "-addext", f"subjectAltName={sans}"],
            ["openssl", "x509", "-req", "-in", f"{d}/server.csr", "-CA", self.ca, "-CAkey",
             f"{d}/ca-key.pem", "-CAcreateserial", "-out", f"{d}/server.pem", "-days", "2",
             "-copy_extensions", "copy"],
            ["openssl", "req", *ec, "-keyout", self.key, "-out", f"{d}/client.csr",
             "-subj", "/CN=root"],
            ["openssl", "x509", "-req", "-in", f"{d}/client.csr", "-CA", self.ca, "-CAkey",
             f"{d}/ca-key.pem", "-CAcreateserial", "-out", self.cert, "-days", "2"],
        ]  # fmt: skip
        for argv in script:
            subprocess.run(argv, check=True, capture_output=True)

    def http(self, member: Member, path: str, body: dict | None = None, token: str = "") -> dict:
        """etcd's JSON gateway of ``member`` (from inside its namespace)."""
        scheme = "https" if self.tls else "http"
        files = (self.ca, self.cert, self.key) if self.tls else ("", "", "")
        argv = [sys.executable, "-c", _HTTP, f"{scheme}://{member.ip}:2379{path}",
                json.dumps(body) if body is not None else "", *files, token]  # fmt: skip
        return json.loads(member.ns.run(argv, timeout=10).stdout)

    def _enable_auth(self) -> None:
        m = self.members[0]
        self.http(m, "/v3/auth/user/add", {"name": "root", "password": PASSWORD})
        self.http(m, "/v3/auth/role/add", {"name": "root"})
        self.http(m, "/v3/auth/user/grant", {"user": "root", "role": "root"})
        self.http(m, "/v3/auth/enable", {})

    # ------------------------------------------------------------------ members
    def start_etcd(self, only: Member | None = None) -> None:
        """Start every member (or ``only`` one again) and wait until it is healthy."""
        scheme = "https" if self.tls else "http"
        initial = ",".join(f"{m.name}={scheme}://{m.ip}:2380" for m in self.members)
        for m in [only] if only else self.members:
            argv = ["etcd", "--name", m.name, "--data-dir", f"{self.data}/{m.name}",
                    "--listen-client-urls", f"{scheme}://{m.ip}:2379",
                    "--advertise-client-urls", f"{scheme}://{m.ip}:2379",
                    "--listen-peer-urls", f"{scheme}://{m.ip}:2380",
                    "--initial-advertise-peer-urls", f"{scheme}://{m.ip}:2380",
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--heartbeat-interval", "20", "--election-timeout", "200"]  # fmt: skip
            if self.tls:
                d = self.data
                for side in ("", "peer-"):
                    argv += [f"--{side}cert-file", f"{d}/server.pem",
                             f"--{side}key-file", f"{d}/server-key.pem",
                             f"--{side}trusted-ca-file", self.ca,
                             f"--{side}client-cert-auth"]  # fmt: skip
            m.proc = m.ns.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for m in [only] if only else self.members:
            self._wait_healthy(m)

    def _wait_healthy(self, m: Member) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.http(m, "/health").get("health") == "true":
                    return
            time.sleep(0.1)
        raise RuntimeError(f"etcd member {m.name} did not become healthy")

    def leader(self) -> Member:
        """The member that leads now (asked of each live one; not with ``auth``: the gateway
        wants a token then, which it does not give a client with a certificate)."""
        ids, leaders = {}, set()
        for m in self.members:
            if m.proc is None:
                continue
            with contextlib.suppress(Exception):
                status = self.http(m, "/v3/maintenance/status", {})
                ids[status["header"]["member_id"]] = m
                leaders.add(status.get("leader"))
        return next(ids[i] for i in leaders if i in ids)

    def kill(self, m: Member) -> None:
        """Kill one member (inside its namespace: nsenter forks, so the Popen is not etcd)."""
        if m.proc is None:
            return
        m.ns.run("pkill -KILL -x etcd; while pgrep -x etcd >/dev/null; do sleep 0.05; done",
                 check=False)  # fmt: skip
        m.proc.wait()
        m.proc = None

    def stop_etcd(self) -> None:
        for m in self.members:
            self.kill(m)

    def close(self) -> None:
        self.stop_etcd()
        self._stack.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
