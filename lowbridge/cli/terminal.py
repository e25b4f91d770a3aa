"""``-t`` and ``-i`` of ``run`` and ``exec``, and the checks docker makes before it starts a
command (its exit codes and words when the command cannot run).

With ``-t`` the command gets a terminal of its own (a pseudo-terminal, its controlling one: a
shell in it prompts, ``tty`` answers /dev/pts/N, Ctrl-C reaches it), which this process relays
to ours -- in raw mode when ours is a terminal, so every key goes through as typed, at our
terminal's size -- with ``-i`` our input too.  Without ``-i`` the command's stdin is empty, as
docker's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable

from lowbridge.errors import LowbridgeError


class CannotRun(LowbridgeError):
    """The command is not there, or not executable: docker's 127 (run) or 126 (exec)."""


def check_command(command: list[str], env: dict[str, str]) -> None:
    """Raise CannotRun, in docker's words, unless ``command`` can be executed here."""
    name = command[0]
    if "/" in name:
        if not os.path.exists(name):
            raise CannotRun(f'exec: "{name}": stat {name}: no such file or directory')
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            raise CannotRun(f'exec: "{name}": permission denied')
        return
    if shutil.which(name, path=env.get("PATH", os.defpath)) is None:
        raise CannotRun(f'exec: "{name}": executable file not found in $PATH')


def pty_pair() -> tuple[int, int]:
    """A pseudo-terminal (master, slave), at our terminal's size."""
    master, slave = os.openpty()
    with contextlib.suppress(OSError):
        size = os.get_terminal_size(0)
        _set_size(slave, size.lines, size.columns)
    return master, slave


def _set_size(fd: int, rows: int, columns: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def relay(master: int, proc: subprocess.Popen, interactive: bool) -> int:
    """Copy the command's terminal to our stdout (and, ``interactive``, our stdin to it) until
    the command has exited and its terminal has nothing more to say; its exit status."""
    import select
    import termios
    import tty

    saved = None
    if interactive and os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    sources = [master, 0] if interactive else [master]
    try:
        while True:
            ready, _, _ = select.select(sources, [], [], 0.1)
            if master in ready and not _copy(master, 1):
                break  # EIO: the terminal's last user is gone
            if 0 in ready and not _copy(0, master):
                sources.remove(0)
                os.write(master, b"\x04")  # our input ended: the terminal's end of file
            if not ready and proc.poll() is not None:
                break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    return proc.wait()


def _copy(src: int, dst: int) -> bool:
    try:
        data = os.read(src, 65536)
    except OSError:
        return False
    if data:
        os.write(dst, data)
    return bool(data)


def stdio_for(interactive: bool, tty_fd: int | None) -> tuple[int | None, int | None, int | None]:
    """The command's (stdin, stdout, stderr): its terminal's (-t), ours (-i), or ours but an
    empty stdin."""
    if tty_fd is not None:
        return tty_fd, tty_fd, tty_fd
    return (None if interactive else subprocess.DEVNULL), None, None


def attached(
    start: Callable[[tuple[int | None, int | None, int | None], bool], subprocess.Popen],
    interactive: bool,
    tty: bool,
) -> tuple[subprocess.Popen, int]:
    """Start a command through ``start`` (given its stdio and whether it has a terminal) and
    stay with it until it ends; (the process, its exit status)."""
    if not tty:
        proc = start(stdio_for(interactive, None), False)
        try:
            return proc, proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            return proc, proc.wait()
    master, slave = pty_pair()
    try:
        try:
            proc = start(stdio_for(interactive, slave), True)
        finally:
            os.close(slave)  # the command holds its own copy
        return proc, relay(master, proc, interactive)
    finally:
        os.close(master)
