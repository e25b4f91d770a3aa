"""``logs``: what a detached sandbox's command wrote, from the log its supervisor keeps (one JSON
line per line of output, as Docker's json-file driver: lowbridge.controller.supervisor)."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import TYPE_CHECKING

from lowbridge.errors import InvalidInput
from lowbridge.models import EXITED

if TYPE_CHECKING:
    from lowbridge.controller import Controller
    from lowbridge.models import Container


def show(ctl: Controller, ctr: Container, follow: bool, tail: str, timestamps: bool) -> int:
    """Print the log (stdout lines to stdout, stderr lines to stderr): the last ``tail`` lines
    ("all": every one), then, with ``follow``, what comes until the sandbox has exited."""
    if tail != "all" and not (tail.isdigit()):
        raise InvalidInput(f'invalid value for "tail": {tail!r}: a number or "all"')
    path = ctl.paths.logs(ctr.id)
    try:
        f = open(path, "rb")  # noqa: SIM115 -- followed below
    except FileNotFoundError:
        return 0
    with f:
        lines = f.readlines() if tail == "all" else deque(f, maxlen=int(tail))
        for raw in lines:
            _write(raw, timestamps)
        while follow:
            raw = f.readline()
            if raw:
                _write(raw, timestamps)
                continue
            if _done(ctl, ctr):
                for raw in f.readlines():  # what its last moment wrote
                    _write(raw, timestamps)
                return 0
            time.sleep(0.1)
    return 0


def _done(ctl: Controller, ctr: Container) -> bool:
    current = ctl.store.view().ctrs.get(ctr.id)
    return current is None or current.state == EXITED


def _write(raw: bytes, timestamps: bool) -> None:
    try:
        entry = json.loads(raw)
        text, stream, stamp = entry["log"], entry.get("stream"), entry.get("time", "")
    except (ValueError, KeyError, TypeError):  # a line the supervisor did not write
        text, stream, stamp = raw.decode(errors="replace"), "stdout", ""
    out = sys.stderr if stream == "stderr" else sys.stdout
    out.write(f"{stamp} {text}" if timestamps and stamp else text)
    out.flush()
