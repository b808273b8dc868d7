"""Waking consumers in other processes when the embedded log changed.

A writer touches ``<log file>-changed`` (``touch``) after every committed
transaction; a consumer with nothing to read waits on an inotify watch of that
file instead of polling the database, so a record appended in one process is
fetched in another within a fraction of a millisecond (polling every
``POLL_S`` cost up to that much latency). The touch comes after the commit,
so a woken reader always sees the new data (a watch on the WAL file itself
would fire on the frame writes, before the commit is visible).

Where inotify is missing (not Linux) ``watch`` returns None and consumers
keep polling; the poll also stays as a safety net behind the watch (a
missed wake-up costs at most one poll interval, never data).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.inotify_init1.argtypes = [ctypes.c_int]
        _libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        _libc = None


def signal_path(log_path: Path) -> Path:
    """The file writers touch after each commit."""
    return log_path.with_name(log_path.name + "-changed")


def touch(path: Path) -> None:
    """Mark a change (after a commit). Never raises: a missed signal only costs latency."""
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            path.touch()
        except OSError:
            pass
    except OSError:
        pass


def watch(path: Path) -> int | None:
    """A non-blocking inotify fd that turns readable when ``path`` is touched or
    written; None where inotify is unavailable (the caller polls)."""
    if _libc is None:
        return None
    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    if not path.exists():
        touch(path)
    if _libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY | _IN_ATTRIB) < 0:
        os.close(fd)
        return None
    return fd


def drain(fd: int) -> None:
    """Discard the pending events (called before each look at the log)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
