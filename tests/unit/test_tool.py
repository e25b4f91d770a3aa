"""Running a firewall tool (lowbridge.firewall.tool): output, errors and the time limit."""

from __future__ import annotations

import pytest

from lowbridge.errors import KernelError
from lowbridge.firewall import tool


def test_output_and_the_first_error_line():
    assert tool.run(["cat"], "*filter\nCOMMIT\n", "echo", "coreutils").stdout == "*filter\nCOMMIT\n"
    with pytest.raises(KernelError, match=r"^apply rules: sh failed: line one$"):
        tool.run(["sh", "-c", "echo; echo line one >&2; echo two >&2; exit 3"], None,
                 "apply rules", "dash")  # fmt: skip
    with pytest.raises(KernelError, match=r"no-such-tool not found \(install pkg\)"):
        tool.run(["no-such-tool"], None, "apply rules", "pkg")


def test_a_tool_that_hangs_is_killed_at_the_limit(monkeypatch):
    monkeypatch.setattr(tool, "TIMEOUT", 0.3)  # (were it not killed, sleep would succeed)
    with pytest.raises(KernelError, match=r"^wait: sleep did not finish in 0.3 s$"):
        tool.run(["sleep", "30"], None, "wait", "coreutils")
