"""A sandbox's life as Docker's containers live, in simulated hosts with real packets: stop and
start (names, ports, rules and dynamic addresses go and come back; static ones stay), exit codes,
restart policies kept by the supervisor, kill, wait, logs, port, prune, and the boot unit that
brings sandboxes back after a reboot."""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from lowbridge.simhost import SimHost
from tests.integration.conftest import ip_of, lb_json, ping

SERVE = ("--", "socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo web")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tcp(h: SimHost, sandbox: str | None, host: str, port: int) -> str | None:
    argv = ["socat", "-T2", "-", f"TCP:{host}:{port},connect-timeout=2"]
    if sandbox:
        argv = ["ip", "netns", "exec", sandbox, *argv]
    return h.run(argv, check=False, input="", timeout=20).stdout.strip() or None


def resolves(h: SimHost, sandbox: str, name: str) -> bool:
    return h.run(["ip", "netns", "exec", sandbox, "getent", "hosts", name], check=False,
                 timeout=20).returncode == 0  # fmt: skip


def state(h: SimHost, name: str) -> dict:
    return lb_json(h, "inspect", name)[0]["State"]


def wait_for(probe, seconds: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def h():
    with SimHost("life") as host:
        host.lb("network", "create", "--subnet", "10.70.0.0/24", "n1")
        yield host


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_a_stopped_sandbox_leaves_its_networks_and_start_brings_it_back(backend):
    with SimHost("stop") as h:
        h.env["LOWBRIDGE_FIREWALL_BACKEND"] = backend
        h.lb("network", "create", "--subnet", "10.70.0.0/24", "n1")
        h.lb("run", "-d", "--name", "web", "--network", "n1", "-p", "8080:80", *SERVE)
        h.lb("run", "-d", "--name", "pinned", "--network", "n1", "--ip", "10.70.0.50", "--",
             "sleep", "infinity")  # fmt: skip
        h.lb("container", "create", "--name", "cli", "--network", "n1")
        web = ip_of(h, "web", "n1")
        wait_for(lambda: tcp(h, "cli", "web", 80) == "web")
        assert tcp(h, None, "127.0.0.1", 8080) == "web"
        rules = h.run("iptables-save; nft list ruleset", check=False).stdout
        assert web in rules

        assert h.lb("stop", "web", "pinned").stdout.split() == ["web", "pinned"]
        st = state(h, "web")
        assert (st["Status"], st["Running"], st["ExitCode"]) == ("exited", False, 143)
        assert st["FinishedAt"].endswith("Z") and st["FinishedAt"] > st["StartedAt"]
        assert not resolves(h, "cli", "web") and not ping(h, "cli", web)
        assert tcp(h, None, "127.0.0.1", 8080) is None  # the published port closed
        assert web not in h.run("iptables-save; nft list ruleset", check=False).stdout
        assert "web" not in h.run(["ip", "netns", "list"]).stdout
        # Its dynamic address is free again: the next sandbox takes it.
        h.lb("container", "create", "--name", "taker", "--network", "n1")
        assert ip_of(h, "taker", "n1") == web
        doc = lb_json(h, "inspect", "pinned")[0]["NetworkSettings"]["Networks"]["n1"]
        assert (doc["IPAddress"], doc["IPAMConfig"]) == ("", {"IPv4Address": "10.70.0.50"})

        h.lb("start", "web", "pinned")
        assert state(h, "web")["Status"] == "running"
        assert ip_of(h, "pinned", "n1") == "10.70.0.50"  # a static address is kept
        assert ip_of(h, "web", "n1") != web  # a dynamic one is drawn again
        wait_for(lambda: tcp(h, "cli", "web", 80) == "web")
        assert resolves(h, "cli", "web") and ping(h, "cli", "pinned")
        assert tcp(h, None, "127.0.0.1", 8080) == "web"
        assert h.lb("check").stdout == ""


def test_exit_codes_and_statuses_as_dockers(h):
    assert h.lb("run", "--name", "four", "--", "sh", "-c", "exit 4", check=False).returncode == 4
    nosuch = h.lb("run", "--rm", "--", "nosuch", check=False)
    assert (nosuch.returncode, nosuch.stderr) == (
        127,
        'lowbridge: error: exec: "nosuch": executable file not found in $PATH\n',
    )
    assert h.lb("run", "--rm", "--", "/etc/passwd", check=False).returncode == 126
    bad = h.lb("run", "--rm", "--network", "nosuch", "--", "true", check=False)
    assert bad.returncode == 125 and "No such network: nosuch" in bad.stderr
    h.lb("container", "create", "--name", "made", "--", "sleep", "5")
    h.lb("run", "-d", "--name", "up", "--", "sleep", "infinity")
    status = dict(line.split("|") for line in h.lb(
        "ps", "-a", "--format", "{{.Names}}|{{.Status}}").stdout.splitlines())  # fmt: skip
    assert status["four"].startswith("Exited (4) ") and status["four"].endswith(" ago")
    assert status["made"] == "Created" and status["up"].startswith("Up ")
    names = h.lb("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert names == ["up", "made", "four"]  # newest first
    assert state(h, "four")["ExitCode"] == 4 and state(h, "made")["StartedAt"].startswith("0001")
    h.lb("start", "made")
    assert state(h, "made")["Status"] == "running"
    assert h.lb("exec", "four", "--", "true", check=False).returncode == 4  # not running


def test_restart_policies_run_the_command_again(h):
    h.lb("run", "-d", "--name", "fails", "--restart", "on-failure:2", "--", "sh", "-c",
         "echo try; exit 3")  # fmt: skip
    wait_for(lambda: state(h, "fails")["Status"] == "exited")
    doc = lb_json(h, "inspect", "fails")[0]
    assert (doc["RestartCount"], doc["State"]["ExitCode"]) == (2, 3)
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert h.lb("logs", "fails").stdout == "try\ntry\ntry\n"
    h.lb("run", "-d", "--name", "again", "--network", "n1", "--restart", "always", "--",
         "sh", "-c", "sleep 0.3")  # fmt: skip
    wait_for(lambda: lb_json(h, "inspect", "again")[0]["RestartCount"] >= 2)
    assert state(h, "again")["Status"] == "running" and ping(h, "again", "10.70.0.1")
    h.lb("stop", "again")  # a stop is not a failure: it stays down
    count = lb_json(h, "inspect", "again")[0]["RestartCount"]
    time.sleep(1)
    assert state(h, "again")["Status"] == "exited"
    assert lb_json(h, "inspect", "again")[0]["RestartCount"] == count
    proc = h.lb("run", "--rm", "--restart", "always", "--", "true", check=False)
    assert proc.returncode == 125 and "cannot both remove and restart" in proc.stderr


def test_kill_wait_logs_port_and_prune(h):
    h.lb("run", "-d", "--name", "k", "--", "sleep", "infinity")
    h.lb("kill", "-s", "TERM", "k")
    wait_for(lambda: state(h, "k")["Status"] == "exited")
    assert state(h, "k")["ExitCode"] == 143
    h.lb("run", "-d", "--name", "k9", "--", "sleep", "infinity")
    assert h.lb("kill", "k9").stdout == "k9\n"
    assert h.lb("wait", "k9").stdout == "137\n"
    refused = h.lb("kill", "k9", check=False)
    assert refused.returncode != 0 and "is not running" in refused.stderr
    assert h.lb("kill", "-s", "FOO", "k", check=False).stderr.strip().endswith(
        "invalid signal: FOO")  # fmt: skip
    h.lb("run", "-d", "--name", "w", "--", "sh", "-c", "sleep 0.5; exit 5")
    assert h.lb("wait", "w").stdout == "5\n"
    h.lb("run", "-d", "--name", "talk", "--", "sh", "-c",
         "echo one; echo two >&2; sleep 0.3; echo three")  # fmt: skip
    follow = h.lb("logs", "-f", "talk", timeout=20)
    assert follow.stdout == "one\nthree\n" and follow.stderr == "two\n"
    assert h.lb("logs", "--tail", "1", "talk").stdout == "three\n"
    stamped = h.lb("logs", "-t", "talk").stdout.splitlines()
    assert stamped[0].endswith("Z one") and stamped[0][:4].isdigit()
    h.lb("run", "-d", "--name", "pub", "-p", "8081:80", "-p", "5353:53/udp", "--",
         "sleep", "infinity")  # fmt: skip
    assert h.lb("port", "pub").stdout.splitlines() == ["53/udp -> 0.0.0.0:5353",
                                                       "80/tcp -> 0.0.0.0:8081"]  # fmt: skip
    assert h.lb("port", "pub", "53/udp").stdout == "0.0.0.0:5353\n"
    missing = h.lb("port", "pub", "81", check=False)
    assert "No public port '81/tcp' published for pub" in missing.stderr
    asked = h.lb("container", "prune", input="n\n")
    assert "Are you sure you want to continue? [y/N]" in asked.stdout
    assert "k" in h.lb("ps", "-a", "--format", "{{.Names}}").stdout.split()
    pruned = h.lb("container", "prune", "-f").stdout
    assert pruned.startswith("Deleted Containers:") and "Total reclaimed space: 0B" in pruned
    assert h.lb("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["pub"]


def test_after_a_reboot_the_boot_unit_brings_back_what_its_policy_says():
    with tempfile.TemporaryDirectory(prefix="lowbridge-reboot-") as state_dir:
        with SimHost("before", state_dir=state_dir) as h:
            h.lb("network", "create", "--subnet", "10.71.0.0/24", "n1")
            for name, policy in (("always", "always"), ("unless", "unless-stopped"),
                                 ("stopped", "unless-stopped"), ("plain", "no")):  # fmt: skip
                h.lb("run", "-d", "--name", name, "--network", "n1", "--restart", policy, *SERVE)
            h.lb("stop", "stopped")
        with SimHost("after", state_dir=state_dir) as h:
            with open(os.path.join(ROOT, "systemd", "lowbridge-restore.service")) as f:
                unit = f.read()
            assert "ExecStart=/opt/lowbridge/.venv/bin/lowbridge _boot" in unit
            assert sorted(h.lb("_boot").stdout.split()) == ["always", "unless"]
            status = dict(line.split() for line in h.lb(
                "ps", "-a", "--format", "{{.Names}} {{.State}}").stdout.splitlines())  # fmt: skip
            assert status == {"always": "running", "unless": "running", "stopped": "exited",
                              "plain": "exited"}  # fmt: skip
            assert state(h, "plain")["ExitCode"] == 255  # found dead, as docker reports them
            h.lb("container", "create", "--name", "cli", "--network", "n1")
            wait_for(lambda: tcp(h, "cli", "always", 80) == "web")
            assert tcp(h, "cli", "unless", 80) == "web"


def test_version(h):
    assert h.lb("--version").stdout.startswith("lowbridge version ")
    assert h.lb("version").stdout.startswith("lowbridge version ")
