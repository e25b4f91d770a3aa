"""Deleting links, and knowing they are gone before the deletion returns.

A link deletion (RTM_DELLINK) unlists its devices at once -- they leave ``ip link``, their
addresses and routes go, a bridge drops the port -- and announces each to the RTNLGRP_LINK
group as an RTM_DELLINK of family AF_UNSPEC (net/core/dev.c,
``unregister_netdevice_many_notify``; a bridge port's removal is announced too, with family
AF_BRIDGE).  Then, still inside the syscall, it waits for RCU grace periods and for the
devices' last references (``netdev_run_todo``, run as the rtnl lock is released): ~20-30 ms
here.  A :class:`Deletion` runs the deletion in a thread of its own and listens for those
announcements, so that its caller goes on as soon as the links are gone while the thread waits
out the rest (a daemon thread: the process's exit does not wait for it before its own
shutdown, only the kernel's exit for its syscall).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from lowbridge.errors import LowbridgeError
from lowbridge.kernel.wire import RTM_DELLINK, link_name_of, messages

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from lowbridge.kernel.rtnl import Session

RTMGRP_LINK = 1  # linux/rtnetlink.h: the group of RTNLGRP_LINK (1)


class Deletion:
    """The links ``names`` of the calling thread's namespace being deleted by ``session()``'s
    ``delete_links`` in a thread of its own (see the module docstring); a context manager that
    closes what it listens with, the thread left to end by itself."""

    def __init__(self, names: list[str], session: Callable[[], AbstractContextManager[Session]]):
        self._left = set(names)
        self._error: LowbridgeError | None = None
        self._watch: socket.socket | None = None
        if names:  # (listening before the deletion starts: no announcement is missed)
            with contextlib.suppress(OSError):  # (none: the end of the deletion is waited for)
                self._watch = _listen()
        self._ended, write = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, args=(names, session, write), daemon=True)
        self._thread.start()

    def _run(self, names: list[str], session: Callable, write: int) -> None:
        try:
            with session() as nl:
                nl.delete_links(names)
        except LowbridgeError as exc:
            self._error = exc
        finally:
            os.close(write)  # (the reader sees the end: POLLHUP)

    def wait(self) -> None:
        """Until every link is gone from the namespace, or the deletion ended (links already
        gone are never announced); its failure raised (a LowbridgeError)."""
        poller = select.poll()
        poller.register(self._ended, select.POLLIN)
        if self._watch is not None:
            poller.register(self._watch, select.POLLIN)
        while self._left:
            ready = {fd for fd, _ in poller.poll()}
            if self._ended in ready:
                break
            if self._watch is not None and self._watch.fileno() in ready and not self._read():
                poller.unregister(self._watch)  # announcements lost: the end tells
                self._watch.close()
                self._watch = None
        else:
            return  # all unlisted: the deletion succeeded, whatever it still waits for
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _read(self) -> bool:
        """Strike off the links announced as unlisted; False: announcements were lost."""
        while True:
            try:
                data = self._watch.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            except OSError:  # ENOBUFS: the socket's buffer overflowed (a big batch)
                return False
            for offset, length, mtype, _ in messages(data):
                if mtype == RTM_DELLINK and data[offset + 16] == socket.AF_UNSPEC:
                    self._left.discard(link_name_of(data[offset : offset + length]))

    def __enter__(self) -> Deletion:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watch is not None:
            self._watch.close()
        os.close(self._ended)


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    try:
        sock.bind((0, RTMGRP_LINK))
    except OSError:
        sock.close()
        raise
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock
