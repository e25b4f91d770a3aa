"""A simulated cluster (tests, benchmarks): hosts on an underlay switch, etcd in a namespace.

The underlay is a switch namespace (bridge ``under``, 10.200.0.0/24); etcd (Debian's
etcd-server, data in a temporary directory) listens on 10.200.0.100:2379; host ``i`` has
10.200.0.``i`` on its uplink, ``LOWBRIDGE_STORE`` pointing at etcd and ``LOWBRIDGE_HOST_NAME``
``h<i>`` (a lab's ``host:``).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time

from lowbridge.simhost import SimHost, outside

ETCD_IP = "10.200.0.100"
STORE = f"etcd://{ETCD_IP}:2379"


class Cluster:
    def __init__(self, size: int):
        self._stack = contextlib.ExitStack()
        self.data = tempfile.mkdtemp(prefix="lowbridge-etcd-")
        self._stack.callback(shutil.rmtree, self.data, True)
        self.switch = self._stack.enter_context(outside("underlay"))
        self.switch.run("ip link add under type bridge && ip link set under up")
        self.etcd_ns = self._stack.enter_context(outside("etcd"))
        self._plug(self.etcd_ns, "eth0", f"{ETCD_IP}/24", "p-etcd")
        self.etcd: subprocess.Popen | None = None
        self.start_etcd()
        self.hosts: list[SimHost] = []
        for i in range(1, size + 1):
            h = self._stack.enter_context(
                SimHost(f"h{i}", env={"LOWBRIDGE_STORE": STORE, "LOWBRIDGE_HOST_NAME": f"h{i}"})
            )
            self._plug(h, "uplink", f"10.200.0.{i}/24", f"p-h{i}")
            self.hosts.append(h)

    def _plug(self, h: SimHost, ifname: str, address: str, port: str) -> None:
        h.wire(self.switch, ifname, port, address)
        self.switch.run(["ip", "link", "set", port, "master", "under"])

    def start_etcd(self) -> None:
        argv = ["etcd", "--name", "e0", "--data-dir", f"{self.data}/data",
                "--listen-client-urls", f"http://{ETCD_IP}:2379",
                "--advertise-client-urls", f"http://{ETCD_IP}:2379",
                "--listen-peer-urls", "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", "e0=http://127.0.0.1:2380",
                "--heartbeat-interval", "10", "--election-timeout", "100"]  # fmt: skip
        self.etcd = self.etcd_ns.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = self.etcd_ns.run(
                [sys.executable, "-c", f"import urllib.request;print(urllib.request.urlopen("
                 f"'http://{ETCD_IP}:2379/health',timeout=1).read().decode())"],
                check=False,
            )  # fmt: skip
            if '"health":"true"' in probe.stdout:
                return
            time.sleep(0.1)
        raise RuntimeError("etcd did not become healthy")

    def stop_etcd(self) -> None:
        """Kill etcd (inside its namespace: nsenter forks, so the Popen is not etcd itself)."""
        if self.etcd is None:
            return
        self.etcd_ns.run("pkill -KILL -x etcd; while pgrep -x etcd >/dev/null; do sleep 0.05; done",
                         check=False)  # fmt: skip
        self.etcd.wait()
        self.etcd = None

    def close(self) -> None:
        self.stop_etcd()
        self._stack.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
