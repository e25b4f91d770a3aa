"""What the firewall applied, this boot: files in the runtime directory (they go with the kernel
state they describe).

    firewall-rules        the rules applied: one JSON line with the backend, the forward policy
                          and the rules, then a line per later change that only appended rules
                          (a list of them) or only removed some (``{"gone": [positions]}``),
                          up to GROWN lines: then it is written whole again
    firewall-fingerprint  the ruleset's fingerprint (kernel.netfilter) after lowbridge's last
                          change; absent while a change is under way (the kernel may not match
                          the record then): the record is trusted only while it matches
    firewall-backend      the backend that holds lowbridge's rules
    firewall-forward      "enabled" when lowbridge turned IPv4 forwarding on
"""

from __future__ import annotations

import json
import os

from lowbridge.config import private_dir, private_file
from lowbridge.errors import StoreError
from lowbridge.firewall import rules as R

GROWN = 256  # lines a record grows by before it is written whole again (each read parses all)


class Record:
    """The firewall's files in ``run_dir`` (see the module docstring).

    The rules' parse is kept with the file's identity -- device, inode, size, ctime -- as this
    object last wrote or read it: a library user's next change reads nothing back
    (bench/growth.py, bench/firewall.py).  The identity stands for the content because the record
    is only ever replaced whole by a rename (a new inode) or grown by appends (a new size).
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._kept: tuple | None = None  # (identity, {"backend", "policy", "rules"})
        self._made = False  # run_dir made (and checked) by this object
        self._fingerprint: str | None = None  # the fingerprint this object last recorded

    def path(self, key: str) -> str:
        return f"{self.run_dir}/firewall-{key}"

    # -- the rules
    def rules(self, backend: str, policy: bool) -> list[R.Rule] | None:
        """The rules last recorded for ``backend`` with this forward policy; None when not known
        (no record, a change cut short, another backend or policy).  The caller has checked
        the fingerprint."""
        try:
            identity = _identity(os.stat(self.path("rules")))
            if self._kept is not None and self._kept[0] == identity:
                doc = self._kept[1]
            else:
                with open(self.path("rules"), "rb") as f:
                    identity, text = _identity(os.fstat(f.fileno())), f.read()
                first, *grown = text.splitlines()
                doc = json.loads(first)
                doc["rules"] = R.from_doc(doc["rules"])
                for line in grown:
                    change = json.loads(line)
                    if isinstance(change, dict):
                        gone = set(change["gone"])
                        doc["rules"] = [r for i, r in enumerate(doc["rules"]) if i not in gone]
                    else:
                        doc["rules"] += R.from_doc(change)
                doc["grown"] = len(grown)
                self._kept = (identity, doc)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            return None  # a record cut short: not known
        if doc.get("backend") != backend or doc.get("policy") != policy:
            return None
        return doc["rules"]

    def write(self, rules: list[R.Rule] | None, backend: str, policy: bool = False) -> None:
        """Record ``rules`` whole (None: forget them)."""
        path = self.path("rules")
        if rules is None:
            self._kept = None
            self.set("rules", None)
            return
        doc = {"backend": backend, "policy": policy, "rules": R.to_doc(rules)}
        self._dir()
        fd = private_file(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc) + "\n")
        os.replace(path + ".new", path)  # a new inode
        # Identified after the rename, which sets the file's ctime (ext4 and tmpfs alike).
        self._kept = (_identity(os.stat(path)), {**doc, "rules": list(rules), "grown": 0})

    def append(self, rules: list[R.Rule], added: list[R.Rule], backend: str, policy: bool) -> None:
        """Record ``rules``, which are the rules this object last read or wrote plus ``added``."""
        if not self._grow(R.to_doc(added), rules):
            self.write(rules, backend, policy)

    def remove(self, rules: list[R.Rule], gone: list[int], backend: str, policy: bool) -> None:
        """Record ``rules``, which are the rules this object last read or wrote without those at
        positions ``gone`` (a deletion's line, not the whole record again: ~3 ms at a thousand
        sandboxes)."""
        if not self._grow({"gone": gone}, rules):
            self.write(rules, backend, policy)

    def _grow(self, line: object, rules: list[R.Rule]) -> bool:
        """Add ``line`` to the record, which then holds ``rules``; False (nothing written)
        when the record is not the one this object last read or wrote, or has grown enough."""
        path = self.path("rules")
        try:
            current = _identity(os.stat(path))
        except FileNotFoundError:
            current = None
        if self._kept is None or self._kept[0] != current or self._kept[1]["grown"] >= GROWN:
            return False
        fd = private_file(path, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            identity = _identity(os.fstat(f.fileno()))
        grown = self._kept[1]["grown"] + 1
        self._kept = (identity, {**self._kept[1], "rules": list(rules), "grown": grown})
        return True

    def _dir(self) -> None:
        if not self._made:
            private_dir(self.run_dir)
            self._made = True

    def matches(self, fingerprint: str) -> bool:
        """Whether the record describes the kernel whose ruleset fingerprint is
        ``fingerprint``.  What this object last recorded answers without reading the file while
        the kernel still shows it: no other change -- of lowbridge's or anyone's -- came since,
        or the fingerprint would differ."""
        if self._fingerprint is not None and self._fingerprint == fingerprint:
            return True
        return self.get("fingerprint") == fingerprint

    # -- the small state files
    def get(self, key: str) -> str | None:
        # os.open/os.read: each change reads three of these (a text file object costs ~4x).
        try:
            fd = os.open(self.path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return os.read(fd, 4096).decode().strip()
        finally:
            os.close(fd)

    def set(self, key: str, value: str | None) -> None:
        path = self.path(key)
        if key == "fingerprint":
            self._fingerprint = None  # until written
        if value is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreError(f"remove {path}: {exc.strerror}") from None
            return
        self._dir()
        fd = private_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
        if key == "fingerprint":
            self._fingerprint = value


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one record file from another; the change time as well, for file systems that
    hand a freed inode number out again."""
    return st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns
