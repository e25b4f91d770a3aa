"""Restart policies, exit statuses and signals as Docker reads them (pure)."""

from __future__ import annotations

from lowbridge.errors import InvalidInput
from lowbridge.models import EXITED, Container

POLICIES = ("no", "always", "unless-stopped", "on-failure")


def parse_policy(text: str) -> str:
    """A --restart value as Docker takes it: no, always, unless-stopped, on-failure[:N]."""
    name, _, count = text.partition(":")
    if name not in POLICIES or (count and (name != "on-failure" or not count.isdigit())):
        raise InvalidInput(f"invalid restart policy '{text}'")
    return text


def policy(ctr: Container, code: int) -> bool:
    """Whether a command that ended with ``code`` runs again (moby restartmanager: ``always``
    whatever happened; ``unless-stopped`` unless it was stopped or killed by hand;
    ``on-failure[:N]`` after a non-zero code, at most N times)."""
    name, _, count = ctr.restart.partition(":")
    if name == "always":
        return True
    if name == "unless-stopped":
        return not ctr.stopped
    if name == "on-failure":
        return code != 0 and (not count or ctr.restart_count < int(count))
    return False


def exited_with(code: int | None) -> int:
    """A process's exit status as Docker reports it: its code, or 128 + the signal that ended
    it (``None``: unknown, as after a reboot: 255)."""
    if code is None:
        return 255
    return 128 - code if code < 0 else code


def on_boot(ctr: Container) -> bool:
    """Whether a sandbox starts again when the host starts (moby's daemon.restore): ``always``,
    ``unless-stopped`` unless stopped by hand, ``on-failure`` after a failure."""
    name = ctr.restart.partition(":")[0]
    if ctr.state != EXITED:
        return False
    return name == "always" or (name == "unless-stopped" and not ctr.stopped) or (
        name == "on-failure" and ctr.exit_code != 0)  # fmt: skip


def parse_signal(text: str) -> int:
    """A signal as ``docker kill -s`` takes it: KILL, SIGKILL, sigkill or 9."""
    import signal as signals

    if text.isdigit():
        number = int(text)
        if number in {s.value for s in signals.Signals}:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signals.Signals.__members__:
            return signals.Signals[name].value
    raise InvalidInput(f"invalid signal: {text}")
