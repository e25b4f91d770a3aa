"""lowbridge's exception tree and the exit code of each class.

    LowbridgeError                 exit 1   anything lowbridge reports as a one-line error
    ├── InvalidInput               exit 2   bad flag values, malformed CIDR, names, addresses
    ├── NotFound                   exit 3   unknown network or container
    ├── Conflict                   exit 4   name taken, overlapping subnet, address in use, busy
    ├── KernelError                exit 5   netlink/sysctl/mount failure; keeps ``errno``
    ├── StoreError                 exit 6   the state store could not be read or written
    └── InjectedFailure            exit 9   a test switch failed a named step on purpose

Every error carries its context as a prefix ("connect web to mynet: create veth lbv1a2b3c: File
exists"): lower layers raise with what they were doing, callers add what they were asked to do with
:meth:`LowbridgeError.within`.  The CLI prints ``str(error)`` and exits with ``error.exit_code``;
it never prints a traceback for these.
"""

from __future__ import annotations

import errno as _errno
import functools
from collections.abc import Callable


class LowbridgeError(Exception):
    """Base class: a failure lowbridge can explain in one line."""

    exit_code = 1

    def within(self, context: str) -> LowbridgeError:
        """Return the same error with ``context`` prepended (outermost context first)."""
        self.args = (f"{context}: {self.args[0] if self.args else ''}",) + self.args[1:]
        return self

    def noting(self, note: str) -> LowbridgeError:
        """Return the same error with ``note`` appended in parentheses (still one line)."""
        self.args = (f"{self.args[0] if self.args else ''} ({note})",) + self.args[1:]
        return self

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidInput(LowbridgeError):
    exit_code = 2


class NotFound(LowbridgeError):
    exit_code = 3


class Conflict(LowbridgeError):
    exit_code = 4


class CasConflict(Conflict):
    """A compare-and-swap lost to another host: the caller may retry the whole operation
    (cluster mode; here rather than in lowbridge.kv so that catching it imports no etcd
    client)."""


class KernelError(LowbridgeError):
    """A kernel operation failed; ``errno`` is the kernel's error number (or None)."""

    exit_code = 5

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno

    @classmethod
    def from_os(cls, what: str, exc: BaseException) -> KernelError:
        """Wrap an OSError or pyroute2 NetlinkError raised while doing ``what``."""
        code = getattr(exc, "code", None) or getattr(exc, "errno", None)
        if isinstance(code, int) and code > 0:
            reason = _errno.errorcode.get(code, str(code))
            text = f"{what}: {_strerror(code)} ({reason})"
        else:
            text = f"{what}: {exc}"
        return cls(text, code if isinstance(code, int) else None)


class StoreError(LowbridgeError):
    exit_code = 6


class InjectedFailure(LowbridgeError):
    """Raised by the fault-injection switch (tests only, see :mod:`lowbridge.txn`)."""

    exit_code = 9


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)


def one_line(text: str) -> str:
    """``text`` with every unprintable character (newlines, tabs, escapes a user typed into a
    name) written as its escape, so that an error stays one line on a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def context(describe: Callable[..., str]) -> Callable:
    """A method decorator: any LowbridgeError of the method is prefixed with what it was asked
    to do, ``describe(*args)`` ("connect web to mynet: create veth lbv...: File exists")."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN202
            try:
                return fn(self, *args, **kwargs)
            except LowbridgeError as exc:
                raise exc.within(one_line(describe(*args, **kwargs))) from None

        return wrapper

    return decorate
