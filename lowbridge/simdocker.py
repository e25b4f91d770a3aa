"""dockerd inside a simulated host (tests, benchmarks): a real Docker calling lowbridge's remote
network driver.

Debian's docker.io 20.10 runs in a :class:`~lowbridge.simhost.SimHost` the way
shared/bench/peers/docker_lab.sh runs it in its lab namespace: the machine's cgroup hierarchies
mounted again over the host's fresh /sys (dockerd refuses to start without the devices one;
its containers' cgroups go under ``lowbridge-sim-docker``, removed at the end), its data, exec
root, socket and /etc/docker (its trust key) in a temporary directory, ``--iptables=false
--bridge=none``: lowbridge's
firewall is the only one, and there is no docker0.  ``lowbridge plugin docker`` serves in the
same host, on /run/docker/plugins/lowbridge.sock of its private /run.  The image is a busybox
rootfs from the machine's busybox-static (``docker import``): no registry.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from lowbridge.simhost import SimHost
from lowbridge.simpodman import rootfs

IMAGE = "lowbridge-busybox:latest"
PACKAGES = {"dockerd": "docker.io", "docker": "docker.io", "busybox": "busybox-static"}
CGROUP_PARENT = "lowbridge-sim-docker"
_CGROUPS = r"""set -e
mount -t tmpfs -o mode=755 lowbridge-sim-cgroup /sys/fs/cgroup
grep -E ' cgroup2? ' /proc/1/mounts | while read -r src mnt typ opts rest; do
  mkdir -p "$mnt"
  o=$(echo "$opts" | tr ',' '\n' | grep -vE '^(rw|ro|relatime|noatime|nosuid|nodev|noexec)$' \
      | paste -sd, -)
  mount -t "$typ" -o "${o:-defaults}" "$src" "$mnt"
done
"""


def missing() -> list[str]:
    """The Debian packages this needs that are not installed."""
    return sorted({pkg for tool, pkg in PACKAGES.items() if not shutil.which(tool)})


class Docker:
    """dockerd and ``lowbridge plugin docker`` in ``host`` (see the module docstring)."""

    def __init__(self, host: SimHost):
        self.host = host
        self.dir = d = tempfile.mkdtemp(prefix="lowbridge-docker-")
        self.env = {**os.environ, **host.env, "DOCKER_HOST": f"unix://{d}/docker.sock"}
        self._procs: list[subprocess.Popen] = []
        try:
            # dockerd 20.10 writes its trust key into /etc/docker whatever its data root: a
            # directory of this run's stands there in the host (the mount point, empty, is
            # made on the machine if missing, as SimHost's own).
            os.makedirs("/etc/docker", exist_ok=True)
            os.mkdir(f"{d}/etc-docker")
            host.run(["sh", "-c", _CGROUPS + f"mount --bind {d}/etc-docker /etc/docker\n"])
            self._start([sys.executable, "-m", "lowbridge", "plugin", "docker"], "plugin.log")
            self._wait(lambda: host.run(["test", "-S", "/run/docker/plugins/lowbridge.sock"],
                                        check=False).returncode == 0)  # fmt: skip
            self._start(["dockerd", "--data-root", f"{d}/data", "--exec-root", f"{d}/exec",
                         "-H", f"unix://{d}/docker.sock", "--pidfile", f"{d}/docker.pid",
                         "--iptables=false", "--bridge=none", "--storage-driver=vfs",
                         "--cgroup-parent", CGROUP_PARENT], "dockerd.log")  # fmt: skip
            self._wait(lambda: self.run("version", check=False).returncode == 0, 60)
            self.run("import", rootfs(d), IMAGE)
        except BaseException:
            self.close()
            raise

    def _start(self, argv: list[str], log: str) -> None:
        with open(os.path.join(self.dir, log), "w") as out:
            self._procs.append(self.host.popen(argv, env=self.env, stdout=out, stderr=out))

    def _wait(self, probe, seconds: float = 20) -> None:  # noqa: ANN001
        deadline = time.monotonic() + seconds
        while not probe():
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd or the plugin did not start: see {self.dir}")
            time.sleep(0.1)

    def run(self, *args: str, check: bool = True, timeout: float = 120):  # noqa: ANN201
        """``docker ARGS`` inside the host (a subprocess.CompletedProcess)."""
        return self.host.run(["docker", *args], check=check, timeout=timeout, env=self.env)

    def log(self, name: str = "plugin.log") -> str:
        with open(os.path.join(self.dir, name)) as f:
            return f.read()

    def close(self) -> None:
        """Remove every container, stop dockerd and the plugin, remove the cgroups and the
        temporary directory (the mounts go with the host)."""
        if self._procs:
            ids = self.run("ps", "-aq", check=False).stdout.split()
            if ids:
                self.run("rm", "-f", *ids, check=False)
        # dockerd first (it stops its containerd), then the plugin; nsenter waits for each.
        patterns = ("^dockerd ", "lowbridge plugin docker")[-len(self._procs) :]
        for proc, pattern in zip(reversed(self._procs), patterns, strict=True):
            self.host.run(["pkill", "-TERM", "-f", pattern], check=False)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        self._procs = []
        for root in ("/sys/fs/cgroup",):
            for sub in os.listdir(root) if os.path.isdir(root) else ():
                path = os.path.join(root, sub, CGROUP_PARENT)
                if os.path.isdir(path):
                    subprocess.run(["find", path, "-depth", "-type", "d", "-exec", "rmdir", "{}",
                                    ";"], capture_output=True)  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)
