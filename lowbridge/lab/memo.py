"""What the last complete ``apply`` of a file left, so that applying it again unchanged is
answered without reading the file's schema (pydantic's import alone is ~100 ms here).

After an ``apply`` (or a check that found nothing to change), under the host lock, the memo
records the file's content digest, the lab and how many entries it has, and the store's
generation (lowbridge.store: every commit that writes records moves it).  A later ``apply`` of
the same bytes while the generation has not moved cannot differ -- the difference is computed
from the store alone (lowbridge.lab.diff) -- so it says "nothing to change" at once.  Anything
else -- another content, any commit since, a journal entry to settle, cluster mode -- goes the
whole way.

:func:`quick` asks the same before the controller is even imported (~100 ms of a command's
start-up): the store read with ``sqlite3`` alone, and the two things a command settles first
checked on their own -- no reboot since (the boot marker), and the embedded resolver up if a
sandbox needed it when the memo was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

from lowbridge import config
from lowbridge.config import Paths


def _path(paths: Paths, file: str) -> str:
    key = hashlib.sha256(os.path.abspath(file).encode()).hexdigest()[:24]
    return os.path.join(paths.state, "labs", f"{key}.json")


def _digest(file: str) -> str | None:
    try:
        with open(file, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def nothing(lab: str, entries: int) -> str:
    """What ``apply`` and ``plan`` say when there is nothing to do."""
    return f"lab {lab}: nothing to change ({entries} entries as the file says)"


def quick(paths: Paths, file: str) -> tuple[str, int] | None:
    """(lab, entries) when ``file`` was applied whole, nothing was committed since and nothing
    waits to be settled -- read without the controller; None: ask the controller."""
    memo = _read(paths, file)
    if memo is None or not os.path.exists(paths.boot_marker):
        return None
    try:
        db = sqlite3.connect(f"file:{_uri_path(paths.db)}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        (pending,) = db.execute("SELECT count(*) FROM journal").fetchone()
        row = db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    if pending or memo.get("generation") != (row[0] if row else None):
        return None
    if memo.get("resolver"):
        from lowbridge.dns import control

        if not control.running(paths):
            return None  # the controller starts it again
    return memo["lab"], int(memo["entries"])


def _uri_path(path: str) -> str:
    """``path`` in an SQLite URI: "%", "?" and "#" escaped (sqlite.org/uri.html, 3.1); not
    urllib.parse, whose import costs more than this whole check."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _read(paths: Paths, file: str) -> dict | None:
    """The memo of ``file`` if it is of these very bytes."""
    try:
        with open(_path(paths, file)) as f:
            memo = json.load(f)
    except (OSError, ValueError):
        return None
    if memo.get("file") != _digest(file) or memo.get("host") != config.host_name():
        return None  # another file, or the same applied as another host (its placements)
    return memo


def unchanged(store, paths: Paths, file: str) -> tuple[str, int] | None:  # noqa: ANN001
    """(lab, entries) when ``file`` was applied whole and nothing was committed since (the
    caller settles first: a journal entry left means something did not finish)."""
    memo = _read(paths, file)
    if memo is None or store.journal():
        return None
    if memo.get("generation") != store.get_meta("generation"):
        return None
    return memo["lab"], int(memo["entries"])


def remember(store, paths: Paths, file: str, lab: str, entries: int) -> None:  # noqa: ANN001
    """Record a complete apply of ``file`` (call it under the host lock, after the apply)."""
    path = _path(paths, file)
    resolver = any(c.dns_ports for c in store.view().containers)
    doc = {"file": _digest(file), "lab": lab, "entries": entries, "resolver": resolver,
           "host": config.host_name(), "generation": store.get_meta("generation")}  # fmt: skip
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
