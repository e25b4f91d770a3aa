"""What a user installing lowbridge gets (issue 19, point 8): Apache-2.0 and its metadata, a
typed package whose face is importable from ``lowbridge`` without loading the controller, and
an sdist that carries the tests, the scripts, the systemd units and the Vagrant box -- built
here as pip builds it (an isolated build of the sdist, then a wheel from it)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

import lowbridge

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_library_face_is_exported_and_loaded_on_first_use():
    code = (
        "import sys, lowbridge\n"
        "assert 'lowbridge.controller' not in sys.modules\n"
        "from lowbridge import Controller, ContainerRequest, NetworkRequest, InvalidInput\n"
        "from lowbridge.controller import Controller as C\n"
        "assert Controller is C and issubclass(InvalidInput, lowbridge.LowbridgeError)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert set(lowbridge.__all__) >= {"Controller", "ContainerRequest", "NetworkRequest",
                                      "LowbridgeError", "NotFound", "Conflict"}  # fmt: skip
    with pytest.raises(AttributeError):
        _ = lowbridge.NoSuchThing


def test_license_and_typing_marker_are_there():
    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert "Apache License" in f.read(200)
    assert os.path.exists(os.path.join(ROOT, "lowbridge", "py.typed"))


def test_the_sdist_carries_tests_scripts_units_and_the_box_and_builds_a_typed_wheel(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), ROOT],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (sdist,) = tmp_path.glob("lowbridge-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for path in ("LICENSE", "README.md", "pyproject.toml", "scripts/test", "scripts/setup",
                 "scripts/demo", "systemd/lowbridge-restore.service", "vagrant/Vagrantfile",
                 "tests/integration/conftest.py", "tests/unit/test_packaging.py",
                 "examples/three-tier.yaml", "lowbridge/py.typed"):  # fmt: skip
        assert path in names, path
    assert not any("__pycache__" in n for n in names)
    (wheel,) = tmp_path.glob("lowbridge-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        files = set(whl.namelist())
        meta = whl.read(next(n for n in files if n.endswith("dist-info/METADATA"))).decode()
    assert "lowbridge/py.typed" in files
    assert not any(n.startswith("tests/") for n in files)
    assert "License-Expression: Apache-2.0" in meta and "Requires-Python: >=3.10" in meta
    assert "Provides-Extra: cluster" in meta
