"""The Vagrant lab cannot run here (no VMs): check that its files are well-formed and agree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(*path: str) -> str:
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


@pytest.mark.skipif(not shutil.which("ruby"), reason="ruby not installed (scripts/setup adds it)")
def test_vagrant_files_are_valid():
    proc = subprocess.run([os.path.join(ROOT, "scripts", "vagrant"), "validate"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vagrant_pieces_agree():
    vagrantfile = _read("vagrant", "Vagrantfile")
    provision = _read("vagrant", "provision.sh")
    unit = _read("systemd", "lowbridge-agent.service")
    ips = re.findall(r'"(lb\d)" => "(192\.168\.56\.\d+)"', vagrantfile)
    assert [name for name, _ in ips] == ["lb1", "lb2", "lb3"]
    assert '"/opt/lowbridge"' in vagrantfile and "cd /opt/lowbridge" in provision
    assert "ExecStart=/opt/lowbridge/.venv/bin/lowbridge agent" in unit
    assert "GRPC_ENABLE_FORK_SUPPORT=0" in unit
    assert "store = etcd://$etcd_ip:2379" in provision and "vtep = $ip" in provision
    assert "systemd/lowbridge-agent.service" in provision
