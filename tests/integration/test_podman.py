"""Podman (Debian's 4.3, CNI backend) runs containers on lowbridge networks through
``lowbridge-cni`` (lowbridge.simpodman): real packets between its containers, from a LAN peer to
a published port, isolation from another lowbridge network, and nothing left after ``podman
rm``."""

from __future__ import annotations

import json
import sys

import pytest

from lowbridge import simpodman
from lowbridge.simhost import SimHost
from lowbridge.simpodman import IMAGE, Podman
from tests.integration.conftest import UPLINK, members, on_a_lan
from tests.integration.test_cni import veths

pytestmark = pytest.mark.skipif(
    bool(simpodman.missing()),
    reason=f"needs the Debian packages {', '.join(simpodman.missing())} (apt-get install them)",
)


def http(h: SimHost, url: str, timeout: float = 5) -> str | None:
    """The body a GET of ``url`` from ``h`` answers, or None."""
    code = (
        f"import urllib.request as u; print(u.urlopen({url!r}, timeout={timeout}).read().decode())"
    )
    proc = h.run([sys.executable, "-c", code], check=False, timeout=timeout + 20)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def pod():
    with on_a_lan("podman") as (h, lan):
        pm = Podman(h)
        try:
            pm.conflist("lbnet", subnet="10.97.0.0/24")
            pm.conflist("lbother", subnet="10.98.0.0/24")
            yield pm, lan
        finally:
            pm.close()


def test_podman_containers_on_lowbridge_networks(pod):
    pm, lan = pod
    h = pm.host
    assert "lbnet" in pm.run("network", "ls", "--format", "{{.Name}}").stdout.split()
    pm.run("run", "-d", "--name", "web", "--network", "lbnet", "-p", "8080:80", IMAGE,
           "sh", "-c", "echo hello-web > /index.html && exec httpd -f -p 80 -h /")  # fmt: skip
    status = json.loads(pm.run("inspect", "web").stdout)[0]["NetworkSettings"]["Networks"]
    web_ip = status["lbnet"]["IPAddress"]
    assert web_ip.startswith("10.97.0.")

    # lowbridge has it as a sandbox of its own, named as podman names it.
    assert "web" in h.lb("ps", "--format", "{{.Names}}").stdout.split()
    assert members(h, "lbnet") == {"web"}

    # Another podman container reaches it by name (lowbridge's resolver at 127.0.0.11) ...
    ping = pm.run("run", "--rm", "--network", "lbnet", IMAGE, "ping", "-c1", "-W3", "web",
                  check=False)  # fmt: skip
    assert ping.returncode == 0 and web_ip in ping.stdout, ping.stderr
    # ... a LAN peer reaches its published port at the host's address ...
    assert http(lan, f"http://{UPLINK}:8080/index.html") == "hello-web"
    # ... and a container on another lowbridge network does not reach it.
    far = pm.run("run", "--rm", "--network", "lbother", IMAGE, "ping", "-c1", "-W2", web_ip,
                 check=False)  # fmt: skip
    assert far.returncode != 0

    # podman rm: nothing left (the sandbox, its veth, its rules; check is clean).
    pm.run("rm", "-f", "-t", "0", "web")
    assert h.lb("ps", "-a", "--format", "{{.Names}}").stdout.split() == []
    assert members(h, "lbnet") == set()
    assert veths(h) == []
    assert h.lb("check").stdout == ""
    assert http(lan, f"http://{UPLINK}:8080/index.html", timeout=2) is None
