"""Podman inside a simulated host (tests, benchmarks): a real CNI runtime calling lowbridge.

Debian's podman 4.3 runs as root inside a :class:`~lowbridge.simhost.SimHost` with nothing of
the machine's: its storage, CNI result cache and run directory are temporary directories
mounted over /var/lib/containers, /var/lib/cni and /run/containers in the host's own mount
namespace; its containers.conf (``CONTAINERS_CONF``) picks the network backend -- ``cni``
with a private configuration directory and ``lowbridge`` in a private plugin directory (as
``lowbridge plugin cni`` installs it, for this interpreter), or ``netavark`` (podman's own
stack, the benchmark's peer); crun runs containers without cgroups (the host's /sys has none:
a tmpfs stands in for /sys/fs/cgroup, which crun only inspects).  The image is a busybox
rootfs made from the machine's busybox-static and imported (``podman import``): no registry.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile

from lowbridge.plugins import cniservice
from lowbridge.simhost import SimHost

IMAGE = "localhost/busybox"
PACKAGES = {"podman": "podman", "crun": "crun", "busybox": "busybox-static"}
_APPLETS = ("sh", "ping", "nc", "sleep", "ip", "cat", "httpd", "echo", "nslookup", "wget")


def missing() -> list[str]:
    """The Debian packages this needs that are not installed."""
    return sorted(pkg for tool, pkg in PACKAGES.items() if not shutil.which(tool))


def rootfs(directory: str) -> str:
    """A busybox image's rootfs as a tar file in ``directory`` (the machine's busybox-static)."""
    tar = os.path.join(directory, "rootfs.tar")
    with tarfile.open(tar, "w") as t:
        t.add(shutil.which("busybox"), "bin/busybox")
        for applet in _APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(link)
    return tar


class Podman:
    """Podman in ``host`` with network backend ``backend`` (``cni`` or ``netavark``)."""

    def __init__(self, host: SimHost, backend: str = "cni"):
        self.host, self.backend = host, backend
        self.dir = tempfile.mkdtemp(prefix="lowbridge-podman-")
        d = self.dir
        for sub in ("storage", "run", "cni-cache", "net.d", "plugins", "networks"):
            os.mkdir(os.path.join(d, sub))
        cniservice.install(os.path.join(d, "plugins"))  # (as ``lowbridge plugin cni`` does)
        # The mount points must exist on the machine (empty directories, as SimHost's own).
        for point in ("/var/lib/containers", "/var/lib/cni"):
            os.makedirs(point, exist_ok=True)
        host.run(
            [
                "sh",
                "-c",
                f"""set -e
mount -t tmpfs lowbridge-sim-cgroup /sys/fs/cgroup
mount --bind {d}/storage /var/lib/containers
mount --bind {d}/cni-cache /var/lib/cni
mkdir -p /run/containers""",
            ]
        )
        with open(os.path.join(d, "containers.conf"), "w") as f:
            f.write(f"""[network]
network_backend = "{backend}"
cni_plugin_dirs = ["{d}/plugins", "/usr/lib/cni"]
network_config_dir = "{d}/{"net.d" if backend == "cni" else "networks"}"
[engine]
cgroup_manager = "cgroupfs"
runtime = "crun"
events_logger = "file"
events_logfile_path = "{d}/events.log"
[containers]
cgroups = "disabled"
""")
        with open(os.path.join(d, "storage.conf"), "w") as f:
            f.write('[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\n'
                    'graphroot = "/var/lib/containers/storage"\n')  # fmt: skip
        self.env = {**os.environ, **host.env, "CONTAINERS_CONF": f"{d}/containers.conf",
                    "CONTAINERS_STORAGE_CONF": f"{d}/storage.conf"}  # fmt: skip
        self.run("import", "-q", rootfs(d), IMAGE)

    def run(self, *args: str, check: bool = True, timeout: float = 120):  # noqa: ANN201
        """``podman ARGS`` inside the host (a subprocess.CompletedProcess)."""
        return self.host.run(["podman", *args], check=check, timeout=timeout, env=self.env)

    def conflist(self, name: str, **plugin: object) -> None:
        """A CNI network ``name`` of one ``lowbridge`` plugin (its fields: ``plugin``), with the
        capabilities podman passes on (ports, aliases)."""
        doc = {"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "lowbridge", "capabilities": {"portMappings": True, "aliases": True},
             **plugin}]}  # fmt: skip
        with open(os.path.join(self.dir, "net.d", f"{name}.conflist"), "w") as f:
            json.dump(doc, f)

    def close(self) -> None:
        """Remove every container, then the temporary directory (the mounts go with the host)."""
        self.run("rm", "-a", "-f", "-t", "0", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
